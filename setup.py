"""Install ms_optim and compile its CPU kernels into the package (g++ only; mindspore is not needed to build).

Environment:
  CXX                   the C++17 compiler to use (default: g++); checked before anything is downloaded.
  MS_OPTIM_NO_KERNELS=1 install without compiling the kernels (no compiler needed): the optimizers then run their
                        reference path under impl="auto" (impl="fused" raises), unless a compiler is found later,
                        in which case the kernels are built on first use into ~/.cache/ms_optim.
"""
import importlib.util
import os
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.develop import develop

HERE = os.path.dirname(os.path.abspath(__file__))
NO_KERNELS = os.environ.get("MS_OPTIM_NO_KERNELS", "").strip() not in ("", "0")


def _check_compiler():
    """Stop at once, with what to do, when the kernels cannot be compiled. pip runs this file to get the build
    requirements before it resolves and downloads the dependencies (mindspore is about 800 MB), so a missing
    compiler is reported before anything heavy happens."""
    if NO_KERNELS or "sdist" in sys.argv:
        return
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        sys.exit(f"\nms_optim: C++ compiler {compiler!r} not found (taken from $CXX, default g++); the fused kernels "
                 f"are compiled at install time.\n"
                 f"  - install one (Debian/Ubuntu: apt-get install g++), or point CXX at a C++17 compiler: "
                 f"CXX=clang++ pip install ...\n"
                 f"  - or install the reference path only (plain MindSpore ops, no compiler): "
                 f"MS_OPTIM_NO_KERNELS=1 pip install ...\n")


_check_compiler()


def _build_module():
    """ms_optim/kernels/_build.py, loaded by path so that building never imports mindspore."""
    spec = importlib.util.spec_from_file_location("_ms_optim_build", os.path.join(HERE, "ms_optim", "kernels",
                                                                                  "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildPyWithKernels(build_py):
    """Regular build, plus the kernel sources (for rebuilds on first use) and the compiled libraries."""

    def run(self):
        super().run()
        package_dir = os.path.join(self.build_lib, "ms_optim")
        shutil.copytree(os.path.join(HERE, "ops"), os.path.join(package_dir, "_ops"), dirs_exist_ok=True)
        if NO_KERNELS:
            print("ms_optim: MS_OPTIM_NO_KERNELS is set: kernels not compiled; the optimizers run the reference path")
            return
        for path in _build_module().build_all(package_dir):
            print(f"ms_optim: built {path}")


class DevelopWithKernels(develop):
    """Editable installs (legacy path) compile the libraries into the source tree's ms_optim/_lib."""

    def run(self):
        super().run()
        if NO_KERNELS:
            return
        for path in _build_module().build_all(os.path.join(HERE, "ms_optim")):
            print(f"ms_optim: built {path}")


setup(
    name="ms_optim",
    version="0.1.0",
    description="MindSpore-native optimizers with fused CPU kernels",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["ms_optim", "ms_optim.*"]),
    python_requires=">=3.9",
    # mindspore wheels are built against numpy 1.x; with numpy 2 it cannot exchange bfloat16 arrays
    install_requires=["mindspore>=2.7.2", "numpy<2"],
    # torch is pinned exactly (an unpinned torch pulls a multi-GB CUDA build); torch and bitsandbytes are the
    # peers of the Adagrad parity tests, which skip with a printed reason without them. main: the main job's
    # (ms-optim train) progress bars and plot.
    extras_require={"test": ["pytest", "torch==2.13.0", "bitsandbytes"], "main": ["tqdm", "matplotlib"]},
    entry_points={"console_scripts": ["ms-optim = ms_optim.__main__:main"]},
    cmdclass={"build_py": BuildPyWithKernels, "develop": DevelopWithKernels},
    zip_safe=False,
)
