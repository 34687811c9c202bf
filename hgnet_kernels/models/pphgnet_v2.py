"""Eager PyTorch reference of PP-HGNetV2 (PaddleClas 2.6 ``legendary_models/pp_hgnet_v2.py``).

Module and parameter names follow PaddleClas, so an official ``.pdparams`` maps onto this model
key for key (BN statistics renamed, ``fc.weight`` transposed); timm's ``hgnetv2_b*``, D-FINE /
DEIM, RT-DETR and PP-OCR backbones map onto it too (``hgnet_kernels.weights``).

Against v1: the stem is 3×3/2 → (a 2×2/1 max pool ‖ two 2×2 convs) → concat → 3×3/2 → 1×1, the
2×2 ops padded "SAME" (one row and column at the bottom and right); HG-Blocks use ConvBNAct or
LightConvBNAct (1×1 conv + BN without activation, then a depthwise k×k conv + BN + ReLU) with
k = 3 or 5; B0–B3 put a learnable scalar affine (LAB) after every ReLU; the aggregation is two
1×1 ConvBNActs (to out/2, then to out) without ESE; the head's 1×1 conv is followed by ReLU (and
LAB), then Paddle's downscale-in-infer dropout and the FC.

The stem's max pool is where the frameworks disagree: Paddle's "SAME" pool ignores the padded
cells, timm (and D-FINE, HF) pad with zeros first, so a negative value at the bottom or right
border (possible after a LAB) pools differently. ``stem_pool_padding`` picks: ``"ignore"``
(Paddle, the default) or ``"zero"`` (timm); weight loading sets it from the checkpoint's origin.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import POOL_TYPES, Backbone, ConvBNAct, LearnableAffineBlock, global_pool, init_paddle
from .pphgnet import TEXT_REC_STRIDES


@dataclass(frozen=True)
class StageV2Config:
    in_channels: int
    mid_channels: int
    out_channels: int
    block_num: int
    downsample: bool
    light_block: bool
    kernel_size: int
    layer_num: int
    stride: Tuple[int, int] = (2, 2)  # the downsample's (sh, sw)


@dataclass(frozen=True)
class PPHGNetV2Config:
    name: str
    stem_channels: Tuple[int, int]   # (mid, out): stem1 → mid, stem4 → out
    stages: Tuple[StageV2Config, ...]
    use_lab: bool
    stem3_stride: int = 2

    @property
    def text_rec(self) -> bool:
        """PaddleOCR's text-recognition layout (``text_rec_config``)."""
        return self.stem3_stride == 1


def text_rec_config(config: PPHGNetV2Config) -> PPHGNetV2Config:
    """PaddleOCR's ``text_rec`` backbone of a variant (``PPHGNetV2_B4(text_rec=True)``, PP-OCRv5
    server rec): stem3 at stride 1, every stage downsampled, by ``TEXT_REC_STRIDES``."""
    stages = tuple(replace(s, downsample=True, stride=stride) for s, stride in zip(config.stages, TEXT_REC_STRIDES))
    return replace(config, stages=stages, stem3_stride=1)


def _stages(*rows) -> Tuple[StageV2Config, ...]:
    return tuple(StageV2Config(*row) for row in rows)


