"""hgnet_kernels: PP-HGNet and PP-HGNetV2 inference with BN folding and fused Triton / CUDA C++ kernels.

``import hgnet_kernels`` is cheap and needs no GPU, nvcc or compiled extension: backends and
kernels are imported the first time they are used.
"""
from .fused import FusedPPHGNet
from .models import CONFIGS, CONFIGS_V2, PPHGNet, PPHGNetV2, build_model
from .builders import (pphgnet_base, pphgnet_small, pphgnet_tiny, pphgnetv2_b0, pphgnetv2_b1, pphgnetv2_b2,
                       pphgnetv2_b3, pphgnetv2_b4, pphgnetv2_b5, pphgnetv2_b6)
from .checkpoints import CheckpointError
from .weights import load_model, load_weights
from .backends import BackendUnavailable
from .accelerate import accelerate  # the function shadows its module's name, as intended

__version__ = "0.2.0"

__all__ = ["FusedPPHGNet", "PPHGNet", "PPHGNetV2", "CONFIGS", "CONFIGS_V2", "build_model", "pphgnet_tiny",
           "pphgnet_small", "pphgnet_base", "pphgnetv2_b0", "pphgnetv2_b1", "pphgnetv2_b2", "pphgnetv2_b3",
           "pphgnetv2_b4", "pphgnetv2_b5", "pphgnetv2_b6", "load_weights", "load_model", "CheckpointError",
           "BackendUnavailable", "accelerate", "__version__"]
