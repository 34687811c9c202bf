"""Backends: the plan (``plan.py``) executed through one kernel family.

A backend is a name for a kernel family — ``torch`` (``kernels/pytorch.py``), ``triton``
(``kernels/triton/``), ``cuda`` (``kernels/cuda/``) — and ``Backend`` runs any plan through any
of them: one executor, one op table. Every family exposes the same names::

    NAME, IN_PLACE, OPTIONS, CUDA_GRAPHS, SUPPORTS, unavailable_reason(device, dtype),
    pack_conv_weight(w), pack_depthwise_weight(w),
    conv_bn_act(x, w, b, stride, relu, out), aggregation_ese(x, w, b, out, psum=) -> (y, psum),
    partial_sums_shape(n, hw, c_in, c_out, dtype, device, **options) -> (N, T, C),
    depthwise_conv(x, w, b, stride, out), max_pool(x, out), ese_gate(psum, w, b, hw),
    scale_residual(y, gate, identity, out)

``SUPPORTS`` is the family's capability table (op kind → ``spec.Supports``): a plan op outside
it is refused up front, naming the op and what the family does not run
(``spec.not_supported_reasons``). ``out`` is a destination view (a slot of an HG-Block's concat
buffer) or None; each op returns the tensor holding its result, which later reads of the same
slice receive. Families import lazily, so ``import hgnet_kernels`` needs neither Triton nor a compiler.

A family with ``RESOLVES`` (Triton, CUDA) also has ``resolve_conv_bn_act``, ``resolve_aggregation_ese``,
``resolve_depthwise``, ``resolve_max_pool``, ``resolve_ese_gate`` and ``resolve_scale_residual``
(the same arguments; they return the resolved launch — a ``spec.Launch`` or ``spec.ConvLaunch`` —
and the destination): the executor resolves each op once per input shape, strides, dtype and
device — checks, configs, grids, workspace shapes — at the first run of that input, and later runs
replay those launches.

On CUDA, families that allow it run under CUDA graphs (``cuda_graph``, on by default): one graph
per input shape, strides, dtype and outputs asked for replays the whole plan in one launch; the
first ``max_graphs`` of them are kept, and further shapes run as plain launches.
"""
from __future__ import annotations

import collections
import importlib
import logging
import threading
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .kernels import spec
from .plan import Plan, Ref

log = logging.getLogger(__name__)

BACKENDS = {"torch": "hgnet_kernels.kernels.pytorch", "triton": "hgnet_kernels.kernels.triton",
            "cuda": "hgnet_kernels.kernels.cuda"}

# "auto" tries these in order; the first that can run on the device wins.
AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("torch",)}

# Options of the executor itself, for families that allow CUDA graphs.
GRAPH_OPTIONS = {"cuda_graph": (bool, "capture and replay CUDA graphs (default: on, on CUDA)"),
                 "max_graphs": (int, "graphs kept, one per input shape; further shapes run without")}


# Input shapes whose bound steps a backend keeps (a detector fed many sizes resolves again past this).
MAX_RESOLVED = 64


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


def family(name: str):
    """The kernel family module of backend ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {['auto', *BACKENDS]}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {e}") from e


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {['auto', *BACKENDS]}")
    try:
        return family(name).unavailable_reason(device, dtype)
    except BackendUnavailable as e:
        return str(e)


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Turn ``"auto"`` into a concrete backend and check that the chosen one can run."""
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER.get(device.type, ("torch",)):
            reason = unavailable_reason(candidate, device, dtype)
            if reason is None:
                return candidate
            reasons.append(f"{candidate}: {reason}")
        raise BackendUnavailable(f"no backend can run on {device} with {dtype}: " + "; ".join(reasons))
    reason = unavailable_reason(name, device, dtype)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is unavailable on {device} ({dtype}): {reason}")
    return name


def options_of(name: str) -> Dict[str, Tuple[type, str]]:
    """Every keyword option backend ``name`` takes: (type, description)."""
    fam = family(name)
    return {**(GRAPH_OPTIONS if fam.CUDA_GRAPHS else {}), **fam.OPTIONS}


