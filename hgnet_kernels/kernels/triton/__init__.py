"""The Triton kernel family: fused ops over NHWC, one module each (kernel, then a launcher that
checks → allocates → launches); their math and PyTorch references are in ``kernels/spec.py``.

Importing this package imports Triton: set ``TRITON_INTERPRET=1`` before that to run the kernels
on the CPU through Triton's interpreter (slowly, for testing). Every kernel family exposes the
same names (see ``hgnet_kernels.backends``).
"""
from ..spec import pack_conv_weight, pack_depthwise_weight, unsupported_by_v1_kernels as unsupported
from ._common import unavailable_reason
from .aggregation_ese import aggregation_ese
from .conv_bn_act import conv_bn_act
from .depthwise_conv import depthwise_conv
from .ese_gate import ese_gate
from .max_pool import max_pool
from .scale_residual import scale_residual

NAME = "triton"
IN_PLACE = True  # writes HG-Block layer outputs straight into their concat slots
CUDA_GRAPHS = True
OPTIONS = {"allow_tf32": (bool, "fp32 convs on TF32 tensor cores")}

__all__ = ["NAME", "IN_PLACE", "CUDA_GRAPHS", "OPTIONS", "unavailable_reason", "unsupported", "pack_conv_weight",
           "pack_depthwise_weight", "conv_bn_act", "aggregation_ese", "depthwise_conv", "max_pool", "ese_gate",
           "scale_residual"]
