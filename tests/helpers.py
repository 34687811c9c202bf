"""Shared test utilities: random BN statistics, float64 references, error measures, poisoned buffers."""
import copy

import torch
import torch.nn as nn

from hgnet_kernels.models import randomize_statistics as randomize  # noqa: F401
from hgnet_kernels.numerics import relative_error as rel_err  # noqa: F401


def float64_reference(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double().eval()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def poisoned_slice(n, c, h, w, offset, extra, dtype):
    """Channels [offset, offset + c) of a NaN-filled channels_last buffer with ``extra`` more
    channels, and the buffer: a kernel that writes outside its slice, or leaves part of it
    unwritten, shows up as NaN where it should not be."""
    buf = torch.full((n, c + extra, h, w), float("nan"), dtype=dtype, device=DEVICE)
    buf = buf.contiguous(memory_format=torch.channels_last)
    return buf, buf[:, offset:offset + c]


def untouched_outside(buf, offset, c) -> bool:
    """Whether every channel of ``buf`` outside [offset, offset + c) is still NaN."""
    return bool(torch.isnan(torch.cat([buf[:, :offset], buf[:, offset + c:]], dim=1)).all())
