"""The Triton kernel family: fused ops over NHWC, one module each (kernel, then a launcher that
checks → allocates → launches); their math and PyTorch references are in ``kernels/spec.py``.

Importing this package imports Triton: set ``TRITON_INTERPRET=1`` before that to run the kernels
on the CPU through Triton's interpreter (slowly, for testing). Every kernel family exposes the
same names (see ``hgnet_kernels.backends``).
"""
from typing import Optional

from ...plan import stride_label
from ..spec import pack_conv_weight, pack_depthwise_weight
from ._common import unavailable_reason
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


def unsupported(op) -> Optional[str]:
    """Why these kernels cannot run a plan op exactly, or None. They run: dense convs k×k with k 1,
    2 or 3, stride 1 or 2, any zero padding < k per side, with ReLU, the scalar affine and a
    residual in the epilogue (the aggregation: a 1×1/1 conv with ReLU and nothing after it);
    depthwise k×k with k 3 or 5, stride 1 or 2 per axis ((2, 1) and (1, 2) too), padding < k, ReLU
    and affine, no residual; max pools k 2 or 3, stride 1 or 2, padding < k, padded taps ignored or
    zeros."""
    if op.kind not in ("conv", "depthwise", "aggregation", "max_pool"):
        return None
    kernels = {"conv": (1, 2, 3), "aggregation": (1,), "depthwise": (3, 5), "max_pool": (2, 3)}[op.kind]
    if op.kernel not in kernels:
        return f"{op.name}: a {op.kernel}×{op.kernel} {op.kind}"
    strides = (1,) if op.kind == "aggregation" else (1, 2)
    if any(s not in strides for s in op.stride) or op.kind != "depthwise" and op.stride[0] != op.stride[1]:
        return f"{op.name}: {op.kind} stride {stride_label(op.stride)}"
    if len(op.padding) != 4 or any(not 0 <= p < op.kernel for p in op.padding):
        return f"{op.name}: padding {op.padding}"
    if op.kind == "depthwise":
        if op.groups != op.reads[0].channels or op.writes[0].channels != op.reads[0].channels:
            return f"{op.name}: a grouped conv with {op.groups} groups (only depthwise: groups = channels)"
        if op.residual:
            return f"{op.name}: a depthwise conv with a residual epilogue"
    elif op.kind in ("conv", "aggregation") and op.groups != 1:
        return f"{op.name}: a grouped conv with {op.groups} groups"
    if op.kind == "aggregation" and (not op.relu or op.affine or op.residual):
        return f"{op.name}: an aggregation epilogue other than ReLU"
    if op.kind == "max_pool" and (op.relu or op.affine or op.residual):
        return f"{op.name}: a max pool with an epilogue"
    return None

__all__ = ["NAME", "IN_PLACE", "CUDA_GRAPHS", "OPTIONS", "unavailable_reason", "unsupported", "pack_conv_weight",
           "pack_depthwise_weight", "conv_bn_act", "aggregation_ese", "partial_sums_shape", "depthwise_conv",
           "max_pool", "ese_gate", "scale_residual", "RESOLVES", "resolve_conv_bn_act", "resolve_aggregation_ese",
           "resolve_depthwise", "resolve_max_pool", "resolve_ese_gate", "resolve_scale_residual"]
