"""Adam and its variants (lazy, offload, amsgrad, nesterov) as one ``nn.Optimizer``."""
import mindspore as ms
from mindspore import Parameter, Tensor, nn
from mindspore import dtype as mstype
from mindspore.common.initializer import initializer
from mindspore.ops import composite as C
from mindspore.ops import functional as F

from ms_optim import _validation as check
from ms_optim import kernels
from ms_optim.functional import adam as reference
from ms_optim.functional.multi_tensor import one_per_parameter, per_tensor_vector
from ms_optim.kernels import UPDATE_FNS

_adam_opt = C.MultitypeFuncGraph("ms_optim_adam_opt")
_adam_offload_opt = C.MultitypeFuncGraph("ms_optim_adam_offload_opt")
_check_rows = C.MultitypeFuncGraph("ms_optim_adam_check_rows")
_apply_delta = C.MultitypeFuncGraph("ms_optim_adam_apply_delta")

# UPDATE_FNS[key] of Adam: the dense update of one parameter, lazy Adam of one sparse gradient, the offloaded
# increment of one parameter (reference path), the fused dense update of every parameter at once, and the fused
# offloaded increments of every parameter at once (None where not called).
_ONE, _LAZY, _DELTA, _ALL, _DELTA_ALL = 0, 1, 2, 3, 4


@_check_rows.register("String", "Tensor", "Tensor")
def _dense_rows(key, grad, param):
    return True  # nothing to check


@_check_rows.register("String", "RowTensor", "Tensor")
def _sparse_rows(key, grad, param):
    return UPDATE_FNS[key][0](param, grad.indices)

_LR_DEFAULT = 1e-3  # identity of these defaults tells "not given" from "given" for the lr / betas aliases
_BETA1_DEFAULT = 0.9
_BETA2_DEFAULT = 0.999


@_adam_opt.register("String", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                    "Tensor", "Tensor", "Tensor", "Tensor")
def _dense_grad(key, use_lazy, beta1_power, beta2_power, beta1, beta2, eps, lr, grad, param, m, v):
    return F.depend(True, UPDATE_FNS[key][_ONE](param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad))


@_adam_opt.register("String", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                    "RowTensor", "Tensor", "Tensor", "Tensor")
def _sparse_grad(key, use_lazy, beta1_power, beta2_power, beta1, beta2, eps, lr, grad, param, m, v):
    if use_lazy:  # only the rows the gradient names change
        return F.depend(True, UPDATE_FNS[key][_LAZY](param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps,
                                                     grad.values, grad.indices))
    return F.depend(True, UPDATE_FNS[key][_ONE](param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps,
                                                reference.dense_gradient(grad, param)))


