"""Finding the CUDA toolchain and describing the extension build; shared by setup.py and the JIT
loader. Never hard-codes a machine's paths: the toolkit root is what nvcc itself reports, and the
extra headers are those the pip ``nvidia`` packages ship.
"""
from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
from typing import List, Optional, Sequence

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))),
                    "csrc")
KERNEL_SOURCES = ["conv_bn_act.cu", "conv_mma_f16.cu", "conv_mma_bf16.cu", "conv_mma_f32.cu", "depthwise_conv.cu",
                  "max_pool.cu", "ese_gate.cu", "scale_residual.cu", "ptx_probe.cu"]
DEFAULT_ARCHS = "7.5;8.0;8.6;8.9;9.0+PTX"  # nvcc 13 has no sm_70
ARCH_ENV = "HGNET_KERNELS_CUDA_ARCHS"
CACHE_ENV = "HGNET_KERNELS_CACHE"


def cache_dir() -> str:
    """Where the JIT extension, the emulator and the device-code compiles go (``$HGNET_KERNELS_CACHE``)."""
    return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "hgnet_kernels")


def csrc_dir() -> str:
    if not os.path.isdir(CSRC):
        raise FileNotFoundError(f"the CUDA sources are not at {CSRC}: install hgnet_kernels from a source "
                                "checkout (pip install -e .) to build the extension")
    return CSRC


