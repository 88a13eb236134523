"""ms_optim.AdaBelief: the reference path against a float64 numpy oracle of labml's formula over both rectification
regimes, the fused kernel against the reference path on the parameter and every state, parity with labml's own
AdaBelief (flags set where they are meant to land), fp16 parameters with eps = 1e-16, the documented errors in both
modes, the aliases, and Model.train."""
import ctypes
import math
import os
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore import dtype as mstype

import ms_optim
from ms_optim.functional import adam as reference

SHAPES = [(1,), (7,), (4097,), (33, 65), (3, 5, 7)]
SMALL = [(33, 65), (7,)]
STEPS = 16  # with beta2 = 0.999 steps 1-5 are unrectified and 6-16 rectified


class WD:
    """An object with labml's ``WeightDecay`` attributes (what AdaBelief accepts as `weight_decay`)."""

    def __init__(self, weight_decay=0.0, weight_decouple=True, absolute=False):
        self.weight_decay, self.weight_decouple, self.absolute = weight_decay, weight_decouple, absolute


# AdaBelief keyword arguments, one feature each (labml parity runs every one; weight decay as an object where the
# mode needs one) ...
CASES = {
    "default": {},
    "no_rectify": {"rectify": False},
    "amsgrad": {"amsgrad": True},
    "no_sgd_fallback": {"degenerate_to_sgd": False},
    "optimized_update": {"optimized_update": True},
    "coupled_wd": {"weight_decay": WD(0.1, weight_decouple=False)},
    "decoupled_wd": {"weight_decay": 0.1},
    "absolute_wd": {"weight_decay": 0.01, "absolute": True},
    "labml_effective_flags": {"amsgrad": True, "degenerate_to_sgd": False, "eps": 1e-8, "betas": [0.8, 0.99]},
}
# ... and combined, so that the slower reference-path tests still cover every feature, every kernel rule
# (adaptive, SGD, keep; with and without amsgrad) and every weight-decay mode.
COMBINED = {
    "default": {},
    "no_rectify": {"rectify": False},
    "amsgrad_coupled_wd": {"amsgrad": True, "weight_decay": WD(0.1, weight_decouple=False)},
    "keep_absolute_wd": {"degenerate_to_sgd": False, "weight_decay": 0.01, "absolute": True},
    "optimized_decoupled_wd": {"optimized_update": True, "weight_decay": 0.1},
    "labml_effective_flags": CASES["labml_effective_flags"],
}


def _grads(rng, shapes):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def _initial(shape):
    return np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _params(shapes, dtype=ms.float32):
    return [Parameter(ops.cast(Tensor(_initial(s)), dtype), name=f"w{i}") for i, s in enumerate(shapes)]


def _state(opt):
    """Parameters, every state tensor and the step counter, as float32 arrays keyed by name."""
    tensors = list(opt.parameters) + list(opt.exp_avg) + list(opt.exp_avg_var)
    tensors += list(opt.max_exp_avg_var) if opt.amsgrad else []
    out = {p.name: ops.cast(p, ms.float32).asnumpy() for p in tensors}
    out["global_step"] = opt.global_step.asnumpy()
    return out


def _run(impl, shapes=SHAPES, dtype=ms.float32, steps=STEPS, lr=0.01, params=None, grad_scale=1.0, **kwargs):
    opt = ms_optim.AdaBelief(params or _params(shapes, dtype), lr=lr, impl=impl, **kwargs)
    assert opt.impl == impl
    rng = np.random.default_rng(1)
    for _ in range(steps):
        opt(tuple(ops.cast(Tensor(g * grad_scale), dtype) for g in _grads(rng, shapes)))
    return _state(opt)


# ---- tier 1: the reference path against a float64 numpy oracle of the documented formula

