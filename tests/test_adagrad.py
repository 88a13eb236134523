"""ms_optim.Adagrad / Adagrad8bit / Adagrad32bit and the 8-bit quantizer: the quantizer on its own (Python, the
kernel header, a brute-force oracle, bitsandbytes' table), the reference path against a float32 numpy oracle of
the documented update (8-bit codes and absmax included), the fused kernels against the reference path on the
parameter and every state tensor, parity with torch.optim.Adagrad and bitsandbytes, every error in both modes,
Model.train and checkpoints."""
import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.train import Model

import ms_optim
from ms_optim import adagrad as adagrad_module, kernels, quantization

SHAPES = [(1,), (7,), (4097,), (33, 130), (3, 5, 300)]  # the last three reach min_8bit_size = 4096
STEPS = 8
DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def _initial(shape):
    return np.linspace(-1.0, 1.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)


def _grads(rng, shapes, step_scale=1.0):
    return [(rng.standard_normal(s) * step_scale).astype(np.float32) for s in shapes]


def _tensor(array, dtype):
    return ops.cast(Tensor(np.asarray(array, np.float32)), dtype)  # numpy cannot hand MindSpore bfloat16


def _params(shapes, dtype=ms.float32):
    return [Parameter(_tensor(_initial(s), dtype), name=f"w{i}") for i, s in enumerate(shapes)]


def _state(opt):
    """Every Parameter of the optimizer (parameters and all state) as numpy arrays keyed by name."""
    return {p.name: (ops.cast(p, ms.float32) if p.dtype in (ms.float16, ms.bfloat16) else p).asnumpy()
            for p in opt.get_parameters()}


GRAD_SCALES = (1.0, 0.5, 4.0, 1.0, 0.1, 8.0, 1.0, 2.0, 1.0, 1.0)  # varying norms, so that clipping bites


def _run(impl, shapes=SHAPES, dtype=ms.float32, steps=STEPS, grad_scale=1.0, params=None, cls=ms_optim.Adagrad,
         **kwargs):
    kwargs.setdefault("lr", 0.01)
    opt = cls(params or _params(shapes, dtype), impl=impl, **kwargs)
    assert opt.impl == impl
    rng = np.random.default_rng(1)
    for t in range(steps):
        opt(tuple(_tensor(g * grad_scale, dtype) for g in _grads(rng, shapes, GRAD_SCALES[t])))
    return _state(opt)


def _ms_version():
    return tuple(int(part) for part in ms.__version__.split(".")[:2])


# ---------------------------------------------------------------------------------------------- the quantizer

def _nearest_code(x):
    """Brute force: index of the code nearest to each float32 x (float64 distances), ties to the lower index."""
    x = np.asarray(x, np.float32).reshape(-1).astype(np.float64)
    dist = np.abs(x[:, None] - quantization.CODE.astype(np.float64)[None, :])
    return np.argmin(dist, axis=1).astype(np.uint8)  # argmin takes the first (lower) index of equal distances


def test_code_table_is_bitsandbytes_signed_dynamic_map():
    code = quantization.CODE
    assert code.dtype == np.float32 and code.shape == (256,) and np.all(np.diff(code) > 0)
    assert code[127] == 0.0 and code[255] == 1.0 and np.count_nonzero(code < 0) == 127
    assert abs(code[0] + 0.992969) < 1e-6 and abs(code[128] - 5.5e-7) < 1e-12
    try:
        from bitsandbytes.functional import create_dynamic_map
    except ImportError as err:
        pytest.skip(f"bitsandbytes is not importable ({err}); the table's construction is still checked above")
    np.testing.assert_array_equal(code, create_dynamic_map(signed=True).numpy())


def _log_spread(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(n) * np.exp(rng.uniform(-25, 3, n))).astype(np.float32)


def test_quantizer_is_exact_nearest():
    """Against the brute-force oracle: random values, the exact midpoints between codes and their float32
    neighbours (a midpoint itself goes to the lower code)."""
    mids = (quantization.CODE[:-1].astype(np.float64) + quantization.CODE[1:]) / 2
    near = mids.astype(np.float32)
    x = np.concatenate([np.random.default_rng(0).uniform(-1, 1, 20000).astype(np.float32),
                        (_log_spread(20000) / 1e3).clip(-1, 1), near, np.nextafter(near, np.float32(2)),
                        np.nextafter(near, np.float32(-2)), quantization.CODE, [0.0, -0.0, 1e-45, -1e-45]])
    x = x.astype(np.float32)
    np.testing.assert_array_equal(quantization.encode(x), _nearest_code(x))
    exact_mid = near.astype(np.float64) == mids
    assert exact_mid.any()
    np.testing.assert_array_equal(quantization.encode(near[exact_mid]), np.nonzero(exact_mid)[0])  # ties: lower


