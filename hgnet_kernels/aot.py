"""``python -m hgnet_kernels aot``: compile every Triton launch of the plan for GPUs this machine
does not have, and read the compiled code.

Nothing here needs a GPU. For each case (model, dtype, batch, input size) the triton backend runs
its plan on CPU tensors inside ``compiling_for(arch, sms)``: the launchers pick configs for that
GPU's arch and SM count exactly as they would on it, and each ``kernel[grid](...)`` is recorded by
Triton's ``jit_cache_hook`` — the specialization Triton would compile (argument types,
divisibility and equal-to-1 attributes, constexprs, warps, stages) — instead of being compiled and
launched. So what is compiled here is what would run.

Each distinct specialization is then compiled with ``triton.compile`` for each target
(``GPUTarget("cuda", 90, 32)`` …) with the ptxas and cuobjdump of the Triton wheel, and read:

* registers, local-memory traffic (``STL`` / ``LDL``: register spills; Triton kernels have no
  local arrays), shared memory, warps and stages; blocks per SM (registers, shared memory,
  threads and the block limit of the arch) and occupancy; waves of its launches on the GPU;
* tensor-core instructions: ``HGMMA`` (wgmma, sm_90), ``HMMA`` (mma.sync), and ``FFMA`` (SIMT);
* the **main loop**: the smallest backward-branch range of the SASS holding the most tensor-core
  instructions; its instructions (NOPs aside) per tensor-core instruction, its opcode mix, and
  that figure over the same figure of an **anchor** — a plain pointer-load matmul in the style of
  Triton's tutorial (03-matrix-multiplication) compiled at the same dot tile (read off the
  kernel's ``tt.dot``), dtype, warps, stages, target and Triton version. A ratio of 1 means the
  conv's loop issues no more than a GEMM's does per tensor-core instruction.

``--check`` makes it a gate (CI runs it): exit status 1 on any compile error, any spill on sm_90
or sm_80, any fp16/bf16 ``tt.dot`` on sm_90 that does not compile to wgmma, and (with
``--max-loop-ratio``) any main loop above that ratio. Compiled, not run: these are facts about the
code a GPU would execute, not timings.

Triton caches compiled kernels (``TRITON_CACHE_DIR``, default ``~/.triton/cache``): a second run
compiles nothing; ``--cold`` compiles into an empty cache to time a cold start. The SASS listings
are kept too (``HGNET_KERNELS_CACHE``): an unchanged cubin is disassembled once.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import hashlib
import importlib
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from . import cli, configs

# Per arch: registers per SM, threads per SM, blocks per SM, shared memory per SM usable by blocks
# (bytes), shared memory the hardware reserves per block (CUDA occupancy calculator's figures).
ARCH_LIMITS = {
    80: dict(regs=65536, threads=2048, blocks=32, smem=164 * 1024, smem_reserved=1024),
    86: dict(regs=65536, threads=1536, blocks=16, smem=100 * 1024, smem_reserved=1024),
    89: dict(regs=65536, threads=1536, blocks=24, smem=100 * 1024, smem_reserved=1024),
    90: dict(regs=65536, threads=2048, blocks=32, smem=228 * 1024, smem_reserved=1024),
}
TENSOR_CORE_OPS = ("HGMMA", "HMMA")
DEFAULT_MODELS = ("tiny", "small", "base", "b0", "b4")
DEFAULT_DTYPES = ("float16", "bfloat16", "float32")
DEFAULT_BATCHES = (1, 256)


# ---- recording the launches of a plan ----------------------------------------------------------

@dataclass
class Launch:
    """One distinct specialization of a kernel, as Triton would compile it, and its launches."""
    kernel: str                      # module:qualname of the @triton.jit function
    signature: Dict[str, str]
    constants: Dict[str, object]     # constexpr parameter name -> value
    attrs: List[Tuple[int, List]]    # (parameter index, [["tt.divisibility", 16]] …)
    options: Dict[str, object]       # num_warps, num_stages, …
    key: str                         # Triton's cache key of this specialization
    grids: List[Tuple[int, int, int]] = field(default_factory=list)
    ops: List[str] = field(default_factory=list)   # the plan ops that launch it
    cases: List[str] = field(default_factory=list)
    dtypes: List[str] = field(default_factory=list)  # the compute dtypes of the cases that launch it
    reads_input: bool = False  # launched by an op reading the network's input (the 3-channel stem conv)

    @property
    def name(self) -> str:
        return self.kernel.split(":")[-1]

    def note(self, current: dict, grid) -> None:
        """One more launch of this specialization, by the op ``current`` names."""
        self.grids.append(tuple(grid) + (1,) * (3 - len(grid)))
        if current["op"] not in self.ops:
            self.ops.append(current["op"])
        self.reads_input |= current["reads_input"]

    def compile_args(self):
        return (self.kernel, self.signature, self.constants, self.attrs, self.options)


def _stand_in_driver(target):
    """A Triton driver that answers 'this GPU' questions for ``target`` and has no device."""
    from triton.backends.driver import DriverBase

    class StandIn(DriverBase):
        @classmethod
        def is_active(cls):
            return False

        def get_current_target(self):
            return target

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            import torch
            return torch.device("cpu")

        def get_device_interface(self):
            raise RuntimeError("the AOT stand-in driver has no device")

        def get_benchmarker(self):
            raise RuntimeError("the AOT stand-in driver has no device")

        def map_python_to_cpp_type(self, ty):
            raise RuntimeError("the AOT stand-in driver launches nothing")

    return StandIn()


def _check_not_interpreting() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise cli.UserError("the AOT check compiles real GPU code; unset TRITON_INTERPRET (the interpreter "
                            "replaces every kernel with a Python function)")


class _RecordedKernel:
    """What Triton's kernel cache holds for a recorded specialization: launching it records the
    grid. Later launches of the same specialization then take Triton's real dispatch path (binder,
    cache key, cache hit) and stop only where the driver would launch."""
    function = packed_metadata = None

    def __init__(self, entry: Launch, current: dict):
        self.entry, self.current = entry, current

    def launch_metadata(self, grid, stream, *args):
        return None

    def run(self, grid_0, grid_1, grid_2, *rest):
        self.entry.note(self.current, (grid_0, grid_1, grid_2))


def _our_kernels() -> List[object]:
    from triton.runtime.jit import JITFunction
    return [value for name, module in list(sys.modules.items()) if name.startswith("hgnet_kernels.")
            for value in vars(module).values() if isinstance(value, JITFunction)]


@contextlib.contextmanager
def recording(arch: int, sms: int, launches: Dict[Tuple[str, str], Launch], current: dict) -> Iterator[None]:
    """Inside, Triton launches are recorded into ``launches`` (keyed by kernel and Triton's cache
    key) instead of compiled and run, configured for GPU ``sm_<arch>`` with ``sms`` SMs;
    ``current`` names the plan op being run (for the report). On leaving, every kernel's caches
    are as they were: nothing recorded here can be launched later in the process."""
    _check_not_interpreting()
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    from .kernels.triton import compiling_for

    grid_of_call: List[object] = [None]
    run = JITFunction.run

    def run_keeping_grid(self, *args, grid, warmup, **kwargs):
        grid_of_call[0] = grid
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled):
        kernel = f"{fn.module}:{fn.name}"
        names = list(compile["signature"])
        entry = launches.get((kernel, str(key)))
        if entry is None:
            constants = {names[path[0]]: value for path, value in compile["constants"].items()}
            attrs = [(path[0], value) for path, value in compile["configs"][0].items() if value]
            options = {k: compile[k] for k in ("num_warps", "num_ctas", "num_stages", "enable_fp_fusion")}
            # A launch's register ceiling (``maxnreg``) is compiled in too; the hook's arguments
            # leave it out, its serialized options (Triton 3.6 – 3.8) keep it.
            maxnreg = json.loads(compile["specialization_data"])["options"].get("maxnreg")
            if maxnreg is not None:
                options["maxnreg"] = maxnreg
            entry = launches[(kernel, str(key))] = Launch(kernel, dict(compile["signature"]), constants, attrs,
                                                          options, str(key))
        fn.jit_function.device_caches[0][0][key] = _RecordedKernel(entry, current)
        grid = grid_of_call[0]
        entry.note(current, grid(None) if callable(grid) else grid)
        return True  # not compiled, not launched

    kernels = _our_kernels()
    saved_caches = [k.device_caches for k in kernels]
    previous_hook, previous_driver = knobs.runtime.jit_cache_hook, driver._active  # None: not chosen yet
    driver.set_active(_stand_in_driver(GPUTarget("cuda", arch, 32)))
    for k in kernels:  # fresh caches, bound to the stand-in's target
        k.device_caches = collections.defaultdict(k.create_binder)
    knobs.runtime.jit_cache_hook = hook
    JITFunction.run = run_keeping_grid
    try:
        with compiling_for(f"sm{arch}", sms):
            yield
    finally:
        JITFunction.run = run
        knobs.runtime.jit_cache_hook = previous_hook
        driver.set_active(previous_driver)
        for k, caches in zip(kernels, saved_caches):
            k.device_caches = caches


def _named_binders(backend, plan, current: dict):
    """The backend's binders, each binding a step that notes in ``current`` which plan op it is
    before it runs (and noting it while it binds: the first launch is made then)."""
    def named(binder, plan_op):
        note = dict(op=plan_op.name or plan_op.kind, reads_input=plan_op.reads[0].buffer == plan.input)

        def bind(env):
            current.update(note)
            step = binder(env)

            def run(env):
                current.update(note)
                step(env)
            return run
        return bind
    return [named(binder, plan_op) for binder, plan_op in zip(backend.binders, plan.ops)]


def collect(models: Sequence[str], dtypes: Sequence[str], batches: Sequence[int], sizes: Sequence[int],
            arch: int, sms: int) -> Dict[Tuple[str, str], Launch]:
    """Every distinct launch the triton backend issues for each (model, dtype, batch, size) on a GPU
    of ``arch`` with ``sms`` SMs: the plan is executed on CPU tensors, nothing is computed."""
    import torch

    from .backends import Backend
    from .folding import fold_model
    from .models import build_model
    from .plan import build_plan
    from .verify import DTYPES

    launches: Dict[Tuple[str, str], Launch] = {}
    current = dict(op="", reads_input=False)
    with recording(arch, sms, launches, current):
        for model in models:
            eager = build_model(model).eval()
            for dtype_name in dtypes:
                dtype = DTYPES[dtype_name]
                net = fold_model(eager, dtype)
                plan = build_plan(net)
                backend = Backend("triton", net, plan, torch.device("cpu"), cuda_graph=False)
                backend.binders = _named_binders(backend, plan, current)
                everything = tuple(range(len(plan.features) + 1))
                for batch in batches:
                    for size in sizes:
                        case = f"{model} {dtype_name} b{batch} {size}"
                        before = {k: len(v.grids) for k, v in launches.items()}
                        x = torch.empty((batch, plan.in_channels, size, size), dtype=dtype)
                        with torch.no_grad():
                            backend._execute(x, everything)
                        for k, v in launches.items():
                            if len(v.grids) != before.get(k, 0) and case not in v.cases:
                                v.cases.append(case)
                                if dtype_name not in v.dtypes:
                                    v.dtypes.append(dtype_name)
    return launches


# ---- compiling and reading SASS ----------------------------------------------------------------

_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_PREDICATE = re.compile(r"^@!?U?P[T0-9]+\s+")
_BRANCH_TARGET = re.compile(r"\bBRA\b.*?(0x[0-9a-f]+)")
_DOT = re.compile(r"tt\.dot\b[^\n]*?:\s*tensor<(\d+)x(\d+)x(\w+)[^>]*>\s*\*\s*tensor<(\d+)x(\d+)x(\w+)")


def cuda_tool(name: str) -> str:
    """The path of a CUDA binary tool Triton ships (``cuobjdump``, ``ptxas``)."""
    import triton
    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)


def parse_sass(sass: str) -> List[Tuple[int, str, str]]:
    """(address, opcode without modifiers, instruction text) of each SASS instruction."""
    out = []
    for line in sass.splitlines():
        m = _SASS_LINE.search(line)
        if not m:
            continue
        text = _PREDICATE.sub("", m.group(2).strip())
        opcode = text.split()[0].split(".")[0] if text else ""
        out.append((int(m.group(1), 16), opcode, text))
    return out


def main_loop(instructions: List[Tuple[int, str, str]]) -> Optional[dict]:
    """The smallest backward-branch range holding the most tensor-core instructions: its size
    (NOPs aside), tensor-core instructions, and opcode mix; None without tensor-core instructions
    inside a loop."""
    loops = []
    for address, opcode, text in instructions:
        if opcode == "BRA":
            m = _BRANCH_TARGET.search(text)
            if m and int(m.group(1), 16) <= address:
                loops.append((int(m.group(1), 16), address))
    best = None
    for lo, hi in loops:
        body = [op for a, op, _ in instructions if lo <= a <= hi and op != "NOP"]
        mma = sum(op in TENSOR_CORE_OPS for op in body)
        if mma and (best is None or (mma, -len(body)) > (best[0], -len(best[1]))):
            best = (mma, body)
    if best is None:
        return None
    mma, body = best
    return dict(instructions=len(body), tensor_core=mma, per_tensor_core=len(body) / mma,
                mix=dict(collections.Counter(body).most_common(12)))


# The operand type a tensor-core instruction names after its accumulator type: HGMMA.64x64x16.F32
# (fp16), HGMMA.64x64x16.F32.BF16, HGMMA.64x64x8.F32.TF32, HMMA.16816.F32(.BF16), HMMA.1688.F32.TF32.
_TENSOR_CORE_INPUTS = {"": "f16", "BF16": "bf16", "TF32": "tf32"}


def tensor_core_inputs(instructions: List[Tuple[int, str, str]]) -> List[str]:
    """The operand types of the tensor-core instructions: "f16", "bf16", "tf32" (others lowercased)."""
    found = set()
    for _, opcode, text in instructions:
        if opcode in TENSOR_CORE_OPS:
            fields = text.split()[0].split(".")
            suffix = fields[3] if len(fields) > 3 else ""
            found.add(_TENSOR_CORE_INPUTS.get(suffix, suffix.lower()))
    return sorted(found)


def _resource_usage(text: str) -> Dict[str, int]:
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)", text)
    return dict(zip(("regs", "stack", "static_shared", "local"), map(int, m.groups()))) if m else {}


def read_cubin(cubin: bytes) -> Tuple[str, Dict[str, int]]:
    """SASS text and resource usage of a cubin (cuobjdump of the Triton wheel).

    Disassembling costs ~0.8 s of CPU a kernel, most of the check's time once Triton's cache holds
    the cubins: the listing is kept in the cache directory (``HGNET_KERNELS_CACHE``) under a hash
    of the cubin's bytes and of the cuobjdump that read it, so an unchanged kernel is read once."""
    from .kernels.cuda.build import cache_dir

    tool = cuda_tool("cuobjdump")
    key = hashlib.sha256(cubin + f"{os.path.realpath(tool)}:{os.path.getsize(tool)}".encode()).hexdigest()
    kept = os.path.join(cache_dir(), "aot-sass", f"{key}.txt")
    try:
        with open(kept) as f:
            out = f.read()
    except OSError:
        with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
            f.write(cubin)
        try:
            out = subprocess.run([tool, "-sass", "-res-usage", f.name], capture_output=True, text=True,
                                 check=True).stdout
        finally:
            os.unlink(f.name)
        os.makedirs(os.path.dirname(kept), exist_ok=True)
        fd, partial = tempfile.mkstemp(suffix=".partial", dir=os.path.dirname(kept))
        with os.fdopen(fd, "w") as f:
            f.write(out)
        os.replace(partial, kept)  # atomic: a concurrent check never reads half a listing
    return out, _resource_usage(out)