def check_options(name: str, requested: str, device: torch.device, options: dict) -> None:
    """Every option is one the backend takes, with a value of the right type; else a ``ValueError``
    that names the valid options (raised before anything is built)."""
    valid = options_of(name)
    chosen = f"backend {name!r}" + (f" (chosen by {requested!r} on {device.type})" if requested != name else "")
    for key, value in options.items():
        if key not in valid:
            listing = ", ".join(f"{k} ({doc})" for k, (_, doc) in valid.items()) or "none"
            hint = ""
            if key in GRAPH_OPTIONS and device.type != "cuda":
                hint = "; CUDA graphs need a CUDA device and the triton or cuda backend"
            raise ValueError(f"{chosen} does not take the option {key!r}{hint}. Its options: {listing}")
        kind, doc = valid[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"option {key}={value!r} of {chosen}: expected {kind.__name__} ({doc})")


# ---- the executor ---------------------------------------------------------------------------------

class _Refs:
    """Integer ids for every slice the plan reads or writes, and how each is materialised. Families
    that write in place (``fam.IN_PLACE``) get concat buffers allocated up front, their slots
    written through views; the others (oneDNN, cuDNN) return fresh tensors, and a read of a whole
    concat buffer concatenates its slots then."""

    def __init__(self, plan: Plan, in_place: bool):
        self.plan, self.in_place = plan, in_place
        self.ids: Dict[Ref, int] = {}
        for op in plan.ops:
            for ref in (*op.reads, *op.writes):
                self.ids.setdefault(ref, len(self.ids))
        self.refs = list(self.ids)
        self.slots: Dict[str, List[int]] = {name: [] for name in plan.concat_buffers}
        for op in plan.ops:
            for ref in op.writes:
                if ref.buffer in self.slots:
                    self.slots[ref.buffer].append(self.ids[ref])
        for name, ids in self.slots.items():
            ids.sort(key=lambda i: self.refs[i].start)

    def ref(self, i: int) -> Ref:
        return self.refs[i]

    def id(self, ref: Ref) -> int:
        return self.ids[ref]


class _Env:
    """The tensors of one run, by ref id."""
    __slots__ = ("refs", "values", "buffers", "spatial")

    def __init__(self, refs: _Refs, x: torch.Tensor):
        plan = refs.plan
        self.refs = refs
        self.values: List[Optional[torch.Tensor]] = [None] * len(refs.refs)
        self.values[refs.id(plan.buffers[plan.input].whole())] = x
        self.spatial = plan.spatial(x.shape[2], x.shape[3])
        self.buffers: Dict[str, torch.Tensor] = {}
        if refs.in_place:
            for name in plan.concat_buffers:
                self.buffers[name] = torch.empty((x.shape[0], plan.buffers[name].channels, *self.spatial[name]),
                                                 device=x.device, dtype=x.dtype, memory_format=torch.channels_last)

    def read(self, i: int) -> torch.Tensor:
        value = self.values[i]
        if value is None:  # a whole concat buffer
            ref = self.refs.ref(i)
            if self.refs.in_place:
                value = self.buffers[ref.buffer]
            else:
                value = torch.cat([self.values[j] for j in self.refs.slots[ref.buffer]], dim=1)
        return value

    def out(self, i: int) -> Optional[torch.Tensor]:
        """The destination view of a concat buffer's slot; None: the op allocates its output."""
        if not self.refs.in_place:
            return None
        ref = self.refs.ref(i)
        whole = self.buffers.get(ref.buffer)
        return None if whole is None else whole[:, ref.start:ref.stop]

    def wrote(self, i: int, result: torch.Tensor) -> None:
        self.values[i] = result


Step = Callable[[_Env], None]
# Given the environment of the first run of an input shape, the step that runs the op for that
# shape: a family that resolves its launches (``RESOLVES``: ``resolve_*`` functions) checks and
# configures them once here; for the others it is the plain call.
Binder = Callable[[_Env], Step]


def _plain(step: Step) -> Binder:
    return lambda env: step


def _resolves(fam) -> bool:
    return getattr(fam, "RESOLVES", False)


def _affine(module) -> Optional[Tuple[float, float]]:
    """The folded LAB's (scale, shift) as Python floats, read once at build time."""
    return None if module.lab is None else (float(module.lab[0]), float(module.lab[1]))


def _epilogue_options(op, module) -> dict:
    """The keyword arguments of the op's geometry and epilogue (``SUPPORTS`` has refused what a
    family does not run before any step is built)."""
    options = dict(padding=op.padding, affine=_affine(module) if op.affine else None)
    if op.kind == "depthwise":
        options["relu"] = op.relu
    return options


