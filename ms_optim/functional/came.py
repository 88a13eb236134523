"""Reference CAME update in MindSpore ops (float32 math, results cast back to the storage dtype).

CAME (Luo et al. 2023, arXiv 2307.02047), as mindformers' ``Came`` computes it, for one parameter p with
gradient g at step t (rows/columns are the last two axes; leading axes are independent slices):
    lr_t = lr * max(eps1, RMS(p))          with scale_parameter, else lr
    U    = g*g + eps0
    R    = b2t*R + (1-b2t)*mean(U, -1)       C = b2t*C + (1-b2t)*mean(U, -2)      b2t = 1 - t^(-decay_rate)
    u    = g * approx(R, C)                  approx(R, C)[r, c] = rsqrt(R[r] / mean(R)) * rsqrt(C[c])
    u    = u * (1 / max(RMS(u) / clip_threshold, 1))
    m    = beta1*m + (1-beta1)*u
    I    = (u - m)^2 + eps2                  the instability of the update around its average
    Ri   = beta3*Ri + (1-beta3)*mean(I, -1)  Ci = beta3*Ci + (1-beta3)*mean(I, -2)
    p    = p + p*(-wd)*lr_t                  decoupled weight decay (when wd != 0)
    p    = p - approx(Ri, Ci) * m * lr_t       m as stored: rounded to the state dtype (float16 with compression)
Parameters with fewer than two axes keep a full second moment V = b2t*V + (1-b2t)*U, u = g / sqrt(V), and step
by m * lr_t (no confidence term). ops/cpu/came.cc computes the same, element by element in this order.

beta1 = 0 (no first moment): m = u and I = eps2 everywhere, whose confidence factor 1/sqrt(eps2) = 1e8 would
blow the step up (mindformers' formula). Here it means no confidence term: p = p - m * lr_t (the clipped,
normalised update, as AdaFactor without momentum); Ri and Ci are left as they are.

NaN: max(x, 1) and max(eps1, x) are spelled as selects (x > 1 ? x : 1), which keep a NaN gradient element in its
element on every device (ops.maximum's NaN result depends on the argument order and the backend).
"""
from mindspore import ops
from mindspore.ops import functional as F

from ms_optim.functional.adam import _f32, _store


def rms(x):
    return ops.sqrt(ops.mean(x * x))


def approx_inverse_sqrt(row, col):
    """rsqrt(row[..., r] * col[..., c] / mean(row[..., :])), the factored estimate of 1/sqrt(E[x])."""
    row_factor = 1.0 / ops.sqrt(row / ops.mean(row, -1, keep_dims=True))
    col_factor = 1.0 / ops.sqrt(col)
    return ops.expand_dims(row_factor, -1) * ops.expand_dims(col_factor, -2)


def _at_least(x, floor):
    """max(x, floor) where a NaN x gives floor, on every backend."""
    return ops.select(x > floor, x, ops.zeros_like(x) + floor)


def _clip(update, clip_threshold):
    """update / max(RMS(update) / clip_threshold, 1), as a multiply by the reciprocal (one division per tensor,
    not per element; the fused kernel does the same). A NaN RMS (one NaN element) clips by 1: the NaN stays in
    its element."""
    return update * (1.0 / _at_least(rms(update) / clip_threshold, 1.0))


def _scaled_lr(lr, scale, eps1, p):
    """lr * max(eps1, RMS(p)) with scale_parameter, else lr."""
    return ops.select(scale > 0, lr * _at_least(rms(p), eps1), lr)


def came_factored(param, m, row, col, insta_row, insta_col, grad, lr, beta2t, hyper):
    """One CAME step for a parameter with two or more axes; assigns param, m and the four factored states.

    ``hyper`` is the float32 tensor (beta1, beta3, eps0, eps1, eps2, clip_threshold, weight_decay,
    scale_parameter), the layout the fused kernel takes."""
    beta1, beta3, eps0, eps1, eps2, clip, wd, scale = (hyper[i] for i in range(8))
    g, p = _f32(grad), _f32(param)
    lr_t = _scaled_lr(lr, scale, eps1, p)
    sq = g * g + eps0
    new_row = beta2t * _f32(row) + (1.0 - beta2t) * ops.mean(sq, -1)
    new_col = beta2t * _f32(col) + (1.0 - beta2t) * ops.mean(sq, -2)
    u = _clip(approx_inverse_sqrt(new_row, new_col) * g, clip)
    new_m = beta1 * _f32(m) + (1.0 - beta1) * u
    insta = (u - new_m) * (u - new_m) + eps2
    confident = beta1 > 0  # beta1 = 0: no first moment, so no confidence term (module docstring)
    new_insta_row = beta3 * _f32(insta_row) + (1.0 - beta3) * ops.mean(insta, -1)
    new_insta_col = beta3 * _f32(insta_col) + (1.0 - beta3) * ops.mean(insta, -2)
    new_insta_row = ops.select(ops.broadcast_to(confident, new_insta_row.shape), new_insta_row, _f32(insta_row))
    new_insta_col = ops.select(ops.broadcast_to(confident, new_insta_col.shape), new_insta_col, _f32(insta_col))
    confidence = approx_inverse_sqrt(new_insta_row, new_insta_col)
    confidence = ops.select(ops.broadcast_to(confident, confidence.shape), confidence, ops.ones_like(confidence))
    p = p + p * (-wd) * lr_t
    # The step uses m as stored (rounded to the state dtype): the fused kernel reads it back in its last pass.
    p = p - confidence * _f32(F.cast(new_m, F.dtype(m))) * lr_t
    success = True
    for ref, value in ((row, new_row), (col, new_col), (m, new_m), (insta_row, new_insta_row),
                       (insta_col, new_insta_col), (param, p)):
        success = F.depend(success, _store(ref, value))
    return success


def came_unfactored(param, m, sq, grad, lr, beta2t, hyper):
    """One CAME step for a parameter with fewer than two axes (full second moment, no confidence term)."""
    beta1, eps0, eps1, clip, wd, scale = hyper[0], hyper[2], hyper[3], hyper[5], hyper[6], hyper[7]
    g, p = _f32(grad), _f32(param)
    lr_t = _scaled_lr(lr, scale, eps1, p)
    new_sq = beta2t * _f32(sq) + (1.0 - beta2t) * (g * g + eps0)
    u = _clip(g / ops.sqrt(new_sq), clip)
    new_m = beta1 * _f32(m) + (1.0 - beta1) * u
    p = p + p * (-wd) * lr_t
    p = p - new_m * lr_t
    # the (1,)-shaped step scalars broadcast a 0-d parameter's values to (1,): back to the parameter's shape
    new_sq = ops.reshape(new_sq, F.shape(param))
    new_m = ops.reshape(new_m, F.shape(param))
    p = ops.reshape(p, F.shape(param))
    success = F.depend(True, _store(sq, new_sq))
    success = F.depend(success, _store(m, new_m))
    return F.depend(success, _store(param, p))


def relative_step_lr(step, warmup_init):
    """The time-dependent learning rate min(1e-6 * t if warmup_init else 1e-2, 1 / sqrt(t))."""
    base = step * 1e-6 if warmup_init else ops.full_like(step, 1e-2)
    return ops.minimum(base, 1.0 / ops.sqrt(step))
