"""Block-wise dynamic 8-bit state (bitsandbytes' layout): the code table, quantize and dequantize.

Layout (version ``LAYOUT_VERSION``; checkpoints depend on it, see docs/adagrad.md):

- a float32 tensor ``x`` of n elements is stored as ``codes`` (uint8, shape of ``x``) and ``absmax`` (float32):
  block-wise, one absmax per block of ``BLOCK_SIZE`` = 256 consecutive elements of the flattened tensor
  (``ceil(n / 256)`` values, the last block partial); tensor-wise (``block_wise=False``), one absmax for all n;
- ``absmax[b] = max |x|`` over block b, and ``codes[i]`` is the index of the entry of ``CODE`` (the table below)
  nearest to ``x[i] / absmax[b]`` (one float32 division), exactly nearest, a tie going to the lower index; a
  block whose absmax is 0 stores the code of 0.0 (``ZERO_CODE``);
- dequantized, ``x[i] = CODE[codes[i]] * absmax[b]`` (one float32 multiply).

``CODE`` is bitsandbytes' signed dynamic map (``create_dynamic_map(signed=True)``, 256 sorted float32 values from
about -0.99297 to 1.0, 0.0 at index 127): for i = 0..6 the midpoints of ``linspace(0.1, 1, 2**i + 1)`` times
``10**(i - 6)``, with both signs, plus 0 and 1. It is rebuilt here with bitsandbytes' exact float32 arithmetic:
torch's float32 ``linspace`` rounds once per point (``fma(step, k, 0.1)`` for the first half,
``fma(-step, n - 1 - k, 1.0)`` for the rest, ``step = (1 - 0.1) / (n - 1)``), the midpoints are
``(b[k] + b[k+1]) / 2`` and the scale ``float32(10**(i-6))`` multiplies in float32. The same construction is in
``ops/common/quant8.h`` for the kernels; tests compare both with bitsandbytes' table.

Exact nearest is decided by ``THRESHOLDS``: ``THRESHOLDS[k]`` is the largest float32 not above the exact midpoint
of ``CODE[k]`` and ``CODE[k+1]``, so for a float32 ``x``, ``x > THRESHOLDS[k]`` exactly when ``x`` is above that
midpoint, and the code is the number of thresholds below ``x``.

This module has the numpy versions (state initialisation, tools, tests) and the MindSpore-ops versions used by
the reference update (``ms_optim/functional/adagrad.py``); the kernels use the header.
"""
import numpy as np

LAYOUT_VERSION = 1
BLOCK_SIZE = 256
ZERO_CODE = 127  # CODE[127] == 0.0
ONE_CODE = 255  # CODE[255] == 1.0


def _torch_linspace_f32(n):
    """torch.linspace(0.1, 1, n, dtype=float32) on CPU, bit for bit (each point rounded once, as an FMA)."""
    f32 = np.float32
    start, end = f32(0.1), f32(1.0)
    step = (end - start) / f32(n - 1)
    out = np.empty(n, np.float32)
    for k in range(n):
        # float64 holds the product and the sum exactly here, so one rounding to float32 equals the FMA
        exact = float(start) + float(step) * k if k < n // 2 else float(end) - float(step) * (n - 1 - k)
        out[k] = f32(exact)
    return out


def dynamic_map():
    """bitsandbytes' signed dynamic map: 256 sorted float32 values (a new array)."""
    f32 = np.float32
    values = [f32(0.0), f32(1.0)]
    for i in range(7):
        bounds = _torch_linspace_f32(2 ** i + 1)
        means = (bounds[:-1] + bounds[1:]) / f32(2)
        scale = f32(10.0 ** (i - 6))
        values += list(scale * means) + list(-scale * means)
    table = np.sort(np.array(values, np.float32))
    assert table.shape == (256,) and table[ZERO_CODE] == 0.0 and table[ONE_CODE] == 1.0
    return table


def _thresholds(code):
    mid = (code[:-1].astype(np.float64) + code[1:].astype(np.float64)) / 2  # exact in float64
    below = mid.astype(np.float32)
    over = below.astype(np.float64) > mid
    below[over] = np.nextafter(below[over], np.float32(-np.inf))
    return below


CODE = dynamic_map()
CODE.setflags(write=False)
THRESHOLDS = _thresholds(CODE)
THRESHOLDS.setflags(write=False)