def _conv_step(fam, op, net, ids, options) -> Binder:
    module = net.get_submodule(op.name)
    weight = (fam.pack_depthwise_weight if op.kind == "depthwise" else fam.pack_conv_weight)(module.weight)
    bias, source, target, stride, relu = module.bias, ids(op.reads[0]), ids(op.writes[0]), op.stride_arg, op.relu
    extra = _epilogue_options(op, module)
    if op.kind == "depthwise":
        if _resolves(fam):
            def bind(env: _Env) -> Step:
                launch = fam.resolve_depthwise(env.read(source), weight, bias, stride, out=env.out(target), **extra)[0]

                def step(env: _Env) -> None:
                    out = launch.output(env.out(target), weight.device)
                    launch(env.read(source), weight, bias, out)
                    env.wrote(target, out)
                return step
            return bind

        def step(env: _Env) -> None:
            env.wrote(target, fam.depthwise_conv(env.read(source), weight, bias, stride, out=env.out(target), **extra))
        return _plain(step)
    residual = ids(op.reads[-1]) if op.residual else None
    if _resolves(fam):
        def bind(env: _Env) -> Step:
            launch = fam.resolve_conv_bn_act(env.read(source), weight, bias, stride, relu, env.out(target),
                                             residual=None if residual is None else env.read(residual),
                                             **extra, **options)[0]
            if residual is None:
                def step(env: _Env) -> None:
                    env.wrote(target, launch(env.read(source), weight, bias, env.out(target))[0])
            else:
                def step(env: _Env) -> None:
                    env.wrote(target, launch(env.read(source), weight, bias, env.out(target), env.read(residual))[0])
            return step
        return bind
    if residual is not None:
        def step(env: _Env) -> None:
            env.wrote(target, fam.conv_bn_act(env.read(source), weight, bias, stride, relu, out=env.out(target),
                                              residual=env.read(residual), **extra, **options))
    else:
        def step(env: _Env) -> None:
            env.wrote(target, fam.conv_bn_act(env.read(source), weight, bias, stride, relu, out=env.out(target),
                                              **extra, **options))
    return _plain(step)


def _aggregation_step(fam, op, net, ids, options) -> Binder:
    module = net.get_submodule(op.name)
    weight, bias, source = fam.pack_conv_weight(module.weight), module.bias, ids(op.reads[0])
    y, sums = map(ids, op.writes)
    c_in, c_out = op.reads[0].channels, op.writes[1].channels
    if _resolves(fam):
        def bind(env: _Env) -> Step:
            # The resolved launch allocates the partial sums in the family's layout (its
            # partial_sums_shape: the same launch config and row tiles).
            launch = fam.resolve_aggregation_ese(env.read(source), weight, bias, out=env.out(y), **options)[0]

            def step(env: _Env) -> None:
                out, psum = launch(env.read(source), weight, bias, env.out(y))
                env.wrote(y, out)
                env.wrote(sums, psum)
            return step
        return bind

    def step(env: _Env) -> None:
        x = env.read(source)
        h, w = env.spatial[op.writes[1].buffer]
        # The plan's partial-sum buffer, in the layout the family says it writes (and checks).
        psum = torch.empty(fam.partial_sums_shape(x.shape[0], h * w, c_in, c_out, x.dtype, x.device, **options),
                           device=x.device, dtype=torch.float32)
        out, psum = fam.aggregation_ese(x, weight, bias, out=env.out(y), psum=psum, **options)
        env.wrote(y, out)
        env.wrote(sums, psum)
    return _plain(step)


def _ese_gate_step(fam, op, net, ids, options) -> Binder:
    module = net.get_submodule(op.name)
    weight, bias, sums, gate = module.ese_weight, module.ese_bias, ids(op.reads[0]), ids(op.writes[0])
    summed = op.reads[0].buffer
    if _resolves(fam):
        def bind(env: _Env) -> Step:
            h, w = env.spatial[summed]  # the mean is over the summed map's pixels
            launch = fam.resolve_ese_gate(env.read(sums), weight, bias, h * w)[0]

            def step(env: _Env) -> None:
                out = launch.output(None, weight.device)
                launch(env.read(sums), weight, bias, out)
                env.wrote(gate, out)
            return step
        return bind

    def step(env: _Env) -> None:
        h, w = env.spatial[summed]
        env.wrote(gate, fam.ese_gate(env.read(sums), weight, bias, h * w))
    return _plain(step)


