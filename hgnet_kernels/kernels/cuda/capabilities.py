"""What the CUDA C++ kernels compute exactly, on every path (SIMT, WMMA, sm_80+ mma.sync), as data:
the one table the executor refuses plan ops by (``spec.not_supported_reasons``) and the launchers
check their arguments against. csrc/bindings.cpp checks only what keeps the kernels' memory
accesses in bounds."""
from ..spec import Supports

SUPPORTS = {
    # k×k convs, any zero padding below k per side ("SAME" 2×2 included), ReLU, the scalar affine
    # and a residual in the epilogue.
    "conv": Supports(kernels=(1, 2, 3), strides=(1, 2), square_stride=True, padding_below_kernel=True,
                     groups="dense"),
    # The HG-Block aggregation: a 1×1 conv + ReLU with the ESE partial sums, nothing after the ReLU.
    "aggregation": Supports(kernels=(1,), strides=(1,), square_stride=True, padding_below_kernel=True, groups="dense",
                            relu=(True,), affine=(False,), residual=(False,)),
    # Strides per axis: PP-OCR's text-recognition downsamples are (2, 1) and (1, 2).
    "depthwise": Supports(kernels=(3, 5), strides=(1, 2), padding_below_kernel=True, groups="depthwise",
                          residual=(False,)),
    # Padded taps ignored or zeros (``zero_pad``); no epilogue.
    "max_pool": Supports(kernels=(2, 3), strides=(1, 2), square_stride=True, padding_below_kernel=True,
                         relu=(False,), affine=(False,), residual=(False,)),
    "ese_gate": Supports(), "scale_residual": Supports(), "copy": Supports(), "head": Supports(),
}