def _oracle(shapes, steps, lr=0.01, betas=(0.9, 0.999), eps=1e-16, weight_decay=0.0, amsgrad=False,
            degenerate_to_sgd=True, rectify=True, absolute=False, optimized_update=False):
    """The update of the issue / labml's documented formula, in float64, step by step."""
    b1, b2 = betas
    decouple = True
    if isinstance(weight_decay, WD):
        weight_decay, decouple, absolute = weight_decay.weight_decay, weight_decay.weight_decouple, weight_decay.absolute
    params = [_initial(s).astype(np.float64) for s in shapes]
    m, s, smax = ([np.zeros(sh) for sh in shapes] for _ in range(3))
    rng = np.random.default_rng(1)
    for t in range(1, steps + 1):
        lr_t = lr[t - 1] if isinstance(lr, list) else lr
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        rho_inf = 2 / (1 - b2) - 1
        rho = rho_inf - 2 * t * b2 ** t / bc2
        r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho)) if rho >= 5 else None
        r = r if rectify else 1.0
        for i, g in enumerate(_grads(rng, shapes)):
            g, p = g.astype(np.float64), params[i]
            if decouple:
                p = p * ((1 - weight_decay) if absolute else (1 - lr_t * weight_decay))
            else:
                g = g + weight_decay * p
            m[i] = b1 * m[i] + (1 - b1) * g
            s[i] = b2 * s[i] + (1 - b2) * (g - m[i]) ** 2
            smax[i] = np.maximum(smax[i], s[i])
            v = (smax[i] if amsgrad else s[i]) + eps
            if r is not None:
                if optimized_update:
                    p = p - lr_t * math.sqrt(bc2) * r / bc1 * m[i] / (np.sqrt(v) + eps)
                else:
                    p = p - lr_t * r / bc1 * m[i] / (np.sqrt(v) / math.sqrt(bc2) + eps)
            elif degenerate_to_sgd:
                p = p - lr_t / bc1 * m[i]
            params[i] = p
    return params, m, s, smax


ORACLE_CASES = {**COMBINED, "dynamic_lr": {"lr": [0.01 * (1 + k % 4) for k in range(STEPS)], "weight_decay": 0.1}}


@pytest.mark.parametrize("case", sorted(ORACLE_CASES))
def test_reference_matches_numpy_oracle(case):
    ms.set_context(mode=ms.GRAPH_MODE)
    kwargs = dict(ORACLE_CASES[case])
    state = _run("reference", shapes=SMALL, **kwargs)
    params, m, s, smax = _oracle(SMALL, STEPS, **kwargs)
    for i in range(len(SMALL)):
        np.testing.assert_allclose(state[f"w{i}"], params[i], rtol=1e-5, atol=1e-6, err_msg=f"{case}: w{i}")
        np.testing.assert_allclose(state[f"exp_avg.w{i}"], m[i], rtol=1e-5, atol=1e-7, err_msg=case)
        np.testing.assert_allclose(state[f"exp_avg_var.w{i}"], s[i], rtol=1e-4, atol=1e-8, err_msg=case)
        if kwargs.get("amsgrad"):
            np.testing.assert_allclose(state[f"max_exp_avg_var.w{i}"], smax[i], rtol=1e-4, atol=1e-8)
    assert state["global_step"][0] == STEPS


def test_regimes_are_where_labml_puts_them():
    """With beta2 = 0.999 steps 1-5 are unrectified: with the SGD fallback off the parameter stays put (the state
    moves), and step 6 is the first adaptive step; with the fallback on, steps 1-5 are momentum SGD steps."""
    ms.set_context(mode=ms.GRAPH_MODE)
    p = Parameter(Tensor(_initial((7,))), name="w")
    opt = ms_optim.AdaBelief([p], lr=0.1, degenerate_to_sgd=False)
    grad = (Tensor(np.full(7, 0.5, np.float32)),)
    for _ in range(5):
        opt(grad)
    np.testing.assert_array_equal(p.asnumpy(), _initial((7,)))
    assert np.abs(opt.exp_avg[0].asnumpy()).min() > 0
    opt(grad)
    assert not np.array_equal(p.asnumpy(), _initial((7,)))
    sgd = _run("reference", shapes=[(7,)], steps=1, lr=0.1)
    g = _grads(np.random.default_rng(1), [(7,)])[0]
    np.testing.assert_allclose(sgd["w0"], _initial((7,)) - 0.1 / 0.1 * (0.1 * g), rtol=1e-6)  # lr / bc1 * m


