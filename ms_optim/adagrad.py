"""Adagrad with float32 or block-wise 8-bit state (bitsandbytes' Adagrad, Adagrad8bit, Adagrad32bit) as one
``nn.Optimizer`` family: the 8- and 32-bit classes are presets of ``Adagrad``."""

import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops
from mindspore import dtype as mstype
from mindspore.common.initializer import initializer
from mindspore.ops import composite as C
from mindspore.ops import functional as F

from ms_optim import _validation as check
from ms_optim import kernels, quantization
from ms_optim.functional import adagrad as reference
from ms_optim.functional.multi_tensor import one_per_parameter, per_tensor_vector
from ms_optim.kernels import UPDATE_FNS

_LR_DEFAULT = 1e-2  # its identity tells "not given" from "given" for the learning_rate alias


# Graph helpers of construct. The parameters of one state kind (float32 or 8-bit) are updated by one call:
# UPDATE_FNS[key] = (32-bit update, 8-bit update, 8-bit layout check), fused kernels or reference functions with
# the same signatures (params, states..., grads, lr, gnorm_scale, weight_decay, eps). Tuples are built by HyperMap:
# growing one element at a time (out = out + (x,)) made the graph build quadratic in the number of parameters
# (200 parameters: 7.3 s instead of 0.7 s).
_map = C.HyperMap()
_item = C.MultitypeFuncGraph("ms_optim_adagrad_item")
_clip = C.MultitypeFuncGraph("ms_optim_adagrad_clip")
_dense_only = C.MultitypeFuncGraph("ms_optim_adagrad_dense_only")


@_dense_only.register("Tensor", "String")
def _dense_grad(grad, refusal):
    return grad


@_dense_only.register("RowTensor", "String")
def _sparse_grad(grad, refusal):
    # Chosen by the gradient's type when the step's graph is built: raised then, before anything of the step runs.
    raise TypeError(refusal)


@_item.register("Tuple", "Number")
def _tuple_item(values, i):
    return values[i]


@_clip.register("Tensor", "Number", "Tensor", "Tensor")
def _clip_factor(step, percentile, grad, gnorm_vec):
    return reference.percentile_clip(grad, gnorm_vec, step, percentile)


def _pick(values, indices, all_of_them):
    """(values[i] for i in indices) as a tuple; ``indices`` is a constant tuple, ``all_of_them`` whether it is
    every index in order (then ``values`` itself)."""
    if all_of_them:
        return values
    return _map(F.partial(_item, values), indices)


def _per_kind(values, indices, all_of_them, per_parameter):
    """The values of the parameters ``indices`` as one vector: ``values`` is one value for all (a Tensor) or, with
    ``per_parameter``, a tuple of one scalar (shape () or (1,)) per parameter."""
    if per_parameter:
        return per_tensor_vector(_pick(values, indices, all_of_them))
    return values


def _scaled(lr, lr_denom, has_lr_decay):
    """lr / (1 + (t - 1) * lr_decay); lr itself (exactly that quotient) without lr_decay."""
    if has_lr_decay:
        return lr / lr_denom
    return lr


def _layout_check_kind(impl):
    """How a step checks the 8-bit layout version: "kernel" (fused path), "assert" (reference path: MindSpore's
    Assert, which exists on CPU and GPU), "none" where Assert does not (Ascend; MindSpore's security builds refuse
    to build it): there a checkpoint of another layout is not detected (docs/adagrad.md)."""
    if impl != "reference":
        return "kernel"
    if kernels.device_target() not in ("CPU", "GPU"):
        return "none"
    try:
        ops.Assert(1)
    except (ValueError, RuntimeError):
        return "none"
    return "assert"