def num_blocks(n, block_wise=True):
    """Number of absmax values for a tensor of ``n`` elements."""
    return max(1, -(-n // BLOCK_SIZE)) if block_wise else 1


def encode(x):
    """Codes (uint8) of float32 values already divided by their absmax: exact nearest entry of CODE."""
    x = np.asarray(x, np.float32)
    return np.searchsorted(THRESHOLDS, x, side="left").astype(np.uint8)


def quantize(x, block_wise=True):
    """(codes uint8 of the shape of ``x``, absmax float32 of ``num_blocks``) for a float tensor ``x``."""
    x = np.asarray(x, np.float32)
    flat = x.reshape(-1)
    n = flat.size
    size = BLOCK_SIZE if block_wise else max(n, 1)
    nb = num_blocks(n, block_wise)
    blocks = np.zeros(nb * size, np.float32)
    blocks[:n] = flat
    blocks = blocks.reshape(nb, size)
    absmax = np.abs(blocks).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(absmax[:, None] > 0, blocks / absmax[:, None], np.float32(0))
    codes = encode(scaled).reshape(-1)[:n].reshape(x.shape)
    return codes, absmax.astype(np.float32)


def dequantize(codes, absmax):
    """float32 values of ``codes`` (any shape) with their ``absmax`` (block-wise or one value)."""
    codes = np.asarray(codes, np.uint8)
    absmax = np.asarray(absmax, np.float32).reshape(-1)
    flat = CODE[codes.reshape(-1)]
    size = BLOCK_SIZE if absmax.size == num_blocks(flat.size, True) else max(flat.size, 1)
    scale = np.repeat(absmax, size)[:flat.size]
    return (flat * scale).reshape(codes.shape)


def constant_state(shape, value, block_wise=True):
    """(codes, absmax) of a tensor filled with ``value`` >= 0: absmax equal to it, every code that of 1.0 (of 0.0
    when the value is 0)."""
    n = int(np.prod(shape))
    codes = np.full(shape, ONE_CODE if value > 0 else ZERO_CODE, np.uint8)
    return codes, np.full(num_blocks(n, block_wise), np.float32(value), np.float32)


# ---- MindSpore ops (graph code of the reference update). Shapes are static, so the block layout is decided when
# the graph is built: block-wise when ``absmax`` has num_blocks(n) values, else one absmax for the tensor.

import mindspore as ms  # noqa: E402  (the numpy part above needs no MindSpore)
from mindspore import ops  # noqa: E402

_MS_CODE = ms.Tensor(np.array(CODE), ms.float32)
_MS_THRESHOLDS = ms.Tensor(np.array(THRESHOLDS), ms.float32)


def _numel(shape):
    n = 1
    for d in shape:
        n = n * d
    return n


def _block_size(n, absmax_len):
    return BLOCK_SIZE if absmax_len == num_blocks(n, True) else max(n, 1)


def _as_blocks(flat, n, size, nb):
    """(nb, size) view of a flat tensor, zero-padded."""
    pad = nb * size - n
    if pad:
        flat = ops.concat((flat, ops.zeros((pad,), flat.dtype)))
    return ops.reshape(flat, (nb, size))


def ms_dequantize(codes, absmax):
    """float32 tensor of the shape of ``codes`` from uint8 ``codes`` and float32 ``absmax`` (MindSpore ops)."""
    shape = ops.shape(codes)
    n = _numel(shape)
    nb = ops.shape(absmax)[0]
    size = _block_size(n, nb)
    values = ops.gather(_MS_CODE, ops.cast(ops.reshape(codes, (-1,)), ms.int32), 0)
    values = _as_blocks(values, n, size, nb) * ops.reshape(absmax, (nb, 1))
    return ops.reshape(ops.reshape(values, (-1,))[:n], shape)


def ms_quantize(x, nb):
    """(codes uint8 of the shape of ``x``, absmax float32 (nb,)) of the float32 tensor ``x``, with ``nb`` blocks
    (num_blocks(n) for block-wise, 1 for tensor-wise) (MindSpore ops)."""
    shape = ops.shape(x)
    n = _numel(shape)
    size = _block_size(n, nb)
    blocks = _as_blocks(ops.reshape(x, (-1,)), n, size, nb)
    absmax = ops.amax(ops.abs(blocks), axis=1)
    # a NaN wins, as in the kernels and numpy (MindSpore's CPU ReduceMax drops a NaN that is not a row's first value)
    absmax = ops.select(ops.any(ops.isnan(blocks), 1), ops.full_like(absmax, float("nan")), absmax)
    scale = ops.reshape(absmax, (nb, 1))
    scaled = ops.select(ops.broadcast_to(scale > 0, (nb, size)), blocks / scale, ops.zeros_like(blocks))
    codes = ops.searchsorted(_MS_THRESHOLDS, ops.reshape(scaled, (-1,)), out_int32=True)
    codes = ops.reshape(ops.cast(codes, ms.uint8)[:n], shape)
    return codes, absmax