def test_step_scalars_are_float64():
    """bc1, bc2 and r are computed in float64 inside the graph from the step counter, each step: they equal
    labml's Python-float values rounded to float32 (a float32 computation puts r at t = 6 0.2 % off)."""
    ms.set_context(mode=ms.GRAPH_MODE)

    class Scalars(nn.Cell):
        def __init__(self, b1, b2):
            super().__init__()
            self.step = Parameter(Tensor(np.array([0], np.int32)), name="step")
            self.b1, self.b2 = Tensor(np.float64(b1), mstype.float64), Tensor(np.float64(b2), mstype.float64)
            self.rho_inf = Tensor(np.float64(2 / (1 - b2) - 1), mstype.float64)

        @ms.jit
        def construct(self):
            ops.assign_add(self.step, Tensor(np.array([1], np.int32)))
            return reference.adabelief_step_scalars(self.step, self.b1, self.b2, self.rho_inf, True)

    for b1, b2 in ((0.9, 0.999), (0.8, 0.99)):
        cell = Scalars(b1, b2)
        for t in range(1, 41):
            bc1, bc2, r = (x.asnumpy()[0] for x in cell())
            assert bc1 == np.float32(1 - b1 ** t) and bc2 == np.float32(1 - b2 ** t), t
            rho_inf = 2 / (1 - b2) - 1
            rho = rho_inf - 2 * t * b2 ** t / (1 - b2 ** t)
            want = math.sqrt((rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2)) if rho >= 5 else 0
            assert r == np.float32(want), (b2, t, r, want)


# ---- tier 2: fused vs reference, parameter and every state tensor, odd shapes

FUSED_CASES = {**COMBINED,
               "groups_loss_scale": {"params": "groups", "weight_decay": 0.05, "loss_scale": 64.0, "grad_scale": 64.0,
                                     "amsgrad": True}}


def _run_case(impl, dtype, case, steps=8):
    kwargs = dict(FUSED_CASES[case])
    if kwargs.get("params") == "groups":  # per-group learning rate and weight decay
        params = _params(SHAPES, dtype)
        kwargs["params"] = [{"params": params[:2], "lr": 0.02, "weight_decay": 0.2}, {"params": params[2:]}]
    return _run(impl, dtype=dtype, steps=steps, **kwargs)


@pytest.mark.parametrize("case", sorted(FUSED_CASES))
def test_fused_matches_reference(case):
    """8 steps (both regimes), same operation order and no FMA on both paths: identical bits."""
    ms.set_context(mode=ms.GRAPH_MODE)
    fused, ref = _run_case("fused", ms.float32, case), _run_case("reference", ms.float32, case)
    assert fused.keys() == ref.keys()
    for name in ref:
        np.testing.assert_array_equal(fused[name], ref[name], err_msg=f"{case}: {name}")
    assert not np.array_equal(fused["w3"], _initial((33, 65))), "the parameters did not move"