def _select_update_fns(impl, layout_check=None, counts=(1, 1)):
    """(32-bit update, 8-bit update, 8-bit layout check) functions: fused kernels or the reference functions
    (same signatures), the updates for ``counts`` = (parameters with float32 state, with 8-bit state) (None for a
    count of 0); ``layout_check``: see _layout_check_kind (its answer for ``impl`` when not given)."""
    layout_check = layout_check or _layout_check_kind(impl)
    if impl == "reference":
        check = reference.check_layout if layout_check == "assert" else reference.no_layout_check
        return (reference.adagrad, reference.adagrad_8bit, check)
    scalars = ("lr", "gnorm_scale", "weight_decay", "eps")
    float_count, quant8_count = counts
    update32 = update8 = None
    if float_count:
        update32 = _tuples_of_three(kernels.multi_tensor_kernel(
            "adagrad", "MsOptimAdagrad", ("param", "accum"), ("grad",), scalars, float_count,
            input_dtypes={"accum": (ms.float32,)}))
    if quant8_count:
        update8 = _tuples_of_four(kernels.multi_tensor_kernel(
            "adagrad", "MsOptimAdagrad8bit", ("param", "code", "absmax"), ("grad",), scalars, quant8_count,
            input_dtypes={"code": (ms.uint8,), "absmax": (ms.float32,)}))
    return (update32, update8,
            kernels.inplace_kernel("adagrad", "MsOptimQuant8Layout", (), ("layout",),
                                   input_dtypes={"layout": (ms.int32,)}))


def _tuples_of_three(op):
    """The fused 32-bit update with the reference function's signature (tuples in, the kernel's flat inputs out)."""
    def update(params, accums, grads, lr, gnorm_scale, weight_decay, eps):
        return op(*params, *accums, *grads, lr, gnorm_scale, weight_decay, eps)
    return update


def _tuples_of_four(op):
    """The fused 8-bit update with the reference function's signature."""
    def update(params, codes, absmaxes, grads, lr, gnorm_scale, weight_decay, eps):
        return op(*params, *codes, *absmaxes, *grads, lr, gnorm_scale, weight_decay, eps)
    return update


def _number(name, arg, value):
    """An int or float (not a bool)."""
    return check.check_type(name, arg, value, (int, float), "int or float")


