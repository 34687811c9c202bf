"""``python -m hgnet_kernels bench``: end-to-end latency of every method, side by side.

Methods are timed in interleaved rounds (each round times every method once over ``--iters``
calls), so slow drift of a noisy machine hits all of them alike; the reported figure is the median
over rounds of the per-call mean. Every method's logits are checked against a float64 eager
reference in the same run: a fast wrong answer is reported as wrong.
"""
from __future__ import annotations

import argparse
import copy
import csv
import datetime
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Optional

import torch

from . import FusedPPHGNet, __version__, cli
from .backends import BACKENDS, unavailable_reason
from .models import MODEL_NAMES, build_model, randomize_statistics
from .numerics import relative_error, tolerance
from .verify import CPU_STAND_INS, DTYPES, use_cpu_stand_in

# PaddleClas's tables (its PP-HGNet and PP-HGNetV2 documentation): V100, TensorRT, FP32, batch 1, ms.
SEED_V100_TRT_FP32_B1_MS = {"tiny": 1.77, "small": 2.52, "base": 5.97, "b0": 0.52, "b1": 0.58, "b2": 0.95,
                            "b3": 1.18, "b4": 1.46, "b5": 2.84, "b6": 5.29}


@dataclass
class Row:
    model: str
    batch: int
    size: str         # "HxW"
    dtype: str
    method: str
    latency_ms: Optional[float] = None
    images_per_s: Optional[float] = None
    speedup_vs_eager: Optional[float] = None
    speedup_vs_best_compile: Optional[float] = None
    rel_err: Optional[float] = None
    tolerance: Optional[float] = None
    correct: Optional[bool] = None
    peak_mem_mb: Optional[float] = None
    seed_v100_trt_ms: Optional[float] = None
    error: str = ""   # why the method failed or could not run; a failure makes the command exit 1
    note: str = ""
    round_ms: List[float] = field(default_factory=list)


def machine_info(device: torch.device) -> Dict[str, str]:
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "hgnet_kernels": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_threads": str(torch.get_num_threads()), "device": str(device)}
    try:
        import triton
        info["triton"] = triton.__version__
    except ImportError:
        pass
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    return info