@pytest.mark.parametrize("amsgrad", [False, True], ids=["plain", "amsgrad"])
def test_one_call_with_mixed_rules_dtypes_and_groups_matches_reference(mode, amsgrad):
    """The fused path updates every parameter in one kernel call: float32 and float16 parameters, a group without
    weight decay next to one with decoupled decay (two rules of the kernel in one call), group learning rates,
    SGD steps then adaptive ones give the reference path's bits (one call per parameter) on every tensor."""
    shapes, dtypes = [(33, 65), (4097,), (7,), (3, 5, 7)], [ms.float32, ms.float16, ms.float16, ms.float32]
    results = {}
    for impl in ("fused", "reference"):
        params = [Parameter(ops.cast(Tensor(_initial(s)), d), name=f"w{i}")
                  for i, (s, d) in enumerate(zip(shapes, dtypes))]
        groups = [{"params": [params[0], params[2]], "lr": 0.02, "weight_decay": 0.0}, {"params": params[1::2]}]
        opt = ms_optim.AdaBelief(groups, lr=0.01, weight_decay=0.1, amsgrad=amsgrad, impl=impl)
        assert opt._one_call == (impl == "fused")  # pylint: disable=protected-access
        order = [int(p.name[1:]) for p in opt.parameters]  # the groups' order: the gradients follow it
        rng = np.random.default_rng(6)
        for _ in range(8):  # steps 1 - 5 SGD (rectification intractable), then adaptive
            grads = [ops.cast(Tensor(g), d) for g, d in zip(_grads(rng, shapes), dtypes)]
            opt(tuple(grads[i] for i in order))
        results[impl] = _state(opt)
    assert results["fused"].keys() == results["reference"].keys()
    for name, value in results["reference"].items():
        np.testing.assert_array_equal(results["fused"][name], value, err_msg=name)