class Adagrad(nn.Optimizer):
    r"""
    Adagrad with float32 or block-wise 8-bit state, with the arguments of `bitsandbytes.optim.Adagrad` (all of
    them, including `lr_decay` and `initial_accumulator_value` with torch.optim.Adagrad's meaning, and the
    `percentile_clipping` / `block_wise` that bitsandbytes 0.50 removed). Where the device target has fused
    kernels, one kernel call per step updates every parameter with float32 state, and one every parameter with 8-bit
    state.

    At step :math:`t` (counted from 1), for a parameter :math:`w` with gradient :math:`g`:

    .. math::
        \begin{array}{l}
            g \leftarrow \gamma_t \, g / \text{loss_scale} + \lambda w \\
            s_t = s_{t-1} + g^2 \\
            w_t = w_{t-1} - \frac{lr}{1 + (t - 1)\,\text{lr_decay}} \cdot \frac{g}{\sqrt{s_t} + \epsilon}
        \end{array}

    with :math:`s_0` = `initial_accumulator_value`, :math:`\lambda` the weight decay (applied to every parameter,
    as bitsandbytes does; a group's own value for its parameters) and :math:`\gamma_t` the percentile-clipping
    factor (1 unless `percentile_clipping` < 100: then :math:`\min(1, c / \lVert g \rVert)` with :math:`c` the
    entry at index `percentile_clipping` (counted from 0) of the last 100 gradient norms of this parameter,
    sorted; bitsandbytes' definition). Math is float32 for
    float32, float16 and bfloat16 parameters.

    With 8-bit state (`optim_bits` = 8, for parameters of at least `min_8bit_size` elements) :math:`s` is stored
    as one uint8 code per element into bitsandbytes' signed dynamic map plus one float32 absmax per block of 256
    elements (per tensor with `block_wise` False): dequantized before the update, re-quantized after it (exact
    nearest code of :math:`s / \text{absmax}`); the parameter step uses the float32 :math:`s_t`. See
    ``docs/adagrad.md`` for the layout and its version.

    Args:
        params (Union[list[Parameter], list[dict]]): Parameters to update, or groups of them as dicts with the
            keys "params", "lr", "weight_decay", "grad_centralization" and "order_params".
        lr (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Learning rate. Default: ``1e-2``.
        lr_decay (Union[float, int], optional): The learning rate at step t is
            ``lr / (1 + (t - 1) * lr_decay)``. Default: ``0``.
        weight_decay (Union[float, int], optional): L2 penalty added to the gradient. Default: ``0``.
        initial_accumulator_value (Union[float, int], optional): Initial value of the sum of squares.
            Default: ``0``.
        eps (Union[float, int], optional): Added to the square root in the denominator; 0 (allowed, as by
            bitsandbytes and torch) or a value that is positive in float32. Default: ``1e-10``.
        optim_bits (int, optional): 32 (float32 state) or 8 (8-bit state). Default: ``32``.
        args (object, optional): An object whose attributes `optim_bits`, `min_8bit_size`, `percentile_clipping`
            and `block_wise`, where present, replace those arguments (bitsandbytes' ``GlobalOptimManager``
            style). Default: ``None``.
        min_8bit_size (int, optional): Parameters with fewer elements keep float32 state. Default: ``4096``.
        percentile_clipping (int, optional): In [0, 100]; below 100, each parameter's gradient is scaled down to
            that percentile of its last 100 gradient norms when above it. Default: ``100`` (off).
        block_wise (bool, optional): One absmax per 256-element block (True) or per tensor (False).
            Default: ``True``.
        learning_rate (optional): Alias of `lr` (MindSpore's spelling); giving both is an error.
            Default: ``None``.
        loss_scale (Union[float, int], optional): Gradients are divided by it first. Default: ``1.0``.
        impl (str, optional): ``"auto"``, ``"fused"`` or ``"reference"``, see :class:`ms_optim.Adam`.
            Default: ``"auto"``.

    Inputs:
        - **gradients** (tuple[Tensor]) - The gradients of `params`, of the same shapes.

    Outputs:
        Tensor[bool], the value is ``True``.

    Raises:
        ValueError: If `params` is None or empty.
        TypeError: If `params` is not iterable, or an element of it is neither Parameter nor dict.
        TypeError: If `lr` is not one of int, float, Tensor, Iterable, LearningRateSchedule, or both `lr` and
            `learning_rate` are given.
        TypeError: If `lr_decay`, `weight_decay`, `initial_accumulator_value`, `eps` or `loss_scale` is not an int
            or float, `optim_bits`, `min_8bit_size` or `percentile_clipping` not an int, `block_wise` not a bool.
        ValueError: "Invalid learning rate: ...", "Invalid weight_decay value: ...", "Invalid epsilon value: ...",
            "Invalid lr_decay value: ...", "Invalid initial_accumulator_value value: ..." for a negative value.
        NotImplementedError: If `optim_bits` is neither 8 nor 32 ("Amount of optimizer bits not supported").
        ValueError: If `min_8bit_size` is negative, `percentile_clipping` outside [0, 100], `loss_scale` not
            greater than 0.
        ValueError: If `impl` is invalid, or "fused" where the device target has no fused kernel.
        TypeError: If a parameter is not float16, float32 or bfloat16.
        RuntimeError: If `impl` is "fused" and the kernel library can not be built or loaded.
        RuntimeError: When a step runs on 8-bit state written under another layout version (a loaded checkpoint's
            `quant8_layout`); none of the optimizer's Parameters is written by that step (on CPU and GPU; see
            docs/adagrad.md for Ascend, and for PyNative mode, where a checkpoint must be loaded before the first
            step).

    Supported Platforms:
        ``CPU`` (fused kernel) ``GPU`` ``Ascend`` (reference path)

    Examples:
        >>> import numpy as np
        >>> import mindspore as ms
        >>> from mindspore import nn, Tensor
        >>> import ms_optim
        >>> ms.set_device("CPU")
        >>> net = nn.Dense(64, 64)
        >>> optim = ms_optim.Adagrad(net.trainable_params(), lr=0.01, optim_bits=8)
        >>> train_step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), optim)
        >>> x, y = Tensor(np.ones((8, 64), np.float32)), Tensor(np.zeros((8, 64), np.float32))
        >>> loss = train_step(x, y)
        >>> print([(p.name, p.dtype) for p in optim.get_parameters() if "accum" in p.name])
        [('accum.bias', mindspore.float32), ('accum_code.weight', mindspore.uint8), ('accum_absmax.weight', mindspore.float32)]
    """

    _name = "Adagrad"
    target = kernels.TARGET_PROPERTY

    def __init__(self, params, lr=_LR_DEFAULT, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 optim_bits=32, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True, *,
                 learning_rate=None, loss_scale=1.0, impl="auto"):
        name = self._name
        # Every check runs before the base class builds anything.
        lr = check.resolve_alias(name, "lr", lr, _LR_DEFAULT, "learning_rate", learning_rate)
        params = check.check_params(name, params)
        check.check_learning_rate(name, lr, check.given_spelling("lr", "learning_rate", learning_rate))
        # bitsandbytes' checks and messages (in its order), then torch's for what bitsandbytes 0.50 refuses
        check.check_lr_not_negative(lr)
        if not 0.0 <= _number(name, "weight_decay", weight_decay):
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= _number(name, "eps", eps):
            raise ValueError(f"Invalid epsilon value: {eps}")
        check.check_eps_representable(name, "eps", eps)
        if not 0.0 <= _number(name, "lr_decay", lr_decay):
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= _number(name, "initial_accumulator_value", initial_accumulator_value):
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        check.check_loss_scale(name, loss_scale)
        optim_bits, min_8bit_size, percentile_clipping, block_wise = self._resolve_args(
            name, args, optim_bits, min_8bit_size, percentile_clipping, block_wise)
        self._check_groups(name, params)
        check.check_impl(name, impl)
        resolved_impl = kernels.resolve_impl(impl, "adagrad", name)

        # Weight decay is applied by the update itself (after unscaling and clipping, to every parameter), so the
        # base class gets none.
        super().__init__(lr, params, 0.0, float(loss_scale))
        self._dtype_refusal = check.param_dtype_refusal(name, self._parameters)
        self._sparse_refusals = tuple(
            f"For '{name}', sparse (RowTensor) gradients are not supported (nor by bitsandbytes' Adagrad), but the "
            f"gradient of '{p.name}' is one; the step was refused before anything was written."
            for p in self._parameters)
        self.impl = resolved_impl
        self.optim_bits = optim_bits
        self.min_8bit_size = min_8bit_size
        self.percentile_clipping = percentile_clipping
        self.block_wise = block_wise
        self.lr_decay = Tensor(float(lr_decay), mstype.float32)
        self._has_lr_decay = float(lr_decay) != 0.0
        self.eps = Tensor(float(eps), mstype.float32)
        self._init_state(float(initial_accumulator_value))
        decays = self._weight_decay_per_param(params, weight_decay)
        self._wd_float = Tensor([decays[i] for i in self._float_indices] or [0.0], mstype.float32)
        self._wd_quant8 = Tensor([decays[i] for i in self._quant8_indices] or [0.0], mstype.float32)
        self._one = Tensor([1.0], mstype.float32)
        layout_check = _layout_check_kind(resolved_impl)
        counts = (len(self._float_indices), len(self._quant8_indices))
        key = f"adagrad-{resolved_impl}-{layout_check}"
        if resolved_impl == "fused":  # the kernels' input lists have one tensor per parameter of the kind
            key += f"-{counts[0]}-{counts[1]}"
        self._update_key = kernels.register_update_fns(key,
                                                       lambda: _select_update_fns(resolved_impl, layout_check, counts))

    @staticmethod
    def _resolve_args(name, args, optim_bits, min_8bit_size, percentile_clipping, block_wise):
        """The four 8-bit settings, each from ``args`` where it has the attribute, checked."""
        if args is not None:
            optim_bits = getattr(args, "optim_bits", optim_bits)
            min_8bit_size = getattr(args, "min_8bit_size", min_8bit_size)
            percentile_clipping = getattr(args, "percentile_clipping", percentile_clipping)
            block_wise = getattr(args, "block_wise", block_wise)
        where = " (from 'args')" if args is not None else ""
        check.check_type(name, "optim_bits" + where, optim_bits, (int,), "int")
        if optim_bits not in (8, 32):
            raise NotImplementedError(f"Amount of optimizer bits not supported: {optim_bits} (for '{name}', "
                                      f"'optim_bits'{where} must be 8 or 32)")
        check.check_type(name, "min_8bit_size" + where, min_8bit_size, (int,), "int")
        if min_8bit_size < 0:
            raise ValueError(f"For '{name}', the 'min_8bit_size'{where} must be greater than or equal to 0, "
                             f"but got {min_8bit_size}.")
        check.check_type(name, "percentile_clipping" + where, percentile_clipping, (int,), "int")
        if not 0 <= percentile_clipping <= 100:
            raise ValueError(f"For '{name}', the 'percentile_clipping'{where} must be in range of [0, 100], "
                             f"but got {percentile_clipping}.")
        check.check_bool(name, "block_wise" + where, block_wise)
        return optim_bits, min_8bit_size, percentile_clipping, block_wise

    @staticmethod
    def _check_groups(name, params):
        for group in params:
            if isinstance(group, dict) and "weight_decay" in group:
                value = group["weight_decay"]
                if not 0.0 <= _number(name, "weight_decay", value):
                    raise ValueError(f"Invalid weight_decay value: {value}")
            if isinstance(group, dict) and "lr" in group:
                check.check_lr_not_negative(group["lr"])

    def _weight_decay_per_param(self, params, weight_decay):
        """Each parameter's weight decay: its group's, else the `weight_decay` argument."""
        by_name = {}
        for group in params:
            if isinstance(group, dict) and "params" in group:
                for p in group["params"]:
                    by_name[p.name] = float(group.get("weight_decay", weight_decay))
        return tuple(by_name.get(p.name, float(weight_decay)) for p in self._parameters)

    def is_8bit(self, param):
        """Whether ``param`` keeps 8-bit state (bitsandbytes' rule: optim_bits 8 and at least min_8bit_size
        elements)."""
        return self.optim_bits == 8 and int(np.prod(param.shape)) >= self.min_8bit_size

    def _init_state(self, initial):
        """accum.<w> (float32) or accum_code.<w> (uint8) + accum_absmax.<w> (float32) per parameter, and
        gnorm_vec.<w> (float32, 100) with percentile clipping."""
        accum, codes, absmaxes, gnorms = [], [], [], []
        float_indices, quant8_indices = [], []
        for i, p in enumerate(self._parameters):
            if self.is_8bit(p):
                code, absmax = quantization.constant_state(p.shape, initial, self.block_wise)
                codes.append(Parameter(Tensor(code), name=f"accum_code.{p.name}", requires_grad=False))
                absmaxes.append(Parameter(Tensor(absmax), name=f"accum_absmax.{p.name}", requires_grad=False))
                quant8_indices.append(i)
            else:
                accum.append(Parameter(initializer(initial, p.shape, mstype.float32), name=f"accum.{p.name}",
                                       requires_grad=False))
                float_indices.append(i)
            if self.percentile_clipping < 100:
                gnorms.append(Parameter(initializer(0.0, (reference.GNORM_SLOTS,), mstype.float32),
                                        name=f"gnorm_vec.{p.name}", requires_grad=False))
        # The layout version the 8-bit state is written under, saved and loaded with it (a checkpoint of another
        # layout is refused before its first step writes anything; docs/adagrad.md, "Versions and checkpoints").
        self.quant8_layout = (Parameter(Tensor(np.array([quantization.LAYOUT_VERSION], np.int32)),
                                        name="quant8_layout", requires_grad=False) if codes else None)
        self.accum = ParameterTuple(accum)
        self.accum_code = ParameterTuple(codes)
        self.accum_absmax = ParameterTuple(absmaxes)
        self.gnorm_vec = ParameterTuple(gnorms)
        # The parameters of each state kind, updated by one call per step (in the order of their state tuples).
        self._float_indices, self._quant8_indices = tuple(float_indices), tuple(quant8_indices)
        self._float_params = tuple(self._parameters[i] for i in float_indices)
        self._quant8_params = tuple(self._parameters[i] for i in quant8_indices)

    @ms.jit
    def construct(self, gradients):
        if self._dtype_refusal:  # a constant: raised when the step's graph is built, before anything of it runs
            raise TypeError(self._dtype_refusal)
        gradients = _map(_dense_only, gradients, self._sparse_refusals)  # refused by type, naming the parameter
        gradients = self.scale_grad(gradients)  # unscale first: clipping and weight decay see the true gradient
        gradients = self.gradients_centralization(gradients)
        lr = self.get_lr()
        increase = self.global_step_increase_tensor
        if self.quant8_layout is not None:  # every update waits for the step counter, so for this check
            increase = F.depend(increase, UPDATE_FNS[self._update_key][2](self.quant8_layout))
        self.assignadd(self.global_step, increase)
        step = self.global_step  # read after the increment (auto-monad orders it): t = 1 on the first step
        has_lr_decay = self._has_lr_decay
        lr_denom = self._one
        if has_lr_decay:  # without, the denominator is exactly 1 (t - 1 is finite): five graph ops fewer per step
            lr_denom = 1.0 + (F.cast(step, mstype.float32) - 1.0) * self.lr_decay
        clipping = self.percentile_clipping < 100
        scales = self._one
        if clipping:
            scales = _map(F.partial(_clip, step, self.percentile_clipping), gradients, self.gnorm_vec)
        success = True
        if self._float_indices:
            indices, everyone = self._float_indices, not self._quant8_indices
            success = F.depend(success, UPDATE_FNS[self._update_key][0](
                self._float_params, self.accum, _pick(gradients, indices, everyone),
                _scaled(_per_kind(lr, indices, everyone, self.is_group_lr), lr_denom, has_lr_decay),
                _per_kind(scales, indices, everyone, clipping), self._wd_float, self.eps))
        if self._quant8_indices:
            indices, everyone = self._quant8_indices, not self._float_indices
            success = F.depend(success, UPDATE_FNS[self._update_key][1](
                self._quant8_params, self.accum_code, self.accum_absmax, _pick(gradients, indices, everyone),
                _scaled(_per_kind(lr, indices, everyone, self.is_group_lr), lr_denom, has_lr_decay),
                _per_kind(scales, indices, everyone, clipping), self._wd_quant8, self.eps))
        # one_per_parameter takes a Tensor to depend on: a constant made to depend on the writes
        return one_per_parameter(F.depend(self._one, success), self._parameters)


