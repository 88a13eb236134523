"""Reference Adam updates in MindSpore ops (float32 math, results cast back to the storage dtype).

The operation order is the one the fused kernel in ops/cpu/adam.cc uses, so both round identically:
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m    = m + (g - m) * (1 - beta1)
    v    = v + (g * g - v) * (1 - beta2)
    vhat = max(vhat, v)                                  (amsgrad; the denominator then uses vhat)
    p    = p - lr_t * m_used / (sqrt(v) + eps)           m_used = beta1 m + (1 - beta1) g with nesterov
"""
from mindspore import dtype as mstype
from mindspore import ops
from mindspore.ops import functional as F


def _f32(x):
    return F.cast(x, mstype.float32)


def _store(ref, value):
    return F.assign(ref, F.cast(value, F.dtype(ref)))


def adam_step(m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, use_nesterov):
    """New (m, v, vhat, step) in float32 for the dense gradient ``grad``; ``vhat`` is None without amsgrad.

    The parameter update is ``p - step``.
    """
    g = _f32(grad)
    one_minus_beta1 = 1.0 - beta1
    m = m + (g - m) * one_minus_beta1
    v = v + (g * g - v) * (1.0 - beta2)
    denom_v = v
    if vhat is not None:
        vhat = ops.select(vhat > v, vhat, v)  # max(vhat, v); a NaN in v is kept, on every backend
        denom_v = vhat
    m_used = m * beta1 + one_minus_beta1 * g if use_nesterov else m
    lr_t = lr * ops.sqrt(1.0 - beta2_power) / (1.0 - beta1_power)
    step = lr_t * m_used / (ops.sqrt(denom_v) + eps)
    return m, v, vhat, step


def _dense(param, m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, use_nesterov):
    """Dense Adam: assigns param, m, v (and vhat when given). Returns True, ordered after the writes."""
    new_m, new_v, new_vhat, step = adam_step(_f32(m), _f32(v), None if vhat is None else _f32(vhat),
                                             beta1_power, beta2_power, lr, beta1, beta2, eps, grad, use_nesterov)
    success = F.depend(True, _store(m, new_m))
    success = F.depend(success, _store(v, new_v))
    if vhat is not None:
        success = F.depend(success, _store(vhat, new_vhat))
    return F.depend(success, _store(param, _f32(param) - step))


def _delta(m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, use_nesterov):
    """Offload Adam: assigns m and v, returns the parameter increment ``-step`` in the gradient's dtype."""
    new_m, new_v, _, step = adam_step(_f32(m), _f32(v), None, beta1_power, beta2_power, lr, beta1, beta2, eps,
                                      grad, use_nesterov)
    delta = F.depend(F.cast(-step, F.dtype(grad)), _store(m, new_m))
    return F.depend(delta, _store(v, new_v))


def merge_duplicate_rows(values, indices):
    """Sum the rows of ``values`` that share an index: (unique indices, summed rows in float32)."""
    unique, inverse = ops.unique(indices)
    summed = ops.unsorted_segment_sum(_f32(values), inverse, ops.shape(unique)[0])
    return unique, summed


def _lazy(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices, use_nesterov):
    """Lazy Adam for a sparse gradient: only the rows named by ``indices`` change in param, m and v."""
    rows, g = merge_duplicate_rows(values, indices)
    new_m, new_v, _, step = adam_step(_f32(ops.gather(m, rows, 0)), _f32(ops.gather(v, rows, 0)), None,
                                      beta1_power, beta2_power, lr, beta1, beta2, eps, g, use_nesterov)
    new_p = _f32(ops.gather(param, rows, 0)) - step
    success = F.depend(True, ops.scatter_update(m, rows, F.cast(new_m, F.dtype(m))))
    success = F.depend(success, ops.scatter_update(v, rows, F.cast(new_v, F.dtype(v))))
    return F.depend(success, ops.scatter_update(param, rows, F.cast(new_p, F.dtype(param))))


def densify(values, indices, dense_shape, dtype):
    """The dense tensor of a sparse row gradient (duplicate rows add up)."""
    dense = ops.zeros(dense_shape, mstype.float32)
    dense = ops.tensor_scatter_add(dense, ops.expand_dims(indices, -1), _f32(values))
    return F.cast(dense, dtype)


# Entry points with the argument order of the fused kernels (ops/cpu/adam.cc), so either can be called.
def adam(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad):
    return _dense(param, m, v, None, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, False)


def adam_nesterov(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad):
    return _dense(param, m, v, None, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, True)


def adam_amsgrad(param, m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps, grad):
    return _dense(param, m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, False)


def adam_delta(m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad):
    return _delta(m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, False)


def adam_nesterov_delta(m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad):
    return _delta(m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, True)


def lazy_adam(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices):
    return _lazy(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices, False)


def lazy_adam_nesterov(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices):
    return _lazy(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices, True)
