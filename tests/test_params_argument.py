"""`params` may be any iterable, as nn.Optimizer accepts: the optimizer built from a tuple, a ParameterTuple, a
generator or a filter trains exactly as the one built from a list."""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn

import ms_optim

FORMS = {
    "tuple": tuple,
    "ParameterTuple": ms.ParameterTuple,
    "generator": lambda params: (p for p in params),
    "filter": lambda params: filter(lambda p: p.requires_grad, params),
}
OPTIMIZERS = {"AdaBelief": ms_optim.AdaBelief, "Adagrad": ms_optim.Adagrad, "Adagrad8bit": ms_optim.Adagrad8bit,
              "Adam": ms_optim.Adam, "Came": ms_optim.Came}


def _train(cls, form):
    ms.set_seed(0)
    net = nn.SequentialCell(nn.Dense(4, 5), nn.ReLU(), nn.Dense(5, 2))
    opt = cls(form(net.trainable_params()), learning_rate=0.01)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    rng = np.random.default_rng(0)
    x, y = Tensor(rng.standard_normal((8, 4)).astype(np.float32)), Tensor(np.zeros((8, 2), np.float32))
    for _ in range(2):
        step(x, y)
    return {p.name: p.asnumpy() for p in opt.get_parameters()}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_any_iterable_of_parameters(mode, name, form):
    want = _train(OPTIMIZERS[name], list)
    got = _train(OPTIMIZERS[name], FORMS[form])
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_target_property_as_nn_adam(mode, name):
    """`optimizer.target = "CPU"` (nn.Adam documents it for sparse updates on the host) is accepted, and bad values
    get nn.Adam's exception types and messages; nn.Optimizer's own setter raises NotImplementedError."""
    net = nn.Dense(3, 2)
    opt = OPTIMIZERS[name](net.trainable_params(), learning_rate=0.01)
    theirs = nn.Adam(nn.Dense(3, 2).trainable_params(), learning_rate=0.01)
    for value in (1, "TPU", "GPU", "Ascend"):
        with pytest.raises(Exception) as ours_info:
            opt.target = value
        with pytest.raises(Exception) as theirs_info:
            theirs.target = value
        assert type(ours_info.value) is type(theirs_info.value) and str(ours_info.value) == str(theirs_info.value)
    opt.target = "CPU"
    assert opt.target == "CPU"
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    before = net.weight.asnumpy().copy()
    step(Tensor(np.ones((4, 3), np.float32)), Tensor(np.zeros((4, 2), np.float32)))
    assert not np.array_equal(net.weight.asnumpy(), before)
