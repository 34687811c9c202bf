"""hgnet_kernels: PP-HGNet inference with BN folding and fused Triton / CUDA C++ kernels.

``import hgnet_kernels`` is cheap and needs no GPU, nvcc or compiled extension: backends and
kernels are imported the first time they are used.
"""
from .fused import FusedPPHGNet
from .models import CONFIGS, PPHGNet, pphgnet_base, pphgnet_small, pphgnet_tiny
from .weights import CheckpointError, load_model, load_weights
from .backends import BackendUnavailable

__version__ = "0.1.0"

__all__ = ["FusedPPHGNet", "PPHGNet", "CONFIGS", "pphgnet_tiny", "pphgnet_small", "pphgnet_base",
           "load_weights", "load_model", "CheckpointError", "BackendUnavailable", "__version__"]
