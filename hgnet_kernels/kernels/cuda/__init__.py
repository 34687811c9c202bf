"""The CUDA C++ kernel family: ``csrc/*.cu`` through a torch extension on a GPU (``extension``:
prebuilt by setup.py or JIT-built at first use, ``build``: toolchain discovery), or through the CPU
emulator build of the same sources (``emulator``) for CPU tensors. Importing it compiles nothing.
Every kernel family exposes the same names (see ``hgnet_kernels.backends``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ...plan import stride_label
from ..spec import pack_conv_weight, pack_depthwise_weight
from .ops import aggregation_ese, conv_bn_act, depthwise_conv, ese_gate, max_pool, partial_sums_shape, scale_residual

NAME = "cuda"
IN_PLACE = True  # writes HG-Block layer outputs straight into their concat slots
CUDA_GRAPHS = True
OPTIONS = {"tf32x3": (bool, "fp32 convs on sm_80+ tensor cores as 3×TF32; unverified on a GPU, off by default")}
EMULATE_ENV = "HGNET_KERNELS_CUDA_EMULATE"


def unsupported(op) -> Optional[str]:
    """Why the CUDA kernels cannot run a plan op exactly, or None. They run: convs k×k with k 1, 2
    or 3, stride 1 or 2, any zero padding below k per side ("SAME" 2×2 included), with ReLU, the
    affine and a residual in the epilogue; the aggregation 1×1 + ReLU with the ESE sums; depthwise
    k 3 or 5, stride 1 or 2 per axis ((2, 1) and (1, 2) too), with ReLU and the affine; max pools
    2×2 or 3×3, stride 1 or 2, padded taps ignored or zero. Every path (SIMT, WMMA, sm_80+ mma.sync) implements all of it."""
    if op.kind not in ("conv", "aggregation", "depthwise", "max_pool"):
        return None
    kernels = {"conv": (1, 2, 3), "aggregation": (1,), "depthwise": (3, 5), "max_pool": (2, 3)}[op.kind]
    if op.kernel not in kernels:
        return f"{op.name}: a {op.kernel}×{op.kernel} {op.kind}"
    strides = (1,) if op.kind == "aggregation" else (1, 2)
    if any(s not in strides for s in op.stride) or op.kind != "depthwise" and op.stride[0] != op.stride[1]:
        return f"{op.name}: stride {stride_label(op.stride)}"
    if len(op.padding) != 4 or any(not 0 <= p < op.kernel for p in op.padding):
        return f"{op.name}: padding {op.padding}"
    if op.kind == "conv" and op.groups != 1:
        return f"{op.name}: a grouped conv ({op.groups} groups)"
    if op.kind == "aggregation" and (not op.relu or op.affine or op.residual):
        return f"{op.name}: an aggregation other than 1×1 + ReLU (with the ESE sums)"
    if op.kind == "depthwise" and op.residual:
        return f"{op.name}: a depthwise conv with a residual"
    if op.kind == "max_pool" and (op.relu or op.affine or op.residual):
        return f"{op.name}: a max pool with an epilogue"
    return None


def unavailable_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """Why the CUDA kernels cannot run on ``device``, or None (cheap: never compiles)."""
    if device.type == "cuda":
        from .extension import unavailable_reason as extension_unavailable
        return extension_unavailable()
    if device.type == "cpu":
        if os.environ.get(EMULATE_ENV) == "1":
            return None
        return (f"the CUDA backend needs a CUDA GPU; to run its kernels on the CPU through the emulator "
                f"(slow, for testing) set {EMULATE_ENV}=1")
    return f"device type {device.type!r} is not supported"


__all__ = ["NAME", "IN_PLACE", "CUDA_GRAPHS", "OPTIONS", "unavailable_reason", "unsupported", "pack_conv_weight",
           "pack_depthwise_weight", "conv_bn_act", "aggregation_ese", "partial_sums_shape", "depthwise_conv",
           "max_pool", "ese_gate", "scale_residual"]
