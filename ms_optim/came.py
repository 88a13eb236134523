"""CAME: confidence-guided adaptive memory-efficient optimization, as an ``nn.Optimizer``."""
import mindspore as ms
from mindspore import Parameter, Tensor, nn
from mindspore import dtype as mstype
from mindspore.common.initializer import initializer
from mindspore.ops import composite as C
from mindspore.ops import functional as F

from ms_optim import _validation as check
from ms_optim import kernels
from ms_optim.functional import came as reference
from ms_optim.functional.multi_tensor import one_per_parameter, per_tensor_vector
from ms_optim.kernels import UPDATE_FNS

_came_opt = C.MultitypeFuncGraph("ms_optim_came_opt")

# UPDATE_FNS[key] of Came: the reference update of one parameter with a factored / a full second moment, and the
# fused update of every parameter at once (None where not called).
_FACTORED, _UNFACTORED, _ALL = 0, 1, 2


@_came_opt.register("String", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                    "Tensor", "Tensor", "Tensor", "Bool")
def _came_step(key, beta2t, lr, grad, param, m, row, col, insta_row, insta_col, sq, hyper, factored):
    if factored:
        return F.depend(True, UPDATE_FNS[key][_FACTORED](param, m, row, col, insta_row, insta_col, grad, lr, beta2t,
                                                         hyper))
    return F.depend(True, UPDATE_FNS[key][_UNFACTORED](param, m, sq, grad, lr, beta2t, hyper))


def _select_update_fns(impl, count):
    """(factored, unfactored, all) update functions (see _FACTORED ...): the reference functions, one parameter per
    call, or the fused kernel updating the ``count`` parameters in one call."""
    if impl == "reference":
        return (reference.came_factored, reference.came_unfactored, None)
    op = kernels.multi_tensor_kernel("came", "MsOptimCame", ("param", "m", "row", "col", "insta_row", "insta_col",
                                                             "sq"), ("grad",), ("lr", "beta2t", "hyper"), count,
                                     shape_rules=_STATE_SHAPES)

    def update(params, m, row, col, insta_row, insta_col, sq, grads, lr, beta2t, hyper):
        return op(*params, *m, *row, *col, *insta_row, *insta_col, *sq, *grads, lr, beta2t, hyper)
    return (None, None, update)


def _factored_shapes(shape):
    """(row, col, full) shapes of the second-moment states; unused ones are (1,), as in mindformers."""
    if len(shape) >= 2:
        return tuple(shape[:-1]), tuple(shape[:-2]) + (shape[-1],), (1,)
    return (1,), (1,), tuple(shape)


def _state_shape(k):
    """The shape rule of state k of _factored_shapes (0 row, 1 column, 2 full): its shape where the parameter uses
    it (rows and columns when factored, the full one when not), None where it does not."""
    def rule(shape):
        factored = len(shape) >= 2
        return _factored_shapes(shape)[k] if factored == (k < 2) else None
    return rule


# What the kernel's inputs other than m must be shaped like, checked when the step's graph is built.
_STATE_SHAPES = {"row": _state_shape(0), "insta_row": _state_shape(0), "col": _state_shape(1),
                 "insta_col": _state_shape(1), "sq": _state_shape(2)}


