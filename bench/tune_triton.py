"""Tune the Triton launch configs of every distinct PP-HGNet op shape on this GPU, per batch bucket.

    PYTHONPATH=. python bench/tune_triton.py --models tiny small base --dtypes float16 float32 --batches 1 8 64
    PYTHONPATH=. python bench/tune_triton.py ... --commit      # merge into the committed triton_<arch>.json
    python bench/tune_triton.py --dry-run                      # CPU: interpreter, tiny search, temp file

For each model, batch (one per bucket of ``configs.BATCH_BUCKETS``: 1, 8, 64 by default, the
batches the buckets are timed at), dtype and distinct op shape of the plan — convs and
aggregations (``conv_bn_act``), depthwise convs, max pools, scale + residual, ESE gates — it times
the built-in heuristic, then walks a coordinate descent from it: one axis at a time (rows,
channels, K step, split-K, warps, stages, …), keeping a value when it is faster. A candidate
whose output differs from the heuristic's beyond the dtype's tolerance is discarded. The winner is
kept only if it beats the heuristic by ``--min-gain``, so an entry never makes a layer slower than
having none. Shapes are tuned in order of their heuristic time, longest first, until ``--budget``
seconds are spent; what was tuned is still written.

Output: ``{"_meta": {...}, op: {shape key + "_" + bucket: {param: value, "_us": ..,
"_heuristic_us": ..}}}``, the format ``hgnet_kernels/configs.py`` reads (``_`` fields are notes).
It goes to ``--out`` (default ``$OUT/triton_<arch>.json``, else ``bench/results/``), merged with
what that file holds; the committed ``hgnet_kernels/configs/triton_<arch>.json`` is written only
with ``--commit``. ``--dry-run`` runs the same code on the CPU through Triton's interpreter at a
small size, with a tiny search space and time.perf_counter timing, into a temporary file: it
checks the script, not the GPU.
"""
import argparse
import datetime
import functools
import json
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Coordinate-descent axes, in the order they are walked (rows and channels first: they move the
# grid the most), and the tiny space of the dry run.
CONV_AXES = [("BLOCK_M", [16, 32, 64, 128]), ("BLOCK_N", [32, 64, 128]), ("SPLIT_K", [1, 2, 4, 8, 16]),
             ("BLOCK_K", [16, 32, 64]), ("FLAT_K", [False, True]), ("num_warps", [2, 4, 8]),
             ("num_stages", [2, 3, 4]), ("GROUP_M", [1, 8]), ("SWAP_AB", [False, True])]
TILE_AXES = [("BLOCK_P", [8, 16, 32, 64, 128]), ("BLOCK_C", [32, 64, 128]), ("num_warps", [2, 4, 8])]
GATE_AXES = [("BLOCK_CO", [8, 16, 32, 64]), ("BLOCK_CI", [32, 64, 128]), ("BLOCK_T", [8, 16, 32])]
DRY_AXES = {"conv_bn_act": [("SPLIT_K", [1, 2])], "tile": [("BLOCK_P", [64, 128])],
            "ese_gate": [("BLOCK_CO", [64, 128])]}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=None,
                        help="tiny small base b0 … b6; default: tiny small base (dry run: tiny)")
    parser.add_argument("--dtypes", nargs="+", default=None, help="default: float16 float32 (dry run: float32)")
    parser.add_argument("--batches", nargs="+", type=int, default=None,
                        help="default: each bucket's batch, 1 8 64 (dry run: 1 2)")
    parser.add_argument("--size", type=int, default=None, help="input height and width (default 224; dry run 32)")
    parser.add_argument("--ops", nargs="+", default=None,
                        choices=["conv_bn_act", "depthwise_conv", "max_pool", "scale_residual", "ese_gate"],
                        help="default: all")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds; stop early after this")
    parser.add_argument("--min-gain", type=float, default=0.03, help="keep a config only if this much faster")
    parser.add_argument("--limit", type=int, default=None, help="at most this many shapes per op (dry run: 1)")
    parser.add_argument("--out", default=None, help="default: $OUT/triton_<arch>.json, else bench/results/")
    parser.add_argument("--commit", action="store_true",
                        help="merge into the committed hgnet_kernels/configs/triton_<arch>.json")
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU through Triton's interpreter, small sizes, tiny search, a temporary output")
    args = parser.parse_args(argv)
    dry = args.dry_run
    args.models = args.models or (["tiny"] if dry else ["tiny", "small", "base"])
    args.dtypes = args.dtypes or (["float32"] if dry else ["float16", "float32"])
    args.size = args.size or (32 if dry else 224)
    args.limit = args.limit if args.limit is not None else (1 if dry else None)
    args.ops = args.ops or ["conv_bn_act", "depthwise_conv", "max_pool", "scale_residual", "ese_gate"]
    if dry and args.commit:
        parser.error("--dry-run never writes the committed configs")
    return args


