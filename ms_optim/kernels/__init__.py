"""Python side of the fused kernels: locate the libraries, wrap their symbols in ``ops.Custom``, pick fused or
reference per device target."""
import functools
import warnings

import mindspore as ms
from mindspore import ops
from mindspore.ops import signature as sig

from ms_optim.kernels._build import KernelBuildError, locate_library

IMPLS = ("auto", "fused", "reference")

# Device targets with a fused kernel, per algorithm family. GPU (CUDA) and Ascend (Ascend C) kernels are
# not written yet: there the optimizers run the reference path, and impl="fused" is refused.
_FUSED_TARGETS = {"adam": ("CPU",), "came": ("CPU",), "adagrad": ("CPU",)}


def device_target():
    return ms.get_context("device_target")


def resolve_impl(impl, family, cls_name, target=None):
    """'fused' or 'reference' for ``impl`` on ``target`` (default: the device target); raises where 'fused'
    cannot be had."""
    target = target or device_target()
    has_kernel = target in _FUSED_TARGETS.get(family, ())
    if impl == "reference" or (impl == "auto" and not has_kernel):
        return "reference"
    if not has_kernel:
        raise ValueError(f"For '{cls_name}', impl='fused' needs a fused {family} kernel for device target "
                         f"'{target}', but ms_optim has one only for {list(_FUSED_TARGETS.get(family, ()))}; "
                         f"use impl='auto' or impl='reference'.")
    try:
        locate_library(family)
    except KernelBuildError as err:
        if impl == "fused":
            raise RuntimeError(f"For '{cls_name}', impl='fused' but the {family} kernel library is "
                               f"unavailable: {err}") from err
        _warn_fallback_once(family, cls_name, err)
        return "reference"
    return "fused"


_warned_fallbacks = set()


def _warn_fallback_once(family, cls_name, err):
    """impl='auto' without a usable library runs the reference path, several times slower and with more memory:
    say so, once per family and reason, naming the reason."""
    key = (family, str(err))
    if key in _warned_fallbacks:
        return
    _warned_fallbacks.add(key)
    warnings.warn(f"ms_optim: {cls_name} (impl='auto') runs the reference path, several times slower than the "
                  f"fused kernel, because the {family} kernel library is unavailable: {err}",
                  RuntimeWarning, stacklevel=3)


def _set_target(optimizer, value):
    """``optimizer.target = "CPU" | "GPU" | "Ascend"``, checked as :class:`mindspore.nn.Adam` checks it (TypeError,
    ValueError with its messages). MindSpore's base class reads it to deduplicate sparse-gradient indices on device
    targets; where the update itself runs is chosen by ``impl`` and ``use_offload`` (docs/kernels.md)."""
    optimizer._set_base_target(value)  # pylint: disable=protected-access


# The ``target`` property of every ms_optim optimizer: nn.Optimizer's setter raises NotImplementedError.
TARGET_PROPERTY = property(lambda optimizer: optimizer._target, _set_target,  # pylint: disable=protected-access
                           doc="'CPU', 'GPU' or 'Ascend': where MindSpore treats sparse gradients (see nn.Adam).")


# Update functions (fused kernels or reference functions) per configuration key. An optimizer's graph code looks
# them up as UPDATE_FNS[key][i] with a constant key: a tuple of functions passed as an argument does not survive
# every graph (with RowTensor gradients inside TrainOneStepCell it arrived as (0, 0)), and several functions
# passed as separate arguments do not compile.
UPDATE_FNS = {}


def register_update_fns(key, build):
    """Stores ``build()`` under ``key`` the first time the key is seen; returns the key."""
    if key not in UPDATE_FNS:
        UPDATE_FNS[key] = build()
    return key


@functools.lru_cache(maxsize=None)
def _custom_class(written, read):
    """An ``ops.Custom`` subclass whose first inputs (``written``) are declared as written in place.

    The RW_WRITE signature plus ``side_effect_mem`` makes MindSpore order the kernel after every earlier read
    of those Parameters and before every later one (auto-monad); without it, graph mode may run the kernel
    while the backward pass still reads the old values (tests/test_kernels.py shows that hazard).
    """
    signature = tuple(sig.make_sig(name, sig.sig_rw.RW_WRITE) for name in written)
    signature += tuple(sig.make_sig(name) for name in read)
    return type("MsOptimInplaceCustom", (ops.Custom,), {"__mindspore_signature__": signature})


