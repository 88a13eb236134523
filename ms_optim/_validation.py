"""Argument checks shared by every ms_optim optimizer, with MindSpore-style messages that name the argument
and the value. Optimizers run them before building anything, so a bad argument leaves nothing half-made."""
import numbers

from ms_optim.kernels import IMPLS


def check_type(cls_name, arg_name, value, types, type_names):
    """``value`` of one of ``types``; where a float is asked for, also finite in float32 (check_float32)."""
    # bool is an int subclass: refuse it where a number is asked for, unless bool itself is allowed
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise TypeError(f"For '{cls_name}', the type of '{arg_name}' must be {type_names}, "
                        f"but got '{value}' with type '{type(value).__name__}'.")
    if float in types:
        check_float32(cls_name, arg_name, value)
    return value


# Every hyper-parameter reaches the kernels and the reference path as a float32. From half an ulp above the largest
# float32 ((2 - 2^-23) * 2^127) a value rounds to inf there: Adagrad's lr_decay = 1e39 made the first step's factor
# 1 + 0 * inf = NaN and every parameter NaN.
_FLOAT32_OVERFLOW = (2.0 - 2.0 ** -24) * 2.0 ** 127


def check_float32(cls_name, arg_name, value):
    """A number that is finite in float32 (not NaN, not infinite, not rounding to infinity there). Compared without
    converting to float first, so an int too large for a float is refused the same way."""
    if not abs(value) < _FLOAT32_OVERFLOW:  # NaN compares False too
        raise ValueError(f"For '{cls_name}', the '{arg_name}' must be a finite float32 (below 3.4028236e+38 in "
                         f"magnitude: larger values round to inf in float32, the precision of the update), but got "
                         f"{value}, which is {'NaN' if value != value else 'inf'} there.")
    return value


def _check_float32_array(cls_name, arg_name, values):
    """check_float32 of every element of a float numpy array: of its largest magnitude (NaN if one is NaN)."""
    import numpy as np
    if values.dtype.kind == "f" and values.size:
        check_float32(cls_name, arg_name, float(np.abs(values.astype(np.float64)).max()))


def check_bool(cls_name, arg_name, value):
    return check_type(cls_name, arg_name, value, (bool,), "bool")


def check_float(cls_name, arg_name, value):
    return check_type(cls_name, arg_name, value, (float,), "float")


def check_open_unit_interval(cls_name, arg_name, value):
    """A float in (0.0, 1.0)."""
    check_float(cls_name, arg_name, value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"For '{cls_name}', the '{arg_name}' must be in range of (0.0, 1.0), but got {value}.")
    return value


# The smallest positive float32 (a subnormal, 2^-149): every hyper-parameter reaches the kernels as a float32,
# and anything up to half of it rounds to 0 there.
_FLOAT32_TINY = 2.0 ** -149


def check_positive_float(cls_name, arg_name, value):
    """A float greater than 0 that stays greater than 0 in float32 (the kernels' precision: an eps of 1e-50 would
    be 0 there and turn zero gradients into NaN) and finite there (check_float; nn.Adam refuses an infinite
    eps)."""
    check_float(cls_name, arg_name, value)
    if not value > 0.0:
        raise ValueError(f"For '{cls_name}', the '{arg_name}' must be greater than 0, but got {value}.")
    if value <= _FLOAT32_TINY / 2:
        raise ValueError(f"For '{cls_name}', the '{arg_name}' must be at least {_FLOAT32_TINY:.4g}, the smallest "
                         f"positive float32 (the precision of the update), but got {value}, which is 0 there.")
    return value


def check_eps_representable(cls_name, arg_name, value):
    """For optimizers whose peers accept eps = 0 (bitsandbytes, torch, labml): 0 stays allowed, as there, but a
    positive value that is 0 in float32 (the kernels' precision) is refused, since it silently becomes 0."""
    if 0.0 < value <= _FLOAT32_TINY / 2:
        raise ValueError(f"For '{cls_name}', the '{arg_name}' must be 0 or at least {_FLOAT32_TINY:.4g}, the smallest "
                         f"positive float32 (the precision of the update), but got {value}, which is 0 there.")
    return value


