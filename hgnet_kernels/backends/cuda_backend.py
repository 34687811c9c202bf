"""The ``"cuda"`` backend: ``KernelBackend`` with our CUDA C++ ops (``hgnet_kernels.cuda_ops``).

On a GPU it uses the torch extension (prebuilt by setup.py, else JIT-built once). On the CPU it
is available only with ``HGNET_KERNELS_CUDA_EMULATE=1``: the same kernel source then runs through
the CPU emulator (slow; for checking numerics where there is no GPU).
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from ..folding import FoldedNet
from .kernel_backend import KernelBackend

EMULATE_ENV = "HGNET_KERNELS_CUDA_EMULATE"


class CudaBackend(KernelBackend):
    name = "cuda"

    @staticmethod
    def unavailable_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
        if device.type == "cuda":
            from ..cuda_ext import unavailable_reason
            return unavailable_reason()
        if device.type == "cpu":
            if os.environ.get(EMULATE_ENV) == "1":
                return None
            return (f"the CUDA backend needs a CUDA GPU; to run its kernels on the CPU through the emulator "
                    f"(slow, for testing) set {EMULATE_ENV}=1")
        return f"device type {device.type!r} is not supported"

    def __init__(self, net: FoldedNet, dtype: torch.dtype, device: torch.device, cuda_graph: bool = False,
                 max_graphs: int = 8):
        from .. import cuda_ops
        ops = dict(conv=cuda_ops.conv_bn_act, aggregation=cuda_ops.aggregation_ese,
                   depthwise=cuda_ops.depthwise_conv, gate=cuda_ops.ese_gate, max_pool=cuda_ops.max_pool,
                   scale_residual=cuda_ops.scale_residual, pack_conv=cuda_ops.pack_conv_weight,
                   pack_depthwise=cuda_ops.pack_depthwise_weight)
        super().__init__(net, ops, device, cuda_graph=cuda_graph, max_graphs=max_graphs)
