"""``python -m hgnet_kernels warmup``: compile the kernels (and capture the CUDA graphs) of a list
of input shapes before a service takes traffic, with a progress bar; ``FusedPPHGNet.warmup`` does
the work. Triton keeps what it compiles in ``TRITON_CACHE_DIR`` (default ``~/.triton/cache``):
run this on the GPU while building a container image, keep that directory in the image, and the
service's first requests compile nothing."""
from __future__ import annotations

import argparse
import os
import sys

from . import cli
from .backends import BACKENDS
from .fused import FusedPPHGNet
from .models import MODEL_NAMES, build_model
from .verify import DTYPES
from .weights import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=MODEL_NAMES, default=None,
                        help="tiny … base, b0 … b6 (default: the model of --weights, else tiny)")
    parser.add_argument("--weights", default=None, help="a checkpoint (weights do not change what is compiled)")
    parser.add_argument("--sizes", nargs="+", type=cli.image_size, default=[(224, 224)],
                        help="input sizes: 224 or HxW, e.g. 640x640 (default 224)")
    parser.add_argument("--batches", nargs="+", type=cli.at_least(1), default=[1])
    parser.add_argument("--outputs", choices=["logits", "features", "both"], default="logits",
                        help="what the service calls: forward (logits), forward_features, or both")
    parser.add_argument("--backend", choices=["auto", *BACKENDS], default="auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--device", type=cli.device, default=None, help="cpu or cuda (default: cuda when available)")


def _bar(done: int, total: int, entry: dict, width: int = 24) -> None:
    """One line redrawn in place on a terminal; a line per shape in a log."""
    filled = width * done // total
    line = (f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total}  batch {entry['batch']} at "
            f"{cli.size_label(entry['size'])} ({entry['outputs']}): {entry['seconds']:.2f} s")
    if sys.stderr.isatty():
        print(f"\r{line}", end="\n" if done == total else "", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    device = args.device or cli.default_device()
    model = load_model(args.weights) if args.weights else build_model(args.model or "tiny")
    if args.weights and args.model and model.config.name != args.model:
        raise cli.UserError(f"--weights {args.weights} holds {model.config.name}, not the --model {args.model}; "
                            "drop --model or pick the matching file")
    dtype = DTYPES[args.dtype]
    runs = len(set(args.sizes)) * len(set(args.batches)) * (2 if args.outputs == "both" else 1)
    options = {"max_graphs": max(runs, 8)} if device.type == "cuda" and args.backend != "torch" else {}
    fused = FusedPPHGNet(model.eval().to(device=device, dtype=dtype), backend=args.backend, dtype=dtype, **options)
    cache = os.environ.get("TRITON_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".triton", "cache"))
    print(f"warming {model.config.name} on {device} ({args.dtype}, backend {fused.backend}): {runs} shape(s)"
          + (f"; Triton cache: {cache}" if fused.backend == "triton" else ""), file=sys.stderr)
    done = fused.warmup(args.sizes, args.batches, outputs=args.outputs, progress=_bar)
    total = sum(entry["seconds"] for entry in done)
    print(f"warmed {len(done)} shape(s) in {total:.1f} s")
    return 0