# Storage dtypes every kernel reads and writes (float32 math inside).
_STORAGE_DTYPES = (ms.float32, ms.float16, ms.bfloat16)


def _element_dtype(dtype):
    """Float32 for Tensor[Float32] and Ref[Tensor[Float32]] (a Parameter) alike."""
    while hasattr(dtype, "element_type"):
        dtype = dtype.element_type()
    return dtype


def _checked(symbol, names, written, out_shape, out_dtype, input_dtypes, shape_rules=None):
    """``out_shape`` / ``out_dtype`` functions (of the inputs' shapes, resp. dtypes) that first refuse, when the
    graph is built, inputs the kernel would refuse only when it runs, after the earlier updates of the same step
    had been applied: a gradient whose shape (ValueError) or dtype (TypeError) is not its parameter's, a tensor of
    a dtype the kernel does not take, state tensors of different dtypes.

    Default dtypes: written tensors, 'grad' and 'values' are storage tensors (float32/float16/bfloat16); 'indices'
    int32/int64; every other read input (learning rate, betas, ...) float32. ``input_dtypes`` (name -> tuple of
    dtypes) overrides them, e.g. for uint8 codes; the written inputs other than 'param' that keep the default must
    share one dtype. ``shape_rules`` (name -> function of the parameter's shape giving the input's shape, or None
    where that input is unused) checks state that is not shaped like its parameter (CAME's rows and columns)."""
    input_dtypes = {"indices": (ms.int32, ms.int64), **(input_dtypes or {})}
    storage = set(written) | {"grad", "values"}
    same_dtype = [name for name in written if name != "param" and name not in input_dtypes]
    index = {name: i for i, name in enumerate(names)}
    param = index.get("param", index.get("m"))
    grad, values, indices = index.get("grad"), index.get("values"), index.get("indices")

    def known(shape):
        return all(d >= 0 for d in shape)  # dynamic dimensions are left to the kernel

    def check_shapes(*shapes):
        if param is None:  # a check of scalars (MsOptimQuant8Layout): no parameter to compare shapes with
            return out_shape(shapes)
        want = list(shapes[param])
        if grad is not None and known(shapes[grad]) and known(want) and list(shapes[grad]) != want:
            raise ValueError(f"For ms_optim kernel '{symbol}', the gradient's shape {list(shapes[grad])} must be "
                             f"the shape of its parameter, {want}.")
        if values is not None and known(shapes[values]) and known(want) and (
                len(shapes[values]) != len(want) or list(shapes[values][1:]) != want[1:]):
            raise ValueError(f"For ms_optim kernel '{symbol}', the sparse gradient's values, of shape "
                             f"{list(shapes[values])}, must be rows of its parameter, of shape {want}.")
        rules = {name: (lambda shape: shape) for name in _ELEMENTWISE_STATE}
        rules.update(shape_rules or {})
        for name, rule in rules.items():  # a parameter reshaped after construction is stopped here, before any write
            i = index.get(name)
            expected = None if i is None or i == param or not known(want) else rule(want)
            if expected is not None and known(shapes[i]) and list(shapes[i]) != list(expected):
                raise ValueError(f"For ms_optim kernel '{symbol}', the state '{name}' has shape {list(shapes[i])}, "
                                 f"expected {list(expected)} for its parameter of shape {want} (was the parameter "
                                 f"replaced after the optimizer was built?).")
        return out_shape(shapes)

    def check_dtypes(*dtypes):
        # Every tensor's dtype, checked before anything of the step runs: a kernel refusing one only when it runs
        # would do so after the earlier parameters, the beta powers and the step counter had moved.
        for i, name in enumerate(names):
            dtype = _element_dtype(dtypes[i])
            allowed = input_dtypes.get(name, _STORAGE_DTYPES if name in storage else (ms.float32,))
            if dtype not in allowed:
                raise TypeError(f"For ms_optim kernel '{symbol}', the dtype of '{name}' must be one of "
                                f"{[str(t) for t in allowed]}, but got {dtype}.")
        for arg, what in ((grad, "gradient"), (values, "sparse gradient")):
            if arg is not None and _element_dtype(dtypes[arg]) != _element_dtype(dtypes[param]):
                raise TypeError(f"For ms_optim kernel '{symbol}', the {what}'s dtype {_element_dtype(dtypes[arg])} must be "
                                f"the dtype of its parameter, {_element_dtype(dtypes[param])}.")
        state = [name for name in same_dtype if name in index]
        if len({_element_dtype(dtypes[index[name]]) for name in state}) > 1:
            found = {name: str(_element_dtype(dtypes[index[name]])) for name in state}
            raise TypeError(f"For ms_optim kernel '{symbol}', the state tensors {state} must share one dtype, "
                            f"but got {found}.")
        return out_dtype(dtypes)

    return check_shapes, check_dtypes


