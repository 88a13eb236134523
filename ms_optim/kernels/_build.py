"""Build, verify and locate the compiled kernel libraries (no MindSpore import: setup.py runs this file directly).

Each algorithm family is one shared library compiled from ``ops/cpu/<family>.cc`` plus ``ops/common``.
A library's file name carries a hash of its sources and compile flags, so a stale build is never loaded:

1. ``ms_optim/_lib/<family>-<hash>.so``: built by ``setup.py`` at install time;
2. ``<cache>/<family>-<hash>.so``: built on first use when 1. is missing (e.g. a source checkout on
   PYTHONPATH), under a file lock so concurrent processes build it once. ``<cache>`` is
   ``$MS_OPTIM_CACHE_DIR`` (an absolute path) or ``~/.cache/ms_optim``.

What is trusted (docs/kernels.md, "The kernel cache"): loading a library runs its code in this process, so a
library is loaded only from those two places, and only if

- the directory holding it, and the library, are owned by this user or root and writable by no one else
  (a directory another user can write lets that user plant ``<family>-<hash>.so``: the hash is public);
- the library is a regular file, not a symlink, and its size and SHA-256 equal the ones recorded in
  ``<library>.sha256`` when it was built (a truncated or damaged file is rebuilt, never loaded: a truncated
  ``.so`` kills the process with SIGBUS when it runs).

Locks are opened without following symlinks and without truncating. A verified library needs no lock, so a
read-only cache works. Every failure is a ``KernelBuildError`` naming the path and the fix.
"""
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import stat
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

_TMP_MARK = ".tmp-"  # <library>.tmp-XXXX: a build in progress (or killed midway: removed by the next build)
_verified = {}  # path -> (inode, size, mtime) of a library verified in this process


class KernelBuildError(RuntimeError):
    """Raised when a kernel library can be neither found nor compiled, or fails its integrity checks."""


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


def _file_digest(path):
    """(size, sha256 hex) of the file at ``path``, read without following a symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        digest, size = hashlib.sha256(), 0
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def _manifest_path(library):
    return library + ".sha256"


def _write_manifest(library):
    """Records the size and SHA-256 of a freshly built ``library`` next to it (atomically)."""
    size, sha = _file_digest(library)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(library) + _TMP_MARK, dir=os.path.dirname(library))
    with os.fdopen(fd, "w") as f:
        json.dump({"size": size, "sha256": sha}, f)
    os.replace(tmp, _manifest_path(library))


def _remove_stale_temporaries(library):
    """Deletes ``<library>.tmp-*`` left by a build that was killed midway (the caller holds the build lock of
    ``library``, so no other build of it is in progress)."""
    for path in glob.glob(glob.escape(library) + _TMP_MARK + "*") + glob.glob(
            glob.escape(_manifest_path(library)) + _TMP_MARK + "*"):
        try:
            os.remove(path)
        except OSError:
            pass


def compile_library(family, out_path, root=None):
    """Compile ``family`` into ``out_path`` atomically (a temporary file renamed into place) and record its size
    and hash in ``<out_path>.sha256``. Any failure, OSError included, is a KernelBuildError."""
    root = root or source_root()
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise KernelBuildError(f"cannot build ms_optim kernel '{family}': C++ compiler '{compiler}' not found "
                               f"(set CXX to a C++17 compiler)")
    sources, _ = _sources(root, family)
    out_dir = os.path.dirname(out_path)
    tmp = None
    try:
        os.makedirs(out_dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out_path) + _TMP_MARK, dir=out_dir)
        os.close(fd)
        cmd = [compiler, *CXX_FLAGS, "-I", os.path.join(root, "common"), *sources, "-o", tmp]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise KernelBuildError(f"building ms_optim kernel '{family}' failed:\n{' '.join(cmd)}\n{result.stderr}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out_path)
        tmp = None
        _write_manifest(out_path)
    except OSError as err:
        raise KernelBuildError(f"building ms_optim kernel '{family}' into {out_dir} failed: {err}") from err
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return out_path


def cache_dir():
    """``$MS_OPTIM_CACHE_DIR`` or ``~/.cache/ms_optim``. A relative ``$MS_OPTIM_CACHE_DIR`` is refused: it would
    load libraries from wherever the process happens to start."""
    directory = os.environ.get("MS_OPTIM_CACHE_DIR")
    if directory is None or directory == "":
        return os.path.join(os.path.expanduser("~"), ".cache", "ms_optim")
    if not os.path.isabs(directory):
        raise KernelBuildError(f"MS_OPTIM_CACHE_DIR must be an absolute path, but got {directory!r}: a relative "
                               f"cache would load kernel libraries from the current directory. Set it to an "
                               f"absolute path of a directory only you can write, or unset it.")
    return directory


def _check_owner_and_mode(path, st, what):
    """``path`` (stat ``st``) must be owned by this user or root and not writable by group or others."""
    uid = os.getuid()
    if st.st_uid not in (uid, 0):
        raise KernelBuildError(f"refusing the ms_optim kernel {what} {path}: it is owned by uid {st.st_uid}, not by "
                               f"you (uid {uid}) or root, so its owner could run code in your process. Remove it "
                               f"or point MS_OPTIM_CACHE_DIR to a directory of your own.")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise KernelBuildError(f"refusing the ms_optim kernel {what} {path}: it is writable by group or others "
                               f"(mode {stat.S_IMODE(st.st_mode):o}), so they could plant code that runs in your "
                               f"process. " + (f"Point MS_OPTIM_CACHE_DIR at a directory of your own (mkdir -m 700 "
                                               f"DIR), or, if only you use it, chmod go-w {path}" if what == "directory"
                                               else f"Fix with: chmod go-w {path}"))


def _check_directory(directory):
    st = os.stat(directory)  # the directory itself may be reached through a symlink: its target is checked
    if not stat.S_ISDIR(st.st_mode):
        raise KernelBuildError(f"the ms_optim kernel cache {directory} is not a directory")
    _check_owner_and_mode(directory, st, "directory")


def verify_library(path, check_owner=True):
    """Raises KernelBuildError unless ``path`` is a regular file (not a symlink) owned by this user or root,
    writable by no one else, whose size and SHA-256 are those recorded when it was built. ``check_owner=False``
    (the installed library) skips the owner and mode rules, not the rest."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise KernelBuildError(f"refusing the ms_optim kernel library {path}: it is not a regular file "
                                   f"(a symlink or a special file). Remove it; it will be rebuilt.")
        if check_owner:
            _check_owner_and_mode(path, st, "library")
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if _verified.get(path) == key:
            return path
        manifest = _manifest_path(path)
        mst = os.lstat(manifest)
        if stat.S_ISLNK(mst.st_mode) or not stat.S_ISREG(mst.st_mode):
            raise KernelBuildError(f"refusing {manifest}: not a regular file")
        if check_owner:
            _check_owner_and_mode(manifest, mst, "manifest")
        with open(manifest, encoding="utf-8") as f:
            recorded = json.load(f)
        size, sha = _file_digest(path)
    except FileNotFoundError as err:
        raise KernelBuildError(f"ms_optim kernel library {path} or its manifest is missing: {err}") from err
    except (OSError, ValueError) as err:
        raise KernelBuildError(f"cannot verify the ms_optim kernel library {path}: {err}") from err
    if not isinstance(recorded, dict) or recorded.get("size") != size or recorded.get("sha256") != sha:
        raise KernelBuildError(f"the ms_optim kernel library {path} is damaged: {size} bytes with SHA-256 "
                               f"{sha[:16]}..., but {recorded!r} was recorded when it was built")
    _verified[path] = key
    return path


