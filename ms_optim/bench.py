"""``python -m ms_optim bench``: step time of ms_optim optimizers vs MindSpore's, next to the memory bound.

Method, all in one run:

0. Bounds: each section times a memory probe among its optimizers, once per round: the native in-place triad
   ``a = a + s * c`` of ``ops/cpu/stream.cc`` on ``--elements`` float32 (12 B/element). A step's bound is the bytes
   it moves at the bandwidth the probe moved in the same round, and "vs bound" is the median over rounds of step
   time / that round's bound (why: the _MemoryProbe docstring). The bandwidths of 1. are printed for reference.
1. Reference bandwidth ``B``, before the runs (not used by the bounds since the probe of 0.), measured in this
   process with native STREAM-style triads (``ops/cpu/stream.cc``,
   built like the kernels: same compiler flags, SIMD clones, worker pool and ``--threads``) on float32 arrays of
   2^25 elements, best of 7: ``a = b + s * c`` counted at 16 B/element (b, c read; a written, and read first by
   the write-allocate that ordinary stores cause) and the in-place ``a = a + s * c`` at 12 B/element (a, c read;
   a written: the kernels' own pattern, every written line read first). ``B`` is the larger of the two. The
   numpy triad below is kept as a cross-check only (it reads low: two passes, Python threads).
   numpy cross-check: a STREAM-style triad ``a = b + s * c`` in numpy on
   three float32 arrays of 2^25 elements, on ``--threads`` Python threads (numpy releases the GIL) each on
   its own contiguous slice, as the kernels split their work; the best of 7 repetitions is kept. numpy has no
   fused triad, so it runs as ``np.multiply(c, s, out=a); np.add(a, b, out=a)`` and is counted at the
   traffic that really makes: 24 B/element (pass 1 reads c and writes a, with the write-allocate read of a
   that ordinary stores cause; pass 2 reads a and b and writes a). Counting without the write-allocate read
   (20 B) would give a lower B, so it is printed as such. A cache-blocked triad
   (16 B/element of memory traffic) is printed as a cross-check; its per-block Python calls make it read low.
2. ``--elements`` float32 elements split into ``--tensors`` Parameters; each optimizer is called directly in
   GRAPH_MODE with one fixed tuple of gradient Tensors (the same tuple for all). All the Adam variants (and the
   memory probe) are built up front and timed round-robin, one step of each per round, so load drift on a shared
   host hits all alike.
   A step is the call, as torch's is: on CPU a MindSpore call returns with its update done (measured: a numpy
   view of a parameter holds the new values as the call returns, and a read right after waits for nothing). A
   read after every step (``asnumpy()`` of a parameter, used before) added 0.12 - 0.3 ms of MindSpore's
   synchronization per step that torch's step does not pay (the same for a 1-element parameter). The "b2b"
   column is the guard: ``--steps`` calls back to back, then that read, a throughput no early return can hide.
   Then the same Adam pairs and ms_optim.AdaBelief on the parameter shapes of the main job's quick model (30
   tensors, 430,178 elements), where MindSpore's cost per kernel launch, not memory, sets the pace (ms_optim:
   one kernel call per step; nn.Adam: one per parameter); no bound there.
3. Bound: ``28 B/element`` for dense Adam (read param, m, v, grad; write param, m, v) and ``36 B/element``
   with amsgrad (plus vhat read and written), at each round's probe bandwidth (0.).
4. Compile time of the first step of ``nn.TrainOneStepCell`` on an ``nn.SequentialCell`` of small ``nn.Dense``
   (``--compile-params``: 200 and 1,000 parameters): first call minus a steady-state step. At 200 parameters every
   class against its counterpart (Adam and AdaBelief / nn.Adam, Adagrad / nn.Adagrad, Came / nn.AdaFactor), at
   1,000 Adam / nn.Adam (``--compile-all-at`` for more). Each measurement runs in its own subprocess, the
   optimizers alternately, so that no in-process cache (parsed functions, resolved primitives, kernel
   registrations) built by one helps the other; each subprocess first compiles a tiny unrelated graph so one-time
   backend start-up is charged to none. The median over repetitions is kept.
5. CAME: ``--came-matrices`` float32 matrices of ``--came-shape`` (default 8 of 1024 x 2048), ms_optim.Came vs
   nn.AdaFactor (the built-in factored optimizer, with a fixed learning rate like the others) vs ms_optim.Adam,
   timed round-robin as in 2., plus optimizer-state bytes per trained parameter element.
6. AdaBelief: ms_optim.AdaBelief next to ms_optim.Adam on the case of 2. (same elements and tensors, both 28
   B/element: read param, m, s, grad; write param, m, s), timed round-robin, with rectify=False so that every
   timed step runs the adaptive rule (with rectify the first 5 steps are SGD steps, which move the same bytes).
   Peers on the same sizes when importable: labml's AdaBelief (flags set as meant, see docs/adabelief.md) and the
   authors' adabelief-pytorch, both torch on --threads CPU threads, timed in windows of 2 rounds of their own
   (with the probe), alternating with the MindSpore pair's windows: torch's OpenMP threads keep spinning after a
   step and slowed whichever MindSpore step came next.
7. Adagrad: the ``--elements`` / ``--tensors`` case of 2., ms_optim.Adagrad (float32 state), ms_optim.Adagrad8bit
   (block-wise 8-bit state), nn.Adagrad and, when importable, torch.optim.Adagrad (fused=True, on CPU tensors) and
   bitsandbytes' Adagrad8bit (its CPU backend), timed round-robin as in 2. (the torch optimizers on their own fixed
   gradients, in windows of their own alternating with the MindSpore ones', as in 6.; torch gets ``--threads``
   threads). Bounds: 20 B/element for float32 state (read p, g, s; write p, s), 14 B/element for 8-bit state (read
   p, g, code; write p, code; absmax adds 8/256), at each round's probe bandwidth; plus state bytes per parameter
   element.
"""
import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time

DENSE_BYTES = 28  # per element: read param, m, v, grad; write param, m, v (4 B each)
AMSGRAD_BYTES = 36  # plus vhat read and written
INCREMENT_BYTES = 24  # the offloaded increment: read m, v, grad; write m, v, delta (a fresh buffer: +4 to fill it)
_STEP_BYTES = {"dense": DENSE_BYTES, "amsgrad": AMSGRAD_BYTES, "increment": INCREMENT_BYTES}

