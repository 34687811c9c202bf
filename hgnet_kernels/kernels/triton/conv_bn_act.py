"""Fused convolution + folded BatchNorm + epilogue, as an implicit GEMM over NHWC.

Math, per image n, output pixel (oh, ow) and output channel co::

    z[n, co, oh, ow] = b[co] + Σ_{kh,kw,ci} x[n, ci, oh·s − p_top + kh, ow·s − p_left + kw] · W[kh, kw, ci, co]
    y = residual + a · act(z) + c          (act: ReLU keeping NaN, or none; a, c and residual optional)

with zero padding (top, bottom, left, right) (default k // 2 all round; "SAME" 2×2 is (0, 1, 0, 1)),
k ∈ {1, 2, 3}, W the BN-folded weight packed as (KH, KW, C_in, C_out) and b the folded bias.

The GEMM: M = N·Ho·Wo output pixels (rows span images: a tile may hold the last pixels of one
image and the first of the next, so small late-stage maps fill whole tiles at any batch),
N = C_out, K = KH·KW·C_in, accumulated in fp32. Each program owns a BLOCK_M × BLOCK_N output
tile (walked in groups of GROUP_M row tiles, so programs running together share weights and input
rows in L2) and runs **one** K loop over (tap, channel block) pairs — a single software-pipelined
loop, instead of one per tap — or, with ``FLAT_K``, over K in BLOCK_K chunks that may straddle
taps (for the stem's 3 input channels, where per-tap blocks would be mostly padding).

Split-K (``SPLIT_K`` > 1, for layers with too few output tiles to fill the GPU): program
(tile, s) accumulates the s-th contiguous range of K steps and stores its fp32 partial tile in a
workspace (SPLIT_K, M, C_out); a second kernel adds the SPLIT_K partials of each output in the
order s = 0, 1, … and applies the epilogue once. No atomics: the same input gives the same bits.

Every tensor is addressed through its four strides (int64 offsets), so:

* the input may be the user's NCHW tensor (the stem reads it without a layout copy), or a channel
  slice of an HG-Block's NHWC buffer (channel stride 1, pixel stride = the buffer's width);
* the output (and the residual) may be a channel slice of a larger NHWC buffer: each HG-Block
  layer writes straight into its slot, so the block's concatenation is never materialised.

ESE partial sums (``partial_sums=True``, the aggregation): ``psum`` is (N, T, C_out) fp32 with
``psum[n, j, co]`` = the sum of the final fp32 outputs (before rounding to the output dtype) of
the rows of image n inside row tile ``first_tile(n) + j``, where ``first_tile(n) = n·Ho·Wo //
BLOCK_M``; T = the most row tiles any image overlaps (``psum_tiles``). Each (tile, image) entry
has one writer, the program of that tile (or the split-K reduction's), and rows j past an image's
last tile are zeros written by the program of its first tile, so ``psum.sum(1)`` is the per-image
channel sum. ``ese_gate`` of this family adds the T rows in a fixed order: deterministic.
"""
from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import cast_for_store, check_same_device, dot_precision, launch_target, round_bf16_by_hand, upcast_dot
from ..spec import prepare_conv, symmetric


@triton.jit
def _row_coordinates(offs_m, HW, Wo):
    """Image (int64), output row and column (int32) of GEMM rows ``offs_m`` (int64)."""
    img = offs_m // HW
    p = (offs_m - img * HW).to(tl.int32)
    oh = p // Wo
    return img, oh, p - oh * Wo


