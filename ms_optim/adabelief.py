"""AdaBelief as labml defines it (rectified, amsgrad, SGD fallback, three weight-decay modes), as one
``nn.Optimizer`` whose update is the Adam kernel family's AdaBelief rule."""

import numpy as np
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

_adabelief_opt = C.MultitypeFuncGraph("ms_optim_adabelief_opt")

_LR_DEFAULT = 1e-3  # identity of these defaults tells "not given" from "given" for the aliases
_BETAS_DEFAULT = (0.9, 0.999)


# The reference path: one call per parameter (as for Adam's, see ms_optim/adam.py). The fused path updates every
# parameter in one kernel call (construct).
@_adabelief_opt.register("String", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                         "Tensor")
def _dense_grad(key, bc1, bc2, r, lr, hyper, grad, param, m, v):
    return F.depend(True, UPDATE_FNS[key][0](param, m, v, lr, bc1, bc2, r, hyper, grad))


@_adabelief_opt.register("String", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "RowTensor", "Tensor",
                         "Tensor", "Tensor")
def _sparse_grad(key, bc1, bc2, r, lr, hyper, grad, param, m, v):
    return F.depend(True, UPDATE_FNS[key][0](param, m, v, lr, bc1, bc2, r, hyper,
                                             reference.dense_gradient(grad, param)))


@_adabelief_opt.register("String", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                         "Tensor", "Tensor")
def _dense_grad_amsgrad(key, bc1, bc2, r, lr, hyper, grad, param, m, v, vmax):
    return F.depend(True, UPDATE_FNS[key][0](param, m, v, vmax, lr, bc1, bc2, r, hyper, grad))


@_adabelief_opt.register("String", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "RowTensor", "Tensor",
                         "Tensor", "Tensor", "Tensor")
def _sparse_grad_amsgrad(key, bc1, bc2, r, lr, hyper, grad, param, m, v, vmax):
    return F.depend(True, UPDATE_FNS[key][0](param, m, v, vmax, lr, bc1, bc2, r, hyper,
                                             reference.dense_gradient(grad, param)))


def _select_update_fns(impl, amsgrad, count):
    """(update of one parameter, update of all ``count`` parameters in one call): the reference function (one
    parameter; None for all) or the fused AdaBelief kernel of the Adam family (None for one)."""
    if impl == "reference":
        return (reference.adabelief_amsgrad if amsgrad else reference.adabelief, None)
    state = ("param", "m", "v", "vhat") if amsgrad else ("param", "m", "v")
    op = kernels.multi_tensor_kernel("adam", "MsOptimAdaBeliefAmsgrad" if amsgrad else "MsOptimAdaBelief", state,
                                     ("grad",), ("lr", "bc1", "bc2", "r", "hyper"), count)
    if amsgrad:
        def update(params, m, v, vmax, grads, lr, bc1, bc2, r, hyper):
            return op(*params, *m, *v, *vmax, *grads, lr, bc1, bc2, r, hyper)
    else:
        def update(params, m, v, grads, lr, bc1, bc2, r, hyper):
            return op(*params, *m, *v, *grads, lr, bc1, bc2, r, hyper)
    return (None, update)


def _check_number(name, arg, value):
    return check.check_type(name, arg, value, (int, float), "float or int")


