"""Depthwise k×k convolution + folded BatchNorm (+ ReLU, + a scalar affine): PP-HGNet's LDS
downsample (3×3/2, no activation) and PP-HGNetV2's LightConv (3×3 or 5×5, stride 1, ReLU, LAB).

Math, per image n, channel c, output pixel (oh, ow), with stride (sh, sw) (PP-OCR's text
recognition downsamples by (2, 1) and (1, 2)) and zero padding (top, bottom, left, right)
(default k // 2 all round)::

    z[n, c, oh, ow] = b[c] + Σ_{kh, kw} x[n, c, oh·sh − p_top + kh, ow·sw − p_left + kw] · W[kh, kw, c]
    y = a · act(z) + c                   (act: ReLU keeping NaN, or none; a, c optional)

An implicit GEMM is the wrong shape for groups = C (K would be k²), so each program owns a tile
of pixels (across images) × channels and accumulates the k² taps in fp32, loading channels
contiguously (NHWC). The output may be any strided view: the backend passes slot 0 of the next
HG-Block's buffer, or a layer's slot.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import check_same_device, kernel_launch, launch_target, pixel_channel_tile, tile_offsets_int64
from .conv_bn_act import fits_int32
from ...plan import Stride, stride_label, stride_pair
from ..spec import Launch, prepare_depthwise, symmetric
from .capabilities import SUPPORTS


# Sizes only bound masks and index maths: not specialised, so a new input size compiles nothing
# new. Channel counts and strides stay specialised (divisible by 16: vector loads along channels).
@triton.jit(do_not_specialize=["M", "H", "W", "Wo", "HW"])
def depthwise_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr,
    M, H, W, C, Wo, HW, aff_a, aff_c,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    KS: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, PAD_T: tl.constexpr, PAD_L: tl.constexpr,
    RELU: tl.constexpr, AFFINE: tl.constexpr, INT64: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, oh, ow, c, p_ok, c_ok = pixel_channel_tile(M, HW, Wo, C, INT64, BLOCK_P, BLOCK_C)
    # Per pixel: the window's top-left input offset, row and column, and the output offset; a tap
    # only adds one scalar to the offset and compares the row and column with scalars (no per-pixel
    # multiply per tap). Strides in the offset type: k·stride may pass 2^31 where offsets are int64.
    ih0 = oh * STRIDE_H - PAD_T
    iw0 = ow * STRIDE_W - PAD_L
    row_step, col_step = tl.cast(sxh, n.dtype), tl.cast(sxw, n.dtype)
    x_win = n * sxn + ih0 * row_step + iw0 * col_step
    y_pix = n * syn + oh * syh + ow * syw
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for kh in tl.static_range(KS):
        row_ok = p_ok & (ih0 >= -kh) & (ih0 < H - kh)  # 0 ≤ ih0 + kh < H, with the constant moved over
        for kw in tl.static_range(KS):
            ok = row_ok & (iw0 >= -kw) & (iw0 < W - kw)
            x = tl.load(x_ptr + (x_win + (kh * row_step + kw * col_step))[:, None] + c[None, :] * sxc,
                        mask=ok[:, None] & c_ok[None, :], other=0.0)
            wt = tl.load(w_ptr + (kh * KS + kw) * C + c, mask=c_ok, other=0.0)
            acc += x.to(tl.float32) * wt.to(tl.float32)[None, :]
    acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)  # NaN stays NaN, as in torch.relu
    if AFFINE:
        acc = acc * aff_a + aff_c
    tl.store(y_ptr + (y_pix[:, None] + c[None, :] * syc), acc.to(y_ptr.dtype.element_ty),
             mask=p_ok[:, None] & c_ok[None, :])


def resolve_depthwise(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor,
                      stride: Union[int, Stride] = 2, out: Optional[torch.Tensor] = None, *, relu: bool = False,
                      affine: Optional[Tuple[float, float]] = None, padding=None,
                      config: Optional[dict] = None) -> Tuple[Launch, torch.Tensor]:
    """Check ``depthwise_conv``'s arguments and resolve its launch: (the ``Launch``, called with
    (x, packed_weight, bias, out); the destination)."""
    out = prepare_depthwise(SUPPORTS["depthwise"], x, packed_weight, bias, stride, out, padding)
    stride_h, stride_w = stride_pair(stride)
    kernel = packed_weight.shape[0]
    pad = tuple(padding) if padding is not None else symmetric(kernel)
    n, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    check_same_device(x=x, weight=packed_weight, bias=bias, out=out)
    target = launch_target(x.device)
    cfg = config or configs.tile_config("depthwise_conv", c, x.dtype, target.arch, target.interpreter,
                                        hw=ho * wo, batch=n, geometry=f"k{kernel}s{stride_label(stride)}", sms=target.sms)
    a, shift = affine if affine is not None else (1.0, 0.0)
    grid = configs.tile_grid(n, ho * wo, c, cfg) if n * ho * wo > 0 and c > 0 else None
    int64 = tile_offsets_int64(n * ho * wo, cfg["BLOCK_P"], all(map(fits_int32, (x, packed_weight, out))))
    return kernel_launch(depthwise_conv_kernel, grid,
                         (n * ho * wo, h, w, c, wo, ho * wo, float(a), float(shift), *x.stride(), *out.stride()),
                         dict(KS=kernel, STRIDE_H=stride_h, STRIDE_W=stride_w, PAD_T=pad[0], PAD_L=pad[2],
                              RELU=relu, AFFINE=affine is not None, INT64=int64,
                              maxnreg=configs.DEPTHWISE_MAX_REGISTERS, **cfg), out), out


def depthwise_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: Union[int, Stride] = 2,
                   out: Optional[torch.Tensor] = None, *, relu: bool = False,
                   affine: Optional[Tuple[float, float]] = None, padding=None,
                   config: Optional[dict] = None) -> torch.Tensor:
    """``a · act(conv(x, W, groups=C) + b) + c`` with a k×k kernel (k 3 or 5), stride 1 or 2, or
    (sh, sw) with each 1 or 2.

    Args:
        x: (N, C, H, W), any strides. packed_weight: (k, k, C) from ``pack_depthwise_weight``.
        bias: (C,). out: optional (N, C, Ho, Wo) destination of any strides.
        relu: ReLU after the bias (NaN kept); affine: (a, c) after it; padding: (top, bottom, left,
            right) zeros, default k // 2 all round. config: overrides ``configs.tile_config`` (tests, the tuner).
    """
    launch, out = resolve_depthwise(x, packed_weight, bias, stride, out, relu=relu, affine=affine, padding=padding,
                                    config=config)
    launch(x, packed_weight, bias, out)
    return out
