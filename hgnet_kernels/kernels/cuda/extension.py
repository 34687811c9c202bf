"""Loading the CUDA extension: the one setup.py built (``hgnet_kernels._C``), else a JIT build.

The JIT build (``torch.utils.cpp_extension.load`` with ninja) goes to a cache directory named after
the sources' hash, torch's version, its CUDA version and the arch list, so a stale build is never
picked up; it is built once and reused. A prebuilt ``_C`` carries ``_C_build.json`` (torch and
CUDA versions, archs, source hash), checked at load so a mismatch gives a clear message instead of
an undefined symbol.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import json
import logging
import os
import sys
from typing import Optional

import torch

from . import build as cuda_build

log = logging.getLogger(__name__)
BUILD_INFO = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "_C_build.json")


def build_info() -> dict:
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "archs": cuda_build.arch_list()}


def _prebuilt():
    try:
        module = importlib.import_module("hgnet_kernels._C")
    except ImportError:
        return None
    try:
        with open(BUILD_INFO) as f:
            built = json.load(f)
    except OSError:
        built = {}
    if built.get("torch") != torch.__version__ or built.get("cuda") != torch.version.cuda:
        raise RuntimeError(f"hgnet_kernels._C was built for torch {built.get('torch')} / CUDA {built.get('cuda')}, "
                           f"but this is torch {torch.__version__} / CUDA {torch.version.cuda}: rebuild it "
                           "(pip install -e . --no-build-isolation), or delete hgnet_kernels/_C*.so to JIT-build")
    try:
        current = cuda_build.source_hash()
    except FileNotFoundError:
        current = built.get("sources")
    if built.get("sources") != current:
        raise RuntimeError("hgnet_kernels._C is stale: csrc/ changed since it was built; rebuild it "
                           "(pip install -e . --no-build-isolation) or delete hgnet_kernels/_C*.so to JIT-build")
    return module


# ninja's output of every build in an extension's directory, appended: nvcc's ``-Xptxas -v`` report
# of each object it compiled is in it (tests/test_cuda_build.py checks it for spills).
BUILD_LOG = "build.log"


def build_directory(archs: Optional[str] = None) -> str:
    """Where the JIT build for ``archs`` (default: the configured list) goes: named after the sources,
    torch, CUDA and the archs; and after the build log, which directories built before it was kept lack."""
    return os.path.join(cuda_build.cache_dir(), f"cuda-ext-{_build_tag(archs or cuda_build.arch_list())}")


def _build_tag(archs: str) -> str:
    return cuda_build.source_hash(json.dumps({**build_info(), "archs": archs, "log": BUILD_LOG}, sort_keys=True))


@contextlib.contextmanager
def _stdout_into(log):
    """File descriptor 1, where torch's verbose build runs ninja, written into ``log`` meanwhile."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(log.fileno(), 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def jit_build(verbose: bool = False, archs: Optional[str] = None):
    """Build (or reuse) the extension with ninja; returns the loaded module. ninja's output goes to
    the directory's build log, and is printed too when ``verbose``."""
    reason = cuda_build.can_build_extension()
    if reason:
        raise RuntimeError(f"cannot build the CUDA extension: {reason}")
    archs = archs or cuda_build.arch_list()
    home = cuda_build.cuda_home()
    os.environ["CUDA_HOME"] = home
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs.replace(",", ";")
    import torch.utils.cpp_extension as cpp_extension
    cpp_extension.CUDA_HOME = home  # computed at import; the nvcc on PATH may be a wrapper elsewhere
    build_dir = build_directory(archs)
    os.makedirs(build_dir, exist_ok=True)
    csrc = cuda_build.csrc_dir()
    sources = [os.path.join(csrc, s) for s in cuda_build.KERNEL_SOURCES + ["bindings.cpp"]]
    if not os.path.exists(os.path.join(build_dir, "build.ninja")):
        log.warning("building the hgnet_kernels CUDA extension for %s in %s: first use only, this takes a few "
                    "minutes (prebuild with pip install -e . --no-build-isolation)", archs, build_dir)
    log_path = os.path.join(build_dir, BUILD_LOG)
    with open(log_path, "a") as build_log:
        start = build_log.tell()
        try:
            with _stdout_into(build_log):
                module = cpp_extension.load(
                    name=f"hgnet_kernels_cuda_{_build_tag(archs)}", sources=sources,
                    build_directory=build_dir, extra_include_paths=[csrc], extra_cflags=cuda_build.host_compile_flags(),
                    extra_cuda_cflags=cuda_build.NVCC_FLAGS, verbose=True)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{_read_from(log_path, start)[-8000:]}") from e
    if verbose:
        sys.stdout.write(_read_from(log_path, start))
    return module


def _read_from(path: str, offset: int) -> str:
    """The text of ``path`` from byte ``offset`` on."""
    with open(path) as f:
        f.seek(offset)
        return f.read()


def _ensure_built(archs: Optional[str]) -> None:
    """Build for ``archs`` unless its library is there (linked last: every object and its report are
    then too), without loading it again."""
    archs = archs or cuda_build.arch_list()
    if not os.path.exists(os.path.join(build_directory(archs), f"hgnet_kernels_cuda_{_build_tag(archs)}.so")):
        jit_build(archs=archs)


def ptxas_report(archs: Optional[str] = None) -> str:
    """ptxas's ``-v`` report of every kernel of the JIT build for ``archs`` (built if it is not), read
    from its build log: the extension's own compile, torch's nvcc flags included. A kernel compiled
    twice (an interrupted build resumed) is reported twice, the later last."""
    _ensure_built(archs)
    report = _read_from(os.path.join(build_directory(archs), BUILD_LOG), 0)
    if "ptxas info" not in report:
        raise RuntimeError(f"the build log of {build_directory(archs)} holds no ptxas report")
    return report


def object_path(source: str, archs: Optional[str] = None) -> str:
    """The object the JIT build for ``archs`` compiled from ``source`` (a .cu of csrc/): its fatbin
    holds the device code of each arch. Built if it is not."""
    _ensure_built(archs)
    path = os.path.join(build_directory(archs), os.path.splitext(source)[0] + ".cuda.o")  # torch's naming
    if not os.path.exists(path):
        raise FileNotFoundError(f"the JIT build compiled no {path}")
    return path


@functools.lru_cache(maxsize=None)
def load():
    """The extension module: prebuilt if importable and current, else JIT-built once (at first use,
    which logs that it builds)."""
    module = _prebuilt()
    if module is not None:
        return module
    return jit_build()


def unavailable_reason() -> Optional[str]:
    """Why the CUDA extension cannot be used here, or None. Cheap: it never compiles (the build
    happens at first use); a prebuilt extension is checked against this torch, an absent one
    against the toolchain a JIT build needs."""
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    if importlib.util.find_spec("hgnet_kernels._C") is not None:
        try:
            _prebuilt()
        except Exception as e:  # noqa: BLE001 - the reason is shown to the user
            return str(e)
        return None
    reason = cuda_build.can_build_extension()
    if reason:
        return f"the CUDA extension is not built and cannot be built here: {reason}"
    return None
