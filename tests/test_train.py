"""The main job's pieces (ms_optim/train.py): data, model, optimizer selection, progress line, and a 2-step run
of the whole command that writes train.csv (and train.png where matplotlib is installed)."""
import csv
import math
import os
import sys

import numpy as np
import pytest
from mindspore import Tensor

import ms_optim
from ms_optim import train


def test_stdlib_files_found_in_a_fixed_order():
    files = train.stdlib_files()
    assert "os.py" in {os.path.basename(f) for f in files}
    assert files == sorted(files)


def test_encode_maps_printable_ascii_and_marks_the_rest():
    text = "def f(x):\n\treturn x  # \u00e9"
    ids = train.encode(text)
    assert ids.dtype == np.uint8 and ids.max() < train.VOCAB_SIZE
    assert train.decode(ids[:-1]) == text[:-1]
    assert ids[-1] == train.VOCAB_SIZE - 1  # the non-ASCII character is the "other" id


def test_corpus_holds_out_every_tenth_file(tmp_path):
    files = []
    for i in range(20):
        path = tmp_path / f"m{i:02d}.py"
        path.write_text(f"x = {i}\n")
        files.append(str(path))
    train_ids, val_ids, n = train.load_corpus(files)
    assert n == 20
    assert train.decode(val_ids) == "x = 9\n\n\nx = 19\n"
    assert "x = 9\n" not in train.decode(train_ids) and "x = 18\n" in train.decode(train_ids)


def test_batches_are_fixed_by_the_seed_and_targets_are_shifted_inputs():
    ids = np.arange(200, dtype=np.uint8)
    a = train.batch_starts(len(ids), 16, 4, 3, seed=5)
    assert a.shape == (3, 4) and np.array_equal(a, train.batch_starts(len(ids), 16, 4, 3, seed=5))
    x, y = train.sequences(ids, a[0], 16)
    assert x.shape == y.shape == (4, 16) and x.dtype == np.int32
    assert np.array_equal(x[:, 1:], y[:, :-1]) and np.array_equal(x[:, 0], a[0])


def test_model_gives_logits_and_has_the_expected_parameter_count():
    d, layers, heads, d_ff, context = 32, 2, 2, 64, 16
    net = train.build_model(d, layers, heads, d_ff, context)
    logits = net(Tensor(np.zeros((3, context), np.int32)))
    assert logits.shape == (3, context, train.VOCAB_SIZE)
    block = 2 * 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * d_ff + d_ff) + (d_ff * d + d)
    expected = (train.VOCAB_SIZE + context) * d + layers * block + 2 * d + d * train.VOCAB_SIZE + train.VOCAB_SIZE
    assert sum(p.size for p in net.trainable_params()) == expected


def test_select_optimizers_by_name_and_lists_the_missing():
    names, missing = train.select_optimizers("all")
    assert names + missing and names + missing == [n for n in train.DEFAULT_OPTIMIZERS if n in names + missing]
    assert set(names + missing) == set(train.DEFAULT_OPTIMIZERS)
    for name in missing:  # only ms_optim classes this build lacks can be missing
        assert name.startswith("ms_optim.") and getattr(ms_optim, name.split(".")[1].split("-")[0], None) is None
    assert train.select_optimizers("NN.ADAM, ms_optim.came") == (["nn.Adam", "ms_optim.Came"], [])
    with pytest.raises(ValueError, match="unknown optimizer 'Adamw'"):
        train.select_optimizers("nn.Adam,Adamw")


def test_progress_line_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm now raises ImportError
    bar = train.Progress("run", 4)
    for i in range(4):
        bar.update(loss=f"{i}.000")
    bar.close()
    out = capsys.readouterr().out
    assert "run" in out and "4/4" in out and "loss 3.000" in out


def test_two_step_run_writes_the_table(tmp_path, capsys):
    """nn.Adam and ms_optim.Adam start from the same weights and see the same batches: same validation loss;
    ms_optim's amsgrad brings nn.Adam's amsgrad into the table, step time and state only."""
    out = tmp_path / "out"
    rc = train.main(["--quick", "--steps", "2", "--optimizers", "nn.Adam,ms_optim.Adam,ms_optim.Adam-amsgrad",
                     "--out", str(out), "--timing-rounds", "1", "--no-progress"])
    assert rc == 0
    with open(out / "train.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["optimizer"] for r in rows] == ["nn.Adam", "ms_optim.Adam", "ms_optim.Adam-amsgrad",
                                              "nn.Adam-amsgrad"]
    assert [r["implementation"] for r in rows] == ["MindSpore", "fused", "fused", "MindSpore"]
    losses = [float(r["val_loss"]) for r in rows[:3]]
    assert all(math.isfinite(v) and v < math.log(train.VOCAB_SIZE) + 0.5 for v in losses)
    assert abs(losses[0] - losses[1]) < 1e-3
    assert rows[3]["steps"] == "0" and rows[3]["val_loss"] == ""
    assert all(float(r["opt_step_ms"]) > 0 for r in rows)
    assert [float(r["state_bytes_per_param"]) for r in rows] == [8.0, 8.0, 12.0, 12.0]
    with open(out / "train_curves.csv", encoding="utf-8") as f:
        curves = list(csv.DictReader(f))
    assert [(c["optimizer"], c["step"]) for c in curves] == [
        (name, step) for name in ("nn.Adam", "ms_optim.Adam", "ms_optim.Adam-amsgrad") for step in ("1", "2")]
    printed = capsys.readouterr().out
    assert "val loss" in printed and "ms_optim.Adam" in printed
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert not (out / "train.png").exists() and "matplotlib is not installed" in printed
    else:
        assert (out / "train.png").stat().st_size > 10000


@pytest.mark.parametrize("flag", ["--steps", "--batch-size", "--eval-every", "--timing-rounds"])
def test_zero_or_negative_counts_are_refused(flag, capsys):
    """0 is refused, not taken as "use the default" (a falsy 0 silently ran 100 steps)."""
    with pytest.raises(SystemExit) as info:
        train.main([flag, "0", "--out", os.devnull])
    assert info.value.code == 2 and f"{flag} must be positive, but got 0" in capsys.readouterr().err
