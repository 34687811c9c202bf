"""Launch configurations of the Triton kernels, as data, and device facts.

Tuned configs live in ``hgnet_kernels/configs/triton_<arch>.json`` (``arch`` like ``sm90``),
written by ``python -m hgnet_kernels tune --family triton`` on that GPU: ``{"op": {"shape key_bucket": {param: value}}}``,
the key naming the layer's shape and dtype (``conv_key``, ``tile_key``) and the batch bucket it
was tuned at (``BATCH_BUCKETS``: ``b1``, ``b16``, ``b64``); ``"_meta"`` records the run and
fields starting with ``_`` are the tuner's timings. At run time they are only looked up (users
never pay tuning time, and nothing is tuned during CUDA-graph capture); a shape without an entry
gets the op's heuristic below, each commented with its reason, which takes the batch and the SM
count into account.
Under Triton's interpreter every op uses one fixed large-tile config, the interpreter's cost being
per program and loop iteration.

Everything here is pure Python (no Triton import), so ``python -m hgnet_kernels plan`` can show
the launch grid a config gives on a GPU this machine does not have.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Dict, NamedTuple, Optional, Tuple

import torch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def arch_name(device: torch.device) -> Optional[str]:
    """``"sm90"`` for a CUDA device of compute capability 9.0; None off the GPU."""
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


@functools.lru_cache(maxsize=None)
def _load(directory: str, family: str, arch: str) -> Dict[str, Dict[str, Dict[str, int]]]:
    """The tuned file ``<family>_<arch>.json`` (``family``: "triton" or "cuda"), or {}."""
    path = os.path.join(directory, f"{family}_{arch}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def tuned(op: str, key: str, arch: Optional[str], batch: Optional[int] = None, *,
          family: str = "triton") -> Optional[Dict[str, int]]:
    """The tuned config of ``op`` for shape ``key`` on ``arch`` in ``family``'s file
    (``<family>_<arch>.json``: "triton" or "cuda"), or None.

    With ``batch``, the entry of its batch bucket (``key + "_" + bucket``) is looked up first;
    then ``key`` itself (an entry without a bucket serves every batch).
    Fields starting with ``_`` (the tuner's timings) are notes, not launch parameters."""
    if arch is None:
        return None
    table = _load(CONFIG_DIR, family, arch).get(op, {})
    keys = ((f"{key}_{batch_bucket(batch)}",) if batch is not None else ()) + (key,)
    for candidate in keys:
        entry = table.get(candidate)
        if entry:
            return {k: v for k, v in entry.items() if not k.startswith("_")}
    return None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).split(".")[-1]


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ---- batch buckets -------------------------------------------------------------------------------

# Tuned entries are keyed by a batch bucket as well as the shape: the best tiles of a layer at
# batch 1 (few GEMM rows: small tiles, split-K) are not its best at batch 64 (many rows: large
# tiles). name: (smallest batch, largest batch or None, the batch the tuner times the bucket at).
BATCH_BUCKETS = {"b1": (1, 1, 1), "b16": (2, 16, 8), "b64": (17, None, 64)}


def batch_bucket(batch: int) -> str:
    """The bucket name of a batch size: ``b1``, ``b16`` (2–16) or ``b64`` (17 and more)."""
    for name, (low, high, _) in BATCH_BUCKETS.items():
        if batch >= low and (high is None or batch <= high):
            return name
    return "b1"  # batch 0: nothing is launched; any bucket will do


# H100 SXM's SM count: the heuristics' target when neither the device nor its arch is known.
DEFAULT_SMS = 132


def arch_sms(arch: Optional[str]) -> int:
    """The SM count of the first GPU of ``devices.json`` with this arch (the launchers pass the
    real device's count instead), else ``DEFAULT_SMS``."""
    return next((int(g["sms"]) for g in _devices().values() if g.get("arch") == arch), DEFAULT_SMS)


def _fit(size: int, blocks, slack: float = 0.125) -> int:
    """The largest block whose padding efficiency (size / size rounded up to whole blocks) is at
    least (1 − ``slack``) × the best of ``blocks``: less padding, but not at any price in tile size
    (16 channels take 64-wide tiles, 25 % useful, not 128-wide ones, 12.5 %). Both families' tiles."""
    efficiency = {b: size / (cdiv(size, b) * b) for b in blocks}
    best = max(efficiency.values())
    return max(b for b in blocks if efficiency[b] >= best * (1 - slack))