def _scale_residual_step(fam, op, net, ids, options) -> Binder:
    y, gate, target = ids(op.reads[0]), ids(op.reads[1]), ids(op.writes[0])
    identity = ids(op.reads[2]) if op.residual else None
    if _resolves(fam):
        def bind(env: _Env) -> Step:
            launch = fam.resolve_scale_residual(env.read(y), env.read(gate),
                                                None if identity is None else env.read(identity),
                                                out=env.out(target))[0]
            ident = y if identity is None else identity  # the kernel's unused pointer when off

            def step(env: _Env) -> None:
                source = env.read(y)
                out = launch.output(env.out(target), source.device)
                launch(source, env.read(gate), env.read(ident), out)
                env.wrote(target, out)
            return step
        return bind

    def step(env: _Env) -> None:
        env.wrote(target, fam.scale_residual(env.read(y), env.read(gate),
                                             None if identity is None else env.read(identity), out=env.out(target)))
    return _plain(step)


def _max_pool_step(fam, op, net, ids, options) -> Binder:
    source, target = ids(op.reads[0]), ids(op.writes[0])
    extra = dict(kernel=op.kernel, stride=op.stride_arg, padding=op.padding, zero_pad=op.zero_pad)
    if _resolves(fam):
        def bind(env: _Env) -> Step:
            launch = fam.resolve_max_pool(env.read(source), out=env.out(target), **extra)[0]

            def step(env: _Env) -> None:
                x = env.read(source)
                out = launch.output(env.out(target), x.device)
                launch(x, out)
                env.wrote(target, out)
            return step
        return bind

    def step(env: _Env) -> None:
        env.wrote(target, fam.max_pool(env.read(source), out=env.out(target), **extra))
    return _plain(step)


def _copy_step(fam, op, net, ids, options) -> Binder:
    source, target = ids(op.reads[0]), ids(op.writes[0])

    def step(env: _Env) -> None:
        out = env.out(target)
        env.wrote(target, out.copy_(env.read(source)) if out is not None else env.read(source).clone())
    return _plain(step)


def _head_step(fam, op, net, ids, options) -> Binder:
    source, target = ids(op.reads[0]), ids(op.writes[0])
    pool, last, fc_weight, fc_bias = net.global_pool, net.last_conv_weight, net.fc_weight, net.fc_bias
    affine = None if net.head_lab is None else (float(net.head_lab[0]), float(net.head_lab[1]))

    def step(env: _Env) -> None:
        env.wrote(target, spec.head_reference(env.read(source), pool, last, affine, fc_weight, fc_bias))
    return _plain(step)


# The op table: how each kind of plan op calls a family. It exists once, for every family.
OP_TABLE = {"conv": _conv_step, "depthwise": _conv_step, "aggregation": _aggregation_step,
            "ese_gate": _ese_gate_step, "scale_residual": _scale_residual_step, "max_pool": _max_pool_step,
            "copy": _copy_step, "head": _head_step}


