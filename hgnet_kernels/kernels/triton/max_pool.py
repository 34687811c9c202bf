"""3×3 stride-2 max pooling with padding 1 (the stem's pool), NHWC in, any strided view out.

    y[n, c, oh, ow] = max_{kh, kw} x[n, c, 2·oh − 1 + kh, 2·ow − 1 + kw]    (padding is −∞)

It exists so the stem's output lands directly in slot 0 of the first HG-Block's buffer.
NaN propagates as in PyTorch: a window containing NaN yields NaN.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import check_same_device, interpreting, pixel_channel_tile
from ..spec import prepare_max_pool


@triton.jit
def max_pool_kernel(
    x_ptr, y_ptr, H, W, C, Ho, Wo, tiles_hw,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n64, oh, ow, c64, p_ok, c_ok = pixel_channel_tile(tiles_hw, Ho, Wo, C, BLOCK_P, BLOCK_C)
    best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), tl.float32)
    for kh in tl.static_range(3):
        ih = oh * 2 - 1 + kh
        for kw in tl.static_range(3):
            iw = ow * 2 - 1 + kw
            ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + n64 * sxn + (ih * sxh + iw * sxw)[:, None] + c64[None, :] * sxc,
                        mask=ok[:, None] & c_ok[None, :], other=float("-inf"))
            x = x.to(tl.float32)
            # NaN wins and then stays: NaN > v and v > NaN are both false.
            best = tl.where((x > best) | (x != x), x, best)
    y_off = n64 * syn + (oh * syh + ow * syw)[:, None] + c64[None, :] * syc
    tl.store(y_ptr + y_off, best.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


def max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """3×3 / stride 2 / padding 1 max pool of (N, C, H, W) ``x`` into ``out`` (any strides)."""
    out = prepare_max_pool(x, out)
    n, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    check_same_device(x=x, out=out)
    cfg = configs.tile_config("max_pool", c, x.dtype, configs.arch_name(x.device), interpreting())
    tiles_hw = configs.cdiv(ho * wo, cfg["BLOCK_P"])
    if n > 0:
        max_pool_kernel[configs.tile_grid(n, ho * wo, c, cfg)](
            x, out, h, w, c, ho, wo, tiles_hw, *x.stride(), *out.stride(),
            **cfg)
    return out