def blocks_per_sm(arch: int, regs: int, shared: int, warps: int) -> Tuple[int, str]:
    """Resident blocks per SM and what limits them (registers are allocated per warp in units of
    256, i.e. per thread rounded up to 8)."""
    limits = ARCH_LIMITS.get(arch, ARCH_LIMITS[90])
    threads = warps * 32
    per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by = {"registers": limits["regs"] // (per_warp * warps),
          "threads": limits["threads"] // threads,
          "blocks": limits["blocks"],
          "shared memory": (limits["smem"] // (shared + limits["smem_reserved"])) if shared else limits["blocks"]}
    limiter = min(by, key=by.get)
    return by[limiter], limiter


def _source(kernel: str, signature, constants, attrs):
    from triton.compiler import ASTSource

    module, name = kernel.split(":")
    fn = getattr(importlib.import_module(module), name)
    names = list(signature)
    return ASTSource(fn, dict(signature), {(names.index(k),): v for k, v in constants.items()},
                     {(i,): v for i, v in attrs})


def _compile(kernel: str, signature, constants, attrs, options, arch: int):
    import triton
    from triton.backends.compiler import GPUTarget

    return triton.compile(_source(kernel, signature, constants, attrs), target=GPUTarget("cuda", arch, 32),
                          options=dict(options))


def compile_key(kernel: str, signature, constants, attrs, options, arch: int) -> str:
    """The hash ``triton.compile`` files this specialization's ``sm_<arch>`` compile under in its
    cache, computed as it does without compiling: it covers the Triton build (its compiler sources
    and ``libtriton``), the kernel's source and every ``@triton.jit`` function and constexpr global it
    uses, signature, constants, attributes, options, target, ptxas version and Triton's
    cache-invalidating environment variables. Same key, same compiled code."""
    from triton._C.libtriton import get_cache_invalidating_env_vars
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.cache import get_cache_key

    src = _source(kernel, signature, constants, attrs)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    parsed = backend.parse_options(dict(options, **src.parse_options()))
    key = get_cache_key(src, backend, parsed, env_vars=get_cache_invalidating_env_vars())
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _dot_of(ttir: str) -> Optional[dict]:
    m = _DOT.search(ttir)
    if not m:
        return None
    return dict(m=int(m.group(1)), k=int(m.group(2)), n=int(m.group(5)), dtype=m.group(3))


def analyse(kernel: str, signature, constants, attrs, options, arch: int) -> dict:
    """Compile one specialization for ``sm_<arch>`` and read it; never raises (errors are reported)."""
    started = time.perf_counter()
    try:
        compiled = _compile(kernel, signature, constants, attrs, options, arch)
    except Exception as e:  # noqa: BLE001 - a compile error is the finding, reported per kernel
        return dict(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}",
                    seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    sass, usage = read_cubin(compiled.asm["cubin"])
    instructions = parse_sass(sass)
    ops = collections.Counter(op for _, op, _ in instructions)
    shared = int(compiled.metadata.shared)
    warps = int(options["num_warps"])
    blocks, limiter = blocks_per_sm(arch, usage.get("regs", 0), shared, warps)
    limits = ARCH_LIMITS.get(arch, ARCH_LIMITS[90])
    return dict(ok=True, seconds=seconds, regs=usage.get("regs"), spill_stores=ops["STL"], spill_loads=ops["LDL"],
                local_bytes=usage.get("local", 0), shared=shared, warps=warps, stages=int(options["num_stages"]),
                blocks_per_sm=blocks, limiter=limiter, occupancy=blocks * warps * 32 / limits["threads"],
                hgmma=ops["HGMMA"], hmma=ops["HMMA"], ffma=ops["FFMA"], instructions=len(instructions),
                tensor_core_inputs=tensor_core_inputs(instructions),
                dot=_dot_of(compiled.asm["ttir"]), main_loop=main_loop(instructions))


# ---- the anchor: a plain GEMM in the style of Triton's tutorial ---------------------------------

_ANCHOR_DTYPES = {"f16": "*fp16", "bf16": "*bf16", "f32": "*fp32"}


def anchor_args(dot: dict, warps: int, stages: int) -> tuple:
    """The anchor GEMM's specialization at this dot tile, dtype, warps and stages (``analyse``'s
    arguments but the target)."""
    pointer = _ANCHOR_DTYPES[dot["dtype"]]
    scalars = ("M", "N", "K", "stride_am", "stride_bk", "stride_cm")
    signature = {"a_ptr": pointer, "b_ptr": pointer, "c_ptr": pointer, **{s: "i32" for s in scalars},
                 "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr", "GROUP_M": "constexpr"}
    constants = dict(BLOCK_M=dot["m"], BLOCK_N=dot["n"], BLOCK_K=dot["k"], GROUP_M=8)
    attrs = [(i, [["tt.divisibility", 16]]) for i in range(9)]  # pointers and sizes multiples of 16, as a tuned GEMM
    options = dict(num_warps=warps, num_ctas=1, num_stages=stages, enable_fp_fusion=True)
    return "hgnet_kernels.aot_anchor:matmul", signature, constants, attrs, options


# ---- the report ---------------------------------------------------------------------------------

@dataclass
class Finding:
    launch: Launch
    arch: int
    result: dict
    anchor: Optional[dict] = None

    @property
    def loop_ratio(self) -> Optional[float]:
        loop = self.result.get("main_loop")
        base = (self.anchor or {}).get("main_loop")
        if not loop or not base:
            return None
        return loop["per_tensor_core"] / base["per_tensor_core"]

    def problems(self, max_loop_ratio: Optional[float]) -> List[str]:
        r = self.result
        if not r["ok"]:
            return [f"compile error: {r['error']}"]
        found = []
        if self.arch in (80, 90) and (r["spill_stores"] or r["spill_loads"]):
            found.append(f"spills ({r['spill_stores']} STL, {r['spill_loads']} LDL)")
        dot = r.get("dot")
        if self.arch == 90 and dot and dot["dtype"] in ("f16", "bf16") and not r["hgmma"]:
            found.append(f"{dot['dtype']} dot {dot['m']}×{dot['n']}×{dot['k']} without wgmma "
                         f"({r['hmma']} HMMA)")
        # The launch's data type is what its dot multiplies, natively: no fp16/bf16 tile widened
        # to fp32 (a stand-in's workaround) and no fp32 dot on TF32 (the default is IEEE).
        wanted = _DOT_INPUTS.get(self.launch.dtypes[0]) if self.launch.dtypes else None
        if self.arch in (80, 90) and dot and wanted is not None:
            inputs = r.get("tensor_core_inputs", [])
            if dot["dtype"] != wanted[0] or any(t != wanted[1] for t in inputs):
                found.append(f"{self.launch.dtypes[0]} launch's dot on {dot['dtype']} operands, tensor cores "
                             f"on {', '.join(inputs) or 'none'}")
        ratio = self.loop_ratio
        if (max_loop_ratio is not None and ratio is not None and self.arch == 90 and r["hgmma"]
                and not _is_stem(self.launch) and ratio > max_loop_ratio):
            found.append(f"main loop {ratio:.2f}× the anchor GEMM's instructions per tensor-core op")
        return found


# Compute dtype → (the dot's operand type in the TTIR, the tensor cores' operand type in the SASS).
_DOT_INPUTS = {"float16": ("f16", "f16"), "bfloat16": ("bf16", "bf16"), "float32": ("f32", None)}


def _is_stem(launch: Launch) -> bool:
    """The stem conv reading the 3-channel image: its K (27 or 12 values) is one or two steps of a
    flat loop, with no GEMM-like main loop to compare."""
    return launch.reads_input


class Ledger:
    """What earlier runs found for each compile, by ``compile_key`` (one file per Triton version
    under ``directory``). A specialization whose key is recorded is read from it instead of compiled:
    the same key is the same compile, so the same code. ``verify`` of the recorded ones, chosen at
    random, are compiled again anyway and must read exactly as recorded; ``save`` writes what this
    run compiled or read (``--update-ledger``), so the file holds exactly one run's compiles."""

    def __init__(self, directory: str):
        import triton

        self.version = triton.__version__
        self.build = _triton_build()
        self.path = os.path.join(directory, f"triton-{self.version}.json")
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            data = {}
        self.entries: Dict[str, dict] = data.get("entries", {})
        self.same_build = data.get("triton_build") == self.build  # else no key can match: all compile
        self.used: Dict[str, dict] = {}
        # (key, kernel, target, the fields its compile read differently) of each record compiled again
        self.checked: List[Tuple[str, str, int, List[str]]] = []

    @property
    def differences(self) -> List[str]:
        return [f"{kernel} for sm_{arch} (ledger key {key}): {', '.join(changed)}"
                for key, kernel, arch, changed in self.checked if changed]

    def save(self, command: str) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "w") as f:
            json.dump(dict(triton=self.version, triton_build=self.build, recorded_by=command,
                           entries={k: self.used[k] for k in sorted(self.used)}), f, indent=0, sort_keys=True)
            f.write("\n")


def _triton_build() -> str:
    """A digest of the Triton build's own part of every compile key (its version, compiler sources
    and ``libtriton``)."""
    from triton.runtime.cache import triton_key
    return hashlib.sha256(triton_key().encode("utf-8")).hexdigest()


def _recordable(result: dict) -> dict:
    """What a compile read, as the ledger records it: not its time, nor where it came from."""
    return {k: v for k, v in result.items() if k not in ("seconds", "from_ledger")}


def run_analysis(work: Sequence[Tuple[Launch, int]], jobs: int, progress=None, ledger: Optional[Ledger] = None,
                 verify: int = 0) -> List[Finding]:
    """Compile each (launch, target) (and the anchors of the dot kernels), ``jobs`` at a time, or read
    it from ``ledger``, and compile ``verify`` of those read again (``ledger.checked``)."""
    findings: List[Finding] = []
    recorded: List[Tuple[str, tuple, int]] = []  # (key, analyse's arguments but the target, target) of ledger reads
    total = len(work) * 2

    def read(args: tuple, arch: int) -> Tuple[Optional[str], Optional[dict]]:
        if ledger is None:
            return None, None
        key = compile_key(*args, arch)
        entry = ledger.entries.get(key)
        if entry is not None:
            recorded.append((key, args, arch))
            return key, dict(entry, seconds=0.0, from_ledger=True)
        return key, None

    def keep(key: Optional[str], result: dict) -> dict:
        if ledger is not None and key is not None:
            ledger.used[key] = _recordable(result)
        return result

    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init) as pool:
        futures = {}
        for launch, arch in work:
            key, result = read(launch.compile_args(), arch)
            if result is not None:
                findings.append(Finding(launch, arch, keep(key, result)))
            else:
                futures[pool.submit(analyse, *launch.compile_args(), arch)] = (launch, arch, key)
        for future in concurrent.futures.as_completed(futures):
            launch, arch, key = futures[future]
            findings.append(Finding(launch, arch, keep(key, future.result())))
            if progress:
                progress(len(findings), total)
        anchors: Dict[tuple, object] = {}  # a recorded result, or the future compiling it
        anchor_keys: Dict[tuple, Optional[str]] = {}
        for f in findings:
            dot, r = f.result.get("dot"), f.result
            if r["ok"] and dot and r.get("main_loop"):
                key = (dot["m"], dot["n"], dot["k"], dot["dtype"], r["warps"], r["stages"], f.arch)
                if key not in anchors:
                    args = anchor_args(dot, r["warps"], r["stages"])
                    anchor_keys[key], result = read(args, f.arch)
                    anchors[key] = result if result is not None else pool.submit(analyse, *args, f.arch)
        for done, (key, anchor) in enumerate(anchors.items(), 1):
            result = keep(anchor_keys[key], anchor.result() if isinstance(anchor, concurrent.futures.Future) else anchor)
            for f in findings:
                dot, r = f.result.get("dot"), f.result
                if r["ok"] and dot and (dot["m"], dot["n"], dot["k"], dot["dtype"], r.get("warps"), r.get("stages"),
                                        f.arch) == key:
                    f.anchor = result
            if progress:
                progress(len(work) + done * len(work) // max(len(anchors), 1), total)
        chosen = random.Random().sample(recorded, min(verify, len(recorded)))  # a fresh choice each run
        checks = [(key, arch, args, pool.submit(analyse, *args, arch)) for key, args, arch in chosen]
        for key, arch, args, future in checks:
            compiled, entry = _recordable(future.result()), ledger.entries[key]
            changed = sorted(k for k in set(compiled) | set(entry) if compiled.get(k) != entry.get(k))
            ledger.checked.append((key, args[0].split(":")[-1], arch, changed))
    order = {(id(launch), arch): i for i, (launch, arch) in enumerate(work)}
    findings.sort(key=lambda f: order[(id(f.launch), f.arch)])
    return findings


def _worker_init() -> None:
    os.environ.pop("TRITON_INTERPRET", None)


def _waves(launch: Launch, blocks: int, sms: int) -> Tuple[float, float]:
    programs = [g[0] * g[1] * g[2] for g in launch.grids]
    per_wave = max(blocks, 1) * sms
    return min(programs) / per_wave, max(programs) / per_wave


def _tile(launch: Launch) -> str:
    c = launch.constants
    if "BLOCK_M" in c:
        return f"{c['BLOCK_M']}×{c['BLOCK_N']}" + (f"×{c['BLOCK_K']}" if "BLOCK_K" in c else "")
    if "BLOCK_P" in c:
        return f"{c['BLOCK_P']}p×{c['BLOCK_C']}c"
    if "BLOCK_CO" in c:
        return f"{c['BLOCK_CO']}×{c['BLOCK_CI']}"
    return ""


def _ops(launch: Launch) -> str:
    from .plan_report import short_name
    first = short_name(launch.ops[0]) if launch.ops else ""
    return first + (f" +{len(launch.ops) - 1}" if len(launch.ops) > 1 else "")


def summary(findings: Sequence[Finding], max_loop_ratio: Optional[float]) -> dict:
    by_arch: Dict[int, dict] = {}
    for f in findings:
        s = by_arch.setdefault(f.arch, dict(distinct=0, launches=0, distinct_per_dtype=collections.Counter(),
                                            compiled=0, from_ledger=0, errors=0, spilling=0, dots=0,
                                            dots_without_wgmma=0,
                                            loop_ratios=[], seconds=0.0, problems=0))
        s["distinct"] += 1
        s["launches"] += len(f.launch.grids)
        s["distinct_per_dtype"].update(f.launch.dtypes)
        r = f.result
        s["seconds"] += r["seconds"]
        if not r["ok"]:
            s["errors"] += 1
            s["problems"] += 1
            continue
        s["compiled"] += 1
        s["from_ledger"] += bool(r.get("from_ledger"))
        s["spilling"] += bool(r["spill_stores"] or r["spill_loads"])
        if r.get("dot") and r["dot"]["dtype"] in ("f16", "bf16"):
            s["dots"] += 1
            s["dots_without_wgmma"] += not r["hgmma"]
        if f.loop_ratio is not None and r["hgmma"] and not _is_stem(f.launch):
            s["loop_ratios"].append(f.loop_ratio)
        s["problems"] += bool(f.problems(max_loop_ratio))
    for s in by_arch.values():
        ratios = sorted(s.pop("loop_ratios"))
        s["loop_ratio_median"] = ratios[len(ratios) // 2] if ratios else None
        s["loop_ratio_worst"] = ratios[-1] if ratios else None
        s["wgmma_conv_specializations"] = len(ratios)
        s["distinct_per_dtype"] = dict(s["distinct_per_dtype"])
    return dict(per_target=by_arch)


def _fmt(value, spec="") -> str:
    return "—" if value is None else format(value, spec)


def print_report(findings: Sequence[Finding], info: dict, max_loop_ratio, file=sys.stdout) -> None:
    print(f"AOT compile of the triton backend's launches — {info['cases']}; Triton {info['triton']}; "
          "compiled, not run", file=file)
    header = ("kernel", "ops", "tile", "w/s", "launches", "regs", "spills", "smem KB", "blk/SM", "occ", "waves",
              "HGMMA", "HMMA", "FFMA", "loop/TC", "× anchor", "problems")
    for arch in info["targets"]:
        rows = [header]
        for f in findings:
            if f.arch != arch:
                continue
            r, l = f.result, f.launch
            if not r["ok"]:
                rows.append((l.name, _ops(l), _tile(l), "", str(len(l.grids)), *[""] * 11, r["error"][:60]))
                continue
            lo, hi = _waves(l, r["blocks_per_sm"], info["gpus"][arch]["sms"])
            loop = r.get("main_loop")
            rows.append((l.name.replace("_kernel", ""), _ops(l), _tile(l), f"{r['warps']}/{r['stages']}", str(len(l.grids)),
                         str(r["regs"]), f"{r['spill_stores']}/{r['spill_loads']}" if r["spill_stores"] or r["spill_loads"] else "0",
                         f"{r['shared'] / 1024:.1f}", f"{r['blocks_per_sm']} ({r['limiter'][:4]})", f"{r['occupancy']:.0%}",
                         f"{lo:.2f}" if lo == hi else f"{lo:.2f}–{hi:.2f}", str(r["hgmma"]), str(r["hmma"]), str(r["ffma"]),
                         _fmt(loop and loop["per_tensor_core"], ".1f"), _fmt(f.loop_ratio, ".2f"),
                         "; ".join(f.problems(max_loop_ratio))))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        gpu = info["gpus"][arch]
        print(f"\nsm_{arch}, launches configured for {gpu['name']} ({gpu['sms']} SMs):", file=file)
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=file)
    print(file=file)
    for arch, t in info["summary"]["per_target"].items():
        per_dtype = ", ".join(f"{k} {v}" for k, v in sorted(t["distinct_per_dtype"].items()))
        print(f"sm_{arch}: {t['distinct']} distinct specializations from {t['launches']} launches ({per_dtype}); "
              f"{t['compiled']} compiled" + (f" ({t['from_ledger']} read from the ledger)" if t["from_ledger"] else "")
              + f", {t['errors']} errors, {t['spilling']} spilling, "
              + (f"{t['dots_without_wgmma']} of {t['dots']} fp16/bf16 dots without wgmma" if arch == 90 else
                 f"{t['dots']} fp16/bf16 dots")
              + (f", wgmma conv main loop × anchor: median {t['loop_ratio_median']:.2f}, worst "
                 f"{t['loop_ratio_worst']:.2f} over {t['wgmma_conv_specializations']}"
                 if t["loop_ratio_median"] is not None else "")
              + f"; {t['seconds']:.0f} s compiling", file=file)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .models import MODEL_NAMES
    from .verify import DTYPES
    gpus = list(configs.known_gpus())
    parser.add_argument("--target", default="90,80", help="compute capabilities to compile for, e.g. 90,80,89 "
                        "(default 90,80)")
    parser.add_argument("--gpu", choices=gpus, default="H100",
                        help="the GPU whose SM count configures the launches of its arch's target (default H100); "
                             "another target's launches are configured for the first GPU of that arch in "
                             "configs/devices.json (sm_80: A100)")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=list(DEFAULT_MODELS))
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=list(DEFAULT_DTYPES))
    parser.add_argument("--batches", nargs="+", type=cli.at_least(1), default=list(DEFAULT_BATCHES))
    parser.add_argument("--sizes", nargs="+", type=cli.at_least(32, " pixels"), default=[224],
                        help="square input sizes (default 224)")
    parser.add_argument("--jobs", type=cli.at_least(1), default=os.cpu_count() or 1,
                        help="compiles at a time (default: the CPU count)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 on a compile error, a spill on sm_90/sm_80, or an fp16/bf16 dot on sm_90 "
                             "without wgmma")
    parser.add_argument("--max-loop-ratio", type=float, default=None,
                        help="with --check: also fail on an sm_90 wgmma conv whose main loop issues more than this "
                             "many times the anchor GEMM's instructions per tensor-core op")
    parser.add_argument("--cold", action="store_true", help="compile into an empty Triton cache (a cold start)")
    parser.add_argument("--list-only", action="store_true",
                        help="only count the distinct specializations the cases launch; compile nothing")
    parser.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    parser.add_argument("--ledger", metavar="DIR",
                        help="read each compile whose Triton cache key (Triton build, kernel sources, "
                             "specialization, options, target) is recorded in DIR/triton-<version>.json instead "
                             "of compiling it; compile the rest")
    parser.add_argument("--verify", type=cli.at_least(0), default=0, metavar="N",
                        help="with --ledger: compile N of the recorded compiles (chosen at random) anyway and exit 1 "
                             "if any reads differently from its record")
    parser.add_argument("--update-ledger", action="store_true",
                        help="with --ledger: rewrite the version's file with exactly this run's compiles")