TARGET_DENSE_VS_NN = 1.0
TARGET_DENSE_VS_BOUND = 1.3
TARGET_AMSGRAD_VS_NN = 0.35
TARGET_COMPILE_VS_NN = 1.1
TARGET_CAME_VS_ADAM = 1.2
TARGET_OFFLOAD_VS_INPLACE = 1.2
TARGET_CAME_VS_ADAFACTOR = 0.3
ADAM_STATE_BYTES = 8  # m and v, float32
TARGET_CAME_STATE_VS_ADAM = 0.6  # "well under Adam's": at most 60 % of its state bytes
TARGET_ADABELIEF_VS_ADAM = 1.1
TARGET_ADABELIEF_VS_BOUND = 1.3
ADAGRAD_BYTES = 20  # per element, float32 state: read param, grad, sum; write param, sum
ADAGRAD8_BYTES = 14  # 8-bit state: read param, grad, code; write param, code (absmax: 8 B per 256 elements)
TARGET_ADAGRAD_VS_BOUND = 1.2
TARGET_ADAGRAD_VS_TORCH = 1.1
TARGET_ADAGRAD8_VS_BOUND = 1.3
TARGET_ADAGRAD8_VS_BNB = 1 / 8  # at least 8x faster than bitsandbytes' CPU Adagrad8bit
TARGET_ADAGRAD8_STATE = 1.02  # bytes per parameter element


# ---------------------------------------------------------------------------------------------- bandwidth
def _run_threads(threads, fn):
    workers = [threading.Thread(target=fn, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def measure_bandwidth(threads, elements=1 << 25, reps=7, block=1 << 18):
    """Best-of-``reps`` bandwidths in GB/s (1e9 B/s) of STREAM-style triads ``a = b + s * c``.

    ``two_pass24`` (used as B): ``np.multiply(c, s, out=a); np.add(a, b, out=a)`` over each thread's slice,
    counted as the memory traffic it makes: pass 1 reads c and writes a (a write-allocate read of a
    first, numpy using ordinary stores), pass 2 reads a and b and writes a: 24 B/element. ``two_pass20`` is the
    same time counted without the write-allocate read (20 B), ``blocked16`` a cache-blocked triad (the product
    in an L2-resident temporary) counted at 16 B/element (b, c read, a written and write-allocated); it pays
    one Python-level ufunc call per block, so it tends to read lower.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a = np.zeros(elements, np.float32)
    b = rng.standard_normal(elements, dtype=np.float32)
    c = rng.standard_normal(elements, dtype=np.float32)
    s = np.float32(3.0)
    per = -(-elements // threads)
    tmps = [np.empty(block, np.float32) for _ in range(threads)]

    def two_pass(t):
        sl = slice(t * per, min(elements, (t + 1) * per))
        np.multiply(c[sl], s, out=a[sl])
        np.add(a[sl], b[sl], out=a[sl])

    def blocked(t):
        tmp = tmps[t]
        for lo in range(t * per, min(elements, (t + 1) * per), block):
            hi = min(lo + block, (t + 1) * per, elements)
            np.multiply(c[lo:hi], s, out=tmp[:hi - lo])
            np.add(tmp[:hi - lo], b[lo:hi], out=a[lo:hi])

    def best(fn):
        times = []
        for _ in range(reps + 1):  # the first pass also faults the pages in
            t0 = time.perf_counter()
            _run_threads(threads, fn)
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    t_two = best(two_pass)
    t_blocked = best(blocked)
    return {"two_pass24": 24 * elements / t_two / 1e9, "two_pass20": 20 * elements / t_two / 1e9,
            "blocked16": 16 * elements / t_blocked / 1e9}


def measure_native_bandwidth(elements=1 << 25, reps=7):
    """Best-of-``reps`` bandwidths in GB/s of the native triads of ``ops/cpu/stream.cc`` (the kernels' compiler
    flags, SIMD clones and thread pool, MS_OPTIM_NUM_THREADS threads): ``triad16`` (a = b + s*c at 16 B/element,
    write-allocate counted), ``triad12`` (the same time at STREAM's 12 B/element), ``inplace12`` (a = a + s*c at
    12 B/element), and the thread count the library uses."""
    import ctypes

    import numpy as np

    from ms_optim.kernels import _build

    lib = ctypes.CDLL(_build.locate_library("stream"))
    ptr = lambda x: x.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    lib.MsOptimStreamTriad.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_float, ctypes.c_int64]
    lib.MsOptimStreamTriadInPlace.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_float, ctypes.c_int64]
    rng = np.random.default_rng(0)
    a = np.zeros(elements, np.float32)
    b = rng.standard_normal(elements, dtype=np.float32)
    c = rng.standard_normal(elements, dtype=np.float32)

    def best(fn):
        times = []
        for _ in range(reps + 1):  # the first pass also faults the pages in
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    t_triad = best(lambda: lib.MsOptimStreamTriad(ptr(a), ptr(b), ptr(c), 3.0, elements))
    signs = iter([1.0, -1.0] * (reps + 1))  # keep a bounded: add and take away
    t_inplace = best(lambda: lib.MsOptimStreamTriadInPlace(ptr(a), ptr(c), next(signs), elements))
    return {"triad16": 16 * elements / t_triad / 1e9, "triad12": 12 * elements / t_triad / 1e9,
            "inplace12": 12 * elements / t_inplace / 1e9, "threads": lib.MsOptimStreamThreads()}


# ------------------------------------------------------------------------------------------ MindSpore setup
def _setup_mindspore(threads):
    """GRAPH_MODE on CPU with ``threads`` threads for MindSpore's own CPU kernels."""
    import mindspore as ms

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:  # the MindSpore >= 2.5 spelling; runtime_num_threads is the deprecated one
        ms.device_context.cpu.op_tuning.threads_num(threads)
    except (AttributeError, RuntimeError, TypeError):
        try:
            ms.set_context(runtime_num_threads=threads)
        except (ValueError, TypeError):
            pass
    return ms


# ------------------------------------------------------------------------------------------------ step time
def bench_steps(args, ms):
    """({name: (kind, median synced step seconds, back-to-back seconds per step, vs bound, bound seconds)}, B)
    for the Adam variants, B the median bandwidth (GB/s) of the memory probe timed among them.

    All are built first (each with its own parameters, all fed the same gradient tuple) and then timed
    round-robin, one step of each per round in a rotating order, so that drifts in machine load (this may be
    a shared host) hit every variant alike instead of whichever happened to run at a bad moment.
    """
    import numpy as np
    from mindspore import Parameter, Tensor, nn

    import ms_optim

    variants = (
        ("ms_optim.Adam", "dense", lambda p: ms_optim.Adam(p, learning_rate=1e-3)),
        ("nn.Adam", "dense", lambda p: nn.Adam(p, learning_rate=1e-3)),
        ("ms_optim.Adam amsgrad", "amsgrad", lambda p: ms_optim.Adam(p, learning_rate=1e-3, use_amsgrad=True)),
        ("nn.Adam amsgrad", "amsgrad", lambda p: nn.Adam(p, learning_rate=1e-3, use_amsgrad=True)),
        ("ms_optim.Adam increment", "dense", _increment_layout_adam),
        ("increment kernel alone", "increment", _increment_kernel_only),
    )
    per = args.elements // args.tensors
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(per, dtype=np.float32) * 0.1 for _ in range(args.tensors)]
    grads = tuple(Tensor(rng.standard_normal(per, dtype=np.float32) * 0.01) for _ in range(args.tensors))
    built = []
    for i, (name, kind, make) in enumerate(variants):
        params = [Parameter(Tensor(w.copy()), name=f"bench{i}_w{j}") for j, w in enumerate(init)]
        opt = make(params)
        # the back-to-back check reads what the step writes last: the parameter, or (kernel alone) the state
        built.append((name, kind, opt, opt.v[-1] if kind == "increment" else params[-1]))
    del init

    kinds = {name: kind for name, kind, _, _ in built}
    timed, bandwidths = _time_with_probe(
        [(name, opt, last.asnumpy) for name, _, opt, last in built], [], grads, args, args.elements,
        lambda name: _STEP_BYTES[kinds[name]] * args.elements)
    results = {name: (kinds[name], *timed[name]) for name in kinds}
    del built
    gc.collect()
    return results, bandwidths[_MemoryProbe.NAME]


def bench_adam_model_shapes(args):
    """(tensors, elements, {name: (median step seconds, back-to-back seconds per step)}) for ms_optim.Adam and
    nn.Adam (plain and amsgrad), ms_optim.AdaBelief and ms_optim.Came on the parameter shapes of the main job's quick model (many
    small tensors), timed round-robin as in bench_steps. There a step is mostly MindSpore's cost per kernel launch,
    not memory traffic: ms_optim's optimizers update every parameter in one kernel call, nn.Adam launches one
    kernel per parameter."""
    import numpy as np
    from mindspore import Parameter, Tensor, nn

    import ms_optim
    from ms_optim import train

    shapes = [p.shape for p in train.build_model(*train.MODEL_SIZES["quick"]).trainable_params()]
    variants = (
        ("ms_optim.Adam", lambda p: ms_optim.Adam(p, learning_rate=1e-3)),
        ("nn.Adam", lambda p: nn.Adam(p, learning_rate=1e-3)),
        # the same kernel called once per parameter (use_lazy does that; with dense gradients it is plain Adam)
        ("ms_optim.Adam per-parameter", lambda p: ms_optim.Adam(p, learning_rate=1e-3, use_lazy=True)),
        ("ms_optim.Adam amsgrad", lambda p: ms_optim.Adam(p, learning_rate=1e-3, use_amsgrad=True)),
        ("nn.Adam amsgrad", lambda p: nn.Adam(p, learning_rate=1e-3, use_amsgrad=True)),
        ("ms_optim.AdaBelief", lambda p: ms_optim.AdaBelief(p, lr=1e-3, rectify=False)),
        ("ms_optim.Came", lambda p: ms_optim.Came(p, learning_rate=1e-3)),
    )
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in shapes]
    grads = tuple(Tensor(rng.standard_normal(s).astype(np.float32) * 0.01) for s in shapes)
    entries = []
    for i, (name, make) in enumerate(variants):
        params = [Parameter(Tensor(w.copy()), name=f"small{i}_w{j}") for j, w in enumerate(init)]
        entries.append((name, make(params), params[-1].asnumpy))
    timed = _time_round_robin([entries], grads, args.steps, args.warmup)
    return len(shapes), sum(w.size for w in init), {name: (t, batch) for name, (t, batch, _) in timed.items()}


