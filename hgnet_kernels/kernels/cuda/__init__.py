"""The CUDA C++ kernel family: ``csrc/*.cu`` through a torch extension on a GPU (``extension``:
prebuilt by setup.py or JIT-built at first use, ``build``: toolchain discovery), or through the CPU
emulator build of the same sources (``emulator``) for CPU tensors. Importing it compiles nothing.
Every kernel family exposes the same names (see ``hgnet_kernels.backends``).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..spec import pack_conv_weight, pack_depthwise_weight
from .capabilities import SUPPORTS
from .ops import (aggregation_ese, conv_bn_act, depthwise_conv, ese_gate, max_pool, partial_sums_shape,
                  resolve_aggregation_ese, resolve_conv_bn_act, resolve_depthwise, resolve_ese_gate, resolve_max_pool,
                  resolve_scale_residual, scale_residual)

NAME = "cuda"
IN_PLACE = True  # writes HG-Block layer outputs straight into their concat slots
CUDA_GRAPHS = True
# Launches are resolved once per input shape (``resolve_*``: checks, conv tiles, workspace sizes,
# bound launch arguments), and the backend replays the resolved launches on later calls of that shape.
RESOLVES = True
OPTIONS = {"tf32x3": (bool, "fp32 convs on sm_80+ tensor cores as 3×TF32; unverified on a GPU, off by default")}
EMULATE_ENV = "HGNET_KERNELS_CUDA_EMULATE"


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


__all__ = ["NAME", "IN_PLACE", "CUDA_GRAPHS", "OPTIONS", "unavailable_reason", "SUPPORTS", "pack_conv_weight",
           "pack_depthwise_weight", "conv_bn_act", "aggregation_ese", "partial_sums_shape", "depthwise_conv",
           "max_pool", "ese_gate", "scale_residual", "RESOLVES", "resolve_conv_bn_act", "resolve_aggregation_ese",
           "resolve_depthwise", "resolve_max_pool", "resolve_ese_gate", "resolve_scale_residual"]