@triton.jit
def conv_epilogue(acc, pid_m, offs_m, img, oh, ow, m_ok, offs_co, co_ok,
                  b_ptr, y_ptr, res_ptr, psum_ptr, M, HW, C_out, T, aff_a, aff_c,
                  syn, syc, syh, syw, srn, src, srh, srw,
                  RELU: tl.constexpr, AFFINE: tl.constexpr, RESIDUAL: tl.constexpr, PARTIAL_SUMS: tl.constexpr,
                  ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr):
    """bias → ReLU (NaN stays NaN, as in torch.relu) → a·y + c → + residual → store; the ESE sums."""
    acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0, propagate_nan=tl.PropagateNan.ALL)
    if AFFINE:
        acc = acc * aff_a + aff_c
    mask = m_ok[:, None] & co_ok[None, :]
    co64 = offs_co.to(tl.int64)
    if RESIDUAL:
        r_off = (img * srn + oh.to(tl.int64) * srh + ow.to(tl.int64) * srw)[:, None] + co64[None, :] * src
        acc += tl.load(res_ptr + r_off, mask=mask, other=0.0).to(tl.float32)
    y_off = (img * syn + oh.to(tl.int64) * syh + ow.to(tl.int64) * syw)[:, None] + co64[None, :] * syc
    tl.store(y_ptr + y_off, cast_for_store(acc, y_ptr, ROUND_BF16), mask=mask)
    if PARTIAL_SUMS:
        # One sum per image this tile touches (a tile may straddle several small images).
        row0 = pid_m.to(tl.int64) * BLOCK_M
        img_lo = row0 // HW
        img_hi = (tl.minimum(row0 + BLOCK_M, M) - 1) // HW
        for im in range(img_lo, img_hi + 1):
            part = tl.sum(tl.where(((img == im) & m_ok)[:, None], acc, 0.0), axis=0)
            first = (im * HW) // BLOCK_M
            tl.store(psum_ptr + (im * T + (pid_m - first)) * C_out + co64, part, mask=co_ok)
            # The image's first tile zeroes the rows past the image's last tile: psum.sum(1) is
            # then the image's channel sums, and every entry still has exactly one writer.
            count = ((im + 1) * HW - 1) // BLOCK_M - first + 1
            for j in range(tl.where(first == pid_m, count, T), T):
                tl.store(psum_ptr + (im * T + j) * C_out + co64, tl.zeros_like(part), mask=co_ok)


@triton.jit
def conv_bn_act_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, res_ptr, psum_ptr, ws_ptr,
    M, H, W, C_in, Wo, HW, C_out, T, K_TOTAL, C_BLOCKS, STEPS_PER_SPLIT, K_STEPS, aff_a, aff_c,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    STRIDE: tl.constexpr, KW: tl.constexpr, PAD_T: tl.constexpr, PAD_L: tl.constexpr,
    RELU: tl.constexpr, AFFINE: tl.constexpr, RESIDUAL: tl.constexpr, PARTIAL_SUMS: tl.constexpr,
    SPLIT: tl.constexpr, FLAT_K: tl.constexpr, UPCAST: tl.constexpr, ROUND_BF16: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    # Grouped order over (row tile, channel tile): GROUP_M row tiles share each weight column block.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(C_out, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows

    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64: N·Ho·Wo may pass 2^31
    offs_co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    co_ok = offs_co < C_out
    img, oh, ow = _row_coordinates(offs_m, HW, Wo)
    x_row = x_ptr + img * sxn  # this row's image
    ih0 = oh * STRIDE - PAD_T
    iw0 = ow * STRIDE - PAD_L

    step_lo = tl.program_id(1) * STEPS_PER_SPLIT
    step_hi = tl.minimum(step_lo + STEPS_PER_SPLIT, K_STEPS)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(step_lo, step_hi):  # one loop over (tap, channel block): one pipeline
        if FLAT_K:  # K index = tap · C_in + channel, the packed weight's row
            k = step * BLOCK_K + offs_k
            k_ok = k < K_TOTAL
            tap = k // C_in
            c = k - tap * C_in
            kh = tap // KW
            ih = ih0[:, None] + kh[None, :]
            iw = iw0[:, None] + (tap - kh * KW)[None, :]
            ok = m_ok[:, None] & k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a = tl.load(x_row[:, None] + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
                        + c.to(tl.int64)[None, :] * sxc, mask=ok, other=0.0)
            b = tl.load(w_ptr + k[:, None] * C_out + offs_co[None, :], mask=k_ok[:, None] & co_ok[None, :], other=0.0)
        else:
            tap = step // C_BLOCKS
            c = (step - tap * C_BLOCKS) * BLOCK_K + offs_k
            c_ok = c < C_in
            kh = tap // KW
            ih = ih0 + kh
            iw = iw0 + (tap - kh * KW)
            row_ok = m_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            rows = x_row + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
            a = tl.load(rows[:, None] + c.to(tl.int64)[None, :] * sxc, mask=row_ok[:, None] & c_ok[None, :], other=0.0)
            b = tl.load(w_ptr + (tap * C_in + c)[:, None] * C_out + offs_co[None, :],
                        mask=c_ok[:, None] & co_ok[None, :], other=0.0)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    if SPLIT:  # this K range's fp32 partial; the reduction kernel adds them and runs the epilogue
        ws_off = (tl.program_id(1).to(tl.int64) * M + offs_m)[:, None] * C_out + offs_co[None, :]
        tl.store(ws_ptr + ws_off, acc, mask=m_ok[:, None] & co_ok[None, :])
    else:
        conv_epilogue(acc, pid_m, offs_m, img, oh, ow, m_ok, offs_co, co_ok,
                      b_ptr, y_ptr, res_ptr, psum_ptr, M, HW, C_out, T, aff_a, aff_c,
                      syn, syc, syh, syw, srn, src, srh, srw,
                      RELU, AFFINE, RESIDUAL, PARTIAL_SUMS, ROUND_BF16, BLOCK_M)


