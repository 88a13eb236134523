"""Hostile and damaged conditions (issue 7): the kernel cache trusts only what this user owns and what it built
itself; bad input is refused before any part of a step runs, with a message naming the kernel and the argument;
NaN/Inf gradients give the same result on the fused and the reference paths; thread and fork limits."""
import ctypes
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import mindspore as ms
from mindspore import RowTensor, Parameter, Tensor, nn, ops

import ms_optim
from ms_optim import kernels
from ms_optim.kernels import _build
from ms_optim.kernels._build import KernelBuildError

from _kernel_abi import adam_arrays as _adam_arrays, call as _call

TINY_SOURCE = """#include "aot_support.h"
MS_OPTIM_EXPORT_LAST_ERROR()
extern "C" __attribute__((visibility("default"))) int MsOptimTiny() { return 7; }
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A kernel family 'tiny' (a one-function library that builds in a second) served from a cache under
    tmp_path, with no installed library: the cache's rules without the cost of building the real kernels."""
    root = tmp_path / "ops"
    shutil.copytree(os.path.join(_build.source_root(), "common"), root / "common")
    (root / "cpu").mkdir()
    (root / "cpu" / "tiny.cc").write_text(TINY_SOURCE)
    monkeypatch.setattr(_build, "_SOURCE_ROOTS", (str(root),))
    monkeypatch.setattr(_build, "PACKAGE_LIB_DIR", str(tmp_path / "no-installed-lib"))
    monkeypatch.setattr(_build, "_verified", {})
    cache = tmp_path / "cache"
    monkeypatch.setenv("MS_OPTIM_CACHE_DIR", str(cache))
    return cache


def _works(path):
    return ctypes.CDLL(path).MsOptimTiny() == 7


# ---- the cache: ownership, modes, symlinks, relative paths

def test_builds_once_into_a_private_cache_with_a_manifest(tiny):
    path = _build.locate_library("tiny")
    assert os.path.dirname(path) == str(tiny) and _works(path)
    assert stat.S_IMODE(os.stat(tiny).st_mode) & 0o077 == 0, "the cache is created private"
    assert os.path.isfile(path + ".sha256")
    mtime = os.stat(path).st_mtime_ns
    assert _build.locate_library("tiny") == path and os.stat(path).st_mtime_ns == mtime


