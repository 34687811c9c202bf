"""ESE scale and residual in one pass, written into its destination.

Math::

    out[n, c, h, w] = y[n, c, h, w] · gate[n, c]  (+ identity[n, c, h, w])

``out`` is any strided view: slot 0 of the next HG-Block's buffer, or the stage output.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import check_same_device, kernel_launch, launch_target, pixel_channel_tile, tile_offsets_int64
from .conv_bn_act import fits_int32
from ..spec import Launch, prepare_scale_residual


# Sizes only bound masks and index maths: not specialised, so a new input size compiles nothing
# new. Channel counts and strides stay specialised (divisible by 16: vector loads along channels).
@triton.jit(do_not_specialize=["M", "W", "HW"])
def scale_residual_kernel(
    y_ptr, gate_ptr, id_ptr, out_ptr,
    M, C, W, HW,
    syn, syc, syh, syw,
    sin, sic, sih, siw,
    son, soc, soh, sow,
    RESIDUAL: tl.constexpr, INT64: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
):
    n, h, w, c, p_ok, c_ok = pixel_channel_tile(M, HW, W, C, INT64, BLOCK_P, BLOCK_C)
    mask = p_ok[:, None] & c_ok[None, :]
    y = tl.load(y_ptr + (n * syn + h * syh + w * syw)[:, None] + c[None, :] * syc, mask=mask, other=0.0)
    g = tl.load(gate_ptr + n[:, None] * C + c[None, :], mask=mask, other=0.0)  # a tile may span images
    out = y.to(tl.float32) * g
    if RESIDUAL:
        ident = tl.load(id_ptr + (n * sin + h * sih + w * siw)[:, None] + c[None, :] * sic,
                        mask=mask, other=0.0)
        out += ident.to(tl.float32)
    tl.store(out_ptr + (n * son + h * soh + w * sow)[:, None] + c[None, :] * soc,
             out.to(out_ptr.dtype.element_ty), mask=mask)


def resolve_scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None,
                           out: Optional[torch.Tensor] = None, *,
                           config: Optional[dict] = None) -> Tuple[Launch, torch.Tensor]:
    """Check ``scale_residual``'s arguments and resolve its launch: (the ``Launch``, called with
    (y, gate, identity or y, out); the destination)."""
    out = prepare_scale_residual(y, gate, identity, out)
    n, c, h, w = y.shape
    check_same_device(y=y, gate=gate, out=out, **({"identity": identity} if identity is not None else {}))
    target = launch_target(y.device)
    cfg = config or configs.tile_config("scale_residual", c, y.dtype, target.arch, target.interpreter,
                                        hw=h * w, batch=n, sms=target.sms)
    ident = identity if identity is not None else y
    grid = configs.tile_grid(n, h * w, c, cfg) if n * h * w > 0 and c > 0 else None
    int64 = tile_offsets_int64(n * h * w, cfg["BLOCK_P"], all(map(fits_int32, (y, gate, ident, out))))
    return kernel_launch(scale_residual_kernel, grid,
                         (n * h * w, c, w, h * w, *y.stride(), *ident.stride(), *out.stride()),
                         dict(RESIDUAL=identity is not None, INT64=int64, **cfg), out), out


def scale_residual(y: torch.Tensor, gate: torch.Tensor, identity: Optional[torch.Tensor] = None,
                   out: Optional[torch.Tensor] = None, *, config: Optional[dict] = None) -> torch.Tensor:
    """``y * gate[:, :, None, None] (+ identity)``; y, identity, out (N, C, H, W) of any strides,
    gate (N, C) fp32."""
    launch, out = resolve_scale_residual(y, gate, identity, out, config=config)
    launch(y, gate, identity if identity is not None else y, out)
    return out
