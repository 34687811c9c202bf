"""``python -m hgnet_kernels plan``: the execution plan as a table, the kernel engineer's map.

Every figure is computed from the plan (``Plan.costs``), the launch configs (``configs``) and
the GPU's data-sheet peaks (``configs/devices.json``), never typed in: per op the input and output
shapes and slices, MACs, bytes read and written, arithmetic intensity, and on a known GPU (the
one here, or ``--gpu``) the roofline time of the op and the launch grid that the Triton config
gives (programs, and programs per SM), with the share of the tensor-core work that lands on
padding (``mma eff.``: useful MACs / MACs of the whole tiles). The ESE partial sums are counted in
the Triton family's layout (its ``partial_sums_shape`` for those launch configs).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
from dataclasses import dataclass
from typing import List, Optional

import torch

from . import cli, configs
from .models import MODEL_NAMES
from .plan import OpCost, build_plan, stride_label
from .shapes import folded_structure, model_plan
from .verify import DTYPES

# Ops whose kernels the Triton family launches with a configs grid (the head is a few cuBLAS GEMVs).
_GRIDDED = ("conv", "depthwise", "aggregation", "max_pool", "scale_residual", "ese_gate")


@dataclass
class Row:
    index: int
    kind: str
    name: str
    input: str
    output: str
    macs: int
    bytes_read: int
    bytes_written: int
    intensity: float
    roofline_us: Optional[float] = None
    bound: Optional[str] = None
    programs: Optional[int] = None
    programs_per_sm: Optional[float] = None
    mma_efficiency: Optional[float] = None


def _shape(cost_shape, ref, whole_channels) -> str:
    text = "×".join(map(str, cost_shape))
    return text if ref.channels == whole_channels else f"{text} [{ref.start}:{ref.stop}]"


def short_name(name: str) -> str:
    """``stages.1.blocks.0.layers.2`` → ``s1.b0.l2``: the table stays narrow."""
    for long, short in (("stages.", "s"), ("blocks.", "b"), ("layers.", "l"), ("aggregation", "agg"),
                        ("downsample", "ds")):
        name = name.replace(long, short)
    return name or "head"


def launch(cost: OpCost, dtype: torch.dtype, arch: Optional[str], sms: Optional[int] = None) -> Optional[dict]:
    """Programs of the Triton launch of this op on ``arch`` (a GPU of ``sms`` SMs) at the cost's
    batch — the same config and grid functions the launchers call — and, for the GEMMs, the MACs
    their whole tiles compute (padding of rows across images, channels and K included), the K
    splits and the config."""
    op = cost.op
    if op.kind not in _GRIDDED:
        return None
    n, c_in, c_out = cost.input_shape[0], cost.input_shape[1], cost.output_shape[1]
    if op.kind == "ese_gate":
        cfg = configs.gate_config(c_out, dtype, arch, batch=n, sms=sms)
        return dict(programs=_product(configs.gate_grid(n, c_out, cfg)))
    h_out, w_out = cost.output_shape[2:]
    hw = h_out * w_out
    if op.kind in ("conv", "aggregation"):
        cfg = configs.conv_config(hw, c_in, c_out, op.kernel, op.stride_arg, dtype, arch, batch=n,
                                  padding=op.padding, sms=sms)
        shape = configs.conv_launch_shape(n, hw, c_in, c_out, op.kernel, cfg)
        return dict(programs=_product(shape.grid), splits=shape.splits, config=cfg,
                    padded_macs=configs.conv_padded_macs(n, hw, c_in, c_out, op.kernel, cfg))
    kernel_name = {"depthwise": "depthwise_conv"}.get(op.kind, op.kind)
    geometry = f"k{op.kernel}s{stride_label(op.stride)}" if op.kind in ("depthwise", "max_pool") else ""
    cfg = configs.tile_config(kernel_name, c_out, dtype, arch, hw=hw, batch=n, geometry=geometry, sms=sms)
    return dict(programs=_product(configs.tile_grid(n, hw, c_out, cfg)))


def _product(grid) -> int:
    rows, cols = grid
    return rows * cols


def report(model: str, batch: int, size, dtype: torch.dtype, gpu: Optional[str], text_rec: bool = False) -> List[Row]:
    """The rows of ``model``'s plan (``text_rec``: its text-recognition layout) on a batch × C × H × W
    input (``size``: an int or (H, W))."""
    h, w = (size, size) if isinstance(size, int) else size
    net = folded_structure(model, text_rec)
    plan = build_plan(net)
    net_shapes = {name: tuple(t.shape) for name, t in net.named_buffers()}
    element = torch.empty((), dtype=dtype).element_size()
    peaks = configs.known_gpus().get(gpu) if gpu else None
    from .kernels import triton as triton_family
    from .kernels.triton import compiling_for
    partial_sums = functools.partial(triton_family.partial_sums_shape, dtype=dtype, device=torch.device("cpu"))
    with compiling_for(peaks["arch"], int(peaks["sms"])) if peaks else contextlib.nullcontext():
        costs = plan.costs(batch, h, w, element, net_shapes, partial_sums)
    rows = []
    for index, cost in enumerate(costs):
        op = cost.op
        row = Row(index, op.describe(), short_name(op.name),
                  _shape(cost.input_shape, op.reads[0], plan.buffers[op.reads[0].buffer].channels),
                  _shape(cost.output_shape, op.writes[0], plan.buffers[op.writes[0].buffer].channels),
                  cost.macs, cost.bytes_read, cost.bytes_written, cost.intensity)
        if peaks:
            compute = 2 * cost.macs / peaks[str(dtype).split(".")[-1]]
            memory = (cost.bytes_read + cost.bytes_written) / peaks["bandwidth"]
            row.roofline_us = max(compute, memory) * 1e6
            row.bound = "compute" if compute >= memory else "memory"
            grid = launch(cost, dtype, peaks["arch"], int(peaks["sms"]))
            if grid:
                row.programs = grid["programs"]
                row.programs_per_sm = grid["programs"] / peaks["sms"]
                if "padded_macs" in grid:
                    row.mma_efficiency = cost.macs / grid["padded_macs"]
        rows.append(row)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_NAMES, default="tiny",
                        help="tiny, small, base (PP-HGNet) or b0 … b6 (PP-HGNetV2)")
    parser.add_argument("--text-rec", action="store_true",
                        help="PaddleOCR's text-recognition layout (PP-OCRv4 server rec: small, v5: b4; --size 48x320)")
    parser.add_argument("--size", type=cli.image_size, default=(224, 224), help="input size: 224 or HxW, e.g. 640")
    parser.add_argument("--batch", type=cli.at_least(1), default=1)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="default: float32, as verify and bench (bench adds float16 and bfloat16 on a GPU)")
    parser.add_argument("--gpu", choices=sorted(configs.known_gpus()), default=None,
                        help="roofline and launch grid on this GPU (default: the GPU here, if known)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def run(args: argparse.Namespace) -> int:
    gpu = args.gpu
    if gpu is None and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        gpu = next((key for key in configs.known_gpus() if key in name), None)
    rows = report(args.model, args.batch, args.size, DTYPES[args.dtype], gpu, args.text_rec)
    macs = sum(r.macs for r in rows)
    read, written = sum(r.bytes_read for r in rows), sum(r.bytes_written for r in rows)
    totals = {"macs": macs, "bytes_read": read, "bytes_written": written, "intensity": 2 * macs / (read + written),
              "roofline_us": sum(r.roofline_us for r in rows) if gpu else None}
    if args.json:
        json.dump({"model": args.model, "text_rec": args.text_rec, "batch": args.batch, "size": args.size, "dtype": args.dtype, "gpu": gpu,
                   "totals": totals, "rows": [vars(r) for r in rows]}, sys.stdout, indent=1)
        print()
        return 0
    header = ["#", "op", "name", "input", "output", "MMACs", "read KB", "write KB", "FLOP/B"]
    if gpu:
        header += ["roofline µs", "bound", "programs", "per SM", "mma eff."]
    body = []
    for r in rows:
        line = [r.index, r.kind, r.name, r.input, r.output, f"{r.macs / 1e6:.1f}", f"{r.bytes_read / 1e3:.0f}",
                f"{r.bytes_written / 1e3:.0f}", f"{r.intensity:.1f}"]
        if gpu:
            line += [f"{r.roofline_us:.2f}", r.bound, r.programs if r.programs is not None else "-",
                     f"{r.programs_per_sm:.2f}" if r.programs_per_sm is not None else "-",
                     f"{r.mma_efficiency:.0%}" if r.mma_efficiency is not None else "-"]
        body.append(line)
    total = ["", "total", "", "", "", f"{macs / 1e6:.1f}", f"{read / 1e3:.0f}", f"{written / 1e3:.0f}",
             f"{totals['intensity']:.1f}"]
    if gpu:
        total += [f"{totals['roofline_us']:.1f}", "", "", "", ""]
    body.append(total)
    from .verify import print_table
    where = f" on {gpu} (data-sheet peaks; arch {configs.known_gpus()[gpu]['arch']} launch configs)" if gpu else ""
    print_table(f"{model_plan(args.model, args.text_rec).model} plan: {args.batch}×3×{cli.size_label(args.size)} {args.dtype}{where}; "
           f"{macs / 1e9:.2f} GMACs", header, body, width=200)
    return 0