def check_impl(cls_name, impl):
    check_type(cls_name, "impl", impl, (str,), "str")
    if impl not in IMPLS:
        raise ValueError(f"For '{cls_name}', the 'impl' must be one of {list(IMPLS)}, but got '{impl}'.")
    return impl


def check_kwargs(cls_name, kwargs, valid_keys):
    unknown = sorted(set(kwargs) - set(valid_keys))
    if unknown:
        raise KeyError(f"For '{cls_name}', invalid keys are passed as kwargs, supported keys are "
                       f"{sorted(valid_keys)}, but got {unknown}.")


def resolve_alias(cls_name, name, value, default, alias, alias_value):
    """Return the value of an argument that has two spellings (e.g. ``learning_rate`` / ``lr``).

    ``default`` is the very object used as the default of ``name``: the argument counts as given when
    ``value is not default``. Giving both spellings is a TypeError.
    """
    if alias_value is None:
        return value
    if value is not default:
        raise TypeError(f"For '{cls_name}', '{name}' and its alias '{alias}' were both given "
                        f"({name}={value!r}, {alias}={alias_value!r}); give only one of them.")
    return alias_value


def check_closed_unit_interval(cls_name, arg_name, value):
    """A float in [0.0, 1.0]."""
    check_float(cls_name, arg_name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"For '{cls_name}', the '{arg_name}' must be in range of [0.0, 1.0], but got {value}.")
    return value


def check_learning_rate(cls_name, value, arg_name="learning_rate"):
    """int, float, Tensor, LearningRateSchedule or an iterable of numbers; a str is not one, nor is a list or tuple
    holding something other than numbers (nn.Optimizer would hand either to numpy and fail with a message that does
    not name the argument)."""
    from collections.abc import Iterable
    from mindspore import Tensor
    from mindspore import dtype as mstype
    from mindspore.nn.learning_rate_schedule import LearningRateSchedule
    ok = isinstance(value, (int, float, Tensor, LearningRateSchedule)) and not isinstance(value, bool)
    ok = ok or (isinstance(value, Iterable) and not isinstance(value, (str, bytes, dict)))
    if not ok:
        raise TypeError(f"For '{cls_name}', the '{arg_name}' must be int, float, Tensor, Iterable or "
                        f"LearningRateSchedule, but got {value!r} with type '{type(value).__name__}'.")
    if isinstance(value, (list, tuple)):
        for x in value:
            if not (isinstance(x, (numbers.Real, Tensor)) and not isinstance(x, bool)):  # numpy scalars are Real
                raise TypeError(f"For '{cls_name}', the '{arg_name}' given as a list or tuple must hold numbers, "
                                f"but got {x!r} with type '{type(x).__name__}' in it.")
            if isinstance(x, numbers.Real):
                check_float32(cls_name, arg_name, x)
    elif isinstance(value, (int, float)):
        check_float32(cls_name, arg_name, value)
    else:
        import numpy as np
        if isinstance(value, np.ndarray):
            _check_float32_array(cls_name, arg_name, value)
        elif isinstance(value, Tensor) and value.dtype == mstype.float64:  # float32 ones are float32 already
            _check_float32_array(cls_name, arg_name, value.asnumpy())
    return value


def check_lr_not_negative(value):
    """The "Invalid learning rate: {lr}" ValueError of torch-style optimizers (bitsandbytes, labml) for a negative
    learning rate: a number, a list or tuple of numbers, a Tensor or numpy array (any negative element). A schedule
    is not evaluated."""
    import numpy as np
    from mindspore import Tensor

    def negative_in(x):
        if isinstance(x, Tensor):
            return bool(np.any(x.asnumpy() < 0))
        if isinstance(x, np.ndarray):
            return x.dtype.kind in "iuf" and bool(np.any(x < 0))
        return isinstance(x, numbers.Real) and x < 0

    negative = any(negative_in(x) for x in value) if isinstance(value, (list, tuple)) else negative_in(value)
    if negative:
        raise ValueError(f"Invalid learning rate: {value}")


