"""Fused convolution + folded BatchNorm + optional ReLU, as an implicit GEMM over NHWC.

Math, per image n, output pixel (oh, ow) and output channel co::

    y[n, co, oh, ow] = act( b[co] + Σ_{kh, kw, ci} x[n, ci, oh·s − p + kh, ow·s − p + kw] · W[kh, kw, ci, co] )

with zero padding p = k // 2, W the BN-folded weight packed as (KH, KW, C_in, C_out) and b the folded
bias. The GEMM is M = Ho·Wo pixels (per image) × N = C_out × K = KH·KW·C_in, accumulated in fp32.

Every tensor is addressed through its four strides, so:

* the input may be the user's NCHW tensor (the stem reads it without a layout copy), or a channel
  slice of an HG-Block's NHWC buffer (channel stride 1, pixel stride = the buffer's width);
* the output may be a channel slice of a larger NHWC buffer: each HG-Block layer writes straight
  into its slot, so the block's concatenation is never materialised.

With ``partial_sums=True`` the epilogue also stores, per (image, pixel tile, channel), the fp32 sum
of the activated outputs of the tile — the ESE global-mean partials, reduced later in a fixed
order by ``ese_gate`` (deterministic, no atomics).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import cast_for_store, check_same_device, dot_precision, interpreting, round_bf16_by_hand, upcast_dot
from ..spec import conv_psum, prepare_conv, psum_rows


@triton.jit
def conv_bn_act_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, psum_ptr,
    H, W, C_in, Ho, Wo, C_out, tiles_hw,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    STRIDE: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    RELU: tl.constexpr, PARTIAL_SUMS: tl.constexpr, UPCAST: tl.constexpr, ROUND_BF16: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    n = pid // tiles_hw
    tile = pid % tiles_hw
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < Ho * Wo
    co_ok = offs_co < C_out
    oh = offs_m // Wo
    ow = offs_m % Wo
    n64 = n.to(tl.int64)
    x_img = x_ptr + n64 * sxn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in tl.static_range(KH):
        ih = oh * STRIDE - (KH // 2) + kh
        h_ok = m_ok & (ih >= 0) & (ih < H)
        for kw in tl.static_range(KW):
            iw = ow * STRIDE - (KW // 2) + kw
            row_ok = h_ok & (iw >= 0) & (iw < W)
            row_off = ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            w_tap = w_ptr + (kh * KW + kw) * C_in * C_out
            for c0 in range(0, C_in, BLOCK_K):
                c = c0 + offs_k
                c_ok = c < C_in
                a = tl.load(x_img + row_off[:, None] + c.to(tl.int64)[None, :] * sxc,
                            mask=row_ok[:, None] & c_ok[None, :], other=0.0)
                b = tl.load(w_tap + c[:, None] * C_out + offs_co[None, :],
                            mask=c_ok[:, None] & co_ok[None, :], other=0.0)
                if UPCAST:
                    a = a.to(tl.float32)
                    b = b.to(tl.float32)
                acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN, as in torch.relu
    y_off = (n64 * syn + oh.to(tl.int64)[:, None] * syh + ow.to(tl.int64)[:, None] * syw
             + offs_co.to(tl.int64)[None, :] * syc)
    tl.store(y_ptr + y_off, cast_for_store(acc, y_ptr, ROUND_BF16), mask=m_ok[:, None] & co_ok[None, :])
    if PARTIAL_SUMS:
        tile_sum = tl.sum(tl.where(m_ok[:, None], acc, 0.0), axis=0)
        tl.store(psum_ptr + (n64 * tiles_hw + tile) * C_out + offs_co, tile_sum, mask=co_ok)


def launch_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int, relu: bool,
                out: Optional[torch.Tensor], partial_sums: bool, allow_tf32: bool,
                config: Optional[dict] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Check, allocate and launch; shared by ``conv_bn_act`` and ``aggregation_ese``."""
    out = prepare_conv(x, packed_weight, bias, stride, out)
    kernel, _, c_in, c_out = packed_weight.shape
    n, _, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    check_same_device(x=x, weight=packed_weight, bias=bias, out=out)
    cfg = dict(config or configs.conv_config(ho * wo, c_in, c_out, kernel, stride, x.dtype,
                                             configs.arch_name(x.device), interpreting()))
    tiles_hw = psum_rows(ho * wo, cfg["BLOCK_M"])
    psum = conv_psum(x, out, cfg["BLOCK_M"]) if partial_sums else out  # an unused pointer when off
    if n == 0:
        return out, psum if partial_sums else None
    grid = configs.conv_grid(n, ho * wo, c_out, cfg)
    conv_bn_act_kernel[grid](
        x, packed_weight, bias, out, psum,
        h, w, c_in, ho, wo, c_out, tiles_hw,
        *x.stride(), *out.stride(),
        STRIDE=stride, KH=kernel, KW=kernel, RELU=relu, PARTIAL_SUMS=partial_sums,
        UPCAST=upcast_dot(x.dtype), ROUND_BF16=round_bf16_by_hand(x.dtype), INPUT_PRECISION=dot_precision(x.dtype, allow_tf32),
        **cfg)
    return out, psum if partial_sums else None


def conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                relu: bool = True, out: Optional[torch.Tensor] = None, allow_tf32: bool = False,
                config: Optional[dict] = None) -> torch.Tensor:
    """``act(conv(x, W) + b)`` for 1×1 / 3×3 kernels, stride 1 or 2, padding k // 2.

    Args:
        x: (N, C_in, H, W), any strides (NCHW, channels_last, or a channel slice of a buffer).
        packed_weight: (k, k, C_in, C_out) from ``pack_conv_weight``, same dtype as ``x``.
        bias: (C_out,), any float dtype (read as fp32).
        out: optional (N, C_out, Ho, Wo) destination, any strides (e.g. a buffer's channel slice);
            allocated channels_last when omitted.
    """
    return launch_conv(x, packed_weight, bias, stride, relu, out, False, allow_tf32, config)[0]