def no_wait():
    """The final wait of what returns only when done (torch's CPU step, the memory probe)."""


def _time_round_robin(groups, grads, steps, warmup, window=2):
    """{name: (median step seconds, back-to-back seconds per step, list of per-round seconds)} for the
    (name, optimizer, wait) entries of ``groups`` (lists of entries): a step is the call ``optimizer(grads)``;
    ``wait()`` ends the back-to-back cross-check (for a MindSpore optimizer: its last parameter's ``asnumpy``).

    Each round runs one step of every entry of a group, in a rotating order, so that drifts in machine load hit
    every entry alike. With several groups (the MindSpore optimizers, then the torch peers: torch's OpenMP threads
    keep spinning for milliseconds after a step and slowed whichever MindSpore step came next), the rounds run in
    windows of ``window`` rounds, group after group in turn, each window opening with one untimed step of each
    entry (while the other group's threads settle), so that slower drifts reach every group too (2 rounds: with
    windows of 5, one run's ratio to torch read 1.61 while its two groups' memory probes read 62 and 96 GB/s; three
    runs with windows of 2 read 1.06 - 1.08). Round ``r`` of
    one group holds step ``r`` of each of its entries: a _MemoryProbe entry gives each round's bandwidth.
    """
    def step(opt):
        return opt(grads)  # a MindSpore call on CPU returns with its update done (module docstring, 2.)

    for group in groups:
        for _ in range(warmup):
            for _, opt, _ in group:
                step(opt)
    times = {name: [] for group in groups for name, _, _ in group}
    done = [0] * len(groups)
    while any(d < steps for d in done):
        for g, group in enumerate(groups):
            rounds = min(window, steps - done[g]) if len(groups) > 1 else steps
            if rounds <= 0:
                continue
            if len(groups) > 1:
                for _, opt, _ in group:
                    step(opt)
            for r in range(done[g], done[g] + rounds):
                for k in range(len(group)):
                    name, opt, _ = group[(r + k) % len(group)]
                    t0 = time.perf_counter()
                    step(opt)
                    times[name].append(time.perf_counter() - t0)
            done[g] += rounds
    results = {}
    for group in groups:
        if len(groups) > 1:  # as a window opens: the previous group's threads settle during untimed steps
            for _, opt, _ in group:
                step(opt)
        for name, opt, wait in group:
            # Cross-check: calls back to back with one wait at the end, a throughput no early return can hide.
            t0 = time.perf_counter()
            for _ in range(steps):
                opt(grads)
            wait()
            results[name] = (statistics.median(times[name]), (time.perf_counter() - t0) / steps, times[name])
    return results


class _MemoryProbe:
    """The native in-place triad ``a = a + s * c`` of ops/cpu/stream.cc (the kernels' compiler flags, worker pool
    and threads) over ``elements`` float32, timed as one more entry of a round robin: each round's memory bound
    then uses the bandwidth of that very moment. On the shared hosts measured, bandwidth moved between about 38 and
    65 GB/s from one minute to the next, so a bound from a bandwidth measured once, before, mixed two moments."""

    BYTES = 12  # per element: a and c read, a written (in place: no write-allocate read)
    NAME = "memory probe"

    def __init__(self, elements):
        import ctypes

        import numpy as np

        from ms_optim.kernels import _build

        self.elements = elements
        self._lib = ctypes.CDLL(_build.locate_library("stream"))
        self._lib.MsOptimStreamTriadInPlace.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_float, ctypes.c_int64]
        self._a = np.zeros(elements, np.float32)
        self._c = np.random.default_rng(0).standard_normal(elements, dtype=np.float32)
        self._sign = 1.0

    def __call__(self, grads):
        self._sign = -self._sign  # add and take away: a stays bounded
        self._lib.MsOptimStreamTriadInPlace(self._a.ctypes.data, self._c.ctypes.data, self._sign, self.elements)

    def entry(self, name=NAME):
        return (name, self, no_wait)

    def bandwidth(self, rounds):
        """Median over rounds of the bandwidth (B/s) the probe moved."""
        return statistics.median(self.BYTES * self.elements / t for t in rounds)

    def vs_bound(self, step_rounds, probe_rounds, nbytes):
        """(median over rounds of step time / that round's bound, median bound seconds) for steps moving
        ``nbytes`` bytes; a round's bound is nbytes at the bandwidth the probe moved in that round."""
        bounds = [nbytes * tp / (self.BYTES * self.elements) for tp in probe_rounds]
        return statistics.median(t / b for t, b in zip(step_rounds, bounds)), statistics.median(bounds)


