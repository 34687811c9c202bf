"""``python -m hgnet_kernels tune --family triton|cuda``: time one kernel family's launch configs for
every distinct layer of every model on this GPU, and write them where ``configs.py`` reads them.

    python -m hgnet_kernels tune --family triton                       # every model, dtype, batch bucket
    python -m hgnet_kernels tune --family cuda --models b4 --dtypes float16 --batches 1
    python -m hgnet_kernels tune --family triton --commit               # into hgnet_kernels/configs/
    python -m hgnet_kernels tune --family cuda --dry-run                # no GPU: what it would time

The layers are ``shapes.conv_shapes`` of each model's plan (v1 and v2): for Triton every op it has
configs for (convs and aggregations as ``conv_bn_act``, depthwise convs, max pools, scale + residual,
ESE gates), for CUDA the convs and aggregations of its sm_80+ tiled kernel. Each layer is timed at
each ``--batches`` (default: the batch each bucket of ``configs.BATCH_BUCKETS`` is timed at), in
each dtype, keyed as the library looks it up (``conv_key`` / ``tile_key`` + the batch bucket); a
layer shared by several models is timed once. The baseline is the config the library resolves on
this GPU today (the heuristic, or an entry already in the committed file); the search then walks
the family's axes one at a time from it, keeping a value when it is faster: Triton's tile, K step,
split-K, warps and stages axes, or every instantiated CUDA tile × split-K as one axis (the space
is small). A candidate whose output differs from the baseline's beyond the dtype's tolerance is
discarded, and a winner is written only if it beats the baseline by ``--min-gain``, so an entry
never makes a layer slower. Layers go longest first until ``--budget`` seconds are spent; what was
tuned is still written. The epilogue is not part of a key (one entry serves every epilogue of its
shape), so convs are timed with bias + ReLU. ``--compare`` adds, to each conv entry, the other
family's and cuDNN's time (``_`` notes: the data a choice between families needs).

Output: ``<family>_<arch>.json`` in ``--out`` (default ``$OUT``, else ``bench/results/``), merged
with what that file holds, in the format ``configs.py`` reads: ``{"_meta": {...}, op: {key: {param:
value, "_us": .., "_heuristic_us": ..}}}`` (``_`` fields are notes). The committed
``hgnet_kernels/configs/`` is written only with ``--commit``.

Without a GPU only ``--dry-run`` runs: it lists, per family, the layers and the candidate configs
the real run would time (the baseline at ``--dry-run-arch``'s SM count), and times nothing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import cli, configs
from .models import MODEL_NAMES
from .plan import stride_label
from .shapes import ConvShape, conv_shapes


def _cuda_kernel_shape(dtype: torch.dtype) -> dict:
    """The CUDA sm_80+ kernel's instantiated tiles at ``dtype`` and its K step, read from the compiled
    code (the extension on a GPU, else the emulator, which compiles the same header)."""
    from .kernels.cuda.ops import mma_k_step, mma_tiles
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return dict(tiles=mma_tiles(dtype, device_type), k_step=mma_k_step(device_type))


FAMILIES = ("triton", "cuda")
DTYPE_NAMES = ("float16", "bfloat16", "float32")
# The layer kinds each family has tuned configs for, and the op name their entries are filed under.
TUNED_KINDS = {"triton": ("conv", "aggregation", "depthwise", "max_pool", "scale_residual", "ese_gate"),
               "cuda": ("conv", "aggregation")}
OP_OF_KIND = {"conv": "conv_bn_act", "aggregation": "conv_bn_act", "depthwise": "depthwise_conv",
              "max_pool": "max_pool", "scale_residual": "scale_residual", "ese_gate": "ese_gate"}

# Triton's coordinate-descent axes, in the order they are walked (rows and channels first: they
# move the grid the most).
_CONV_AXES = (("BLOCK_M", (16, 32, 64, 128)), ("BLOCK_N", (32, 64, 128)), ("SPLIT_K", (1, 2, 4, 8, 16)),
              ("BLOCK_K", (16, 32, 64)), ("FLAT_K", (False, True)), ("num_warps", (2, 4, 8)),
              ("num_stages", (2, 3, 4)), ("GROUP_M", (1, 8)), ("SWAP_AB", (False, True)))
_TILE_AXES = (("BLOCK_P", (8, 16, 32, 64, 128)), ("BLOCK_C", (32, 64, 128)), ("num_warps", (2, 4, 8)))
TRITON_AXES = {"conv_bn_act": _CONV_AXES, "depthwise_conv": _TILE_AXES, "max_pool": _TILE_AXES,
               "scale_residual": _TILE_AXES,
               "ese_gate": (("BLOCK_CO", (8, 16, 32, 64)), ("BLOCK_CI", (32, 64, 128)), ("BLOCK_T", (8, 16, 32)))}
CUDA_SPLITS = (1, 2, 4, 8, 16)

# An axis: a name and the partial configs it tries, each merged into the best config so far.
Axis = Tuple[str, Tuple[Dict[str, object], ...]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", choices=FAMILIES, required=True, help="the kernel family whose configs to tune")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(MODEL_NAMES),
                        help="default: every model, tiny … base and b0 … b6")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPE_NAMES, default=list(DTYPE_NAMES))
    parser.add_argument("--batches", nargs="+", type=cli.at_least(1), default=None,
                        help="default: the batch each bucket is timed at, "
                             + " ".join(str(b) for _, _, b in configs.BATCH_BUCKETS.values()))
    parser.add_argument("--size", type=cli.at_least(32), default=224, help="input height and width (default 224)")
    parser.add_argument("--ops", nargs="+", choices=sorted(set(OP_OF_KIND.values())), default=None,
                        help="only these ops (default: every op the family has configs for)")
    parser.add_argument("--budget", type=float, default=900.0, help="seconds; stop after this (default 900)")
    parser.add_argument("--min-gain", type=float, default=0.03,
                        help="write a config only if this much faster than the baseline (default 0.03)")
    parser.add_argument("--compare", action="store_true", help="also time the other family and cuDNN per conv")
    parser.add_argument("--out", default=None, help="the directory of <family>_<arch>.json (default: $OUT, "
                                                    "else bench/results/)")
    parser.add_argument("--commit", action="store_true", help="merge into the committed hgnet_kernels/configs/")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU needed: list the layers and candidate configs the run would time")
    parser.add_argument("--dry-run-arch", default="sm90",
                        help="the arch whose baseline configs a dry run lists (default sm90)")


# ---- what is tuned: one case per (op, key) ----------------------------------------------------------

@dataclass
class Case:
    """One layer at one batch and dtype: its entry's op and key, and the baseline config."""
    op: str
    key: str
    shape: ConvShape
    batch: int
    dtype: torch.dtype
    baseline: Dict[str, object]

    def label(self) -> str:
        return f"{self.shape.label()} batch {self.batch}"


