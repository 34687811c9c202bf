"""HG-Block aggregation: the 1×1 conv over the whole block buffer + folded BN + ReLU, with the
ESE global-mean partial sums produced by the same epilogue.

Math, for a block buffer X holding [input, layer_1, …, layer_L] along channels::

    y[n, co, h, w]  = relu( b[co] + Σ_ci X[n, ci, h, w] · W[ci, co] )
    psum[n, j, co]  = Σ_{(h, w) of image n in its j-th row tile} y[n, co, h, w]   (fp32, before rounding y)

Row tiles run over the N·H·W pixels of all images (a tile may hold the end of one image and the
start of the next); ``psum`` has one row per (image, tile it overlaps), written by exactly one
program, and zero rows up to T (the layout: ``conv_bn_act``'s module docstring; the shape:
``partial_sums_shape``). So
``psum.sum(1)`` is the per-image channel sums, and the later reduction (``ese_gate``) is
deterministic: no float atomics, bitwise-equal results run to run, split-K or not. The kernel is
``conv_bn_act``'s with the partial-sum epilogue switched on.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..spec import ConvLaunch
from .conv_bn_act import resolve_conv


def resolve_aggregation_ese(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                            out: Optional[torch.Tensor] = None, *, allow_tf32: bool = False, tf32x3: bool = False,
                            config: Optional[dict] = None,
                            psum: Optional[torch.Tensor] = None) -> Tuple[ConvLaunch, torch.Tensor]:
    """Check ``aggregation_ese``'s arguments (``psum``: a destination to check, or None) and resolve
    its launch: (the ``ConvLaunch``, called with (x, packed_weight, bias, out, psum=…) and
    returning (y, psum); the destination)."""
    return resolve_conv(x, packed_weight, bias, 1, True, out, True, allow_tf32, config, tf32x3=tf32x3, psum=psum)


def aggregation_ese(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                    out: Optional[torch.Tensor] = None, *, allow_tf32: bool = False, tf32x3: bool = False,
                    config: Optional[dict] = None,
                    psum: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(y, psum)``: y (N, C_out, H, W) and psum (N, T, C_out) fp32 of
    ``partial_sums_shape`` (written into ``psum`` when given).

    ``packed_weight`` is (1, 1, C_total, C_out) from ``pack_conv_weight``; ``x`` any strides.
    """
    launch, out = resolve_aggregation_ese(x, packed_weight, bias, out, allow_tf32=allow_tf32, tf32x3=tf32x3,
                                          config=config, psum=psum)
    return launch(x, packed_weight, bias, out, psum=psum)