def given_spelling(name, alias, alias_value):
    """The spelling of a two-spelling argument that the caller used (for messages): ``alias`` when given."""
    return name if alias_value is None else alias


def check_params(cls_name, params):
    """A non-empty iterable of Parameters (a list, tuple, ParameterTuple, generator, filter...), or of group dicts
    whose 'params' are Parameters (and whose 'lr', where given, passes check_learning_rate); returned as a list.
    None or empty is a ValueError, as in nn.Optimizer."""
    from collections.abc import Iterable
    from mindspore import Parameter
    if params is None:
        raise ValueError(f"For '{cls_name}', 'params' can not be None.")
    if not isinstance(params, Iterable) or isinstance(params, (str, bytes, dict, Parameter)):
        raise TypeError(f"For '{cls_name}', 'params' must be an iterable of Parameter or dict, "
                        f"but got {params!r} with type '{type(params).__name__}'.")
    params = list(params)
    if not params:
        raise ValueError(f"For '{cls_name}', 'params' must not be empty.")
    if all(isinstance(p, dict) for p in params):
        for index, group in enumerate(params):
            for p in group.get("params", []):
                if not isinstance(p, Parameter):
                    raise TypeError(f"For '{cls_name}', the elements of 'params' in group {index} must be "
                                    f"Parameter, but got {p!r} with type '{type(p).__name__}'.")
            if "lr" in group:
                check_learning_rate(cls_name, group["lr"], "lr")
            if isinstance(group.get("weight_decay"), numbers.Real) and not isinstance(group["weight_decay"], bool):
                check_float32(cls_name, "weight_decay", group["weight_decay"])
        return params
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"For '{cls_name}', the elements of 'params' must be all Parameter or all dict, "
                            f"but got {p!r} with type '{type(p).__name__}'.")
    return params


def param_dtype_refusal(cls_name, parameters):
    """The TypeError message of a step over ``parameters`` when one of them is not float16, float32 or bfloat16
    (what every update path stores; float32 math), else "".

    Such parameters are accepted at construction, as nn.Adam accepts them (MindSpore's own optimizer tests build
    one over integer Parameters); the step raises this message when its graph is built, before anything of it runs,
    as nn.Adam's step raises when its graph is built. Refused per step rather than per parameter, no parameter is
    updated while another stops the step halfway."""
    from mindspore import dtype as mstype
    for param in parameters:
        if param.dtype not in (mstype.float16, mstype.float32, mstype.bfloat16):
            return (f"For '{cls_name}', every parameter a step updates must be float16, float32 or bfloat16, but "
                    f"'{param.name}' is {param.dtype}; the step was refused before anything was written.")
    return ""


def check_loss_scale(cls_name, value):
    """An int or float greater than 0 (nn.Optimizer converts an int)."""
    check_type(cls_name, "loss_scale", value, (int, float), "float or int")
    if not value > 0:
        raise ValueError(f"For '{cls_name}', the 'loss_scale' must be greater than 0, but got {value}.")
    return value


def check_weight_decay(cls_name, value):
    """A float or int >= 0, or a Cell computing it from the step (dynamic weight decay)."""
    from mindspore.nn import Cell
    if isinstance(value, Cell):
        return value
    check_type(cls_name, "weight_decay", value, (int, float), "float, int or Cell")
    if value < 0:
        raise ValueError(f"For '{cls_name}', the 'weight_decay' must be greater than or equal to 0, "
                         f"but got {value}.")
    return value


def weight_decay_per_param(params, parameters, weight_decay):
    """Each of ``parameters``' weight decay: its group's 'weight_decay' in ``params`` (the groups as given), else
    the ``weight_decay`` argument. For optimizers that apply the decay inside their own update."""
    by_name = {}
    for group in params:
        if isinstance(group, dict) and "params" in group:
            for p in group["params"]:
                by_name[p.name] = float(group.get("weight_decay", weight_decay))
    return tuple(by_name.get(p.name, weight_decay) for p in parameters)