@_adam_opt.register("String", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                    "Tensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _dense_grad_amsgrad(key, use_lazy, beta1_power, beta2_power, beta1, beta2, eps, lr, grad, param, m, v, vhat):
    return F.depend(True, UPDATE_FNS[key][_ONE](param, m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps,
                                                grad))


@_adam_opt.register("String", "Bool", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                    "RowTensor", "Tensor", "Tensor", "Tensor", "Tensor")
def _sparse_grad_amsgrad(key, use_lazy, beta1_power, beta2_power, beta1, beta2, eps, lr, grad, param, m, v, vhat):
    return F.depend(True, UPDATE_FNS[key][_ONE](param, m, v, vhat, beta1_power, beta2_power, lr, beta1, beta2, eps,
                                                reference.dense_gradient(grad, param)))


@_adam_offload_opt.register("String", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                            "Tensor", "Tensor", "Tensor")
def _offload(key, beta1_power, beta2_power, beta1, beta2, eps, lr, grad, param, m, v):
    delta = UPDATE_FNS[key][_DELTA](m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad)
    return F.depend(True, F.assign_add(param, delta))


@_apply_delta.register("Tensor", "Tensor")
def _add_delta(param, delta):
    return F.depend(True, F.assign_add(param, delta))


def _select_check_rows(impl):
    """The check of a sparse gradient's indices against its parameter's rows: the fused kernel's, or the reference
    path's (MindSpore's Gather, which refuses such an index on CPU)."""
    if impl == "reference":
        return reference.check_rows
    return kernels.inplace_kernel("adam", "MsOptimCheckRows", (), ("param", "indices"))


def _select_update_fns(impl, use_nesterov, use_amsgrad, use_lazy, offload_delta, count):
    """(one, lazy, delta, all) update functions (see _ONE ...) for the resolved impl: fused kernels or the reference
    functions, which share one call signature (looked up through kernels.UPDATE_FNS); None for those this
    configuration never calls. ``all``, the fused in-place update of the ``count`` parameters in one call, exists
    for the fused impl only (on the reference path, MindSpore 2.10 crashed building a graph that hands a tuple
    holding sparse gradients to a function)."""
    if impl == "reference":
        dense = reference.adam_amsgrad if use_amsgrad else (
            reference.adam_nesterov if use_nesterov else reference.adam)
        lazy = reference.lazy_adam_nesterov if use_nesterov else reference.lazy_adam
        delta = reference.adam_nesterov_delta if use_nesterov else reference.adam_delta
        return (dense, lazy, delta, None, None)
    nesterov = "Nesterov" if use_nesterov else ""
    state = ("param", "m", "v", "vhat") if use_amsgrad else ("param", "m", "v")
    scalars = ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps")
    symbol = "MsOptimAdamAmsgrad" if use_amsgrad else f"MsOptimAdam{nesterov}"
    one = lazy = every = deltas = None
    if offload_delta:
        op = kernels.multi_tensor_kernel("adam", f"MsOptimAdam{nesterov}Delta", ("m", "v"), ("grad",), scalars,
                                         count, outputs_like="grad")
        op.set_device("CPU")  # the offloaded update runs on the host
        deltas = _deltas_of_all(op)
    elif use_lazy:  # (amsgrad is refused with use_lazy)
        lazy = kernels.inplace_kernel("adam", f"MsOptimLazyAdam{nesterov}", ("param", "m", "v"),
                                      scalars + ("values", "indices"))
        one = _adam_of_one(kernels.multi_tensor_kernel("adam", symbol, state, ("grad",), scalars, 1))
    elif use_amsgrad:
        every = _amsgrad_of_all(kernels.multi_tensor_kernel("adam", symbol, state, ("grad",), scalars, count))
    else:
        every = _adam_of_all(kernels.multi_tensor_kernel("adam", symbol, state, ("grad",), scalars, count))
    return (one, lazy, None, every, deltas)


# The multi-tensor kernel MsOptimAdam[Nesterov|Amsgrad] takes param[N], m[N], v[N], [vhat[N]], grad[N], then the
# scalars: called for one tensor with the reference functions' signature (lazy Adam's dense gradients), or for all
# with tuples.
def _adam_of_one(op):
    def update(param, m, v, beta1_power, beta2_power, lr, beta1, beta2, eps, grad):
        return op(param, m, v, grad, beta1_power, beta2_power, lr, beta1, beta2, eps)
    return update


def _adam_of_all(op):
    def update(params, moment1, moment2, grads, beta1_power, beta2_power, lr, beta1, beta2, eps):
        return op(*params, *moment1, *moment2, *grads, beta1_power, beta2_power, lr, beta1, beta2, eps)
    return update


def _deltas_of_all(op):
    def increments(moment1, moment2, grads, beta1_power, beta2_power, lr, beta1, beta2, eps):
        return op(*moment1, *moment2, *grads, beta1_power, beta2_power, lr, beta1, beta2, eps)
    return increments


def _amsgrad_of_all(op):
    def update(params, moment1, moment2, vhat, grads, beta1_power, beta2_power, lr, beta1, beta2, eps):
        return op(*params, *moment1, *moment2, *vhat, *grads, beta1_power, beta2_power, lr, beta1, beta2, eps)
    return update


class Adam(nn.Optimizer):
    r"""
    Adaptive Moment Estimation (Adam), a drop-in for :class:`mindspore.nn.Adam` whose per-element update runs in
    a fused kernel (parameter and all its state in a single pass over memory) where the device target has one:
    one kernel call per step for all the parameters (with `use_lazy`, and for the offloaded increment on
    accelerator targets, one per parameter).

    .. math::
        \begin{array}{l}
            lr_t = lr \cdot \sqrt{1 - \beta_2^t} / (1 - \beta_1^t) \\
            m_t = \beta_1 m_{t-1} + (1 - \beta_1) g_t \\
            v_t = \beta_2 v_{t-1} + (1 - \beta_2) g_t^2 \\
            \hat{v}_t = \max(\hat{v}_{t-1}, v_t) \quad \text{(use_amsgrad; the denominator then uses } \hat{v}_t) \\
            w_t = w_{t-1} - lr_t \, \tilde{m}_t / (\sqrt{v_t} + \epsilon), \quad
            \tilde{m}_t = \beta_1 m_t + (1 - \beta_1) g_t \text{ if use_nesterov else } m_t
        \end{array}

    with :math:`g_t` the gradient after weight decay (:math:`g + \lambda w`), gradient centralization and
    division by `loss_scale`, exactly as :class:`mindspore.nn.Adam`.

    Args:
        params (Union[list[Parameter], list[dict]]): Parameters to update, or groups of them as dicts with the
            keys "params", "lr", "weight_decay", "grad_centralization" and "order_params", as in
            :class:`mindspore.nn.Optimizer`.
        learning_rate (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Default: ``1e-3``.
        beta1 (float, optional): Decay of the first moment, in (0.0, 1.0). Default: ``0.9``.
        beta2 (float, optional): Decay of the second moment, in (0.0, 1.0). Default: ``0.999``.
        eps (float, optional): Added to the denominator, greater than 0. Default: ``1e-8``.
        use_locking (bool, optional): Accepted for compatibility with :class:`mindspore.nn.Adam`; updates never race
            here. Default: ``False``.
        use_nesterov (bool, optional): Use Nesterov accelerated gradient. Default: ``False``.
        weight_decay (Union[float, int, Cell], optional): L2 penalty added to the gradient. Without groups it skips
            parameters whose names contain "beta" or "gamma". Default: ``0.0``.
        loss_scale (float, optional): Gradients are divided by it. Default: ``1.0``.
        use_amsgrad (bool, optional): Keep the running maximum of the second moment (state ``vhat.*``). Default: ``False``.
        lr (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Alias of `learning_rate`; giving
            both is an error. Default: ``None``.
        betas (tuple[float, float], optional): Alias of (`beta1`, `beta2`); giving both is an error.
            Default: ``None``.
        impl (str, optional): ``"auto"`` (fused kernel where the device target has one), ``"fused"`` (error where it has
            none) or ``"reference"`` (plain MindSpore ops). Default: ``"auto"``.
        kwargs:
            - use_lazy (bool, optional): With sparse (RowTensor) gradients, update only the rows they name. Default: ``False``.
            - use_offload (bool, optional): Run the update on the host CPU and add the result to the parameter.
              Default: ``False``.

    Inputs:
        - **gradients** (tuple[Tensor]) - The gradients of `params`, of the same shapes.

    Outputs:
        Tensor[bool], the value is ``True``.

    Raises:
        KeyError: If `kwargs` has a key other than 'use_lazy' and 'use_offload'.
        TypeError: If `learning_rate` is not one of int, float, Tensor, Iterable, LearningRateSchedule.
        ValueError: If `params` is None or empty.
        TypeError: If `params` is not iterable, or an element of it is neither Parameter nor dict.
        TypeError: If `beta1`, `beta2`, `eps` or `loss_scale` is not a float, or `betas` not a pair of floats.
        TypeError: If `weight_decay` is neither float nor int.
        TypeError: If `use_locking`, `use_nesterov`, `use_amsgrad`, `use_lazy` or `use_offload` is not a bool.
        TypeError: If both `learning_rate` and `lr`, or `beta1`/`beta2` and `betas`, are given.
        ValueError: If `loss_scale` or `eps` is less than or equal to 0.
        ValueError: If `beta1` or `beta2` is not in range (0.0, 1.0).
        ValueError: If `weight_decay` is less than 0.
        ValueError: If `use_lazy` and `use_offload` are both True.
        ValueError: If `use_amsgrad` is True while `use_lazy` or `use_offload` is True.
        ValueError: If `use_amsgrad` is True in distributed training other than data parallel.
        ValueError: If `impl` is not one of "auto", "fused", "reference", or is "fused" on a device target
            without a fused kernel.

    Supported Platforms:
        ``CPU`` (fused kernel) ``GPU`` ``Ascend`` (reference path)

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> from mindspore import nn, Tensor
        >>> import ms_optim
        >>> ms.set_device("CPU")
        >>> net = nn.Dense(4, 2)
        >>> optim = ms_optim.Adam(net.trainable_params(), learning_rate=0.01)
        >>> loss_net = nn.WithLossCell(net, nn.MSELoss())
        >>> train_step = nn.TrainOneStepCell(loss_net, optim)
        >>> x, y = Tensor(np.ones((8, 4), np.float32)), Tensor(np.zeros((8, 2), np.float32))
        >>> loss = train_step(x, y)
        >>> print(optim.moment1[0].name)
        moment1.weight
    """

    target = kernels.TARGET_PROPERTY

    def __init__(self, params, learning_rate=_LR_DEFAULT, beta1=_BETA1_DEFAULT, beta2=_BETA2_DEFAULT, eps=1e-8,
                 use_locking=False, use_nesterov=False, weight_decay=0.0, loss_scale=1.0, use_amsgrad=False,
                 *, lr=None, betas=None, impl="auto", **kwargs):
        name = "Adam"
        # Every check runs before the base class builds anything.
        learning_rate = check.resolve_alias(name, "learning_rate", learning_rate, _LR_DEFAULT, "lr", lr)
        beta_names = ("beta1", "beta2")
        if betas is not None:
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise TypeError(f"For '{name}', 'betas' must be a tuple of two floats, but got {betas!r}.")
            beta_names = ("betas[0]", "betas[1]")
            for arg, value in zip(beta_names, betas):
                check.check_float(name, arg, value)  # before resolve_alias, which takes None as "not given"
            beta1 = check.resolve_alias(name, "beta1", beta1, _BETA1_DEFAULT, "betas", betas[0])
            beta2 = check.resolve_alias(name, "beta2", beta2, _BETA2_DEFAULT, "betas", betas[1])
        params = check.check_params(name, params)
        check.check_learning_rate(name, learning_rate, check.given_spelling("learning_rate", "lr", lr))
        check.check_weight_decay(name, weight_decay)
        check.check_loss_scale(name, loss_scale)
        check.check_kwargs(name, kwargs, ("use_lazy", "use_offload"))
        use_lazy = kwargs.get("use_lazy", False)
        use_offload = kwargs.get("use_offload", False)
        check.check_open_unit_interval(name, beta_names[0], beta1)
        check.check_open_unit_interval(name, beta_names[1], beta2)
        check.check_positive_float(name, "eps", eps)
        for flag, value in (("use_locking", use_locking), ("use_nesterov", use_nesterov),
                            ("use_amsgrad", use_amsgrad), ("use_lazy", use_lazy), ("use_offload", use_offload)):
            check.check_bool(name, flag, value)
        if use_lazy and use_offload:
            raise ValueError(f"For '{name}', 'use_lazy' and 'use_offload' can not both be True, "
                             f"but got use_lazy={use_lazy}, use_offload={use_offload}.")
        if use_amsgrad and (use_lazy or use_offload):
            raise ValueError(f"For lazy Adam and Adam with offload, there is no parameter named 'use_amsgrad', "
                             f"but got 'use_amsgrad'={use_amsgrad} (use_lazy={use_lazy}, use_offload={use_offload}).")
        # Under data parallel the gradients are all-reduced before the optimizer, so every worker applies the
        # same update (tests/test_data_parallel.py); the sharded modes are not verified, so they stay refused.
        parallel_mode = ms.get_auto_parallel_context("parallel_mode")
        if use_amsgrad and parallel_mode not in ("stand_alone", "data_parallel"):
            raise ValueError(f"For '{name}', 'use_amsgrad' is supported in stand-alone and data-parallel training "
                             f"only, but got use_amsgrad={use_amsgrad} with parallel_mode='{parallel_mode}'.")
        check.check_impl(name, impl)
        # Offloaded updates run on the host, so the CPU kernel serves them whatever the device target.
        resolved_impl = kernels.resolve_impl(impl, "adam", name, target="CPU" if use_offload else None)

        super().__init__(learning_rate, params, weight_decay, loss_scale)
        self._dtype_refusal = check.param_dtype_refusal(name, self._parameters)
        self.impl = resolved_impl
        self.beta1 = Tensor(beta1, mstype.float32)
        self.beta2 = Tensor(beta2, mstype.float32)
        self.eps = Tensor(eps, mstype.float32)
        self.beta1_power = Parameter(initializer(1, (), mstype.float32), name="beta1_power")
        self.beta2_power = Parameter(initializer(1, (), mstype.float32), name="beta2_power")
        self.use_locking = use_locking
        self.use_nesterov = use_nesterov
        self.use_amsgrad = use_amsgrad
        self.use_lazy = use_lazy
        self.use_offload = use_offload
        self.moment1 = self._parameters.clone(prefix="moment1", init="zeros")
        self.moment2 = self._parameters.clone(prefix="moment2", init="zeros")
        if use_amsgrad:
            self.vhat = self._parameters.clone(prefix="vhat", init="zeros")
        # With the parameters on the host already (CPU target) an offloaded update is the plain update, in place;
        # elsewhere it returns the increment, which is added to the device parameter (as nn.Adam does).
        self._offload_delta = use_offload and kernels.device_target() != "CPU"
        count = len(self._parameters)
        self._update_key = kernels.register_update_fns(
            f"adam-{resolved_impl}-nesterov{use_nesterov}-amsgrad{use_amsgrad}-lazy{use_lazy}-"
            f"delta{self._offload_delta}-count{count}",
            lambda: _select_update_fns(resolved_impl, use_nesterov, use_amsgrad, use_lazy, self._offload_delta,
                                       count))
        # The fused in-place update of every parameter in one kernel call: for small tensors MindSpore's cost per
        # kernel launch, not the update, is most of a step. Lazy Adam updates rows of each sparse gradient instead.
        self._one_call = resolved_impl == "fused" and not use_lazy and not self._offload_delta
        self._check_key = kernels.register_update_fns(f"adam-check-rows-{resolved_impl}",
                                                      lambda: (_select_check_rows(resolved_impl),))

    @ms.jit
    def construct(self, gradients):
        if self._dtype_refusal:  # a constant: raised when the step's graph is built, before anything of it runs
            raise TypeError(self._dtype_refusal)
        params = self._parameters
        gradients = self.decay_weight(gradients)
        if not self.use_offload:
            gradients = self.gradients_centralization(gradients)
        gradients = self.scale_grad(gradients)
        gradients = self._grad_sparse_indices_deduplicate(gradients)
        # Every sparse gradient's indices are checked before the first write of the step: the step counter waits
        # for the checks and every later write comes after it, so an index outside its parameter stops the step
        # with nothing written (dense gradients: nothing to check).
        checked = self.map_(F.partial(_check_rows, self._check_key), gradients, params)
        lr = self.get_lr()
        self.assignadd(self.global_step, F.depend(self.global_step_increase_tensor, checked))

        beta1_power = self.beta1_power * self.beta1
        self.beta1_power = beta1_power
        beta2_power = self.beta2_power * self.beta2
        self.beta2_power = beta2_power

        b1, b2, eps, m1, m2 = self.beta1, self.beta2, self.eps, self.moment1, self.moment2
        if self._one_call:
            gradients = self.map_(reference.dense_gradient, gradients, params)
            if self.is_group_lr:
                lr = per_tensor_vector(lr)
            if self.use_amsgrad:
                done = UPDATE_FNS[self._update_key][_ALL](params, m1, m2, self.vhat, gradients, beta1_power,
                                                          beta2_power, lr, b1, b2, eps)
            else:
                done = UPDATE_FNS[self._update_key][_ALL](params, m1, m2, gradients, beta1_power, beta2_power, lr,
                                                          b1, b2, eps)
            return one_per_parameter(done, params)
        if self._offload_delta:  # sparse gradients are made dense first, as without offload
            gradients = self.map_(reference.dense_gradient, gradients, params)
        if self._offload_delta and self.impl == "fused":  # every increment from one host kernel call
            if self.is_group_lr:
                lr = per_tensor_vector(lr)
            deltas = UPDATE_FNS[self._update_key][_DELTA_ALL](m1, m2, gradients, beta1_power, beta2_power, lr, b1,
                                                              b2, eps)
            return self.map_(_apply_delta, params, tuple(deltas))  # the kernel gives a list
        # Spelled out per case on purpose: mapping a replicated learning-rate tuple and unpacking a state tuple
        # compiles about 6x slower at 200 parameters (measured), and a partial of a partial does not compile.
        if self._offload_delta:
            if self.is_group_lr:
                return self.map_(F.partial(_adam_offload_opt, self._update_key, beta1_power, beta2_power, b1, b2,
                                           eps), lr, gradients, params, m1, m2)
            return self.map_(F.partial(_adam_offload_opt, self._update_key, beta1_power, beta2_power, b1, b2, eps,
                                       lr), gradients, params, m1, m2)
        if self.use_amsgrad:
            if self.is_group_lr:
                return self.map_(F.partial(_adam_opt, self._update_key, self.use_lazy, beta1_power, beta2_power,
                                           b1, b2, eps), lr, gradients, params, m1, m2, self.vhat)
            return self.map_(F.partial(_adam_opt, self._update_key, self.use_lazy, beta1_power, beta2_power,
                                       b1, b2, eps, lr), gradients, params, m1, m2, self.vhat)
        if self.is_group_lr:
            return self.map_(F.partial(_adam_opt, self._update_key, self.use_lazy, beta1_power, beta2_power,
                                       b1, b2, eps), lr, gradients, params, m1, m2)
        return self.map_(F.partial(_adam_opt, self._update_key, self.use_lazy, beta1_power, beta2_power,
                                   b1, b2, eps, lr), gradients, params, m1, m2)
