"""The ``"torch"`` backend: PyTorch ops on the folded weights, NHWC (channels_last) end to end.

On the CPU in fp32 the convolutions call oneDNN directly with weights packed once into its
blocked layout (``mkldnn._convolution_pointwise``, the op inductor's CPU freezing path uses);
elsewhere ``F.conv2d`` (cuDNN on GPU). ReLU is an in-place pass after the conv, not oneDNN's fused
ReLU post-op: that one maps NaN to 0, and a NaN must reach the output as it does in eager (the
separate pass is ~1.5 % of tiny's batch-1 time on the CI machine:
bench/results/profile-torch-tiny-b1-2026-11-27.txt).
oneDNN and cuDNN cannot write into a channel slice of a larger tensor, so this backend builds each
HG-Block's concat with one ``torch.cat``; the Triton and CUDA backends write the slices in place.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

from ..folding import FoldedConv, FoldedNet
from ..models.pphgnet import global_pool


_DILATION = [1, 1]


def _onednn_pointwise_available() -> bool:
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
            and hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"))


class TorchBackend:
    name = "torch"
    OPTIONS: dict = {}

    @staticmethod
    def unavailable_reason(device: torch.device, dtype: torch.dtype) -> Optional[str]:
        if device.type not in ("cpu", "cuda"):
            return f"device type {device.type!r} is not supported (cpu or cuda)"
        return None

    def __init__(self, net: FoldedNet, dtype: torch.dtype, device: torch.device):
        self.net = net
        self.use_onednn = device.type == "cpu" and dtype == torch.float32 and _onednn_pointwise_available()
        # Per conv, the arguments of its call, prepared on first use (weights packed with the first
        # input's shape as oneDNN's layout hint: the packed layout stays valid for every other
        # shape, oneDNN reorders if it must), so a forward pass does no per-layer bookkeeping.
        self._calls: Dict[int, tuple] = {}
        # The network as plain lists and tuples: no nn.Module attribute lookups on the hot path.
        self._stem = list(net.stem) if net is not None else []
        self._stages = [] if net is None else [
            (stage.downsample, [(list(b.layers), b.aggregation, b.ese_weight, b.ese_bias, b.identity)
                                for b in stage.blocks]) for stage in net.stages]

    def _prepare(self, conv: FoldedConv, x: torch.Tensor) -> tuple:
        padding, stride = [conv.padding] * 2, [conv.stride] * 2
        weight = conv.weight
        if self.use_onednn:
            weight = torch._C._nn.mkldnn_reorder_conv2d_weight(weight.to_mkldnn(), padding, stride, [1, 1],
                                                               conv.groups, list(x.shape))
        call = (weight, conv.bias, padding, stride, conv.groups, conv.relu)
        self._calls[id(conv)] = call
        return call

    def conv(self, conv: FoldedConv, x: torch.Tensor) -> torch.Tensor:
        call = self._calls.get(id(conv)) or self._prepare(conv, x)
        weight, bias, padding, stride, groups, relu = call
        if self.use_onednn:
            y = torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, _DILATION, groups,
                                                        "none", [], "")
        else:
            y = F.conv2d(x, weight, bias, stride, padding, 1, groups)
        return y.relu_() if relu else y

    def block(self, block: tuple, x: torch.Tensor) -> torch.Tensor:
        layers, aggregation, ese_weight, ese_bias, identity = block
        pieces = [x]
        y = x
        for layer in layers:
            y = self.conv(layer, y)
            pieces.append(y)
        y = self.conv(aggregation, torch.cat(pieces, dim=1))
        gate = torch.sigmoid(F.linear(y.mean((2, 3)), ese_weight, ese_bias))
        y = y.mul_(gate[:, :, None, None])
        return y.add_(x) if identity else y

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        for conv in self._stem:
            x = self.conv(conv, x)
        x = F.max_pool2d(x, 3, 2, 1)
        features = []
        for downsample, blocks in self._stages:
            if downsample is not None:
                x = self.conv(downsample, x)
            for block in blocks:
                x = self.block(block, x)
            features.append(x)
        return features

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return head(self.net, self.forward_features(x)[-1])


def head(net: FoldedNet, x: torch.Tensor) -> torch.Tensor:
    """global pool → 1×1 conv (no bias) → ReLU → (eval dropout: identity) → FC; the conv and the
    FC only where the model has them."""
    x = global_pool(x, net.global_pool)
    if net.last_conv_weight is not None:
        x = torch.relu(F.linear(x, net.last_conv_weight))
    return F.linear(x, net.fc_weight, net.fc_bias) if net.fc_weight is not None else x
