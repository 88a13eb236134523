"""Reference updates of the Adam family (Adam, AdaBelief) in MindSpore ops (float32 math, results cast back to
the storage dtype).

The operation order is the one the fused kernels in ops/cpu/adam.cc use, so both round identically:
    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m    = m + (g - m) * (1 - beta1)
    v    = v + (g * g - v) * (1 - beta2)
    vhat = max(vhat, v)                                  (amsgrad; the denominator then uses vhat)
    p    = p - lr_t * m_used / (sqrt(v) + eps)           m_used = beta1 m + (1 - beta1) g with nesterov

AdaBelief (labml's formula) is the same moments with one difference, the second moment averages the belief
(g - m)^2 with the new m instead of g^2 (``belief=True`` of ``moments``), plus its weight decay and step:
    g = g + wd * p  (coupled)   or   p = p * (1 - lr * wd)  (decoupled)   or   p = p * (1 - wd)  (absolute)
    m, s, s_max as above with (g - m)^2;   v = s_used + eps   (eps is never stored in s)
    p = p - lr * r / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)          (r: rectification term, 1 without rectify)
    p = p - lr * sqrt(bc2) * r / bc1 * m / (sqrt(v) + eps)         (optimized_update)
    p = p - lr / bc1 * m   where r is intractable (rho_t < 5) and degenerate_to_sgd, else p keeps its value
with bc1 = 1 - beta1^t, bc2 = 1 - beta2^t and r computed once per step in float64 (``adabelief_step_scalars``)
and handed over as float32, as to the kernel.
"""
from mindspore import dtype as mstype
from mindspore import ops
from mindspore.ops import composite as C
from mindspore.ops import functional as F


def _f32(x):
    return F.cast(x, mstype.float32)


def _store(ref, value):
    """Assigns ``value`` to ``ref`` in ref's dtype and shape: per-step scalars of shape (1,) broadcast a 0-d
    parameter's update to (1,), which Assign would refuse."""
    return F.assign(ref, ops.reshape(F.cast(value, F.dtype(ref)), F.shape(ref)))


def moments(m, v, vhat, g, one_minus_beta1, one_minus_beta2, belief=False):
    """New (m, v, vhat, v_used) in float32 for the float32 gradient ``g``: the moments of the whole family.

    ``belief`` (AdaBelief) averages (g - m)^2 with the new m instead of g^2; ``vhat`` is None without amsgrad,
    else the running maximum of v, which ``v_used`` then is."""
    m = m + (g - m) * one_minus_beta1
    if belief:
        residual = g - m
        v = v + (residual * residual - v) * one_minus_beta2
    else:
        v = v + (g * g - v) * one_minus_beta2
    v_used = v
    if vhat is not None:
        vhat = ops.select(vhat > v, vhat, v)  # max(vhat, v); a NaN in v is kept, on every backend
        v_used = vhat
    return m, v, vhat, v_used


def adam_step(m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps, grad, use_nesterov):
    """New (m, v, vhat, step) in float32 for the dense gradient ``grad``; ``vhat`` is None without amsgrad.

    The parameter update is ``p - step``.
    """
    g = _f32(grad)
    one_minus_beta1 = 1.0 - beta1
    m, v, vhat, denom_v = moments(m, v, vhat, g, one_minus_beta1, 1.0 - beta2)
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


# AdaBelief's per-parameter hyper tensor (float32), the layout the fused kernel takes.
BELIEF_HYPER = ("one_minus_beta1", "one_minus_beta2", "eps", "weight_decay", "decay_mode", "optimized_update",
                "degenerate_to_sgd")
DECAY_COUPLED, DECAY_DECOUPLED, DECAY_ABSOLUTE = 0.0, 1.0, 2.0


def adabelief_step_scalars(step, beta1, beta2, rho_inf, rectify):
    """(bc1, bc2, r) as float32, computed in float64 from the step count ``step`` (any dtype, t >= 1) and the
    float64 scalar Tensors ``beta1``, ``beta2`` and ``rho_inf`` = 2 / (1 - beta2) - 1 (given as Tensors built
    outside the graph: a Python float in a graph would be float32).

    RAdam's rectification, in the operation order of labml's ``calc_rectification_term``:
        rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t);   r = sqrt((rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t
                                                                  * rho_inf / (rho_inf - 2))   if rho_t >= 5
    r is 0 where rho_t < 5 (intractable) and 1 without ``rectify``. In float32, rho_5 = 4.996 and the r of t = 6
    would be 0.2 % off; in float64 they are labml's Python-float values."""
    t = F.cast(step, mstype.float64)
    one = ops.ones_like(beta2)
    beta1_t, beta2_t = ops.pow(beta1, t), ops.pow(beta2, t)
    bc1, bc2 = one - beta1_t, one - beta2_t
    if rectify:
        two, four, five = one * 2, one * 4, one * 5
        rho = rho_inf - two * t * beta2_t / bc2
        r2 = (rho - four) / (rho_inf - four) * (rho - two) / rho * rho_inf / (rho_inf - two)
        tractable = rho >= five
        r = ops.select(tractable, ops.sqrt(ops.select(tractable, r2, one)), ops.zeros_like(r2))
    else:
        r = ops.ones_like(bc2)
    return _f32(bc1), _f32(bc2), _f32(r)


