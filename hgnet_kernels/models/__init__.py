"""The eager reference models: PP-HGNet (v1: tiny, small, base) and PP-HGNetV2 (B0–B6); their named
builders that also load a checkpoint (``pphgnet_tiny(weights=...)``) are in ``hgnet_kernels.builders``."""
from typing import Union

from .layers import MIN_INPUT_SIZE, POOL_TYPES, global_pool, randomize_statistics
from .pphgnet import CONFIGS, PPHGNet, PPHGNetConfig, StageConfig
from .pphgnet_v2 import CONFIGS_V2, PPHGNetV2, PPHGNetV2Config, StageV2Config

# Every model by its short name: "tiny", "small", "base", "b0" … "b6".
MODEL_NAMES = (*CONFIGS, *CONFIGS_V2)


def model_label(model) -> str:
    """``PPHGNet_tiny`` / ``PPHGNetV2_B4``: PaddleClas's name of a model (``… text_rec`` for
    PaddleOCR's text-recognition layout)."""
    name = f"PPHGNetV2_{model.config.name.upper()}" if isinstance(model, PPHGNetV2) else f"PPHGNet_{model.config.name}"
    return name + (" text_rec" if model.text_rec else "")


def build_model(name: str, **options) -> Union[PPHGNet, PPHGNetV2]:
    """An eval-mode model with random weights by short name (``"tiny"`` … ``"base"``, ``"b0"`` … ``"b6"``)."""
    if name in CONFIGS:
        return PPHGNet(name, **options).eval()
    if name in CONFIGS_V2:
        return PPHGNetV2(name, **options).eval()
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")


__all__ = ["CONFIGS", "CONFIGS_V2", "MIN_INPUT_SIZE", "MODEL_NAMES", "POOL_TYPES", "PPHGNet", "PPHGNetConfig",
           "PPHGNetV2", "PPHGNetV2Config", "StageConfig", "StageV2Config", "build_model", "global_pool", "model_label",
           "randomize_statistics"]
