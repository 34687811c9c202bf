"""``python -m hgnet_kernels verify``: fuse a model, check it against eager, time both."""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys

import torch

from . import FusedPPHGNet, cli
from .backends import BACKENDS
from .models import MODEL_NAMES, build_model, model_label, randomize_statistics
from .numerics import max_abs_error, relative_error, tolerance
from .timing import median_latency_ms
from .weights import load_model

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
          "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


# Backends whose kernels can run on the CPU only through a stand-in, for checking numerics.
CPU_STAND_INS = {"triton": ("TRITON_INTERPRET", "Triton's interpreter"),
                 "cuda": ("HGNET_KERNELS_CUDA_EMULATE", "the CUDA emulator")}


def use_cpu_stand_in(backend: str) -> None:
    """Let ``backend`` run on the CPU through its stand-in (our kernel modules are imported lazily,
    so the interpreter / emulator can still be chosen), saying so: its timings mean nothing."""
    variable, what = CPU_STAND_INS[backend]
    os.environ[variable] = "1"
    print(f"note: running the {backend} kernels on the CPU through {what} ({variable}=1); this checks numerics, "
          "its timings mean nothing and are not shown", file=sys.stderr)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_NAMES, default=None,
                        help="tiny, small, base (PP-HGNet) or b0 … b6 (PP-HGNetV2); default: the model of "
                             "--weights, else tiny")
    parser.add_argument("--weights", default=None,
                        help="a .pdparams, timm or hgnet_kernels checkpoint (default: random weights "
                             "with random BN statistics)")
    parser.add_argument("--batch", type=cli.at_least(1), default=1)
    parser.add_argument("--size", type=cli.image_size, default=(224, 224), help="input size: 224 or HxW, e.g. 640x640")
    parser.add_argument("--backend", choices=["auto", *BACKENDS], default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", type=cli.device, default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--iters", type=cli.at_least(1), default=10,
                        help="timed calls per method (none for triton / cuda on the CPU: their stand-ins are not timed)")
    parser.add_argument("--seed", type=int, default=0)


def _eager_model(args) -> torch.nn.Module:
    """The model to check: the checkpoint's (its size inferred, or checked against --model), else
    random weights with random BN statistics."""
    if not args.weights:
        return randomize_statistics(build_model(args.model or "tiny"), seed=args.seed)
    model = load_model(args.weights)
    if args.model and model.config.name != args.model:
        raise cli.UserError(f"--weights {args.weights} holds a {model_label(model)}, not the --model {args.model} you "
                            "asked for; drop --model or pick the matching file")
    return model


def print_table(title, header, rows, width: int = 140) -> None:
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for r in [header, *rows]:
            print("  ".join(str(c).rjust(w) for c, w in zip(r, widths)))
        return
    table = Table(title=escape(title))
    for h in header:
        table.add_column(escape(h), justify="right")
    for r in rows:
        table.add_row(*(escape(str(c)) for c in r))
    Console(width=max(width, shutil.get_terminal_size().columns)).print(table)


def run(args: argparse.Namespace) -> int:
    device = args.device or cli.default_device()
    dtype = DTYPES[args.dtype]
    stand_in = args.backend in CPU_STAND_INS and device.type == "cpu"
    if stand_in:
        use_cpu_stand_in(args.backend)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(args.seed)
    eager = _eager_model(args)
    reference = copy.deepcopy(eager).double().to(device)
    eager = eager.to(device=device, dtype=dtype)
    fused = FusedPPHGNet(eager, backend=args.backend, dtype=dtype)

    gen = torch.Generator().manual_seed(args.seed + 1)
    inputs = [torch.randn(args.batch, eager.in_channels, *args.size, generator=gen).to(device)
              for _ in range(3)]
    x = inputs[0]
    with torch.no_grad():
        expected = reference(x.double())
        eager_out = eager(x.to(dtype))
        fused_out = fused(x)
    eager_err = relative_error(eager_out, expected)
    fused_err = relative_error(fused_out, expected)
    allowed = tolerance(dtype, eager_err)
    ok = fused_err <= allowed and torch.isfinite(fused_out).all().item()

    if stand_in:  # an interpreter's or emulator's speed says nothing about the kernels
        speed = [["-", "-"], ["-", "-"]]
    else:
        eager_ms = median_latency_ms(lambda t: eager(t.to(dtype)), inputs, iters=args.iters, warmup=3)
        fused_ms = median_latency_ms(fused, inputs, iters=args.iters, warmup=3)
        speed = [[f"{eager_ms:.2f}", "1.00×"], [f"{fused_ms:.2f}", f"{eager_ms / fused_ms:.2f}×"]]
    title = (f"{model_label(eager)}  {args.batch}×{eager.in_channels}×{cli.size_label(args.size)}  {args.dtype} on {device}"
             f"  backend={fused.backend}" + ("" if args.weights else "  (random weights)")
             + (f"  (through {CPU_STAND_INS[args.backend][1]}: no timings)" if stand_in else ""))
    print_table(title, ["method", "max abs err", "rel err vs fp64", "median ms", "speedup"], [
        ["eager (NCHW)", f"{max_abs_error(eager_out, expected):.3e}", f"{eager_err:.3e}", *speed[0]],
        [f"FusedPPHGNet[{fused.backend}]", f"{max_abs_error(fused_out, expected):.3e}", f"{fused_err:.3e}", *speed[1]],
    ])
    if ok:
        print(f"OK: fused relative error {fused_err:.3e} <= tolerance {allowed:.3e}")
        return 0
    print(f"MISMATCH: fused relative error {fused_err:.3e} > tolerance {allowed:.3e} "
          f"(2× eager's own error at {args.dtype}, floor 1e-5)", file=sys.stderr)
    return 1