# PaddleClas's PPHGNetV2_B0 … B6 (and timm's hgnetv2_b*): [in, mid, out, blocks, downsample,
# light block, kernel, layers] per stage; LAB in B0–B3.
CONFIGS_V2 = {
    "b0": PPHGNetV2Config("b0", (16, 16), _stages(
        (16, 16, 64, 1, False, False, 3, 3), (64, 32, 256, 1, True, False, 3, 3),
        (256, 64, 512, 2, True, True, 5, 3), (512, 128, 1024, 1, True, True, 5, 3)), True),
    "b1": PPHGNetV2Config("b1", (24, 32), _stages(
        (32, 32, 64, 1, False, False, 3, 3), (64, 48, 256, 1, True, False, 3, 3),
        (256, 96, 512, 2, True, True, 5, 3), (512, 192, 1024, 1, True, True, 5, 3)), True),
    "b2": PPHGNetV2Config("b2", (24, 32), _stages(
        (32, 32, 96, 1, False, False, 3, 4), (96, 64, 384, 1, True, False, 3, 4),
        (384, 128, 768, 3, True, True, 5, 4), (768, 256, 1536, 1, True, True, 5, 4)), True),
    "b3": PPHGNetV2Config("b3", (24, 32), _stages(
        (32, 32, 128, 1, False, False, 3, 5), (128, 64, 512, 1, True, False, 3, 5),
        (512, 128, 1024, 3, True, True, 5, 5), (1024, 256, 2048, 1, True, True, 5, 5)), True),
    "b4": PPHGNetV2Config("b4", (32, 48), _stages(
        (48, 48, 128, 1, False, False, 3, 6), (128, 96, 512, 1, True, False, 3, 6),
        (512, 192, 1024, 3, True, True, 5, 6), (1024, 384, 2048, 1, True, True, 5, 6)), False),
    "b5": PPHGNetV2Config("b5", (32, 64), _stages(
        (64, 64, 128, 1, False, False, 3, 6), (128, 128, 512, 2, True, False, 3, 6),
        (512, 256, 1024, 5, True, True, 5, 6), (1024, 512, 2048, 2, True, True, 5, 6)), False),
    "b6": PPHGNetV2Config("b6", (48, 96), _stages(
        (96, 96, 192, 2, False, False, 3, 6), (192, 192, 512, 3, True, False, 3, 6),
        (512, 384, 1024, 6, True, True, 5, 6), (1024, 768, 2048, 3, True, True, 5, 6)), False),
}

STEM_POOL_PADDINGS = ("ignore", "zero")
_SAME_2x2 = (0, 1, 0, 1)  # F.pad order (left, right, top, bottom): one column right, one row below