def _weight_decay_config(name, weight_decay, weight_decouple, absolute):
    """(weight_decay, weight_decouple, absolute) from a number, or from an object carrying the three as
    attributes (labml's ``WeightDecay``); the keyword flags must then be left alone or agree with it."""
    if all(hasattr(weight_decay, a) for a in ("weight_decay", "weight_decouple", "absolute")):
        config = weight_decay
        for arg, given in (("weight_decouple", weight_decouple), ("absolute", absolute)):
            held = getattr(config, arg)
            if given is not None and given != held:
                raise TypeError(f"For '{name}', '{arg}' was given as {given!r} while 'weight_decay' "
                                f"({type(config).__name__}) holds {arg}={held!r}; give it in one place only.")
        weight_decay, weight_decouple, absolute = config.weight_decay, config.weight_decouple, config.absolute
        arg = "weight_decay.weight_decay"
        flags = ("weight_decay.weight_decouple", "weight_decay.absolute")
    else:
        arg, flags = "weight_decay", ("weight_decouple", "absolute")
        weight_decouple = True if weight_decouple is None else weight_decouple  # None: not given (labml's default)
        absolute = False if absolute is None else absolute
    check.check_type(name, arg, weight_decay, (int, float),
                     "float, int, or an object with weight_decay, weight_decouple and absolute attributes")
    check.check_bool(name, flags[0], weight_decouple)
    check.check_bool(name, flags[1], absolute)
    if not 0.0 <= weight_decay:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    return float(weight_decay), weight_decouple, absolute