def source_hash(extra: str = "") -> str:
    """Hash of every file under csrc/ (and ``extra``): a change to any of them means a rebuild."""
    h = hashlib.sha256(extra.encode())
    for path in sorted(glob.glob(os.path.join(csrc_dir(), "**", "*"), recursive=True)):
        if os.path.isfile(path):
            h.update(os.path.relpath(path, CSRC).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()[:16]


def find_nvcc() -> Optional[str]:
    return shutil.which("nvcc")


@functools.lru_cache(maxsize=None)
def _nvcc_top(nvcc: str) -> Optional[str]:
    try:
        report = subprocess.run([nvcc, "-v", "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                                capture_output=True, text=True, timeout=60).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", report, re.MULTILINE)
    return os.path.realpath(match.group(1).strip()) if match else None


def cuda_home() -> Optional[str]:
    """The real toolkit root: CUDA_HOME if set, else the TOP that ``nvcc --dryrun`` reports (nvcc may
    be a wrapper script outside the toolkit, where torch's own guess would fail)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = find_nvcc()
    return None if nvcc is None else _nvcc_top(nvcc)


def extra_include_dirs() -> List[str]:
    """Headers torch's CUDA headers include but a minimal toolkit may lack (cusparse.h, …): the
    include dir of pip's ``nvidia/cu<N>`` package."""
    try:
        import nvidia
    except ImportError:
        return []
    dirs = []
    for root in getattr(nvidia, "__path__", []):
        dirs += sorted(glob.glob(os.path.join(root, "cu*", "include")))
    return [d for d in dirs if os.path.isdir(d)]


def host_compile_flags() -> List[str]:
    """g++ flags for bindings.cpp. The extra headers go after every other include dir
    (-idirafter): they only fill gaps, and pip's copies of the runtime headers must not shadow the
    toolkit's. The .cu files include no torch header and need none of them."""
    flags = ["-O3"]  # the C++ standard is torch's choice (C++20 from torch 2.13)
    for d in extra_include_dirs():
        flags += ["-idirafter", d]
    return flags


def arch_list() -> str:
    return os.environ.get(ARCH_ENV, DEFAULT_ARCHS)


def nvcc_arch_flags(archs: str) -> List[str]:
    flags = []
    for arch in archs.replace(",", ";").split(";"):
        arch = arch.strip()
        if not arch:
            continue
        ptx = arch.endswith("+PTX")
        num = arch.replace("+PTX", "").replace(".", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "-Xptxas=-v", "-lineinfo"]


def can_build_extension() -> Optional[str]:
    """None when a torch CUDA extension can be built here, else the reason it cannot."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build; a CUDA build of torch is needed"
    if find_nvcc() is None:
        return "nvcc is not on the PATH (install the CUDA toolkit)"
    if cuda_home() is None:
        return "cannot locate the CUDA toolkit root behind nvcc; set CUDA_HOME"
    return None


# The sources of the sm_80+ conv kernel: CI checks them for spills on every sm_80+ arch it targets
# (the other sources only for sm_90, their code being the same on each).
MMA_SOURCES = ["conv_mma_f16.cu", "conv_mma_bf16.cu", "conv_mma_f32.cu"]
# The sm_80+ archs of the default build below sm_90. No preprocessor branch of csrc/ tells them apart
# (tests/test_cuda_build.py checks every __CUDA_ARCH__ comparison), so one front end (cicc) serves
# all three: the PTX for compute_80 is, but for its .target line, what the build's compute_86 and
# compute_89 passes emit, and ptxas assembles it for each.
SM80_ARCHS = ["8.0", "8.6", "8.9"]


@contextlib.contextmanager
def exclusive(path: str):
    """Hold an exclusive lock on ``path`` (created): other processes building the same output
    (pytest-xdist workers) wait for it instead of compiling it at the same time."""
    import fcntl  # POSIX, as the builds are; importing the CUDA family needs neither
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def compile_device_code(archs: Sequence[str] = ("9.0",), cache: Optional[str] = None,
                        sources: Optional[List[str]] = None) -> str:
    """Compile the kernel sources (default: all) for ``archs`` with ``-Xptxas -v`` into
    ``<cache>/nvcc-sm<arch>[-sm<arch>…]-<hash>/``: ``<source>.fatbin`` each (a cubin per arch) and
    ``ptxas.txt``, ptxas's resource report (written last: its presence means the directory is
    complete). One nvcc per source: cicc emits the PTX once, for the lowest arch, and ptxas assembles
    it for every arch. Cached per source hash; returns the directory. Device code only
    (``-fatbin``): the host pass adds nothing to either."""
    cache = cache or cache_dir()
    sources = list(sources or KERNEL_SOURCES)
    nums = sorted((arch.replace(".", "") for arch in archs), key=int)
    tag = ",".join(nums) if sources == KERNEL_SOURCES else ",".join(nums) + ":" + ",".join(sources)
    out_dir = os.path.join(cache, "nvcc-" + "-".join(f"sm{num}" for num in nums) + f"-{source_hash(tag)}")
    report_path = os.path.join(out_dir, "ptxas.txt")
    if os.path.exists(report_path):
        return out_dir
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc is not on the PATH")
    os.makedirs(out_dir, exist_ok=True)
    with exclusive(report_path + ".lock"):
        if os.path.exists(report_path):
            return out_dir
        gencode = f"-gencode=arch=compute_{nums[0]},code=[{','.join(f'sm_{num}' for num in nums)}]"
        report = []
        for source in sources:
            cmd = [nvcc, *NVCC_FLAGS, gencode, "-I", csrc_dir(), "-fatbin", os.path.join(csrc_dir(), source),
                   "-o", os.path.join(out_dir, source + ".fatbin")]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"nvcc failed on {source}:\n{result.stderr[-4000:]}")
            report.append(f"# {source}\n{result.stderr}")
        with open(report_path + ".tmp", "w") as f:
            f.write("\n".join(report))
        os.replace(report_path + ".tmp", report_path)
    return out_dir


def ptxas_report(arch: str = "9.0", cache: Optional[str] = None, sources: Optional[List[str]] = None,
                 archs: Optional[Sequence[str]] = None) -> str:
    """ptxas's resource report (``-Xptxas -v``) of the kernel sources (default: all) for one arch,
    from the compile for ``archs`` (default: that arch alone), which must include it."""
    archs = list(archs or [arch])
    if arch not in archs:
        raise ValueError(f"arch {arch} is not among the compiled archs {archs}")
    with open(os.path.join(compile_device_code(archs, cache, sources), "ptxas.txt")) as f:
        return for_arch(f.read(), arch)


def for_arch(report: str, arch: str) -> str:
    """The lines of a ptxas -v report of several archs that are about one arch's kernels (each
    kernel's "Compiling entry function" line names its arch; the lines after it belong to it)."""
    target = f"'sm_{arch.replace('.', '')}'"
    lines, keep = [], True
    for line in report.splitlines():
        entry = re.search(r"Compiling entry function '[^']+' for ('sm_\d+')", line)
        if entry:
            keep = entry.group(1) == target
        if keep:
            lines.append(line)
    return "\n".join(lines)


def _per_kernel(report: str, pattern: str, value) -> dict:
    """``{kernel: value(match)}`` for the first line matching ``pattern`` after each kernel's
    "Compiling entry function" line of a ptxas -v report."""
    out, kernel = {}, None
    for line in report.splitlines():
        entry = re.search(r"Compiling entry function '([^']+)'", line)
        if entry:
            kernel = entry.group(1)
        found = re.search(pattern, line)
        if found and kernel:
            out[kernel] = value(found)
            kernel = None
    return out


def registers(report: str) -> dict:
    """``{kernel: registers per thread}`` from a ptxas -v report."""
    return _per_kernel(report, r"Used (\d+) registers", lambda m: int(m.group(1)))


def spills(report: str) -> dict:
    """``{kernel: (spill store bytes, spill load bytes)}`` from a ptxas -v report."""
    return _per_kernel(report, r"(\d+) bytes spill stores, (\d+) bytes spill loads",
                       lambda m: (int(m.group(1)), int(m.group(2))))
