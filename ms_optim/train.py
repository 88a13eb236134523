"""The main job: a character-level transformer language model trained on the Python standard library's own
source files (they ship with every Python installation: no download), once per optimizer, with a progress bar
per run, then a table (validation loss and perplexity, tokens/s, optimizer-step time, optimizer-state bytes,
implementation), ``train.csv`` and ``train.png`` in ``--out``.

Method (docs/main-job.md):

- Data: the top-level ``*.py`` files of the standard library (``sysconfig.get_paths()["stdlib"]``), read in
  sorted order; every 10th file is held out for validation. Characters map to 98 ids (printable ASCII, newline,
  tab, one id for anything else).
- Model: token + position embeddings, pre-LayerNorm transformer blocks (causal self-attention, GELU MLP) and a
  linear head, all from ``mindspore.nn`` layers; one network whose initial weights are restored before each
  run, so every optimizer starts from the same weights and sees the same batches in the same order.
- GRAPH_MODE. The forward/backward is one compiled graph shared by all runs (compiled once, before the first
  run); each optimizer is its own compiled graph (compiled before its run, outside the timing), called on the
  gradients that graph returns. Tokens/s is over the training steps only (no compile, no evaluation).
- Optimizer-step time: after the runs, one gradient tuple of the model is captured and every optimizer steps on
  it round-robin (one step of each per round, rotating order, after warm-up rounds), as ``ms_optim bench`` does:
  the update alone, warm, with load drift on the machine spread over all alike.
"""
import argparse
import csv
import glob
import math
import os
import sys
import sysconfig
import time

import numpy as np

# Printable ASCII, newline and tab; every other character is one "other" id. Fixed, so the vocabulary does not
# depend on the Python version whose sources are read.
_ALPHABET = "\n\t" + "".join(chr(c) for c in range(32, 127))
VOCAB_SIZE = len(_ALPHABET) + 1
_OTHER = len(_ALPHABET)


# ----------------------------------------------------------------------------------------------------- data
def stdlib_dir():
    """The directory of the standard library's ``.py`` files (also inside a virtual environment)."""
    path = sysconfig.get_paths().get("stdlib")
    if path and os.path.isfile(os.path.join(path, "os.py")):
        return path
    return os.path.dirname(os.__file__)


def stdlib_files(directory=None):
    """The top-level ``*.py`` files of the standard library, sorted by name (a fixed order)."""
    return sorted(glob.glob(os.path.join(directory or stdlib_dir(), "*.py")))


def encode(text):
    """Character ids (uint8) of ``text``."""
    table = np.full(128, _OTHER, np.uint8)
    for i, ch in enumerate(_ALPHABET):
        table[ord(ch)] = i
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)  # one code point per character
    return table[np.minimum(codes, 127)]  # 127 (DEL) and everything above map to "other"


def decode(ids):
    return "".join(_ALPHABET[i] if i < len(_ALPHABET) else "\N{REPLACEMENT CHARACTER}" for i in ids)


def load_corpus(files=None, val_every=10):
    """(train ids, validation ids, number of files): every ``val_every``-th file goes to validation."""
    files = stdlib_files() if files is None else list(files)
    if len(files) < 2:
        raise RuntimeError(f"found {len(files)} standard-library .py files in {stdlib_dir()!r}; need at least 2")
    parts = {"train": [], "val": []}
    for i, path in enumerate(files):
        with open(path, encoding="utf-8", errors="replace") as f:
            parts["val" if i % val_every == val_every - 1 else "train"].append(f.read())
    if not parts["val"]:
        parts["val"].append(parts["train"].pop())
    return encode("\n\n".join(parts["train"])), encode("\n\n".join(parts["val"])), len(files)


def batch_starts(n_tokens, context, batch_size, steps, seed):
    """Start offsets of every training sequence, (steps, batch_size): the same for every optimizer."""
    return np.random.default_rng(seed).integers(0, n_tokens - context - 1, size=(steps, batch_size))


def sequences(ids, starts, context):
    """(inputs, targets), int32 arrays of shape starts.shape + (context,)."""
    window = ids[np.asarray(starts)[..., None] + np.arange(context + 1)].astype(np.int32)
    return window[..., :-1], window[..., 1:]


