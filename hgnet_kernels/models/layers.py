"""Layers shared by PP-HGNet v1 and v2 (PaddleClas's names, so Paddle checkpoints map key for key)."""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn

# The stem divides by 4 and three LDS downsamples by 2 more each; below this the last stage is empty.
MIN_INPUT_SIZE = 32

# Global pooling types of the head (timm's ``global_pool``): each keeps the channel count.
POOL_TYPES = ("avg", "max", "avgmax")


def global_pool(x: torch.Tensor, pool: str) -> torch.Tensor:
    """(N, C, H, W) → (N, C): timm's SelectAdaptivePool2d for the types in ``POOL_TYPES``."""
    if pool == "avg":
        return x.mean((2, 3))
    if pool == "max":
        return x.amax((2, 3))
    if pool == "avgmax":
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))
    raise ValueError(f"unknown global pool {pool!r}; expected one of {POOL_TYPES}")


class LearnableAffineBlock(nn.Module):
    """LAB (PP-HGNetV2): ``scale · x + bias`` with two learnable scalars."""

    def __init__(self, scale: float = 1.0, bias: float = 0.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([scale]))
        self.bias = nn.Parameter(torch.tensor([bias]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * x + self.bias


class ConvBNAct(nn.Module):
    """conv (no bias, padding (k - 1) // 2) → BatchNorm → optional ReLU → optional LAB (v2's
    ``use_lab``; PaddleClas applies it only after an activation, and only then has its keys)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 groups: int = 1, use_act: bool = True, use_lab: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride,
                              padding=(kernel_size - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.use_act = use_act
        self.lab = LearnableAffineBlock() if use_act and use_lab else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.use_act:
            x = torch.relu(x)
        return self.lab(x) if self.lab is not None else x


class Backbone(nn.Module):
    """What PP-HGNet and PP-HGNetV2 share: ``stem`` (``stem_forward``), four ``stages``, a head."""

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)

    def forward_features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The four stage outputs, at strides 4, 8, 16 and 32 (text recognition: (4, 2), (4, 4),
        (8, 4), (16, 4) in (height, width))."""
        x = self.stem_forward(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x)[-1])


def init_paddle(model: nn.Module) -> None:
    """PaddleClas's initialisation: KaimingNormal (fan_in) for every conv, BN to identity, zero
    linear biases. A model built on the meta device has no values to initialise; torch's meta
    ``normal_`` is a Python reference whose first call imports ``torch._dynamo`` (~2.3 s of CPU a
    process), so it is skipped there."""
    if any(p.is_meta for p in model.parameters()):
        return
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def randomize_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN random running statistics and affine terms, every bias random values, and
    every LAB a random scale (sometimes negative) and shift.

    Freshly initialised BNs are identities, which would let a broken BN fold pass unnoticed;
    tests and ``verify`` on random weights use this to make folding and bias epilogues matter.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            # any BN with running statistics: nn.BatchNorm2d and frozen ones (transformers' D-FINE)
            if isinstance(getattr(m, "running_var", None), torch.Tensor):
                n = m.running_var.numel()
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
            elif type(m).__name__.endswith("LearnableAffineBlock"):  # ours, timm's or transformers
                # both signs of the scale (a negative one cannot be folded into the weights)
                m.scale.copy_((torch.rand(1, generator=g) + 0.5) * (1 if torch.rand(1, generator=g) < 0.7 else -1))
                m.bias.copy_(torch.randn(1, generator=g) * 0.2)
    return model.eval()
