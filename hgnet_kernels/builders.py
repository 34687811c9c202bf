"""The named builders (``pphgnet_tiny()`` … ``pphgnetv2_b6()``): an eager model by PaddleClas's
name, in eval mode, with a checkpoint loaded when ``weights`` (a path) is given. They sit above
``models`` (which they build) and ``weights`` (which loads their checkpoints)."""
from __future__ import annotations

from typing import Optional

import torch.nn as nn

from .models import PPHGNet, PPHGNetV2
from .weights import load_weights, model_to_load


def build(cls, name: str, weights: Optional[str], num_classes: int) -> nn.Module:
    """``cls(name, num_classes)`` in eval mode, with ``weights`` (a path) loaded when given."""
    if weights is None:
        return cls(name, num_classes=num_classes).eval()
    return load_weights(model_to_load(lambda: cls(name, num_classes=num_classes)), weights).eval()


def pphgnet_tiny(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNet:
    """PPHGNet_tiny (4.54 GMACs); ``weights`` is a .pdparams, timm or our own checkpoint."""
    return build(PPHGNet, "tiny", weights, num_classes)


def pphgnet_small(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNet:
    """PPHGNet_small (8.53 GMACs); ``weights`` is a .pdparams, timm or our own checkpoint."""
    return build(PPHGNet, "small", weights, num_classes)


def pphgnet_base(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNet:
    """PPHGNet_base (25.14 GMACs); ``weights`` is a .pdparams, timm or our own checkpoint."""
    return build(PPHGNet, "base", weights, num_classes)


def pphgnetv2_b0(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B0 (D-FINE / DEIM N and S); ``weights`` is a .pdparams, timm, detector or our checkpoint."""
    return build(PPHGNetV2, "b0", weights, num_classes)


def pphgnetv2_b1(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B1; ``weights`` is a .pdparams, timm, detector or our checkpoint."""
    return build(PPHGNetV2, "b1", weights, num_classes)


def pphgnetv2_b2(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B2 (D-FINE / DEIM M); ``weights`` is a .pdparams, timm, detector or our checkpoint."""
    return build(PPHGNetV2, "b2", weights, num_classes)


def pphgnetv2_b3(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B3; ``weights`` is a .pdparams, timm, detector or our checkpoint."""
    return build(PPHGNetV2, "b3", weights, num_classes)


def pphgnetv2_b4(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B4 (RT-DETR L, D-FINE L, PP-OCRv5 server); ``weights``: any supported checkpoint."""
    return build(PPHGNetV2, "b4", weights, num_classes)


def pphgnetv2_b5(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B5 (RT-DETR X, D-FINE X); ``weights``: any supported checkpoint."""
    return build(PPHGNetV2, "b5", weights, num_classes)


def pphgnetv2_b6(weights: Optional[str] = None, num_classes: int = 1000) -> PPHGNetV2:
    """PPHGNetV2_B6 (RT-DETR H); ``weights``: any supported checkpoint."""
    return build(PPHGNetV2, "b6", weights, num_classes)