class Backend:
    """``plan`` run through backend ``name``'s kernel family on the folded weights ``net``.

    ``cuda_graph``: None (the default) captures graphs on a CUDA device for families that allow
    it; True insists (an error off CUDA); False never does. A graph replays the whole plan as one
    launch; its outputs live in static buffers, so the outputs asked for are cloned out (and only
    those)."""

    def __init__(self, name: str, net, plan: Plan, device: torch.device, cuda_graph: Optional[bool] = None,
                 max_graphs: int = 8, **family_options):
        fam = family(name)
        if cuda_graph and device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a CUDA device; the model is on {device}")
        if cuda_graph and not fam.CUDA_GRAPHS:
            raise ValueError(f"backend {name!r} does not capture CUDA graphs")
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        for op in plan.ops:
            reasons = spec.not_supported_reasons(op, fam.SUPPORTS)
            if reasons:
                raise BackendUnavailable(f"backend {name!r} cannot run {op.name}: {', '.join(reasons)} exactly; "
                                         f"use backend='torch'")
        self.name, self.plan = name, plan
        self._refs = _Refs(plan, fam.IN_PLACE)
        self.binders: List[Binder] = [OP_TABLE[op.kind](fam, op, net, self._refs.id, family_options)
                                      for op in plan.ops]
        # The steps bound for each input (shape, strides, dtype, device) seen, in plan order (as
        # far as the runs of that input went), most recently used last; up to MAX_RESOLVED inputs.
        self._resolved: "collections.OrderedDict[tuple, List[Step]]" = collections.OrderedDict()
        self._outputs = [self._refs.id(plan.buffers[b].whole()) for b in (*plan.features, plan.output)]
        # The op after which each output exists: a run that needs only early outputs stops there.
        writers = {self._refs.id(ref): index for index, op in enumerate(plan.ops) for ref in op.writes}
        self._produced_at = [writers[i] for i in self._outputs]
        # Drop every intermediate right after its last read, as eager code would: peak memory stays
        # that of one block, and the allocator reuses memory instead of mapping fresh pages.
        last_use = {}
        for index, op in enumerate(plan.ops):
            for ref in (*op.reads, *op.writes):
                last_use[self._refs.id(ref)] = index
                for slot in self._refs.slots.get(ref.buffer, ()):  # a whole concat reads its slots
                    if ref in op.reads:
                        last_use[slot] = index
        self._release: List[List[int]] = [[] for _ in plan.ops]
        for ref_id, index in last_use.items():
            if ref_id not in self._outputs:
                self._release[index].append(ref_id)
        self.cuda_graph = (device.type == "cuda" and fam.CUDA_GRAPHS) if cuda_graph is None else cuda_graph
        self.max_graphs = max_graphs
        self._graphs: Dict[tuple, tuple] = {}
        self._graph_pool = None  # one memory pool for every captured shape (made at the first capture)
        self._graph_lock = threading.Lock()
        self._resolved_lock = threading.Lock()
        self._warned_full = False

    def _execute(self, x: torch.Tensor, outputs: Tuple[int, ...]) -> List[Optional[torch.Tensor]]:
        """Runs the plan as far as ``outputs`` (indices into [stage maps…, head output]) need: the
        steps bound for this input's shape, binding (resolving) the missing ones as it goes."""
        env = _Env(self._refs, x)
        values = env.values
        last = max(self._produced_at[i] for i in outputs)
        key = (tuple(x.shape), x.stride(), x.dtype, x.device)
        with self._resolved_lock:
            steps = self._resolved.get(key)
            if steps is not None:
                self._resolved.move_to_end(key)
        if steps is not None and len(steps) > last:
            for step, release in zip(steps[:last + 1], self._release):
                step(env)
                for ref_id in release:
                    values[ref_id] = None
            return [values[self._outputs[i]] for i in outputs]
        bound = list(steps or ())
        for index, release in enumerate(self._release[:last + 1]):
            if index == len(bound):
                bound.append(self.binders[index](env))
            bound[index](env)
            for ref_id in release:
                values[ref_id] = None
        with self._resolved_lock:
            if len(bound) > len(self._resolved.get(key, ())):
                self._resolved[key] = bound
            while len(self._resolved) > MAX_RESOLVED:
                self._resolved.popitem(last=False)
        return [values[self._outputs[i]] for i in outputs]

    def run(self, x: torch.Tensor, outputs: Tuple[int, ...]) -> List[torch.Tensor]:
        """``outputs`` (indices into [stage 1..4 maps, head output]) for an NCHW input in the
        compute dtype."""
        if not self.cuda_graph:
            return self._execute(x, outputs)
        key = (tuple(x.shape), tuple(x.stride()), x.dtype, outputs)
        with self._graph_lock:  # static input/output buffers are shared by every caller
            entry = self._graphs.get(key)
            if entry is None:
                if len(self._graphs) >= self.max_graphs:
                    # Beyond max_graphs shapes, plain launches: recapturing on every new shape (a
                    # detector fed many sizes) would cost far more than the graphs save.
                    if not self._warned_full:
                        log.warning("%s backend: %d CUDA graphs cached (max_graphs); further input shapes run "
                                    "without a graph", self.name, self.max_graphs)
                        self._warned_full = True
                    return self._execute(x, outputs)
                entry = self._capture(x, outputs)
                self._graphs[key] = entry
            graph, static_in, static_out = entry
            static_in.copy_(x)
            graph.replay()
            return [t.clone() for t in static_out]  # the next replay overwrites static_out

    def _capture(self, x: torch.Tensor, outputs: Tuple[int, ...]):
        log.info("%s backend: capturing a CUDA graph for input %s %s (%d cached)", self.name, tuple(x.shape),
                 x.dtype, len(self._graphs))
        static_in = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
        static_in.copy_(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # compiles every kernel before capture
            self._execute(static_in, outputs)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # One pool for all shapes: a graph's intermediates are memory the other graphs' captures may
        # reuse. That is safe here because replays never overlap (they run under the lock), each
        # replay writes every intermediate before reading it, and the outputs are cloned out right
        # after it; a private pool per graph would hold max_graphs copies of the intermediates.
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self._graph_pool):
            static_out = self._execute(static_in, outputs)
        return graph, static_in, static_out
