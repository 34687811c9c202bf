"""The ``"triton"`` backend: ``KernelBackend`` with the Triton ops of ``hgnet_kernels.ops``.

Options: ``allow_tf32`` (default False, so fp32 results match eager fp32), ``cuda_graph`` and
``max_graphs`` (see ``kernel_backend``).
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..folding import FoldedNet
from .kernel_backend import KernelBackend


class TritonBackend(KernelBackend):
    name = "triton"
    OPTIONS = {**KernelBackend.OPTIONS, "allow_tf32": (bool, "fp32 convs on TF32 tensor cores")}

    @staticmethod
    def unavailable_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (pip install triton; Linux only)"
        from ..ops._common import interpreting
        if device.type == "cuda":
            return None
        if device.type == "cpu":
            if interpreting():
                return None
            return ("Triton kernels need a CUDA GPU; to run them on the CPU through Triton's interpreter "
                    "(slow, for testing) set TRITON_INTERPRET=1 before importing hgnet_kernels")
        return f"device type {device.type!r} is not supported"

    def __init__(self, net: FoldedNet, dtype: torch.dtype, device: torch.device, allow_tf32: bool = False,
                 cuda_graph: bool = False, max_graphs: int = 8):
        from ..ops import aggregation_ese, checks, conv_bn_act, depthwise_conv, ese_gate, max_pool, scale_residual
        ops = dict(conv=functools.partial(conv_bn_act.conv_bn_act, allow_tf32=allow_tf32),
                   aggregation=functools.partial(aggregation_ese.aggregation_ese, allow_tf32=allow_tf32),
                   depthwise=depthwise_conv.depthwise_conv, gate=ese_gate.ese_gate, max_pool=max_pool.max_pool,
                   scale_residual=scale_residual.scale_residual, pack_conv=checks.pack_conv_weight,
                   pack_depthwise=checks.pack_depthwise_weight)
        super().__init__(net, ops, device, cuda_graph=cuda_graph, max_graphs=max_graphs)
