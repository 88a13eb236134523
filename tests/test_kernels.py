"""Tiers 1 and 2 of DESIGN.md for Adam: the reference path against a numpy oracle of the formula, and the fused
kernels against the reference path on the parameter and every state tensor, plus the kernel layer itself
(in-place ordering, thread-count independence, refusing bad shapes, building)."""
import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

import ms_optim
from ms_optim import kernels
from ms_optim.kernels import _build

SHAPES = [(1,), (7,), (4097,), (33, 65), (3, 5, 7)]
DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}
VARIANTS = {
    "dense": {},
    "nesterov": {"use_nesterov": True},
    "amsgrad": {"use_amsgrad": True},
    # On a CPU target these two run the dense in-place kernel (dense gradients; offload is already on the host):
    # the rows check that the options select it and change nothing. The lazy and increment kernels have their own
    # tests below (test_lazy_kernel_..., test_offload_delta_kernel_..., test_offload_on_an_accelerator_target).
    "offload_on_cpu_target": {"use_offload": True},
    "lazy_dense_gradients": {"use_lazy": True},
}
STEPS = 7


def _grads(rng, shapes, dtype=np.float32):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def _tensor(array, dtype):
    # via a float32 Tensor and a cast: numpy>=2 cannot hand MindSpore bfloat16 arrays
    return ops.cast(Tensor(np.asarray(array, np.float32)), dtype)


def _params(shapes, dtype=ms.float32):
    return [Parameter(_tensor(np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s), dtype), name=f"w{i}")
            for i, s in enumerate(shapes)]


def _state(opt):
    """Every tensor the optimizer updates: parameters, moments, vhat, beta powers, step, as float32 arrays."""
    tensors = list(opt.parameters) + list(opt.moment1) + list(opt.moment2)
    tensors += list(opt.vhat) if opt.use_amsgrad else []
    tensors += [opt.beta1_power, opt.beta2_power, opt.global_step]
    return {p.name: ops.cast(p, ms.float32).asnumpy() if p.dtype != ms.int32 else p.asnumpy() for p in tensors}


def _run(impl, dtype, variant, steps=STEPS, shapes=SHAPES, lr=0.01):
    params = _params(shapes, dtype)
    opt = ms_optim.Adam(params, learning_rate=lr, impl=impl, **VARIANTS[variant])
    assert opt.impl == impl
    rng = np.random.default_rng(1)
    for _ in range(steps):
        opt(tuple(_tensor(g, dtype) for g in _grads(rng, shapes)))
    return _state(opt)


# ---- tier 1: reference path vs a numpy oracle of the documented formula (float64 oracle)

def _oracle(variant, steps, shapes, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
    # the optimizer holds its hyper-parameters as float32 (1 - float32(0.999) is 1.3e-5 off 0.001)
    lr, beta1, beta2, eps = (float(np.float32(x)) for x in (lr, beta1, beta2, eps))
    rng = np.random.default_rng(1)
    params = [np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s) for s in shapes]
    m = [np.zeros(s) for s in shapes]
    v = [np.zeros(s) for s in shapes]
    vmax = [np.zeros(s) for s in shapes]
    for t in range(1, steps + 1):
        for i, g in enumerate(_grads(rng, shapes)):
            g = g.astype(np.float64)
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            vmax[i] = np.maximum(vmax[i], v[i])
            denom = np.sqrt(vmax[i] if variant == "amsgrad" else v[i]) + eps
            m_used = beta1 * m[i] + (1 - beta1) * g if variant == "nesterov" else m[i]
            params[i] = params[i] - lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m_used / denom
    return params, m, v


