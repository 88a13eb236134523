"""Dynamic loss scaling (DynamicLossScaleManager) with every ms_optim optimizer, through Model.train.

MindSpore's Model refuses an updating loss-scale manager on a CPU target, and TrainOneStepWithLossScaleCell detects
overflow with NPUGetFloatStatusV2 / FloatStatus, which have no CPU kernels. So the train network is built by hand,
as amp.build_train_network would build it (TrainOneStepWithLossScaleCell driven by the manager's update cell), with
only the overflow check replaced by IsFinite, and handed to Model.train. Everything else is MindSpore's own: the cell
unscales the gradients, skips the optimizer on overflow and halves the scale.
"""
import numpy as np
import pytest

import mindspore as ms
from mindspore import Tensor, nn, ops

import ms_optim

INIT_SCALE_LOG2 = 127  # so large that the first steps overflow and are skipped
EPOCHS = 10


class IsFiniteLossScaleCell(nn.TrainOneStepWithLossScaleCell):
    """TrainOneStepWithLossScaleCell with an overflow check that has CPU kernels."""

    def get_overflow_status(self, status, compute_output):
        finite = ops.stack([ops.isfinite(grad).all() for grad in compute_output])
        return ops.logical_not(finite.all())


def _batch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 6)).astype(np.float32)
    # Targets of some tens make the gradients large enough that 2^127 times them overflows float32.
    y = (20.0 * rng.standard_normal((16, 3))).astype(np.float32)
    return x, y


def _net():
    ms.set_seed(0)
    return nn.SequentialCell(nn.Dense(6, 8), nn.ReLU(), nn.Dense(8, 3))


OPTIMIZERS = {
    "Adam": lambda params: ms_optim.Adam(params, learning_rate=0.01),
    "Came": lambda params: ms_optim.Came(params, learning_rate=0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_dynamic_loss_scale_manager_skips_overflow_steps_and_otherwise_trains_as_unscaled(name, mode):
    x, y = _batch()
    net = _net()
    opt = OPTIMIZERS[name](net.trainable_params())
    manager = ms.amp.DynamicLossScaleManager(init_loss_scale=2.0 ** INIT_SCALE_LOG2, scale_factor=2,
                                             scale_window=1000)
    train_net = IsFiniteLossScaleCell(nn.WithLossCell(net, nn.MSELoss()), opt, scale_sense=manager.get_update_cell())
    # One batch per epoch, so a skipped step does not change which data later steps see.
    dataset = ms.dataset.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(16)
    ms.train.Model(train_net).train(EPOCHS, dataset, dataset_sink_mode=False)

    # Each overflow halves the scale (and no window of 1000 good steps passes to raise it again).
    skipped = INIT_SCALE_LOG2 - int(np.log2(train_net.scale_sense.asnumpy()))
    assert 1 <= skipped < EPOCHS - 2, f"{skipped} of {EPOCHS} steps overflowed: the test data no longer tests this"
    applied = EPOCHS - skipped
    if name == "Came":
        assert opt.step.asnumpy()[0] == applied  # the step counter did not move on skipped steps
    else:
        assert opt.global_step.asnumpy()[0] == applied

    # The same optimizer, no loss scale, `applied` steps on the same batch. Scaling by a power of two and
    # unscaling by its reciprocal are exact in float32, so parameters and every state tensor agree bit for bit.
    plain_net = _net()
    plain_opt = OPTIMIZERS[name](plain_net.trainable_params())
    step = nn.TrainOneStepCell(nn.WithLossCell(plain_net, nn.MSELoss()), plain_opt)
    for _ in range(applied):
        step(Tensor(x), Tensor(y))
    for got, want in zip(net.trainable_params(), plain_net.trainable_params()):
        np.testing.assert_array_equal(got.asnumpy(), want.asnumpy(), err_msg=got.name)
    got_state = {p.name: p.asnumpy() for p in opt.get_parameters()}
    want_state = {p.name: p.asnumpy() for p in plain_opt.get_parameters()}
    assert sorted(got_state) == sorted(want_state)
    for key, want in want_state.items():
        np.testing.assert_array_equal(got_state[key], want, err_msg=key)