def _open_lock(path):
    """Opens (creating, never truncating) the lock file ``path`` without following a symlink."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise KernelBuildError(f"refusing the ms_optim kernel lock {path}: it is a symlink (a planted symlink "
                                   f"could make the lock clobber another file). Remove it.") from err
        raise KernelBuildError(f"cannot open the ms_optim kernel lock {path}: {err}") from err


def locate_library(family):
    """Absolute path of the verified library for ``family``: the installed one, else the cached one, (re)built
    when it is missing or fails verification. Raises KernelBuildError when none can be had."""
    name = library_name(family)
    installed = os.path.join(PACKAGE_LIB_DIR, name)
    try:
        if os.path.lexists(installed):
            # The installed library is trusted as the package's own .py files are (whoever can write one can
            # write the other), so their owner and mode are not checked: pip gives them the installing user's
            # umask (group-writable under the common umask 002). It is still verified against its manifest.
            return verify_library(installed, check_owner=False)
        return _cached_library(family, name)
    except KernelBuildError as err:
        if not os.path.lexists(installed):
            raise
        try:  # an installed library that fails its checks: the per-user cache may still serve
            return _cached_library(family, name)
        except KernelBuildError as cache_err:
            raise KernelBuildError(f"{err}; and from the cache: {cache_err}") from cache_err


def _cached_library(family, name):
    directory = cache_dir()
    cached = os.path.join(directory, name)
    if os.path.isdir(directory):
        _check_directory(directory)
        try:
            return verify_library(cached)  # no lock needed: a read-only cache with a good library works
        except KernelBuildError:
            if os.path.islink(cached):
                raise
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as err:
        raise KernelBuildError(f"cannot create the ms_optim kernel cache {directory}: {err}") from err
    _check_directory(directory)
    fd = _open_lock(cached + ".lock")
    try:
        _check_owner_and_mode(cached + ".lock", os.fstat(fd), "lock")
        fcntl.flock(fd, fcntl.LOCK_EX)  # the first process builds, the others wait and then find it
        try:
            return verify_library(cached)  # built by another process while this one waited
        except KernelBuildError:
            if os.path.islink(cached):
                raise
        _remove_stale_temporaries(cached)
        compile_library(family, cached)
        return verify_library(cached)
    finally:
        os.close(fd)  # releases the lock


def build_all(package_dir):
    """Used by setup.py: compile every family into ``<package_dir>/_lib``; returns the paths written."""
    root = source_root()
    lib_dir = os.path.join(package_dir, "_lib")
    return [compile_library(family, os.path.join(lib_dir, library_name(family, root)), root) for family in FAMILIES]