@triton.jit
def split_k_reduce_kernel(
    ws_ptr, b_ptr, y_ptr, res_ptr, psum_ptr,
    M, Wo, HW, C_out, T, SPLITS, SPLIT_STRIDE, aff_a, aff_c,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    RELU: tl.constexpr, AFFINE: tl.constexpr, RESIDUAL: tl.constexpr, PARTIAL_SUMS: tl.constexpr,
    ROUND_BF16: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Σ_s workspace[s] in the order s = 0, 1, … (deterministic), then the conv epilogue. Same
    BLOCK_M as the conv, so its ESE partial sums have the same (tile, image) layout."""
    pid_m = tl.program_id(0)
    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    co_ok = offs_co < C_out
    mask = m_ok[:, None] & co_ok[None, :]
    partial = ws_ptr + offs_m[:, None] * C_out + offs_co[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, SPLITS):
        acc += tl.load(partial, mask=mask, other=0.0)
        partial += SPLIT_STRIDE
    img, oh, ow = _row_coordinates(offs_m, HW, Wo)
    conv_epilogue(acc, pid_m, offs_m, img, oh, ow, m_ok, offs_co, co_ok,
                  b_ptr, y_ptr, res_ptr, psum_ptr, M, HW, C_out, T, aff_a, aff_c,
                  syn, syc, syh, syw, srn, src, srh, srw,
                  RELU, AFFINE, RESIDUAL, PARTIAL_SUMS, ROUND_BF16, BLOCK_M)


@functools.lru_cache(maxsize=1024)
def psum_tiles(n: int, hw: int, block_m: int) -> int:
    """T, the partial-sum rows per image: the most row tiles of BLOCK_M rows that one image of
    ``hw`` pixels overlaps when images are laid end to end (image n starts at row n·hw)."""
    if n == 0:
        return max(1, configs.cdiv(hw, block_m))
    # The offsets n·hw mod BLOCK_M repeat with period BLOCK_M / gcd(hw, BLOCK_M).
    period = block_m // math.gcd(hw, block_m)
    return max((n_ * hw % block_m + hw - 1) // block_m + 1 for n_ in range(min(n, period)))


def launch_config(x: torch.Tensor, c_out: int, kernel: int, stride: int, padding, hw_out: int) -> dict:
    """The config the launcher uses for this call (tuned entry or heuristic; see ``configs``)."""
    target = launch_target(x.device)
    return configs.conv_config(hw_out, x.shape[1], c_out, kernel, stride, x.dtype, target.arch, target.interpreter,
                               batch=x.shape[0], padding=padding, sms=target.sms)


def launch_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int, relu: bool,
                out: Optional[torch.Tensor], partial_sums: bool, allow_tf32: bool = False,
                config: Optional[dict] = None, *, padding=None, affine: Optional[Tuple[float, float]] = None,
                residual: Optional[torch.Tensor] = None,
                tf32x3: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Check, allocate and launch; shared by ``conv_bn_act`` and ``aggregation_ese``."""
    out = prepare_conv(x, packed_weight, bias, stride, out, padding, residual)
    kernel, _, c_in, c_out = packed_weight.shape
    pad = tuple(padding) if padding is not None else symmetric(kernel)
    n, _, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    tensors = dict(x=x, weight=packed_weight, bias=bias, out=out)
    check_same_device(**tensors, **({"residual": residual} if residual is not None else {}))
    cfg = configs.conv_config_defaults(dict(config) if config else launch_config(x, c_out, kernel, stride, pad,
                                                                                   ho * wo))
    m = n * ho * wo
    t = psum_tiles(n, ho * wo, cfg["BLOCK_M"])
    psum = torch.empty((n, t, c_out), device=x.device, dtype=torch.float32) if partial_sums else None
    if m == 0 or c_out == 0:
        if psum is not None:
            psum.zero_()
        return out, psum
    k_steps = configs.conv_k_steps(c_in, kernel, cfg)
    splits, per_split = configs.conv_split(k_steps, cfg["SPLIT_K"])
    tiles = configs.conv_grid(n, ho * wo, c_in, c_out, kernel, cfg)[0]
    a, c = affine if affine is not None else (1.0, 0.0)
    res = residual if residual is not None else out  # an unused pointer when off
    psum_arg = psum if psum is not None else out
    ws = (torch.empty((splits, m, c_out), device=x.device, dtype=torch.float32) if splits > 1 else out)
    epilogue = dict(RELU=relu, AFFINE=affine is not None, RESIDUAL=residual is not None,
                    PARTIAL_SUMS=partial_sums, ROUND_BF16=round_bf16_by_hand(x.dtype))
    conv_bn_act_kernel[(tiles, splits)](
        x, packed_weight, bias, out, res, psum_arg, ws,
        m, h, w, c_in, wo, ho * wo, c_out, t, kernel * kernel * c_in, configs.cdiv(c_in, cfg["BLOCK_K"]),
        per_split, k_steps, float(a), float(c),
        *x.stride(), *out.stride(), *res.stride(),
        STRIDE=stride, KW=kernel, PAD_T=pad[0], PAD_L=pad[2], SPLIT=splits > 1, FLAT_K=bool(cfg["FLAT_K"]),
        UPCAST=upcast_dot(x.dtype), INPUT_PRECISION=dot_precision(x.dtype, allow_tf32, tf32x3),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], GROUP_M=cfg["GROUP_M"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **epilogue)
    if splits > 1:
        split_k_reduce_kernel[(configs.cdiv(m, cfg["BLOCK_M"]), configs.cdiv(c_out, cfg["BLOCK_N"]))](
            ws, bias, out, res, psum_arg, m, wo, ho * wo, c_out, t, splits, m * c_out, float(a), float(c),
            *out.stride(), *res.stride(),
            BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], num_warps=4, **epilogue)
    return out, psum


def conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                relu: bool = True, out: Optional[torch.Tensor] = None, *, padding=None,
                affine: Optional[Tuple[float, float]] = None, residual: Optional[torch.Tensor] = None,
                allow_tf32: bool = False, tf32x3: bool = False, config: Optional[dict] = None) -> torch.Tensor:
    """``residual + a · act(conv(x, W) + b) + c`` for k×k kernels (k 1, 2 or 3), stride 1 or 2.

    Args:
        x: (N, C_in, H, W), any strides (NCHW, channels_last, or a channel slice of a buffer).
        packed_weight: (k, k, C_in, C_out) from ``pack_conv_weight``, same dtype as ``x``.
        bias: (C_out,), any float dtype (read as fp32).
        out: optional (N, C_out, Ho, Wo) destination, any strides (e.g. a buffer's channel slice);
            allocated channels_last when omitted.
        padding: (top, bottom, left, right) zeros, each < k; default k // 2 all round.
        affine: (a, c) applied after the activation; residual: (N, C_out, Ho, Wo), any strides,
            added last (it may be ``out`` itself: each element is read by the program that writes it).
        allow_tf32 / tf32x3: fp32 operands on TF32 tensor cores, plain or as the error-compensated
            3×TF32 split (see the family's ``OPTIONS``); fp32 is IEEE otherwise.
        config: a launch config overriding ``configs.conv_config`` (tests, the tuner).
    """
    return launch_conv(x, packed_weight, bias, stride, relu, out, False, allow_tf32, config, padding=padding,
                       affine=affine, residual=residual, tf32x3=tf32x3)[0]
