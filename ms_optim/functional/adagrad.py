"""Reference Adagrad updates in MindSpore ops (float32 math, the parameter cast back to its dtype), with float32 or
block-wise 8-bit state, for all the parameters of one state kind at once. The fused kernels (ops/cpu/adagrad.cc,
math in ops/common/adagrad_math.h) take the same arguments and do the same operations in the same order:

    g = grad * gnorm_scale                     gnorm_scale: 1, or this parameter's percentile-clipping factor
    g = g + weight_decay * p
    s = s + g * g                              8-bit: s = CODE[code] * absmax first (dequantize)
    p = p - lr * (g / (sqrt(s) + eps))         lr = lr / (1 + (t - 1) * lr_decay), computed once per step
    8-bit: absmax = max |s| per block; code = nearest entry of CODE to s / absmax (ms_optim/quantization.py)

``grad`` has already been divided by ``loss_scale``.
"""
from mindspore import dtype as mstype
from mindspore import ops
from mindspore.ops import functional as F

from ms_optim import quantization
from ms_optim.functional.adam import _f32, _store
from ms_optim.functional.multi_tensor import of_tensor

GNORM_SLOTS = 100  # squared gradient norms remembered for percentile clipping


def _step(param, s, grad, lr, gnorm_scale, weight_decay, eps):
    """(new p, new s) in float32."""
    p = _f32(param)
    g = _f32(grad) * gnorm_scale
    g = g + weight_decay * p
    s = s + g * g
    return p - lr * (g / (ops.sqrt(s) + eps)), s


def adagrad(params, accums, grads, lr, gnorm_scale, weight_decay, eps):
    """One step for the tuples ``params``, ``accums`` (float32 state) and ``grads``; ``lr``, ``gnorm_scale`` and
    ``weight_decay``: float32 of one value (every tensor) or shape (N,) (one per tensor), ``eps`` one value.
    Assigns every parameter and sum; returns True, ordered after the writes (the signature of the fused
    MsOptimAdagrad)."""
    success = True
    for i in range(len(params)):
        p, s = _step(params[i], accums[i], grads[i], of_tensor(lr, i), of_tensor(gnorm_scale, i),
                     of_tensor(weight_decay, i), eps)
        success = F.depend(success, _store(accums[i], s))
        success = F.depend(success, _store(params[i], p))
    return success


def adagrad_8bit(params, codes, absmaxes, grads, lr, gnorm_scale, weight_decay, eps):
    """One step with 8-bit state (per tensor: uint8 ``codes[i]`` of the parameter's shape, float32 ``absmaxes[i]``
    with one value per 256-element block, or one for the tensor); the other arguments as in ``adagrad``. Assigns
    every parameter, code and absmax."""
    success = True
    for i in range(len(params)):
        s = quantization.ms_dequantize(codes[i], absmaxes[i])
        p, s = _step(params[i], s, grads[i], of_tensor(lr, i), of_tensor(gnorm_scale, i), of_tensor(weight_decay, i),
                     eps)
        new_code, new_absmax = quantization.ms_quantize(s, ops.shape(absmaxes[i])[0])
        success = F.depend(success, _store(codes[i], new_code))
        success = F.depend(success, F.assign(absmaxes[i], new_absmax))
        success = F.depend(success, _store(params[i], p))
    return success


def check_layout(layout):
    """Refuses 8-bit state written under another layout version (``layout``, the optimizer's ``quant8_layout``
    Parameter) before anything of the step is written (the optimizer makes its step counter wait for the result):
    MindSpore's Assert, which prints the version found and raises RuntimeError. The fused path's
    MsOptimQuant8Layout does the same check, with a message that says what failed."""
    return ops.Assert(1)(ops.equal(layout, quantization.LAYOUT_VERSION), [layout])


def no_layout_check(layout):
    """Where MindSpore has no Assert (Ascend, security builds): no check; the step depends on ``layout`` only."""
    return layout


def percentile_clip(grad, gnorm_vec, step, percentile):
    """Percentile clipping as bitsandbytes <= 0.49 did it, for one parameter: writes the squared L2 norm of
    ``grad`` into ``gnorm_vec`` (float32, 100) at slot ``step % 100`` (every slot at step 1) and returns the
    factor to multiply the gradient by, float32 shape (1,): ``clip / current`` when the current norm is above
    ``clip``, the entry at index ``percentile`` (from 0) of the 100 remembered norms sorted, else 1.

    ``step`` (int32, (1,)) counts from 1. Both paths call this in graph ops; the kernels get the factor."""
    g = _f32(grad)
    norm_sq = ops.reshape(ops.reduce_sum(g * g), (1,))
    slots = ops.arange(GNORM_SLOTS, dtype=mstype.int32)
    fresh = ops.broadcast_to(norm_sq, (GNORM_SLOTS,))
    fill = ops.logical_or(ops.broadcast_to(step == 1, (GNORM_SLOTS,)), slots == step % GNORM_SLOTS)
    vec = ops.select(fill, fresh, gnorm_vec)
    vec = F.depend(vec, F.assign(gnorm_vec, vec))
    current = ops.sqrt(norm_sq)
    clip = ops.sqrt(ops.sort(vec)[0][percentile:percentile + 1])
    return ops.select(current > clip, clip / current, ops.ones_like(current))