@pytest.mark.parametrize("variant", ["dense", "nesterov", "amsgrad"])
def test_reference_matches_numpy_oracle(mode, variant):
    state = _run("reference", ms.float32, variant, steps=5, shapes=[(33, 65), (7,)])
    params, m, v = _oracle(variant, 5, [(33, 65), (7,)])
    for i in range(2):
        np.testing.assert_allclose(state[f"w{i}"], params[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(state[f"moment1.w{i}"], m[i], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(state[f"moment2.w{i}"], v[i], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(state["beta1_power"], 0.9 ** 5, rtol=1e-6)
    assert state["global_step"][0] == 5


# ---- tier 2: fused vs reference, parameter and every state tensor, 7 steps, odd shapes, three dtypes

def _round_bf16(x):
    """float32 -> bfloat16 (round to nearest even) -> float32, as MindSpore's Cast does."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    return bits.view(np.float32)


def _numpy_reference_bf16(variant, steps=STEPS, shapes=SHAPES, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8):
    """ms_optim/functional/adam.py step for step in float32 numpy with bfloat16 storage. MindSpore's CPU backend
    has no bfloat16 Assign, so the reference path itself cannot run there; this is the same arithmetic."""
    f = np.float32
    lr, beta1, beta2, eps = f(lr), f(beta1), f(beta2), f(eps)
    params = [_round_bf16(np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s)) for s in shapes]
    m = [np.zeros(s, f) for s in shapes]
    v = [np.zeros(s, f) for s in shapes]
    vhat = [np.zeros(s, f) for s in shapes]
    b1p, b2p = f(1), f(1)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        b1p, b2p = f(b1p * beta1), f(b2p * beta2)
        lr_t = f(f(lr * np.sqrt(f(1) - b2p)) / f(f(1) - b1p))
        for i, g in enumerate(_grads(rng, shapes)):
            g = _round_bf16(g)
            mi = m[i] + (g - m[i]) * (f(1) - beta1)
            vi = v[i] + (g * g - v[i]) * (f(1) - beta2)
            denom_v = vi
            if variant == "amsgrad":
                denom_v = np.maximum(vhat[i], vi)
                vhat[i] = _round_bf16(denom_v)
            m_used = mi * beta1 + (f(1) - beta1) * g if variant == "nesterov" else mi
            params[i] = _round_bf16(params[i] - lr_t * m_used / (np.sqrt(denom_v) + eps))
            m[i], v[i] = _round_bf16(mi), _round_bf16(vi)
    state = {f"w{i}": p for i, p in enumerate(params)}
    state.update({f"moment1.w{i}": x for i, x in enumerate(m)})
    state.update({f"moment2.w{i}": x for i, x in enumerate(v)})
    if variant == "amsgrad":
        state.update({f"vhat.w{i}": x for i, x in enumerate(vhat)})
    return state


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fused_matches_reference(mode, variant, dtype):
    fused = _run("fused", DTYPES[dtype], variant)
    if dtype == "bfloat16":
        reference = _numpy_reference_bf16(variant)
        fused = {name: fused[name] for name in reference}
    else:
        reference = _run("reference", DTYPES[dtype], variant)
    assert fused.keys() == reference.keys()
    for name in reference:
        # same operation order and no FMA contraction on both sides: identical bits, not just close values
        np.testing.assert_array_equal(fused[name], reference[name], err_msg=f"{variant}/{dtype}: {name}")
    assert not np.array_equal(fused["w3"], _round_bf16(np.linspace(-1, 1, 33 * 65).reshape(33, 65))), \
        "the parameters did not move"


@pytest.mark.parametrize("variant", ["dense", "nesterov", "amsgrad"])
def test_one_call_with_mixed_dtypes_and_groups_matches_reference(mode, variant):
    """The fused path updates every parameter in one kernel call, whatever their dtypes and groups: float32 and
    float16 parameters, two groups with their own learning rate and weight decay, give the reference path's bits
    (one call per parameter) on the parameter and every state tensor over 7 steps."""
    shapes, dtypes = [(33, 65), (4097,), (1,), (3, 5, 7)], [ms.float32, ms.float16, ms.float16, ms.float32]
    results = {}
    for impl in ("fused", "reference"):
        params = [Parameter(_tensor(np.linspace(-1.0, 1.0, int(np.prod(s))).reshape(s), d), name=f"w{i}")
                  for i, (s, d) in enumerate(zip(shapes, dtypes))]
        groups = [{"params": [params[0], params[2]], "lr": 0.03, "weight_decay": 0.1}, {"params": params[1::2]}]
        opt = ms_optim.Adam(groups, learning_rate=0.01, impl=impl, **VARIANTS[variant])
        assert opt._one_call == (impl == "fused")  # pylint: disable=protected-access
        order = [int(p.name[1:]) for p in opt.parameters]  # the groups' order: the gradients follow it
        rng = np.random.default_rng(3)
        for _ in range(STEPS):
            grads = [_tensor(g, d) for g, d in zip(_grads(rng, shapes), dtypes)]
            opt(tuple(grads[i] for i in order))
        results[impl] = _state(opt)
    assert results["fused"].keys() == results["reference"].keys()
    for name, value in results["reference"].items():
        np.testing.assert_array_equal(results["fused"][name], value, err_msg=name)
    assert not np.array_equal(results["fused"]["w1"], np.linspace(-1.0, 1.0, 4097).astype(np.float16).astype(
        np.float32)), "nothing moved"


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("make", [lambda p, impl: ms_optim.Adam(p, impl=impl),
                                  lambda p, impl: ms_optim.Adam(p, use_amsgrad=True, impl=impl),
                                  lambda p, impl: ms_optim.Adam(p, use_lazy=True, impl=impl),
                                  lambda p, impl: ms_optim.AdaBelief(p, impl=impl),
                                  lambda p, impl: ms_optim.Adagrad8bit(p, min_8bit_size=8, impl=impl)],
                         ids=["Adam", "Adam-amsgrad", "Adam-lazy", "AdaBelief", "Adagrad8bit"])
def test_step_returns_one_true_per_parameter(mode, make, impl):
    """As nn.Adam's step, whether the parameters are updated in one kernel call or one call each."""
    params = _params([(7,), (3, 5), (9,)])
    opt = make(params, impl)
    assert opt(tuple(Tensor(np.ones(p.shape, np.float32)) for p in params)) == (True, True, True)


@pytest.mark.parametrize("symbol", ["MsOptimAdam", "MsOptimAdamNesterov", "MsOptimAdamAmsgrad"])
def test_multi_tensor_adam_kernel_through_ctypes(symbol):
    """One call updates N tensors as N calls of one tensor would (bit for bit), with lr given once or per tensor,
    float32 and float16 parameters and state mixed, tensors of 0 and 1 elements; a bad input of any tensor (or an
    lr vector of the wrong length, or a wrong number of inputs) is refused naming it, before anything of any tensor
    (the flag included) is written."""
    sys.path.insert(0, os.path.dirname(__file__))
    from _kernel_abi import call
    lib = ctypes.CDLL(_build.locate_library("adam"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    rng = np.random.default_rng(5)
    sizes = [5000, 0, 257, 1, 70001]
    param_dtypes = [np.float32, np.float32, np.float16, np.float16, np.float32]
    state_dtypes = [np.float32, np.float16, np.float32, np.float16, np.float32]
    states = 3 if symbol == "MsOptimAdamAmsgrad" else 2
    f32 = lambda *x: np.array(x, np.float32)  # noqa: E731
    lrs = f32(0.1, 0.3, 0.02, 0.05, 0.007)
    b1p, b2p, beta1, beta2, eps = f32(0.9 ** 3), f32(0.999 ** 3), f32(0.9), f32(0.999), f32(1e-8)

    def tensors():  # [params, m, v, (vhat,) grads], state started away from zero
        params = [rng.standard_normal(n).astype(d) for n, d in zip(sizes, param_dtypes)]
        state = [[np.abs(rng.standard_normal(n)).astype(d) * 0.01 for n, d in zip(sizes, state_dtypes)]
                 for _ in range(states)]
        return [params, *state, [rng.standard_normal(n).astype(d) for n, d in zip(sizes, param_dtypes)]]

    def flat(lists, lr, *out):
        return [x for group in lists for x in group] + [b1p, b2p, lr, beta1, beta2, eps, *out]

    for lr in (lrs, lrs[:1]):
        lists = tensors()
        one = [[x.copy() for x in group] for group in lists]
        flag = np.zeros(1, np.float32)
        assert call(lib, symbol, flat(lists, lr, flag)) == 0 and flag.tolist() == [1.0]
        for t in range(len(sizes)):
            lr_t = lr[t:t + 1] if lr.size > 1 else lr
            assert call(lib, symbol, flat([[group[t]] for group in one], lr_t, np.zeros(1, np.float32))) == 0
        for got, want in zip(lists, one):
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes()
        assert not np.array_equal(lists[0][0], tensors()[0][0]), "nothing moved"

    last = len(sizes) - 1
    lists = tensors()
    before = [[x.copy() for x in group] for group in lists]
    flag = np.zeros(1, np.float32)
    bad = [list(group) for group in lists]
    bad[1][last] = bad[1][last][:-1]  # the last tensor's m one element short
    assert call(lib, symbol, flat(bad, lrs, flag)) == 3
    assert f"'m[{last}]' has shape [70000], but 'param[{last}]' has [70001]" in lib.MsOptimLastError().decode()
    bad = [list(group) for group in lists]
    bad[1][2] = bad[1][2].astype(np.float16)  # tensor 2's m: float16 while its v is float32
    assert call(lib, symbol, flat(bad, lrs, flag)) == 2
    assert "'v[2]' has dtype float32, expected float16" in lib.MsOptimLastError().decode()
    assert call(lib, symbol, flat(lists, lrs[:2], flag)) == 4
    assert f"'lr' must be a float32 tensor of 1 or {len(sizes)} values (one per tensor)" in \
        lib.MsOptimLastError().decode()
    assert call(lib, symbol, flat(lists, lrs)) == 1  # no flag: one input short
    assert flag.tolist() == [0.0]
    for got, want in zip(lists, before):
        for a, b in zip(got, want):
            assert a.tobytes() == b.tobytes(), "wrote before refusing"


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_lazy_kernel_matches_reference_and_touches_only_named_rows(nesterov):
    """Lazy Adam on (values, indices) with a duplicate index: the fused kernel gives the reference path's numbers
    over 7 steps, and rows the gradient does not name keep their parameter, m and v.

    The update functions are driven directly here; test_sparse_gradients_end_to_end runs them from a net."""
    from ms_optim.functional import adam as reference
    ms.set_context(mode=ms.PYNATIVE_MODE)
    lazy_kernel = kernels.inplace_kernel("adam", "MsOptimLazyAdamNesterov" if nesterov else "MsOptimLazyAdam",
                                         ("param", "m", "v"),
                                         ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps", "values",
                                          "indices"))
    initial = np.linspace(-1, 1, 40, dtype=np.float32).reshape(10, 4)
    indices = Tensor(np.array([1, 3, 3, 8], np.int32))
    results = []
    for fn in (lazy_kernel, reference.lazy_adam_nesterov if nesterov else reference.lazy_adam):
        param = Parameter(Tensor(initial.copy()), name="emb")
        m = Parameter(Tensor(np.zeros((10, 4), np.float32)), name="m")
        v = Parameter(Tensor(np.zeros((10, 4), np.float32)), name="v")
        for step in range(1, STEPS + 1):
            values = Tensor(np.random.default_rng(step).standard_normal((4, 4)).astype(np.float32))
            scalars = [Tensor(x, ms.float32) for x in (0.9 ** step, 0.999 ** step, 0.1, 0.9, 0.999, 1e-8)]
            fn(param, m, v, *scalars, values, indices)
        results.append([param.asnumpy(), m.asnumpy(), v.asnumpy()])
    for fused, ref in zip(*results):
        np.testing.assert_allclose(fused, ref, rtol=1e-6, atol=1e-7)
    untouched = [0, 2, 4, 5, 6, 7, 9]
    param, m, v = results[0]
    np.testing.assert_array_equal(param[untouched], initial[untouched])
    assert not m[untouched].any() and not v[untouched].any()
    assert not np.array_equal(param[[1, 3, 8]], initial[[1, 3, 8]])
    ms.set_context(mode=ms.GRAPH_MODE)


class _Embedding(nn.Cell):
    """Its backward pass produces RowTensor gradients (sparse lookup on the CPU target)."""

    def __init__(self):
        super().__init__()
        ms.set_seed(0)
        self.emb = nn.EmbeddingLookup(10, 4, param_init="normal", target="CPU", sparse=True)

    def construct(self, ids):
        return (self.emb(ids) ** 2).sum()


def _train_embedding(make_optimizer, batches):
    net = _Embedding()
    initial = net.emb.embedding_table.asnumpy().copy()
    opt = make_optimizer(net.trainable_params())
    step = nn.TrainOneStepCell(net, opt)
    for batch in batches:
        step(Tensor(np.array(batch, np.int32)))
    return initial, (net.emb.embedding_table.asnumpy(), opt.moment1[0].asnumpy(), opt.moment2[0].asnumpy())


@pytest.mark.parametrize("use_lazy", [True, False])
def test_sparse_gradients_end_to_end(use_lazy):
    """RowTensor gradients from a net, GRAPH_MODE (where MindSpore produces them), rows changing from step to step:
    fused and reference follow nn.Adam on the table and both moments; lazy Adam leaves rows never named untouched.
    With an index repeated in a batch, fused and reference agree (both sum the repeated rows' gradients first;
    nn.Adam's lazy CPU path instead applies one Adam step per occurrence, see docs/adam.md)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    unique_ids = [[[1, 3]], [[8, 0]], [[2, 3]]]
    repeated_ids = [[[1, 3], [3, 8]], [[2, 2], [2, 2]]]
    for batches, peers in ((unique_ids, ("nn", "reference")), (repeated_ids, ("reference",))):
        makers = {
            "nn": lambda p: nn.Adam(p, learning_rate=0.1, use_lazy=use_lazy),
            "fused": lambda p: ms_optim.Adam(p, learning_rate=0.1, use_lazy=use_lazy, impl="fused"),
            "reference": lambda p: ms_optim.Adam(p, learning_rate=0.1, use_lazy=use_lazy, impl="reference"),
        }
        results = {name: _train_embedding(makers[name], batches) for name in ("fused",) + peers}
        initial, fused = results["fused"]
        for name in peers:
            for ours, theirs in zip(fused, results[name][1]):
                np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, err_msg=name)
        named = sorted({i for batch in batches for row in batch for i in row})
        never_named = [i for i in range(10) if i not in named]
        np.testing.assert_array_equal(fused[0][never_named], initial[never_named])
        assert not np.array_equal(fused[0][named], initial[named])


# ---- in-place writes are ordered after every read of the old values

class _TwoLayer(nn.Cell):
    """loss = sum(x @ w1 @ w2): the gradient of w1 reads w2, so updating w2 early would corrupt it."""

    def __init__(self):
        super().__init__()
        self.w1 = Parameter(Tensor(np.full((4, 4), 0.5, np.float32)), name="w1")
        self.w2 = Parameter(Tensor(np.full((4, 4), 0.25, np.float32)), name="w2")

    def construct(self, x):
        return ops.matmul(ops.matmul(x, self.w1), self.w2).sum()


def test_inplace_updates_are_ordered_with_checkpoints(mode, tmp_path):
    """Many TrainOneStepCell steps with a checkpoint between steps: the fused (in-place) run follows the reference
    run bit for bit, and each checkpoint holds the values of its step."""
    x = Tensor(np.arange(8, dtype=np.float32).reshape(2, 4) / 8)
    trajectories = {}
    for impl in ("fused", "reference"):
        net = _TwoLayer()
        step = nn.TrainOneStepCell(net, ms_optim.Adam(net.trainable_params(), learning_rate=0.05, impl=impl))
        trajectory = []
        for i in range(12):
            step(x)
            path = str(tmp_path / f"{impl}-{i}.ckpt")
            ms.save_checkpoint(step, path)
            saved = ms.load_checkpoint(path)
            for name in ("w1", "w2", "moment1.w2", "moment2.w1"):
                np.testing.assert_array_equal(saved[name].asnumpy(), step.parameters_dict()[name].asnumpy())
            trajectory.append((net.w1.asnumpy().copy(), net.w2.asnumpy().copy()))
        trajectories[impl] = trajectory
    for (f1, f2), (r1, r2) in zip(trajectories["fused"], trajectories["reference"]):
        np.testing.assert_array_equal(f1, r1)
        np.testing.assert_array_equal(f2, r2)


# ---- the kernel layer

_THREADS_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, mindspore as ms
    from mindspore import Parameter, Tensor
    import ms_optim
    ms.set_device("CPU")
    n = 3 * (1 << 20) + 17  # large enough to be split across threads, not a multiple of the chunk size
    p = Parameter(Tensor(np.linspace(-1, 1, n, dtype=np.float32)), name="w")
    q = Parameter(Tensor(np.linspace(-1, 1, 4099, dtype=np.float32)), name="q")  # a second tensor in the one call
    opt = ms_optim.Adam([p, q], learning_rate=0.01, use_amsgrad=True, impl="fused")
    rng = np.random.default_rng(0)
    for _ in range(3):
        opt((Tensor(rng.standard_normal(n).astype(np.float32)), Tensor(rng.standard_normal(4099).astype(np.float32))))
    arrays = [x.asnumpy() for x in (p, q, *opt.moment1, *opt.moment2, *opt.vhat)]
    # CAME: reductions over row blocks and lanes (factored) and over element blocks (unfactored)
    w = Parameter(Tensor(np.linspace(-1, 1, 1000 * 1100, dtype=np.float32).reshape(1000, 1100)), name="w")
    b = Parameter(Tensor(np.linspace(-1, 1, n, dtype=np.float32)), name="b")
    came = ms_optim.Came([w, b], learning_rate=0.01, scale_parameter=True, impl="fused")
    for _ in range(3):
        came((Tensor(rng.standard_normal((1000, 1100)).astype(np.float32)),
              Tensor(rng.standard_normal(n).astype(np.float32))))
    arrays += [w.asnumpy().ravel(), b.asnumpy()] + [x.asnumpy().ravel() for x in came.exp_avg_insta_col]
    np.save(sys.argv[1], np.concatenate(arrays))
""")


def test_results_do_not_depend_on_thread_count(tmp_path):
    """Adam (element-wise) and CAME (reductions) give the same bytes with 1, 2 and 3 kernel threads."""
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_SCRIPT)
    outputs = []
    for threads in (1, 2, 3):
        out = tmp_path / f"out{threads}.npy"
        env = dict(os.environ, MS_OPTIM_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, str(script), str(out)], env=env, check=True, capture_output=True)
        outputs.append(np.load(out))
    for other in outputs[1:]:
        assert other.tobytes() == outputs[0].tobytes()


def test_kernel_refuses_mismatched_shapes():
    """A state tensor of the wrong size is refused when the call is built, and nothing is written (the kernel's
    own refusal of it, for callers that skip the wrapper, is tested in test_hardening.py through ctypes)."""
    ms.set_context(mode=ms.PYNATIVE_MODE)
    op = kernels.multi_tensor_kernel("adam", "MsOptimAdam", ("param", "m", "v"), ("grad",),
                                     ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps"), 1)
    param = Parameter(Tensor(np.ones(8, np.float32)), name="p")
    m = Parameter(Tensor(np.zeros(5, np.float32)), name="m")  # wrong: 5 elements for an 8-element parameter
    v = Parameter(Tensor(np.zeros(8, np.float32)), name="v")
    scalars = [Tensor(x, ms.float32) for x in (0.9, 0.999, 0.01, 0.9, 0.999, 1e-8)]
    with pytest.raises(ValueError, match=r"the state 'm' has shape \[5\], expected \[8\] for its parameter "):
        op(param, m, v, Tensor(np.ones(8, np.float32)), *scalars).asnumpy()
    np.testing.assert_array_equal(param.asnumpy(), np.ones(8, np.float32))
    np.testing.assert_array_equal(m.asnumpy(), np.zeros(5, np.float32))
    ms.set_context(mode=ms.GRAPH_MODE)


@pytest.mark.parametrize("bad", ["shape", "dtype"])
@pytest.mark.parametrize("cls", [ms_optim.Adam, ms_optim.Came, ms_optim.AdaBelief], ids=["Adam", "Came", "AdaBelief"])
def test_bad_gradient_refused_before_any_update(mode, cls, bad):
    """A gradient whose shape (ValueError) or dtype (TypeError) is not its parameter's is refused when the step's
    graph is built, so no parameter, state or step counter of that step has moved (the kernel itself would only
    refuse it while running, after the earlier parameters' updates)."""
    first = Parameter(Tensor(np.ones((6, 5), np.float32)), name="first")
    second = Parameter(Tensor(np.ones(7, np.float32)), name="second")
    opt = cls([first, second], learning_rate=0.1, impl="fused")
    bad_grad = Tensor(np.ones(5, np.float32)) if bad == "shape" else Tensor(np.ones(7, np.float16))
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    with pytest.raises(ValueError if bad == "shape" else TypeError, match="gradient's " + bad):
        opt((Tensor(np.ones((6, 5), np.float32)), bad_grad))
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)
    opt((Tensor(np.ones((6, 5), np.float32)), Tensor(np.ones(7, np.float32))))  # and the optimizer still works
    assert not np.array_equal(first.asnumpy(), before["first"])


def test_library_name_tracks_sources_and_builds(tmp_path):
    """A changed source gives a new library name (a stale build is never loaded), and the build exports every
    kernel symbol."""
    root = tmp_path / "ops"
    root.mkdir()
    for sub in ("common", "cpu"):
        (root / sub).mkdir()
        src = os.path.join(_build.source_root(), sub)
        for name in os.listdir(src):
            (root / sub / name).write_bytes(open(os.path.join(src, name), "rb").read())
    before = _build.library_name("adam", str(root))
    assert before == _build.library_name("adam", _build.source_root())
    (root / "cpu" / "adam.cc").write_text((root / "cpu" / "adam.cc").read_text() + "\n// changed\n")
    after = _build.library_name("adam", str(root))
    assert after != before
    lib = _build.compile_library("adam", str(tmp_path / after), str(root))
    assert _build.verify_library(lib) == lib  # size and hash recorded beside it, as for every build
    handle = ctypes.CDLL(lib)
    for symbol in ("MsOptimAdam", "MsOptimAdamNesterov", "MsOptimAdamAmsgrad", "MsOptimAdamDelta",
                   "MsOptimAdamNesterovDelta", "MsOptimLazyAdam", "MsOptimLazyAdamNesterov", "MsOptimAdaBelief",
                   "MsOptimAdaBeliefAmsgrad"):
        assert hasattr(handle, symbol), symbol


def test_library_is_built_on_first_use_into_the_cache(tmp_path, monkeypatch):
    """Without an installed library, locate_library builds into $MS_OPTIM_CACHE_DIR (under its lock) once."""
    monkeypatch.setattr(_build, "PACKAGE_LIB_DIR", str(tmp_path / "no-installed-lib"))
    monkeypatch.setenv("MS_OPTIM_CACHE_DIR", str(tmp_path / "cache"))
    path = _build.locate_library("adam")
    assert os.path.dirname(path) == str(tmp_path / "cache") and os.path.isfile(path)
    mtime = os.path.getmtime(path)
    assert _build.locate_library("adam") == path and os.path.getmtime(path) == mtime


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_offload_delta_kernel_matches_reference(nesterov):
    """The increment kernel used for offloaded updates on accelerator targets (on a CPU target the in-place
    kernel serves use_offload), one call for several tensors with a learning rate each, float32 and float16: each
    tensor's increment and state are the reference path's, bit for bit."""
    from ms_optim.functional import adam as reference
    ms.set_context(mode=ms.PYNATIVE_MODE)
    shapes, dtypes, lrs = [(33, 65), (7,), ()], [np.float32, np.float16, np.float32], [0.01, 0.003, 0.02]
    scalars = [Tensor(x, ms.float32) for x in (0.9 ** 3, 0.999 ** 3)]
    betas = [Tensor(x, ms.float32) for x in (0.9, 0.999, 1e-8)]
    op = kernels.multi_tensor_kernel("adam", "MsOptimAdamNesterovDelta" if nesterov else "MsOptimAdamDelta",
                                     ("m", "v"), ("grad",), ("beta1_power", "beta2_power", "lr", "beta1", "beta2",
                                                             "eps"), len(shapes), outputs_like="grad")
    rng = np.random.default_rng(4)
    grads = [Tensor(np.asarray(rng.standard_normal(s), d)) for s, d in zip(shapes, dtypes)]

    def state():
        return ([Parameter(Tensor(np.full(s, 0.1, d)), name=f"m{i}") for i, (s, d) in enumerate(zip(shapes, dtypes))],
                [Parameter(Tensor(np.full(s, 0.01, d)), name=f"v{i}") for i, (s, d) in enumerate(zip(shapes, dtypes))])
    m, v = state()
    deltas = op(*m, *v, *grads, *scalars, Tensor(np.array(lrs, np.float32)), *betas)
    assert len(deltas) == len(shapes)
    ref_m, ref_v = state()
    fn = reference.adam_nesterov_delta if nesterov else reference.adam_delta
    for i, lr in enumerate(lrs):
        ref_delta = fn(ref_m[i], ref_v[i], *scalars, Tensor(lr, ms.float32), *betas, grads[i])
        assert deltas[i].dtype == grads[i].dtype and deltas[i].shape == grads[i].shape
        for fused, ref in ((deltas[i], ref_delta), (m[i], ref_m[i]), (v[i], ref_v[i])):
            np.testing.assert_array_equal(fused.asnumpy(), ref.asnumpy(), err_msg=str(i))
    assert np.abs(deltas[0].asnumpy()).max() > 0
    ms.set_context(mode=ms.GRAPH_MODE)


def test_offload_reference_path_on_an_accelerator_target_with_sparse_gradients(monkeypatch):
    """use_offload on a (faked) accelerator target with RowTensor gradients from a net, reference path: made dense
    first (it had failed to compile), it equals the reference path without offload bit for bit (p + (-step) is
    p - step). The fused path does not compile there (docs/adam.md, "Options")."""
    monkeypatch.setattr(kernels, "device_target", lambda: "GPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    batches = [[[1, 3]], [[8, 0]], [[2, 3]]]
    offload = _train_embedding(lambda p: ms_optim.Adam(p, learning_rate=0.1, use_offload=True, impl="reference"),
                               batches)
    in_place = _train_embedding(lambda p: ms_optim.Adam(p, learning_rate=0.1, impl="reference"), batches)
    for ours, ref in zip(offload[1], in_place[1]):
        np.testing.assert_array_equal(ours, ref)
    assert not np.array_equal(offload[1][0], offload[0])


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_offload_on_an_accelerator_target(mode, monkeypatch, nesterov):
    """use_offload as it runs on a GPU or Ascend target: the increment kernel (pinned to the host CPU) plus AssignAdd
    on the parameter. The target is faked, so the path runs here: fused and reference agree bit for bit on the
    parameter and both moments over 7 steps, and follow nn.Adam(use_offload=True)."""
    monkeypatch.setattr(kernels, "device_target", lambda: "GPU")
    shapes = [(33, 65), (7,)]

    def run(make):
        params = [Parameter(Tensor(np.linspace(-1, 1, int(np.prod(s)), dtype=np.float32).reshape(s)), name=f"w{i}")
                  for i, s in enumerate(shapes)]
        opt = make(params)
        rng = np.random.default_rng(1)
        for _ in range(STEPS):
            opt(tuple(Tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes))
        return opt, [t.asnumpy() for t in (*params, *opt.moment1, *opt.moment2)]

    fused_opt, fused = run(lambda p: ms_optim.Adam(p, 0.01, use_offload=True, use_nesterov=nesterov, impl="fused"))
    assert fused_opt._offload_delta, "the increment (accelerator) path did not run"
    _, reference = run(lambda p: ms_optim.Adam(p, 0.01, use_offload=True, use_nesterov=nesterov, impl="reference"))
    _, peer = run(lambda p: nn.Adam(p, 0.01, use_offload=True, use_nesterov=nesterov))
    for ours, ref, theirs in zip(fused, reference, peer):
        np.testing.assert_array_equal(ours, ref)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)
