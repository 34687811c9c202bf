"""Eager PyTorch reference of PP-HGNet (PaddleClas ``legendary_models/pp_hgnet.py``).

Module and parameter names follow PaddleClas, so an official ``.pdparams`` maps onto this model
key for key (only BN statistics are renamed and ``fc.weight`` is transposed). This model is the
single reference every fused backend is checked against.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import POOL_TYPES, Backbone, ConvBNAct, global_pool, init_paddle


@dataclass(frozen=True)
class StageConfig:
    in_channels: int
    mid_channels: int
    out_channels: int
    block_num: int
    downsample: bool
    stride: Tuple[int, int] = (2, 2)  # the downsample's (sh, sw)


@dataclass(frozen=True)
class PPHGNetConfig:
    name: str
    stem_channels: Tuple[int, ...]
    stages: Tuple[StageConfig, ...]
    layer_num: int
    dropout_prob: float
    stem_pool: bool = True  # the 3×3/2 max pool after the stem convs

    @property
    def text_rec(self) -> bool:
        """PaddleOCR's text-recognition layout (``text_rec_config``)."""
        return not self.stem_pool


# PaddleOCR's text-recognition strides (rec_hgnet.py, rec_pphgnetv2.py): height ÷ 16 and width ÷ 4
# in all (the stem's 2 and the stages' (2, 1), (1, 2), (2, 1), (2, 1)), so a 48×320 crop ends 3×80.
TEXT_REC_STRIDES = ((2, 1), (1, 2), (2, 1), (2, 1))


def text_rec_config(config: PPHGNetConfig) -> PPHGNetConfig:
    """PaddleOCR's recognition backbone of a size (``PPHGNet_small(det=False)``, PP-OCRv4 server
    rec): no stem pool, every stage downsampled, by ``TEXT_REC_STRIDES``."""
    stages = tuple(replace(s, downsample=True, stride=stride) for s, stride in zip(config.stages, TEXT_REC_STRIDES))
    return replace(config, stages=stages, stem_pool=False)


CONFIGS = {
    "tiny": PPHGNetConfig(
        "tiny", (48, 48, 96),
        (StageConfig(96, 96, 224, 1, False), StageConfig(224, 128, 448, 1, True),
         StageConfig(448, 160, 512, 2, True), StageConfig(512, 192, 768, 1, True)),
        layer_num=5, dropout_prob=0.0),
    "small": PPHGNetConfig(
        "small", (64, 64, 128),
        (StageConfig(128, 128, 256, 1, False), StageConfig(256, 160, 512, 1, True),
         StageConfig(512, 192, 768, 2, True), StageConfig(768, 224, 1024, 1, True)),
        layer_num=6, dropout_prob=0.0),
    "base": PPHGNetConfig(
        "base", (96, 96, 160),
        (StageConfig(160, 192, 320, 1, False), StageConfig(320, 224, 640, 2, True),
         StageConfig(640, 256, 960, 3, True), StageConfig(960, 288, 1280, 2, True)),
        layer_num=7, dropout_prob=0.2),
}

class ESEModule(nn.Module):
    """Effective squeeze-excitation: x * sigmoid(conv1x1(mean_hw(x)) + b)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.conv(x.mean((2, 3), keepdim=True)))
        return x * gate


class HGBlock(nn.Module):
    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, layer_num: int,
                 identity: bool):
        super().__init__()
        self.identity = identity
        self.layers = nn.ModuleList(
            ConvBNAct(in_channels if i == 0 else mid_channels, mid_channels, 3)
            for i in range(layer_num))
        self.aggregation_conv = ConvBNAct(in_channels + layer_num * mid_channels, out_channels, 1)
        self.att = ESEModule(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [x]
        y = x
        for layer in self.layers:
            y = layer(y)
            outputs.append(y)
        y = self.att(self.aggregation_conv(torch.cat(outputs, dim=1)))
        return y + x if self.identity else y


class HGStage(nn.Module):
    def __init__(self, cfg: StageConfig, layer_num: int):
        super().__init__()
        # LDS: a learnable depthwise strided downsample with BN and no activation.
        self.downsample = (ConvBNAct(cfg.in_channels, cfg.in_channels, 3, cfg.stride,
                                     groups=cfg.in_channels, use_act=False)
                           if cfg.downsample else None)
        self.blocks = nn.Sequential(*[
            HGBlock(cfg.in_channels if i == 0 else cfg.out_channels, cfg.mid_channels,
                    cfg.out_channels, layer_num, identity=i > 0)
            for i in range(cfg.block_num)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x)
        return self.blocks(x)


class PPHGNet(Backbone):
    """PP-HGNet classifier: stem → 4 HG stages → global pool → 1×1 conv → ReLU → dropout → FC.

    Args:
        config: one of ``CONFIGS`` (or ``"tiny"``, ``"small"``, ``"base"``).
        num_classes: size of the FC output; 0 drops the FC (the output is then the pooled,
            expanded features, as timm's ``num_classes=0``).
        in_channels: image channels (timm's ``in_chans``).
        global_pool: ``"avg"`` (PaddleClas), ``"max"`` or ``"avgmax"`` (timm's options).
        class_expand: channels of the head's 1×1 conv (timm's ``head_hidden_size``); None drops it.
        text_rec: PaddleOCR's text-recognition backbone of this size (PP-OCRv4 server rec is
            ``"small"``): no stem pool, stage strides (2, 1), (1, 2), (2, 1), (2, 1). Its stage maps
            are what it is for (``forward_features``); PaddleOCR's (3, 2) average pool and the
            recognition head after them stay with the caller.
    """

    def __init__(self, config: PPHGNetConfig | str = "tiny", num_classes: int = 1000, in_channels: int = 3,
                 global_pool: str = "avg", class_expand: Optional[int] = 2048, text_rec: bool = False):
        super().__init__()
        if isinstance(config, str):
            if config not in CONFIGS:
                raise ValueError(f"unknown PP-HGNet size {config!r}; expected one of {sorted(CONFIGS)}")
            config = CONFIGS[config]
        if text_rec:
            config = text_rec_config(config)
        if global_pool not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {global_pool!r}")
        if num_classes < 0 or in_channels < 1:
            raise ValueError(f"num_classes must be >= 0 and in_channels >= 1, got {num_classes} and {in_channels}")
        self.config = config
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.global_pool = global_pool
        self.class_expand = class_expand
        stem = (in_channels,) + tuple(config.stem_channels)
        self.stem = nn.Sequential(*[
            ConvBNAct(stem[i], stem[i + 1], 3, stride=2 if i == 0 else 1)
            for i in range(len(stem) - 1)])
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if config.stem_pool else None
        self.stages = nn.ModuleList(HGStage(s, config.layer_num) for s in config.stages)
        features = config.stages[-1].out_channels
        self.last_conv = nn.Conv2d(features, class_expand, 1, bias=False) if class_expand else None
        # Paddle's downscale_in_infer dropout scales by (1 - p) at inference; the Paddle importer
        # folds that factor into fc.weight so this dropout is the usual identity in eval mode.
        self.dropout = nn.Dropout(config.dropout_prob)
        self.num_features = class_expand or features  # the width of the pooled (pre-logits) output
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else None
        init_paddle(self)

    @property
    def text_rec(self) -> bool:
        return self.config.text_rec

    def stem_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.pool(x) if self.pool is not None else x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = global_pool(x, self.global_pool)
        if self.last_conv is not None:
            x = torch.relu(F.linear(x, self.last_conv.weight.flatten(1)))
        x = self.dropout(x)
        return self.fc(x) if self.fc is not None else x