def _increment_layout_adam(params):
    """ms_optim.Adam in the layout use_offload takes on accelerator targets: the kernel returns the parameter
    increment and AssignAdd applies it (40 B/element instead of 28 in place). Forced here, on CPU, to show why
    kernels write in place (docs/kernels.md)."""
    import ms_optim
    from ms_optim import adam, kernels

    opt = ms_optim.Adam(params, learning_rate=1e-3, use_offload=True)
    opt._offload_delta, opt._one_call = True, False
    opt._update_key = kernels.register_update_fns(
        f"bench-adam-increment-layout-{len(params)}",
        lambda: adam._select_update_fns("fused", False, False, False, True, len(params)))
    return opt


def _increment_kernel_only(params):
    """The host's part of ms_optim.Adam(use_offload=True) on an accelerator target: the one kernel call that updates
    the host-resident moments and returns every parameter's increment (the AssignAdd of each increment runs on the
    device there, next to its parameter). Timed as a step: a Cell calling that kernel and returning the increments."""
    from mindspore import nn

    from ms_optim import adam
    from ms_optim.kernels import UPDATE_FNS

    opt = _increment_layout_adam(params)

    class IncrementKernel(nn.Cell):
        def __init__(self):
            super().__init__()
            self.m, self.v = opt.moment1, opt.moment2  # self.v: read by the bench's back-to-back check
            self.scalars = (opt.beta1_power, opt.beta2_power, opt.learning_rate, opt.beta1, opt.beta2, opt.eps)
            self.key = opt._update_key

        def construct(self, grads):
            return UPDATE_FNS[self.key][adam._DELTA_ALL](self.m, self.v, grads, *self.scalars)

    return IncrementKernel()


def bench_came(args):
    """{name: (median step s, back-to-back s, state bytes per parameter element)}: ms_optim.Came, nn.AdaFactor
    and ms_optim.Adam on --came-matrices float32 matrices of --came-shape, timed round-robin."""
    import numpy as np
    from mindspore import Parameter, Tensor, nn

    import ms_optim

    rows, cols = args.came_shape
    variants = (
        ("ms_optim.Came", lambda p: ms_optim.Came(p, learning_rate=1e-3)),
        ("nn.AdaFactor", lambda p: nn.AdaFactor(p, learning_rate=1e-3, relative_step=False, scale_parameter=False,
                                                warmup_init=False)),
        ("ms_optim.Adam", lambda p: ms_optim.Adam(p, learning_rate=1e-3)),
    )
    rng = np.random.default_rng(2)
    init = [rng.standard_normal((rows, cols), dtype=np.float32) * 0.1 for _ in range(args.came_matrices)]
    grads = tuple(Tensor(rng.standard_normal((rows, cols), dtype=np.float32) * 0.01)
                  for _ in range(args.came_matrices))
    built, state_bytes = [], {}
    for i, (name, make) in enumerate(variants):
        params = [Parameter(Tensor(w.copy()), name=f"came{i}_w{j}") for j, w in enumerate(init)]
        opt = make(params)
        own = {id(p) for p in params}
        state = [p for p in opt.get_parameters()
                 if id(p) not in own and p.name not in ("global_step", "learning_rate")]
        state_bytes[name] = sum(p.size * p.itemsize for p in state) / (len(params) * rows * cols)
        built.append((name, opt, params[-1].asnumpy))
    del init
    timed = _time_round_robin([built], grads, args.steps, args.warmup)
    return {name: (*timed[name][:2], state_bytes[name]) for name, _, _ in built}


TORCH_PROBE = "memory probe (torch windows)"


def _time_with_probe(entries, torch_entries, grads, args, elements, nbytes):
    """Times ``entries`` (MindSpore optimizers) round-robin with a memory probe of ``elements`` float32, and the
    ``torch_entries`` (if any) in windows of their own with it (never interleaved with MindSpore's: spinning
    OpenMP threads). Returns ({name: (median step s, back-to-back s, vs bound, bound s)}, {probe entry name: median
    bandwidth in GB/s}), each step's bound from ``nbytes(name)`` bytes at its own group's probe rounds."""
    probe = _MemoryProbe(elements)
    groups = [entries + [probe.entry()]]
    if torch_entries:
        groups.append(torch_entries + [probe.entry(TORCH_PROBE)])
    timed = _time_round_robin(groups, grads, args.steps, args.warmup)
    results, bandwidths = {}, {}
    for group in groups:
        probe_name = group[-1][0]
        probe_rounds = timed[probe_name][2]
        bandwidths[probe_name] = probe.bandwidth(probe_rounds) / 1e9
        for name, _, _ in group[:-1]:
            t, batch, rounds = timed[name]
            results[name] = (t, batch, *probe.vs_bound(rounds, probe_rounds, nbytes(name)))
    return results, bandwidths


def _print_probe(bandwidths):
    print("  (" + "; ".join(f"{name}: {gbs:.2f} GB/s" for name, gbs in bandwidths.items()) + ", medians over rounds)")

_PROBE_NOTE = ("bound = the bytes each step moves at the bandwidth the memory probe (the native in-place triad, "
               "timed in each round) moved in the same round, median probe bandwidth {B:.2f} GB/s")


class _TorchStep:
    """A torch optimizer behind the interface _time_round_robin times: call = one step (the gradients were set once
    on the parameters); nothing to wait for after it (torch CPU ops are synchronous)."""

    def __init__(self, opt):
        self.opt = opt

    def __call__(self, grads):
        return self.opt.step()


def _adabelief_torch_peers():
    """{name: make(params)} for the torch AdaBelief implementations that can be imported here."""
    peers = {}
    try:
        from labml_nn.optimizers import WeightDecay
        from labml_nn.optimizers.ada_belief import AdaBelief as LabmlAdaBelief
        from labml_nn.optimizers.radam import RAdam

        class AsMeant(LabmlAdaBelief):  # labml's constructor passes its flags by position into the wrong slots
            def __init__(self, params):
                RAdam.__init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-16, weight_decay=WeightDecay(),
                               optimized_update=False, amsgrad=False, degenerated_to_sgd=True, defaults={})
                self.rectify = False

        peers["labml AdaBelief (torch)"] = AsMeant
    except ImportError:
        pass
    try:
        from adabelief_pytorch import AdaBelief as AuthorsAdaBelief
        peers["adabelief-pytorch"] = lambda p: AuthorsAdaBelief(p, lr=1e-3, eps=1e-16, betas=(0.9, 0.999),
                                                                weight_decouple=True, rectify=False, print_change_log=False)
    except ImportError:
        pass
    return peers


