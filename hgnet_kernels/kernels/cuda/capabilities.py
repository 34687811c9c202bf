"""What the CUDA C++ kernels compute exactly, on every path (SIMT, WMMA, sm_80+ mma.sync), as data:
the one table the executor refuses plan ops by (``spec.not_supported_reasons``) and the launchers
check their arguments against. csrc/bindings.cpp checks only what keeps the kernels' memory
accesses in bounds."""
from ..spec import TILED_KERNELS

SUPPORTS = TILED_KERNELS
