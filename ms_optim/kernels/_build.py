"""Build and locate the compiled kernel libraries (no MindSpore import: setup.py runs this file directly).

Each algorithm family is one shared library compiled from ``ops/cpu/<family>.cc`` plus ``ops/common``.
A library's file name carries a hash of its sources and compile flags, so a stale build is never loaded:

1. ``ms_optim/_lib/<family>-<hash>.so``: built by ``setup.py`` at install time;
2. ``<cache>/<family>-<hash>.so``: built on first use when 1. is missing (e.g. a source checkout on
   PYTHONPATH), under a file lock so concurrent processes build it once. ``<cache>`` is
   ``$MS_OPTIM_CACHE_DIR`` or ``~/.cache/ms_optim``.

Libraries are loaded only from those two places, never from the current directory.
"""
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_LIB_DIR = os.path.join(PACKAGE_DIR, "_lib")
# Kernel sources: a copy inside the installed package, else the checkout's top-level ops/.
_SOURCE_ROOTS = (os.path.join(PACKAGE_DIR, "_ops"), os.path.join(os.path.dirname(PACKAGE_DIR), "ops"))

# The kernels promise results identical to the reference path: no FMA contraction, no fast-math.
CXX_FLAGS = ("-std=c++17", "-O3", "-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-fno-math-errno",
             "-fvisibility=hidden", "-Wall", "-Wextra")

FAMILIES = ("adam", "came", "adagrad", "stream")  # stream: the benchmark's bandwidth triad


class KernelBuildError(RuntimeError):
    """Raised when a kernel library can be neither found nor compiled."""


def source_root():
    """The directory holding ``common/`` and ``cpu/`` kernel sources, or None when none is present."""
    for root in _SOURCE_ROOTS:
        if os.path.isdir(os.path.join(root, "cpu")):
            return root
    return None


def _sources(root, family):
    common = os.path.join(root, "common")
    headers = sorted(os.path.join(common, f) for f in os.listdir(common) if f.endswith(".h"))
    return [os.path.join(root, "cpu", family + ".cc")], headers


def library_name(family, root=None):
    """``<family>-<hash>.so``, the hash covering the sources, the headers and the compile flags."""
    root = root or source_root()
    if root is None:
        raise KernelBuildError("ms_optim kernel sources are missing: neither ms_optim/_ops nor ops/ exists")
    sources, headers = _sources(root, family)
    digest = hashlib.sha256(" ".join(CXX_FLAGS).encode())
    for path in sources + headers:
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    return f"{family}-{digest.hexdigest()[:16]}.so"


def compile_library(family, out_path, root=None):
    """Compile ``family`` into ``out_path`` atomically (a temporary file renamed into place)."""
    root = root or source_root()
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise KernelBuildError(f"cannot build ms_optim kernel '{family}': C++ compiler '{compiler}' not found")
    sources, _ = _sources(root, family)
    out_dir = os.path.dirname(out_path)
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
    os.close(fd)
    cmd = [compiler, *CXX_FLAGS, "-I", os.path.join(root, "common"), *sources, "-o", tmp]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KernelBuildError(f"building ms_optim kernel '{family}' failed:\n{' '.join(cmd)}\n{result.stderr}")
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out_path


def cache_dir():
    return os.environ.get("MS_OPTIM_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "ms_optim")


def locate_library(family):
    """Absolute path of the library for ``family``: the installed one, else the cached one, built if needed."""
    name = library_name(family)
    installed = os.path.join(PACKAGE_LIB_DIR, name)
    if os.path.isfile(installed):
        return installed
    directory = cache_dir()
    os.makedirs(directory, exist_ok=True)
    cached = os.path.join(directory, name)
    with open(os.path.join(directory, name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first process builds, the others wait and then find it
        try:
            if not os.path.isfile(cached):
                compile_library(family, cached)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return cached


def build_all(package_dir):
    """Used by setup.py: compile every family into ``<package_dir>/_lib``; returns the paths written."""
    root = source_root()
    lib_dir = os.path.join(package_dir, "_lib")
    return [compile_library(family, os.path.join(lib_dir, library_name(family, root)), root) for family in FAMILIES]