class GraphedEager:
    """Eager PyTorch (channels_last) captured in a CUDA graph by hand, as a user can do without
    any library: one static input, replayed, the output cloned out."""

    def __init__(self, model, example: torch.Tensor):
        self.model = model
        self.static_in = example.clone().contiguous(memory_format=torch.channels_last)
        side = torch.cuda.Stream(device=example.device)
        side.wait_stream(torch.cuda.current_stream(example.device))
        with torch.cuda.stream(side), torch.no_grad():
            model(self.static_in)  # warm-up (cuDNN picks its algorithms) outside the capture
        torch.cuda.current_stream(example.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.static_out = model(self.static_in)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out.clone()


def _with_tf32(fn):
    """``fn`` with cuDNN's TF32 on for its convolutions — PyTorch's own default for convs."""
    def call(x):
        previous = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = True
        try:
            return fn(x)
        finally:
            torch.backends.cudnn.allow_tf32 = previous
    return call


def _compile_modes(device: torch.device, batch: int, args) -> List[str]:
    if args.compile_modes:
        return args.compile_modes
    if device.type != "cuda":
        return ["default"]
    # max-autotune's own CUDA graphs are the point at batch 1; without them it is the fair large-batch peer.
    return ["default", "max-autotune", "reduce-overhead"] + (["max-autotune-no-cudagraphs"] if batch >= 64 else [])


def _methods(eager, dtype: torch.dtype, device: torch.device, batch: int, example: torch.Tensor,
             args) -> Dict[str, Callable]:
    """Every method to time, by name; a method that cannot be built is a string: the reason."""
    methods: Dict[str, Callable] = {"eager": eager}
    eager_cl = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    methods["eager_channels_last"] = lambda x: eager_cl(x.contiguous(memory_format=torch.channels_last))
    if device.type == "cuda":
        try:
            methods["eager_channels_last_graph"] = GraphedEager(eager_cl, example)
        except Exception as e:  # noqa: BLE001 - reported in its row
            methods["eager_channels_last_graph"] = f"failed: {type(e).__name__}: {_first_line(e)}"
        if dtype == torch.float32:
            methods["eager_channels_last_tf32"] = _with_tf32(methods["eager_channels_last"])
    for mode in _compile_modes(device, batch, args) if args.compile else []:
        if time.perf_counter() - args.started > args.compile_budget:
            continue  # time-boxed: compiling stops once the budget is spent (noted in the output)
        methods[f"compile_{mode}"] = torch.compile(copy.deepcopy(eager), mode=None if mode == "default" else mode)
    for backend in args.backends or BACKENDS:
        reason = unavailable_reason(backend, device, dtype)
        if reason:
            methods[f"fused_{backend}"] = f"unavailable: {reason}"
            continue
        variants = {f"fused_{backend}": {}}  # CUDA graphs on by default on a GPU
        if device.type == "cuda" and backend != "torch":
            variants[f"fused_{backend}_nograph"] = {"cuda_graph": False}
        for name, options in variants.items():
            try:
                methods[name] = FusedPPHGNet(eager, backend=backend, dtype=dtype, **options)
            except Exception as e:  # noqa: BLE001 - reported in its row
                methods[name] = f"failed: {type(e).__name__}: {_first_line(e)}"
    return methods


def _stand_in(method: str, device: torch.device) -> bool:
    """Whether ``method`` runs its kernels through a CPU stand-in (interpreter, emulator)."""
    return device.type == "cpu" and method.startswith("fused_") and method.split("_")[1] in CPU_STAND_INS


def _first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else ""


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_round(fn, inputs, iters: int, device: torch.device) -> float:
    """Mean ms per call over ``iters`` calls, rotating ``inputs``: CUDA events on a GPU (after a
    synchronise, so no earlier work is counted), perf_counter on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(iters):
            fn(inputs[i % len(inputs)])
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / iters
    start_s = time.perf_counter()
    for i in range(iters):
        fn(inputs[i % len(inputs)])
    return (time.perf_counter() - start_s) * 1e3 / iters


def bench_case(model_name: str, batch: int, dtype_name: str, device: torch.device, args, progress=None) -> List[Row]:
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    eager = randomize_statistics(build_model(model_name)).to(device)
    reference = copy.deepcopy(eager).double()
    eager = eager.to(dtype)
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(batch, eager.in_channels, *args.size, generator=gen).to(device) for _ in range(2)]
    with torch.no_grad():
        expected = reference(inputs[0].double())
    methods = _methods(eager, dtype, device, batch, inputs[0].to(dtype), args)
    rows: Dict[str, Row] = {}
    for name, fn in methods.items():
        row = rows[name] = Row(model_name, batch, f"{args.size[0]}x{args.size[1]}", dtype_name, name)
        if dtype == torch.float32 and batch == 1 and device.type == "cuda" and args.size == (224, 224):
            row.seed_v100_trt_ms = SEED_V100_TRT_FP32_B1_MS[model_name]
        if isinstance(fn, str):
            row.error = fn
            continue
        try:
            start = time.perf_counter()
            with torch.no_grad():
                out = fn(inputs[0].to(dtype))  # first call: compiles / tunes / packs
                _sync(device)
            if name.startswith("compile"):
                row.note = f"first call {time.perf_counter() - start:.1f}s"
            if _stand_in(name, device):
                row.note = f"{CPU_STAND_INS[name.split('_')[1]][1]}: checks numerics, not timed"
            row.rel_err = relative_error(out, expected)
        except Exception as e:  # noqa: BLE001 - a failing method is reported in its row, and fails the run
            row.error = f"failed: {type(e).__name__}: {_first_line(e)}"
    # Low-precision tolerances are relative to eager's own error; without eager, only fp32's floor exists.
    eager_err = rows["eager"].rel_err
    for row in rows.values():
        if row.rel_err is not None and (eager_err is not None or dtype == torch.float32):
            row.tolerance = tolerance(dtype, eager_err or 0.0)
            row.correct = row.rel_err <= row.tolerance
    live = {n: f for n, f in methods.items() if rows[n].rel_err is not None and not _stand_in(n, device)}
    inputs = [x.to(dtype) for x in inputs]
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, fn in list(live.items()):
                try:
                    rows[name].round_ms.append(_time_round(fn, inputs, args.iters, device))
                except Exception as e:  # noqa: BLE001 - e.g. out of memory at a large batch
                    rows[name].error = f"failed while timed: {type(e).__name__}: {_first_line(e)}"
                    rows[name].round_ms.clear()
                    del live[name]
                    continue
                if device.type == "cuda":
                    rows[name].peak_mem_mb = max(rows[name].peak_mem_mb or 0.0,
                                                 torch.cuda.max_memory_allocated(device) / 2**20)
            if progress:
                progress()
    for row in rows.values():
        if row.round_ms:
            row.latency_ms = statistics.median(row.round_ms)
            row.images_per_s = batch * 1e3 / row.latency_ms
    eager_ms = rows["eager"].latency_ms
    compiled = [r.latency_ms for n, r in rows.items() if n.startswith("compile") and r.latency_ms]
    for row in rows.values():
        if row.latency_ms:
            row.speedup_vs_eager = eager_ms / row.latency_ms if eager_ms else None
            row.speedup_vs_best_compile = min(compiled) / row.latency_ms if compiled else None
    return list(rows.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=["tiny", "small", "base"],
                        help="tiny small base (PP-HGNet) b0 … b6 (PP-HGNetV2); default: tiny small base")
    parser.add_argument("--batches", nargs="+", type=cli.at_least(1), default=None,
                        help="default: 1 8 64 256 on a GPU, 1 8 on the CPU")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=None,
                        help="default: float32 float16 bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--size", type=cli.image_size, default=(224, 224), help="input size: 224 or HxW, e.g. 640 or 48x320")
    parser.add_argument("--device", type=cli.device, default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=None,
                        help="default: all; a backend that cannot run here is listed under the table saying why "
                             "(and, when named here, fails the run). On the CPU, triton and cuda named here run "
                             "through Triton's interpreter / the CUDA emulator: checked, not timed")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    parser.add_argument("--compile-modes", nargs="+", default=None,
                        choices=["default", "max-autotune", "reduce-overhead", "max-autotune-no-cudagraphs"],
                        help="default: default, max-autotune, reduce-overhead on a GPU (and max-autotune-no-cudagraphs "
                             "at batch >= 64); default on the CPU")
    parser.add_argument("--compile-budget", type=float, default=float("inf"),
                        help="seconds from the start after which no new torch.compile method is added")
    parser.add_argument("--rounds", type=cli.at_least(1), default=7)
    parser.add_argument("--iters", type=cli.at_least(1), default=3, help="calls per method per round")
    parser.add_argument("--out", default=None, help="output folder (default: $OUT or bench/results)")
    parser.add_argument("--tag", default=None, help="file name stem (default: <device>-<date>)")


def _print_table(rows: List[Row], info: Dict[str, str]) -> None:
    """The measured rows as a table; methods that could not run here as one footnote line each."""
    unavailable = {r.method: r.error for r in rows if r.error.startswith("unavailable")}
    rows = [r for r in rows if r.method not in unavailable]
    header = ["model", "batch", "dtype", "method", "ms", "img/s", "vs eager", "vs compile", "rel err", "ok", "note"]
    body = [[r.model, r.batch, r.dtype, r.method,
             f"{r.latency_ms:.2f}" if r.latency_ms else "-", f"{r.images_per_s:.1f}" if r.images_per_s else "-",
             f"{r.speedup_vs_eager:.2f}×" if r.speedup_vs_eager else "-",
             f"{r.speedup_vs_best_compile:.2f}×" if r.speedup_vs_best_compile else "-",
             f"{r.rel_err:.1e}" if r.rel_err is not None else "-",
             "FAILED" if r.error.startswith("failed") else {True: "yes", False: "WRONG", None: "-"}[r.correct],
             "; ".join(filter(None, [f"V100 TRT {r.seed_v100_trt_ms} ms" if r.seed_v100_trt_ms else "",
                                     r.error, r.note]))] for r in rows]
    from .verify import print_table
    print_table(f"PP-HGNet end to end on {info.get('gpu') or info.get('cpu', info['device'])} "
           f"(torch {info['torch']})", header, body)
    for method, reason in unavailable.items():
        print(f"not run here: {method}: {reason[len('unavailable: '):]}")


def run(args: argparse.Namespace) -> int:
    device = args.device or cli.default_device()
    on_gpu = device.type == "cuda"
    batches = args.batches or ([1, 8, 64, 256] if on_gpu else [1, 8])
    dtypes = args.dtypes or (["float32", "float16", "bfloat16"] if on_gpu else ["float32"])
    if device.type == "cpu":
        for backend in args.backends or ():
            if backend in CPU_STAND_INS:
                use_cpu_stand_in(backend)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    info = machine_info(device)
    args.started = time.perf_counter()
    cases = [(m, b, d) for m in args.models for b in batches for d in dtypes]
    rows: List[Row] = []
    try:
        from tqdm import tqdm
        bar = tqdm(total=len(cases) * args.rounds, desc="bench", unit="round", file=sys.stderr)
    except ImportError:
        bar = None
    for model, batch, dtype in cases:
        if bar:
            bar.set_postfix_str(f"{model} b{batch} {dtype}")
        rows += bench_case(model, batch, dtype, device, args, progress=(lambda: bar.update(1)) if bar else None)
    if bar:
        bar.close()
    out_dir = args.out or os.environ.get("OUT") or os.path.join("bench", "results")
    os.makedirs(out_dir, exist_ok=True)
    stem = args.tag or f"{'gpu' if on_gpu else 'cpu'}-{info['date'][:10]}"
    with open(os.path.join(out_dir, stem + ".json"), "w") as f:
        json.dump({"machine": info, "args": {k: v for k, v in vars(args).items() if k != "started"},
                   "rows": [asdict(r) for r in rows]}, f, indent=1)
    with open(os.path.join(out_dir, stem + ".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in asdict(rows[0]) if k != "round_ms"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: v for k, v in asdict(r).items() if k != "round_ms"})
    try:
        from .plot import plot_rows
        plot_rows(rows, info, os.path.join(out_dir, stem + ".png"))
    except ImportError:
        print("matplotlib not installed: no plot written", file=sys.stderr)
    _print_table(rows, info)
    print(f"wrote {os.path.join(out_dir, stem)}.{{json,csv,png}}")
    wrong = [r for r in rows if r.correct is False]
    for r in wrong:
        print(f"WRONG: {r.model} b{r.batch} {r.dtype} {r.method}: rel err {r.rel_err:.2e} > {r.tolerance:.2e}",
              file=sys.stderr)
    # Failures fail the run; so does a backend named in --backends that cannot run here.
    failed = [r for r in rows if r.error.startswith("failed") or (r.error and args.backends)]
    for r in failed:
        print(f"FAILED: {r.model} b{r.batch} {r.dtype} {r.method}: {r.error}", file=sys.stderr)
    return 1 if wrong or failed else 0