# ---- conv (implicit GEMM) ----------------------------------------------------------------------

def conv_key(hw_out: int, c_in: int, c_out: int, kernel: int, stride: int, dtype: torch.dtype,
             padding: Optional[Tuple[int, int, int, int]] = None, batch: Optional[int] = None) -> str:
    """The shape key of a tuned conv config, e.g. ``k3s1_cin96_cout96_hw3136_float16_b1``:
    ``_p0101`` follows the dtype for padding other than k // 2 all round, then the batch bucket."""
    key = f"k{kernel}s{stride}_cin{c_in}_cout{c_out}_hw{hw_out}_{dtype_name(dtype)}"
    if padding is not None and tuple(padding) != (kernel // 2,) * 4:
        key += "_p" + "".join(map(str, padding))
    return key + (f"_{batch_bucket(batch)}" if batch is not None else "")


# What a conv config holds besides BLOCK_M / BLOCK_N / BLOCK_K; a partial config (a caller's
# ``config=``, an entry written by hand) gets these values. SWAP_AB computes the tile transposed (Yᵀ = Wᵀ·Xᵀ),
# so that output channels, not pixels, are the MMA's M side.
CONV_DEFAULTS = dict(FLAT_K=False, SPLIT_K=1, GROUP_M=8, num_warps=4, num_stages=3, SWAP_AB=False)
# A split walks at least this many K steps: a 3-stage pipeline needs a few to pay its fill and drain.
MIN_STEPS_PER_SPLIT = 4
# More splits than this make the fp32 workspace round trip cost more than the parallelism gains.
MAX_SPLIT_K = 16
# Archs whose fast fp16 / bf16 MMA (wgmma) takes the M side in warpgroup tiles of WGMMA_ROWS: a
# smaller M falls back to mma.sync at a fraction of the rate.
WGMMA_ARCHS = ("sm90",)
WGMMA_ROWS = 64


def conv_config_defaults(cfg: Dict[str, int]) -> Dict[str, int]:
    return {**CONV_DEFAULTS, **cfg}


# The conv's K step outside the flat loop: 32 for every layer whose C_in it divides, in every dtype
# and on every arch, 16 for the others (C_in 16 or 48: stems, B0's first stage; a masked 32-wide
# step there ran ~3× the anchor GEMM's instructions per wgmma on sm_90). Each BLOCK_K is one more
# compiled kernel per layer form: the widest of 64, 32 and 16 dividing C_in gave 22 of the 79 fp16
# conv kernels of tiny+small+base+B0+B4 at batch 1 and 256 (Triton 3.6, sm_90); 32 is two k16
# wgmma / mma.sync steps per tile.
CONV_BLOCK_K = 32


def _k_step(c_in: int, kernel: int, widest: int, block: Optional[int] = None) -> Tuple[int, bool]:
    """(BLOCK_K, FLAT_K). Per-tap channel blocks of ``block`` (default ``CONV_BLOCK_K``, or 16 where
    that does not divide C_in), so the K loop does a few scalar operations per step (row
    addresses and border masks are computed once per tile). A k > 1 conv whose C_in is not a
    multiple of 16 takes the flat K loop in steps of up to ``widest``, which pads only the last
    step (the stem's 3 input channels would pad 3 → 16 per tap)."""
    if kernel > 1 and c_in % 16:
        return _fit(kernel * kernel * c_in, [b for b in (128, 64, 32, 16) if b <= widest]), True
    if block is None:
        block = CONV_BLOCK_K if c_in % CONV_BLOCK_K == 0 else 16
    return block, False


def conv_config(hw_out: int, c_in: int, c_out: int, kernel: int, stride: int, dtype: torch.dtype,
                arch: Optional[str], interpreter: bool = False, *, batch: Optional[int] = None,
                padding: Optional[Tuple[int, int, int, int]] = None, sms: Optional[int] = None) -> Dict[str, int]:
    """The conv kernel's launch config for this layer at this batch: BLOCK_M (GEMM rows = output
    pixels, across images) × BLOCK_N (output channels) × BLOCK_K (K per step), FLAT_K (a K loop
    that ignores tap boundaries), SPLIT_K (K ranges run by separate programs, reduced in a fixed
    order), SWAP_AB (the tile computed transposed), GROUP_M (row tiles per group of the program
    order), warps and pipeline stages.

    ``batch`` None means 1 for the heuristic and only bucket-less tuned entries; ``sms``: the
    device's SM count (default: its arch's in ``devices.json``)."""
    rows = (batch or 1) * hw_out
    if interpreter:  # few, large programs: the interpreter's cost is per program and K step
        block_k, flat = _k_step(c_in, kernel, 128, 64 if c_in % 64 == 0 else None)  # fewer K steps
        return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=block_k, FLAT_K=flat, SPLIT_K=1, GROUP_M=8,
                    num_warps=4, num_stages=1, SWAP_AB=False)
    found = tuned("conv_bn_act", conv_key(hw_out, c_in, c_out, kernel, stride, dtype, padding), arch, batch)
    if found:
        return conv_config_defaults(found)
    sms = sms or arch_sms(arch)
    # K: a flat loop's fp32 step is at most half the width of a 16-bit one, to keep the shared-memory
    # tiles (num_stages of them) the same size.
    block_k, flat = _k_step(c_in, kernel, 32 if dtype == torch.float32 else 64)
    # M × N: the largest tiles (each input row feeds more output channels, each weight more
    # pixels) whose grid still has a program per SM; shrinking rows first (a late-stage map at batch
    # 1 has 49–196 rows), then channels. Each side takes the block with the least padding among
    # those allowed (within 1/8 of it): 160 channels get 64-wide tiles (83 %), not 128 (63 %).
    wgmma = arch in WGMMA_ARCHS and dtype != torch.float32
    shapes = ((128, (128, 64)), (64, (128, 64)), (64, (64, 32)), (32, (64, 32)), (32, (32,)))
    if wgmma:  # below 64 rows, keep 64+ channels: the swapped tile then still runs on wgmma
        shapes = ((128, (128, 64)), (64, (128, 64)), (64, (64, 32)), (32, (128, 64)), (16, (64,)))
    if dtype == torch.float32:  # FMA units, both operand tiles in registers: 128 channels spilled
        shapes = tuple((cap_m, tuple(b for b in blocks_n if b <= 64)) for cap_m, blocks_n in shapes)
    for cap_m, blocks_n in shapes:
        block_m = _fit(rows, [b for b in (128, 64, 32, 16) if b <= cap_m])
        block_n = _fit(c_out, blocks_n + tuple(b for b in (32, 16) if b >= c_out))  # 16 channels: 16 wide
        tiles = cdiv(rows, block_m) * cdiv(c_out, block_n)
        if tiles >= sms:
            break
    swap = False
    if wgmma and block_m < WGMMA_ROWS:
        # Few pixels: channels take the MMA's M side (Yᵀ = Wᵀ·Xᵀ) when they fill a warpgroup's
        # 64 rows, else the pixel tile is padded to 64 rows. Either way the dot runs on wgmma.
        swap = block_n >= WGMMA_ROWS
        block_m = block_m if swap else WGMMA_ROWS
        tiles = cdiv(rows, block_m) * cdiv(c_out, block_n)
    # Still fewer tiles than SMs (stages 3–4 at small batch): split K over more programs, each
    # walking at least MIN_STEPS_PER_SPLIT steps; the reduction adds 2 · splits · M · C_out · 4
    # bytes, small next to a serial K of up to 4608.
    steps = conv_k_steps(c_in, kernel, dict(BLOCK_K=block_k, FLAT_K=flat))
    split = 1
    if tiles < sms:
        split = conv_split(steps, max(1, min(cdiv(sms, tiles), steps // MIN_STEPS_PER_SPLIT, MAX_SPLIT_K)))[0]
    # 128×128 fp32 accumulators are 128 registers a thread over 4 warps: give them 8; fp32 operands
    # (FMA units: the operand tiles sit in registers too) at any 128-row tile, which spilled on
    # sm_80 / sm_90 with 4 warps. A 16×32 tile is 2 warps' worth of mma fragments.
    fma_rows = dtype == torch.float32 and block_m == 128
    warps = 8 if block_m * block_n >= 128 * 128 or fma_rows else (2 if block_m * block_n <= 512 else 4)
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, FLAT_K=flat, SPLIT_K=split, GROUP_M=8,
                num_warps=warps, num_stages=3, SWAP_AB=swap)


def conv_k_steps(c_in: int, kernel: int, cfg: Dict[str, int]) -> int:
    """Iterations of the conv's K loop: (tap, channel block) pairs, or flat BLOCK_K chunks of K."""
    if cfg.get("FLAT_K"):
        return cdiv(kernel * kernel * c_in, cfg["BLOCK_K"])
    return kernel * kernel * cdiv(c_in, cfg["BLOCK_K"])


def conv_split(steps: int, split: int) -> Tuple[int, int]:
    """(splits, steps per split) of a K loop of ``steps`` for ``split`` requested: no split is left
    empty. Both families' split-K."""
    per = cdiv(steps, max(1, min(split, steps)))
    return cdiv(steps, per), per


def conv_grid(n: int, hw_out: int, c_in: int, c_out: int, kernel: int, cfg: Dict[str, int]) -> Tuple[int, int]:
    """The conv kernel's launch grid: (output tiles over N·Ho·Wo rows × C_out, K splits). A split-K
    launch is followed by a reduction over the output tiles (``conv_bn_act.split_k_reduce_kernel``)."""
    return conv_launch_shape(n, hw_out, c_in, c_out, kernel, cfg).grid


class ConvLaunchShape(NamedTuple):
    """The grid maths of one conv launch, done once per layer and input shape (the launcher's
    ``resolve_conv``, the ``plan`` report): K steps, (splits, steps per split), the conv kernel's
    grid, and with split-K the reduction's grid and the fp32 workspace's shape."""
    k_steps: int
    splits: int
    steps_per_split: int
    grid: Tuple[int, int]
    reduce_grid: Optional[Tuple[int, int]]
    workspace_shape: Optional[Tuple[int, int, int]]


def conv_launch_shape(n: int, hw_out: int, c_in: int, c_out: int, kernel: int,
                      cfg: Dict[str, int]) -> ConvLaunchShape:
    k_steps = conv_k_steps(c_in, kernel, cfg)
    splits, per_split = conv_split(k_steps, cfg.get("SPLIT_K", 1))
    rows = n * hw_out
    tiles_m, tiles_n = cdiv(rows, cfg["BLOCK_M"]), cdiv(c_out, cfg["BLOCK_N"])
    if splits == 1:
        return ConvLaunchShape(k_steps, 1, per_split, (tiles_m * tiles_n, 1), None, None)
    return ConvLaunchShape(k_steps, splits, per_split, (tiles_m * tiles_n, splits), (tiles_m, tiles_n),
                           (splits, rows, c_out))


def conv_padded_macs(n: int, hw_out: int, c_in: int, c_out: int, kernel: int, cfg: Dict[str, int]) -> int:
    """MACs of the whole tiles the conv computes (padding of M, N and K included): the useful MACs
    over this is the tensor-core work not lost to padding."""
    k = conv_k_steps(c_in, kernel, cfg) * cfg["BLOCK_K"]
    return (cdiv(n * hw_out, cfg["BLOCK_M"]) * cfg["BLOCK_M"]) * (cdiv(c_out, cfg["BLOCK_N"]) * cfg["BLOCK_N"]) * k


# ---- the small ops: depthwise conv, max pool, scale + residual, ESE gate -------------------------

def tile_key(channels: int, dtype: torch.dtype, hw: Optional[int] = None, geometry: str = "") -> str:
    """``k5s1_c24_hw3136_float16`` (geometry: the window of depthwise conv / max pool)."""
    return (f"{geometry}_" if geometry else "") + f"c{channels}" + (f"_hw{hw}" if hw else "") + f"_{dtype_name(dtype)}"


def tile_config(op: str, channels: int, dtype: torch.dtype, arch: Optional[str],
                interpreter: bool = False, *, hw: Optional[int] = None, batch: Optional[int] = None,
                geometry: str = "", sms: Optional[int] = None) -> Dict[str, int]:
    """BLOCK_P (pixels, across images) × BLOCK_C (channels) of the memory-bound NHWC ops
    (``depthwise_conv``, ``max_pool``, ``scale_residual``)."""
    if interpreter:
        return dict(BLOCK_P=128, BLOCK_C=128, num_warps=4)
    found = tuned(op, tile_key(channels, dtype, hw, geometry), arch, batch)
    if found:
        return found
    # 64 contiguous channels are 128 bytes in fp16: one full line per pixel row of the tile, and
    # 32 pixels × 64 channels keep 4 warps busy with one element per thread per tap. Late stages at
    # batch 1 (49 pixels) would launch a few programs: halve the pixels, down to 8, until the
    # grid covers the SMs. A depthwise conv unrolls its k² taps, each tap's loads in flight at
    # once: 16 pixels for 3×3 and 8 for 5×5 (4 in fp32) fit its ceiling of 128 registers
    # (DEPTHWISE_MAX_REGISTERS) without spilling, so 4+ programs share an SM to hide the memory
    # latency this memory-bound kernel lives on (sm_90, Triton 3.8, uncapped: 5×5 at 16 pixels
    # wants 164 registers, fp32 5×5 at 8 pixels 131).
    block_p, sms = 32, sms or arch_sms(arch)
    if op == "depthwise_conv":
        block_p = (4 if dtype == torch.float32 else 8) if geometry.startswith("k5") else 16
    rows = (batch or 1) * (hw or 1)
    while block_p > 8 and cdiv(rows, block_p) * cdiv(channels, 64) < sms:
        block_p //= 2
    return dict(BLOCK_P=block_p, BLOCK_C=64, num_warps=4)


# The depthwise conv's register ceiling (Triton's ``maxnreg``, PTX ``.maxnreg``), 128 × 4 warps: 4
# programs an SM on sm_80 / sm_90. Left to itself, ptxas (Triton 3.6 and 3.8 alike) spills a
# register or two to local memory where that wins one more program an SM, on a different depthwise
# form in each version; given the ceiling it schedules the unrolled taps' loads within it instead
# (spill-free on both, every form and dtype of the plan: bench/results/depthwise-2026-11-30.md).
DEPTHWISE_MAX_REGISTERS = 128


def tile_grid(n: int, hw: int, channels: int, cfg: Dict[str, int]) -> Tuple[int, int]:
    """Launch grid of the pixel × channel tiled ops: (pixel tiles over N·H·W, channel tiles)."""
    return cdiv(n * hw, cfg["BLOCK_P"]), cdiv(channels, cfg["BLOCK_C"])


def gate_config(channels: int, dtype: torch.dtype, arch: Optional[str], interpreter: bool = False, *,
                batch: Optional[int] = None, sms: Optional[int] = None) -> Dict[str, int]:
    """BLOCK_CO × BLOCK_CI of the ESE gate's GEMV and BLOCK_T, the partial-sum rows per step."""
    if interpreter:
        return dict(BLOCK_CO=128, BLOCK_CI=128, BLOCK_T=64, num_warps=4)
    found = tuned("ese_gate", tile_key(channels, dtype), arch, batch)
    if found:
        return found
    # A GEMV per image with C ≤ 2048: 32 output channels per program gives N · C / 32 programs, each
    # streaming 64-wide rows of the weight; at small batch, 16 doubles the programs.
    block_co = 32 if (batch or 1) * cdiv(channels, 32) >= (sms or arch_sms(arch)) else 16
    return dict(BLOCK_CO=block_co, BLOCK_CI=64, BLOCK_T=16, num_warps=4)


def gate_grid(n: int, channels: int, cfg: Dict[str, int]) -> Tuple[int, int]:
    return n, cdiv(channels, cfg["BLOCK_CO"])


# ---- devices --------------------------------------------------------------------------------------

def _devices() -> Dict[str, Dict[str, float]]:
    return _read_devices(CONFIG_DIR)


@functools.lru_cache(maxsize=None)
def _read_devices(directory: str) -> Dict[str, Dict[str, float]]:
    with open(os.path.join(directory, "devices.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def known_gpus() -> Dict[str, Dict[str, float]]:
    """Every GPU of ``configs/devices.json``: data-sheet peaks, SM count and arch."""
    return _devices()


def device_peaks(device: torch.device) -> Optional[Dict[str, float]]:
    """Data-sheet peak FLOP/s per dtype, bandwidth, SM count and arch of a known GPU (None: unknown,
    e.g. a CPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in _devices().items():  # most specific names first in the file
        if key in name:
            return peaks
    return None


# ---- CUDA C++ family: the sm_80+ conv kernel's tiles (csrc/conv_mma.cuh) ---------------------------
# Tuned entries live in ``configs/cuda_<arch>.json`` (``python -m hgnet_kernels tune --family cuda``),
# the same shape as Triton's files:
# ``{"conv_bn_act": {"<conv_key>_<bucket>": {"BM": …, "BN": …, "WARPS_M": …, "WARPS_N": …,
# "STAGES": …, "SPLIT_K": …}}}`` with ``conv_key``'s shape key and batch bucket. None is committed
# yet (nothing has been measured on a GPU); the heuristic below serves every shape until then.

# The tiles the kernel is instantiated for and its K step are facts of csrc/conv_mma.cuh: the CUDA
# launchers read them from the compiled code (``kernels.cuda.ops.mma_tiles`` / ``mma_k_step``)
# and pass them in.
CUDA_PSUM_ROWS = 64      # rows per ESE partial sum: the epilogue's slab (conv_mma.cuh kPsumRows), the SIMT/WMMA tile
CUDA_MAX_SPLIT_K = 16
CUDA_MIN_STEPS_PER_SPLIT = 4


def cuda_conv_k_steps(c_in: int, kernel: int, k_step: int) -> int:
    """Iterations of the CUDA conv's K loop: ``k_step``-wide chunks of the flat K = k² · C_in."""
    return cdiv(kernel * kernel * c_in, k_step)


def cuda_conv_config(hw_out: int, c_in: int, c_out: int, kernel: int, stride: int, dtype: torch.dtype,
                     arch: Optional[str], *, batch: int = 1, padding: Optional[Tuple[int, int, int, int]] = None,
                     sms: Optional[int] = None, tiles: Tuple[Tuple[int, ...], ...], k_step: int) -> Dict[str, int]:
    """The sm_80+ CUDA conv kernel's tile for this layer at this batch: BM (GEMM rows = output
    pixels, across images) × BN (output channels), the warp grid, the cp.async stages, and SPLIT_K
    (K slices reduced in a fixed order through an fp32 workspace), among ``tiles`` (the kernel's
    instantiated (BM, BN, WARPS_M, WARPS_N, STAGES) for this dtype) with ``k_step`` K elements per
    step. A tuned entry of ``configs/cuda_<arch>.json`` wins; else the heuristic, by shape, batch
    and SM count."""
    key = conv_key(hw_out, c_in, c_out, kernel, stride, dtype, padding)
    found = tuned("conv_bn_act", key, arch, batch, family="cuda")
    if found:
        return found
    sms = sms or arch_sms(arch)
    rows = max(batch, 1) * hw_out
    # The largest tile whose grid still has a block per SM (each A row then feeds more output
    # channels, each weight more pixels), shrinking rows first, then channels; each side takes the
    # block with the least padding among those allowed (160 channels: 64-wide tiles, 83 %).
    for cap_m, cap_n in ((128, 128), (64, 128), (128, 64), (64, 64)):
        bm = _fit(rows, [b for b in (128, 64) if b <= cap_m and any(t[0] == b for t in tiles)])
        bn = _fit(c_out, [b for b in (128, 64) if b <= cap_n and any(t[1] == b for t in tiles)])
        blocks = cdiv(rows, bm) * cdiv(c_out, bn)
        if blocks >= sms:
            break
    tile = next(t for t in tiles if t[:2] == (bm, bn))
    # Still fewer blocks than SMs (late stages at small batch): split K, each slice walking at
    # least CUDA_MIN_STEPS_PER_SPLIT steps so the pipeline fills; the reduction costs
    # 2 · splits · tiles · BM · BN · 4 bytes, small next to a K of up to 9 · 1024.
    steps = cuda_conv_k_steps(c_in, kernel, k_step)
    split = 1
    if blocks < sms:
        split = max(1, min(cdiv(sms, blocks), steps // CUDA_MIN_STEPS_PER_SPLIT, CUDA_MAX_SPLIT_K))
    return cuda_tile_config(tile, split)


def cuda_tile_config(tile: Tuple[int, int, int, int, int], split: int) -> Dict[str, int]:
    """The config of one of the kernel's instantiated (BM, BN, WARPS_M, WARPS_N, STAGES) tiles at
    SPLIT_K = ``split``."""
    return dict(BM=tile[0], BN=tile[1], WARPS_M=tile[2], WARPS_N=tile[3], STAGES=tile[4], SPLIT_K=split)


def cuda_conv_workspace(n: int, hw_out: int, c_in: int, c_out: int, kernel: int, cfg: Dict[str, int], *,
                        k_step: int) -> int:
    """fp32 elements of split-K workspace the conv needs (0 without split-K); the kernel checks it
    (``hgk::conv_workspace_floats``)."""
    splits = conv_split(cuda_conv_k_steps(c_in, kernel, k_step), cfg.get("SPLIT_K", 1))[0]
    if splits <= 1:
        return 0
    rows = n * hw_out
    return splits * cdiv(rows, cfg["BM"]) * cdiv(c_out, cfg["BN"]) * cfg["BM"] * cfg["BN"]
