"""ms_optim.Came: the reference path against a float64 numpy oracle of the CAME formula, the fused kernel against
the reference path on the parameter and every state tensor, and the promises of every argument."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.train import Model

import ms_optim

SHAPES = [(1,), (7,), (4097,), (33, 65), (3, 5, 7)]
STEPS = 7
STATE_PREFIXES = ("exp_avg.", "exp_avg_sq_row_", "exp_avg_sq_col_", "exp_avg_insta_row_", "exp_avg_insta_col_",
                  "exp_avg_sq_")


def _grads(rng, shapes):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _initial(shape):
    return np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _params(shapes, dtype=ms.float32):
    return [Parameter(ops.cast(Tensor(_initial(s)), dtype), name=f"w{i}") for i, s in enumerate(shapes)]


def _state(opt):
    """Parameters and every state tensor of a Came optimizer, as float32 arrays keyed by name."""
    tensors = list(opt.parameters)
    for group in (opt.exp_avg, opt.exp_avg_sq_row, opt.exp_avg_sq_col, opt.exp_avg_insta_row,
                  opt.exp_avg_insta_col, opt.exp_avg_sq):
        tensors += list(group)
    tensors += [opt.step]
    return {p.name: ops.cast(p, ms.float32).asnumpy() for p in tensors}


def _run(impl, shapes=SHAPES, dtype=ms.float32, steps=STEPS, grad_scale=1.0, seed=1, params=None, **kwargs):
    kwargs.setdefault("learning_rate", None if kwargs.get("relative_step") else 0.01)
    opt = ms_optim.Came(params or _params(shapes, dtype), impl=impl, **kwargs)
    assert opt.impl == impl
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt(tuple(ops.cast(Tensor(g * grad_scale), dtype) for g in _grads(rng, shapes)))
    return _state(opt)


# ---- float64 numpy oracle of the formula (the docstring of ms_optim.Came)

def _oracle(shapes, steps, lr=0.01, eps=(1e-30, 1e-3, 1e-16), clip=1.0, decay_rate=0.8, beta1=0.9, beta3=0.99,
            weight_decay=0.0, scale_parameter=False, relative_step=False, warmup_init=False, seed=1):
    f32 = lambda x: float(np.float32(x))  # the optimizer holds its hyper-parameters as float32
    eps0, eps1, eps2 = (f32(e) for e in eps)
    beta1, beta3, clip, weight_decay = f32(beta1), f32(beta3), f32(clip), f32(weight_decay)
    rms = lambda x: np.sqrt(np.mean(x * x))

    def approx(row, col):
        return (1 / np.sqrt(row / row.mean(-1, keepdims=True)))[..., None] * (1 / np.sqrt(col))[..., None, :]

    params = [_initial(s).astype(np.float64) for s in shapes]
    st = [{"m": np.zeros(s), "r": np.zeros(s[:-1]), "c": np.zeros(s[:-2] + s[-1:]), "ir": np.zeros(s[:-1]),
           "ic": np.zeros(s[:-2] + s[-1:]), "v": np.zeros(s)} for s in shapes]
    rng = np.random.default_rng(seed)
    for t in range(1, steps + 1):
        beta2t = 1 - t ** -f32(decay_rate)
        step_lr = min(1e-6 * t if warmup_init else 1e-2, 1 / np.sqrt(t)) if relative_step else f32(lr)
        for p, s, g in zip(range(len(shapes)), st, _grads(rng, shapes)):
            g = g.astype(np.float64)
            w = params[p]
            lr_t = step_lr * max(eps1, rms(w)) if scale_parameter else step_lr
            if w.ndim >= 2:
                sq = g * g + eps0
                s["r"] = beta2t * s["r"] + (1 - beta2t) * sq.mean(-1)
                s["c"] = beta2t * s["c"] + (1 - beta2t) * sq.mean(-2)
                u = approx(s["r"], s["c"]) * g
            else:
                s["v"] = beta2t * s["v"] + (1 - beta2t) * (g * g + eps0)
                u = g / np.sqrt(s["v"])
            u = u / max(rms(u) / clip, 1.0)
            s["m"] = beta1 * s["m"] + (1 - beta1) * u
            step = s["m"] * lr_t
            if w.ndim >= 2 and beta1 > 0:  # beta1 = 0: no first moment, no confidence term (docs/came.md)
                insta = (u - s["m"]) ** 2 + eps2
                s["ir"] = beta3 * s["ir"] + (1 - beta3) * insta.mean(-1)
                s["ic"] = beta3 * s["ic"] + (1 - beta3) * insta.mean(-2)
                step = approx(s["ir"], s["ic"]) * step
            params[p] = w - weight_decay * lr_t * w - step
    return params, st


ORACLE_CASES = {
    "default": {},
    "scale_parameter": {"scale_parameter": True},
    "weight_decay": {"weight_decay": 0.1},
    "clip_and_betas": {"clip_threshold": 0.5, "beta1": 0.5, "beta3": 0.9, "decay_rate": 0.5},
    "eps": {"eps": (1e-3, 1e-3, 1e-2)},
    "relative_step": {"relative_step": True},
    "warmup_init": {"relative_step": True, "warmup_init": True},
    "beta1_zero": {"beta1": 0.0},
}


@pytest.mark.parametrize("case", sorted(ORACLE_CASES))
def test_reference_matches_numpy_oracle(mode, case):
    shapes = [(6, 5), (7,), (2, 3, 4)]
    kwargs = ORACLE_CASES[case]
    state = _run("reference", shapes=shapes, steps=5, **kwargs)
    oracle_kwargs = {k: v for k, v in kwargs.items() if k not in ("clip_threshold",)}
    if "clip_threshold" in kwargs:
        oracle_kwargs["clip"] = kwargs["clip_threshold"]
    params, st = _oracle(shapes, 5, **oracle_kwargs)
    for i, s in enumerate(shapes):
        np.testing.assert_allclose(state[f"w{i}"], params[i], rtol=2e-5, atol=2e-6, err_msg=f"{case}: w{i}")
        np.testing.assert_allclose(state[f"exp_avg.w{i}"], st[i]["m"], rtol=2e-4, atol=2e-6)
        if len(s) >= 2:
            np.testing.assert_allclose(state[f"exp_avg_sq_row_w{i}"], st[i]["r"], rtol=2e-5)
            np.testing.assert_allclose(state[f"exp_avg_sq_col_w{i}"], st[i]["c"], rtol=2e-5)
            np.testing.assert_allclose(state[f"exp_avg_insta_row_w{i}"], st[i]["ir"], rtol=2e-4)
            np.testing.assert_allclose(state[f"exp_avg_insta_col_w{i}"], st[i]["ic"], rtol=2e-4)
        else:
            np.testing.assert_allclose(state[f"exp_avg_sq_w{i}"], st[i]["v"], rtol=2e-5)
    assert state["afactor_step"][0] == 5


# ---- fused vs reference: parameter and every state, 7 steps, odd shapes

FUSED_CASES = {
    **ORACLE_CASES,
    "compression": {"compression": True},
    "loss_scale": {"loss_scale": 64.0, "grad_scale": 64.0},
    "groups": {"groups": True},
}


def _run_case(impl, dtype, case):
    kwargs = dict(FUSED_CASES[case])
    if kwargs.pop("groups", False):  # per-group learning rate and weight decay
        params = _params(SHAPES, dtype)
        kwargs["params"] = [{"params": params[:2], "lr": 0.02, "weight_decay": 0.1}, {"params": params[2:]}]
    return _run(impl, dtype=dtype, **kwargs)


@pytest.mark.parametrize("case", sorted(FUSED_CASES))
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_fused_matches_reference(mode, case, dtype):
    dtype = {"float32": ms.float32, "float16": ms.float16}[dtype]
    fused = _run_case("fused", dtype, case)
    reference = _run_case("reference", dtype, case)
    assert fused.keys() == reference.keys()
    # reductions are summed in a different order on the two paths: equal to float32 rounding, not bit for bit
    rtol, atol = (2e-5, 1e-6) if dtype == ms.float32 else (2e-3, 2e-3)
    for name in reference:
        if case == "compression" and dtype == ms.float32:
            # float16 state: a last-bit float32 difference can flip one float16 rounding of m, which then stays.
            # Allow that for a few elements (at a float16 tolerance), and float32 agreement for all others.
            close = np.isclose(fused[name], reference[name], rtol=rtol, atol=atol)
            assert close.mean() >= 0.99, f"{case}: {name}: {np.count_nonzero(~close)} of {close.size} differ"
            np.testing.assert_allclose(fused[name], reference[name], rtol=2e-3, atol=1e-4, err_msg=f"{case}: {name}")
            continue
        np.testing.assert_allclose(fused[name], reference[name], rtol=rtol, atol=atol, err_msg=f"{case}: {name}")
    assert not np.array_equal(fused["w3"], _initial((33, 65))), "the parameters did not move"


def test_fused_bfloat16_follows_float32():
    """MindSpore's CPU backend cannot run the reference path on bfloat16 (no bfloat16 Assign); the fused kernel
    on bfloat16 parameters follows the float32 trajectory to bfloat16 precision."""
    ms.set_context(mode=ms.GRAPH_MODE)
    bf16 = _run("fused", dtype=ms.bfloat16, steps=3)
    f32 = _run("fused", dtype=ms.float32, steps=3)
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(bf16[f"w{i}"], f32[f"w{i}"], rtol=2e-2, atol=2e-2)


# ---- the promises of the arguments

@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_loss_scale_unscales_before_any_statistic(mode, impl):
    """loss_scale=S with gradients multiplied by S gives the parameters of loss_scale=1 with plain gradients."""
    plain = _run(impl, steps=4, shapes=[(33, 65), (7,)])
    scaled = _run(impl, steps=4, shapes=[(33, 65), (7,)], grad_scale=1024.0, loss_scale=1024)
    for name in plain:
        np.testing.assert_array_equal(scaled[name], plain[name], err_msg=name)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_compression_stores_float16_state(impl):
    ms.set_context(mode=ms.GRAPH_MODE)
    opt = ms_optim.Came(_params([(33, 65), (7,)]), learning_rate=0.01, compression=True, impl=impl)
    assert all(p.dtype == ms.float16 for group in (opt.exp_avg, opt.exp_avg_sq_row, opt.exp_avg_sq_col,
                                                   opt.exp_avg_insta_row, opt.exp_avg_insta_col, opt.exp_avg_sq)
               for p in group)
    compressed = _run(impl, shapes=[(33, 65), (7,)], compression=True)
    full = _run(impl, shapes=[(33, 65), (7,)])
    for name in ("w0", "w1"):
        np.testing.assert_allclose(compressed[name], full[name], rtol=1e-2, atol=1e-3)
    assert not np.array_equal(compressed["exp_avg.w0"], full["exp_avg.w0"])  # the state really is float16


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_group_weight_decay_and_lr(mode, impl):
    """Each group's own weight decay and learning rate apply to its parameters only."""
    def run(groups_spec):
        params = _params([(6, 5), (7,)])
        groups = [dict(spec, params=[params[i]]) for i, spec in enumerate(groups_spec)]
        opt = ms_optim.Came(groups, learning_rate=0.01, impl=impl)
        rng = np.random.default_rng(1)
        for _ in range(3):
            opt(tuple(Tensor(g) for g in _grads(rng, [(6, 5), (7,)])))
        return [p.asnumpy() for p in params]

    decayed = run([{"weight_decay": 0.5}, {}])
    plain = run([{}, {}])
    assert not np.allclose(decayed[0], plain[0])
    np.testing.assert_array_equal(decayed[1], plain[1])
    fast = run([{"lr": 0.05}, {}])
    np.testing.assert_array_equal(fast[1], plain[1])
    oracle_slow, _ = _oracle([(6, 5), (7,)], 3, lr=0.01)
    oracle_fast, _ = _oracle([(6, 5), (7,)], 3, lr=0.05)
    np.testing.assert_allclose(plain[0], oracle_slow[0], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(fast[0], oracle_fast[0], rtol=2e-5, atol=2e-6)
    oracle_decayed, _ = _oracle([(6, 5), (7,)], 3, lr=0.01, weight_decay=0.5)
    np.testing.assert_allclose(decayed[0], oracle_decayed[0], rtol=2e-5, atol=2e-6)


def test_group_lr_with_relative_step_is_refused(mode):
    """relative_step computes the learning rate: a group's 'lr' would be silently ignored, so it is an error, as a
    top-level learning_rate is."""
    params = _params([(6, 5), (7,)])
    before = [p.asnumpy().copy() for p in params]
    with pytest.raises(ValueError, match="'lr'.*relative_step"):
        ms_optim.Came([{"params": params[:1], "lr": 0.5}, {"params": params[1:]}], relative_step=True)
    for p, value in zip(params, before):
        np.testing.assert_array_equal(p.asnumpy(), value)


def test_state_names_and_shapes_follow_mindformers():
    """mindformers 1.8 names (checked against its source): exp_avg.<p>, exp_avg_sq_row_<p>, ..., afactor_step;
    unused states are (1,)."""
    w = Parameter(Tensor(np.ones((2, 4, 3), np.float32)), name="w")
    b = Parameter(Tensor(np.ones((3,), np.float32)), name="b")
    opt = ms_optim.Came([w, b], learning_rate=0.01)
    shapes = {p.name: p.shape for p in opt.get_parameters()}
    assert shapes["exp_avg.w"] == (2, 4, 3) and shapes["exp_avg.b"] == (3,)
    assert shapes["exp_avg_sq_row_w"] == (2, 4) and shapes["exp_avg_sq_col_w"] == (2, 3)
    assert shapes["exp_avg_insta_row_w"] == (2, 4) and shapes["exp_avg_insta_col_w"] == (2, 3)
    assert shapes["exp_avg_sq_w"] == (1,) and shapes["exp_avg_sq_b"] == (3,)
    assert shapes["exp_avg_sq_row_b"] == (1,) and shapes["exp_avg_insta_col_b"] == (1,)
    assert shapes["afactor_step"] == (1,) and "global_step" in shapes


# ---- errors: documented type, message naming the argument, in both modes, nothing modified

ERROR_CASES = [
    ({"learning_rate": "fast"}, TypeError, "learning_rate"),
    ({"clip_threshold": 1}, TypeError, "clip_threshold"),
    ({"decay_rate": 1}, TypeError, "decay_rate"),
    ({"weight_decay": "0"}, TypeError, "weight_decay"),
    ({"beta1": 1}, TypeError, "beta1"),
    ({"beta3": None}, TypeError, "beta3"),
    ({"eps": 1e-30}, TypeError, "eps"),
    ({"eps": (1e-30, 1e-3, 1)}, TypeError, "eps[2]"),
    ({"loss_scale": "1"}, TypeError, "loss_scale"),
    ({"loss_scale": True}, TypeError, "loss_scale"),
    ({"scale_parameter": 1}, TypeError, "scale_parameter"),
    ({"relative_step": "yes"}, TypeError, "relative_step"),
    ({"warmup_init": None}, TypeError, "warmup_init"),
    ({"compression": 0}, TypeError, "compression"),
    ({"lr": 0.1}, TypeError, "lr"),
    ({"loss_scale": 0}, ValueError, "loss_scale"),
    ({"eps": (1e-30, 0.0, 1e-16)}, ValueError, "eps[1]"),
    ({"eps": (1e-30, 1e-3)}, ValueError, "eps"),
    ({"clip_threshold": -1.0}, ValueError, "clip_threshold"),
    ({"decay_rate": 1.5}, ValueError, "decay_rate"),
    ({"weight_decay": -0.1}, ValueError, "weight_decay"),
    ({"beta1": 1.1}, ValueError, "beta1"),
    ({"beta3": -0.5}, ValueError, "beta3"),
    ({"relative_step": True}, ValueError, "relative_step"),
    ({"learning_rate": None}, ValueError, "learning_rate"),
    ({"learning_rate": None, "warmup_init": True}, ValueError, "warmup_init"),
    ({"impl": "fast"}, ValueError, "impl"),
]


@pytest.mark.parametrize("kwargs,error,names", ERROR_CASES, ids=[str(c[0]) for c in ERROR_CASES])
def test_documented_errors(mode, kwargs, error, names):
    params = _params([(6, 5), (7,)])
    kwargs = dict(kwargs)
    kwargs.setdefault("learning_rate", 0.01)
    if kwargs["learning_rate"] is None:
        del kwargs["learning_rate"]
    if "lr" in kwargs:
        kwargs["learning_rate"] = 0.01  # both spellings
    with pytest.raises(error) as info:
        ms_optim.Came(params, **kwargs)
    assert names in str(info.value), str(info.value)
    for p, s in zip(params, [(6, 5), (7,)]):
        np.testing.assert_array_equal(p.asnumpy(), _initial(s))


def test_bad_parameter_list(mode):
    with pytest.raises(TypeError, match="params"):
        ms_optim.Came([1.0, 2.0], learning_rate=0.01)
    with pytest.raises(ValueError, match="params"):
        ms_optim.Came([], learning_rate=0.01)


@pytest.mark.parametrize("value,error", [("0.1", TypeError), (1.5, ValueError), (-0.1, ValueError)])
def test_bad_group_weight_decay(mode, value, error):
    params = _params([(6, 5), (7,)])
    with pytest.raises(error, match="weight_decay"):
        ms_optim.Came([{"params": params[:1], "weight_decay": value}, {"params": params[1:]}], learning_rate=0.01)


# ---- integration: Model.train, loss-scale managers, checkpoint round trip

def _dataset(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x @ rng.standard_normal((6, 3)) * 0.5).astype(np.float32)
    return ms.dataset.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(16)


def _net():
    ms.set_seed(0)
    return nn.SequentialCell(nn.Dense(6, 8), nn.ReLU(), nn.Dense(8, 3))


def _train(loss_scale_manager=None, loss_scale=1, epochs=2, impl="auto"):
    """{name: value} of the net's parameters and every optimizer state after Model.train."""
    net = _net()
    opt = ms_optim.Came(net.trainable_params(), learning_rate=0.01, loss_scale=loss_scale, impl=impl)
    model = Model(net, nn.MSELoss(), opt, loss_scale_manager=loss_scale_manager)
    model.train(epochs, _dataset(), dataset_sink_mode=False)
    return {p.name: p.asnumpy() for p in opt.get_parameters()}


def test_model_train_and_fixed_loss_scale_manager():
    ms.set_context(mode=ms.GRAPH_MODE)
    plain = _train()
    first = _net().trainable_params()[0]
    assert not np.allclose(plain[first.name], first.asnumpy()), "training did not move the weights"
    # The loss is scaled by 128 and the optimizer divides the gradients by it. The states are compared too: with
    # eps0 = 1e-30 the parameters alone would not show a forgotten unscaling (CAME's step is scale-free), the
    # second moments would. (DynamicLossScaleManager: tests/test_loss_scale.py.)
    fixed = _train(ms.amp.FixedLossScaleManager(128.0, drop_overflow_update=False), loss_scale=128)
    assert sorted(fixed) == sorted(plain)
    for name, value in plain.items():
        np.testing.assert_allclose(fixed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_checkpoint_round_trip_continues_on_the_same_trajectory(mode, tmp_path):
    x = Tensor(np.random.default_rng(0).standard_normal((16, 6)).astype(np.float32))
    y = Tensor(np.random.default_rng(1).standard_normal((16, 3)).astype(np.float32))

    def make():
        net = _net()
        opt = ms_optim.Came(net.trainable_params(), learning_rate=0.01, scale_parameter=True)
        return net, nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)

    net, step = make()
    for _ in range(6):
        step(x, y)
    straight = [p.asnumpy() for p in net.trainable_params()]
    net, step = make()
    for _ in range(3):
        step(x, y)
    path = str(tmp_path / "came.ckpt")
    ms.save_checkpoint(step, path)
    net2, step2 = make()
    not_loaded, _ = ms.load_param_into_net(step2, ms.load_checkpoint(path))
    assert not not_loaded
    assert step2.optimizer.step.asnumpy()[0] == 3
    for _ in range(3):
        step2(x, y)
    for a, b in zip(straight, [p.asnumpy() for p in net2.trainable_params()]):
        np.testing.assert_array_equal(b, a)


# ---- the fused kernel through ctypes: one call for every parameter of a step

KERNEL_SHAPES = [(130, 70), (7,), (2, 3, 4), (), (0, 5), (1, 1), (70001,), (3, 65, 129)]


def _kernel_tensors(rng, param_dtype, state_dtype):
    """[params, m, row, col, insta_row, insta_col, sq, grads] for KERNEL_SHAPES, states as Came lays them out
    (unused ones of shape (1,)), started away from zero."""
    def factored(s):
        return (s[:-1], s[:-2] + s[-1:], (1,)) if len(s) >= 2 else ((1,), (1,), s)

    def state(shape):
        return np.asarray(np.abs(rng.standard_normal(shape)) * 0.01 + 1e-3, state_dtype)

    def values(shape):
        return np.asarray(rng.standard_normal(shape), param_dtype)

    lists = [[values(s) for s in KERNEL_SHAPES], [state(s) for s in KERNEL_SHAPES]]
    for k in (0, 1, 0, 1, 2):  # row, col, insta_row, insta_col, sq
        lists.append([state(factored(s)[k]) for s in KERNEL_SHAPES])
    lists.append([values(s) for s in KERNEL_SHAPES])
    return lists


def test_one_kernel_call_equals_one_call_per_tensor():
    """MsOptimCame updates N tensors as N calls of one tensor would, bit for bit (each tensor's sums are its own,
    in a fixed order), with lr and hyper given once or per tensor, factored and full second moments, float32 and
    float16 parameters and state mixed, 0-d, empty and 1-element tensors; over 3 steps. (Against the per-parameter
    kernels it replaced, checked bit for bit over 1 - 3 threads when it came: docs/came.md.)"""
    import ctypes
    import os
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from _kernel_abi import call
    from ms_optim.kernels import _build
    lib = ctypes.CDLL(_build.locate_library("came"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    f32 = lambda *x: np.array(x, np.float32)  # noqa: E731
    count = len(KERNEL_SHAPES)
    hyper = np.concatenate([f32(0.9, 0.99, 1e-30, 1e-3, 1e-16, 0.5 + i % 2, 0.1 * (i % 3), float(i % 2))
                            for i in range(count)])
    lrs = f32(*[0.01 * (1 + i) for i in range(count)])
    for param_dtype, state_dtype, per_tensor in ((np.float32, np.float32, True), (np.float16, np.float32, True),
                                                  (np.float32, np.float16, False)):
        rng = np.random.default_rng(4)
        one = _kernel_tensors(rng, param_dtype, state_dtype)
        each = [[x.copy() for x in group] for group in one]
        flag = np.zeros(1, np.float32)
        for step in range(1, 4):
            beta2t = f32(1 - step ** -0.8)
            lr, hyper_all = (lrs, hyper) if per_tensor else (lrs[:1], hyper[:8])
            args = [x for group in one for x in group] + [lr, beta2t, hyper_all, flag]
            assert call(lib, "MsOptimCame", args) == 0, lib.MsOptimLastError()
            for t in range(count):
                lr_t, hyper_t = (lrs[t:t + 1], hyper[8 * t:8 * t + 8]) if per_tensor else (lrs[:1], hyper[:8])
                args = [group[t] for group in each] + [lr_t, beta2t, hyper_t, flag]
                assert call(lib, "MsOptimCame", args) == 0, lib.MsOptimLastError()
        for k, (a_group, b_group) in enumerate(zip(one, each)):
            for t, (a, b) in enumerate(zip(a_group, b_group)):
                assert np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)), (k, t)
        assert not np.array_equal(one[0][0], _kernel_tensors(np.random.default_rng(4), param_dtype,
                                                              state_dtype)[0][0]), "nothing moved"


@pytest.mark.parametrize("corrupt,message", [
    (lambda lists, s: lists[2].__setitem__(2, np.zeros((2, 4), np.float32)), "'row[2]' has shape [2, 4], expected "
                                                                              "param[2].shape[:-1]"),
    (lambda lists, s: lists[3].__setitem__(0, np.zeros(71, np.float32)), "'col[0]' has shape [71]"),
    (lambda lists, s: lists[6].__setitem__(1, np.zeros(6, np.float32)), "'sq[1]' has shape [6]"),
    (lambda lists, s: lists[5].__setitem__(7, lists[5][7].astype(np.float16)), "'insta_col[7]' has dtype float16"),
    (lambda lists, s: lists[7].__setitem__(6, np.zeros(70000, np.float32)), "'grad[6]' has shape [70000]"),
    (lambda lists, s: s.__setitem__(0, np.zeros(3, np.float32)), "'lr' must be a float32 tensor of 1 or 8 values"),
    (lambda lists, s: s.__setitem__(2, np.zeros(9, np.float32)), "'hyper' must be 8 float32 values (or 8 per"),
    (lambda lists, s: s.__setitem__(3, np.zeros(2, np.float32)), "the flag output must be one float32 value"),
], ids=["row", "col", "sq", "insta-dtype", "grad", "lr", "hyper", "flag"])
def test_kernel_refuses_any_bad_input_before_any_write(corrupt, message):
    import ctypes
    import os
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from _kernel_abi import call
    from ms_optim.kernels import _build
    lib = ctypes.CDLL(_build.locate_library("came"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    lists = _kernel_tensors(np.random.default_rng(2), np.float32, np.float32)
    scalars = [np.array([0.01], np.float32), np.array([0.5], np.float32),
               np.array([0.9, 0.99, 1e-30, 1e-3, 1e-16, 1.0, 0.0, 0.0], np.float32), np.zeros(1, np.float32)]
    corrupt(lists, scalars)
    before = [x.copy() for group in lists for x in group] + [x.copy() for x in scalars]
    args = [x for group in lists for x in group] + scalars
    assert call(lib, "MsOptimCame", args) != 0
    assert message in lib.MsOptimLastError().decode()
    for a, b in zip(args, before):
        np.testing.assert_array_equal(a, b)
