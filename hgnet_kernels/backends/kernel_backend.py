"""The network run through our own fused kernels, NHWC end to end: the orchestration shared by the
``"triton"`` and ``"cuda"`` backends, which differ only in the ops they plug in.

Per HG-Block one channels_last buffer holds [block input | layer 1 | … | layer L]: the previous
block's scale + residual (or the stage's downsample, or the stem's max pool) writes slot 0, each
3×3 layer reads the previous slot and writes its own, and the aggregation GEMM reads the whole
buffer — the concatenation is never copied. The aggregation's epilogue emits the ESE partial sums,
``ese_gate`` turns them into the gate, and ``scale_residual`` writes the block output straight
into the next block's slot 0 (or the stage output). The head (avgpool → 1×1 conv → ReLU → FC, a
few GEMVs on a 1×1 map) runs in PyTorch.

On CUDA, ``cuda_graph=True`` captures one graph per input shape, strides and dtype (LRU-bounded,
``max_graphs``) and replays it; batch-1 latency is otherwise dominated by ~80 kernel launches.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import List, Optional

import torch

from ..folding import FoldedBlock, FoldedConv, FoldedNet
from .torch_backend import head

log = logging.getLogger(__name__)


class KernelBackend:
    """Runs a ``FoldedNet`` through an op table with the signatures of ``hgnet_kernels.ops``:
    ``conv(x, w, b, stride, relu, out)``, ``aggregation(x, w, b) -> (y, psum)``,
    ``depthwise(x, w, b, stride, out)``, ``gate(psum, w, b, hw)``, ``max_pool(x, out)``,
    ``scale_residual(y, gate, identity, out)``; ``pack_conv`` / ``pack_depthwise`` lay weights out."""

    name = "kernels"
    OPTIONS = {"cuda_graph": (bool, "capture and replay CUDA graphs, CUDA only"),
               "max_graphs": (int, "graphs kept, one per input shape, LRU")}

    def __init__(self, net: FoldedNet, ops: dict, device: torch.device, cuda_graph: bool = False,
                 max_graphs: int = 8):
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device; the model is on {device}")
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        self.ops = ops
        self.net = net
        self.cuda_graph = cuda_graph
        self.max_graphs = max_graphs
        self._graphs: "OrderedDict[tuple, tuple]" = OrderedDict()
        self._graph_lock = threading.Lock()
        self._packed = {}
        for module in net.modules():
            if isinstance(module, FoldedConv):
                pack = ops["pack_depthwise"] if module.groups > 1 else ops["pack_conv"]
                self._packed[id(module)] = pack(module.weight)

    def _conv(self, conv: FoldedConv, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        if conv.groups > 1:
            return self.ops["depthwise"](x, self._packed[id(conv)], conv.bias, conv.stride, out=out)
        return self.ops["conv"](x, self._packed[id(conv)], conv.bias, conv.stride, conv.relu, out=out)

    @staticmethod
    def _block_buffer(block: FoldedBlock, like: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return torch.empty((like.shape[0], block.total_channels, h, w), device=like.device,
                           dtype=like.dtype, memory_format=torch.channels_last)

    def _block(self, block: FoldedBlock, buffer: torch.Tensor, out: torch.Tensor) -> None:
        c = block.in_channels
        block_input = previous = buffer[:, :c]
        for layer in block.layers:
            previous = self._conv(layer, previous, out=buffer[:, c:c + layer.out_channels])
            c += layer.out_channels
        y, psum = self.ops["aggregation"](buffer, self._packed[id(block.aggregation)], block.aggregation.bias)
        gate = self.ops["gate"](psum, block.ese_weight, block.ese_bias, y.shape[2] * y.shape[3])
        self.ops["scale_residual"](y, gate, block_input if block.identity else None, out=out)

    def _features(self, x: torch.Tensor) -> List[torch.Tensor]:
        for conv in self.net.stem:
            x = self._conv(conv, x)
        features = []
        for index, stage in enumerate(self.net.stages):
            first = stage.blocks[0]
            halve = index == 0 or stage.downsample is not None  # stem pool / LDS: k3 s2 p1
            h, w = ((x.shape[2] - 1) // 2 + 1, (x.shape[3] - 1) // 2 + 1) if halve else x.shape[2:]
            buffer = self._block_buffer(first, x, h, w)
            slot0 = buffer[:, :first.in_channels]
            if index == 0:
                self.ops["max_pool"](x, out=slot0)
            elif stage.downsample is not None:
                self._conv(stage.downsample, x, out=slot0)
            else:
                slot0.copy_(x)
            for i, block in enumerate(stage.blocks):
                last = i + 1 == len(stage.blocks)
                if last:
                    out = torch.empty((x.shape[0], block.out_channels, h, w), device=x.device,
                                      dtype=x.dtype, memory_format=torch.channels_last)
                else:
                    next_buffer = self._block_buffer(stage.blocks[i + 1], x, h, w)
                    out = next_buffer[:, :block.out_channels]
                self._block(block, buffer, out)
                if not last:
                    buffer = next_buffer
            x = out
            features.append(x)
        return features

    def _run(self, x: torch.Tensor) -> List[torch.Tensor]:
        features = self._features(x)
        return features + [head(self.net, features[-1])]

    def run(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage maps followed by the logits."""
        if not self.cuda_graph:
            return self._run(x)
        key = (tuple(x.shape), tuple(x.stride()), x.dtype)
        with self._graph_lock:  # static input/output buffers are shared by every caller
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(x)
                self._graphs[key] = entry
                while len(self._graphs) > self.max_graphs:
                    self._graphs.popitem(last=False)
            else:
                self._graphs.move_to_end(key)
            graph, static_in, static_out = entry
            static_in.copy_(x)
            graph.replay()
            return [t.clone() for t in static_out]

    def _capture(self, x: torch.Tensor):
        log.info("%s backend: capturing a CUDA graph for input %s %s (%d cached)", self.name, tuple(x.shape),
                 x.dtype, len(self._graphs))
        static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        static_in.copy_(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # compiles every kernel before capture
            self._run(static_in)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._run(static_in)
        return graph, static_in, static_out

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        return self.run(x)[:4]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[4]
