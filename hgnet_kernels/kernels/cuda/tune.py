"""Tune the sm_80+ CUDA conv kernel's tiles for every distinct conv of the PP-HGNet plans on this GPU.

    python -m hgnet_kernels.kernels.cuda.tune --models tiny small base --dtypes float16 --batches 1 8 64
    python -m hgnet_kernels.kernels.cuda.tune ... --compare   # also time Triton and cuDNN (notes)
    python -m hgnet_kernels.kernels.cuda.tune ... --commit    # merge into configs/cuda_<arch>.json
    python -m hgnet_kernels.kernels.cuda.tune --dry-run       # CPU: the emulator, a tiny search

For each model, batch (one per bucket of ``configs.BATCH_BUCKETS``), dtype and distinct conv or
aggregation shape, every instantiated tile (``configs.cuda_conv_tiles``) × SPLIT_K in 1, 2, 4, 8,
16 is timed with CUDA events (the space is small: no search heuristics needed); a candidate whose
output differs from the heuristic's beyond the dtype's tolerance is discarded, and the winner is
kept only if it beats the heuristic by ``--min-gain``. ``--compare`` records, as ``_`` notes, the
Triton family's time for the same layer and cuDNN's (channels_last ``F.conv2d`` + bias, no
epilogue): the measured data an ``auto`` choice between the families per arch and dtype needs.

Output: ``{"_meta": {...}, "conv_bn_act": {conv_key + "_" + bucket: {"BM": …, …, "_us": …,
"_heuristic_us": …}}}``, the format ``configs.cuda_conv_config`` reads, to ``--out`` (default
``$OUT/cuda_<arch>.json``, else ``bench/results/``), merged with that file; the committed
``hgnet_kernels/configs/cuda_<arch>.json`` only with ``--commit``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

import torch

from ... import configs

SPLITS = (1, 2, 4, 8, 16)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None, help="default: tiny small base (dry run: tiny)")
    parser.add_argument("--dtypes", nargs="+", default=None, help="default: float16 bfloat16 float32 (dry run: float16)")
    parser.add_argument("--batches", nargs="+", type=int, default=None, help="default: 1 8 64 (dry run: 1)")
    parser.add_argument("--size", type=int, default=None, help="input height and width (default 224; dry run 32)")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds; stop after this")
    parser.add_argument("--min-gain", type=float, default=0.03, help="keep a tile only if this much faster")
    parser.add_argument("--limit", type=int, default=None, help="at most this many shapes (dry run: 2)")
    parser.add_argument("--compare", action="store_true", help="also time Triton and cuDNN per layer")
    parser.add_argument("--out", default=None)
    parser.add_argument("--commit", action="store_true", help="write the committed configs/cuda_<arch>.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, through the emulator, a tiny search")
    args = parser.parse_args(argv)
    args.models = args.models or (["tiny"] if args.dry_run else ["tiny", "small", "base"])
    args.dtypes = args.dtypes or (["float16"] if args.dry_run else ["float16", "bfloat16", "float32"])
    args.batches = args.batches or ([1] if args.dry_run else [b for _, _, b in configs.BATCH_BUCKETS.values()])
    args.size = args.size or (32 if args.dry_run else 224)
    args.limit = args.limit if args.limit is not None else (2 if args.dry_run else None)
    return args


def output_path(args, arch: str) -> str:
    committed = os.path.abspath(os.path.join(configs.CONFIG_DIR, f"cuda_{arch}.json"))
    if args.commit:
        return committed
    if args.dry_run and not args.out:
        return os.path.join(tempfile.mkdtemp(prefix="tune-cuda-dry-"), f"cuda_{arch}.json")
    path = args.out or os.path.join(os.environ.get("OUT") or os.path.join("bench", "results"), f"cuda_{arch}.json")
    if os.path.abspath(path) == committed:
        raise SystemExit(f"{path} is the committed config file: pass --commit to overwrite it")
    return path


def timer(device: torch.device, reps: int):
    """``timed(fn) -> (ms, result)``: the median of ``reps`` CUDA-event timings after a first call;
    on the CPU (dry run) one call's wall time."""
    def timed(fn):
        result = fn()
        if device.type != "cuda":
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1e3, result
        times = []
        for _ in range(reps):
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            fn()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        return statistics.median(times), result
    return timed


def plan_convs(model: str, batch: int, size: int):
    """(op, n, c_in, c_out, h, w, hw_out) of every conv and aggregation of ``model``'s plan."""
    from ...folding import fold_model
    from ...models import PPHGNet
    from ...plan import build_plan
    plan = build_plan(fold_model(PPHGNet(model).eval()))
    spatial = plan.spatial(size, size)
    for op in plan.ops:
        if op.kind in ("conv", "aggregation"):
            h, w = spatial[op.reads[0].buffer]
            h_out, w_out = spatial[op.writes[0].buffer]
            yield op, batch, op.reads[0].channels, op.writes[0].channels, h, w, h_out * w_out