class Came(nn.Optimizer):
    r"""
    CAME (`Confidence-guided Adaptive Memory Efficient Optimization <https://arxiv.org/abs/2307.02047>`_), with
    the arguments and checkpoint names of `mindformers.core.Came`; every argument takes effect on every device
    target, and the whole update of a parameter runs in one fused kernel where the target has one.

    For a parameter with two or more axes (rows and columns are the last two), at step :math:`t`:

    .. math::
        \begin{array}{l}
            \beta_{2,t} = 1 - t^{-\text{decay_rate}}, \quad U = g^2 + \epsilon_0 \\
            R_t = \beta_{2,t} R_{t-1} + (1-\beta_{2,t})\,\mathrm{mean}_{col}(U), \quad
            C_t = \beta_{2,t} C_{t-1} + (1-\beta_{2,t})\,\mathrm{mean}_{row}(U) \\
            u = g / \sqrt{R_t C_t / \mathrm{mean}(R_t)}, \quad u \leftarrow u / \max(1, \mathrm{RMS}(u)/d) \\
            m_t = \beta_1 m_{t-1} + (1-\beta_1) u, \quad I = (u - m_t)^2 + \epsilon_2 \\
            R^I_t = \beta_3 R^I_{t-1} + (1-\beta_3)\,\mathrm{mean}_{col}(I), \quad
            C^I_t = \beta_3 C^I_{t-1} + (1-\beta_3)\,\mathrm{mean}_{row}(I) \\
            w_t = w_{t-1} - \lambda\,\eta_t\,w_{t-1} - \eta_t\, m_t / \sqrt{R^I_t C^I_t / \mathrm{mean}(R^I_t)}
        \end{array}

    where :math:`d` is `clip_threshold`, :math:`\lambda` the (decoupled, per-group) weight decay and
    :math:`\eta_t` the learning rate, times :math:`\max(\epsilon_1, \mathrm{RMS}(w_{t-1}))` with
    `scale_parameter`. Parameters with fewer than two axes keep a full second moment :math:`V` and step by
    :math:`\eta_t m_t`. Gradients are divided by `loss_scale` before any statistic is formed.

    Args:
        params (Union[list[Parameter], list[dict]]): Parameters, or groups as dicts with the keys "params",
            "lr", "weight_decay", "grad_centralization", "order_params".
        learning_rate (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Required unless
            `relative_step` is True. Default: ``None``.
        eps (Union[list, tuple], optional): (eps0, eps1, eps2): added to the squared gradient, the floor of the
            parameter RMS for `scale_parameter`, and added to the instability. Default: ``(1e-30, 1e-3, 1e-16)``.
        clip_threshold (float, optional): RMS threshold of the normalised update. Default: ``1.0``.
        decay_rate (float, optional): Exponent of the second-moment decay :math:`1 - t^{-\text{decay_rate}}`, in [0.0, 1.0].
            Default: ``0.8``.
        beta1 (float, optional): Decay of the first moment, in [0.0, 1.0]. Default: ``0.9``.
        beta3 (float, optional): Decay of the instability averages, in [0.0, 1.0]. Default: ``0.99``.
        weight_decay (float, optional): Decoupled weight decay in [0.0, 1.0]; group dicts may set their own.
            Default: ``0.0``.
        scale_parameter (bool, optional): Scale the learning rate by the parameter's RMS. Default: ``False``.
        relative_step (bool, optional): Use the time-dependent learning rate
            :math:`\min(10^{-6} t \text{ if warmup_init else } 10^{-2}, 1/\sqrt{t})`. Default: ``False``.
        warmup_init (bool, optional): The warm-up form of the relative step (needs `relative_step`). Default: ``False``.
        compression (bool, optional): Store the running averages as float16 (math stays float32). Default: ``False``.
        loss_scale (Union[int, float], optional): Gradients are divided by it; set it to the `FixedLossScaleManager`'s
            value when that manager has ``drop_overflow_update=False``. Default: ``1``.
        lr (optional): Alias of `learning_rate`; giving both is an error. Default: ``None``.
        impl (str, optional): ``"auto"``, ``"fused"`` or ``"reference"``, see :class:`ms_optim.Adam`. Default: ``"auto"``.

    Inputs:
        - **gradients** (tuple[Tensor]) - The gradients of `params`, of the same shapes.

    Outputs:
        Tensor[bool], the value is ``True``.

    Raises:
        TypeError: If `learning_rate` is not one of int, float, Tensor, Iterable, LearningRateSchedule.
        ValueError: If `params` is None or empty.
        TypeError: If `params` is not iterable, or an element of it is neither Parameter nor dict.
        TypeError: If `decay_rate`, `weight_decay`, `beta1`, `beta3`, `clip_threshold` or an element of `eps` is
            not a float, `eps` is not a list or tuple, or `loss_scale` is not an int or float.
        TypeError: If `scale_parameter`, `relative_step`, `warmup_init` or `compression` is not a bool.
        TypeError: If both `learning_rate` and `lr` are given.
        ValueError: If `loss_scale`, `clip_threshold` or an element of `eps` is less than or equal to 0, or `eps`
            does not have three elements.
        ValueError: If `decay_rate`, `weight_decay`, `beta1` or `beta3` is not in range [0.0, 1.0].
        ValueError: If `learning_rate` (or a group's 'lr') is given with `relative_step`, is missing without it,
            or `warmup_init` is set without `relative_step`.
        ValueError: If `impl` is invalid, or "fused" where the device target has no fused kernel.

    Supported Platforms:
        ``CPU`` (fused kernel) ``GPU`` ``Ascend`` (reference path)

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> from mindspore import nn, Tensor
        >>> import ms_optim
        >>> ms.set_device("CPU")
        >>> net = nn.Dense(4, 2)
        >>> optim = ms_optim.Came(net.trainable_params(), learning_rate=0.01)
        >>> train_step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), optim)
        >>> x, y = Tensor(np.ones((8, 4), np.float32)), Tensor(np.zeros((8, 2), np.float32))
        >>> loss = train_step(x, y)
        >>> print(optim.exp_avg_sq_row[0].name, optim.exp_avg_sq_row[0].shape)
        exp_avg_sq_row_weight (2,)
    """

    target = kernels.TARGET_PROPERTY

    def __init__(self, params, learning_rate=None, eps=(1e-30, 1e-3, 1e-16), clip_threshold=1.0, decay_rate=0.8,
                 beta1=0.9, beta3=0.99, weight_decay=0.0, scale_parameter=False, relative_step=False,
                 warmup_init=False, compression=False, loss_scale=1, *, lr=None, impl="auto"):
        name = "Came"
        learning_rate = check.resolve_alias(name, "learning_rate", learning_rate, None, "lr", lr)
        for flag, value in (("scale_parameter", scale_parameter), ("relative_step", relative_step),
                            ("warmup_init", warmup_init), ("compression", compression)):
            check.check_bool(name, flag, value)
        check.check_type(name, "eps", eps, (list, tuple), "list or tuple")
        if len(eps) != 3:
            raise ValueError(f"For '{name}', 'eps' must have 3 values (eps0, eps1, eps2), but got {eps!r}.")
        for i, value in enumerate(eps):
            check.check_positive_float(name, f"eps[{i}]", value)
        check.check_positive_float(name, "clip_threshold", clip_threshold)
        for arg, value in (("decay_rate", decay_rate), ("beta1", beta1), ("beta3", beta3),
                           ("weight_decay", weight_decay)):
            check.check_closed_unit_interval(name, arg, value)
        params = check.check_params(name, params)
        check.check_loss_scale(name, loss_scale)
        if learning_rate is not None:
            check.check_learning_rate(name, learning_rate, check.given_spelling("learning_rate", "lr", lr))
        if learning_rate is not None and relative_step:
            raise ValueError(f"For '{name}', a 'learning_rate' ({learning_rate!r}) can not be combined with "
                             f"relative_step=True, which computes its own.")
        if warmup_init and not relative_step:
            raise ValueError(f"For '{name}', warmup_init=True requires relative_step=True, "
                             f"but got relative_step={relative_step}.")
        if learning_rate is None and not relative_step:
            raise ValueError(f"For '{name}', 'learning_rate' is None: give one, or set relative_step=True.")
        self._check_groups(name, params, relative_step)
        check.check_impl(name, impl)
        resolved_impl = kernels.resolve_impl(impl, "came", name)

        # loss_scale > 0 and the learning-rate/params types are checked by nn.Optimizer; weight decay is
        # applied here (decoupled), so the base class gets none.
        super().__init__(0.0 if relative_step else learning_rate, params, 0.0, float(loss_scale))
        self._dtype_refusal = check.param_dtype_refusal(name, self._parameters)
        self.impl = resolved_impl
        self.relative_step = relative_step
        self.warmup_init = warmup_init
        self.scale_parameter = scale_parameter
        self.compression = compression
        self.decay_rate = Tensor(-decay_rate, mstype.float32)
        self.step = Parameter(initializer(0, [1], mstype.float32), name="afactor_step")
        self._init_state(compression)
        decays = check.weight_decay_per_param(params, self._parameters, weight_decay)
        # The hyper-parameters of each parameter: one tensor each for the reference path, all in one for the kernel.
        hyper = [[beta1, beta3, eps[0], eps[1], eps[2], clip_threshold, wd, 1.0 if scale_parameter else 0.0]
                 for wd in decays]
        self.hyper = tuple(Tensor(values, mstype.float32) for values in hyper)
        self.factored = tuple(len(p.shape) >= 2 for p in self._parameters)
        count = len(self._parameters)
        self._update_key = kernels.register_update_fns(f"came-{resolved_impl}-count{count}",
                                                       lambda: _select_update_fns(resolved_impl, count))
        self._one_call = resolved_impl == "fused"  # the fused update of every parameter in one kernel call
        self._hyper_all = Tensor(hyper, mstype.float32).reshape(-1)

    @staticmethod
    def _check_groups(name, params, relative_step):
        for index, group in enumerate(params):
            if isinstance(group, dict) and "lr" in group and relative_step:
                raise ValueError(f"For '{name}', group {index} gives 'lr' ({group['lr']!r}), which can not be "
                                 f"combined with relative_step=True, which computes its own.")
            if isinstance(group, dict) and "weight_decay" in group:
                value = group["weight_decay"]
                check.check_type(name, "weight_decay", value, (float, int), "float or int")
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"For '{name}', a group's 'weight_decay' must be in range of [0.0, 1.0], "
                                     f"but got {value}.")

    def _init_state(self, compression):
        """State Parameters named as mindformers 1.8 names them, so checkpoints move between the two."""
        def zeros(prefix, shape, dtype, sep="_"):
            return [Parameter(initializer("zeros", s, d), name=f"{prefix}{sep}{p.name}")
                    for p, s, d in zip(self._parameters, shape, dtype)]

        dtypes = [mstype.float16 if compression else p.dtype for p in self._parameters]
        shapes = [_factored_shapes(p.shape) for p in self._parameters]
        self.exp_avg = ms.ParameterTuple(zeros("exp_avg", [p.shape for p in self._parameters], dtypes, sep="."))
        self.exp_avg_sq_row = ms.ParameterTuple(zeros("exp_avg_sq_row", [s[0] for s in shapes], dtypes))
        self.exp_avg_sq_col = ms.ParameterTuple(zeros("exp_avg_sq_col", [s[1] for s in shapes], dtypes))
        self.exp_avg_insta_row = ms.ParameterTuple(zeros("exp_avg_insta_row", [s[0] for s in shapes], dtypes))
        self.exp_avg_insta_col = ms.ParameterTuple(zeros("exp_avg_insta_col", [s[1] for s in shapes], dtypes))
        self.exp_avg_sq = ms.ParameterTuple(zeros("exp_avg_sq", [s[2] for s in shapes], dtypes))

    @ms.jit
    def construct(self, gradients):
        if self._dtype_refusal:  # a constant: raised when the step's graph is built, before anything of it runs
            raise TypeError(self._dtype_refusal)
        gradients = self.scale_grad(gradients)  # unscale first: every statistic sees the true gradient
        gradients = self.gradients_centralization(gradients)
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        F.assign_add(self.step, Tensor([1.0], mstype.float32))
        step = self.step  # read after the increment (auto-monad orders it): t = 1 on the first step
        beta2t = 1.0 - F.pow(step, self.decay_rate)
        if self.relative_step:
            lr = reference.relative_step_lr(step, self.warmup_init)
        if self._one_call:
            if self.is_group_lr and not self.relative_step:
                lr = per_tensor_vector(lr)
            done = UPDATE_FNS[self._update_key][_ALL](
                self._parameters, self.exp_avg, self.exp_avg_sq_row, self.exp_avg_sq_col, self.exp_avg_insta_row,
                self.exp_avg_insta_col, self.exp_avg_sq, gradients, lr, beta2t, self._hyper_all)
            return one_per_parameter(done, self._parameters)
        # Spelled out (no replicated learning-rate tuple, no unpacked state tuple): those compile several times
        # slower with many parameters, see Adam.construct.
        if self.is_group_lr and not self.relative_step:
            return self.map_(F.partial(_came_opt, self._update_key, beta2t), lr, gradients, self._parameters,
                             self.exp_avg, self.exp_avg_sq_row, self.exp_avg_sq_col, self.exp_avg_insta_row,
                             self.exp_avg_insta_col, self.exp_avg_sq, self.hyper, self.factored)
        return self.map_(F.partial(_came_opt, self._update_key, beta2t, lr), gradients, self._parameters,
                         self.exp_avg, self.exp_avg_sq_row, self.exp_avg_sq_col, self.exp_avg_insta_row,
                         self.exp_avg_insta_col, self.exp_avg_sq, self.hyper, self.factored)