# State inputs with one element per parameter element (the factored rows/columns and block scales are not, nor is
# CAME's full second moment 'sq', which only its parameters of fewer than two axes use: the kernel checks it).
_ELEMENTWISE_STATE = ("m", "v", "vhat", "accum", "code")


def _kernel(family, symbol, written, read, out_shape, out_dtype, input_dtypes=None):
    """A primitive running ``symbol`` of ``family``'s library, writing the ``written`` inputs in place; its output
    is ``out_shape(input shapes)`` / ``out_dtype(input dtypes)``, after the checks of ``_checked``."""
    written, read = tuple(written), tuple(read)
    out_shape, out_dtype = _checked(symbol, written + read, written, out_shape, out_dtype, input_dtypes)
    op = _custom_class(written, read)(f"{locate_library(family)}:{symbol}", out_shape=out_shape, out_dtype=out_dtype,
                                      func_type="aot")
    op.add_prim_attr("side_effect_mem", True)
    return op


def inplace_kernel(family, symbol, written, read, input_dtypes=None):
    """A primitive running ``symbol`` of ``family``'s library, writing the ``written`` inputs in place.

    It returns a float32 flag of shape (1,); the update itself is the side effect. ``input_dtypes``: see
    ``_checked``.
    """
    return _kernel(family, symbol, written, read, lambda _: (1,), lambda _: ms.float32, input_dtypes)


def multi_tensor_kernel(family, symbol, written, read, scalars, count, input_dtypes=None, outputs_like=None,
                        shape_rules=None):
    """A primitive running ``symbol`` of ``family``'s library once for ``count`` tensors: its inputs are, for each
    name of ``written`` and then of ``read``, ``count`` tensors (tensor i of every list belongs together), then the
    ``scalars``; the ``written`` tensors are written in place, and it returns a float32 flag of shape (1,), or with
    ``outputs_like`` (a name of ``read``) a tuple of ``count`` tensors shaped and typed like that list's.

    Each tensor i is checked as ``inplace_kernel`` checks its single tensor (``_checked``: shapes against its
    parameter, ``shape_rules``, dtypes, ``input_dtypes``) when the graph is built, before anything of the step runs. Call it as
    ``op(*params, *states, *grads, *scalars)``."""
    written, read, scalars = tuple(written), tuple(read), tuple(scalars)
    lists = written + read
    one_shapes, one_dtypes = _checked(symbol, lists + scalars, written, lambda _: (1,), lambda _: ms.float32,
                                      input_dtypes, shape_rules)

    def tensor(values, i):  # tensor i's inputs in the order of a single-tensor kernel
        return [values[k * count + i] for k in range(len(lists))] + list(values[len(lists) * count:])

    def each_tensor(check, values):
        for i in range(count):
            try:
                check(*tensor(values, i))
            except (TypeError, ValueError) as err:  # which of the N: the message alone does not say
                if count == 1:
                    raise
                raise type(err)(f"{err} (tensor {i} of the {count} of this call)") from err

    like = None if outputs_like is None else lists.index(outputs_like) * count

    def check_shapes(*shapes):
        each_tensor(one_shapes, shapes)
        return (1,) if like is None else [shapes[like + i] for i in range(count)]

    def check_dtypes(*dtypes):
        each_tensor(one_dtypes, dtypes)
        # element dtypes (Float32, not Tensor[Float32] or a Parameter's Ref[...]), as an output dtype is given
        return ms.float32 if like is None else [_element_dtype(dtypes[like + i]) for i in range(count)]

    def names(group):
        return tuple(f"{name}{i}" for name in group for i in range(count))

    op = _custom_class(names(written), names(read) + scalars)(
        f"{locate_library(family)}:{symbol}", out_shape=check_shapes, out_dtype=check_dtypes, func_type="aot")
    op.add_prim_attr("side_effect_mem", True)
    return op
