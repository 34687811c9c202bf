"""The sm_80+ conv kernel's main loop, read from its SASS: compiled, never run (nvcc and cuobjdump, no
GPU). For each instantiation of ``csrc/conv_mma.cuh`` (dtype, tile, 16-byte ``cp.async`` or scalar
loads) it reports the loop holding the most tensor-core instructions: its size, HMMA count,
instructions per HMMA and opcode mix, the metric ``hgnet_kernels.aot`` reports for the Triton
kernels (whose SASS reading this reuses, so that both families are measured alike).

    python bench/cuda_sass.py [--archs 9.0 8.0]
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Dict, List, Optional

from ... import aot
from . import build as cuda_build

_FUNCTION = re.compile(r"^\s*Function : (\S+)\s*$", re.MULTILINE)
# conv_mma_kernel<T, BM, BN, WARPS_M, WARPS_N, STAGES, VEC> as the Itanium ABI mangles it.
_MMA_KERNEL = re.compile(r"conv_mma_kernelI(\w+?)Li(\d+)ELi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)ELb([01])E")
_DTYPES = {"6__half": "f16", "13__nv_bfloat16": "bf16", "f": "f32"}


def cuobjdump() -> str:
    """The toolkit's cuobjdump (next to the real nvcc), else the one the Triton wheel ships."""
    home = cuda_build.cuda_home()
    candidates = [os.path.join(home, "bin", "cuobjdump")] if home else []
    candidates.append(shutil.which("cuobjdump"))
    try:
        candidates.append(aot.cuda_tool("cuobjdump"))
    except ImportError:
        pass
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("no cuobjdump: install the CUDA toolkit's cuobjdump or the triton wheel, which ships one")


def function_sass(binary: str, arch: str) -> Dict[str, str]:
    """``{mangled kernel name: its SASS}`` of the ``arch`` cubin in a cubin or fatbin."""
    text = subprocess.run([cuobjdump(), "-sass", "-arch", f"sm_{arch.replace('.', '')}", binary],
                          capture_output=True, text=True, check=True).stdout
    parts = _FUNCTION.split(text)
    return dict(zip(parts[1::2], parts[2::2]))


def instantiation(mangled: str) -> Optional[str]:
    """``"f16 64x128 warps 2x2 stages 4 cp.async16"`` for a conv_mma_kernel, else None."""
    m = _MMA_KERNEL.search(mangled)
    if m is None:
        return None
    dtype, bm, bn, wm, wn, stages, vec = m.groups()
    loads = "cp.async16" if vec == "1" else "scalar"
    return f"{_DTYPES.get(dtype, dtype)} {bm}x{bn} warps {wm}x{wn} stages {stages} {loads}"


def mma_main_loops(arch: str = "9.0", cache: Optional[str] = None, sources: Optional[List[str]] = None,
                   archs: Optional[List[str]] = None) -> Dict[str, Optional[dict]]:
    """``{instantiation: aot.main_loop(...) or None}`` for every conv_mma_kernel compiled for ``arch``.
    ``sources`` (default: the sm_80+ ones) and ``archs`` (default: ``arch`` alone) pick which cached
    compile to read, so that a caller can share the one its spill check made."""
    sources = list(sources or cuda_build.MMA_SOURCES)
    out_dir = cuda_build.compile_device_code(archs or [arch], cache, sources)
    return main_loops_of([os.path.join(out_dir, source + ".fatbin") for source in sources
                          if source in cuda_build.MMA_SOURCES], arch)


def main_loops_of(binaries: List[str], arch: str) -> Dict[str, Optional[dict]]:
    """``{instantiation: aot.main_loop(...) or None}`` for every conv_mma_kernel in the ``arch`` code of
    ``binaries`` (cubins, fatbins or the objects holding them)."""
    loops = {}
    for binary in binaries:
        for name, text in function_sass(binary, arch).items():
            label = instantiation(name)
            if label is not None:
                loops[label] = aot.main_loop(aot.parse_sass(text))
    return loops


def format_report(arch: str, loops: Dict[str, Optional[dict]], mix: int = 8) -> List[str]:
    lines = [f"sm_{arch.replace('.', '')}: conv_mma_kernel main loop (the loop with the most HMMA)",
             f"{'instantiation':<42} {'instr':>6} {'HMMA':>5} {'per HMMA':>9}  opcode mix"]
    for label in sorted(loops):
        loop = loops[label]
        if loop is None:
            lines.append(f"{label:<42} no tensor-core instruction inside a loop")
            continue
        ops = " ".join(f"{op}:{count}" for op, count in list(loop["mix"].items())[:mix])
        lines.append(f"{label:<42} {loop['instructions']:>6} {loop['tensor_core']:>5} "
                     f"{loop['per_tensor_core']:>9.2f}  {ops}")
    return lines