@pytest.mark.parametrize("block_wise", [True, False], ids=["block_wise", "tensor_wise"])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 4097, 100003])
def test_quantize_blocks_and_round_trip(n, block_wise):
    x = _log_spread(n, seed=n)
    codes, absmax = quantization.quantize(x, block_wise)
    size = 256 if block_wise else n
    assert codes.dtype == np.uint8 and codes.shape == x.shape
    assert absmax.shape == (quantization.num_blocks(n, block_wise),) == (-(-n // size),)
    for b in range(absmax.size):
        block = x[b * size:(b + 1) * size]
        assert absmax[b] == np.abs(block).max()
        np.testing.assert_array_equal(codes[b * size:(b + 1) * size], _nearest_code(block / absmax[b]))
    back = quantization.dequantize(codes, absmax)
    scale = np.repeat(absmax, size)[:n]
    np.testing.assert_array_equal(back, quantization.CODE[codes] * scale)
    assert np.all(np.abs(back - x) <= 0.0071 * scale)  # largest half-gap of the table (next to 1.0: 0.00352)


def _kernel_lib():
    lib = ctypes.CDLL(kernels.locate_library("adagrad"))
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    return lib, ptr


@pytest.mark.parametrize("block_wise", [True, False], ids=["block_wise", "tensor_wise"])
def test_kernel_header_matches_python_quantizer(block_wise):
    """ops/common/quant8.h (through the kernel library) builds the same table and thresholds and gives the same
    codes and absmax as ms_optim/quantization.py, on log-spread data and every (97 * 251)th float32 bit pattern."""
    lib, ptr = _kernel_lib()
    code, threshold = np.zeros(256, np.float32), np.zeros(256, np.float32)
    assert lib.MsOptimQuant8Tables(ptr(code), ptr(threshold)) == quantization.LAYOUT_VERSION
    np.testing.assert_array_equal(code, quantization.CODE)
    np.testing.assert_array_equal(threshold[:255], quantization.THRESHOLDS)
    patterns = np.arange(0, 2 ** 32, 97 * 251, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for x in (_log_spread(100003), np.append(patterns[np.abs(patterns) <= 1], np.float32(1.0))):
        x = np.ascontiguousarray(x, np.float32)
        codes = np.zeros(x.size, np.uint8)
        absmax = np.zeros(quantization.num_blocks(x.size, block_wise), np.float32)
        lib.MsOptimQuant8Quantize(ptr(x), ctypes.c_int64(x.size), int(block_wise), ptr(codes), ptr(absmax))
        want_codes, want_absmax = quantization.quantize(x, block_wise)
        np.testing.assert_array_equal(codes, want_codes)
        np.testing.assert_array_equal(absmax, want_absmax)


@pytest.mark.parametrize("scale", [1.0, 0.37, 3e-20, 2.0 ** -125, 1e-38, 1e30])
def test_kernel_quantizer_near_thresholds(scale):
    """The kernels' AVX2 re-quantizing multiplies by 1 / absmax and divides only where a threshold is near: values
    within 12 float32 patterns of every threshold times the block's absmax (both signs) still get the codes of the
    Python quantizer, which divides (scale 1e-38: below the shortcut's range, every value divided)."""
    lib, ptr = _kernel_lib()
    scale = np.float32(scale)
    near = (quantization.THRESHOLDS.astype(np.float32) * scale).view(np.int32)[:, None] + np.arange(-12, 13,
                                                                                                      dtype=np.int32)
    values = near.ravel().view(np.float32)
    values = values[np.isfinite(values) & (np.abs(values) <= scale)]
    pad = -values.size % 255
    values = np.concatenate([values, np.zeros(pad, np.float32)]).reshape(-1, 255)
    x = np.ascontiguousarray(np.concatenate([values, np.full((values.shape[0], 1), scale, np.float32)], axis=1).ravel())
    codes = np.zeros(x.size, np.uint8)
    absmax = np.zeros(quantization.num_blocks(x.size, True), np.float32)
    lib.MsOptimQuant8Quantize(ptr(x), ctypes.c_int64(x.size), 1, ptr(codes), ptr(absmax))
    want_codes, want_absmax = quantization.quantize(x, True)
    assert np.all(want_absmax == scale)
    np.testing.assert_array_equal(codes, want_codes)


# ---------------------------------------------------------------------------- float32 numpy oracle of the update

def _round_bf16(x):
    """float32 -> bfloat16 (round to nearest even) -> float32, for finite values."""
    bits = np.atleast_1d(np.asarray(x, np.float32)).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return bits.view(np.float32).reshape(np.shape(x))


def _store(x, dtype):
    """float32 -> storage dtype -> float32, rounding to nearest even."""
    if dtype == "float16":
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return _round_bf16(x)
    return np.asarray(x, np.float32)


def _oracle(shapes=SHAPES, steps=STEPS, lr=0.01, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
            eps=1e-10, optim_bits=32, min_8bit_size=4096, percentile_clipping=100, block_wise=True, loss_scale=1.0,
            grad_scale=1.0, dtype="float32", lrs=None, wds=None):
    """The documented update, operation by operation in float32 (the quantizer by brute force). Returns
    {name: array} with the optimizer's state names."""
    f = np.float32
    lrs = lrs or [lr] * len(shapes)
    wds = wds or [weight_decay] * len(shapes)
    params = [_store(_initial(s), dtype).reshape(-1) for s in shapes]
    eight = [optim_bits == 8 and int(np.prod(s)) >= min_8bit_size for s in shapes]
    size = [256 if block_wise else int(np.prod(s)) for s in shapes]
    accum = []
    for s, e, bs in zip(shapes, eight, size):
        n = int(np.prod(s))
        if e:
            nb = -(-n // bs)
            accum.append((np.full(n, 255 if initial_accumulator_value > 0 else 127, np.uint8),
                          np.full(nb, initial_accumulator_value, f)))
        else:
            accum.append(np.full(n, initial_accumulator_value, f))
    gnorm = [np.zeros(100, np.float64) for _ in shapes]
    rng = np.random.default_rng(1)
    for t in range(1, steps + 1):
        denom = f(1) + (f(t) - f(1)) * f(lr_decay)
        for i, g in enumerate(_grads(rng, shapes, GRAD_SCALES[t - 1])):
            g = _store(g * grad_scale, dtype).reshape(-1)
            if loss_scale != 1.0:
                g = _store(g * _store(f(1.0 / loss_scale), dtype), dtype)
            clr = f(lrs[i]) / denom
            scale = f(1)
            if percentile_clipping < 100:
                norm = float(np.sum(g.astype(np.float64) ** 2))
                if t == 1:
                    gnorm[i][:] = norm
                gnorm[i][t % 100] = norm
                current, clip = np.sqrt(norm), np.sqrt(np.sort(gnorm[i])[percentile_clipping])
                scale = f(clip / current) if current > clip else f(1)
            p = params[i]
            g = g * scale
            g = g + f(wds[i]) * p
            if eight[i]:
                codes, absmax = accum[i]
                s = quantization.CODE[codes] * np.repeat(absmax, size[i])[:p.size]
            else:
                s = accum[i]
            s = s + g * g
            p = p - clr * (g / (np.sqrt(s) + f(eps)))
            params[i] = _store(p, dtype)
            if eight[i]:
                nb = absmax.size
                padded = np.zeros(nb * size[i], f)
                padded[:p.size] = s
                absmax = np.abs(padded.reshape(nb, size[i])).max(axis=1)
                scaled = np.where(absmax[:, None] > 0, padded.reshape(nb, size[i]) / np.maximum(absmax, 1e-38)[:, None],
                                  f(0)).reshape(-1)[:p.size]
                accum[i] = (_nearest_code(scaled), absmax.astype(f))
            else:
                accum[i] = s
    out = {}
    for i, s in enumerate(shapes):
        out[f"w{i}"] = params[i].reshape(s)
        if eight[i]:
            out[f"accum_code.w{i}"] = accum[i][0].reshape(s)
            out[f"accum_absmax.w{i}"] = accum[i][1]
        else:
            out[f"accum.w{i}"] = accum[i].reshape(s)
        if percentile_clipping < 100:
            out[f"gnorm_vec.w{i}"] = gnorm[i].astype(f)
    return out


_TORCH_OPTIONS = {"lr_decay": 0.05, "initial_accumulator_value": 0.1, "weight_decay": 0.01, "eps": 1e-6,
                  "loss_scale": 64.0, "grad_scale": 64.0}
CASES = {  # exact float32 oracle: no percentile clipping here (its norm is summed in another order), see below
    "32bit_options": dict(_TORCH_OPTIONS),
    "8bit": {"optim_bits": 8},
    "8bit_options": {"optim_bits": 8, **_TORCH_OPTIONS},
    "8bit_tensor_wise": {"optim_bits": 8, "block_wise": False},
}


def _compare(got, want, case, exact=True):
    assert sorted(k for k in got if k not in ("global_step", "learning_rate", "quant8_layout")) == sorted(want), case
    if any(name.startswith("accum_code") for name in want):  # 8-bit state carries its layout version
        assert got["quant8_layout"].tolist() == [quantization.LAYOUT_VERSION], case
    else:
        assert "quant8_layout" not in got, case
    for name, value in want.items():
        if name.startswith("accum_code") and not exact:
            # a last-bit difference of s (clipping: the norm is summed in another order) can move a code by one
            diff = np.abs(got[name].astype(int) - value.astype(int))
            assert diff.max() <= 1 and np.mean(diff == 0) >= 0.999, f"{case}: {name}"
        elif exact:
            np.testing.assert_array_equal(got[name], value, err_msg=f"{case}: {name}")
        else:
            np.testing.assert_allclose(got[name], value, rtol=2e-5, atol=1e-7, err_msg=f"{case}: {name}")


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_matches_numpy_oracle(mode, case):
    """Same float32 operations in the same order: identical bits (codes, absmax, parameters, sums), except where
    percentile clipping sums the squared norm (MindSpore's ReduceSum order vs float64 here)."""
    kwargs = dict(CASES[case])
    got = _run("reference", **kwargs)
    _compare(got, _oracle(**kwargs), case, exact="percentile_clipping" not in kwargs)
    assert got["global_step"][0] == STEPS


# ------------------------------------------------------------------------------------------- fused vs reference

def _groups(dtype):
    params = _params(SHAPES, dtype)
    return [{"params": params[:3], "lr": 0.02, "weight_decay": 0.1}, {"params": params[3:]}]


FUSED_CASES = {
    "32bit_options_clipping": {**_TORCH_OPTIONS, "percentile_clipping": 50},
    "8bit": {"optim_bits": 8},
    "8bit_options_clipping_groups": {"optim_bits": 8, **_TORCH_OPTIONS, "percentile_clipping": 5, "groups": True},
    "8bit_tensor_wise_clipping": {"optim_bits": 8, "block_wise": False, "percentile_clipping": 5},
}


def _fused_and_reference(case, dtype):
    kwargs = dict(FUSED_CASES[case])
    results = {}
    for impl in ("fused", "reference"):
        if kwargs.get("groups"):
            args = {k: v for k, v in kwargs.items() if k != "groups"}
            results[impl] = _run(impl, dtype=DTYPES[dtype], params=_groups(DTYPES[dtype]), **args)
        else:
            results[impl] = _run(impl, dtype=DTYPES[dtype], **kwargs)
    assert results["fused"].keys() == results["reference"].keys()
    for name, value in results["reference"].items():
        np.testing.assert_array_equal(results["fused"][name], value, err_msg=f"{case}/{dtype}: {name}")
    assert not np.array_equal(results["fused"]["w3"], _store(_initial((33, 130)), dtype)), "nothing moved"


@pytest.mark.parametrize("case", sorted(FUSED_CASES))
def test_fused_matches_reference(mode, case):
    """Parameter and every state tensor (codes, absmax, sums, norms, step), 8 steps, sizes 1 to 4500, bit for bit."""
    _fused_and_reference(case, "float32")


def test_fused_matches_reference_on_any_codes(mode):
    """8-bit state holding every code, negative values included (a sum is never negative, but a loaded state may
    hold anything; the kernels decode the codes of non-negative values by a shorter path): fused and reference give
    the same bits, NaN where a negative sum meets its square root."""
    n = 4 * 4096 + 100
    rng = np.random.default_rng(5)
    codes = rng.integers(0, 256, n).astype(np.uint8)
    codes[:8192] = rng.integers(quantization.ZERO_CODE, 256, 8192)  # whole blocks of non-negative codes too
    absmax = rng.uniform(0.5, 2.0, -(-n // 256)).astype(np.float32)
    init = rng.standard_normal(n).astype(np.float32)
    grads = [Tensor(rng.standard_normal(n).astype(np.float32)) for _ in range(3)]
    out = {}
    for impl in ("fused", "reference"):
        p = Parameter(Tensor(init.copy()), name="w")
        opt = ms_optim.Adagrad8bit([p], lr=0.01, impl=impl)
        opt.accum_code[0].set_data(Tensor(codes.copy()))
        opt.accum_absmax[0].set_data(Tensor(absmax.copy()))
        for g in grads:
            opt((g,))
        out[impl] = [x.asnumpy() for x in (p, opt.accum_code[0], opt.accum_absmax[0])]
    for got, want in zip(out["fused"], out["reference"]):
        np.testing.assert_array_equal(got, want)
    assert np.isnan(out["fused"][0]).any() and not np.isnan(out["fused"][0][:8192]).any()


@pytest.mark.parametrize("case", ["8bit_options_clipping_groups"])
def test_fused_matches_reference_float16(case):
    ms.set_context(mode=ms.GRAPH_MODE)
    _fused_and_reference(case, "float16")


def test_fused_matches_reference_with_mixed_dtypes_in_one_call(mode):
    """One kernel call per state kind takes every parameter of that kind, whatever its dtype: float32 and float16
    parameters in one optimizer (8-bit and float32 state, groups with their own lr and weight decay, clipping)
    give the reference path's bits on the parameter and every state tensor over 8 steps."""
    shapes, dtypes = [(33, 130), (4500,), (7,), (5,)], [ms.float32, ms.float16, ms.float32, ms.float16]
    results = {}
    for impl in ("fused", "reference"):
        params = [Parameter(_tensor(_initial(s), d), name=f"w{i}") for i, (s, d) in enumerate(zip(shapes, dtypes))]
        groups = [{"params": [params[0], params[3]], "lr": 0.03, "weight_decay": 0.2}, {"params": params[1:3]}]
        opt = ms_optim.Adagrad(groups, lr=0.01, optim_bits=8, percentile_clipping=20, impl=impl)
        order = [int(p.name[1:]) for p in opt.parameters]  # the groups' order (w0, w3, w1, w2): gradients follow it
        rng = np.random.default_rng(4)
        for t in range(STEPS):
            grads = [_tensor(g, d) for g, d in zip(_grads(rng, shapes, GRAD_SCALES[t]), dtypes)]
            opt(tuple(grads[i] for i in order))
        results[impl] = _state(opt)
    assert {"accum_code.w0", "accum_code.w1", "accum.w2", "accum.w3"} <= set(results["fused"])
    assert results["fused"].keys() == results["reference"].keys()
    for name, value in results["reference"].items():
        np.testing.assert_array_equal(results["fused"][name], value, err_msg=name)
    assert not np.array_equal(results["fused"]["w1"], _store(_initial((4500,)), "float16")), "nothing moved"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("case", ["8bit_options", "32bit_options"])
def test_fused_low_precision_params_match_oracle(case, dtype):
    """float16 / bfloat16 parameters, float32 math and state: the fused kernel gives the oracle's bits (MindSpore's
    CPU backend has no bfloat16 Assign, so the reference path cannot run on bfloat16 here)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    kwargs = CASES[case]
    if dtype == "bfloat16" and kwargs.get("loss_scale", 1.0) != 1.0 and _ms_version() < (2, 10):
        pytest.skip(f"MindSpore {ms.__version__} has no bfloat16 Mul on CPU, which nn.Optimizer.scale_grad needs for "
                    f"loss_scale != 1 (nn.Adam fails the same way there); 2.10 has it")
    _compare(_run("fused", dtype=DTYPES[dtype], **kwargs), _oracle(dtype=dtype, **kwargs), f"{case}/{dtype}")


_THREADS_SCRIPT = textwrap.dedent("""
    import ctypes, sys, numpy as np, mindspore as ms
    from mindspore import Parameter, Tensor
    import ms_optim
    from ms_optim import kernels
    ms.set_device("CPU")
    out = []
    # many blocks per thread, partial last blocks; with several tensors in one call, thread chunks start and end
    # inside tensors and at their boundaries
    for sizes in ([3 * (1 << 20) + 17], [(1 << 20) + 5, 4099, 300, 2 * (1 << 20) + 100, 70001]):
        for kwargs in ({"optim_bits": 8}, {"optim_bits": 8, "block_wise": False}, {}):
            ps = [Parameter(Tensor(np.linspace(-1, 1, n, dtype=np.float32)), name=f"w{i}") for i, n in enumerate(sizes)]
            opt = ms_optim.Adagrad(ps, lr=0.01, impl="fused", **kwargs)
            rng = np.random.default_rng(0)
            for _ in range(3):
                opt(tuple(Tensor(rng.standard_normal(n).astype(np.float32)) for n in sizes))
            out += [np.atleast_1d(x.asnumpy()).view(np.uint8).ravel() for x in opt.get_parameters()]
    # the quantizer on its own, on the values of sys.argv[2] (block-wise)
    x = np.load(sys.argv[2])
    codes = np.zeros(x.size, np.uint8)
    absmax = np.zeros(-(-x.size // 256), np.float32)
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)
    ctypes.CDLL(kernels.locate_library("adagrad")).MsOptimQuant8Quantize(ptr(x), ctypes.c_int64(x.size), 1,
                                                                         ptr(codes), ptr(absmax))
    out += [codes, absmax.view(np.uint8)]
    np.save(sys.argv[1], np.concatenate(out))
""")


def test_results_do_not_depend_on_thread_count_or_instruction_set(tmp_path):
    """Bit-identical state and parameters for 1, 2 and 3 threads, and for each hand-written 8-bit block loop
    (MS_OPTIM_QUANT8_SIMD caps it: 'none' is the portable loop; 'avx2' and 'avx512' run where the CPU has them, else
    the best below), on updates and on the quantizer near every threshold."""
    script = tmp_path / "threads.py"
    script.write_text(_THREADS_SCRIPT)
    blocks = []
    for scale in (np.float32(1.0), np.float32(0.37), np.float32(3e-20)):
        # values within 12 float32 patterns of every threshold times `scale`, in blocks of 255 plus `scale` itself,
        # so that each block's absmax is `scale` and the values land next to the thresholds after the division
        near = ((quantization.THRESHOLDS.astype(np.float32) * scale).view(np.int32)[:, None]
                + np.arange(-12, 13, dtype=np.int32)).ravel().view(np.float32)
        near = near[np.isfinite(near) & (np.abs(near) <= scale)]
        near = np.concatenate([near, np.zeros(-near.size % 255, np.float32)]).reshape(-1, 255)
        blocks.append(np.concatenate([near, np.full((near.shape[0], 1), scale, np.float32)], axis=1).ravel())
    np.save(tmp_path / "values.npy", np.ascontiguousarray(np.concatenate(blocks)))
    outputs = {}
    for threads, simd in ((1, "none"), (3, "avx2"), (2, "avx512")):
        out = tmp_path / f"out{threads}.npy"
        env = dict(os.environ, MS_OPTIM_NUM_THREADS=str(threads), MS_OPTIM_QUANT8_SIMD=simd)
        subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "values.npy")], env=env, check=True,
                       capture_output=True)
        outputs[simd] = np.load(out)
    assert outputs["none"].tobytes() == outputs["avx2"].tobytes() == outputs["avx512"].tobytes()


def test_kernel_refuses_a_wrong_absmax_and_writes_nothing():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    op = adagrad_module._select_update_fns("fused")[1]  # pylint: disable=protected-access
    param = Parameter(Tensor(np.ones(600, np.float32)), name="p")
    code = Parameter(Tensor(np.full(600, 127, np.uint8)), name="c")
    absmax = Parameter(Tensor(np.zeros(2, np.float32)), name="a")  # 600 elements need 3 blocks (or 1)
    scalars = [Tensor([x], ms.float32) for x in (0.1, 1.0, 0.0, 1e-10)]
    with pytest.raises(RuntimeError, match="absmax"):
        op((param,), (code,), (absmax,), (Tensor(np.ones(600, np.float32)),), *scalars).asnumpy()
    np.testing.assert_array_equal(param.asnumpy(), np.ones(600, np.float32))
    np.testing.assert_array_equal(code.asnumpy(), np.full(600, 127, np.uint8))
    ms.set_context(mode=ms.GRAPH_MODE)


# ------------------------------------------------------------------------------------ state, sizes, clipping

def test_min_8bit_size_boundary():
    """bitsandbytes' rule: a tensor of min_8bit_size elements goes 8-bit, one element fewer stays float32."""
    small = Parameter(Tensor(np.ones(4095, np.float32)), name="small")
    large = Parameter(Tensor(np.ones((64, 64), np.float32)), name="large")
    opt = ms_optim.Adagrad8bit([small, large])
    shapes = {p.name: (p.shape, p.dtype) for p in opt.get_parameters()}
    assert shapes["accum.small"] == ((4095,), ms.float32) and "accum_code.small" not in shapes
    assert shapes["accum_code.large"] == ((64, 64), ms.uint8) and shapes["accum_absmax.large"] == ((16,), ms.float32)
    assert "accum.large" not in shapes and not any(name.startswith("gnorm_vec") for name in shapes)
    opt = ms_optim.Adagrad([small, large], optim_bits=8, min_8bit_size=4095, block_wise=False, percentile_clipping=5)
    shapes = {p.name: (p.shape, p.dtype) for p in opt.get_parameters()}
    assert shapes["accum_code.small"] == ((4095,), ms.uint8) and shapes["accum_absmax.small"] == ((1,), ms.float32)
    assert shapes["gnorm_vec.small"] == ((100,), ms.float32) and shapes["gnorm_vec.large"] == ((100,), ms.float32)


class _Args:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


def test_args_object_overrides_keywords():
    w = Parameter(Tensor(np.ones(300, np.float32)), name="w")
    opt = ms_optim.Adagrad([w], optim_bits=32, args=_Args(optim_bits=8, min_8bit_size=256, max_unorm=0.0))
    assert [p.name for p in opt.accum_code] == ["accum_code.w"] and opt.min_8bit_size == 256
    opt = ms_optim.Adagrad32bit([w], args=_Args(percentile_clipping=10))
    assert opt.percentile_clipping == 10 and [p.name for p in opt.accum] == ["accum.w"]


def test_initial_accumulator_value_in_8bit_state():
    w = Parameter(Tensor(np.ones(5000, np.float32)), name="w")
    opt = ms_optim.Adagrad8bit([w], initial_accumulator_value=0.25)
    assert np.all(opt.accum_code[0].asnumpy() == 255) and np.all(opt.accum_absmax[0].asnumpy() == np.float32(0.25))
    opt = ms_optim.Adagrad8bit([w])
    assert np.all(opt.accum_code[0].asnumpy() == 127) and np.all(opt.accum_absmax[0].asnumpy() == 0)


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_percentile_clipping_follows_the_oracle(mode, impl):
    """Percentile 5 of the last 100 squared norms, per parameter; steps with larger norms are scaled down; float64
    oracle of the norms (the sum order differs: agreement to float32 rounding)."""
    kwargs = {"percentile_clipping": 5, "lr": 0.1}
    got = _run(impl, shapes=SHAPES[:4], **kwargs)
    want = _oracle(shapes=SHAPES[:4], **kwargs)
    _compare(got, want, "clipping", exact=False)
    unclipped = _oracle(shapes=SHAPES[:4], lr=0.1)
    assert not np.allclose(want["w3"], unclipped["w3"]), "clipping never bit: the test could not fail"
    norms = got["gnorm_vec.w3"]
    assert np.count_nonzero(norms != norms[0]) == STEPS - 1  # slots 2..STEPS written, the rest from step 1


# -------------------------------------------------------------------------------------------------- peer parity

def _torch():
    try:
        import torch
    except ImportError as err:
        pytest.skip(f"torch is not importable ({err})")
    return torch


def _run_torch(make, shapes, steps):
    torch = _torch()
    params = [torch.nn.Parameter(torch.tensor(_initial(s))) for s in shapes]
    opt = make(params)
    rng = np.random.default_rng(1)
    for t in range(steps):
        for p, g in zip(params, _grads(rng, shapes, GRAD_SCALES[t])):
            p.grad = torch.tensor(g)
        opt.step()
    return params, opt


@pytest.mark.parametrize("kwargs", [{}, {"lr_decay": 0.05, "initial_accumulator_value": 0.1, "weight_decay": 0.01},
                                    {"lr_decay": 0.5, "eps": 1e-3}], ids=["default", "decay_init_wd", "eps"])
def test_torch_adagrad_parity(kwargs):
    """torch.optim.Adagrad: same formula; differences are float32 roundings (torch forms lr/(1+(t-1)*lr_decay) in
    double). Measured after 8 steps: parameters within 2.9e-6 relative (|p| floored at 1e-3), sums within 2.4e-7
    relative."""
    torch = _torch()
    ms.set_context(mode=ms.GRAPH_MODE)
    params, opt = _run_torch(lambda p: torch.optim.Adagrad(p, lr=0.01, **kwargs), SHAPES, STEPS)
    ours = _run("fused", **kwargs)
    for i, p in enumerate(params):
        np.testing.assert_allclose(ours[f"w{i}"], p.detach().numpy(), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(ours[f"accum.w{i}"], opt.state[p]["sum"].numpy(), rtol=1e-6)


def _bnb():
    try:
        import bitsandbytes
    except ImportError as err:
        pytest.skip(f"bitsandbytes is not importable ({err})")
    return bitsandbytes


def test_bitsandbytes_adagrad32bit_parity():
    """bitsandbytes' Adagrad32bit on CPU (weight decay on every parameter). Measured after 8 steps: parameters
    within 1.4e-6 relative (|p| floored at 1e-3), sums within 2.4e-7 relative."""
    bnb = _bnb()
    ms.set_context(mode=ms.GRAPH_MODE)
    params, opt = _run_torch(lambda p: bnb.optim.Adagrad32bit(p, lr=0.01, weight_decay=0.01), SHAPES, STEPS)
    ours = _run("fused", cls=ms_optim.Adagrad32bit, weight_decay=0.01)
    for i, p in enumerate(params):
        np.testing.assert_allclose(ours[f"w{i}"], p.detach().numpy(), rtol=1e-5, atol=1e-8)
        np.testing.assert_allclose(ours[f"accum.w{i}"], opt.state[p]["state1"].numpy(), rtol=1e-6)


def test_bitsandbytes_adagrad8bit_parity():
    """bitsandbytes' Adagrad8bit on CPU: same layout (256-element blocks, uint8 codes, the same table), but its CPU
    backend rounds through a 65,536-bin lookup table, not to the exact nearest code (docs/adagrad.md): small sums
    (relative to their block's absmax) get other codes, the step of such an element differs, and trajectories drift
    apart. Measured after 8 steps (lr 0.01): 99.4 - 99.6 % of codes equal, at most 2 apart; absmax within 1.2e-7
    relative; parameters within 2.9e-3 absolute; float32 state of small tensors within 1.2e-7 relative."""
    bnb = _bnb()
    ms.set_context(mode=ms.GRAPH_MODE)
    params, opt = _run_torch(lambda p: bnb.optim.Adagrad8bit(p, lr=0.01), SHAPES, STEPS)
    ours = _run("fused", cls=ms_optim.Adagrad8bit)
    for i, (p, s) in enumerate(zip(params, SHAPES)):
        np.testing.assert_allclose(ours[f"w{i}"], p.detach().numpy(), rtol=0, atol=5e-3)
        state = opt.state[p]
        if int(np.prod(s)) < 4096:
            np.testing.assert_allclose(ours[f"accum.w{i}"], state["state1"].numpy(), rtol=1e-6)
            continue
        np.testing.assert_array_equal(state["qmap1"].numpy(), quantization.CODE)
        np.testing.assert_allclose(ours[f"accum_absmax.w{i}"], state["absmax1"].numpy(), rtol=1e-6)
        diff = np.abs(ours[f"accum_code.w{i}"].astype(int) - state["state1"].numpy().astype(int))
        assert diff.max() <= 2 and np.mean(diff == 0) >= 0.99, (diff.max(), np.mean(diff == 0))


# ------------------------------------------------------------------------------------------------------ errors

ERROR_CASES = [
    ({"lr": -0.1}, ValueError, "Invalid learning rate: -0.1"),
    ({"learning_rate": -1}, ValueError, "Invalid learning rate: -1"),
    ({"lr": "fast"}, TypeError, "'lr'"),
    ({"lr": 0.1, "learning_rate": 0.1}, TypeError, "'lr' and its alias 'learning_rate'"),
    ({"weight_decay": -0.5}, ValueError, "Invalid weight_decay value: -0.5"),
    ({"weight_decay": "0"}, TypeError, "'weight_decay'"),
    ({"eps": -1e-10}, ValueError, "Invalid epsilon value: -1e-10"),
    ({"eps": None}, TypeError, "'eps'"),
    ({"lr_decay": -0.1}, ValueError, "Invalid lr_decay value: -0.1"),
    ({"lr_decay": True}, TypeError, "'lr_decay'"),
    ({"initial_accumulator_value": -1.0}, ValueError, "Invalid initial_accumulator_value value: -1.0"),
    ({"initial_accumulator_value": [0.1]}, TypeError, "'initial_accumulator_value'"),
    ({"optim_bits": 16}, NotImplementedError, "Amount of optimizer bits not supported: 16"),
    ({"optim_bits": 8.0}, TypeError, "'optim_bits'"),
    ({"args": _Args(optim_bits=4)}, NotImplementedError, "Amount of optimizer bits not supported: 4"),
    ({"args": _Args(min_8bit_size="4096")}, TypeError, "'min_8bit_size (from 'args')'"),
    ({"min_8bit_size": -1}, ValueError, "'min_8bit_size'"),
    ({"min_8bit_size": 4096.0}, TypeError, "'min_8bit_size'"),
    ({"percentile_clipping": 101}, ValueError, "'percentile_clipping'"),
    ({"percentile_clipping": 5.0}, TypeError, "'percentile_clipping'"),
    ({"block_wise": 1}, TypeError, "'block_wise'"),
    ({"loss_scale": 0}, ValueError, "'loss_scale'"),
    ({"loss_scale": "1"}, TypeError, "'loss_scale'"),
    ({"impl": "fast"}, ValueError, "'impl'"),
    ({"groups": {"weight_decay": -1.0}}, ValueError, "Invalid weight_decay value: -1.0"),
    ({"groups": {"lr": -0.5}}, ValueError, "Invalid learning rate: -0.5"),
]


@pytest.mark.parametrize("kwargs,error,message", ERROR_CASES, ids=[str(c[0]) for c in ERROR_CASES])
def test_documented_errors(mode, kwargs, error, message):
    params = _params([(6, 5), (7,)])
    kwargs = dict(kwargs)
    group = kwargs.pop("groups", None)
    arg = [dict(group, params=params[:1]), {"params": params[1:]}] if group else params
    with pytest.raises(error) as info:
        ms_optim.Adagrad(arg, **kwargs)
    assert message in str(info.value), str(info.value)
    for p, s in zip(params, [(6, 5), (7,)]):
        np.testing.assert_array_equal(p.asnumpy(), _initial(s))


def test_preset_errors(mode):
    params = _params([(6, 5)])
    with pytest.raises(ValueError, match=r"^Adagrad8bit only supports optim_bits=8 \(default value for compatibility\)$"):
        ms_optim.Adagrad8bit(params, optim_bits=32)
    with pytest.raises(TypeError, match="'Adagrad32bit'.*'optim_bits'"):
        ms_optim.Adagrad32bit(params, optim_bits="32")
    assert ms_optim.Adagrad32bit(params, optim_bits=8).optim_bits == 32  # ignored, as in bitsandbytes
    with pytest.raises(TypeError, match="'Adagrad8bit'.*'block_wise'"):
        ms_optim.Adagrad8bit(params, block_wise="yes")


def test_bad_parameter_list(mode):
    with pytest.raises(TypeError, match="params"):
        ms_optim.Adagrad([1.0, 2.0])
    with pytest.raises(ValueError, match="params"):
        ms_optim.Adagrad([])


# ------------------------------------------------------------------------------- Model.train and checkpoints

def _dataset(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 80)).astype(np.float32)
    y = (x @ rng.standard_normal((80, 3)) * 0.2).astype(np.float32)
    return ms.dataset.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(16)


def _net():
    ms.set_seed(0)
    return nn.SequentialCell(nn.Dense(80, 64), nn.ReLU(), nn.Dense(64, 3))  # 80 x 64 = 5120: 8-bit by default


@pytest.mark.parametrize("optim_bits", [32, 8])
def test_model_train_and_fixed_loss_scale(optim_bits):
    """Model.train moves the weights and lowers the loss; a FixedLossScaleManager with the same loss_scale gives
    the same parameters and state."""
    ms.set_context(mode=ms.GRAPH_MODE)

    def train(manager=None, loss_scale=1.0):
        net = _net()
        opt = ms_optim.Adagrad(net.trainable_params(), lr=0.05, optim_bits=optim_bits, loss_scale=loss_scale)
        model = Model(net, nn.MSELoss(), opt, loss_scale_manager=manager, metrics={"loss": nn.Loss()})
        before = model.eval(_dataset(), dataset_sink_mode=False)["loss"]
        model.train(3, _dataset(), dataset_sink_mode=False)
        after = model.eval(_dataset(), dataset_sink_mode=False)["loss"]
        return before, after, {p.name: p.asnumpy() for p in opt.get_parameters()}

    before, after, plain = train()
    assert after < 0.7 * before, (before, after)
    assert ("accum_code.0.weight" in plain) == (optim_bits == 8)
    _, _, fixed = train(ms.amp.FixedLossScaleManager(128.0, drop_overflow_update=False), loss_scale=128.0)
    for name, value in plain.items():
        np.testing.assert_allclose(fixed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def _batches(count, seed=0):
    rng = np.random.default_rng(seed)
    return [(Tensor(rng.standard_normal((16, 80)).astype(np.float32)),
             Tensor(rng.standard_normal((16, 3)).astype(np.float32))) for _ in range(count)]


def _train_steps(step, batches):
    for x, y in batches:
        step(x, y)


@pytest.mark.parametrize("kwargs", [{"optim_bits": 8}, {"optim_bits": 8, "block_wise": False,
                                                        "percentile_clipping": 20, "lr_decay": 0.1}],
                         ids=["8bit", "tensor_wise_clipping_decay"])
def test_8bit_checkpoint_resumes_bit_identical(mode, tmp_path, kwargs):
    """Six steps straight, or three, a checkpoint, a fresh optimizer loading it and three more: the same bits in
    the parameters, codes, absmax, float32 sums, norms and step."""
    def make():
        net = _net()
        opt = ms_optim.Adagrad(net.trainable_params(), lr=0.05, **kwargs)
        return nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)

    batches = _batches(6)
    step = make()
    _train_steps(step, batches)
    straight = {p.name: p.asnumpy() for p in step.optimizer.get_parameters()}
    step = make()
    _train_steps(step, batches[:3])
    path = str(tmp_path / "adagrad8.ckpt")
    ms.save_checkpoint(step, path)
    saved = ms.load_checkpoint(path)
    assert saved["accum_code.0.weight"].dtype == ms.uint8
    resumed_step = make()
    not_loaded, _ = ms.load_param_into_net(resumed_step, saved)
    assert not not_loaded
    _train_steps(resumed_step, batches[3:])
    resumed = {p.name: p.asnumpy() for p in resumed_step.optimizer.get_parameters()}
    assert resumed.keys() == straight.keys()
    for name, value in straight.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


@pytest.mark.parametrize("kwargs", [{}, {"block_wise": False, "percentile_clipping": 20, "lr_decay": 0.1}],
                         ids=["8bit", "tensor_wise_clipping_decay"])
@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_checkpoint_of_another_layout_is_refused_before_writing(mode, tmp_path, impl, kwargs):
    """The 8-bit state's layout version is saved with it (quant8_layout); a checkpoint of another version loads,
    but its first step stops before anything is written (parameters, codes, absmax, float32 sums, step counter),
    with a message naming the versions on the fused path (MindSpore's Assert on the reference path). A checkpoint
    without the version (written before it was saved) is version 1 and resumes."""
    def make():
        net = _net()
        opt = ms_optim.Adagrad(net.trainable_params(), lr=0.05, optim_bits=8, impl=impl, **kwargs)
        return nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)

    step = make()
    _train_steps(step, _batches(2))
    path = str(tmp_path / "adagrad8.ckpt")
    ms.save_checkpoint(step, path)
    saved = ms.load_checkpoint(path)
    assert saved["quant8_layout"].asnumpy().tolist() == [quantization.LAYOUT_VERSION]
    assert saved["quant8_layout"].dtype == ms.int32

    saved["quant8_layout"] = Parameter(Tensor(np.array([quantization.LAYOUT_VERSION + 1], np.int32)),
                                       name="quant8_layout")
    other = make()
    not_loaded, _ = ms.load_param_into_net(other, saved)
    assert not not_loaded
    before = {p.name: p.asnumpy().copy() for p in other.get_parameters()}
    message = ("written under layout version 2 .'quant8_layout'., but this ms_optim reads version 1" if impl == "fused"
               else "assert failed")
    with pytest.raises(RuntimeError, match=message):
        _train_steps(other, _batches(1, seed=5))
    for p in other.get_parameters():  # parameters, codes, absmax, the bias's float32 sums, norms, step counter
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)

    del saved["quant8_layout"]  # a checkpoint from before the version was saved
    older = make()
    not_loaded, _ = ms.load_param_into_net(older, saved)
    assert not_loaded == ["quant8_layout"]
    _train_steps(older, _batches(1, seed=5))
    assert older.optimizer.global_step.asnumpy().tolist() == [3]


def test_layout_check_kernel_through_ctypes():
    """MsOptimQuant8Layout on its own: the version this library reads passes (flag 1), any other is refused with
    its own code and the versions named, a tensor that is not one int32 is refused as a bad scalar."""
    from ms_optim.kernels import _build
    sys.path.insert(0, os.path.dirname(__file__))
    from _kernel_abi import call
    lib = ctypes.CDLL(_build.locate_library("adagrad"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    flag = np.zeros(1, np.float32)
    assert call(lib, "MsOptimQuant8Layout", [np.array([quantization.LAYOUT_VERSION], np.int32), flag]) == 0
    assert flag.tolist() == [1.0]
    for other in (quantization.LAYOUT_VERSION + 1, -7):
        assert call(lib, "MsOptimQuant8Layout", [np.array([other], np.int32), np.zeros(1, np.float32)]) == 6
        assert (f"written under layout version {other} ('quant8_layout'), but this ms_optim reads version "
                f"{quantization.LAYOUT_VERSION}") in lib.MsOptimLastError().decode()
    for bad in (np.array([1], np.int64), np.array([1, 1], np.int32)):
        assert call(lib, "MsOptimQuant8Layout", [bad, np.zeros(1, np.float32)]) == 4
    assert call(lib, "MsOptimQuant8Layout", [np.array([1], np.int32)]) == 1


def test_graph_build_refusal_names_the_tensor_of_the_call(mode):
    """A gradient of another dtype than its parameter is refused when the step's graph is built, naming which tensor
    of the one call per state kind it is; nothing moves."""
    params = [Parameter(Tensor(np.ones(n, np.float32)), name=f"w{i}") for i, n in enumerate((5000, 3, 4))]
    opt = ms_optim.Adagrad8bit(params, impl="fused")  # w0: 8-bit state; w1, w2: float32 state, one call
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    grads = (Tensor(np.ones(5000, np.float32)), Tensor(np.ones(3, np.float32)), Tensor(np.ones(4, np.float16)))
    with pytest.raises(TypeError, match=r"the gradient's dtype Float16 must be the dtype of its parameter, Float32\. "
                                        r"\(tensor 1 of the 2 of this call\)"):
        opt(grads)
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


def test_multi_tensor_kernels_through_ctypes():
    """One call updates N tensors as N calls of one tensor would (bit for bit), with lr, gnorm_scale and weight_decay
    given once or per tensor, tensors of 0, 1 and 256 elements, block-wise and tensor-wise 8-bit tensors in one call;
    a bad input of any tensor (or a per-tensor vector of the wrong length, or a wrong number of inputs) is refused
    naming it, before anything of any tensor (the flag included) is written."""
    from ms_optim.kernels import _build
    sys.path.insert(0, os.path.dirname(__file__))
    from _kernel_abi import call
    lib = ctypes.CDLL(_build.locate_library("adagrad"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    rng = np.random.default_rng(7)
    sizes = [5000, 0, 257, 1, 256, 70001]
    tensor_wise = [False, False, True, False, False, True]  # 8-bit: one absmax for tensors 2 and 5
    f32 = lambda *x: np.array(x, np.float32)  # noqa: E731
    lrs, scales, eps = f32(0.1, 0.3, 0.02, 0.05, 0.07, 0.0), f32(1.0), f32(1e-10)
    decays = f32(0.0, 0.1, 0.3, 0, 0, 0.01)

    def tensors32():
        params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        return params, [np.full(n, 0.5, np.float32) for n in sizes], [rng.standard_normal(n).astype(np.float32)
                                                                       for n in sizes]

    def tensors8():
        state = [quantization.constant_state((n,), 0.5, not tw) for n, tw in zip(sizes, tensor_wise)]
        return ([rng.standard_normal(n).astype(np.float32) for n in sizes], [c for c, _ in state],
                [a for _, a in state], [rng.standard_normal(n).astype(np.float32) for n in sizes])

    def flat(lists, *scalars):
        return [x for group in lists for x in group] + list(scalars)

    last = len(sizes) - 1
    for symbol, make in (("MsOptimAdagrad", tensors32), ("MsOptimAdagrad8bit", tensors8)):
        lists = make()
        one = [[x.copy() for x in group] for group in lists]
        flag = np.zeros(1, np.float32)
        assert call(lib, symbol, flat(lists, lrs, scales, decays, eps, flag)) == 0
        assert flag.tolist() == [1.0]
        for t in range(len(sizes)):
            assert call(lib, symbol, [group[t] for group in one] + [lrs[t:t + 1], scales, decays[t:t + 1], eps,
                                                                     np.zeros(1, np.float32)]) == 0
        for got, want in zip(lists, one):
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes(), symbol

        lists = make()
        before = [[x.copy() for x in group] for group in lists]
        bad = [list(group) for group in lists]
        bad[-1][last] = bad[-1][last][:-1]  # the last tensor's gradient one element short
        flag = np.zeros(1, np.float32)
        assert call(lib, symbol, flat(bad, lrs, scales, decays, eps, flag)) == 3
        assert f"'grad[{last}]' has shape [70000], but 'param[{last}]' has [70001]" in lib.MsOptimLastError().decode()
        assert call(lib, symbol, flat(lists, lrs[:2], scales, decays, eps, flag)) == 4
        assert f"'lr' must be a float32 tensor of 1 or {len(sizes)} values (one per tensor)" in \
            lib.MsOptimLastError().decode()
        assert call(lib, symbol, flat(lists, lrs, scales, decays, flag)) == 1
        assert flag.tolist() == [0.0]
        for got, want in zip(lists, before):
            for a, b in zip(got, want):
                assert a.tobytes() == b.tobytes(), f"{symbol} wrote before refusing"
    lists = tensors8()
    lists[2][2] = np.zeros(3, np.float32)  # tensor 2 (257 elements) has 2 blocks: 3 absmax values fit neither form
    flag = np.zeros(1, np.float32)
    assert call(lib, "MsOptimAdagrad8bit", flat(lists, lrs, scales, decays, eps, flag)) == 3
    assert "'absmax[2]' has 3 values, expected 2 (one per block of 256) or 1" in lib.MsOptimLastError().decode()
    assert flag.tolist() == [0.0]


def test_layout_check_kind(monkeypatch):
    """Fused: the kernel; reference: MindSpore's Assert on CPU and GPU, none where it does not exist (Ascend, or a
    security build whose Assert refuses to be built)."""
    assert adagrad_module._layout_check_kind("fused") == "kernel"
    assert adagrad_module._layout_check_kind("reference") == "assert"
    monkeypatch.setattr(kernels, "device_target", lambda: "Ascend")
    assert adagrad_module._layout_check_kind("reference") == "none"
    monkeypatch.setattr(kernels, "device_target", lambda: "CPU")

    def refuse(*args, **kwargs):
        raise ValueError("The Assert is not supported, please without `-s on` and recompile source.")
    monkeypatch.setattr(adagrad_module.ops, "Assert", refuse)
    assert adagrad_module._layout_check_kind("reference") == "none"


def test_quant8_layout_exists_only_with_8bit_state():
    w, b = Parameter(Tensor(np.ones((64, 80), np.float32)), name="w"), Parameter(Tensor(np.ones(8, np.float32)), name="b")
    assert ms_optim.Adagrad([w, b], optim_bits=32).quant8_layout is None
    assert ms_optim.Adagrad([b], optim_bits=8).quant8_layout is None  # under min_8bit_size: float32 state
    layout = ms_optim.Adagrad8bit([w, b]).quant8_layout
    assert (layout.name, layout.dtype, layout.asnumpy().tolist()) == ("quant8_layout", ms.int32, [1])


def test_32bit_checkpoints_swap_with_nn_adagrad(tmp_path):
    """accum.<w>, global_step and learning_rate load by name both ways between ms_optim.Adagrad and nn.Adagrad
    (the state, not the trajectory: nn.Adagrad puts a fixed 1e-8 inside the square root)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    net = _net()
    ours = ms_optim.Adagrad(net.trainable_params(), lr=0.05)
    _train_steps(nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), ours), _batches(2))
    path = str(tmp_path / "ours.ckpt")
    ms.save_checkpoint(ours, path)
    theirs = nn.Adagrad(_net().trainable_params(), learning_rate=0.05)
    not_loaded, _ = ms.load_param_into_net(theirs, ms.load_checkpoint(path))
    assert not not_loaded
    for a, b in zip(ours.accum, theirs.accum):
        assert a.name == b.name
        np.testing.assert_array_equal(b.asnumpy(), a.asnumpy())
    _train_steps(nn.TrainOneStepCell(nn.WithLossCell(_net(), nn.MSELoss()), theirs), _batches(1, seed=5))
    ms.save_checkpoint(theirs, path)
    back = ms_optim.Adagrad(_net().trainable_params(), lr=0.05)
    not_loaded, _ = ms.load_param_into_net(back, ms.load_checkpoint(path))
    assert not not_loaded
    for a, b in zip(back.accum, theirs.accum):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_32bit_state_moves_to_experimental_adagrad_and_back(tmp_path):
    """mindspore.experimental.optim.Adagrad keeps accum.<w> too (and torch's formula, ours with weight_decay 0 and
    lr_decay 0): the sums load by name both ways and the next steps agree (its step counter, step_t, is not
    ours, global_step; it matters only with lr_decay). Parameters and sums within float32 rounding after two steps
    (the order of its operations differs)."""
    from mindspore.experimental import optim as experimental
    ms.set_context(mode=ms.GRAPH_MODE)

    def train(net, opt, batches):
        grad_fn = ms.value_and_grad(nn.WithLossCell(net, nn.MSELoss()), None, opt.parameters)
        for x, y in batches:
            opt(grad_fn(x, y)[1])

    net = _net()
    ours = ms_optim.Adagrad(net.trainable_params(), lr=0.05, eps=1e-10)
    train(net, ours, _batches(3))
    path = str(tmp_path / "ours.ckpt")
    ms.save_checkpoint(ours, path)
    their_net = _net()
    theirs = experimental.Adagrad(their_net.trainable_params(), lr=0.05, eps=1e-10)
    ckpt = ms.load_checkpoint(path)
    not_loaded, _ = ms.load_param_into_net(their_net, ckpt)
    assert not not_loaded
    not_loaded, _ = ms.load_param_into_net(theirs, ckpt)
    assert not_loaded == ["step_t"]  # its own counter
    accum = {name: p for name, p in theirs.parameters_and_names() if name.startswith("accum.")}
    assert sorted(accum) == sorted(a.name for a in ours.accum)
    for a in ours.accum:
        np.testing.assert_array_equal(accum[a.name].asnumpy(), a.asnumpy())
    train(net, ours, _batches(2, seed=7))
    train(their_net, theirs, _batches(2, seed=7))
    for a, b in zip(net.trainable_params(), their_net.trainable_params()):
        np.testing.assert_allclose(b.asnumpy(), a.asnumpy(), rtol=1e-5, atol=1e-7)
    for a in ours.accum:
        np.testing.assert_allclose(accum[a.name].asnumpy(), a.asnumpy(), rtol=1e-6)
    ms.save_checkpoint(theirs, path)
    back = ms_optim.Adagrad(_net().trainable_params(), lr=0.05)
    not_loaded, _ = ms.load_param_into_net(back, ms.load_checkpoint(path))
    assert sorted(not_loaded) == ["global_step", "learning_rate"]  # its counter is step_t, its lr in param_groups
    for a in back.accum:
        np.testing.assert_array_equal(a.asnumpy(), accum[a.name].asnumpy())