def _targets(text: str) -> List[int]:
    try:
        targets = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise cli.UserError(f"--target takes compute capabilities like 90,80; got {text!r}") from None
    unknown = [t for t in targets if t not in ARCH_LIMITS]
    if not targets or unknown:
        raise cli.UserError(f"--target: unknown compute capability {unknown or text!r}; "
                            f"choose from {','.join(map(str, ARCH_LIMITS))}")
    return targets


def _gpu_for(target: int, named: str) -> Tuple[str, int]:
    """The GPU whose SM count configures the launches compiled for ``sm_<target>``: ``named`` when it
    is of that arch, else the first GPU of ``devices.json`` that is, else ``named``'s SM count (an
    arch's tiles differ: an H100's launches are not what an A100 runs)."""
    gpus = configs.known_gpus()
    if gpus[named]["arch"] == f"sm{target}":
        return named, int(gpus[named]["sms"])
    same = next((name for name, gpu in gpus.items() if gpu["arch"] == f"sm{target}"), None)
    return (same, int(gpus[same]["sms"])) if same else (f"an sm_{target} GPU", int(gpus[named]["sms"]))


def run(args: argparse.Namespace) -> int:
    import triton

    targets = _targets(args.target)
    if (args.verify or args.update_ledger) and not args.ledger:
        raise cli.UserError("--verify and --update-ledger need --ledger DIR (where the recorded compiles are)")
    _check_not_interpreting()
    ledger = Ledger(args.ledger) if args.ledger and not args.list_only else None
    cold = tempfile.TemporaryDirectory(prefix="hgk-aot-cache-") if args.cold else None
    if cold:
        os.environ["TRITON_CACHE_DIR"] = cold.name
    started = time.perf_counter()
    gpus, work = {}, []
    for target in targets:  # each target's launches, configured as on a GPU of that arch
        name, sms = _gpu_for(target, args.gpu)
        gpus[target] = dict(name=name, sms=sms)
        launches = list(collect(args.models, args.dtypes, args.batches, args.sizes, target, sms).values())
        work.extend((launch, target) for launch in launches)
        if args.list_only:
            counts = collections.Counter(dtype for launch in launches for dtype in launch.dtypes)
            print(f"sm_{target} ({name}): {len(launches)} distinct specializations from "
                  f"{sum(len(l.grids) for l in launches)} launches ({'; '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}) "
                  f"for {', '.join(args.models)} at batches {', '.join(map(str, args.batches))}, "
                  f"{', '.join(map(str, args.sizes))} px")
    collected = time.perf_counter() - started
    if args.list_only:
        return 0

    def progress(done, total):
        if sys.stderr.isatty():
            print(f"\rcompiling {done}/{total}", end="", file=sys.stderr, flush=True)

    findings = run_analysis(work, args.jobs, progress, ledger, args.verify)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    info = dict(cases=f"models {' '.join(args.models)}; {' '.join(args.dtypes)}; batches "
                      f"{' '.join(map(str, args.batches))}; {' '.join(map(str, args.sizes))} px",
                gpus=gpus, targets=targets, triton=triton.__version__,
                summary=summary(findings, args.max_loop_ratio))
    print_report(findings, info, args.max_loop_ratio)
    print(f"collected in {collected:.1f} s; wall time {elapsed:.1f} s with {args.jobs} jobs"
          + (" (cold cache)" if cold else ""))
    differences = ledger.differences if ledger is not None else []
    if ledger is not None:
        for key, kernel, arch, changed in ledger.checked:
            state = f"differs in {', '.join(changed)}" if changed else "matches"
            print(f"ledger entry {key[:12]} ({kernel}, sm_{arch}) compiled again: {state}")
        read = sum(bool(f.result.get("from_ledger")) for f in findings)
        print(f"ledger {ledger.path}: {read} of {len(findings)} kernels read from it, {len(findings) - read} compiled; "
              f"{len(ledger.checked)} recorded compiles (kernels and anchors) compiled again to verify it")
        info["ledger"] = dict(path=ledger.path, same_build=ledger.same_build, read=read, compiled=len(findings) - read,
                              verified=len(ledger.checked), differences=differences)
        if args.update_ledger:
            ledger.save("python -m hgnet_kernels aot " + " ".join(sys.argv[1:]))
            print(f"ledger {ledger.path} rewritten: {len(ledger.used)} compiles")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(info, collect_seconds=collected, wall_seconds=elapsed, jobs=args.jobs, cold=bool(cold),
                           kernels=[dict(asdict(x.launch), target=x.arch, result=x.result, anchor=x.anchor,
                                         loop_ratio=x.loop_ratio, problems=x.problems(args.max_loop_ratio))
                                    for x in findings]), f, indent=1, default=str)
    if cold:
        cold.cleanup()
    if differences:
        print("the ledger does not hold what these compiles produce (a wrong record, or a compile that is not "
              "deterministic); rewrite it with --update-ledger after finding out why:\n  " + "\n  ".join(differences),
              file=sys.stderr)
        return 1
    failed = [f for f in findings if f.problems(args.max_loop_ratio)]
    if args.check and failed:
        print(f"AOT check failed: {len(failed)} kernel(s) with problems (see the last column)", file=sys.stderr)
        return 1
    return 0
