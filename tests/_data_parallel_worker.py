"""One worker of tests/test_data_parallel.py, started by msrun: trains on its shard of the batch under
DATA_PARALLEL and saves its parameters and optimizer state."""
import sys

import numpy as np

import mindspore as ms
from mindspore import Tensor, nn
from mindspore.communication import get_group_size, get_rank, init

import ms_optim

STEPS = 5
OPTIMIZERS = {
    "Adam": lambda params: ms_optim.Adam(params, learning_rate=0.01),
    "Adam_amsgrad": lambda params: ms_optim.Adam(params, learning_rate=0.01, use_amsgrad=True),
    "Came": lambda params: ms_optim.Came(params, learning_rate=0.01),
}


def batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((16, 6)).astype(np.float32), rng.standard_normal((16, 3)).astype(np.float32)


def train(name, x, y):
    """{Parameter name: value} for the net and its optimizer after STEPS steps on (x, y)."""
    ms.set_seed(0)
    net = nn.SequentialCell(nn.Dense(6, 8), nn.ReLU(), nn.Dense(8, 3))
    opt = OPTIMIZERS[name](net.trainable_params())
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    for _ in range(STEPS):
        step(Tensor(x), Tensor(y))
    return {p.name: p.asnumpy() for p in opt.get_parameters()}


def main(out_prefix):
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    init()
    # gradients_mean: the all-reduced gradient of equal shards is the full batch's (MSELoss averages).
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    rank, size = get_rank(), get_group_size()
    x, y = batch()
    shard = slice(rank * len(x) // size, (rank + 1) * len(x) // size)
    for name in OPTIMIZERS:
        np.savez(f"{out_prefix}_{name}_{rank}.npz", **train(name, x[shard], y[shard]))


if __name__ == "__main__":
    main(sys.argv[1])