class Adagrad8bit(Adagrad):
    """:class:`Adagrad` with `optim_bits` = 8 (bitsandbytes' ``Adagrad8bit``); any other `optim_bits` is a
    ValueError, as there. State and errors otherwise those of :class:`Adagrad`.

    Args:
        params (Union[list[Parameter], list[dict]]): As in :class:`Adagrad`.
        lr (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Learning rate. Default: ``1e-2``.
        lr_decay (Union[float, int], optional): As in :class:`Adagrad`. Default: ``0``.
        weight_decay (Union[float, int], optional): As in :class:`Adagrad`. Default: ``0``.
        initial_accumulator_value (Union[float, int], optional): As in :class:`Adagrad`. Default: ``0``.
        eps (Union[float, int], optional): As in :class:`Adagrad`. Default: ``1e-10``.
        optim_bits (int, optional): Must be 8 (kept for bitsandbytes compatibility). Default: ``8``.
        args (object, optional): As in :class:`Adagrad` (its `optim_bits` may select 32-bit state, as in
            bitsandbytes). Default: ``None``.
        min_8bit_size (int, optional): Parameters with fewer elements keep float32 state. Default: ``4096``.
        percentile_clipping (int, optional): As in :class:`Adagrad`. Default: ``100`` (off).
        block_wise (bool, optional): As in :class:`Adagrad`. Default: ``True``.
        learning_rate (optional): Alias of `lr`; giving both is an error. Default: ``None``.
        loss_scale (Union[float, int], optional): Gradients are divided by it first. Default: ``1.0``.
        impl (str, optional): ``"auto"``, ``"fused"`` or ``"reference"``. Default: ``"auto"``.

    Examples:
        >>> import mindspore as ms
        >>> from mindspore import nn
        >>> import ms_optim
        >>> ms.set_device("CPU")
        >>> optim = ms_optim.Adagrad8bit(nn.Dense(128, 64).trainable_params(), lr=0.01)
        >>> print(optim.accum_code[0].name, optim.accum_code[0].dtype, optim.accum_absmax[0].shape)
        accum_code.weight UInt8 (32,)
    """

    _name = "Adagrad8bit"

    def __init__(self, params, lr=_LR_DEFAULT, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 optim_bits=8, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True, *,
                 learning_rate=None, loss_scale=1.0, impl="auto"):
        check.check_type(self._name, "optim_bits", optim_bits, (int,), "int")
        if optim_bits != 8:
            raise ValueError("Adagrad8bit only supports optim_bits=8 (default value for compatibility)")
        super().__init__(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps, 8, args, min_8bit_size,
                         percentile_clipping, block_wise, learning_rate=learning_rate, loss_scale=loss_scale,
                         impl=impl)