def test_multi_tensor_kernel_through_ctypes():
    """MsOptimAdaBelief for N tensors in one call = N calls of one (bit for bit), each tensor with its own learning
    rate and hyper tensor (decay modes and weight decays that select different rules), in the adaptive, SGD and
    keep regimes; a hyper or lr of the wrong length is refused before anything (the flag included) is written."""
    from ms_optim.kernels import _build
    sys.path.insert(0, os.path.dirname(__file__))
    from _kernel_abi import call
    lib = ctypes.CDLL(_build.locate_library("adam"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    rng = np.random.default_rng(8)
    sizes, f32 = [4099, 1, 0, 70001], (lambda *x: np.array(x, np.float32))
    # (1 - beta1, 1 - beta2, eps, weight_decay, decay_mode, optimized_update, degenerate_to_sgd) per tensor
    hyper = np.concatenate([f32(0.1, 0.001, 1e-16, 0.1, 0, 0, 1), f32(0.1, 0.001, 1e-16, 0.0, 1, 1, 1),
                            f32(0.2, 0.01, 1e-8, 0.01, 2, 0, 0), f32(0.1, 0.001, 1e-16, 0.05, 1, 0, 0)])
    lrs, bc1, bc2 = f32(0.01, 0.02, 0.03, 0.004), f32(0.3), f32(0.01)

    def tensors():
        return [[rng.standard_normal(n).astype(np.float32) for n in sizes],
                *[[np.abs(rng.standard_normal(n)).astype(np.float32) * 0.01 for n in sizes] for _ in range(2)],
                [rng.standard_normal(n).astype(np.float32) for n in sizes]]

    for r in (f32(1.3), f32(0.0)):  # adaptive; then intractable: SGD (tensors 0, 1) or keep (2, 3)
        lists = tensors()
        one = [[x.copy() for x in group] for group in lists]
        flag = np.zeros(1, np.float32)
        assert call(lib, "MsOptimAdaBelief", [x for g in lists for x in g] + [lrs, bc1, bc2, r, hyper, flag]) == 0
        for t in range(len(sizes)):
            assert call(lib, "MsOptimAdaBelief", [g[t] for g in one] + [lrs[t:t + 1], bc1, bc2, r,
                                                                         hyper[7 * t:7 * t + 7], f32(0)]) == 0
        for got, want in zip(lists, one):
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes()
    lists = tensors()
    before = [[x.copy() for x in group] for group in lists]
    flag = np.zeros(1, np.float32)
    assert call(lib, "MsOptimAdaBelief", [x for g in lists for x in g] + [lrs, bc1, bc2, f32(1), hyper[:-1],
                                                                         flag]) == 4
    assert "'hyper' must be 7 float32 values (or 7 per tensor of a call of 4)" in lib.MsOptimLastError().decode()
    assert call(lib, "MsOptimAdaBelief", [x for g in lists for x in g] + [lrs[:3], bc1, bc2, f32(1), hyper,
                                                                         flag]) == 4
    assert "'lr' must be a float32 tensor of 1 or 4 values (one per tensor)" in lib.MsOptimLastError().decode()
    assert flag.tolist() == [0.0]
    for got, want in zip(lists, before):
        for a, b in zip(got, want):
            assert a.tobytes() == b.tobytes(), "wrote before refusing"


@pytest.mark.parametrize("case", ["keep_absolute_wd", "amsgrad_coupled_wd"])
def test_fused_matches_reference_both_modes_float16(mode, case):
    """float16 parameters (float32 state), GRAPH and PYNATIVE: identical bits."""
    fused, ref = _run_case("fused", ms.float16, case), _run_case("reference", ms.float16, case)
    for name in ref:
        np.testing.assert_array_equal(fused[name], ref[name], err_msg=f"{case}: {name}")


def test_fused_bfloat16_follows_float32():
    """MindSpore's CPU backend cannot run the reference path on bfloat16 (no bfloat16 Assign); the fused kernel on
    bfloat16 parameters (float32 state) follows the float32 trajectory to bfloat16 precision."""
    ms.set_context(mode=ms.GRAPH_MODE)
    bf16 = _run("fused", dtype=ms.bfloat16, steps=8, amsgrad=True)
    f32 = _run("fused", dtype=ms.float32, steps=8, amsgrad=True)
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(bf16[f"w{i}"], f32[f"w{i}"], rtol=2e-2, atol=2e-2)


def test_float16_parameters_with_eps_1e16_stay_finite():
    """eps = 1e-16 is 0 in float16 and (g - m)^2 of small gradients underflows there: the state is float32, so
    float16 parameters keep finite values and follow the float32 run (the authors' package has NaN reports)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    for impl in ("fused", "reference"):
        opt = ms_optim.AdaBelief(_params(SMALL, ms.float16), lr=1e-3, eps=1e-16, impl=impl)
        assert all(p.dtype == ms.float32 for p in list(opt.exp_avg) + list(opt.exp_avg_var))
        # A constant gradient makes g - m tiny (0 at step 1 up to rounding): the worst case for the denominator.
        grads = tuple(ops.cast(Tensor(np.full(s, 1e-4, np.float32)), ms.float16) for s in SMALL)
        for _ in range(12):
            opt(grads)
        for p in list(opt.parameters) + list(opt.exp_avg) + list(opt.exp_avg_var):
            assert np.isfinite(ops.cast(p, ms.float32).asnumpy()).all(), (impl, p.name)
        assert not np.array_equal(ops.cast(opt.parameters[0], ms.float32).asnumpy(),
                                  _initial((33, 65)).astype(np.float16).astype(np.float32))


# ---- parity with labml's AdaBelief

def _labml():
    try:
        import torch  # noqa: F401
        from labml_nn.optimizers import WeightDecay
        from labml_nn.optimizers.ada_belief import AdaBelief as LabmlAdaBelief
        from labml_nn.optimizers.radam import RAdam
    except ImportError as err:  # labml-nn and labml are installed with --no-deps (docs/adabelief.md)
        print(f"labml not importable: {err}", file=sys.stderr)
        pytest.skip(f"labml-nn / labml / torch not importable ({err}); install with "
                    f"'pip install --no-deps labml labml-nn pyyaml' next to a CPU torch")
    return WeightDecay, LabmlAdaBelief, RAdam


def _labml_run(make, shapes, steps, seed=1):
    import torch
    params = [torch.nn.Parameter(torch.tensor(_initial(s))) for s in shapes]
    opt = make(params)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        for p, g in zip(params, _grads(rng, shapes)):
            p.grad = torch.tensor(g)
        opt.step()
    out = {}
    for i, p in enumerate(params):
        out[f"w{i}"] = p.detach().numpy().copy()
        state = opt.state[p]
        for key in ("exp_avg", "exp_avg_var", "max_exp_avg_var"):
            if key in state:
                out[f"{key}.w{i}"] = state[key].numpy().copy()
    return out


def _labml_as_meant(case):
    """labml's AdaBelief with every flag where it is meant to land: RAdam.__init__ called with keywords (labml's
    own constructor passes them by position into the wrong slots)."""
    WeightDecay, LabmlAdaBelief, RAdam = _labml()
    kwargs = CASES[case]
    wd = kwargs.get("weight_decay", 0.0)
    wd = WeightDecay(wd.weight_decay, wd.weight_decouple, wd.absolute) if isinstance(wd, WD) else \
        WeightDecay(wd, True, kwargs.get("absolute", False))

    class AsMeant(LabmlAdaBelief):
        def __init__(self, params):
            RAdam.__init__(self, params, lr=0.01, betas=tuple(kwargs.get("betas", (0.9, 0.999))),
                           eps=kwargs.get("eps", 1e-16), weight_decay=wd,
                           optimized_update=kwargs.get("optimized_update", False),
                           amsgrad=kwargs.get("amsgrad", False),
                           degenerated_to_sgd=kwargs.get("degenerate_to_sgd", True), defaults={})
            self.rectify = kwargs.get("rectify", True)

    return AsMeant


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_labml(case):
    """16 steps (both regimes) against labml's AdaBelief with the same flags: parameter and every state."""
    make = _labml_as_meant(case)
    want = _labml_run(make, SMALL, STEPS)
    ms.set_context(mode=ms.GRAPH_MODE)
    got = _run("fused", shapes=SMALL, **CASES[case])
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=2e-5, atol=1e-6, err_msg=f"{case}: {name}")
    assert sorted(n for n in got if n != "global_step") == sorted(want)