def default_batches(dry: bool):
    from hgnet_kernels import configs
    return [1, 2] if dry else [timed_at for _, _, timed_at in configs.BATCH_BUCKETS.values()]


def output_path(args, arch: str) -> str:
    """Where the table goes; refuses the committed file unless --commit."""
    from hgnet_kernels import configs
    committed = os.path.abspath(os.path.join(configs.CONFIG_DIR, f"triton_{arch}.json"))
    if args.commit:
        if args.out and os.path.abspath(args.out) != committed:
            raise SystemExit("--commit writes the committed file; drop --out")
        return committed
    if args.dry_run and not args.out:
        return os.path.join(tempfile.mkdtemp(prefix="tune-triton-dry-"), f"triton_{arch}.json")
    path = args.out or os.path.join(os.environ.get("OUT") or os.path.join("bench", "results"), f"triton_{arch}.json")
    if os.path.abspath(path) == committed:
        raise SystemExit(f"{path} is the committed config file: pass --commit to overwrite it")
    return path


# ---- the cases: one per (op, shape key, bucket) ------------------------------------------------

class Case:
    """One op shape at one batch: how to build its inputs, run it with a config, and its key."""

    def __init__(self, op, key, label, axes, heuristic, make, run):
        self.op, self.key, self.label, self.axes = op, key, label, axes
        self.heuristic, self.make, self.run = heuristic, make, run


