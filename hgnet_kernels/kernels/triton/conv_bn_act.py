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
rows in L2) and runs **one** software-pipelined K loop over (tap, channel block) pairs, kept as
lean as a GEMM's: each row's input offset at tap (0, 0) and a bitmask of its in-image taps are
computed once per tile, so a step costs a few scalar operations (the next tap and channel block),
one add and one bit test per row; the weight tile moves down by a constant. A 1×1 conv is exactly
a GEMM (constant strides, no border). With ``FLAT_K`` the loop runs over K in BLOCK_K chunks that
may straddle taps (for convs whose C_in no channel block divides, like the stem's 3 channels).

``SWAP_AB`` computes the tile transposed, Yᵀ = Wᵀ·Xᵀ: output channels are then the MMA's M side,
so a layer with few output pixels (late stages at batch 1) still runs sm_90's wgmma, which takes
M in 64-row warpgroup tiles, with pixel tiles of 16 or 32 as its N side.

Split-K (``SPLIT_K`` > 1, for layers with too few output tiles to fill the GPU): program
(tile, s) accumulates the s-th contiguous range of K steps and stores its fp32 partial tile in a
workspace (SPLIT_K, M, C_out); a second kernel adds the SPLIT_K partials of each output in the
order s = 0, 1, … and applies the epilogue once. No atomics: the same input gives the same bits.

Every tensor is addressed through its four strides, in int32 offsets when every offset into it
fits (``fits_int32``) and int64 otherwise (``INT64``, chosen per launch), so:

* the input may be the user's NCHW tensor (the stem reads it without a layout copy), or a channel
  slice of an HG-Block's NHWC buffer (channel stride 1, pixel stride = the buffer's width);
* the output (and the residual) may be a channel slice of a larger NHWC buffer: each HG-Block
  layer writes straight into its slot, so the block's concatenation is never materialised.