def test_labml_positional_bug_is_what_the_docs_say():
    """labml's AdaBelief with its defaults runs with amsgrad on, no SGD fallback and the non-optimized update,
    which AdaBelief(amsgrad=True, degenerate_to_sgd=False) reproduces; labml's AdaBelief(amsgrad=True,
    degenerate_to_sgd=False) is optimized_update on, amsgrad off, still no SGD fallback (docs/adabelief.md)."""
    _, LabmlAdaBelief, _ = _labml()
    ms.set_context(mode=ms.GRAPH_MODE)
    for labml_kwargs, ours in (({}, {"amsgrad": True, "degenerate_to_sgd": False}),
                               ({"amsgrad": True, "degenerate_to_sgd": False},
                                {"optimized_update": True, "degenerate_to_sgd": False})):
        want = _labml_run(lambda p: LabmlAdaBelief(p, lr=0.01, **labml_kwargs), SMALL, 8)
        got = _run("fused", shapes=SMALL, steps=8, **ours)
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=2e-5, atol=1e-6, err_msg=f"{labml_kwargs}: {name}")


# ---- arguments: aliases, state, errors

def test_aliases_and_betas_list():
    ms.set_context(mode=ms.GRAPH_MODE)
    base = _run("fused", shapes=SMALL, steps=7, lr=0.02, betas=(0.8, 0.99))
    for kwargs in ({"learning_rate": 0.02, "betas": [0.8, 0.99]}, {"beta1": 0.8, "beta2": 0.99}):
        opt = ms_optim.AdaBelief(_params(SMALL), **{"lr": 0.02, **kwargs} if "beta1" in kwargs else kwargs)
        rng = np.random.default_rng(1)
        for _ in range(7):
            opt(tuple(Tensor(g) for g in _grads(rng, SMALL)))
        for name, value in _state(opt).items():
            np.testing.assert_array_equal(value, base[name], err_msg=f"{kwargs}: {name}")
    opt = ms_optim.AdaBelief(_params(SMALL), beta2=0.9)
    assert opt.betas == (0.9, 0.9)


