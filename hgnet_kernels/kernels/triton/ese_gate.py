"""ESE gate: reduce the aggregation's partial sums to the global mean, then 1×1 conv + sigmoid.

Math, per image n and output channel co (C channels, H·W pixels)::

    mean[n, ci]  = (Σ_j psum[n, j, ci]) / (H·W)
    gate[n, co]  = sigmoid( b[co] + Σ_ci W[co, ci] · mean[n, ci] )

``psum`` is this family's (N, T, C) layout (``conv_bn_act``'s module docstring): row j of image n
holds the image's rows inside the j-th row tile it overlaps (tiles span images), zeros past its
last tile; so the channel sums are Σ_j over the T rows. A GEMV per image. Each program owns a block
of output channels and walks the input channels and the T rows in a fixed order (BLOCK_T rows at
a time, then across steps): deterministic, no atomics. The gate is fp32.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import triton
import triton.language as tl

from ... import configs
from ._common import check_same_device, kernel_launch, launch_target
from ..spec import Launch, prepare_ese_gate


# T follows the input size and only bounds a loop: not specialised, so a new size compiles nothing.
@triton.jit(do_not_specialize=["T"])
def ese_gate_kernel(
    psum_ptr, w_ptr, b_ptr, gate_ptr,
    T, C, inv_hw,
    BLOCK_T: tl.constexpr, BLOCK_CO: tl.constexpr, BLOCK_CI: tl.constexpr,
):
    n = tl.program_id(0).to(tl.int64)
    offs_co = tl.program_id(1) * BLOCK_CO + tl.arange(0, BLOCK_CO)
    co_ok = offs_co < C
    acc = tl.zeros((BLOCK_CO,), dtype=tl.float32)
    for ci0 in range(0, C, BLOCK_CI):
        offs_ci = ci0 + tl.arange(0, BLOCK_CI)
        ci_ok = offs_ci < C
        total = tl.zeros((BLOCK_CI,), dtype=tl.float32)
        for t0 in range(0, T, BLOCK_T):
            offs_t = t0 + tl.arange(0, BLOCK_T)
            part = tl.load(psum_ptr + (n * T + offs_t[:, None]) * C + offs_ci[None, :],
                           mask=(offs_t < T)[:, None] & ci_ok[None, :], other=0.0)
            total += tl.sum(part, axis=0)
        wt = tl.load(w_ptr + offs_co[:, None] * C + offs_ci[None, :],
                     mask=co_ok[:, None] & ci_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(wt * (total * inv_hw)[None, :], axis=1)
    acc += tl.load(b_ptr + offs_co, mask=co_ok, other=0.0).to(tl.float32)
    tl.store(gate_ptr + n * C + offs_co, tl.sigmoid(acc), mask=co_ok)


def resolve_ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int, *,
                     config: Optional[dict] = None) -> Tuple[Launch, torch.Tensor]:
    """Check ``ese_gate``'s arguments and resolve its launch: (the ``Launch``, called with
    (psum, weight, bias, gate); the gate)."""
    gate = prepare_ese_gate(psum, weight, bias, hw)
    n, t, c = psum.shape
    check_same_device(psum=psum, weight=weight, bias=bias)
    target = launch_target(psum.device)
    cfg = config or configs.gate_config(c, weight.dtype, target.arch, target.interpreter, batch=n,
                                        sms=target.sms)
    grid = configs.gate_grid(n, c, cfg) if n > 0 else None
    return kernel_launch(ese_gate_kernel, grid, (t, c, 1.0 / hw), dict(cfg), gate), gate


def ese_gate(psum: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, hw: int, *,
             config: Optional[dict] = None) -> torch.Tensor:
    """Gate (N, C) fp32 from partial sums (N, T, C) fp32 of an H·W = ``hw`` map (any T rows per
    image that add up to its channel sums).

    ``weight`` is the ESE 1×1 conv as (C_out, C_in) = (C, C); ``bias`` (C,).
    """
    launch, gate = resolve_ese_gate(psum, weight, bias, hw, config=config)
    launch(psum, weight, bias, gate)
    return gate
