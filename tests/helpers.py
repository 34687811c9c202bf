"""Shared test utilities: random BN statistics, float64 references, error measures."""
import copy

import torch.nn as nn

from hgnet_kernels.models import randomize_statistics as randomize  # noqa: F401
from hgnet_kernels.numerics import relative_error as rel_err  # noqa: F401


def float64_reference(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()
