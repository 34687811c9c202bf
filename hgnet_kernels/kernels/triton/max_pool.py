"""k×k max pooling (k 2 or 3, stride 1 or 2, any padding < k), NHWC in, any strided view out: PP-HGNet's
3×3/2 stem pool and PP-HGNetV2's 2×2/1 "SAME" stem pool.

    y[n, c, oh, ow] = max_{kh, kw} x[n, c, oh·s − p_top + kh, ow·s − p_left + kw]

Padded taps are ignored (−∞, as in PyTorch and Paddle), or, with ``zero_pad``, zeros that take
part in the max (timm's PP-HGNetV2 stem pads with ``F.pad`` first). It exists so the pool's output
lands directly in slot 0 of the first HG-Block's (or the V2 stem's) concat buffer. NaN propagates
as in PyTorch: a window containing NaN yields NaN.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import check_same_device, kernel_launch, launch_target, pixel_channel_tile, tile_offsets_int64
from .conv_bn_act import fits_int32
from ..spec import Launch, prepare_max_pool, symmetric
from .capabilities import SUPPORTS


# Sizes only bound masks and index maths: not specialised, so a new input size compiles nothing
# new. Channel counts and strides stay specialised (divisible by 16: vector loads along channels).
@triton.jit(do_not_specialize=["M", "H", "W", "Wo", "HW"])
def max_pool_kernel(
    x_ptr, y_ptr, M, H, W, C, Wo, HW,
    sxn, sxc, sxh, sxw, syn, syc, syh, syw,
    KS: tl.constexpr, STRIDE: tl.constexpr, PAD_T: tl.constexpr, PAD_L: tl.constexpr, ZERO_PAD: tl.constexpr,
    INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, oh, ow, c, p_ok, c_ok = pixel_channel_tile(M, HW, Wo, C, INT64, BLOCK_P, BLOCK_C)
    x_img = n * sxn
    best = tl.full((BLOCK_P, BLOCK_C), float("-inf"), tl.float32)
    for kh in tl.static_range(KS):
        ih = oh * STRIDE - PAD_T + kh
        for kw in tl.static_range(KS):
            iw = ow * STRIDE - PAD_L + kw
            ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x = tl.load(x_ptr + (x_img + ih * sxh + iw * sxw)[:, None] + c[None, :] * sxc,
                        mask=ok[:, None] & c_ok[None, :], other=0.0 if ZERO_PAD else float("-inf"))
            x = x.to(tl.float32)
            # NaN wins and then stays: NaN > v and v > NaN are both false.
            best = tl.where((x > best) | (x != x), x, best)
    y_off = (n * syn + oh * syh + ow * syw)[:, None] + c[None, :] * syc
    tl.store(y_ptr + y_off, best.to(y_ptr.dtype.element_ty), mask=p_ok[:, None] & c_ok[None, :])


def resolve_max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None, *, kernel: int = 3, stride: int = 2,
                     padding=None, zero_pad: bool = False,
                     config: Optional[dict] = None) -> Tuple[Launch, torch.Tensor]:
    """Check ``max_pool``'s arguments and resolve its launch: (the ``Launch``, called with (x, out);
    the destination)."""
    out = prepare_max_pool(SUPPORTS["max_pool"], x, out, kernel, stride, padding)
    pad = tuple(padding) if padding is not None else symmetric(kernel)
    n, c, h, w = x.shape
    ho, wo = out.shape[2], out.shape[3]
    check_same_device(x=x, out=out)
    target = launch_target(x.device)
    cfg = config or configs.tile_config("max_pool", c, x.dtype, target.arch, target.interpreter,
                                        hw=ho * wo, batch=n, geometry=f"k{kernel}s{stride}", sms=target.sms)
    grid = configs.tile_grid(n, ho * wo, c, cfg) if n * ho * wo > 0 and c > 0 else None
    int64 = tile_offsets_int64(n * ho * wo, cfg["BLOCK_P"], all(map(fits_int32, (x, out))))
    return kernel_launch(max_pool_kernel, grid, (n * ho * wo, h, w, c, wo, ho * wo, *x.stride(), *out.stride()),
                         dict(KS=kernel, STRIDE=stride, PAD_T=pad[0], PAD_L=pad[2], ZERO_PAD=zero_pad, INT64=int64,
                              **cfg), out), out


def max_pool(x: torch.Tensor, out: Optional[torch.Tensor] = None, *, kernel: int = 3, stride: int = 2,
             padding=None, zero_pad: bool = False, config: Optional[dict] = None) -> torch.Tensor:
    """``kernel``×``kernel`` / ``stride`` max pool of (N, C, H, W) ``x`` (any strides) into ``out``
    (any strides), padding (top, bottom, left, right) default k // 2 all round: padded taps
    ignored, or zeros in the max with ``zero_pad``. A max is exact in every dtype."""
    launch, out = resolve_max_pool(x, out, kernel=kernel, stride=stride, padding=padding, zero_pad=zero_pad,
                                   config=config)
    launch(x, out)
    return out