def bench_adabelief(args):
    """{name: (median step s, back-to-back s, vs bound, bound s)}: ms_optim.AdaBelief, ms_optim.Adam and the
    importable torch peers on the case of bench_steps, timed round-robin (the torch peers in windows of their
    own, each group with the memory probe); and the names of the peers that could not be imported."""
    import numpy as np
    from mindspore import Parameter, Tensor

    import ms_optim

    per = args.elements // args.tensors
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(per, dtype=np.float32) * 0.1 for _ in range(args.tensors)]
    grad_arrays = [rng.standard_normal(per, dtype=np.float32) * 0.01 for _ in range(args.tensors)]
    grads = tuple(Tensor(g) for g in grad_arrays)
    built = []
    for i, (name, make) in enumerate((("ms_optim.AdaBelief", lambda p: ms_optim.AdaBelief(p, lr=1e-3, rectify=False)),
                                      ("ms_optim.Adam", lambda p: ms_optim.Adam(p, learning_rate=1e-3)))):
        params = [Parameter(Tensor(w.copy()), name=f"adabelief{i}_w{j}") for j, w in enumerate(init)]
        built.append((name, make(params), params[-1].asnumpy))
    torch_built = []
    peers = _adabelief_torch_peers()
    if peers:  # in windows of their own, never interleaved with the MindSpore pair (spinning OpenMP threads)
        import torch
        torch.set_num_threads(args.threads)
        for name, make in peers.items():
            params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in init]
            for p, g in zip(params, grad_arrays):
                p.grad = torch.from_numpy(g.copy())
            torch_built.append((name, _TorchStep(make(params)), no_wait))
    del init
    results, bandwidths = _time_with_probe(built, torch_built, grads, args, args.elements,
                                           lambda name: DENSE_BYTES * args.elements)
    del built, torch_built
    gc.collect()
    missing = [name for name in ("labml AdaBelief (torch)", "adabelief-pytorch") if name not in peers]
    return results, missing, bandwidths


def bench_adagrad(args):
    """{name: (median step s, back-to-back s, vs bound, bound s, state bytes per element)}: the MindSpore
    optimizers round-robin with the memory probe, the torch peers in windows of their own with it."""
    import numpy as np
    from mindspore import Parameter, Tensor, nn

    import ms_optim
    from ms_optim.train import state_bytes

    per = args.elements // args.tensors
    n = per * args.tensors
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(per, dtype=np.float32) * 0.1 for _ in range(args.tensors)]
    grad_arrays = [rng.standard_normal(per, dtype=np.float32) * 0.01 for _ in range(args.tensors)]
    grads = tuple(Tensor(g) for g in grad_arrays)
    variants = (
        ("ms_optim.Adagrad", ADAGRAD_BYTES, lambda p: ms_optim.Adagrad(p, lr=1e-2)),
        ("ms_optim.Adagrad8bit", ADAGRAD8_BYTES, lambda p: ms_optim.Adagrad8bit(p, lr=1e-2)),
        ("nn.Adagrad", ADAGRAD_BYTES, lambda p: nn.Adagrad(p, learning_rate=1e-2)),
    )
    built, info = [], {}
    for i, (name, nbytes, make) in enumerate(variants):
        params = [Parameter(Tensor(w.copy()), name=f"adagrad{i}_w{j}") for j, w in enumerate(init)]
        opt = make(params)
        info[name] = (nbytes, state_bytes(opt, params) / n)
        built.append((name, opt, params[-1].asnumpy))
    skipped = {}
    try:
        import torch
    except ImportError as err:
        torch = None
        skipped["torch.optim.Adagrad fused"] = f"torch not importable: {err}"
        skipped["bitsandbytes Adagrad8bit"] = f"torch not importable: {err}"
    torch_built = []
    if torch is not None:
        torch.set_num_threads(args.threads)

        def torch_params():
            params = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in init]
            for p, g in zip(params, grad_arrays):
                p.grad = torch.from_numpy(g.copy())
            return params

        def add_torch(name, nbytes, make):
            params = torch_params()
            opt = make(params)
            opt.step()  # creates the state
            state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values()
                        if torch.is_tensor(t) and t.numel() > 1)
            info[name] = (nbytes, state / n)
            torch_built.append((name, _TorchStep(opt), no_wait))

        try:
            add_torch("torch.optim.Adagrad fused", ADAGRAD_BYTES,
                      lambda p: torch.optim.Adagrad(p, lr=1e-2, fused=True))
        except (RuntimeError, ValueError, TypeError) as err:
            skipped["torch.optim.Adagrad fused"] = f"fused=True refused: {err}"
        try:
            import bitsandbytes as bnb
            add_torch("bitsandbytes Adagrad8bit", ADAGRAD8_BYTES, lambda p: bnb.optim.Adagrad8bit(p, lr=1e-2))
        except ImportError as err:
            skipped["bitsandbytes Adagrad8bit"] = f"bitsandbytes not importable: {err}"
    del init
    timed, bandwidths = _time_with_probe(built, torch_built, grads, args, n, lambda name: info[name][0] * n)
    results = {name: (*timed[name], info[name][1]) for name in timed}
    del built, torch_built
    gc.collect()
    return results, skipped, bandwidths


# --------------------------------------------------------------------------------------------- compile time
# Each ms_optim class against its counterpart (the MindSpore optimizer it replaces or, for AdaBelief, which has
# none, nn.Adam, whose update it shares), by the names the compile workers build.
COMPILE_PAIRS = (("ms_optim.Adam", "nn.Adam"), ("ms_optim.AdaBelief", "nn.Adam"),
                 ("ms_optim.Adagrad", "nn.Adagrad"), ("ms_optim.Came", "nn.AdaFactor"))


def _compile_optimizer(which, params):
    from mindspore import nn

    import ms_optim
    makers = {
        "ms_optim.Adam": lambda: ms_optim.Adam(params, learning_rate=1e-3),
        "nn.Adam": lambda: nn.Adam(params, learning_rate=1e-3),
        "ms_optim.AdaBelief": lambda: ms_optim.AdaBelief(params, lr=1e-3),
        "ms_optim.Adagrad": lambda: ms_optim.Adagrad(params, lr=1e-2),
        "nn.Adagrad": lambda: nn.Adagrad(params, learning_rate=1e-2),
        "ms_optim.Came": lambda: ms_optim.Came(params, learning_rate=1e-3),
        "nn.AdaFactor": lambda: nn.AdaFactor(params, learning_rate=1e-3, relative_step=False, scale_parameter=False,
                                             warmup_init=False),
    }
    return makers[which]()


