"""Depthwise 3×3 convolution + folded BatchNorm, no activation: PP-HGNet's LDS downsample.

Math, per image n, channel c, output pixel (oh, ow), with stride s (2 in PP-HGNet) and padding 1::

    y[n, c, oh, ow] = b[c] + Σ_{kh, kw} x[n, c, oh·s − 1 + kh, ow·s − 1 + kw] · W[kh, kw, c]

An implicit GEMM is the wrong shape for groups = C (K would be 9), so each program owns a tile of
pixels × channels and accumulates the nine taps in fp32, loading channels contiguously (NHWC).
The output may be any strided view: the backend passes slot 0 of the next HG-Block's buffer.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import cast_for_store, check_same_device, interpreting, pixel_channel_tile, round_bf16_by_hand
from ..spec import prepare_depthwise


@triton.jit
def depthwise_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    H, W, C, Ho, Wo, tiles_hw,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    STRIDE: tl.constexpr, ROUND_BF16: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n64, oh, ow, c64, p_ok, c_ok = pixel_channel_tile(tiles_hw, Ho, Wo, C, BLOCK_P, BLOCK_C)
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kh in tl.static_range(3):
        ih = oh * STRIDE - 1 + kh
        for kw in tl.static_range(3):
            iw = ow * STRIDE - 1 + kw
            ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + n64 * sxn + (ih * sxh + iw * sxw)[:, None] + c64[None, :] * sxc,
                        mask=ok[:, None] & c_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + (kh * 3 + kw) * C + c64, mask=c_ok, other=0.0)
            acc += x.to(tl.float32) * wt.to(tl.float32)[None, :]
    acc += tl.load(b_ptr + c64, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    y_off = n64 * syn + (oh * syh + ow * syw)[:, None] + c64[None, :] * syc
    tl.store(y_ptr + y_off, cast_for_store(acc, y_ptr, ROUND_BF16), mask=p_ok[:, None] & c_ok[None, :])


def depthwise_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 2,
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``conv(x, W, groups=C) + b`` with a 3×3 kernel, padding 1, stride 1 or 2.

    Args:
        x: (N, C, H, W), any strides. packed_weight: (3, 3, C) from ``pack_depthwise_weight``.
        bias: (C,). out: optional (N, C, Ho, Wo) destination of any strides.
    """
    out = prepare_depthwise(x, packed_weight, bias, stride, out)
    n, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    check_same_device(x=x, weight=packed_weight, bias=bias, out=out)
    cfg = configs.tile_config("depthwise_conv", c, x.dtype, configs.arch_name(x.device), interpreting())
    tiles_hw = configs.cdiv(ho * wo, cfg["BLOCK_P"])
    if n > 0:
        depthwise_conv_kernel[configs.tile_grid(n, ho * wo, c, cfg)](
            x, packed_weight, bias, out, h, w, c, ho, wo, tiles_hw, *x.stride(), *out.stride(),
            STRIDE=stride, ROUND_BF16=round_bf16_by_hand(x.dtype), **cfg)
    return out