def _padding(shape: ConvShape) -> Optional[Tuple[int, int, int, int]]:
    """The layer's padding as the launchers take it: None for k // 2 all round."""
    return None if shape.padding == (shape.kernel // 2,) * 4 else shape.padding


def _key(op: str, shape: ConvShape, dtype: torch.dtype, batch: int) -> str:
    """The key the library looks the layer up by (``configs``), with the batch's bucket."""
    hw = shape.h_out * shape.w_out
    if op == "conv_bn_act":
        return configs.conv_key(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, shape.padding, batch)
    geometry = f"k{shape.kernel}s{stride_label(shape.stride)}" if op in ("depthwise_conv", "max_pool") else ""
    hw = None if op == "ese_gate" else hw  # a gate's entry serves every map size of its channel count
    return f"{configs.tile_key(shape.c_out, dtype, hw, geometry)}_{configs.batch_bucket(batch)}"


def _baseline(family: str, op: str, shape: ConvShape, dtype: torch.dtype, batch: int, arch: str,
              sms: int) -> Dict[str, object]:
    """The config the library resolves for this layer on ``arch`` with ``sms`` SMs."""
    hw = shape.h_out * shape.w_out
    if family == "cuda":
        return configs.cuda_conv_config(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, arch,
                                        batch=batch, padding=shape.padding, sms=sms, **_cuda_kernel_shape(dtype))
    if op == "conv_bn_act":
        return configs.conv_config(hw, shape.c_in, shape.c_out, shape.kernel, shape.stride, dtype, arch,
                                   batch=batch, padding=shape.padding, sms=sms)
    if op == "ese_gate":
        return configs.gate_config(shape.c_out, dtype, arch, batch=batch, sms=sms)
    geometry = f"k{shape.kernel}s{stride_label(shape.stride)}" if op in ("depthwise_conv", "max_pool") else ""
    return configs.tile_config(op, shape.c_out, dtype, arch, hw=hw, batch=batch, geometry=geometry, sms=sms)


def axes(family: str, op: str, dtype: torch.dtype) -> Tuple[Axis, ...]:
    """The axes the search walks: Triton's one parameter at a time, CUDA's every instantiated tile
    × split-K (fp32 runs the 3×TF32 tiles) as one axis."""
    if family == "cuda":
        tiles = _cuda_kernel_shape(dtype)["tiles"]
        return (("tile × SPLIT_K", tuple(configs.cuda_tile_config(tile, split) for tile in tiles
                                         for split in CUDA_SPLITS)),)
    return tuple((name, tuple({name: v} for v in values)) for name, values in TRITON_AXES[op])


def cases(family: str, models: Sequence[str], dtypes: Sequence[torch.dtype], batches: Sequence[int], size: int,
          ops: Sequence[str], arch: str, sms: int) -> List[Case]:
    """Every distinct (op, key) of the models' layers, in model order; a layer shared by several
    models (or batches of one bucket) comes once."""
    found: Dict[Tuple[str, str], Case] = {}
    for model in models:
        for shape in conv_shapes(model, size, TUNED_KINDS[family]):
            op = OP_OF_KIND[shape.kind]
            if op not in ops:
                continue
            for batch in batches:
                for dtype in dtypes:
                    key = _key(op, shape, dtype, batch)
                    if (op, key) not in found:
                        found[op, key] = Case(op, key, shape, batch, dtype,
                                              _baseline(family, op, shape, dtype, batch, arch, sms))
    return list(found.values())


# ---- running a case ---------------------------------------------------------------------------------

def make_runner(family: str, case: Case, device: torch.device, generator: torch.Generator
                ) -> Callable[[Optional[Dict[str, object]]], torch.Tensor]:
    """``run(config)``: the layer through ``family``'s launcher on random inputs made once."""
    from .backends import family as kernel_family
    from .kernels.spec import pack_conv_weight, pack_depthwise_weight
    fam, shape, dtype, n = kernel_family(family), case.shape, case.dtype, case.batch

    def randn(*size, channels_last=False):
        t = torch.randn(*size, generator=generator).to(device, dtype)
        return t.contiguous(memory_format=torch.channels_last) if channels_last else t

    c, k, padding = shape.c_in, shape.kernel, _padding(shape)
    x = randn(n, c, shape.h, shape.w, channels_last=True)
    bias = randn(shape.c_out)
    # The CUDA family's tiles are its sm_80+ kernel's, which runs fp32 only as the opt-in 3×TF32.
    extra = {"tf32x3": True} if family == "cuda" and dtype == torch.float32 else {}
    if case.op == "conv_bn_act":
        weight = pack_conv_weight(randn(shape.c_out, c, k, k) / (c * k * k) ** 0.5)
        if shape.kind == "aggregation":
            return lambda cfg: fam.aggregation_ese(x, weight, bias, config=cfg, **extra)[0]
        return lambda cfg: fam.conv_bn_act(x, weight, bias, shape.stride, True, padding=padding, config=cfg, **extra)
    if case.op == "depthwise_conv":
        weight = pack_depthwise_weight(randn(c, 1, k, k) / k)
        return lambda cfg: fam.depthwise_conv(x, weight, bias, shape.stride, padding=padding, config=cfg)
    if case.op == "max_pool":
        return lambda cfg: fam.max_pool(x, kernel=k, stride=shape.stride, padding=padding, config=cfg)
    if case.op == "scale_residual":
        gate, identity = torch.rand(n, c, generator=generator).to(device), randn(n, c, shape.h, shape.w,
                                                                                 channels_last=True)
        return lambda cfg: fam.scale_residual(x, gate, identity, config=cfg)
    # ese_gate: partial sums laid out as the family's aggregation writes them, (N, T, C); the
    # aggregation's C_in (which moves T only through its row tile) is taken as C.
    hw = shape.h * shape.w
    psum = torch.rand(fam.partial_sums_shape(n, hw, c, c, dtype, device), generator=generator).to(device)
    weight = randn(c, c) / c ** 0.5
    return lambda cfg: fam.ese_gate(psum, weight, bias, hw, config=cfg)


def gpu_timer(device: torch.device, reps: int = 20) -> Callable[[Callable[[], torch.Tensor]], Tuple[float, torch.Tensor]]:
    """``timed(fn) -> (ms, fn's result)``: the median of ``reps`` CUDA-event timings after a first
    call (which compiles)."""
    def timed(fn):
        result = fn()
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


def search(run, baseline_cfg, baseline_ms: float, reference: torch.Tensor, dtype: torch.dtype, walk: Sequence[Axis],
           timed, log, deadline: float = float("inf")) -> Tuple[float, Dict[str, object]]:
    """Coordinate descent from the baseline (``baseline_ms``, output ``reference``) over ``walk``,
    until ``deadline`` (``time.time()``): returns (best ms, best config)."""
    from .numerics import relative_error
    allowed = 1e-5 if dtype == torch.float32 else 2e-2
    results = {tuple(sorted(baseline_cfg.items())): baseline_ms}

    def measure(cfg) -> float:
        seen = tuple(sorted(cfg.items()))
        if seen not in results:
            try:
                ms, got = timed(lambda: run(cfg))
                if relative_error(got, reference) > allowed:
                    log(f"    {cfg}: wrong result, discarded")
                    ms = float("inf")
            except Exception as e:  # noqa: BLE001 - a tile this GPU cannot launch (shared memory, registers)
                log(f"    {cfg}: {type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}")
                ms = float("inf")
            results[seen] = ms
        return results[seen]

    best_cfg, best = dict(baseline_cfg), baseline_ms
    for _, values in walk:
        for update in values:
            cfg = {**best_cfg, **update}
            if cfg == best_cfg or time.time() > deadline:
                continue
            ms = measure(cfg)
            if ms < best:
                best, best_cfg = ms, cfg
    return best, best_cfg


def compare(family: str, case: Case, device: torch.device, generator: torch.Generator, timed) -> Dict[str, object]:
    """The other family's time for the same conv (its own config) and cuDNN's (channels_last
    ``F.conv2d`` + bias, no epilogue), in µs, as notes."""
    import torch.nn.functional as F
    other = next(f for f in FAMILIES if f != family)
    notes: Dict[str, object] = {}
    try:
        ms, _ = timed(lambda run=make_runner(other, case, device, generator): run(None))
        notes[f"_{other}_us"] = round(ms * 1e3, 2)
    except Exception as e:  # noqa: BLE001 - a note, not a failure
        notes[f"_{other}_error"] = f"{type(e).__name__}: {str(e)[:80]}"
    shape = case.shape
    x = torch.randn(case.batch, shape.c_in, shape.h, shape.w, generator=generator).to(device, case.dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(shape.c_out, shape.c_in, shape.kernel, shape.kernel, generator=generator).to(device, case.dtype)
    bias = torch.randn(shape.c_out, generator=generator).to(device, case.dtype)
    top, bottom, left, right = shape.padding
    padded = F.pad(x, (left, right, top, bottom))
    ms, _ = timed(lambda: F.conv2d(padded, weight, bias, shape.stride))
    notes["_cudnn_us"] = round(ms * 1e3, 2)
    return notes


def tune_cases(family: str, found: Sequence[Case], device: torch.device, timed, table: Dict[str, dict],
               deadline: float, min_gain: float, with_compare: bool = False, log=print) -> int:
    """Time each case's baseline, then search from it, longest first, until ``deadline``
    (``time.time()``); winners (and ``--compare`` notes) go into ``table`` under op and key.
    Returns how many entries were won."""
    generator = torch.Generator().manual_seed(0)
    measured = []
    for case in found:  # every first call compiles: the budget covers this pass too
        if time.time() > deadline:
            log(f"budget spent timing the baselines ({len(measured)} of {len(found)})")
            break
        runner = make_runner(family, case, device, generator)
        ms, reference = timed(lambda r=runner, c=case: r(c.baseline))
        measured.append((ms, reference, case, runner))
    measured.sort(key=lambda entry: -entry[0])  # longest first: the budget goes where the time is
    won = 0
    for baseline_ms, reference, case, runner in measured:
        if time.time() > deadline:
            log("budget spent; stopping")
            break
        best_ms, best = search(runner, case.baseline, baseline_ms, reference, case.dtype,
                               axes(family, case.op, case.dtype), timed, log, deadline)
        notes = compare(family, case, device, generator, timed) if with_compare and case.op == "conv_bn_act" else {}
        keep = best_ms < baseline_ms * (1 - min_gain)
        if keep or notes:
            entry = dict(best if keep else case.baseline)
            entry.update(_us=round(best_ms * 1e3, 2), _heuristic_us=round(baseline_ms * 1e3, 2), **notes)
            table.setdefault(case.op, {})[case.key] = entry
            won += keep
        log(f"{case.op:15s} {case.key:60s} baseline {baseline_ms * 1e3:9.1f} us -> best {best_ms * 1e3:9.1f} us "
            f"{best if keep else '(baseline kept)'} {notes or ''}")
    return won


def write_table(path: str, table: Dict[str, dict], meta: Dict[str, object]) -> None:
    """``table`` with its ``_meta`` as the JSON ``configs.py`` reads."""
    table["_meta"] = meta
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")


# ---- the command ------------------------------------------------------------------------------------

def output_path(args: argparse.Namespace, arch: str) -> str:
    """``<family>_<arch>.json`` in ``--out``; the committed directory only with ``--commit``."""
    name = f"{args.family}_{arch}.json"
    committed = os.path.abspath(configs.CONFIG_DIR)
    if args.commit:
        if args.out and os.path.abspath(args.out) != committed:
            raise cli.UserError(f"--commit writes {os.path.join(committed, name)}; drop --out {args.out}")
        return os.path.join(committed, name)
    directory = args.out or os.environ.get("OUT") or os.path.join("bench", "results")
    if os.path.abspath(directory) == committed:
        raise cli.UserError(f"{directory} holds the committed configs: pass --commit (without --out) to write "
                            f"{name} there")
    return os.path.join(directory, name)


def _describe(family: str, walk: Sequence[Axis], dtype: torch.dtype) -> str:
    if family == "cuda":
        return (f"every tile (BM, BN, WARPS_M, WARPS_N, STAGES) of {list(_cuda_kernel_shape(dtype)['tiles'])} "
                f"× SPLIT_K {list(CUDA_SPLITS)}")
    return "one axis at a time: " + "; ".join(
        f"{name} " + "/".join(str(v) for update in values for v in update.values()) for name, values in walk)


def dry_run(args: argparse.Namespace, found: List[Case], arch: str, sms: int) -> int:
    """Print the layers and candidates a real run would time; nothing is timed or written."""
    print(f"tune --family {args.family} --dry-run: {len(found)} layers (op, key at each batch bucket) of "
          f"{' '.join(args.models)}; baselines for {arch} with {sms} SMs; nothing is timed or written")
    listed = set()
    for case in found:
        walk = axes(args.family, case.op, case.dtype)
        if (case.op, case.dtype) not in listed:
            listed.add((case.op, case.dtype))
            count = sum(len(values) for _, values in walk)
            print(f"{case.op} {str(case.dtype).split('.')[-1]}: up to {count} candidates from the baseline, "
                  f"{_describe(args.family, walk, case.dtype)}")
        print(f"  {case.op:15s} {case.key:60s} {case.label():45s} baseline {case.baseline}")
    return 0


def run(args: argparse.Namespace) -> int:
    batches = args.batches or [timed_at for _, _, timed_at in configs.BATCH_BUCKETS.values()]
    dtypes = [getattr(torch, name) for name in args.dtypes]
    tunable = sorted({OP_OF_KIND[k] for k in TUNED_KINDS[args.family]})
    ops = args.ops or tunable
    refused = [op for op in ops if op not in tunable]
    if refused:
        raise cli.UserError(f"--family {args.family} has no tuned configs for {', '.join(refused)}; it tunes "
                            f"{', '.join(tunable)}")
    if args.dry_run:
        if args.out or args.commit:
            raise cli.UserError("--dry-run times nothing and writes nothing: drop --out / --commit")
        sms = configs.arch_sms(args.dry_run_arch)
        return dry_run(args, cases(args.family, args.models, dtypes, batches, args.size, ops, args.dry_run_arch, sms),
                       args.dry_run_arch, sms)
    if not torch.cuda.is_available():
        raise cli.UserError(f"tune --family {args.family} times kernels on a CUDA GPU, and this machine has none "
                            "(torch.cuda.is_available() is False): configs are per GPU architecture, so run it on "
                            "the GPU they are for; --dry-run lists the layers and candidate configs without one")
    from .backends import unavailable_reason
    device = torch.device("cuda")
    for dtype in dtypes:
        reason = unavailable_reason(args.family, device, dtype)
        if reason:
            raise cli.UserError(f"tune --family {args.family}: {reason}")
    arch, gpu = configs.arch_name(device), torch.cuda.get_device_name(device)
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    if args.family == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        raise cli.UserError(f"{gpu} is {arch}: the CUDA family's tiled kernel (the configs tuned) needs sm_80+")
    out_path = output_path(args, arch)
    buckets = [configs.batch_bucket(b) for b in batches]
    if len(set(buckets)) < len(buckets):
        print(f"warning: batches {batches} share buckets {buckets}; the first one of each bucket is tuned")
    found = cases(args.family, args.models, dtypes, batches, args.size, ops, arch, sms)
    table = {}
    if os.path.exists(out_path):
        with open(out_path) as f:
            table = json.load(f)
    start = time.time()
    print(f"{len(found)} layers on {gpu} ({arch}, {sms} SMs), budget {args.budget:.0f}s -> {out_path}", flush=True)
    written = tune_cases(args.family, found, device, gpu_timer(device), table, start + args.budget, args.min_gain,
                         args.compare, log=lambda text: print(text, flush=True))
    versions = {"torch": torch.__version__}
    if args.family == "triton":
        import triton
        versions["triton"] = triton.__version__
    write_table(out_path, table, dict(
        family=args.family, arch=arch, gpu=gpu, sms=sms, **versions, python=platform.python_version(),
        models=args.models, dtypes=args.dtypes, batches=batches,
        buckets={b: list(v) for b, v in configs.BATCH_BUCKETS.items()}, size=args.size,
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        seconds=round(time.time() - start, 1)))
    print(f"wrote {written} new entries ({sum(len(v) for k, v in table.items() if not k.startswith('_'))} in all) "
          f"to {out_path}")
    return 0