def test_state_names_and_dtypes():
    ms.set_context(mode=ms.GRAPH_MODE)
    opt = ms_optim.AdaBelief(_params(SMALL, ms.float16), amsgrad=True)
    assert [p.name for p in opt.exp_avg] == ["exp_avg.w0", "exp_avg.w1"]
    assert [p.name for p in opt.exp_avg_var] == ["exp_avg_var.w0", "exp_avg_var.w1"]
    assert [p.name for p in opt.max_exp_avg_var] == ["max_exp_avg_var.w0", "max_exp_avg_var.w1"]
    assert all(p.dtype == ms.float32 and p.shape == q.shape
               for p, q in zip(list(opt.exp_avg) + list(opt.max_exp_avg_var), list(opt.parameters) * 2))
    assert not hasattr(ms_optim.AdaBelief(_params(SMALL)), "max_exp_avg_var")


ERRORS = [
    ({"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ({"learning_rate": -1}, ValueError, "Invalid learning rate: -1"),
    ({"lr": [0.1, -0.1]}, ValueError, r"Invalid learning rate: \[0.1, -0.1\]"),
    ({"lr": "0.1"}, TypeError, "'lr'"),
    ({"eps": -1e-8}, ValueError, "Invalid epsilon value: -1e-08"),
    ({"eps": "1e-8"}, TypeError, "'eps'"),
    ({"betas": (1.0, 0.999)}, ValueError, "Invalid beta parameter at index 0: 1.0"),
    ({"betas": [0.9, -0.1]}, ValueError, "Invalid beta parameter at index 1: -0.1"),
    ({"beta2": 1.5}, ValueError, "Invalid beta parameter at index 1: 1.5"),
    ({"betas": (0.9,)}, TypeError, "'betas'"),
    ({"betas": 0.9}, TypeError, "'betas'"),
    ({"betas": ("0.9", 0.999)}, TypeError, r"'betas\[0\]'"),
    ({"beta1": None, "beta2": True}, TypeError, "'beta2'"),
    ({"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1"),
    ({"weight_decay": WD(-1.0)}, ValueError, "Invalid weight_decay value: -1.0"),
    ({"weight_decay": "0.1"}, TypeError, "'weight_decay'"),
    ({"weight_decay": WD(0.1, "yes")}, TypeError, "'weight_decay.weight_decouple'"),
    ({"weight_decay": WD(0.1, True), "weight_decouple": False}, TypeError, "'weight_decouple'"),
    ({"amsgrad": 1}, TypeError, "'amsgrad'"),
    ({"degenerate_to_sgd": None}, TypeError, "'degenerate_to_sgd'"),
    ({"rectify": "no"}, TypeError, "'rectify'"),
    ({"weight_decouple": 1}, TypeError, "'weight_decouple'"),
    ({"absolute": "no"}, TypeError, "'absolute'"),
    ({"weight_decay": WD(0.1, False, False), "weight_decouple": True}, TypeError, "'weight_decouple'"),
    ({"weight_decay": WD(0.1, True, True), "absolute": False}, TypeError, "'absolute'"),
    ({"optimized_update": 0}, TypeError, "'optimized_update'"),
    ({"lr": 0.1, "learning_rate": 0.1}, TypeError, "'lr' and its alias 'learning_rate'"),
    ({"betas": (0.9, 0.99), "beta1": 0.9}, TypeError, "'betas' and its alias"),
    ({"loss_scale": 0.0}, ValueError, "'loss_scale'"),
    ({"impl": "cuda"}, ValueError, "'impl'"),
    ({"groups": {"weight_decay": -0.5}}, ValueError, "Invalid weight_decay value: -0.5"),
    ({"groups": {"lr": -0.5}}, ValueError, "Invalid learning rate: -0.5"),
    ({"groups": {"lr": [-1.0, 0.1]}}, ValueError, r"Invalid learning rate: \[-1.0, 0.1\]"),
    ({"groups": {"weight_decay": "x"}}, TypeError, "'weight_decay'"),
]


@pytest.mark.parametrize("kwargs, error, message", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_documented_errors(mode, kwargs, error, message):
    params = _params(SMALL)
    kwargs = dict(kwargs)
    group = kwargs.pop("groups", None)
    if group is not None:
        params = [{"params": params[:1], **group}, {"params": params[1:]}]
    with pytest.raises(error, match=message):
        ms_optim.AdaBelief(params, **kwargs)
    first = params[0]["params"][0] if group else params[0]
    np.testing.assert_array_equal(first.asnumpy(), _initial((33, 65)))  # nothing was modified


def test_empty_params(mode):
    with pytest.raises(ValueError, match="'params'"):
        ms_optim.AdaBelief([])


def test_weight_decay_object_and_flags_agree():
    """A WeightDecay-like object sets all three; flags equal to the object's (or left at defaults) are fine."""
    opt = ms_optim.AdaBelief(_params(SMALL), weight_decay=WD(0.1, False, False), weight_decouple=False)
    assert (opt.weight_decouple, opt.absolute) == (False, False)
    assert float(opt.hyper[0].asnumpy()[3]) == np.float32(0.1)


def test_kernel_refuses_a_bad_hyper_tensor():
    """The kernel checks its scalar inputs first: a hyper tensor of the wrong size is refused, naming it, and
    nothing is written."""
    from ms_optim import kernels
    ms.set_context(mode=ms.PYNATIVE_MODE)
    op = kernels.multi_tensor_kernel("adam", "MsOptimAdaBelief", ("param", "m", "v"), ("grad",),
                                     ("lr", "bc1", "bc2", "r", "hyper"), 1)
    param = Parameter(Tensor(np.ones(8, np.float32)), name="p")
    m = Parameter(Tensor(np.zeros(8, np.float32)), name="m")
    v = Parameter(Tensor(np.zeros(8, np.float32)), name="v")
    scalars = [Tensor(x, ms.float32) for x in (0.01, 0.1, 0.001, 1.0)]
    with pytest.raises(RuntimeError, match="'hyper' must be 7 float32 values"):
        op(param, m, v, Tensor(np.ones(8, np.float32)), *scalars, Tensor(np.zeros(6, np.float32))).asnumpy()
    np.testing.assert_array_equal(param.asnumpy(), np.ones(8, np.float32))
    assert not m.asnumpy().any() and not v.asnumpy().any()
    ms.set_context(mode=ms.GRAPH_MODE)


# ---- integration

def test_model_train():
    """Model.train for 2 epochs lowers the loss; the fused and reference runs land on the same bits."""
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype(np.float32)
    y = (x[:, :3] * 0.5 - x[:, 3:] * 0.25).astype(np.float32)

    def train(impl):
        ms.set_seed(0)
        net = nn.Dense(6, 3, weight_init=Tensor(_initial((3, 6)) * 0.3), bias_init="zeros")
        opt = ms_optim.AdaBelief(net.trainable_params(), lr=0.05, weight_decay=1e-3, amsgrad=True, impl=impl)
        model = ms.train.Model(net, nn.MSELoss(), optimizer=opt)
        loss = lambda: float(nn.MSELoss()(net(Tensor(x)), Tensor(y)).asnumpy())
        before = loss()
        data = ms.dataset.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(8)
        model.train(2, data, dataset_sink_mode=False)
        return before, loss(), [p.asnumpy() for p in net.trainable_params()]

    before, after, fused = train("fused")
    assert after < before, f"loss {before} -> {after}"
    _, _, ref = train("reference")
    for a, b in zip(fused, ref):
        np.testing.assert_array_equal(a, b)