class StemBlock(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, use_lab: bool, pool_padding: str,
                 stem3_stride: int = 2):
        super().__init__()
        self.stem1 = ConvBNAct(in_channels, mid_channels, 3, 2, use_lab=use_lab)
        self.stem2a = ConvBNAct(mid_channels, mid_channels // 2, 2, 1, use_lab=use_lab)
        self.stem2b = ConvBNAct(mid_channels // 2, mid_channels, 2, 1, use_lab=use_lab)
        self.stem3 = ConvBNAct(mid_channels * 2, mid_channels, 3, stem3_stride, use_lab=use_lab)
        self.stem4 = ConvBNAct(mid_channels, out_channels, 1, 1, use_lab=use_lab)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=1)
        self.pool_padding = pool_padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem1(x)
        x2 = self.stem2b(F.pad(self.stem2a(F.pad(x, _SAME_2x2)), _SAME_2x2))
        fill = float("-inf") if self.pool_padding == "ignore" else 0.0
        x1 = self.pool(F.pad(x, _SAME_2x2, value=fill))
        return self.stem4(self.stem3(torch.cat([x1, x2], dim=1)))


class LightConvBNAct(nn.Module):
    """1×1 conv + BN (no activation), then a depthwise k×k conv + BN + ReLU (+ LAB)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, use_lab: bool):
        super().__init__()
        self.conv1 = ConvBNAct(in_channels, out_channels, 1, use_act=False, use_lab=use_lab)
        self.conv2 = ConvBNAct(out_channels, out_channels, kernel_size, groups=out_channels, use_lab=use_lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class HGV2Block(nn.Module):
    def __init__(self, in_channels: int, cfg: StageV2Config, identity: bool, use_lab: bool):
        super().__init__()
        self.identity = identity
        mid, k = cfg.mid_channels, cfg.kernel_size
        self.layers = nn.ModuleList(
            LightConvBNAct(in_channels if i == 0 else mid, mid, k, use_lab) if cfg.light_block
            else ConvBNAct(in_channels if i == 0 else mid, mid, k, use_lab=use_lab)
            for i in range(cfg.layer_num))
        total = in_channels + cfg.layer_num * mid
        self.aggregation_squeeze_conv = ConvBNAct(total, cfg.out_channels // 2, 1, use_lab=use_lab)
        self.aggregation_excitation_conv = ConvBNAct(cfg.out_channels // 2, cfg.out_channels, 1, use_lab=use_lab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.aggregation_excitation_conv(self.aggregation_squeeze_conv(torch.cat(outputs, dim=1)))
        return y + x if self.identity else y


class HGV2Stage(nn.Module):
    def __init__(self, cfg: StageV2Config, use_lab: bool):
        super().__init__()
        # The LDS downsample: depthwise 3×3 strided with BN, no activation (so no LAB either).
        self.downsample = (ConvBNAct(cfg.in_channels, cfg.in_channels, 3, cfg.stride, groups=cfg.in_channels, use_act=False,
                                     use_lab=use_lab) if cfg.downsample else None)
        self.blocks = nn.Sequential(*[
            HGV2Block(cfg.in_channels if i == 0 else cfg.out_channels, cfg, identity=i > 0, use_lab=use_lab)
            for i in range(cfg.block_num)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class PPHGNetV2(Backbone):
    """PP-HGNetV2 classifier: stem → 4 HG stages → global pool → 1×1 conv → ReLU (→ LAB) →
    dropout → FC.

    Args:
        config: one of ``CONFIGS_V2`` or its name (``"b0"`` … ``"b6"``).
        num_classes: size of the FC output; 0 drops the FC (the output is the pooled features).
        in_channels: image channels.
        global_pool: ``"avg"`` (PaddleClas), ``"max"`` or ``"avgmax"`` (timm's options).
        class_expand: channels of the head's 1×1 conv; None drops it (Paddle's
            ``use_last_conv=False``, timm's ``head_hidden_size=None``).
        dropout_prob: the head dropout's p (Paddle's downscale-in-infer: the Paddle importer
            folds its inference scale 1 − p into ``fc.weight``; here the dropout is the identity).
        stem_pool_padding: ``"ignore"`` (Paddle) or ``"zero"`` (timm); see the module docstring.
        use_lab: LAB after every ReLU; default: the variant's (B0–B3 yes, B4–B6 no). Detectors
            may train any variant either way (D-FINE's ``use_lab``).
        text_rec: PaddleOCR's text-recognition backbone of this variant (PP-OCRv5 server rec is
            ``"b4"``): stem3 at stride 1, stage strides (2, 1), (1, 2), (2, 1), (2, 1). Its stage
            maps are what it is for (``forward_features``); PaddleOCR's (3, 2) average pool and the
            recognition head after them stay with the caller.
    """

    def __init__(self, config: PPHGNetV2Config | str = "b0", num_classes: int = 1000, in_channels: int = 3,
                 global_pool: str = "avg", class_expand: Optional[int] = 2048, dropout_prob: float = 0.0,
                 stem_pool_padding: str = "ignore", use_lab: Optional[bool] = None, text_rec: bool = False):
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS_V2:
                raise ValueError(f"unknown PP-HGNetV2 variant {config!r}; expected one of {sorted(CONFIGS_V2)}")
            config = CONFIGS_V2[config]
        if text_rec:
            config = text_rec_config(config)
        if global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {global_pool!r}")
        if stem_pool_padding not in STEM_POOL_PADDINGS:
            raise ValueError(f"stem_pool_padding must be one of {STEM_POOL_PADDINGS}, got {stem_pool_padding!r}")
        if num_classes < 0 or in_channels < 1:
            raise ValueError(f"num_classes must be >= 0 and in_channels >= 1, got {num_classes} and {in_channels}")
        self.config = config
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.global_pool = global_pool
        self.class_expand = class_expand
        self.dropout_prob = dropout_prob
        self.use_lab = use_lab = config.use_lab if use_lab is None else use_lab
        self.stem = StemBlock(in_channels, *config.stem_channels, use_lab, stem_pool_padding, config.stem3_stride)
        self.stages = nn.ModuleList(HGV2Stage(s, use_lab) for s in config.stages)
        features = config.stages[-1].out_channels
        self.last_conv = nn.Conv2d(features, class_expand, 1, bias=False) if class_expand else None
        self.lab = LearnableAffineBlock() if class_expand and use_lab else None
        self.dropout = nn.Dropout(dropout_prob)
        self.num_features = class_expand or features
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else None
        init_paddle(self)

    @property
    def text_rec(self) -> bool:
        return self.config.text_rec

    @property
    def stem_pool_padding(self) -> str:
        return self.stem.pool_padding

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = global_pool(x, self.global_pool)
        if self.last_conv is not None:
            x = torch.relu(F.linear(x, self.last_conv.weight.flatten(1)))
            if self.lab is not None:
                x = self.lab(x)
            x = self.dropout(x)
        return self.fc(x) if self.fc is not None else x
