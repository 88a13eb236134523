"""Graph helpers of the optimizers whose fused kernels update every parameter in one call per step (Adam,
AdaBelief, Adagrad): per-tensor values in, the per-parameter result out."""
from mindspore import ops
from mindspore.ops import composite as C
from mindspore.ops import functional as F

_map = C.HyperMap()
_as_vector = C.MultitypeFuncGraph("ms_optim_as_vector")


@_as_vector.register("Tensor")
def _scalar_as_vector(value):
    return ops.reshape(value, (1,))


def per_tensor_vector(values):
    """One float32 vector of shape (N,) from a tuple of N scalars (shape () or (1,)): per-tensor values (group
    learning rates, clipping factors) as a multi-tensor kernel takes them."""
    return ops.concat(_map(_as_vector, values))


def of_tensor(values, i):
    """Tensor i's value of ``values``: one value for every tensor (shape () or (1,)) or one per tensor (shape (N,)),
    as the multi-tensor kernels read their per-tensor scalars."""
    if values.size == 1:
        return values
    return values[i:i + 1]


def _true_after(value):
    return F.depend(True, value)


def one_per_parameter(done, params):
    """What a step returns, as ``nn.Optimizer`` subclasses such as nn.Adam do: one True per parameter (a tuple),
    each depending on ``done`` (a Tensor: the one call's flag) through its parameter, read after the call.

    Forms that did not do: a tuple of constants made to depend on ``done`` as a whole came back in PyNative before
    the step had run, and a refused step's error surfaced only at exit (MindSpore 2.10); a partial of ``done``
    mapped over the parameters did not compile with sparse gradients ("The object is not callable"); a tuple
    multiplied out of one flag, ``(F.depend(True, done),) * N``, compiled: but it doubled the first step's compile
    time (200 parameters: 13.6 s against 6.8 s, nn.Adam 8 s), as did a tuple multiplied out of ``done``; the map
    below with a MultitypeFuncGraph instead of a plain function failed at run time with sparse gradients ("input
    abstract is out of range")."""
    return _map(_true_after, F.depend(params, done))