Shape integers that change with N, H or W are not specialized on, so a new input size compiles no
new kernel; the pixel strides' alignment, which decides vector loads, comes as ``X_ALIGN`` (the
input's, also dividing C_in: the width of its contiguous channel runs) and ``Y_ALIGN`` (the output's
and the residual's); ``W_ALIGN``, C_out's (the packed weight's row stride), tells the k×k and flat
loops' weight loads what C_out's own specialization (a multiple of 16 or not) does not: B0's
8-channel stem2a loaded its weights element by element, outside the async copies.

ESE partial sums (``partial_sums=True``, the aggregation): ``psum`` is (N, T, C_out) fp32 with
``psum[n, j, co]`` = the sum of the final fp32 outputs (before rounding to the output dtype) of
the rows of image n inside row tile ``first_tile(n) + j``, where ``first_tile(n) = n·Ho·Wo //
BLOCK_M``; T = the most row tiles any image overlaps (``spec.psum_tiles``; the shape is the family's
``partial_sums_shape``). Each (tile, image) entry
has one writer, the program of that tile (or the split-K reduction's), and rows j past an image's
last tile are zeros written by the program of its first tile, so ``psum.sum(1)`` is the per-image
channel sum. ``ese_gate`` of this family adds the T rows in a fixed order: deterministic.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import check_same_device, dot_precision, launch_target
from ..spec import ConvLaunch, prepare_conv, prepare_partial_sums, psum_tiles, symmetric
from .capabilities import SUPPORTS


@triton.jit
def _row_coordinates(offs_m, HW, Wo):
    """Image, output row and column of GEMM rows ``offs_m``, all in the offsets' integer type."""
    img = offs_m // HW
    p = offs_m - img * HW
    oh = p // Wo
    return img, oh, p - oh * Wo


@triton.jit
def conv_epilogue(acc, pid_m, offs_m, img, oh, ow, m_ok, offs_co, co_ok,
                  b_ptr, y_ptr, res_ptr, psum_ptr, HW, C_out, T, act_floor, aff_a, aff_c,
                  add_residual, write_partial_sums,
                  syn, syc, syh, syw, srn, src, srh, srw,
                  ESE_SUMS: tl.constexpr, Y_ALIGN: tl.constexpr, BLOCK_M: tl.constexpr):
    """bias → ReLU (NaN stays NaN, as in torch.relu) → a·y + c → + residual → store; the ESE sums."""
    acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)[None, :]
    # The activation and the affine are runtime arguments, not specializations (one kernel serves
    # layers with and without them, at one max and one FMA an output element): ReLU is a floor of
    # 0, no activation a floor of −∞; no affine is a = 1, c = −0.0 (x·1 + (−0) is x bit for bit,
    # −0 included). The residual and the ESE sums are runtime branches too (uniform over the
    # program, after the K loop): each was one more compiled kernel per tile and layer form. The
    # ESE sums' code is compiled only where an aggregation (a 1×1 conv) may run (``ESE_SUMS``):
    # in a k×k conv it took registers (Triton 3.8 spilled the sm_80 fp16 64×64×16 k3 conv).
    acc = tl.maximum(acc, act_floor, propagate_nan=tl.PropagateNan.ALL)
    acc = acc * aff_a + aff_c
    mask = m_ok[:, None] & co_ok[None, :]
    co = offs_co.to(img.dtype)
    if add_residual != 0:
        r_row = tl.multiple_of(img * srn + oh * srh + ow * srw, Y_ALIGN)
        acc += tl.load(res_ptr + (r_row[:, None] + co[None, :] * src), mask=mask, other=0.0).to(tl.float32)
    y_row = tl.multiple_of(img * syn + oh * syh + ow * syw, Y_ALIGN)
    tl.store(y_ptr + (y_row[:, None] + co[None, :] * syc), acc.to(y_ptr.dtype.element_ty), mask=mask)
    if ESE_SUMS and write_partial_sums != 0:
        # One sum per image this tile touches (a tile may straddle several small images). Its
        # first and last image are reductions of the rows' images, not divisions of the tile's
        # first row by HW: with the residual and split-K branches beside it, the division (an
        # int64 one is a ptxas subroutine call) made Triton 3.6's sm_90 fp32 k3 conv spill.
        co64 = offs_co.to(tl.int64)
        img_lo = tl.min(img, axis=0)
        img_hi = tl.max(tl.where(m_ok, img, img_lo), axis=0)
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
def _first_row(pid_m, INT64: tl.constexpr, BLOCK_M: tl.constexpr):
    """pid_m · BLOCK_M in the kernel's offset type: int64 only when a tensor may pass 2^31 elements."""
    if INT64:
        row = pid_m.to(tl.int64) * BLOCK_M
    else:
        row = pid_m * BLOCK_M
    return row


# Shape integers that change with the input's N, H or W but not the code: not specialized on
# (value 1, divisibility by 16), so a new input size compiles nothing new. Pixel and image strides
# are among them; their alignment reaches the kernel as X_ALIGN / Y_ALIGN instead, which depend on
# the channel counts only. C_in's divisibility decides nothing either (EVEN_K, FLAT_C_IN and X_ALIGN
# carry what does); C_out and the channel strides stay specialized: they decide vector loads of W and Y.
# The input's channel stride keeps only its equal-to-1 specialization (NHWC: contiguous channels):
# for the user's NCHW image it is H·W, whose divisibility would otherwise follow the input size.
_SHAPE_ARGS = ["M", "H", "W", "C_in", "Wo", "HW", "T", "STEPS_PER_SPLIT", "K_STEPS",
               "sxn", "sxh", "sxw", "syn", "syh", "syw", "srn", "srh", "srw"]
# Layer-form flags that shape no K loop (the conv stride enters each row's tap-(0, 0) offset, once
# per tile; the residual and the ESE sums only the epilogue): runtime arguments, and never
# specialized on their value, so layers differing only in them share one compiled kernel.
_FORM_ARGS = ["stride", "add_residual", "write_partial_sums"]


@triton.jit(do_not_specialize=_SHAPE_ARGS + _FORM_ARGS, do_not_specialize_on_alignment=["sxc"])
def conv_bn_act_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, res_ptr, psum_ptr, ws_ptr,
    M, H, W, C_in, Wo, HW, C_out, T, STEPS_PER_SPLIT, K_STEPS, act_floor, aff_a, aff_c,
    stride, add_residual, write_partial_sums,
    sxn, sxc, sxh, sxw,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    KW: tl.constexpr, PAD_T: tl.constexpr, PAD_L: tl.constexpr,
    FLAT_K: tl.constexpr, FLAT_C_IN: tl.constexpr, EVEN_K: tl.constexpr,
    SWAP_AB: tl.constexpr, INT64: tl.constexpr, X_ALIGN: tl.constexpr, Y_ALIGN: tl.constexpr, W_ALIGN: tl.constexpr,
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

    offs_m = _first_row(pid_m, INT64, BLOCK_M) + tl.arange(0, BLOCK_M)
    offs_co = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < M
    if W_ALIGN < 16:  # C_out not specialized as a multiple of 16: the mask's runs of W_ALIGN, made visible
        co_ok = offs_co // W_ALIGN < C_out // W_ALIGN
    else:
        co_ok = offs_co < C_out
    img, oh, ow = _row_coordinates(offs_m, HW, Wo)
    ih0 = oh * stride - PAD_T
    iw0 = ow * stride - PAD_L
    # Everything about a row that the K loop needs, computed once: the offset of its tap (0, 0)
    # input pixel (outside the image for border rows, never dereferenced there), and a bit per
    # tap kh·KW + kw set when that tap's pixel is inside the image (and the row inside M).
    x_row = img * sxn + ih0 * sxh + iw0 * sxw
    taps = m_ok.to(tl.int32)  # a 1×1 conv has no padding: its one tap is inside for every real row
    if KW > 1:
        taps = tl.zeros((BLOCK_M,), dtype=tl.int32)
        for dh in tl.static_range(KW):
            h_ok = m_ok & (ih0 + dh >= 0) & (ih0 + dh < H)
            for dw in tl.static_range(KW):
                inside = h_ok & (iw0 + dw >= 0) & (iw0 + dw < W)
                taps = taps | (inside.to(tl.int32) << (dh * KW + dw))

    step_lo = tl.program_id(1) * STEPS_PER_SPLIT
    step_hi = tl.minimum(step_lo + STEPS_PER_SPLIT, K_STEPS)
    if SWAP_AB:  # Yᵀ = Wᵀ·Xᵀ: C_out is the MMA's M side, so few pixels still fill a 64-row wgmma
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if FLAT_K:  # K index = tap · C_in + channel, the packed weight's row; a step may straddle taps
        x_rows = x_ptr + tl.multiple_of(x_row, X_ALIGN)  # 64-bit row pointers: one add each per step
        for step in range(step_lo, step_hi):
            k = step * BLOCK_K + offs_k
            tap = k // FLAT_C_IN  # a constant divisor: a multiply, and runs of C_in contiguous channels
            c = k - tap * FLAT_C_IN
            k_ok = tap < KW * KW
            kh = tap // KW
            kw = tap - kh * KW
            # Channels are contiguous in runs of X_ALIGN (a divisor of C_in and of every pixel
            # offset) that start at multiples of X_ALIGN: vector loads of whole runs.
            cols = tl.max_contiguous(tl.multiple_of(kh * sxh + kw * sxw + c * sxc, X_ALIGN), X_ALIGN)
            # K's padding past the last tap tests bit KW·KW, which no row sets: A's mask is the tap
            # bit alone (one select less per row and step), and every shift stays below 32.
            tap_ok = ((taps[:, None] >> tl.minimum(tap, KW * KW)[None, :]) & 1) != 0
            a = tl.load(x_rows[:, None] + cols.to(x_row.dtype)[None, :], mask=tap_ok, other=0.0)
            w_rows = tl.multiple_of(k * C_out, W_ALIGN)
            b = tl.load(w_ptr + (w_rows[:, None] + offs_co[None, :]), mask=k_ok[:, None] & co_ok[None, :], other=0.0)
            acc = _accumulate(acc, a, b, SWAP_AB, INPUT_PRECISION)
    elif KW == 1:  # one tap, no padding: a GEMM whose A and B tiles move by constant strides
        c0 = step_lo * BLOCK_K
        a_tile = x_ptr + (tl.multiple_of(x_row, X_ALIGN)[:, None] + (c0 + offs_k)[None, :] * sxc)
        w_tile = w_ptr + (c0 + offs_k)[:, None] * C_out + offs_co[None, :]
        for _ in range(step_lo, step_hi):
            if EVEN_K:
                a = tl.load(a_tile, mask=m_ok[:, None], other=0.0)
                b = tl.load(w_tile, mask=co_ok[None, :], other=0.0)
            else:  # the last block is partial
                c_ok = c0 + offs_k < C_in
                a = tl.load(a_tile, mask=m_ok[:, None] & c_ok[None, :], other=0.0)
                b = tl.load(w_tile, mask=c_ok[:, None] & co_ok[None, :], other=0.0)
            acc = _accumulate(acc, a, b, SWAP_AB, INPUT_PRECISION)
            a_tile += BLOCK_K * sxc
            w_tile += BLOCK_K * C_out
            c0 += BLOCK_K
    else:  # (tap, channel block) pairs, channel blocks inner; the per-step work is a few scalars
        c_blocks = tl.cdiv(C_in, BLOCK_K)
        tap = step_lo // c_blocks
        c0 = (step_lo - tap * c_blocks) * BLOCK_K
        w_tile = w_ptr + (tl.multiple_of((tap * C_in + c0 + offs_k) * C_out, W_ALIGN)[:, None] + offs_co[None, :])
        x_rows = x_ptr + tl.multiple_of(x_row, X_ALIGN)  # 64-bit row pointers: one add each per step
        for _ in range(step_lo, step_hi):
            kh = tap // KW
            step_off = tl.multiple_of(kh * sxh + (tap - kh * KW) * sxw + c0 * sxc, X_ALIGN)
            a_tile = (x_rows + step_off)[:, None] + offs_k[None, :] * sxc
            row_ok = (taps & (1 << tap)) != 0
            if EVEN_K:
                a = tl.load(a_tile, mask=row_ok[:, None], other=0.0)
                b = tl.load(w_tile, mask=co_ok[None, :], other=0.0)
            else:  # C_in not a multiple of BLOCK_K: the tap's last block is partial
                c_ok = c0 + offs_k < C_in
                a = tl.load(a_tile, mask=row_ok[:, None] & c_ok[None, :], other=0.0)
                b = tl.load(w_tile, mask=c_ok[:, None] & co_ok[None, :], other=0.0)
            acc = _accumulate(acc, a, b, SWAP_AB, INPUT_PRECISION)
            # Next channel block, or the next tap's first. The packed weight's K rows run
            # (tap, channel), so with whole blocks its tile just moves down BLOCK_K rows.
            c_next = c0 + BLOCK_K
            wrap = c_next >= C_in
            if EVEN_K:
                w_tile += BLOCK_K * C_out
            else:
                w_tile += tl.where(wrap, C_in - c0, BLOCK_K) * C_out
            tap += wrap.to(tl.int32)
            c0 = tl.where(wrap, 0, c_next)
    if SWAP_AB:
        acc = tl.trans(acc)

    # Split K (a grid of more than one K range, a runtime branch after the loop): this K range's
    # fp32 partial; the reduction kernel adds them and runs the epilogue.
    if tl.num_programs(1) > 1:
        ws_off = (tl.program_id(1).to(offs_m.dtype) * M + offs_m)[:, None] * C_out + offs_co[None, :]
        tl.store(ws_ptr + ws_off, acc, mask=m_ok[:, None] & co_ok[None, :])
    else:
        conv_epilogue(acc, pid_m, offs_m, img, oh, ow, m_ok, offs_co, co_ok,
                      b_ptr, y_ptr, res_ptr, psum_ptr, HW, C_out, T, act_floor, aff_a, aff_c,
                      add_residual, write_partial_sums,
                      syn, syc, syh, syw, srn, src, srh, srw, KW == 1, Y_ALIGN, BLOCK_M)


@triton.jit
def _accumulate(acc, a, b, SWAP_AB: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    if SWAP_AB:
        acc = tl.dot(tl.trans(b), tl.trans(a), acc, input_precision=INPUT_PRECISION)
    else:
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit(do_not_specialize=["M", "Wo", "HW", "T", "SPLITS", "SPLIT_STRIDE", "add_residual", "write_partial_sums",
                                "syn", "syh", "syw", "srn", "srh", "srw"])
def split_k_reduce_kernel(
    ws_ptr, b_ptr, y_ptr, res_ptr, psum_ptr,
    M, Wo, HW, C_out, T, SPLITS, SPLIT_STRIDE, act_floor, aff_a, aff_c, add_residual, write_partial_sums,
    syn, syc, syh, syw,
    srn, src, srh, srw,
    INT64: tl.constexpr, Y_ALIGN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Σ_s workspace[s] in the order s = 0, 1, … (deterministic), then the conv epilogue. Same
    BLOCK_M as the conv, so its ESE partial sums have the same (tile, image) layout."""
    pid_m = tl.program_id(0)
    offs_m = _first_row(pid_m, INT64, BLOCK_M) + tl.arange(0, BLOCK_M)
    offs_co = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    co_ok = offs_co < C_out
    mask = m_ok[:, None] & co_ok[None, :]
    partial = ws_ptr + (offs_m[:, None] * C_out + offs_co[None, :])
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for _ in range(0, SPLITS):
        acc += tl.load(partial, mask=mask, other=0.0)
        partial += SPLIT_STRIDE
    img, oh, ow = _row_coordinates(offs_m, HW, Wo)
    conv_epilogue(acc, pid_m, offs_m, img, oh, ow, m_ok, offs_co, co_ok,
                  b_ptr, y_ptr, res_ptr, psum_ptr, HW, C_out, T, act_floor, aff_a, aff_c,
                  add_residual, write_partial_sums,
                  syn, syc, syh, syw, srn, src, srh, srw, True, Y_ALIGN, BLOCK_M)


def fits_int32(t: torch.Tensor) -> bool:
    """Whether every offset the kernels form into ``t`` fits int32: its extent along each dim,
    plus two elements of margin (border taps and masked rows index up to two past the edge)."""
    return sum((size + 2) * abs(stride) for size, stride in zip(t.shape, t.stride())) < 2 ** 31


def pixel_alignment(*tensors: torch.Tensor) -> int:
    """The largest power of two up to 16 dividing every pixel and image stride of the tensors,
    1 if any has strided channels (the kernels load channel vectors only where channels are
    contiguous; the stem's NCHW input is read element by element). For NHWC buffers it is that
    of the channel count, the same for every H and W."""
    if any(t.stride(1) != 1 and t.shape[1] > 1 for t in tensors):
        return 1
    return math.gcd(16, *(s for t in tensors for i, s in enumerate(t.stride()) if i != 1))


def launch_config(device: torch.device, dtype: torch.dtype, n: int, c_in: int, c_out: int, kernel: int,
                  stride: int, padding, hw_out: int, config: Optional[dict] = None) -> dict:
    """The config the launcher uses for this call: ``config`` (tests, the tuner) or the tuned entry
    or heuristic for tensors on ``device`` (see ``configs``), defaults filled in."""
    if not config:
        target = launch_target(device)
        config = configs.conv_config(hw_out, c_in, c_out, kernel, stride, dtype, target.arch, target.interpreter,
                                     batch=n, padding=padding, sms=target.sms)
    return configs.conv_config_defaults(dict(config))


def partial_sums_shape(n: int, hw: int, c_in: int, c_out: int, dtype: torch.dtype, device: torch.device, *,
                       config: Optional[dict] = None, **options) -> Tuple[int, int, int]:
    """(N, T, C_out) of the aggregation's ESE partial sums on ``device``: T = ``psum_tiles`` over the
    row tiles of its launch config (``config``, or the one the launcher picks). The family's
    ``options`` (allow_tf32, tf32x3) do not change it."""
    cfg = launch_config(device, dtype, n, c_in, c_out, 1, 1, symmetric(1), hw, config)
    return n, psum_tiles(n, hw, cfg["BLOCK_M"]), c_out


class TritonConvLaunch(ConvLaunch):
    """One conv call resolved once (``resolve_conv``): the kernel's grid (None: no output pixels or
    channels, nothing to launch), scalar arguments and constexprs, the split-K reduction's, and the
    fp32 stand-in for the ESE-sum and workspace pointers a call does not use."""
    __slots__ = ("config", "grid", "args", "constexprs", "reduce_grid", "reduce_args", "reduce_constexprs",
                 "unused_fp32")

    def launch(self, x, packed_weight, bias, out, residual, psum, workspace) -> None:
        if self.grid is None:
            if psum is not None:
                psum.zero_()
            return
        res = out if residual is None else residual  # an unused pointer when off
        # The ESE sums and the workspace are fp32 pointers whether used or not: an unused one of
        # another type would be one more specialization of the kernels.
        sums = self.unused_fp32 if psum is None else psum
        ws = self.unused_fp32 if workspace is None else workspace
        conv_bn_act_kernel[self.grid](x, packed_weight, bias, out, res, sums, ws, *self.args, **self.constexprs)
        if self.reduce_grid is not None:
            split_k_reduce_kernel[self.reduce_grid](ws, bias, out, res, sums, *self.reduce_args,
                                                    **self.reduce_constexprs)


def resolve_conv(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int, relu: bool,
                 out: Optional[torch.Tensor], partial_sums: bool, allow_tf32: bool = False,
                 config: Optional[dict] = None, *, padding=None, affine: Optional[Tuple[float, float]] = None,
                 residual: Optional[torch.Tensor] = None, tf32x3: bool = False,
                 psum: Optional[torch.Tensor] = None) -> Tuple[TritonConvLaunch, torch.Tensor]:
    """Check the arguments and resolve the launch: (the ``TritonConvLaunch``, the destination —
    ``out``, or a fresh channels_last tensor when None). Shared by ``conv_bn_act`` and
    ``aggregation_ese`` (``partial_sums``; ``psum``: a destination of ``partial_sums_shape`` to
    check, or None)."""
    what = "aggregation" if partial_sums else "conv"
    out = prepare_conv(SUPPORTS[what], x, packed_weight, bias, stride, out, padding, residual, what)
    kernel, _, c_in, c_out = packed_weight.shape
    pad = tuple(padding) if padding is not None else symmetric(kernel)
    n, _, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    check_same_device(x=x, weight=packed_weight, bias=bias, out=out,
                      **({"residual": residual} if residual is not None else {}))
    cfg = launch_config(x.device, x.dtype, n, c_in, c_out, kernel, stride, pad, ho * wo, config)
    m = n * ho * wo
    t = psum_tiles(n, ho * wo, cfg["BLOCK_M"])
    if partial_sums and psum is not None:
        prepare_partial_sums(psum, (n, t, c_out), x)  # a caller's destination: checked once here
    launch = TritonConvLaunch()
    launch.config, launch.out_shape = cfg, tuple(out.shape)
    launch.psum_shape = (n, t, c_out) if partial_sums else None
    launch.grid = launch.reduce_grid = launch.workspace_shape = None
    launch.unused_fp32 = torch.empty(1, device=x.device, dtype=torch.float32)
    if m == 0 or c_out == 0:
        return launch, out
    shape = configs.conv_launch_shape(n, ho * wo, c_in, c_out, kernel, cfg)
    splits = shape.splits
    a, c = affine if affine is not None else (1.0, -0.0)
    floor = 0.0 if relu else float("-inf")
    res = residual if residual is not None else out
    launch.workspace_shape = shape.workspace_shape
    flags = (int(residual is not None), int(partial_sums))
    ws = out if splits == 1 else torch.empty(launch.workspace_shape, device="meta")
    int64 = not all(fits_int32(t) for t in (x, out, res, ws)) or splits * m * c_out >= 2 ** 31
    x_align, y_align = math.gcd(pixel_alignment(x), c_in), pixel_alignment(out, res)
    launch.grid = shape.grid
    launch.args = (m, h, w, c_in, wo, ho * wo, c_out, t, shape.steps_per_split, shape.k_steps, floor, float(a), float(c),
                   stride, *flags, *x.stride(), *out.stride(), *res.stride())
    launch.constexprs = dict(
        KW=kernel, PAD_T=pad[0], PAD_L=pad[2], FLAT_K=bool(cfg["FLAT_K"]),
        FLAT_C_IN=c_in if cfg["FLAT_K"] else 1,
        EVEN_K=c_in % cfg["BLOCK_K"] == 0, SWAP_AB=bool(cfg["SWAP_AB"]), INT64=int64, X_ALIGN=x_align,
        Y_ALIGN=y_align, W_ALIGN=math.gcd(16, c_out),
        INPUT_PRECISION=dot_precision(x.dtype, allow_tf32, tf32x3),
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"], GROUP_M=cfg["GROUP_M"],
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    if splits > 1:
        launch.reduce_grid = shape.reduce_grid
        launch.reduce_args = (m, wo, ho * wo, c_out, t, splits, m * c_out, floor, float(a), float(c), *flags,
                              *out.stride(), *res.stride())
        launch.reduce_constexprs = dict(INT64=int64, Y_ALIGN=y_align, BLOCK_M=cfg["BLOCK_M"],
                                        BLOCK_N=cfg["BLOCK_N"], num_warps=4)
    return launch, out


def resolve_conv_bn_act(x: torch.Tensor, packed_weight: torch.Tensor, bias: torch.Tensor, stride: int = 1,
                        relu: bool = True, out: Optional[torch.Tensor] = None, *, padding=None,
                        affine: Optional[Tuple[float, float]] = None, residual: Optional[torch.Tensor] = None,
                        allow_tf32: bool = False, tf32x3: bool = False,
                        config: Optional[dict] = None) -> Tuple[ConvLaunch, torch.Tensor]:
    """Check ``conv_bn_act``'s arguments and resolve its launch: (the ``ConvLaunch``, called with
    (x, packed_weight, bias, out, residual); the destination)."""
    return resolve_conv(x, packed_weight, bias, stride, relu, out, False, allow_tf32, config, padding=padding,
                        affine=affine, residual=residual, tf32x3=tf32x3)


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
    launch, out = resolve_conv_bn_act(x, packed_weight, bias, stride, relu, out, padding=padding, affine=affine,
                                      residual=residual, allow_tf32=allow_tf32, tf32x3=tf32x3, config=config)
    return launch(x, packed_weight, bias, out, residual)[0]