def _compile_worker(which, layers, width, threads):
    """Runs in a subprocess: first-step time minus steady step time for TrainOneStepCell(which optimizer)."""
    ms = _setup_mindspore(threads)
    import numpy as np
    from mindspore import Tensor, nn

    # 500 Dense layers in sequence nest deeper than MindSpore's default limit of 1000 calls (bench_compile gives
    # this process the stack that a deeper limit needs); the same for every optimizer.
    ms.set_recursion_limit(max(1000, 10 * layers))
    # One-time backend start-up, charged to neither optimizer: a tiny unrelated graph.
    warm = nn.Dense(2, 2)
    warm(Tensor(np.ones((1, 2), np.float32))).asnumpy()

    net = nn.SequentialCell([nn.Dense(width, width) for _ in range(layers)])
    params = net.trainable_params()
    opt = _compile_optimizer(which, params)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), opt)
    x = Tensor(np.ones((8, width), np.float32))
    y = Tensor(np.zeros((8, width), np.float32))
    t0 = time.perf_counter()
    step(x, y).asnumpy()
    first = time.perf_counter() - t0
    steady = []
    for _ in range(5):
        t0 = time.perf_counter()
        step(x, y).asnumpy()
        steady.append(time.perf_counter() - t0)
    steady = statistics.median(steady)
    print("MS_OPTIM_BENCH_RESULT " + json.dumps({"params": len(params), "first": first, "steady": steady,
                                                 "compile": first - steady}))
    return 0