def adabelief_scalars(lr, bc1, bc2, r, hyper):
    """The float32 scalars of one AdaBelief step, computed as the kernel computes them (ReadAdaBeliefScalars):
    (one_minus_beta1, one_minus_beta2, eps, coupled_wd, decay, adaptive step size, denominator scale, SGD step
    size, rectified, degenerate_to_sgd)."""
    one_minus_beta1, one_minus_beta2, eps, wd, mode, optimized, degenerate = (hyper[i] for i in range(7))
    zero = ops.zeros_like(wd)
    coupled_wd = ops.select(mode == DECAY_COUPLED, wd, zero)
    decay = ops.select(mode == DECAY_DECOUPLED, 1.0 - lr * wd,
                       ops.select(mode == DECAY_ABSOLUTE, 1.0 - wd, zero + 1.0))
    sqrt_bc2 = ops.sqrt(bc2)
    optimized = optimized != 0
    step_size = ops.select(optimized, lr * sqrt_bc2 * r / bc1, lr * r / bc1)
    denom_scale = ops.select(optimized, zero + 1.0, 1.0 / sqrt_bc2)
    return (one_minus_beta1, one_minus_beta2, eps, coupled_wd, decay, step_size, denom_scale, lr / bc1, r > 0,
            degenerate != 0)


def _adabelief(param, m, v, vhat, lr, bc1, bc2, r, hyper, grad):
    """One AdaBelief step; assigns param, m, v (and vhat when given). Returns True, ordered after the writes."""
    (one_minus_beta1, one_minus_beta2, eps, coupled_wd, decay, step_size, denom_scale, sgd_size, rectified,
     degenerate) = adabelief_scalars(_f32(lr), bc1, bc2, r, hyper)
    g, p = _f32(grad), _f32(param)
    g = g + coupled_wd * p  # labml's WeightDecay, before the moments
    p = p * decay
    new_m, new_v, new_vhat, v_used = moments(_f32(m), _f32(v), None if vhat is None else _f32(vhat), g,
                                             one_minus_beta1, one_minus_beta2, belief=True)
    adaptive = p - step_size * new_m / (ops.sqrt(v_used + eps) * denom_scale + eps)
    new_p = ops.where(rectified, adaptive, ops.where(degenerate, p - sgd_size * new_m, p))
    success = F.depend(True, _store(m, new_m))
    success = F.depend(success, _store(v, new_v))
    if vhat is not None:
        success = F.depend(success, _store(vhat, new_vhat))
    return F.depend(success, _store(param, new_p))


def merge_duplicate_rows(values, indices):
    """Sum the rows of ``values`` that share an index: (unique indices, summed rows in float32)."""
    unique, inverse = ops.unique(indices)
    summed = ops.unsorted_segment_sum(_f32(values), inverse, ops.shape(unique)[0])
    return unique, summed


def _lazy(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, values, indices, use_nesterov):
    """Lazy Adam for a sparse gradient: only the rows named by ``indices`` change in param, m and v (none for a
    gradient of no rows, as on the fused path: UnsortedSegmentSum refuses 0 segments)."""
    if F.shape(indices)[0] == 0:  # shapes are known when the graph is built
        return True
    rows, g = merge_duplicate_rows(values, indices)
    new_m, new_v, _, step = adam_step(_f32(ops.gather(m, rows, 0)), _f32(ops.gather(v, rows, 0)), None,
                                      beta1_power, beta2_power, lr, beta1, beta2, eps, g, use_nesterov)
    new_p = _f32(ops.gather(param, rows, 0)) - step
    success = F.depend(True, ops.scatter_update(m, rows, F.cast(new_m, F.dtype(m))))
    success = F.depend(success, ops.scatter_update(v, rows, F.cast(new_v, F.dtype(v))))
    return F.depend(success, ops.scatter_update(param, rows, F.cast(new_p, F.dtype(param))))


def check_rows(param, indices):
    """Refuses an index outside the rows of ``param`` before anything of the step is written (the optimizer makes
    its writes wait for the result): a gather of one value per index from a vector as long as the rows, which
    MindSpore's Gather refuses on CPU, naming the index. The fused path's MsOptimCheckRows does the same check."""
    return ops.gather(ops.zeros((ops.shape(param)[0],), mstype.float32), indices, 0)


def densify(values, indices, dense_shape, dtype):
    """The dense tensor of a sparse row gradient (duplicate rows add up)."""
    dense = ops.zeros(dense_shape, mstype.float32)
    dense = ops.tensor_scatter_add(dense, ops.expand_dims(indices, -1), _f32(values))
    return F.cast(dense, dtype)


dense_gradient = C.MultitypeFuncGraph("ms_optim_dense_gradient")


@dense_gradient.register("Tensor", "Tensor")
def _dense_as_is(grad, param):
    return grad


@dense_gradient.register("RowTensor", "Tensor")
def _densified(grad, param):  # non-lazy Adam treats a sparse gradient as its dense tensor (nn.Adam does too)
    return densify(grad.values, grad.indices, grad.dense_shape, F.dtype(param))


# Entry points of the reference path, one tensor each. The lazy and increment kernels (ops/cpu/adam.cc) take the
# same arguments; the in-place kernels take every tensor of a step at once (param[N], ..., grad[N], then the
# scalars), and lazy Adam's one-tensor calls of them (its dense gradients) go through a wrapper in ms_optim/adam.py.
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


def adabelief(param, m, v, lr, bc1, bc2, r, hyper, grad):
    return _adabelief(param, m, v, None, lr, bc1, bc2, r, hyper, grad)


def adabelief_amsgrad(param, m, v, vhat, lr, bc1, bc2, r, hyper, grad):
    return _adabelief(param, m, v, vhat, lr, bc1, bc2, r, hyper, grad)