# ---------------------------------------------------------------------------------------------------- model
MODEL_SIZES = {
    # name: (d_model, layers, heads, d_ff, context)
    "default": (256, 3, 4, 1024, 64),
    "quick": (128, 2, 2, 512, 64),
}


def build_model(d_model, layers, heads, d_ff, context, seed=0):
    """A GPT-style character LM from mindspore.nn layers: the network maps (batch, context) int32 ids to logits."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    class Block(nn.Cell):
        """Pre-LayerNorm transformer block: causal multi-head self-attention, then a GELU MLP."""

        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm((d_model,))
            self.qkv = nn.Dense(d_model, 3 * d_model)
            self.proj = nn.Dense(d_model, d_model)
            self.ln2 = nn.LayerNorm((d_model,))
            self.fc1 = nn.Dense(d_model, d_ff)
            self.act = nn.GELU(approximate=False)
            self.fc2 = nn.Dense(d_ff, d_model)
            self.scale = 1.0 / math.sqrt(d_model // heads)

        def construct(self, x, mask):
            b, t, _ = x.shape
            q, k, v = ops.split(self.qkv(self.ln1(x)), d_model, axis=-1)
            q = q.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
            k = k.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
            v = v.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)
            att = ops.softmax(ops.matmul(q, k.swapaxes(-1, -2)) * self.scale + mask, axis=-1)
            x = x + self.proj(ops.matmul(att, v).transpose(0, 2, 1, 3).reshape(b, t, d_model))
            return x + self.fc2(self.act(self.fc1(self.ln2(x))))

    class CharLM(nn.Cell):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(VOCAB_SIZE, d_model)
            self.pos = nn.Embedding(context, d_model)
            self.blocks = nn.CellList([Block() for _ in range(layers)])
            self.ln = nn.LayerNorm((d_model,))
            self.head = nn.Dense(d_model, VOCAB_SIZE)
            self.mask = Tensor(np.triu(np.full((context, context), -1e9, np.float32), 1))
            self.positions = Tensor(np.arange(context, dtype=np.int32))

        def construct(self, x):
            h = self.tok(x) + self.pos(self.positions)
            for block in self.blocks:
                h = block(h, self.mask)
            return self.head(self.ln(h))

    ms.set_seed(seed)
    return CharLM()


def loss_and_grad_fns(net):
    """(loss(x, y), loss_and_grads(x, y)) compiled with ms.jit: mean cross-entropy over all positions."""
    import mindspore as ms
    from mindspore import nn

    loss_fn = nn.CrossEntropyLoss()

    def forward(x, y):
        return loss_fn(net(x).reshape(-1, VOCAB_SIZE), y.reshape(-1))

    grad_fn = ms.value_and_grad(forward, None, net.trainable_params())
    return ms.jit(forward), ms.jit(grad_fn)


def weight_restorer(params):
    """A cell that writes a tuple of Tensors into ``params`` with ops.assign, inside a graph.

    ``Parameter.set_data`` would not do here: it gives the Parameter new storage, which the compiled
    forward/backward graph does not see (it keeps computing with the old weights)."""
    from mindspore import ParameterTuple, nn, ops

    class Restore(nn.Cell):
        def __init__(self):
            super().__init__()
            self.params = ParameterTuple(params)
            self.map = ops.HyperMap()

        def construct(self, values):
            return self.map(ops.assign, self.params, values)

    return Restore()


# ----------------------------------------------------------------------------------------------- optimizers
def _factory(name, **fixed):
    """A builder of ``ms_optim.<name>`` (None when this build has no such class), taking (params, lr)."""
    def build(params, lr):
        import ms_optim
        return getattr(ms_optim, name)(params, lr=lr, **fixed)

    def available():
        import ms_optim
        return getattr(ms_optim, name, None) is not None

    build.available = available
    return build


def _nn(name, **fixed):
    def build(params, lr):
        from mindspore import nn
        return getattr(nn, name)(params, learning_rate=lr, **fixed)

    build.available = lambda: True
    return build


# name -> (learning rate for this model, builder). Each rate is the best of a grid (factor-2 steps) tried on the
# default model for the default 100 steps; the grid and its results are in docs/main-job.md.
OPTIMIZERS = {
    "nn.Adam": (2.5e-4, _nn("Adam")),
    "ms_optim.Adam": (2.5e-4, _factory("Adam")),
    "ms_optim.Adam-amsgrad": (2.5e-4, _factory("Adam", use_amsgrad=True)),
    "nn.AdaFactor": (5e-4, _nn("AdaFactor", relative_step=False, scale_parameter=False, warmup_init=False)),
    "ms_optim.Came": (2.5e-4, _factory("Came")),
    "ms_optim.Adagrad": (1e-3, _factory("Adagrad")),
    "ms_optim.Adagrad8bit": (1e-3, _factory("Adagrad8bit")),
    "ms_optim.AdaBelief": (2.4e-3, _factory("AdaBelief")),
    # MindSpore's counterparts of two ms_optim variants: not trained by default ("all"), but their step is timed
    # next to the variant's (below). nn.Adagrad with a zero initial accumulator, as bitsandbytes' Adagrad starts.
    "nn.Adam-amsgrad": (2.5e-4, _nn("Adam", use_amsgrad=True)),
    "nn.Adagrad": (1e-3, _nn("Adagrad", accum=1e-8)),
}
DEFAULT_OPTIMIZERS = list(OPTIMIZERS)[:8]
# When the first is trained and the second is not, the table still shows the second's optimizer-step time (and
# state), so the update's cost can be compared with MindSpore's own at no training time.
STEP_TIME_COUNTERPARTS = {"ms_optim.Adam-amsgrad": "nn.Adam-amsgrad", "ms_optim.Adagrad": "nn.Adagrad"}


def select_optimizers(spec):
    """(available names, missing names) for a comma-separated list of names (case-insensitive) or "all" (the
    default set: every optimizer but the step-time counterparts)."""
    if spec.strip().lower() == "all":
        wanted = list(DEFAULT_OPTIMIZERS)
    else:
        by_lower = {name.lower(): name for name in OPTIMIZERS}
        wanted = []
        for item in (s.strip() for s in spec.split(",")):
            if not item:
                continue
            if item.lower() not in by_lower:
                raise ValueError(f"unknown optimizer {item!r}; choose from: {', '.join(OPTIMIZERS)}")
            wanted.append(by_lower[item.lower()])
    available = [n for n in wanted if OPTIMIZERS[n][1].available()]
    return available, [n for n in wanted if n not in available]


def state_bytes(optimizer, params):
    """Bytes of the optimizer's own Parameters (its state), not counting the trained ones, the learning rate,
    the step counter and the 8-bit layout version."""
    own = {id(p) for p in params}
    return sum(p.size * p.itemsize for p in optimizer.get_parameters()
               if id(p) not in own and p.name not in ("global_step", "learning_rate", "quant8_layout"))


def implementation(optimizer):
    """"fused" or "reference" for ms_optim classes; MindSpore's own optimizers run MindSpore's kernels."""
    return getattr(optimizer, "impl", None) or "MindSpore"


# ------------------------------------------------------------------------------------------------- progress
class Progress:
    """tqdm when it is installed, else a text line (rewritten in place on a terminal, a few lines otherwise)."""

    def __init__(self, name, total, enabled=True):
        self.name, self.total, self.enabled = name, total, enabled
        self.bar, self.count, self.fields = None, 0, {}
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._tty = sys.stdout.isatty()
            self._next_print = 0
            return
        self.bar = tqdm(total=total, desc=f"{name:<22}", unit="step", leave=True, dynamic_ncols=True,
                        mininterval=0.5)

    def update(self, **fields):
        self.count += 1
        self.fields.update(fields)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(self._text(), refresh=False)
            self.bar.update(1)
        elif self._tty:
            print(f"\r{self.name:<22} {self.count:>5}/{self.total} {self._text()}", end="", flush=True)
        elif self.count >= self._next_print or self.count == self.total:  # a few lines in logs
            print(f"{self.name:<22} {self.count:>5}/{self.total} {self._text()}", flush=True)
            self._next_print = self.count + max(1, self.total // 4)

    def _text(self):
        return ", ".join(f"{k} {v}" for k, v in self.fields.items())

    def close(self):
        if self.bar is not None:
            self.bar.close()
        elif self.enabled and self._tty:
            print()


# ---------------------------------------------------------------------------------------------------- train
def run_one(name, optimizer, grad_step, eval_loss, data, steps, eval_every, progress=True):
    """Train ``optimizer``'s parameters (set to the initial weights by the caller); returns the run's record."""
    from mindspore import Tensor

    train_ids, starts, context, val_batches, warm_grads = data
    t0 = time.perf_counter()
    optimizer.compile(warm_grads)  # the optimizer's graph, outside the timed steps
    compile_s = time.perf_counter() - t0
    bar = Progress(name, steps, enabled=progress)
    record = {"name": name, "compile_s": compile_s, "curve": [], "train_loss": []}
    train_s, tokens, smooth = 0.0, 0, None
    for step in range(1, steps + 1):
        x, y = sequences(train_ids, starts[step - 1], context)
        t0 = time.perf_counter()
        loss, grads = grad_step(Tensor(x), Tensor(y))
        optimizer(grads)
        loss = float(loss.asnumpy())  # waits for the step
        train_s += time.perf_counter() - t0
        tokens += x.size
        record["train_loss"].append(loss)
        smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
        fields = {"loss": f"{smooth:.3f}", "tok/s": f"{tokens / train_s:,.0f}"}
        if step % eval_every == 0 or step == steps:
            val = eval_loss(val_batches[:1])
            record["curve"].append((step, train_s, val))
            fields["val"] = f"{val:.3f}"
        bar.update(**fields)
    bar.close()
    record.update(train_s=train_s, tokens=tokens, tokens_per_s=tokens / train_s, val_loss=eval_loss(val_batches))
    return record


def time_optimizer_steps(optimizers, grads, last_param, rounds, warmup):
    """{name: median seconds of one optimizer step}, every optimizer on the same gradient tuple, round-robin."""
    from ms_optim.bench import _time_round_robin

    timed = _time_round_robin([[(name, opt, last_param.asnumpy) for name, opt in optimizers.items()]], grads, rounds,
                              warmup)
    return {name: t for name, (t, _, _) in timed.items()}


def write_csv(path, rows, columns):
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot(path, records, title):
    """Validation loss against step and against training wall time; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax_step, ax_time) = plt.subplots(1, 2, figsize=(12, 4.8))
    for rec in records:
        steps, secs, vals = zip(*rec["curve"])
        style = "--" if rec["name"].startswith("nn.") else "-"
        ax_step.plot(steps, vals, style, marker=".", label=rec["name"])
        ax_time.plot(secs, vals, style, marker=".", label=rec["name"])
    ax_step.set_xlabel("step")
    ax_time.set_xlabel("training time, s (steps only: no compile, no evaluation)")
    for ax in (ax_step, ax_time):
        ax.set_ylabel("validation loss, nats/char (2,048 held-out chars)")
        ax.grid(alpha=0.3)
    ax_step.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="ms-optim train", description=__doc__.split("\n\n")[0],
        epilog=f"Optimizers and their learning rates: "
               f"{', '.join(f'{n} ({lr:g})' for n, (lr, _) in OPTIMIZERS.items())}.")
    parser.add_argument("--optimizers", default="all",
                        help="comma-separated names from the list below, or 'all' (default: all this build has "
                             "but nn.Adam-amsgrad and nn.Adagrad, whose step time is shown next to ms_optim's "
                             "without training them)")
    parser.add_argument("--steps", type=int, help="training steps per optimizer (default 100; --quick: 25)")
    parser.add_argument("--quick", action="store_true",
                        help="a smaller model and fewer steps: about a minute on 2 cores for all optimizers")
    parser.add_argument("--out", default="ms_optim_train", help="folder for train.csv, train_curves.csv and "
                                                                "train.png (default: ./ms_optim_train)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    parser.add_argument("--lr", type=float, help="one learning rate for every optimizer (default: each its own)")
    parser.add_argument("--seed", type=int, default=0, help="weights and batch order (default 0)")
    parser.add_argument("--eval-every", type=int, help="steps between validation losses (default: steps / 10)")
    parser.add_argument("--timing-rounds", type=int, default=None,
                        help="round-robin rounds of the optimizer-step timing (default 20; --quick: 5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        names, missing = select_optimizers(args.optimizers)
    except ValueError as err:
        parser.error(str(err))
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--eval-every", args.eval_every),
                        ("--timing-rounds", args.timing_rounds)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be positive, but got {value}")
    steps = args.steps if args.steps is not None else (25 if args.quick else 100)
    eval_every = args.eval_every if args.eval_every is not None else max(1, steps // 10)
    rounds = args.timing_rounds if args.timing_rounds is not None else (5 if args.quick else 20)
    d_model, layers, heads, d_ff, context = MODEL_SIZES["quick" if args.quick else "default"]

    import mindspore as ms
    from mindspore import Tensor

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    import ms_optim

    for name in missing:
        print(f"{name}: not available in this build (skipped)")
    if not names:
        print("no optimizer to run")
        return 1
    os.makedirs(args.out, exist_ok=True)

    train_ids, val_ids, n_files = load_corpus()
    net = build_model(d_model, layers, heads, d_ff, context, args.seed)
    params = net.trainable_params()
    n_params = sum(p.size for p in params)
    init = tuple(Tensor(p.asnumpy().copy()) for p in params)
    restore = weight_restorer(params)
    eval_fn, grad_step = loss_and_grad_fns(net)
    starts = batch_starts(len(train_ids), context, args.batch_size, steps, args.seed)
    # Validation: 4 fixed batches of 32 sequences spread evenly over the held-out text (the curves use the
    # first; the final figure all 4).
    val_starts = np.linspace(0, len(val_ids) - context - 2, 4 * 32).astype(np.int64).reshape(4, 32)
    val_batches = [Tensor(sequences(val_ids, s, context)[0]) for s in val_starts]
    val_targets = [Tensor(sequences(val_ids, s, context)[1]) for s in val_starts]

    def eval_loss(batches):
        return float(np.mean([eval_fn(x, val_targets[i]).asnumpy() for i, x in enumerate(batches)]))

    print(f"ms_optim {ms_optim.__version__}, MindSpore {ms.__version__}, CPU, GRAPH_MODE, "
          f"{len(os.sched_getaffinity(0))} CPUs available")
    print(f"data: {n_files} standard-library files from {stdlib_dir()}: {len(train_ids):,} training / "
          f"{len(val_ids):,} validation characters (every 10th file held out), vocabulary {VOCAB_SIZE}")
    print(f"model: character transformer, {layers} blocks, d_model {d_model}, {heads} heads, MLP {d_ff}, context "
          f"{context}: {n_params:,} parameters; {steps} steps of {args.batch_size} x {context} characters")
    t0 = time.perf_counter()
    x, y = sequences(train_ids, starts[0], context)
    warm_grads = grad_step(Tensor(x), Tensor(y))[1]  # compiles the forward/backward graph, shared by all runs
    eval_loss(val_batches[:1])
    print(f"forward/backward and evaluation graphs compiled in {time.perf_counter() - t0:.1f} s")
    data = (train_ids, starts, context, val_batches, warm_grads)

    records, optimizers = [], {}
    for name in names:
        default_lr, build = OPTIMIZERS[name]
        lr = args.lr if args.lr is not None else default_lr
        restore(init)
        opt = build(params, lr)
        rec = run_one(name, opt, grad_step, eval_loss, data, steps, eval_every,
                      progress=not args.no_progress)
        rec.update(lr=lr, impl=implementation(opt), state_bytes=state_bytes(opt, params))
        records.append(rec)
        optimizers[name] = opt

    # MindSpore's counterparts of trained ms_optim variants, for their step time and state only.
    counterparts = {}
    for name in names:
        other = STEP_TIME_COUNTERPARTS.get(name)
        if other and other not in optimizers:
            lr = args.lr if args.lr is not None else OPTIMIZERS[other][0]
            counterparts[other] = {"name": other, "lr": lr}
            optimizers[other] = OPTIMIZERS[other][1](params, lr)
            counterparts[other].update(impl=implementation(optimizers[other]),
                                       state_bytes=state_bytes(optimizers[other], params))

    # Optimizer step alone: one gradient tuple of the model (at the last run's weights), every optimizer in turn.
    x, y = sequences(train_ids, starts[-1], context)
    grads = grad_step(Tensor(x), Tensor(y))[1]
    step_s = time_optimizer_steps(optimizers, grads, params[-1], rounds, warmup=2)
    for rec in records + list(counterparts.values()):
        rec["opt_step_ms"] = 1e3 * step_s[rec["name"]]

    rows = []
    for rec in records:
        rows.append({
            "optimizer": rec["name"], "lr": rec["lr"], "implementation": rec["impl"], "steps": steps,
            "val_loss": round(rec["val_loss"], 4), "val_ppl": round(math.exp(rec["val_loss"]), 3),
            "train_loss_last10": round(float(np.mean(rec["train_loss"][-10:])), 4),
            "tokens_per_s": round(rec["tokens_per_s"], 1), "opt_step_ms": round(rec["opt_step_ms"], 3),
            "state_bytes": rec["state_bytes"], "state_bytes_per_param": round(rec["state_bytes"] / n_params, 3),
            "train_s": round(rec["train_s"], 2), "compile_s": round(rec["compile_s"], 2)})
    for rec in counterparts.values():  # not trained: step time and state only
        rows.append({"optimizer": rec["name"], "lr": rec["lr"], "implementation": rec["impl"], "steps": 0,
                     "opt_step_ms": round(rec["opt_step_ms"], 3), "state_bytes": rec["state_bytes"],
                     "state_bytes_per_param": round(rec["state_bytes"] / n_params, 3)})
    columns = list(rows[0])
    write_csv(os.path.join(args.out, "train.csv"), rows, columns)
    write_csv(os.path.join(args.out, "train_curves.csv"),
              [{"optimizer": r["name"], "step": s, "train_s": round(t, 3), "val_loss": round(v, 4)}
               for r in records for s, t, v in r["curve"]], ["optimizer", "step", "train_s", "val_loss"])

    print()
    print(f"{n_params:,} parameters, {steps} steps x {args.batch_size * context} characters; validation: "
          f"{4 * 32 * context:,} held-out characters; step: optimizer update alone, median of {rounds} "
          f"round-robin rounds on one gradient tuple")
    header = (f"{'optimizer':<24}{'lr':>8}{'val loss':>10}{'val ppl':>9}{'tokens/s':>10}{'step ms':>9}"
              f"{'state MB':>10}{'B/param':>9}  implementation")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r["steps"]:
            trained = f"{r['val_loss']:>10.4f}{r['val_ppl']:>9.3f}{r['tokens_per_s']:>10,.0f}"
        else:
            trained = f"{'(step time only)':>29}"
        print(f"{r['optimizer']:<24}{r['lr']:>8g}{trained}{r['opt_step_ms']:>9.2f}{r['state_bytes'] / 1e6:>10.2f}"
              f"{r['state_bytes_per_param']:>9.2f}  {r['implementation']}")
    for name in missing:
        print(f"{name:<24}  not available in this build")
    title = (f"char transformer ({n_params / 1e6:.2f}M parameters) on the Python {sys.version_info[0]}."
             f"{sys.version_info[1]} standard library, {steps} steps x {args.batch_size * context} chars, "
             f"MindSpore {ms.__version__} CPU")
    png = os.path.join(args.out, "train.png")
    if plot(png, records, title):
        print(f"\nwrote {os.path.join(args.out, 'train.csv')}, train_curves.csv and {png}")
    else:
        print(f"\nwrote {os.path.join(args.out, 'train.csv')} and train_curves.csv; no plot: matplotlib is not "
              f"installed (pip install matplotlib, or install ms_optim with its [main] extra)")
    return 0
