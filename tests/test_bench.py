"""`python -m ms_optim bench` runs end to end on tiny sizes (its figures are not checked: speed is shown by the
benchmark itself, never by a timed test), and its memory probe turns per-round times into per-round bounds."""
import statistics
import subprocess
import sys

from ms_optim import bench


def test_bench_smoke_runs_every_section():
    result = subprocess.run(
        [sys.executable, "-m", "ms_optim", "bench", "--elements", "2**16", "--steps", "3", "--warmup", "1",
         "--bandwidth-elements", "2**20", "--skip-compile", "--came-shape", "64", "128", "--came-matrices", "2"],
        capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for heading in ("Optimizer step:", "Adam on a model's many small tensors:", "CAME:", "AdaBelief:", "Adagrad:",
                    "Targets:"):
        assert heading in out, out
    assert "memory probe:" in out
    for row in ("ms_optim.Adagrad ", "ms_optim.Adagrad8bit", "nn.Adagrad", "ms_optim.AdaBelief", "ms_optim.Came"):
        assert row in out, out


class _Clock:
    """A fake optimizer whose step takes the time the test says, through a shared fake clock; it logs its calls."""

    def __init__(self, name, clock, log, costs):
        self.name, self.clock, self.log, self.costs, self.calls = name, clock, log, list(costs), 0

    def __call__(self, grads):
        self.clock[0] += self.costs[min(self.calls, len(self.costs) - 1)]
        self.calls += 1
        self.log.append(self.name)


def test_round_robin_pairs_rounds_and_windows(monkeypatch):
    """Round r of a group holds step r of each entry; with two groups the rounds alternate in windows, each
    opening with one untimed step per entry, and each group's back-to-back calls follow one untimed step of
    each of its entries; the probe's per-round bandwidth sets each round's bound."""
    clock, log = [0.0], []
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock[0])
    warmup, steps, window = 1, 4, 2
    # per entry: warm-up, then per window one untimed opening step and `window` timed ones, then settle and b2b
    opt = _Clock("opt", clock, log, [9.0, 9.0, 1.0, 2.0, 9.0, 3.0, 4.0] + [1.0] * (steps + 1))
    peer = _Clock("peer", clock, log, [9.0, 9.0, 5.0, 6.0, 9.0, 7.0, 8.0] + [1.0] * (steps + 1))

    class Probe(bench._MemoryProbe):
        def __init__(self):
            self.elements = 100
            self._tick = _Clock("probe", clock, log, [9.0, 9.0, 0.5, 1.0, 9.0, 0.5, 1.0] + [1.0] * (steps + 1))

        def __call__(self, grads):
            self._tick(grads)

    probe = Probe()
    timed = bench._time_round_robin([[("opt", opt, bench.no_wait), probe.entry()], [("peer", peer, bench.no_wait)]], None, steps, warmup,
                                    window=window)
    window0 = ["opt", "probe", "opt", "probe", "probe", "opt"]  # opening step, round 0, round 1 (rotated)
    window1 = ["opt", "probe", "opt", "probe", "probe", "opt"]
    b2b = ["opt", "probe"] + ["opt"] * steps + ["probe"] * steps
    assert log == (["opt", "probe", "peer"]  # warm-up
                   + window0 + ["peer"] * 3 + window1 + ["peer"] * 3
                   + b2b + ["peer"] + ["peer"] * steps)
    assert timed["opt"][2] == [1.0, 2.0, 3.0, 4.0]
    assert timed["peer"][2] == [5.0, 6.0, 7.0, 8.0]
    assert timed["opt"][0] == statistics.median([1.0, 2.0, 3.0, 4.0])
    probe_rounds = timed[probe.NAME][2]
    assert probe_rounds == [0.5, 1.0, 0.5, 1.0]
    # a step moving 24 B/element of the probe's 100 elements: bound = 2 x the probe's time in that round
    vs_bound, bound = probe.vs_bound(timed["opt"][2], probe_rounds, 24 * 100)
    assert vs_bound == statistics.median([1.0 / 1.0, 2.0 / 2.0, 3.0 / 1.0, 4.0 / 2.0])
    assert bound == statistics.median([1.0, 2.0, 1.0, 2.0])
    assert probe.bandwidth(probe_rounds) == statistics.median([12 * 100 / t for t in probe_rounds])