class AdaBelief(nn.Optimizer):
    r"""
    AdaBelief (`Adapting Stepsizes by the Belief in Observed Gradients <https://arxiv.org/abs/2010.07468>`_), as
    `labml_nn.optimizers.ada_belief.AdaBelief` documents it: RAdam's rectification, optional AMSGrad and SGD
    fallback, and labml's three weight-decay modes. It runs as a rule of the fused Adam kernel on the CPU, one
    kernel call per step for all the parameters.

    At step :math:`t` (from 1), with :math:`\eta_t` the current learning rate and :math:`\lambda` the weight decay:

    .. math::
        \begin{array}{l}
            w \leftarrow (1 - \eta_t \lambda)\, w \text{ (decoupled)}, \quad w \leftarrow (1 - \lambda)\, w
            \text{ (absolute)}, \quad g \leftarrow g + \lambda w \text{ (coupled)} \\
            m_t = \beta_1 m_{t-1} + (1 - \beta_1) g, \quad
            s_t = \beta_2 s_{t-1} + (1 - \beta_2) (g - m_t)^2, \quad
            \hat{s}_t = \max(\hat{s}_{t-1}, s_t) \text{ (amsgrad)} \\
            v_t = s_t + \epsilon, \quad b_1 = 1 - \beta_1^t, \quad b_2 = 1 - \beta_2^t, \quad
            \rho_\infty = \frac{2}{1 - \beta_2} - 1, \quad \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{b_2} \\
            r_t = \sqrt{\frac{(\rho_t - 4)(\rho_t - 2)\rho_\infty}{(\rho_\infty - 4)(\rho_\infty - 2)\rho_t}}
            \text{ if } \rho_t \ge 5 \text{ (with rectify; } r_t = 1 \text{ without)} \\
            w \leftarrow w - \frac{\eta_t r_t}{b_1} \frac{m_t}{\sqrt{v_t} / \sqrt{b_2} + \epsilon}, \quad
            \text{optimized_update: } w \leftarrow w - \frac{\eta_t \sqrt{b_2}\, r_t}{b_1}
            \frac{m_t}{\sqrt{v_t} + \epsilon} \\
            \text{where } \rho_t < 5: \; w \leftarrow w - \frac{\eta_t}{b_1} m_t \text{ with degenerate_to_sgd,
            else } w \text{ keeps its value (the moments still update)}
        \end{array}

    :math:`b_1, b_2, \rho_t, r_t` are computed once per step in float64 (as labml does with Python floats) and
    handed to the update as float32. Gradients are divided by `loss_scale` first.

    The defaults are those labml documents. labml's own class passes its arguments to RAdam by position into the
    wrong slots, so that with its defaults it really runs with amsgrad on, no SGD fallback and the non-optimized
    update; ``AdaBelief(p, amsgrad=True, degenerate_to_sgd=False)`` reproduces that (docs/adabelief.md).

    Args:
        params (Union[list[Parameter], list[dict]]): Parameters, or groups as dicts with the keys "params", "lr",
            "weight_decay", "grad_centralization" and "order_params", as in :class:`mindspore.nn.Optimizer`.
        lr (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Learning rate, at least 0.
            Default: ``1e-3``.
        betas (Union[tuple[float, float], list[float]], optional): :math:`(\beta_1, \beta_2)`, each in [0.0, 1.0).
            Default: ``(0.9, 0.999)``.
        eps (float, optional): :math:`\epsilon`, 0 (as labml allows) or a value that is positive in float32;
            added inside the root and to the denominator.
            Default: ``1e-16``.
        weight_decay (Union[float, int, object], optional): :math:`\lambda`, at least 0, or an object with
            `weight_decay`, `weight_decouple` and `absolute` attributes (labml's ``WeightDecay``). Applied to
            every parameter; group dicts may set their own. Default: ``0.0``.
        amsgrad (bool, optional): Use the running maximum of :math:`s` (state ``max_exp_avg_var.*``).
            Default: ``False``.
        degenerate_to_sgd (bool, optional): Take an SGD step with momentum while :math:`\rho_t < 5`.
            Default: ``True``.
        rectify (bool, optional): RAdam's rectification. Default: ``True``.
        weight_decouple (bool, optional): Decay the parameter directly instead of adding
            :math:`\lambda w` to the gradient; ``None`` means not given: ``True``, or the value of a
            `weight_decay` object. Default: ``None``.
        absolute (bool, optional): With `weight_decouple`, decay by :math:`\lambda` instead of
            :math:`\eta_t \lambda`; ``None`` means not given: ``False``, or the value of a `weight_decay`
            object. Default: ``None``.
        optimized_update (bool, optional): Apply the second-moment bias correction to the step size, after
            adding :math:`\epsilon`. Default: ``False``.
        learning_rate (optional): Alias of `lr` (the MindSpore spelling); giving both is an error.
            Default: ``None``.
        beta1 (float, optional): Alias of `betas[0]`. Default: ``None``.
        beta2 (float, optional): Alias of `betas[1]`. Default: ``None``.
        loss_scale (Union[float, int], optional): Gradients are divided by it. Default: ``1.0``.
        impl (str, optional): ``"auto"``, ``"fused"`` or ``"reference"``, see :class:`ms_optim.Adam`.
            Default: ``"auto"``.

    Inputs:
        - **gradients** (tuple[Tensor]) - The gradients of `params`, of the same shapes.

    Outputs:
        Tensor[bool], the value is ``True``.

    Raises:
        ValueError: If `lr` (or a group's 'lr') is negative: "Invalid learning rate: {lr}".
        ValueError: If `eps` is negative: "Invalid epsilon value: {eps}".
        ValueError: If a beta is not in [0.0, 1.0): "Invalid beta parameter at index {i}: {beta}".
        ValueError: If the weight decay (or a group's) is negative: "Invalid weight_decay value: {wd}".
        ValueError: If `params` is None or empty, `loss_scale` is not positive, or `impl` is invalid (or
            "fused" where the device target has no fused kernel).
        TypeError: If `lr`, `eps`, `betas` (a pair), a beta, `weight_decay` or `loss_scale` has a wrong type;
            if `amsgrad`, `degenerate_to_sgd`, `rectify`, `weight_decouple`, `absolute` or `optimized_update`
            is not a bool; if `params` is not an iterable of Parameters or dicts.
        TypeError: If both `lr` and `learning_rate`, or `betas` and `beta1`/`beta2`, are given, or
            `weight_decouple`/`absolute` disagree with a `weight_decay` object.

    Supported Platforms:
        ``CPU`` (fused kernel) ``GPU`` ``Ascend`` (reference path)

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> from mindspore import nn, Tensor
        >>> import ms_optim
        >>> ms.set_device("CPU")
        >>> net = nn.Dense(4, 2)
        >>> optim = ms_optim.AdaBelief(net.trainable_params(), lr=0.01, weight_decay=1e-4)
        >>> train_step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), optim)
        >>> x, y = Tensor(np.ones((8, 4), np.float32)), Tensor(np.zeros((8, 2), np.float32))
        >>> loss = train_step(x, y)
        >>> print(optim.exp_avg_var[0].name, optim.exp_avg_var[0].dtype)
        exp_avg_var.weight Float32
    """

    target = kernels.TARGET_PROPERTY

    def __init__(self, params, lr=_LR_DEFAULT, betas=_BETAS_DEFAULT, eps=1e-16, weight_decay=0.0, amsgrad=False,
                 degenerate_to_sgd=True, rectify=True, *, weight_decouple=None, absolute=None,
                 optimized_update=False, learning_rate=None, beta1=None, beta2=None, loss_scale=1.0,
                 impl="auto"):
        name = "AdaBelief"
        # Every check runs before the base class builds anything.
        lr = check.resolve_alias(name, "lr", lr, _LR_DEFAULT, "learning_rate", learning_rate)
        betas = self._resolve_betas(name, betas, beta1, beta2)
        params = check.check_params(name, params)
        check.check_learning_rate(name, lr, check.given_spelling("lr", "learning_rate", learning_rate))
        check.check_lr_not_negative(lr)
        _check_number(name, "eps", eps)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        check.check_eps_representable(name, "eps", eps)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        weight_decay, weight_decouple, absolute = _weight_decay_config(name, weight_decay, weight_decouple,
                                                                        absolute)
        for flag, value in (("amsgrad", amsgrad), ("degenerate_to_sgd", degenerate_to_sgd), ("rectify", rectify),
                            ("optimized_update", optimized_update)):
            check.check_bool(name, flag, value)
        check.check_loss_scale(name, loss_scale)
        self._check_groups(name, params)
        check.check_impl(name, impl)
        resolved_impl = kernels.resolve_impl(impl, "adam", name)

        # Weight decay is part of the update here (labml's modes), so the base class gets none.
        super().__init__(lr, params, 0.0, float(loss_scale))
        self._dtype_refusal = check.param_dtype_refusal(name, self._parameters)
        self.impl = resolved_impl
        self.amsgrad = amsgrad
        self.rectify = rectify
        self.degenerate_to_sgd = degenerate_to_sgd
        self.optimized_update = optimized_update
        self.weight_decouple = weight_decouple
        self.absolute = absolute
        beta1, beta2 = float(betas[0]), float(betas[1])
        self.betas = (beta1, beta2)
        # float64 constants for the per-step scalars, built here: a Python float inside the graph is float32.
        self._beta1_f64 = Tensor(np.float64(beta1), mstype.float64)
        self._beta2_f64 = Tensor(np.float64(beta2), mstype.float64)
        self._rho_inf = Tensor(np.float64(2.0 / (1.0 - beta2) - 1.0), mstype.float64)
        self.exp_avg = self._zeros_like_params("exp_avg")
        self.exp_avg_var = self._zeros_like_params("exp_avg_var")
        if amsgrad:
            self.max_exp_avg_var = self._zeros_like_params("max_exp_avg_var")
        decay_mode = (reference.DECAY_COUPLED if not weight_decouple else
                      reference.DECAY_ABSOLUTE if absolute else reference.DECAY_DECOUPLED)
        # One hyper tensor per parameter (its group's weight decay); 1 - beta in float64, rounded once.
        hyper = [np.array([1.0 - beta1, 1.0 - beta2, float(eps), wd, decay_mode, float(optimized_update),
                           float(degenerate_to_sgd)], np.float32)
                 for wd in check.weight_decay_per_param(params, self._parameters, weight_decay)]
        self.hyper = tuple(Tensor(h) for h in hyper)
        self._hyper_all = Tensor(np.concatenate(hyper))  # the one kernel call's: 7 values per parameter
        count = len(self._parameters)
        self._update_key = kernels.register_update_fns(f"adabelief-{resolved_impl}-amsgrad{amsgrad}-count{count}",
                                                       lambda: _select_update_fns(resolved_impl, amsgrad, count))
        self._one_call = resolved_impl == "fused"

    @staticmethod
    def _resolve_betas(name, betas, beta1, beta2):
        """(beta1, beta2) from `betas` (tuple or list) or the `beta1` / `beta2` spelling; both is a TypeError."""
        if beta1 is not None or beta2 is not None:
            if betas is not _BETAS_DEFAULT:
                raise TypeError(f"For '{name}', 'betas' and its alias 'beta1'/'beta2' were both given "
                                f"(betas={betas!r}, beta1={beta1!r}, beta2={beta2!r}); give only one of them.")
            betas = (_BETAS_DEFAULT[0] if beta1 is None else beta1, _BETAS_DEFAULT[1] if beta2 is None else beta2)
            names = ("beta1", "beta2")
        else:
            if not isinstance(betas, (tuple, list)) or len(betas) != 2:
                raise TypeError(f"For '{name}', 'betas' must be a tuple or list of two floats, but got {betas!r}.")
            names = ("betas[0]", "betas[1]")
        for arg, value in zip(names, betas):
            _check_number(name, arg, value)
        return tuple(betas)

    @staticmethod
    def _check_groups(name, params):
        for group in params:
            if not isinstance(group, dict):
                continue
            if "lr" in group:
                check.check_lr_not_negative(group["lr"])
            if "weight_decay" in group:
                _check_number(name, "weight_decay", group["weight_decay"])
                if not 0.0 <= group["weight_decay"]:
                    raise ValueError(f"Invalid weight_decay value: {group['weight_decay']}")

    def _zeros_like_params(self, prefix):
        """float32 state named ``<prefix>.<parameter name>`` (float32 also for float16/bfloat16 parameters:
        eps = 1e-16 and the small variances underflow in float16)."""
        return ms.ParameterTuple(Parameter(initializer("zeros", p.shape, mstype.float32), name=f"{prefix}.{p.name}")
                                 for p in self._parameters)

    @ms.jit
    def construct(self, gradients):
        if self._dtype_refusal:  # a constant: raised when the step's graph is built, before anything of it runs
            raise TypeError(self._dtype_refusal)
        gradients = self.gradients_centralization(gradients)
        gradients = self.scale_grad(gradients)
        gradients = self._grad_sparse_indices_deduplicate(gradients)
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        # t is read after the increment (auto-monad orders it): 1 on the first step. The per-step scalars are
        # computed here once, in float64, for all parameters.
        bc1, bc2, r = reference.adabelief_step_scalars(self.global_step, self._beta1_f64, self._beta2_f64,
                                                       self._rho_inf, self.rectify)
        key, m, v = self._update_key, self.exp_avg, self.exp_avg_var
        if self._one_call:  # every parameter in one kernel call, as Adam's (docs/adam.md, "Kernels")
            gradients = self.map_(reference.dense_gradient, gradients, self._parameters)
            if self.is_group_lr:
                lr = per_tensor_vector(lr)
            if self.amsgrad:
                done = UPDATE_FNS[key][1](self._parameters, m, v, self.max_exp_avg_var, gradients, lr, bc1, bc2, r,
                                          self._hyper_all)
            else:
                done = UPDATE_FNS[key][1](self._parameters, m, v, gradients, lr, bc1, bc2, r, self._hyper_all)
            return one_per_parameter(done, self._parameters)
        # Spelled out per case (no replicated learning-rate tuple, no unpacked state tuple), see Adam.construct.
        if self.amsgrad:
            if self.is_group_lr:
                return self.map_(F.partial(_adabelief_opt, key, bc1, bc2, r), lr, self.hyper, gradients,
                                 self._parameters, m, v, self.max_exp_avg_var)
            return self.map_(F.partial(_adabelief_opt, key, bc1, bc2, r, lr), self.hyper, gradients,
                             self._parameters, m, v, self.max_exp_avg_var)
        if self.is_group_lr:
            return self.map_(F.partial(_adabelief_opt, key, bc1, bc2, r), lr, self.hyper, gradients,
                             self._parameters, m, v)
        return self.map_(F.partial(_adabelief_opt, key, bc1, bc2, r, lr), self.hyper, gradients, self._parameters,
                         m, v)