def _large_stack():
    """In a compile worker before it starts: a main-thread stack of up to 1 GiB (or the hard limit), which
    MindSpore's deeper recursion limit needs (mindspore.set_recursion_limit)."""
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 1 << 30
    resource.setrlimit(resource.RLIMIT_STACK, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def bench_compile(args, layers, pairs):
    """{optimizer name: [worker results]} for the optimizers of ``pairs`` on ``layers`` Dense layers, each run in a
    fresh subprocess, ``--compile-repeats`` times, every pair's two alternating (drifts in machine load hit both
    alike); a counterpart shared by two pairs (nn.Adam) runs once per repeat."""
    env = dict(os.environ)
    repo_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = repo_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    runs = {name: [] for name in names}
    for _ in range(args.compile_repeats):
        for which in names:
            cmd = [sys.executable, "-m", "ms_optim.bench", "--_compile-worker", which, "--layers", str(layers),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False,
                                  preexec_fn=_large_stack)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MS_OPTIM_BENCH_RESULT ")]
            if proc.returncode != 0 or not line:
                raise RuntimeError(f"compile worker '{which}' failed (rc={proc.returncode}):\n"
                                   f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            runs[which].append(json.loads(line[-1].split(" ", 1)[1]))
    return runs


def _compile_section(args):
    """Runs and prints the compile measurements; returns [(label, ratio)] for the targets."""
    ratios = []
    for params in args.compile_params:
        layers = max(1, params // 2)
        pairs = COMPILE_PAIRS if params in args.compile_all_at else COMPILE_PAIRS[:1]
        runs = bench_compile(args, layers, pairs)
        n_params = runs[pairs[0][0]][0]["params"]
        print()
        print(f"First-step compile: TrainOneStepCell, {layers} x nn.Dense(16, 16) ({n_params} parameters); first "
              f"call minus a steady step; each run in a fresh subprocess, the optimizers alternating, median of "
              f"{args.compile_repeats}")
        med = {}
        for which, results in runs.items():
            comp = [r["compile"] for r in results]
            med[which] = statistics.median(comp)
            print(f"  {which:<20} compile {med[which]:7.2f} s  (runs: {', '.join(f'{c:.2f}' for c in comp)}; "
                  f"steady step {statistics.median(r['steady'] for r in results) * 1e3:.2f} ms)")
        for ours, theirs in pairs:
            ratio = med[ours] / med[theirs]
            print(f"  ratio {ours} / {theirs}: {ratio:.2f}x")
            ratios.append((f"{ours} / {theirs}, {n_params} params", ratio))
    return ratios


# --------------------------------------------------------------------------------------------------- report
def _int_expr(text):
    """An int written plainly or as ``base**exp`` (``2**24``)."""
    base, _, exp = text.partition("**")
    return int(base) ** int(exp) if exp else int(text)


def _verdict(ok):
    return "MET" if ok else "NOT MET"


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m ms_optim bench", description=__doc__.splitlines()[0],
        epilog="Quick smoke test (well under a minute): --elements 2**16 --steps 3 --bandwidth-elements 2**22 "
               "--compile-repeats 1 --compile-params 20")
    parser.add_argument("--elements", type=_int_expr, default=1 << 24,
                        help="float32 elements in all (an expression like 2**24 is accepted); default 2**24")
    parser.add_argument("--tensors", type=int, default=8, help="number of Parameters (default 8)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps, i.e. rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="threads for the kernels and numpy (default 2)")
    parser.add_argument("--bandwidth-elements", type=_int_expr,
                        default=1 << 25, help="elements per triad array (default 2**25)")
    parser.add_argument("--skip-compile", action="store_true", help="skip the compile-time measurement")
    parser.add_argument("--skip-came", action="store_true", help="skip the CAME comparison")
    parser.add_argument("--skip-adam", action="store_true", help="skip the Adam step comparison")
    parser.add_argument("--skip-adabelief", action="store_true", help="skip the AdaBelief comparison")
    parser.add_argument("--skip-adagrad", action="store_true", help="skip the Adagrad comparison")
    parser.add_argument("--came-shape", type=int, nargs=2, default=(1024, 2048), metavar=("ROWS", "COLS"),
                        help="shape of each CAME benchmark matrix (default 1024 2048)")
    parser.add_argument("--came-matrices", type=int, default=8, help="matrices in the CAME benchmark (default 8)")
    parser.add_argument("--compile-repeats", type=int, default=2,
                        help="fresh subprocesses per optimizer for compile time (default 2)")
    parser.add_argument("--compile-params", type=int, nargs="+", default=(200, 1000),
                        help="parameter counts of the compile model (Dense layers of 16 x 16: 2 parameters each; "
                             "default 200 1000)")
    parser.add_argument("--compile-all-at", type=int, nargs="*", default=(200,),
                        help="parameter counts at which every class is compiled against its counterpart; at the "
                             "others, Adam against nn.Adam only (default 200)")
    parser.add_argument("--layers", type=int, default=100, help=argparse.SUPPRESS)  # the compile worker's model
    parser.add_argument("--_compile-worker", dest="compile_worker",
                        choices=sorted({name for pair in COMPILE_PAIRS for name in pair}), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    # Read by the kernel library the first time a kernel runs; set before anything can load it.
    os.environ["MS_OPTIM_NUM_THREADS"] = str(args.threads)
    if args.compile_worker:
        return _compile_worker(args.compile_worker, args.layers, 16, args.threads)
    if args.elements % args.tensors:
        parser.error("--elements must be a multiple of --tensors")

    from ms_optim.kernels import _build

    for family in _build.FAMILIES:
        _build.locate_library(family)  # build the kernel libraries now if needed, outside every timing
    native = measure_native_bandwidth(args.bandwidth_elements)
    bw = measure_bandwidth(args.threads, args.bandwidth_elements)
    B = max(native["triad16"], native["inplace12"]) * 1e9
    ms = _setup_mindspore(args.threads)

    print(f"ms_optim bench: MindSpore {ms.__version__}, CPU, GRAPH_MODE, {args.threads} threads "
          f"(MS_OPTIM_NUM_THREADS and MindSpore CPU kernel threads), {len(os.sched_getaffinity(0))} CPUs available")
    print(f"Memory bandwidth, native triads (ops/cpu/stream.cc, kernel flags, {native['threads']} threads, "
          f"{args.bandwidth_elements} float32 elements per array, best of 7):")
    print(f"  a = b + s*c at 16 B/elem (write-allocate counted): {native['triad16']:.2f} GB/s "
          f"(at STREAM's 12 B/elem: {native['triad12']:.2f});  in place a = a + s*c at 12 B/elem: "
          f"{native['inplace12']:.2f} GB/s;  the larger: {B / 1e9:.2f} GB/s (once, before the runs; the bounds "
          f"below use the in-place triad timed in every round, the memory probe)")
    print(f"Cross-check, numpy (Python threads, 3 x {args.bandwidth_elements} float32 arrays, best of 7):")
    print(f"  triad a = b + s*c as np.multiply(c, s, out=a); np.add(a, b, out=a), counted at 24 B/elem "
          f"(c read, a write-allocated and written; a, b read, a written): {bw['two_pass24']:.2f} GB/s")
    print(f"  same run counted at 20 B/elem (no write-allocate): {bw['two_pass20']:.2f} GB/s;  cache-blocked "
          f"triad at 16 B/elem: {bw['blocked16']:.2f} GB/s")
    n = args.elements
    results, adam_B = ({}, None) if args.skip_adam else bench_steps(args, ms)
    if results:
        print()
        print(f"Optimizer step: {n} float32 elements in {args.tensors} tensors of {n // args.tensors}; median of "
              f"{args.steps} steps after {args.warmup} warm-up, variants interleaved, a step = the call (it returns "
              f"with the update done); {_PROBE_NOTE.format(B=adam_B)}")
        header = (f"  {'optimizer':<24}{'step ms':>9}{'b2b ms':>9}{'vs nn.Adam':>12}{'bound ms':>10}{'vs bound':>10}"
                  f"{'GB/s':>8}")
        print(header)
        print("  " + "-" * (len(header) - 2))
        ratios = {}
        for name, (kind, t, batch, vs_bound, bound) in results.items():
            ref = "nn.Adam amsgrad" if kind == "amsgrad" else "nn.Adam"
            nbytes = _STEP_BYTES[kind] * n
            vs_nn = t / results[ref][1]
            ratios[name] = (vs_nn, vs_bound)
            print(f"  {name:<24}{t * 1e3:>9.2f}{batch * 1e3:>9.2f}{vs_nn:>11.2f}x{bound * 1e3:>10.2f}"
                  f"{vs_bound:>9.2f}x{nbytes / t / 1e9:>8.2f}")
        print(f"  (b2b: {args.steps} calls back to back, then the last parameter read: per-step throughput that "
              f"no asynchronous return can hide; bound = {DENSE_BYTES} B/elem dense, {AMSGRAD_BYTES} B/elem amsgrad, "
              f"at each round's probe bandwidth; GB/s = those bytes over the step time; increment: "
              f"ms_optim.Adam(use_offload=True) as it runs on an accelerator target, one host kernel call returning "
              f"every parameter's increment, then AssignAdd, both on this CPU here (40 B/elem); increment kernel "
              f"alone: that host call alone, what the host does in an accelerator job ({INCREMENT_BYTES} B/elem; the "
              f"increments' buffers are fresh, so +4 B/elem to fill them), docs/adam.md)")
        tensors, elements, small = bench_adam_model_shapes(args)
        print()
        print(f"Adam on a model's many small tensors: the parameter shapes of the main job's quick model "
              f"({tensors} tensors, {elements} float32 elements); median of "
              f"{args.steps} steps after {args.warmup} warm-up, interleaved (MindSpore's cost per kernel launch, not "
              f"memory, sets the pace: ms_optim's Adam and AdaBelief (rectify=False) are one kernel call per step, "
              f"nn.Adam one per parameter; 'per-parameter': ms_optim.Adam's kernel called once per parameter, as "
              f"use_lazy=True does)")
        print(f"  {'optimizer':<24}{'step ms':>9}{'b2b ms':>9}{'vs nn.Adam':>12}")
        for name, (t, batch) in small.items():
            ref = "nn.Adam amsgrad" if "amsgrad" in name else "nn.Adam"  # AdaBelief, Came: against plain Adam
            print(f"  {name:<24}{t * 1e3:>9.3f}{batch * 1e3:>9.3f}{t / small[ref][0]:>11.2f}x")

    came = None
    if not args.skip_came:
        came = bench_came(args)
        rows, cols = args.came_shape
        print()
        print(f"CAME: {args.came_matrices} float32 matrices of {rows} x {cols}; median of {args.steps} steps after "
              f"{args.warmup} warm-up, interleaved; state = optimizer Parameters other than the trained ones")
        print(f"  {'optimizer':<16}{'step ms':>9}{'b2b ms':>9}{'vs Adam':>9}{'vs AdaFactor':>14}{'state B/param':>15}")
        for name, (t, batch, state) in came.items():
            print(f"  {name:<16}{t * 1e3:>9.2f}{batch * 1e3:>9.2f}{t / came['ms_optim.Adam'][0]:>8.2f}x"
                  f"{t / came['nn.AdaFactor'][0]:>13.2f}x{state:>15.2f}")

    adabelief = None
    if not args.skip_adabelief:
        adabelief, missing, bandwidths = bench_adabelief(args)
        adam_t = adabelief["ms_optim.Adam"][0]
        print()
        print(f"AdaBelief: the case above ({n} float32 elements in {args.tensors} tensors), rectify=False (every step "
              f"adaptive); median of {args.steps} steps after {args.warmup} warm-up, MindSpore pair interleaved, "
              f"torch peers in windows of their own; bound = {DENSE_BYTES} B/elem at each round's probe bandwidth")
        print(f"  {'optimizer':<26}{'step ms':>9}{'b2b ms':>9}{'vs ms_optim.Adam':>18}{'bound ms':>10}{'vs bound':>10}")
        for name, (t, batch, vs_bound, bound) in adabelief.items():
            print(f"  {name:<26}{t * 1e3:>9.2f}{batch * 1e3:>9.2f}{t / adam_t:>17.2f}x{bound * 1e3:>10.2f}"
                  f"{vs_bound:>9.2f}x")
        _print_probe(bandwidths)
        if missing:
            print(f"  (not importable here, so not run: {', '.join(missing)})")
    adagrad = None
    if not args.skip_adagrad:
        adagrad, skipped, bandwidths = bench_adagrad(args)
        print()
        print(f"Adagrad: {n} float32 elements in {args.tensors} tensors; median of {args.steps} steps after "
              f"{args.warmup} warm-up, MindSpore variants interleaved, torch peers in windows of their own between "
              f"theirs; bound = {ADAGRAD_BYTES} B/elem (float32 state) or {ADAGRAD8_BYTES} B/elem (8-bit state) at "
              f"each round's probe bandwidth; state = bytes of optimizer state per parameter element")
        torch_t = adagrad.get("torch.optim.Adagrad fused", (None,))[0]
        print(f"  {'optimizer':<28}{'step ms':>9}{'b2b ms':>9}{'bound ms':>10}{'vs bound':>10}{'vs torch':>10}"
              f"{'state B':>9}")
        for name, (t, batch, vs_bound, bound, state) in adagrad.items():
            vs_torch = f"{t / torch_t:>9.2f}x" if torch_t else f"{'-':>10}"
            print(f"  {name:<28}{t * 1e3:>9.2f}{batch * 1e3:>9.2f}{bound * 1e3:>10.2f}{vs_bound:>9.2f}x{vs_torch}"
                  f"{state:>9.3f}")
        _print_probe(bandwidths)
        for name, why in skipped.items():
            print(f"  {name:<28}skipped: {why}")

    compile_ratios = [] if args.skip_compile else _compile_section(args)

    print()
    print("Targets:")
    if results:
        dense_nn, dense_bound = ratios["ms_optim.Adam"]
        ams_nn = ratios["ms_optim.Adam amsgrad"][0]
        print(f"  dense   ms_optim <= {TARGET_DENSE_VS_NN:.2f}x nn.Adam:          {dense_nn:.2f}x  "
              f"{_verdict(dense_nn <= TARGET_DENSE_VS_NN)}")
        print(f"  dense   ms_optim <= {TARGET_DENSE_VS_BOUND:.2f}x memory bound:     {dense_bound:.2f}x  "
              f"{_verdict(dense_bound <= TARGET_DENSE_VS_BOUND)}")
        print(f"  amsgrad ms_optim <= {TARGET_AMSGRAD_VS_NN:.2f}x nn.Adam amsgrad:  {ams_nn:.2f}x  "
              f"{_verdict(ams_nn <= TARGET_AMSGRAD_VS_NN)}")
        in_place = results["ms_optim.Adam"][1]
        for name, what in (("increment kernel alone", "offload host kernel"),
                           ("ms_optim.Adam increment", "offload kernel + AssignAdd")):
            ratio = results[name][1] / in_place
            print(f"  {what} <= {TARGET_OFFLOAD_VS_INPLACE:.2f}x ms_optim.Adam in place: {ratio:.2f}x  "
                  f"{_verdict(ratio <= TARGET_OFFLOAD_VS_INPLACE)}")
        came_small = small["ms_optim.Came"][0] / small["nn.Adam"][0]
        print(f"  came    ms_optim.Came <= 1.00x nn.Adam, many small tensors: {came_small:.2f}x  "
              f"{_verdict(came_small <= 1.0)}")
    if args.skip_compile:
        print(f"  compile <= {TARGET_COMPILE_VS_NN:.2f}x the counterpart:          skipped")
    for label, ratio in compile_ratios:
        print(f"  compile {label} <= {TARGET_COMPILE_VS_NN:.2f}x: {ratio:.2f}x  {_verdict(ratio <= TARGET_COMPILE_VS_NN)}")
    if adabelief is not None:
        vs_adam = adabelief["ms_optim.AdaBelief"][0] / adabelief["ms_optim.Adam"][0]
        vs_bound = adabelief["ms_optim.AdaBelief"][2]
        print(f"  adabelief ms_optim.AdaBelief <= {TARGET_ADABELIEF_VS_ADAM:.2f}x ms_optim.Adam: {vs_adam:.2f}x  "
              f"{_verdict(vs_adam <= TARGET_ADABELIEF_VS_ADAM)}")
        print(f"  adabelief ms_optim.AdaBelief <= {TARGET_ADABELIEF_VS_BOUND:.2f}x memory bound:  {vs_bound:.2f}x  "
              f"{_verdict(vs_bound <= TARGET_ADABELIEF_VS_BOUND)}")
    if came is not None:
        vs_adam = came["ms_optim.Came"][0] / came["ms_optim.Adam"][0]
        vs_adafactor = came["ms_optim.Came"][0] / came["nn.AdaFactor"][0]
        state = came["ms_optim.Came"][2]
        print(f"  came    ms_optim.Came <= {TARGET_CAME_VS_ADAM:.2f}x ms_optim.Adam:   {vs_adam:.2f}x  "
              f"{_verdict(vs_adam <= TARGET_CAME_VS_ADAM)}")
        print(f"  came    ms_optim.Came <= {TARGET_CAME_VS_ADAFACTOR:.2f}x nn.AdaFactor:    {vs_adafactor:.2f}x  "
              f"{_verdict(vs_adafactor <= TARGET_CAME_VS_ADAFACTOR)}")
        print(f"  came    state <= {TARGET_CAME_STATE_VS_ADAM * ADAM_STATE_BYTES:.1f} B/param (Adam: "
              f"{ADAM_STATE_BYTES}):          {state:.2f}  {_verdict(state <= TARGET_CAME_STATE_VS_ADAM * ADAM_STATE_BYTES)}")
    if adagrad is not None:
        _adagrad_targets(adagrad)
    return 0


def _adagrad_targets(adagrad):
    def line(text, value, ok):
        print(f"  {text:<52}{value:>7.2f}{'x' if 'state' not in text else ' '}  {_verdict(ok)}")

    t32, t8 = adagrad["ms_optim.Adagrad"][0], adagrad["ms_optim.Adagrad8bit"][0]
    vs_bound32, vs_bound8 = adagrad["ms_optim.Adagrad"][2], adagrad["ms_optim.Adagrad8bit"][2]
    line(f"adagrad 32-bit <= {TARGET_ADAGRAD_VS_BOUND:.2f}x its bound:", vs_bound32,
         vs_bound32 <= TARGET_ADAGRAD_VS_BOUND)
    if "torch.optim.Adagrad fused" in adagrad:
        ratio = t32 / adagrad["torch.optim.Adagrad fused"][0]
        line(f"adagrad 32-bit <= {TARGET_ADAGRAD_VS_TORCH:.2f}x torch fused Adagrad:", ratio,
             ratio <= TARGET_ADAGRAD_VS_TORCH)
    line(f"adagrad 8-bit  <= {TARGET_ADAGRAD8_VS_BOUND:.2f}x its bound:", vs_bound8,
         vs_bound8 <= TARGET_ADAGRAD8_VS_BOUND)
    line("adagrad 8-bit  <= 1.00x ms_optim 32-bit Adagrad:", t8 / t32, t8 <= t32)
    if "bitsandbytes Adagrad8bit" in adagrad:
        speedup = adagrad["bitsandbytes Adagrad8bit"][0] / t8
        print(f"  {'adagrad 8-bit  >= 8x faster than bitsandbytes Adagrad8bit:':<52}{speedup:>7.2f}x  "
              f"{_verdict(speedup >= 1 / TARGET_ADAGRAD8_VS_BNB)}")
    state = adagrad["ms_optim.Adagrad8bit"][4]
    line(f"adagrad 8-bit  state <= {TARGET_ADAGRAD8_STATE:.2f} B/param:", state, state <= TARGET_ADAGRAD8_STATE)


if __name__ == "__main__":
    sys.exit(main())
