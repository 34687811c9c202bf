"""The Triton kernel family: fused ops over NHWC, one module each (kernel, then a launcher that
checks → allocates → launches); their math and PyTorch references are in ``kernels/spec.py``.

Importing this package imports Triton: set ``TRITON_INTERPRET=1`` before that to run the kernels
on the CPU through Triton's interpreter (slowly, for testing). Every kernel family exposes the
same names (see ``hgnet_kernels.backends``).
"""
from ..spec import pack_conv_weight, pack_depthwise_weight
from ._common import compiling_for, unavailable_reason
from .capabilities import SUPPORTS
from .aggregation_ese import aggregation_ese, resolve_aggregation_ese
from .conv_bn_act import conv_bn_act, partial_sums_shape, resolve_conv_bn_act
from .depthwise_conv import depthwise_conv, resolve_depthwise
from .ese_gate import ese_gate, resolve_ese_gate
from .max_pool import max_pool, resolve_max_pool
from .scale_residual import resolve_scale_residual, scale_residual

NAME = "triton"
IN_PLACE = True  # writes HG-Block layer outputs straight into their concat slots
CUDA_GRAPHS = True
# Launches are resolved once per input shape (``resolve_*``: checks, configs, grids, workspace
# shapes), and the backend replays the resolved launches on later calls of that shape.
RESOLVES = True
OPTIONS = {"allow_tf32": (bool, "fp32 convs on TF32 tensor cores"),
           "tf32x3": (bool, "fp32 convs on tensor cores as 3×TF32 (error-compensated split; not yet verified "
                            "on a GPU against the fp32 1e-5 guarantee)")}


__all__ = ["NAME", "IN_PLACE", "CUDA_GRAPHS", "OPTIONS", "unavailable_reason", "SUPPORTS", "pack_conv_weight",
           "pack_depthwise_weight", "conv_bn_act", "aggregation_ese", "partial_sums_shape", "depthwise_conv",
           "max_pool", "ese_gate", "scale_residual", "RESOLVES", "resolve_conv_bn_act", "resolve_aggregation_ese",
           "resolve_depthwise", "resolve_max_pool", "resolve_ese_gate", "resolve_scale_residual", "compiling_for"]