def test_relative_cache_dir_is_refused(tiny, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MS_OPTIM_CACHE_DIR", ".")
    with pytest.raises(KernelBuildError, match="MS_OPTIM_CACHE_DIR must be an absolute path"):
        _build.locate_library("tiny")
    assert not any(name.endswith(".so") for name in os.listdir(tmp_path)), "nothing built in the current directory"


@pytest.mark.parametrize("mode", [0o775, 0o777], ids=["group-writable", "world-writable"])
def test_cache_dir_writable_by_others_is_refused(tiny, mode):
    os.makedirs(tiny)
    os.chmod(tiny, mode)
    with pytest.raises(KernelBuildError, match=r"writable by group or others.*chmod go-w"):
        _build.locate_library("tiny")
    assert not os.listdir(tiny), "nothing was built or loaded there"


@pytest.mark.skipif(os.getuid() != 0, reason="creating a directory owned by another user needs root")
def test_cache_dir_owned_by_another_user_is_refused(tiny):
    os.makedirs(tiny, mode=0o755)
    os.chown(tiny, 65534, 65534)
    with pytest.raises(KernelBuildError, match="owned by uid 65534"):
        _build.locate_library("tiny")


def test_planted_library_is_rebuilt_never_loaded(tiny):
    """A library that is not the one this user built (group-writable, or whose bytes do not match the manifest) is
    replaced by a fresh build."""
    path = _build.locate_library("tiny")
    good = open(path, "rb").read()
    os.chmod(path, 0o775)  # a file others can write could hold anything
    _build._verified.clear()
    assert _build.locate_library("tiny") == path and open(path, "rb").read() == good
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o022 == 0


@pytest.mark.skipif(os.getuid() != 0, reason="creating a file owned by another user needs root")
def test_library_owned_by_another_user_is_rebuilt(tiny):
    path = _build.locate_library("tiny")
    os.chown(path, 65534, 65534)
    _build._verified.clear()
    assert _build.locate_library("tiny") == path and os.stat(path).st_uid == os.getuid()


def test_symlinked_lock_is_refused_and_its_target_untouched(tiny, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.makedirs(tiny, mode=0o700)
    name = _build.library_name("tiny")
    os.symlink(victim, tiny / (name + ".lock"))
    with pytest.raises(KernelBuildError, match="symlink"):
        _build.locate_library("tiny")
    assert victim.read_text() == "precious"


def test_symlinked_library_is_not_followed(tiny, tmp_path):
    path = _build.locate_library("tiny")
    elsewhere = tmp_path / "elsewhere.so"
    shutil.copy(path, elsewhere)
    shutil.copy(path + ".sha256", str(elsewhere) + ".sha256")
    os.remove(path)
    os.symlink(elsewhere, path)
    _build._verified.clear()
    with pytest.raises(KernelBuildError, match="not a regular file"):
        _build.locate_library("tiny")


# ---- a damaged or read-only cache

@pytest.mark.parametrize("damage", ["truncated", "random bytes", "manifest missing"])
def test_damaged_library_is_rebuilt(tiny, damage):
    path = _build.locate_library("tiny")
    good = open(path, "rb").read()
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(len(good) // 2)
    elif damage == "random bytes":
        open(path, "wb").write(np.random.default_rng(0).bytes(len(good)))
    else:
        os.remove(path + ".sha256")
    _build._verified.clear()
    with pytest.raises(KernelBuildError):
        _build.verify_library(path)
    assert _build.locate_library("tiny") == path and _works(path)
    assert open(path, "rb").read() == good


def test_verified_library_needs_no_lock(tiny, monkeypatch):
    """A read-only cache that already holds a good library serves it: no lock is taken."""
    path = _build.locate_library("tiny")
    os.remove(path + ".lock")
    _build._verified.clear()

    def no_lock(lock_path):
        raise KernelBuildError(f"cannot open the ms_optim kernel lock {lock_path}: [Errno 30] Read-only file system")

    monkeypatch.setattr(_build, "_open_lock", no_lock)
    assert _build.locate_library("tiny") == path


def test_killed_build_leftovers_are_removed(tiny):
    os.makedirs(tiny, mode=0o700)
    name = _build.library_name("tiny")
    leftover = tiny / (name + ".tmp-abc123")
    leftover.write_bytes(b"half a library")
    _build.locate_library("tiny")
    assert not leftover.exists()
    assert not [f for f in os.listdir(tiny) if ".tmp-" in f]


def test_build_oserror_is_a_build_failure(tiny, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("MS_OPTIM_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(KernelBuildError, match="cannot create the ms_optim kernel cache"):
        _build.locate_library("tiny")


@pytest.fixture
def broken_cache(tmp_path, monkeypatch):
    """No installed library and a cache that cannot exist (under a regular file): the real families cannot be
    had."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setattr(_build, "PACKAGE_LIB_DIR", str(tmp_path / "no-installed-lib"))
    monkeypatch.setenv("MS_OPTIM_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(kernels, "_warned_fallbacks", set())


ALL_CLASSES = [ms_optim.Adam, ms_optim.Came, ms_optim.AdaBelief, ms_optim.Adagrad, ms_optim.Adagrad8bit]
ALL_IDS = ["Adam", "Came", "AdaBelief", "Adagrad", "Adagrad8bit"]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=ALL_IDS)
def test_auto_falls_back_with_one_warning_and_fused_raises(broken_cache, cls):
    param = Parameter(Tensor(np.ones((3, 2), np.float32)), name="w")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = cls([param], learning_rate=0.1)
        second = cls([param], learning_rate=0.1)
    assert first.impl == second.impl == "reference"
    fallbacks = [w for w in caught if issubclass(w.category, RuntimeWarning) and "reference path" in str(w.message)]
    assert len(fallbacks) == 1, [str(w.message) for w in caught]
    assert "cannot create the ms_optim kernel cache" in str(fallbacks[0].message)
    with pytest.raises(RuntimeError, match="impl='fused' but the .* kernel library is unavailable"):
        cls([param], learning_rate=0.1, impl="fused")


# ---- learning-rate arguments: the message names the spelling the caller used

@pytest.mark.parametrize("cls", ALL_CLASSES, ids=ALL_IDS)
def test_learning_rate_type_errors_name_the_argument_given(mode, cls):
    param = Parameter(Tensor(np.ones(4, np.float32)), name="w")
    spellings = ("learning_rate", "lr")
    for spelling in spellings:
        with pytest.raises(TypeError, match=f"the '{spelling}' must be int, float"):
            cls([param], **{spelling: "0.1"})
        with pytest.raises(TypeError, match=f"the '{spelling}' given as a list or tuple must hold numbers, "
                                            "but got 'x'"):
            cls([param], **{spelling: [0.1, "x"]})
    with pytest.raises(TypeError, match="must hold numbers"):
        cls([{"params": [param], "lr": [0.1, None]}], learning_rate=0.1)
    # what nn.Optimizer takes stays accepted: numpy scalars, 0-d Tensors, numpy arrays, tuples
    for lr in ([np.float32(0.1), np.float32(0.05)], [np.int64(1), 0.5], (0.1, 0.05), np.array([0.1, 0.05]),
               [Tensor(0.1, ms.float32), Tensor(0.05, ms.float32)]):
        cls([param], learning_rate=lr)
        cls([{"params": [param], "lr": lr}], learning_rate=0.1)


@pytest.mark.parametrize("cls", [ms_optim.AdaBelief, ms_optim.Adagrad, ms_optim.Adagrad8bit],
                         ids=["AdaBelief", "Adagrad", "Adagrad8bit"])
def test_negative_learning_rate_in_any_form_is_refused(mode, cls):
    """labml's and bitsandbytes' "Invalid learning rate" for a negative number, list element, Tensor element or
    group lr."""
    param = Parameter(Tensor(np.ones(4, np.float32)), name="w")
    for lr in (-0.1, [0.1, -0.1], Tensor(-0.1, ms.float32), Tensor(np.array([0.1, -0.1], np.float32)),
               np.array([0.1, -0.1]), [np.float32(0.1), np.float32(-0.1)],
               [Tensor(0.1, ms.float32), Tensor(-0.1, ms.float32)]):
        with pytest.raises(ValueError, match="Invalid learning rate"):
            cls([param], lr=lr)
        with pytest.raises(ValueError, match="Invalid learning rate"):
            cls([{"params": [param], "lr": lr}], lr=0.1)
    cls([param], lr=Tensor(np.array([0.1, 0.0], np.float32)))  # 0 is allowed, as there


@pytest.mark.parametrize("optim_bits", [8.0, "8", True])
def test_adagrad8bit_optim_bits_must_be_an_int(mode, optim_bits):
    param = Parameter(Tensor(np.ones(4, np.float32)), name="w")
    with pytest.raises(TypeError, match="'optim_bits' must be"):
        ms_optim.Adagrad8bit([param], optim_bits=optim_bits)


# ---- nothing half-applied; kernel refusals say what was wrong

def test_integer_parameters_construct_as_with_nn_adam(mode):
    """MindSpore's own optimizer tests (tests/ut/python/nn/optim/test_optimizer.py, TestAdam) build nn.Adam over
    Parameters made from Tensor(1) (int64): every class constructs over them as nn.Adam does."""
    params = [Parameter(Tensor(1), name="a"), Parameter(Tensor(np.ones((2, 3), np.int32)), name="b")]
    nn.Adam(params, learning_rate=0.1)
    for cls in ALL_CLASSES:
        cls(params, learning_rate=0.1)
        cls([{"params": params[:1]}, {"params": params[1:]}], learning_rate=0.1)


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("dtype", [ms.float64, ms.int32], ids=["float64", "int32"])
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=ALL_IDS)
def test_step_over_an_unsupported_dtype_is_refused_before_any_write(mode, cls, dtype, impl):
    """A step that would update a parameter that is not float16, float32 or bfloat16 raises TypeError naming it when
    its graph is built (as nn.Adam's step does), before any parameter, state or step counter moves."""
    good = Parameter(Tensor(np.ones(4, np.float32)), name="good")
    bad = Parameter(Tensor(np.ones(4), dtype), name="bad")
    opt = cls([good, bad], learning_rate=0.1, impl=impl)
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    with pytest.raises(TypeError, match=r"every parameter a step updates must be float16, float32 or bfloat16, "
                                        r"but 'bad' is (Float64|Int32); the step was refused before anything"):
        opt((Tensor(np.ones(4, np.float32)), Tensor(np.ones(4), dtype)))
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


def test_parameter_dtype_changed_after_construction_is_refused_before_any_update(mode):
    """The kernels' dtype checks run when the step's graph is built: a parameter turned float64 later stops the
    step before the float32 parameter, the beta powers or the step counter move."""
    first = Parameter(Tensor(np.ones(5, np.float32)), name="first")
    second = Parameter(Tensor(np.ones(4, np.float32)), name="second")
    opt = ms_optim.Adam([first, second], learning_rate=0.1, impl="fused")
    second.set_dtype(ms.float64)
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    with pytest.raises(TypeError, match=r"dtype of 'param' must be one of"):
        opt((Tensor(np.ones(5, np.float32)), Tensor(np.ones(4, np.float64))))
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


def test_kernel_dtype_checks_cover_state_and_scalars():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    op = kernels.multi_tensor_kernel("adam", "MsOptimAdam", ("param", "m", "v"), ("grad",),
                                     ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps"), 1)
    param = Parameter(Tensor(np.ones(4, np.float32)), name="p")
    m = Parameter(Tensor(np.zeros(4, np.float32)), name="m")
    v16 = Parameter(Tensor(np.zeros(4, np.float16)), name="v")
    scalars = [Tensor(x, ms.float32) for x in (0.9, 0.999, 0.01, 0.9, 0.999, 1e-8)]
    grad = Tensor(np.ones(4, np.float32))
    with pytest.raises(TypeError, match=r"state tensors \['m', 'v'\] must share one dtype"):
        op(param, m, v16, grad, *scalars)
    v = Parameter(Tensor(np.zeros(4, np.float32)), name="v")
    with pytest.raises(TypeError, match=r"dtype of 'lr' must be one of \['Float32'\]"):
        op(param, m, v, grad, *scalars[:2], Tensor(0.01, ms.float64), *scalars[3:])
    np.testing.assert_array_equal(param.asnumpy(), np.ones(4, np.float32))
    ms.set_context(mode=ms.GRAPH_MODE)


def test_runtime_refusal_names_the_kernel_and_the_argument(mode):
    """An index outside the parameter can only be seen while the kernel runs: MindSpore's error then carries the
    kernel's own message instead of a bare return code, and nothing of that kernel call was written."""
    op = kernels.inplace_kernel("adam", "MsOptimLazyAdam", ("param", "m", "v"),
                                ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps", "values", "indices"))
    param = Parameter(Tensor(np.ones((4, 3), np.float32)), name="p")
    m = Parameter(Tensor(np.zeros((4, 3), np.float32)), name="m")
    v = Parameter(Tensor(np.zeros((4, 3), np.float32)), name="v")
    scalars = [Tensor(x, ms.float32) for x in (0.9, 0.999, 0.01, 0.9, 0.999, 1e-8)]

    class Step(nn.Cell):
        def construct(self, values, indices):
            return op(param, m, v, *scalars, values, indices)

    with pytest.raises(RuntimeError) as info:
        Step()(Tensor(np.ones((2, 3), np.float32)), Tensor(np.array([1, 9], np.int32))).asnumpy()
    message = str(info.value)
    assert "ms_optim kernel 'MsOptimLazyAdam' refused its inputs (index out of range" in message
    assert "'indices'[1] is 9, outside the 4 rows of 'param'" in message and "this call wrote nothing" in message
    np.testing.assert_array_equal(param.asnumpy(), np.ones((4, 3), np.float32))


class _SparseStep(nn.Cell):
    """One optimizer step on a dense gradient and a sparse (RowTensor) one for a (4, 2) parameter (graph mode: a
    RowTensor is made inside a graph, as the backward pass of a sparse lookup makes it)."""

    def __init__(self, opt):
        super().__init__()
        self.opt = opt

    def construct(self, grad, values, indices):
        return self.opt((grad, RowTensor(indices, values, (4, 2))))


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("kwargs", [{"use_lazy": True}, {}, {"use_amsgrad": True}, {"use_lazy": True,
                                                                                     "use_nesterov": True}],
                         ids=["lazy", "dense-from-sparse", "amsgrad", "lazy-nesterov"])
def test_sparse_index_outside_the_parameter_stops_the_step_before_any_write(impl, kwargs):
    """Every sparse gradient's indices are checked before the first write of the step: a bad index (which only the
    running step can see) leaves every parameter and state as it was, the step counter and beta powers too, on
    both paths; a good step then runs."""
    ms.set_context(mode=ms.GRAPH_MODE)
    dense = Parameter(Tensor(np.ones(3, np.float32)), name="dense")
    emb = Parameter(Tensor(np.ones((4, 2), np.float32)), name="emb")
    opt = ms_optim.Adam([dense, emb], learning_rate=0.1, impl=impl, **kwargs)
    step = _SparseStep(opt)
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    grad, values = Tensor(np.ones(3, np.float32)), Tensor(np.ones((2, 2), np.float32))
    with pytest.raises(RuntimeError) as info:
        step(grad, values, Tensor(np.array([1, 9], np.int32)))
    if impl == "fused":
        assert "ms_optim kernel 'MsOptimCheckRows' refused its inputs (index out of range" in str(info.value)
        assert "'indices'[1] is 9, outside the 4 rows of 'param'; nothing of the step was written" in str(info.value)
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)
    np.testing.assert_array_equal(dense.asnumpy(), np.ones(3, np.float32))
    np.testing.assert_array_equal(emb.asnumpy(), np.ones((4, 2), np.float32))
    # MindSpore refuses to run a graph again after it failed; a new cell around the same optimizer runs
    _SparseStep(opt)(grad, values, Tensor(np.array([1, 3], np.int32)))
    assert opt.global_step.asnumpy()[0] == 1
    assert not np.array_equal(dense.asnumpy(), np.ones(3, np.float32))
    assert not np.array_equal(emb.asnumpy(), np.ones((4, 2), np.float32))


@pytest.mark.parametrize("impl", ["fused", "reference"])
@pytest.mark.parametrize("cls", [ms_optim.Adagrad, ms_optim.Adagrad8bit], ids=["Adagrad", "Adagrad8bit"])
def test_adagrad_sparse_gradient_is_refused_naming_the_parameter(cls, impl):
    """Adagrad takes dense gradients only (as bitsandbytes' does): a RowTensor gradient is refused, saying so and
    naming its parameter, when the step's graph is built (both paths had refused it with unrelated messages:
    "dtype of 'grad' must be Float32", "Undetermined"), before anything moves."""
    ms.set_context(mode=ms.GRAPH_MODE)
    dense = Parameter(Tensor(np.ones(3, np.float32)), name="dense")
    emb = Parameter(Tensor(np.ones((4, 2), np.float32)), name="emb")
    step = _SparseStep(cls([dense, emb], lr=0.1, impl=impl))
    before = {p.name: p.asnumpy().copy() for p in step.opt.get_parameters()}
    with pytest.raises(TypeError, match=re.escape("sparse (RowTensor) gradients are not supported (nor by "
                                                  "bitsandbytes' Adagrad), but the gradient of 'emb' is one")):
        step(Tensor(np.ones(3, np.float32)), Tensor(np.ones((2, 2), np.float32)),
                         Tensor(np.array([1, 3], np.int32)))
    for p in step.opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


@pytest.mark.parametrize("use_nesterov", [False, True])
def test_lazy_adam_sparse_gradient_of_no_rows(use_nesterov):
    """A sparse gradient naming no rows: lazy Adam changes no row of that parameter on both paths (the reference
    path had raised: UnsortedSegmentSum of 0 segments), while the step goes on for the others (the same on both)."""
    ms.set_context(mode=ms.GRAPH_MODE)
    results = {}
    for impl in ("fused", "reference"):
        dense = Parameter(Tensor(np.ones(3, np.float32)), name="dense")
        emb = Parameter(Tensor(np.ones((4, 2), np.float32)), name="emb")
        opt = ms_optim.Adam([dense, emb], learning_rate=0.1, impl=impl, use_lazy=True, use_nesterov=use_nesterov)
        _SparseStep(opt)(Tensor(np.full(3, 0.5, np.float32)), Tensor(np.ones((0, 2), np.float32)),
                         Tensor(np.zeros(0, np.int32)))
        results[impl] = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
        np.testing.assert_array_equal(emb.asnumpy(), np.ones((4, 2), np.float32))
        assert not np.array_equal(dense.asnumpy(), np.ones(3, np.float32))
    for name, value in results["reference"].items():
        np.testing.assert_array_equal(results["fused"][name], value, err_msg=name)


@pytest.mark.parametrize("family,symbol,arrays", [
    ("adam", "MsOptimAdam", lambda: _adam_arrays(8)),
    ("adam", "MsOptimCheckRows", lambda: [np.ones((4, 2), np.float32), np.array([1], np.int32),
                                          np.zeros(1, np.float32)]),
    ("adagrad", "MsOptimAdagrad", lambda: [np.ones(8, np.float32), np.zeros(8, np.float32), np.ones(8, np.float32),
                                           *[np.array([x], np.float32) for x in (0.1, 1.0, 0.0, 1e-10)],
                                           np.zeros(1, np.float32)]),
    ("came", "MsOptimCame", lambda: [np.ones(8, np.float32), np.zeros(8, np.float32), *[np.zeros(1, np.float32)] * 4,
                                     np.zeros(8, np.float32), np.ones(8, np.float32), np.array([0.1], np.float32),
                                     np.array([0.5], np.float32),
                                     np.array([0.9, 0.99, 1e-30, 1e-3, 1e-16, 1.0, 0.0, 0.0], np.float32),
                                     np.zeros(1, np.float32)]),
], ids=lambda x: x if isinstance(x, str) else None)
def test_flag_output_of_the_wrong_size_is_refused_before_any_write(family, symbol, arrays):
    """The flag output (one float32) is checked with the inputs: an empty or float64 one is refused, and nothing,
    the parameter included, is written; the same call with a good flag runs."""
    lib = ctypes.CDLL(_build.locate_library(family))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    for flag in (np.zeros(0, np.float32), np.zeros(1, np.float64)):
        args = arrays()
        args[-1] = flag
        before = [a.copy() for a in args]
        assert _call(lib, symbol, args) == 3, symbol
        assert b"the flag output must be one float32 value" in lib.MsOptimLastError()
        for a, b in zip(args, before):
            np.testing.assert_array_equal(a, b)
    args = arrays()
    assert _call(lib, symbol, args) == 0 and args[-1][0] == 1.0, lib.MsOptimLastError()


def test_c_callers_get_the_code_and_the_reason():
    lib = ctypes.CDLL(_build.locate_library("adam"))
    lib.MsOptimLastError.restype = ctypes.c_char_p
    arrays = _adam_arrays(8, np.float64)
    assert _call(lib, "MsOptimAdam", arrays) == 2
    assert b"float32, float16 or bfloat16" in lib.MsOptimLastError()
    assert np.array_equal(arrays[0], np.ones(8))
    arrays = _adam_arrays(8)
    arrays[1] = np.zeros(5, np.float32)
    assert _call(lib, "MsOptimAdam", arrays) == 3
    assert lib.MsOptimLastError() == b"'m' has shape [5], but 'param' has [8]"
    assert _call(lib, "MsOptimAdam", _adam_arrays(8)) == 0 and lib.MsOptimLastError() == b""


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=ALL_IDS)
def test_parameter_shape_changed_after_construction_is_refused_before_any_update(mode, cls):
    """Every element-wise state tensor's shape is checked when the step's graph is built: a parameter given data
    of another shape after construction stops the step before anything moves."""
    first = Parameter(Tensor(np.ones(5000, np.float32)), name="first")
    second = Parameter(Tensor(np.ones(4, np.float32)), name="second")
    opt = cls([first, second], learning_rate=0.1, impl="fused")
    second.set_data(Tensor(np.ones(6, np.float32)))
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    with pytest.raises(ValueError, match=r"the state '\w+' has shape \[4\], expected \[6\] for its parameter of "
                                         r"shape \[6\]"):
        opt((Tensor(np.ones(5000, np.float32)), Tensor(np.ones(6, np.float32))))
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


@pytest.mark.parametrize("state,index,shape,name,expected", [
    ("exp_avg_sq_row", 0, (7,), "row", "[4]"), ("exp_avg_insta_col", 0, (2,), "insta_col", "[3]"),
    ("exp_avg_sq", 1, (6,), "sq", "[5]"),
], ids=["row", "insta_col", "sq"])
def test_came_state_of_the_wrong_shape_is_refused_before_any_update(mode, state, index, shape, name, expected):
    """CAME's state that is not shaped like its parameter (rows, columns; the full second moment of a parameter of
    fewer than two axes) is checked by its rule when the step's graph is built: nothing moves, the step counters
    included."""
    params = [Parameter(Tensor(np.ones((4, 3), np.float32)), name="w"), Parameter(Tensor(np.ones(5, np.float32)),
                                                                                 name="b")]
    opt = ms_optim.Came(params, learning_rate=0.1, impl="fused")
    getattr(opt, state)[index].set_data(Tensor(np.zeros(shape, np.float32)))
    before = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    with pytest.raises(ValueError, match=re.escape(f"the state '{name}' has shape {list(shape)}, expected {expected}")):
        opt((Tensor(np.ones((4, 3), np.float32)), Tensor(np.ones(5, np.float32))))
    for p in opt.get_parameters():
        np.testing.assert_array_equal(p.asnumpy(), before[p.name], err_msg=p.name)


# ---- numerics: NaN / Inf gradients, 0-d parameters, eps

def _bad_grads(rng, shapes, step):
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    if step == 1:
        for g in grads:
            g.reshape(-1)[0] = np.nan
            if g.size > 2:
                g.reshape(-1)[2] = np.inf
    return grads


NAN_SHAPES = [(1,), (7,), (9, 5), (2, 3, 4), (33, 20)]  # (33, 20): several 8-bit blocks, the last partial


def _run_nan(cls, impl, kwargs, steps=3):
    params = [Parameter(Tensor(np.linspace(-1, 1, int(np.prod(s)), dtype=np.float32).reshape(s)), name=f"w{i}")
              for i, s in enumerate(NAN_SHAPES)]
    opt = cls(params, learning_rate=0.01, impl=impl, **kwargs)
    rng = np.random.default_rng(5)
    for step in range(steps):
        opt(tuple(Tensor(g) for g in _bad_grads(rng, NAN_SHAPES, step)))
    return {p.name: p.asnumpy() for p in opt.get_parameters() if p.name != "global_step"}


@pytest.mark.parametrize("cls,kwargs", [
    (ms_optim.Adam, {}), (ms_optim.Adam, {"use_nesterov": True}), (ms_optim.Adam, {"use_amsgrad": True}),
    (ms_optim.Came, {}), (ms_optim.Came, {"scale_parameter": True}), (ms_optim.Came, {"beta1": 0.0}),
    (ms_optim.AdaBelief, {}), (ms_optim.AdaBelief, {"amsgrad": True, "weight_decay": 0.1}),
    (ms_optim.Adagrad, {"weight_decay": 0.01}), (ms_optim.Adagrad, {"optim_bits": 8, "min_8bit_size": 0}),
    (ms_optim.Adagrad, {"optim_bits": 8, "min_8bit_size": 0, "percentile_clipping": 5}),
    (ms_optim.Adagrad, {"optim_bits": 8, "min_8bit_size": 0, "block_wise": False}),
], ids=["adam", "nesterov", "amsgrad", "came", "came-scale_parameter", "came-beta1_zero", "adabelief",
        "adabelief-amsgrad-wd", "adagrad", "adagrad8bit", "adagrad8bit-clipping", "adagrad8bit-tensorwise"])
def test_nan_and_inf_gradients_fused_equals_reference(mode, cls, kwargs):
    fused = _run_nan(cls, "fused", kwargs)
    reference = _run_nan(cls, "reference", kwargs)
    assert fused.keys() == reference.keys()
    for name in reference:
        assert np.array_equal(np.isnan(fused[name]), np.isnan(reference[name])), name
        np.testing.assert_allclose(fused[name], reference[name], rtol=2e-5, atol=1e-6, err_msg=name)


def test_came_keeps_a_nan_in_its_element_of_a_1d_parameter(mode):
    """max(NaN / clip, 1) is 1 on both paths (as in mindformers): one NaN gradient element does not spread."""
    for impl in ("fused", "reference"):
        param = Parameter(Tensor(np.ones(6, np.float32)), name="w")
        opt = ms_optim.Came([param], learning_rate=0.01, impl=impl)
        grad = np.full(6, 0.5, np.float32)
        grad[3] = np.nan
        opt((Tensor(grad),))
        assert np.isnan(param.asnumpy()).tolist() == [False, False, False, True, False, False], impl


def test_lazy_adam_nan_in_sparse_values_fused_equals_reference():
    from ms_optim.functional import adam as reference
    ms.set_context(mode=ms.PYNATIVE_MODE)
    op = kernels.inplace_kernel("adam", "MsOptimLazyAdam", ("param", "m", "v"),
                                ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps", "values", "indices"))
    values = np.ones((3, 4), np.float32)
    values[1, 2] = np.nan
    values[2, 0] = -np.inf
    results = []
    for fn in (op, reference.lazy_adam):
        p = Parameter(Tensor(np.ones((5, 4), np.float32)), name="p")
        m = Parameter(Tensor(np.zeros((5, 4), np.float32)), name="m")
        v = Parameter(Tensor(np.zeros((5, 4), np.float32)), name="v")
        scalars = [Tensor(x, ms.float32) for x in (0.9, 0.999, 0.01, 0.9, 0.999, 1e-8)]
        fn(p, m, v, *scalars, Tensor(values), Tensor(np.array([0, 2, 4], np.int32)))
        results.append([x.asnumpy() for x in (p, m, v)])
    for fused, ref in zip(*results):
        np.testing.assert_array_equal(fused, ref)
    ms.set_context(mode=ms.GRAPH_MODE)


def test_came_zero_dim_parameter_on_both_paths(mode):
    """A 0-d parameter (a scalar gain) runs on the reference path too (it failed in Assign before)."""
    results = {}
    for impl in ("fused", "reference"):
        param = Parameter(Tensor(np.float32(0.5)), name="gain")
        opt = ms_optim.Came([param], learning_rate=0.1, impl=impl)
        for g in (0.3, -0.2, 0.1):
            opt((Tensor(np.float32(g)),))
        assert param.shape == () and opt.exp_avg[0].shape == ()
        results[impl] = [param.asnumpy(), opt.exp_avg[0].asnumpy(), opt.exp_avg_sq[0].asnumpy()]
    for fused, ref in zip(results["fused"], results["reference"]):
        np.testing.assert_allclose(fused, ref, rtol=1e-6)
    assert results["fused"][0] != np.float32(0.5)


@pytest.mark.parametrize("cls,kwargs", [
    (ms_optim.Adagrad, {}), (ms_optim.Adagrad, {"optim_bits": 8, "min_8bit_size": 0}),
    (ms_optim.Adagrad, {"percentile_clipping": 5}), (ms_optim.AdaBelief, {}), (ms_optim.AdaBelief, {"amsgrad": True}),
], ids=["adagrad", "adagrad8bit", "adagrad-clipping", "adabelief", "adabelief-amsgrad"])
def test_zero_dim_parameter_on_both_paths(mode, cls, kwargs):
    """A 0-d parameter beside a 1-d one: both paths run it (the reference path's per-step scalars of shape (1,)
    failed in Assign before) and agree on the parameter and every state tensor."""
    results = {}
    for impl in ("fused", "reference"):
        gain = Parameter(Tensor(np.float32(0.5)), name="gain")
        vector = Parameter(Tensor(np.ones(3, np.float32)), name="vector")
        opt = cls([gain, vector], learning_rate=0.01, impl=impl, **kwargs)
        for t in range(3):
            opt((Tensor(np.float32(0.3 - 0.2 * t)), Tensor(np.array([0.1, -0.2, 0.3], np.float32))))
        assert gain.shape == ()
        results[impl] = {p.name: p.asnumpy().copy() for p in opt.get_parameters()}
    assert results["fused"].keys() == results["reference"].keys()
    for name, value in results["reference"].items():
        np.testing.assert_array_equal(results["fused"][name], value, err_msg=name)
    assert results["fused"]["gain"] != np.float32(0.5)


def test_came_beta1_zero_steps_by_the_clipped_update(mode):
    """beta1 = 0 (inside the documented range) has no first moment: the step is lr times the clipped,
    normalised update (RMS <= clip_threshold), the instability states stay, nothing blows up (mindformers'
    formula multiplies by 1/sqrt(eps2) = 1e8 there)."""
    for impl in ("fused", "reference"):
        start = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
        param = Parameter(Tensor(start), name="w")
        opt = ms_optim.Came([param], learning_rate=0.01, beta1=0.0, impl=impl)
        opt((Tensor(np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)),))
        step = param.asnumpy() - start
        rms = float(np.sqrt(np.mean(step.astype(np.float64) ** 2)))
        assert 0.005 < rms <= 0.01 * (1 + 1e-5), (impl, rms)
        assert not opt.exp_avg_insta_row[0].asnumpy().any() and not opt.exp_avg_insta_col[0].asnumpy().any()


@pytest.mark.parametrize("cls,kwargs,name", [
    (ms_optim.Adam, {"eps": 1e-50}, "eps"),
    (ms_optim.Came, {"eps": (1e-50, 1e-3, 1e-16)}, "eps[0]"),
    (ms_optim.Came, {"eps": (1e-30, 1e-3, 1e-46)}, "eps[2]"),
], ids=["adam", "came-eps0", "came-eps2"])
def test_eps_that_is_zero_in_float32_is_refused(mode, cls, kwargs, name):
    param = Parameter(Tensor(np.ones(3, np.float32)), name="w")
    with pytest.raises(ValueError, match=re.escape(f"'{name}' must be at least 1.401e-45, the smallest positive float32")):
        cls([param], learning_rate=0.1, **kwargs)
    cls([param], learning_rate=0.1, **{k: v for k, v in kwargs.items() if k != "eps"})


@pytest.mark.parametrize("cls,kwargs,name", [
    (ms_optim.Adagrad, {"lr_decay": 1e39}, "lr_decay"),
    (ms_optim.Adagrad8bit, {"lr_decay": float("inf")}, "lr_decay"),
    (ms_optim.Adagrad, {"initial_accumulator_value": 1e39}, "initial_accumulator_value"),
    (ms_optim.Adagrad, {"weight_decay": 10 ** 40}, "weight_decay"),
    (ms_optim.Adagrad, {"eps": 1e39}, "eps"),
    (ms_optim.Adagrad, {"lr": 1e39}, "lr"),
    (ms_optim.Adam, {"eps": 1e39}, "eps"),
    (ms_optim.Adam, {"weight_decay": 1e39}, "weight_decay"),
    (ms_optim.Adam, {"loss_scale": 1e39}, "loss_scale"),
    (ms_optim.Adam, {"learning_rate": [0.1, 1e39]}, "learning_rate"),
    (ms_optim.AdaBelief, {"eps": 1e39}, "eps"),
    (ms_optim.AdaBelief, {"weight_decay": float("nan")}, "weight_decay"),
    (ms_optim.Came, {"clip_threshold": 1e39}, "clip_threshold"),
    (ms_optim.Came, {"eps": (1e-30, 1e39, 1e-16)}, "eps[1]"),
], ids=lambda x: x.__name__ if isinstance(x, type) else None)
def test_hyper_parameter_that_is_not_finite_in_float32_is_refused(mode, cls, kwargs, name):
    """Every float hyper-parameter reaches the update as a float32: one that is inf there (1e39 is finite in
    Python) or NaN is refused at construction, naming it. Adagrad's lr_decay = 1e39 had turned every parameter
    NaN at the first step (1 + (t - 1) * inf = 1 + 0 * inf)."""
    param = Parameter(Tensor(np.ones(3, np.float32)), name="w")
    kwargs = {"learning_rate": 0.1, **kwargs} if "lr" not in kwargs else kwargs
    with pytest.raises(ValueError, match=re.escape(f"the '{name}' must be a finite float32 (below 3.4028236e+38")):
        cls([param], **kwargs)


def test_huge_int_and_array_learning_rates_are_refused(mode):
    """An int too large for a float, and a numpy array or float64 Tensor holding a value that is inf in float32,
    are refused as the float 1e39 is (not with OverflowError, nor accepted and cast to inf)."""
    param = Parameter(Tensor(np.ones(3, np.float32)), name="w")
    for kwargs, name in (({"lr_decay": 10 ** 400}, "lr_decay"), ({"lr": [10 ** 400]}, "lr"),
                         ({"lr": np.array([0.1, 1e39])}, "lr"), ({"lr": Tensor(np.array([1e39]), ms.float64)}, "lr")):
        with pytest.raises(ValueError, match=re.escape(f"the '{name}' must")):
            ms_optim.Adagrad([param], **kwargs)


def test_largest_float32_hyper_parameter_is_accepted():
    """The refusal starts where float32 rounds to inf: the largest float32 itself (3.4028235e38) is a value."""
    param = Parameter(Tensor(np.ones(3, np.float32)), name="w")
    ms_optim.Adagrad([param], lr=0.1, lr_decay=float(np.finfo(np.float32).max))
    with pytest.raises(ValueError, match="finite float32"):
        ms_optim.Adagrad([param], lr=0.1, lr_decay=float(np.finfo(np.float32).max) * (1 + 2 ** -24))


def test_adam_group_weight_decay_not_finite_in_float32_is_refused(mode):
    param = Parameter(Tensor(np.ones(3, np.float32)), name="w")
    with pytest.raises(ValueError, match=re.escape("the 'weight_decay' must be a finite float32")):
        ms_optim.Adam([{"params": [param], "weight_decay": 1e39}], learning_rate=0.1)


@pytest.mark.parametrize("cls", [ms_optim.AdaBelief, ms_optim.Adagrad], ids=["AdaBelief", "Adagrad"])
def test_eps_zero_in_float32_refused_where_the_peer_allows_zero(mode, cls):
    """bitsandbytes, torch and labml accept eps = 0, and so do these; a positive eps that float32 cannot hold
    (it would silently be 0) is refused."""
    param = Parameter(Tensor(np.ones(3, np.float32)), name="w")
    with pytest.raises(ValueError, match=re.escape("'eps' must be 0 or at least 1.401e-45")):
        cls([param], learning_rate=0.1, eps=1e-50)
    cls([param], learning_rate=0.1, eps=0.0)
    cls([param], learning_rate=0.1, eps=1.5e-45)


# ---- limits: thread count, fork

_KERNEL_SCRIPT = textwrap.dedent("""
    import ctypes, os, sys, threading, time
    import numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    from _kernel_abi import adam_arrays as _adam_arrays, call as _call  # numpy and ctypes only: no MindSpore
    lib = ctypes.CDLL(sys.argv[2])
    n = 1 << 20  # large enough for the worker pool
    if sys.argv[3] == "once":
        arrays = _adam_arrays(n)
        sys.exit(_call(lib, "MsOptimAdam", arrays) or (0 if np.all(arrays[0] < 1) else 5))
    stop = False
    def spin():  # keeps the pool busy in the parent while it forks
        arrays = _adam_arrays(n)
        while not stop:
            _call(lib, "MsOptimAdam", arrays)
    threading.Thread(target=spin, daemon=True).start()
    hung = 0
    for _ in range(int(sys.argv[3])):
        pid = os.fork()
        if pid == 0:
            arrays = _adam_arrays(n)
            os._exit(_call(lib, "MsOptimAdam", arrays) or (0 if np.all(arrays[0] < 1) else 5))
        deadline = time.time() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                if os.waitstatus_to_exitcode(status) != 0:
                    sys.exit(f"child exited with {os.waitstatus_to_exitcode(status)}")
                break
            if time.time() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                hung += 1
                break
            time.sleep(0.005)
    stop = True
    sys.exit(f"{hung} children hung" if hung else 0)
""")


def _run_kernel_script(tmp_path, arg, threads, spin_us=None):
    script = tmp_path / "kernel_script.py"
    script.write_text(_KERNEL_SCRIPT)
    env = dict(os.environ, MS_OPTIM_NUM_THREADS=str(threads))
    env.pop("MS_OPTIM_SPIN_US", None)
    if spin_us is not None:
        env["MS_OPTIM_SPIN_US"] = spin_us
    return subprocess.run([sys.executable, str(script), __file__, _build.locate_library("adam"), arg], env=env,
                          capture_output=True, text=True, timeout=600)


def test_huge_thread_count_is_capped(tmp_path):
    result = _run_kernel_script(tmp_path, "once", 100000)
    assert result.returncode == 0, result.stderr
    assert "MS_OPTIM_NUM_THREADS=100000 is capped at 256 threads" in result.stderr


@pytest.mark.parametrize("spin_us", [None, "0"], ids=["spinning", "sleeping"])
def test_children_forked_while_the_pool_runs_do_not_hang(tmp_path, spin_us):
    """Each child runs a pooled kernel right after a fork taken while the parent's pool is busy; before the pool
    re-initialised itself after fork, some of 120 such children deadlocked (with 8 workers). Workers that poll
    between regions (the default) and workers that sleep at once (MS_OPTIM_SPIN_US=0)."""
    result = _run_kernel_script(tmp_path, "120", 8, spin_us)  # 8 workers: with 2, the unfixed pool hung too rarely
    assert result.returncode == 0, result.stderr[-2000:]


_POOL_SCRIPT = textwrap.dedent("""
    import ctypes, os, sys
    import numpy as np
    sys.path.insert(0, os.path.dirname(sys.argv[1]))
    from _kernel_abi import ADAM_GRAD, adam_arrays as _adam_arrays, call as _call  # numpy and ctypes only
    lib = ctypes.CDLL(sys.argv[2])
    arrays = _adam_arrays(1 << 17)  # 4 regions' worth of threads at kMinElementsPerThread
    arrays[ADAM_GRAD][:] = np.linspace(-1, 1, arrays[ADAM_GRAD].size, dtype=np.float32)
    for _ in range(int(sys.argv[3])):
        if _call(lib, "MsOptimAdam", arrays):
            sys.exit("refused")
    np.save(sys.argv[4], np.concatenate(arrays[:3]))
""")


@pytest.mark.parametrize("spin_us", ["0", "1", "50"])
def test_pool_regions_back_to_back(tmp_path, spin_us):
    """3000 short parallel regions on 4 threads, workers sleeping at once (0) or polling briefly (1, 50 us: shorter
    than most regions, so they keep switching between polling and sleeping): same bytes as one thread, and no hang
    (a lost completion notice would leave the caller waiting; a lost wake-up of a worker would not show, the
    caller runs the tasks nobody took)."""
    script = tmp_path / "pool.py"
    script.write_text(_POOL_SCRIPT)
    outputs = []
    for threads in (1, 4):
        out = tmp_path / f"pool{threads}.npy"
        env = dict(os.environ, MS_OPTIM_NUM_THREADS=str(threads), MS_OPTIM_SPIN_US=spin_us)
        result = subprocess.run([sys.executable, str(script), __file__, _build.locate_library("adam"), "3000",
                                 str(out)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stderr == ""
        outputs.append(np.load(out))
    assert outputs[1].tobytes() == outputs[0].tobytes()


@pytest.mark.parametrize("value", ["x", "-5", "1.5", "200us"])
def test_bad_spin_setting_is_said_and_ignored(tmp_path, value):
    result = _run_kernel_script(tmp_path, "once", 2, value)
    assert result.returncode == 0, result.stderr
    assert f"MS_OPTIM_SPIN_US={value} is not a whole number of microseconds >= 0; using 200" in result.stderr


def test_huge_spin_setting_is_capped(tmp_path):
    result = _run_kernel_script(tmp_path, "once", 2, "5000000")
    assert result.returncode == 0, result.stderr
    assert "MS_OPTIM_SPIN_US=5000000 is capped at 1000000" in result.stderr


@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_offload_delta_kernel_nan_gradients_equal_reference(nesterov):
    from ms_optim.functional import adam as reference
    ms.set_context(mode=ms.PYNATIVE_MODE)
    symbol = "MsOptimAdamNesterovDelta" if nesterov else "MsOptimAdamDelta"
    op = kernels.multi_tensor_kernel("adam", symbol, ("m", "v"), ("grad",),
                                     ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "eps"), 1,
                                     outputs_like="grad")
    kernel = lambda m, v, *rest: op(m, v, rest[-1], *rest[:-1])[0]  # noqa: E731 (the reference's argument order)
    grad = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    grad[1, 2], grad[3, 4] = np.nan, np.inf
    results = []
    for fn in (kernel, reference.adam_nesterov_delta if nesterov else reference.adam_delta):
        m = Parameter(Tensor(np.full((5, 7), 0.1, np.float32)), name="m")
        v = Parameter(Tensor(np.full((5, 7), 0.01, np.float32)), name="v")
        scalars = [Tensor(x, ms.float32) for x in (0.9 ** 2, 0.999 ** 2, 0.01, 0.9, 0.999, 1e-8)]
        delta = fn(m, v, *scalars, Tensor(grad))
        results.append([delta.asnumpy(), m.asnumpy(), v.asnumpy()])
    for fused, ref in zip(*results):
        np.testing.assert_array_equal(fused, ref)
    assert np.isnan(results[0][0]).sum() == 2  # the NaN and the Inf element (inf/inf), nowhere else
    ms.set_context(mode=ms.GRAPH_MODE)



def test_installed_library_with_group_write_is_used(tmp_path, monkeypatch):
    """An installed library is trusted as the package's .py files are: pip under umask 002 installs it group-
    writable, and it must still be the one that loads (not a 60 s rebuild into the cache)."""
    installed = tmp_path / "_lib"
    installed.mkdir()
    name = _build.library_name("adam")
    source = _build.locate_library("adam")
    for suffix in ("", ".sha256"):
        target = installed / (name + suffix)
        target.write_bytes(open(source + suffix, "rb").read())
        target.chmod(0o664)
    installed.chmod(0o775)
    monkeypatch.setattr(_build, "PACKAGE_LIB_DIR", str(installed))
    monkeypatch.setenv("MS_OPTIM_CACHE_DIR", str(tmp_path / "cache-never-made"))
    assert _build.locate_library("adam") == str(installed / name)
    assert not (tmp_path / "cache-never-made").exists()
    (installed / name).write_bytes(b"damaged")  # the manifest check still applies: falls through to the cache
    with pytest.raises(_build.KernelBuildError):
        _build.verify_library(str(installed / name), check_owner=False)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs os.sched_setaffinity (Linux) and 2 CPUs to tell the mask from the machine")
def test_default_thread_count_follows_the_affinity_mask(tmp_path):
    """Without MS_OPTIM_NUM_THREADS the kernels use the CPUs the process may run on (taskset, cpusets,
    containers), not every CPU of the machine: more threads than CPUs only wait for each other."""
    script = tmp_path / "affinity.py"
    script.write_text(textwrap.dedent("""
        import ctypes, os, sys
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        print(ctypes.CDLL(sys.argv[1]).MsOptimStreamThreads())
    """))
    env = {k: v for k, v in os.environ.items() if k != "MS_OPTIM_NUM_THREADS"}
    result = subprocess.run([sys.executable, str(script), _build.locate_library("stream")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