def plan_cases(args, model: str, batch: int, dtype, device, sms):
    """Every distinct op of ``model``'s plan at ``batch`` as a Case (first occurrence of each key)."""
    import torch

    from hgnet_kernels import configs
    from hgnet_kernels.folding import fold_model
    from hgnet_kernels.kernels import triton as fam
    from hgnet_kernels.kernels.spec import pack_conv_weight, pack_depthwise_weight, symmetric
    from hgnet_kernels.models import build_model
    from hgnet_kernels.plan import build_plan, stride_label

    net = fold_model(build_model(model))
    plan = build_plan(net)
    params = {name: tuple(t.shape) for name, t in net.named_buffers()}
    spatial = plan.spatial(args.size, args.size)
    g = torch.Generator().manual_seed(0)

    def randn(*shape, channels_last=False):
        t = torch.randn(*shape, generator=g).to(device, dtype)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    cases = {}
    partial_sums = functools.partial(fam.partial_sums_shape, dtype=dtype, device=device)
    for cost in plan.costs(batch, args.size, args.size, 2, params, partial_sums):
        op = cost.op
        n, c_in, c_out = cost.input_shape[0], cost.input_shape[1], cost.output_shape[1]
        h, w = spatial[op.reads[0].buffer]
        hw = cost.output_shape[2] * cost.output_shape[3] if len(cost.output_shape) == 4 else h * w
        bucket = configs.batch_bucket(batch)
        if op.kind in ("conv", "aggregation") and "conv_bn_act" in args.ops:
            key = configs.conv_key(hw, c_in, c_out, op.kernel, op.stride_arg, dtype, op.padding)
            heuristic = configs.conv_config(hw, c_in, c_out, op.kernel, op.stride_arg, dtype, None, args.dry_run,
                                            batch=n, padding=op.padding, sms=sms)
            padding = None if op.padding == symmetric(op.kernel) else op.padding

            def make(c_in=c_in, c_out=c_out, h=h, w=w, k=op.kernel, n=n):
                return (randn(n, c_in, h, w, channels_last=True),
                        pack_conv_weight(randn(c_out, c_in, k, k) / (c_in * k * k) ** 0.5), randn(c_out))

            def run(t, cfg, op=op, padding=padding):
                if op.kind == "aggregation":
                    return fam.aggregation_ese(t[0], t[1], t[2], config=cfg)
                return fam.conv_bn_act(t[0], t[1], t[2], op.stride_arg, op.relu, padding=padding,
                                       affine=(1.5, 0.25) if op.affine else None, config=cfg)
            case = Case("conv_bn_act", key, f"{op.describe()} {c_in}->{c_out} @{h}x{w}", CONV_AXES, heuristic,
                        make, run)
        elif op.kind in ("depthwise", "max_pool") and {"depthwise": "depthwise_conv"}.get(op.kind, op.kind) in args.ops:
            name = {"depthwise": "depthwise_conv"}.get(op.kind, op.kind)
            geometry = f"k{op.kernel}s{stride_label(op.stride)}"
            key = configs.tile_key(c_out, dtype, hw, geometry)
            heuristic = configs.tile_config(name, c_out, dtype, None, args.dry_run, hw=hw, batch=n, geometry=geometry,
                                            sms=sms)
            padding = None if op.padding == symmetric(op.kernel) else op.padding

            def make(c=c_in, h=h, w=w, k=op.kernel, n=n, kind=op.kind):
                x = randn(n, c, h, w, channels_last=True)
                return (x,) if kind == "max_pool" else (x, pack_depthwise_weight(randn(c, 1, k, k) / k), randn(c))

            def run(t, cfg, op=op, padding=padding):
                if op.kind == "max_pool":
                    return fam.max_pool(t[0], kernel=op.kernel, stride=op.stride_arg, padding=padding,
                                        zero_pad=op.zero_pad, config=cfg)
                return fam.depthwise_conv(t[0], t[1], t[2], op.stride, relu=op.relu, padding=padding,
                                          affine=(1.5, 0.25) if op.affine else None, config=cfg)
            case = Case(name, key, f"{op.describe()} {c_in} @{h}x{w}", TILE_AXES, heuristic, make, run)
        elif op.kind == "scale_residual" and "scale_residual" in args.ops:
            key = configs.tile_key(c_out, dtype, hw)
            heuristic = configs.tile_config("scale_residual", c_out, dtype, None, args.dry_run, hw=hw, batch=n,
                                            sms=sms)

            def make(c=c_out, h=h, w=w, n=n):
                return (randn(n, c, h, w, channels_last=True), torch.rand(n, c, generator=g).to(device),
                        randn(n, c, h, w, channels_last=True))

            def run(t, cfg, residual=op.residual):
                return fam.scale_residual(t[0], t[1], t[2] if residual else None, config=cfg)
            case = Case("scale_residual", key, f"{op.describe()} {c_out} @{h}x{w}", TILE_AXES, heuristic, make, run)
        elif op.kind == "ese_gate" and "ese_gate" in args.ops:
            key = f"c{c_out}_{configs._dtype_name(dtype)}"
            heuristic = configs.gate_config(c_out, dtype, None, args.dry_run, batch=n, sms=sms)
            summed = spatial[op.reads[0].buffer]

            def make(c=c_out, n=n, rows=cost.input_shape[1], hw_sum=summed[0] * summed[1]):  # psum (N, T, C)
                return (torch.rand(n, rows, c, generator=g).to(device), randn(c, c) / c ** 0.5, randn(c), hw_sum)

            def run(t, cfg):
                return fam.ese_gate(t[0], t[1], t[2], t[3], config=cfg)
            case = Case("ese_gate", key, f"ese_gate {c_out}", GATE_AXES, heuristic, make, run)
        else:
            continue
        case.key = f"{case.key}_{bucket}"
        cases.setdefault((case.op, case.key), case)
    return list(cases.values())


# ---- timing and the search ----------------------------------------------------------------------

def make_timer(dry: bool):
    """``timer(fn) -> (ms, fn's result)``: CUDA-event timing on the GPU (after a first call that
    compiles), one call's wall time under the interpreter (where nothing compiles)."""
    if dry:
        def timed(fn):
            start = time.perf_counter()
            result = fn()
            return (time.perf_counter() - start) * 1e3, result
        return timed
    import triton.testing

    def timed(fn):
        result = fn()
        return triton.testing.do_bench(fn, warmup=5, rep=20), result
    return timed


def _first(result):
    return result[0] if isinstance(result, tuple) else result


def _close(got, want, dtype) -> bool:
    import torch

    from hgnet_kernels.numerics import relative_error
    allowed = 1e-5 if dtype == torch.float32 else 2e-2
    return relative_error(_first(got), _first(want)) <= allowed