def main(argv=None) -> int:
    args = parse_args(argv)
    from ...kernels import spec
    from ...numerics import relative_error
    from ...verify import DTYPES
    from . import ops
    if args.dry_run:
        os.environ.setdefault("HGNET_KERNELS_CUDA_EMULATE", "1")
        device, arch, sms, gpu = torch.device("cpu"), "emulator", configs.DEFAULT_SMS, "cpu (emulator)"
        cc = ops._arch(device, None)
    else:
        if not torch.cuda.is_available():
            print("tune needs a CUDA GPU: tiles are per GPU architecture (or use --dry-run)", file=sys.stderr)
            return 2
        device = torch.device("cuda")
        arch, gpu = configs.arch_name(device), torch.cuda.get_device_name(device)
        sms, cc = ops._sms(device), ops._arch(device, None)
        if cc < 80:
            print(f"{gpu} is sm_{cc}: the tiled kernel needs sm_80", file=sys.stderr)
            return 2
    out_path = output_path(args, arch)
    table = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            table = json.load(f)
    timed = timer(device, reps=3 if args.dry_run else 20)
    start, deadline = time.time(), time.time() + args.budget
    entries = table.setdefault("conv_bn_act", {})
    seen, tuned = set(), 0
    g = torch.Generator().manual_seed(0)
    for model in args.models:
        for batch in args.batches:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                shapes = 0
                for op, n, c_in, c_out, h, w, hw in plan_convs(model, batch, args.size):
                    key = configs.conv_key(hw, c_in, c_out, op.kernel, op.stride_arg, dtype, op.padding, batch)
                    if key in seen or (args.limit is not None and shapes >= args.limit):
                        continue
                    if time.time() > deadline:
                        print(f"budget of {args.budget:.0f}s spent; stopping", flush=True)
                        break
                    seen.add(key)
                    shapes += 1
                    x = torch.randn(n, c_in, h, w, generator=g).to(device, dtype).contiguous(
                        memory_format=torch.channels_last)
                    weight = (torch.randn(c_out, c_in, op.kernel, op.kernel, generator=g) /
                              (c_in * op.kernel ** 2) ** 0.5).to(device, dtype)
                    packed, bias = spec.pack_conv_weight(weight), torch.randn(c_out, generator=g).to(device, dtype)
                    padding = None if op.padding == spec.symmetric(op.kernel) else op.padding
                    aggregation = op.kind == "aggregation"

                    tf32x3 = dtype == torch.float32  # the sm_80+ kernel runs fp32 only as the opt-in 3×TF32

                    def run(cfg):
                        if aggregation:
                            return ops.aggregation_ese(x, packed, bias, config=cfg, tf32x3=tf32x3)[0]
                        return ops.conv_bn_act(x, packed, bias, op.stride_arg, op.relu, padding=padding, config=cfg,
                                               tf32x3=tf32x3)
                    heuristic = ops.conv_config(x, packed, run(None), op.stride_arg, padding, cc)
                    base_ms, reference = timed(lambda: run(heuristic))
                    allowed = 1e-5 if dtype == torch.float32 else 2e-2
                    best_ms, best = base_ms, heuristic
                    candidates = [dict(zip(ops.TILE_FIELDS, t + (s,))) for t in configs.cuda_conv_tiles(dtype)
                                  for s in ((1, 2) if args.dry_run else SPLITS)]
                    for cfg in candidates[:2] if args.dry_run else candidates:
                        if cfg == heuristic:
                            continue
                        ms, got = timed(lambda cfg=cfg: run(cfg))
                        if relative_error(got, reference) > allowed:
                            print(f"    {cfg}: wrong result, discarded", flush=True)
                            continue
                        if ms < best_ms:
                            best_ms, best = ms, cfg
                    notes = {}
                    if args.compare and not args.dry_run:
                        notes = compare(x, weight, packed, bias, op, padding, aggregation, timed)
                    keep = best_ms < base_ms * (1 - args.min_gain)
                    if keep or notes:
                        entry = dict(best if keep else heuristic)
                        entry.update(_us=round(best_ms * 1e3, 2), _heuristic_us=round(base_ms * 1e3, 2), **notes)
                        entries[key] = entry
                        tuned += keep
                    print(f"{key:60s} heuristic {base_ms * 1e3:9.1f} us -> best {best_ms * 1e3:9.1f} us "
                          f"{best if keep else '(heuristic kept)'} {notes}", flush=True)
    table["_meta"] = dict(arch=arch, gpu=gpu, sms=sms, torch=torch.__version__, models=args.models,
                          dtypes=args.dtypes, batches=args.batches, size=args.size, dry_run=args.dry_run,
                          date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                          seconds=round(time.time() - start, 1))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {tuned} tuned entries to {out_path}", flush=True)
    return 0


def compare(x, weight, packed, bias, op, padding, aggregation, timed) -> dict:
    """Triton's time for the same layer (its own heuristic / tuned config) and cuDNN's, in µs."""
    import torch.nn.functional as F
    notes = {}
    try:
        from .. import triton as triton_family
        if aggregation:
            ms, _ = timed(lambda: triton_family.aggregation_ese(x, packed, bias))
        else:
            ms, _ = timed(lambda: triton_family.conv_bn_act(x, packed, bias, op.stride_arg, op.relu, padding=padding))
        notes["_triton_us"] = round(ms * 1e3, 2)
    except Exception as e:  # noqa: BLE001 - a note, not a failure
        notes["_triton_error"] = f"{type(e).__name__}: {str(e)[:80]}"
    top, bottom, left, right = op.padding
    xp = F.pad(x, (left, right, top, bottom)) if (top, left) != (bottom, right) else x
    pad = 0 if xp is not x else top
    ms, _ = timed(lambda: F.conv2d(xp, weight, bias, op.stride_arg, pad))
    notes["_cudnn_us"] = round(ms * 1e3, 2)
    return notes


if __name__ == "__main__":
    sys.exit(main())
