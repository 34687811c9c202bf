"""What the Triton kernels compute exactly, as data: the one table the executor refuses plan ops
by (``spec.not_supported_reasons``) and the launchers check their arguments against."""
from ..spec import TILED_KERNELS

SUPPORTS = TILED_KERNELS
