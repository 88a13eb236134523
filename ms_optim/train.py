"""The main job: train an MLP on scikit-learn's digits (shipped with the package, no download) with
``Model.train``, once per optimizer (ms_optim.Adam, nn.Adam, ms_optim.Came), and print loss, test accuracy and
median step time side by side."""
import argparse
import time

import numpy as np
import mindspore as ms
from mindspore import nn
from mindspore.train import Callback, Model

import ms_optim


class StepTimer(Callback):
    """Wall time of every training step."""

    def __init__(self):
        super().__init__()
        self.times = []
        self._start = None

    def on_train_step_begin(self, run_context):
        self._start = time.perf_counter()

    def on_train_step_end(self, run_context):
        self.times.append(time.perf_counter() - self._start)
        self.last_loss = float(run_context.original_args().net_outputs.asnumpy())


def load_digits_split(seed=0, test_fraction=0.25):
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    # one-hot labels: each dataset row is then an array (mindspore.dataset mishandles numpy>=2 scalars)
    y = np.eye(10, dtype=np.float32)[digits.target]
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def make_mlp(seed, hidden=128):
    ms.set_seed(seed)
    return nn.SequentialCell(nn.Dense(64, hidden), nn.ReLU(), nn.Dense(hidden, hidden), nn.ReLU(),
                             nn.Dense(hidden, 10))


OPTIMIZERS = {
    "ms_optim.Adam": lambda params, lr: ms_optim.Adam(params, learning_rate=lr),
    "nn.Adam": lambda params, lr: nn.Adam(params, learning_rate=lr),
    "ms_optim.Came": lambda params, lr: ms_optim.Came(params, learning_rate=lr),
}


def train_one(name, data, epochs, batch_size, lr, seed):
    (x_train, y_train), (x_test, y_test) = data
    net = make_mlp(seed)
    loss_fn = nn.SoftmaxCrossEntropyWithLogits(sparse=False, reduction="mean")
    model = Model(net, loss_fn, OPTIMIZERS[name](net.trainable_params(), lr), metrics={"accuracy"})
    ms.dataset.config.set_seed(seed)
    train_set = ms.dataset.NumpySlicesDataset({"x": x_train, "y": y_train}, shuffle=True)
    train_set = train_set.batch(batch_size, drop_remainder=True)
    test_set = ms.dataset.NumpySlicesDataset({"x": x_test, "y": y_test}, shuffle=False).batch(batch_size)
    timer = StepTimer()
    model.train(epochs, train_set, callbacks=[timer], dataset_sink_mode=False)
    accuracy = model.eval(test_set, dataset_sink_mode=False)["accuracy"]
    steady = timer.times[1:] or timer.times  # the first step includes graph compilation
    return {"loss": timer.last_loss, "accuracy": accuracy, "median_step_ms": 1e3 * float(np.median(steady)),
            "first_step_ms": 1e3 * timer.times[0]}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ms_optim train", description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", choices=("graph", "pynative"), default="graph")
    args = parser.parse_args(argv)
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE)
    data = load_digits_split(args.seed)
    print(f"digits: {len(data[0][0])} train / {len(data[1][0])} test, MLP 64-128-128-10, {args.epochs} epochs, "
          f"batch {args.batch_size}, lr {args.lr}, {args.mode} mode")
    print(f"{'optimizer':<16}{'final loss':>12}{'test acc':>10}{'median step ms':>16}{'first step ms':>15}")
    for name in OPTIMIZERS:
        r = train_one(name, data, args.epochs, args.batch_size, args.lr, args.seed)
        print(f"{name:<16}{r['loss']:>12.4f}{r['accuracy']:>10.4f}{r['median_step_ms']:>16.3f}"
              f"{r['first_step_ms']:>15.1f}")
    return 0