def search(case, inputs, timer, dtype, axes, baseline, reference, log, deadline=float("inf")):
    """Coordinate descent from the heuristic (which took ``baseline`` ms and gave ``reference``),
    until ``deadline`` (time.time()); returns (best ms, best config)."""
    results = {tuple(sorted(case.heuristic.items())): baseline}

    def measure(cfg):
        key = tuple(sorted(cfg.items()))
        if key not in results:
            try:
                ms, result = timer(lambda: case.run(inputs, cfg))
                if not _close(result, reference, dtype):
                    log(f"    {cfg}: wrong result, discarded")
                    ms = float("inf")
            except Exception as e:  # noqa: BLE001 - e.g. out of shared memory or registers for this tile
                log(f"    {cfg}: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}")
                ms = float("inf")
            results[key] = ms
        return results[key]

    best_cfg, best = dict(case.heuristic), baseline
    for name, values in axes:
        for value in values:
            if best_cfg.get(name) == value or time.time() > deadline:
                continue
            cfg = {**best_cfg, name: value}
            ms = measure(cfg)
            if ms < best:
                best, best_cfg = ms, cfg
    return best, best_cfg


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before Triton is imported
    import torch

    from hgnet_kernels import configs
    from hgnet_kernels.kernels.triton._common import launch_target
    from hgnet_kernels.verify import DTYPES
    if args.dry_run:
        device, arch, sms, gpu = torch.device("cpu"), "interpreter", configs.DEFAULT_SMS, "cpu (interpreter)"
    else:
        if not torch.cuda.is_available():
            print("tune_triton.py needs a CUDA GPU: configs are per GPU architecture (or use --dry-run)",
                  file=sys.stderr)
            return 2
        device = torch.device("cuda")
        (arch, sms, _), gpu = launch_target(device), torch.cuda.get_device_name(device)
    batches = args.batches or default_batches(args.dry_run)
    buckets = [configs.batch_bucket(b) for b in batches]
    if len(set(buckets)) < len(buckets):
        print(f"warning: batches {batches} share buckets {buckets}; the last one tuned wins", file=sys.stderr)
    out_path = output_path(args, arch)
    table = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            table = json.load(f)
    timer = make_timer(args.dry_run)
    start = time.time()

    def log(text):
        print(text, flush=True)

    cases = []
    for model in args.models:
        for batch in batches:
            for dtype_name in args.dtypes:
                dtype = DTYPES[dtype_name]
                counts = {}
                for case in plan_cases(args, model, batch, dtype, device, sms):
                    counts[case.op] = counts.get(case.op, 0) + 1
                    if args.limit is None or counts[case.op] <= args.limit:
                        cases.append((case, dtype))
    seen, unique = set(), []
    for case, dtype in cases:  # the same shape in two models is tuned once
        if (case.op, case.key) not in seen:
            seen.add((case.op, case.key))
            unique.append((case, dtype))
    log(f"{len(unique)} op shapes on {gpu} ({arch}, {sms} SMs), budget {args.budget:.0f}s -> {out_path}")
    # Longest first: the budget goes where the time is.
    deadline = start + args.budget
    timed = []
    for case, dtype in unique:  # every first call compiles: the budget covers this pass too
        if time.time() > deadline:
            log(f"budget of {args.budget:.0f}s spent measuring the heuristics ({len(timed)} of {len(unique)})")
            break
        inputs = case.make()
        ms, reference = timer(lambda c=case, t=inputs: c.run(t, c.heuristic))
        timed.append((ms, reference, case, dtype, inputs))
    timed.sort(key=lambda entry: -entry[0])
    tuned = 0
    for baseline, reference, case, dtype, inputs in timed:
        if time.time() > deadline:
            log(f"budget of {args.budget:.0f}s spent; stopping")
            break
        axes = (DRY_AXES["conv_bn_act" if case.op == "conv_bn_act" else
                          "ese_gate" if case.op == "ese_gate" else "tile"] if args.dry_run else case.axes)
        best, cfg = search(case, inputs, timer, dtype, axes, baseline, reference, log, deadline)
        keep = best < baseline * (1 - args.min_gain)
        entries = table.setdefault(case.op, {})
        if keep:
            entries[case.key] = {**cfg, "_us": round(best * 1e3, 2), "_heuristic_us": round(baseline * 1e3, 2)}
            tuned += 1
        log(f"{case.op:15s} {case.key:55s} heuristic {baseline * 1e3:9.1f} us -> best {best * 1e3:9.1f} us "
            f"{cfg if keep else '(heuristic kept)'}")
    table["_meta"] = dict(arch=arch, gpu=gpu, sms=sms, torch=torch.__version__, triton=_triton_version(),
                          python=platform.python_version(), date=datetime.datetime.now(datetime.timezone.utc)
                          .strftime("%Y-%m-%d %H:%M UTC"), models=args.models, dtypes=args.dtypes,
                          batches=batches, buckets={b: list(v) for b, v in configs.BATCH_BUCKETS.items()},
                          size=args.size, dry_run=args.dry_run, seconds=round(time.time() - start, 1))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    log(f"wrote {tuned} new entries ({sum(len(v) for k, v in table.items() if not k.startswith('_'))} in all) "
        f"to {out_path}")
    return 0


def _triton_version() -> str:
    import triton
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())