class Adagrad32bit(Adagrad):
    """:class:`Adagrad` with float32 state (bitsandbytes' ``Adagrad32bit``, which ignores its `optim_bits`
    argument; so does this class, unless `args` sets it). State and errors otherwise those of :class:`Adagrad`.

    Args:
        params (Union[list[Parameter], list[dict]]): As in :class:`Adagrad`.
        lr (Union[float, int, Tensor, Iterable, LearningRateSchedule], optional): Learning rate. Default: ``1e-2``.
        lr_decay (Union[float, int], optional): As in :class:`Adagrad`. Default: ``0``.
        weight_decay (Union[float, int], optional): As in :class:`Adagrad`. Default: ``0``.
        initial_accumulator_value (Union[float, int], optional): As in :class:`Adagrad`. Default: ``0``.
        eps (Union[float, int], optional): As in :class:`Adagrad`. Default: ``1e-10``.
        optim_bits (int, optional): Ignored, as by bitsandbytes (an int is still required). Default: ``32``.
        args (object, optional): As in :class:`Adagrad` (its `optim_bits` is honoured). Default: ``None``.
        min_8bit_size (int, optional): As in :class:`Adagrad` (matters only when `args` selects 8 bits).
            Default: ``4096``.
        percentile_clipping (int, optional): As in :class:`Adagrad`. Default: ``100`` (off).
        block_wise (bool, optional): As in :class:`Adagrad`. Default: ``True``.
        learning_rate (optional): Alias of `lr`; giving both is an error. Default: ``None``.
        loss_scale (Union[float, int], optional): Gradients are divided by it first. Default: ``1.0``.
        impl (str, optional): ``"auto"``, ``"fused"`` or ``"reference"``. Default: ``"auto"``.

    Examples:
        >>> import mindspore as ms
        >>> from mindspore import nn
        >>> import ms_optim
        >>> ms.set_device("CPU")
        >>> optim = ms_optim.Adagrad32bit(nn.Dense(4, 2).trainable_params(), lr=0.01)
        >>> print([p.name for p in optim.accum])
        ['accum.weight', 'accum.bias']
    """

    _name = "Adagrad32bit"

    def __init__(self, params, lr=_LR_DEFAULT, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 optim_bits=32, args=None, min_8bit_size=4096, percentile_clipping=100, block_wise=True, *,
                 learning_rate=None, loss_scale=1.0, impl="auto"):
        check.check_type(self._name, "optim_bits", optim_bits, (int,), "int")
        super().__init__(params, lr, lr_decay, weight_decay, initial_accumulator_value, eps, 32, args, min_8bit_size,
                         percentile_clipping, block_wise, learning_rate=learning_rate, loss_scale=loss_scale,
                         impl=impl)
