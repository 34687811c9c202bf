"""The execution plan: the one description of a folded network that every backend runs.

Folding (``folding.py``) turns an eager model into parameters; ``build_plan`` lowers them into an
ordered list of op records. Each ``Op`` names its kind, the folded module holding its parameters
(``name``, a path into the ``FoldedNet``), the buffer slices it reads and writes (``Ref``), and
its geometry and epilogue (kernel, stride (sh, sw), padding, groups, ReLU, a scalar affine after
the ReLU, a residual add). Buffers are declared once with their channel count; their spatial size
follows from the input size by walking the ops (``Plan.shapes``). The output-size formula of a
window is ``output_size`` here, and nowhere else: the kernels' argument checks (``spec``) read it.

An HG-Block's concatenation is a buffer with one slot per producer: the block input (slot 0,
written by the previous block, the downsample or the stem pool) and each layer's output; the
aggregation reads the whole buffer, so the concat is never copied.

The plan is also the kernel engineer's map: ``Plan.costs`` gives each op's MACs and bytes, from
which ``python -m hgnet_kernels plan`` prints intensities, roofline times and launch grids.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple, Union

OP_KINDS = ("conv", "depthwise", "max_pool", "copy", "aggregation", "ese_gate", "scale_residual", "head")

# Kinds whose output keeps the input's spatial size.
_SAME_SIZE = ("copy", "aggregation", "scale_residual")

Stride = Tuple[int, int]  # (sh, sw): PP-OCR's text-recognition downsamples stride (2, 1) and (1, 2)


def stride_pair(stride: Union[int, Stride]) -> Stride:
    """(sh, sw) of a stride given as one int (square) or a pair."""
    if isinstance(stride, int):
        return stride, stride
    sh, sw = stride
    return int(sh), int(sw)


def output_size(h: int, w: int, kernel: int, stride: Union[int, Stride],
                padding: Tuple[int, int, int, int]) -> Tuple[int, int]:
    """(Ho, Wo) of a k×k window with stride s or (sh, sw) over an h×w map zero-padded by (top,
    bottom, left, right): the one output-size formula of the library (the spec checks, the plan
    walk and the tests read it; the CUDA bindings recompute it only to bound their writes)."""
    sh, sw = stride_pair(stride)
    top, bottom, left, right = padding
    return (h + top + bottom - kernel) // sh + 1, (w + left + right - kernel) // sw + 1


def stride_label(stride: Union[int, Stride]) -> str:
    """``2`` for a square stride, ``2x1`` for (sh, sw) = (2, 1): in op labels and config keys (a
    square stride keeps the label, and so the tuned keys, it always had)."""
    sh, sw = stride_pair(stride)
    return f"{sh}" if sh == sw else f"{sh}x{sw}"


# The (N, T, C) shape of an aggregation's ESE partial sums, which its kernel family decides: the
# family's ``partial_sums_shape`` bound to a dtype, device and options, called (n, hw, c_in, c_out).
PartialSumsShape = Callable[[int, int, int, int], Tuple[int, int, int]]


@dataclass(frozen=True)
class Ref:
    """Channels ``[start, stop)`` of a buffer."""
    buffer: str
    start: int
    stop: int

    @property
    def channels(self) -> int:
        return self.stop - self.start

    def __str__(self) -> str:
        return f"{self.buffer}[{self.start}:{self.stop}]"


@dataclass(frozen=True)
class Buffer:
    """A tensor the plan reads or writes. ``kind``: ``"map"`` (N, C, H, W) in the compute dtype,
    channels_last; ``"partial_sums"`` (N, T, C) fp32, the ESE partial sums that the aggregation
    ``producer`` writes: T rows per image adding up to its channel sums over the map's H·W pixels,
    T and which pixels each row sums being the kernel family's (its ``partial_sums_shape``; the
    family's ``ese_gate`` adds the rows); ``"gate"`` (N, C) fp32 (the ESE gate); ``"vector"`` (N, C)
    in the compute dtype (the head's output). ``slots`` > 1: several ops write channel slices of it
    (a concat buffer)."""
    name: str
    channels: int
    kind: str = "map"
    slots: int = 1
    producer: str = ""

    def whole(self) -> Ref:
        return Ref(self.name, 0, self.channels)


@dataclass(frozen=True)
class Op:
    """One step. ``name`` is the folded module that holds its parameters, ``params`` the paths of
    the parameter tensors it reads. ``reads[0]`` is the main input; with ``residual`` the last
    read is added after the epilogue. ``padding`` is (top, bottom, left, right); the epilogue is
    bias, then ReLU (``relu``), then y = scale·y + shift (``affine``, the scalars of the folded
    module's LAB), then the residual."""
    kind: str
    name: str
    reads: Tuple[Ref, ...]
    writes: Tuple[Ref, ...]
    params: Tuple[str, ...] = ()
    kernel: int = 1
    stride: Stride = (1, 1)
    padding: Tuple[int, int, int, int] = (0, 0, 0, 0)
    groups: int = 1
    relu: bool = False
    affine: bool = False
    residual: bool = False
    zero_pad: bool = False   # max pool: padded taps are zeros in the max (timm's v2 stem), not ignored

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        if self.kind in _SAME_SIZE:
            return h, w
        return output_size(h, w, self.kernel, self.stride, self.padding)

    @property
    def stride_arg(self) -> Union[int, Stride]:
        """The stride as the family functions take it: an int when square (every conv and pool
        launcher's argument), (sh, sw) otherwise (the depthwise ops, and PyTorch's)."""
        sh, sw = self.stride
        return sh if sh == sw else self.stride

    def describe(self) -> str:
        """A short label: ``conv 3×3/2``, ``depthwise 3×3/2x1`` and the epilogue."""
        if self.kind in ("conv", "depthwise", "max_pool", "aggregation"):
            label = f"{self.kind} {self.kernel}×{self.kernel}/{stride_label(self.stride)}"
        else:
            label = self.kind
        extras = [e for e, on in (("relu", self.relu), ("affine", self.affine), ("+res", self.residual)) if on]
        return label + (f" {'+'.join(extras)}" if extras else "")


def symmetric_padding(kernel: int) -> Tuple[int, int, int, int]:
    p = kernel // 2
    return (p, p, p, p)


@dataclass
class OpCost:
    op: Op
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]
    macs: int
    bytes_read: int
    bytes_written: int

    @property
    def intensity(self) -> float:
        """FLOP per byte moved (2 FLOP per MAC)."""
        moved = self.bytes_read + self.bytes_written
        return 2 * self.macs / moved if moved else 0.0


@dataclass
class Plan:
    """``ops`` in execution order over ``buffers``; ``input`` is the image buffer, ``features``
    the stage outputs (strides 4, 8, 16, 32), ``output`` the head's."""
    model: str
    buffers: Dict[str, Buffer]
    ops: Tuple[Op, ...]
    input: str
    features: Tuple[str, ...]
    output: str
    _spatial: Dict[Tuple[int, int], Dict[str, Tuple[int, int]]] = field(default_factory=dict, repr=False)

    @property
    def in_channels(self) -> int:
        return self.buffers[self.input].channels

    @property
    def concat_buffers(self) -> Tuple[str, ...]:
        return tuple(name for name, b in self.buffers.items() if b.slots > 1)

    def spatial(self, h: int, w: int) -> Dict[str, Tuple[int, int]]:
        """(H, W) of every map buffer for an h×w input; an aggregation's partial sums get the size
        of the map they sum over."""
        concrete = isinstance(h, int) and isinstance(w, int)  # symbolic under torch.compile's fake tensors
        cached = self._spatial.get((h, w)) if concrete else None
        if cached is not None:
            return cached
        sizes = {self.input: (h, w)}
        for op in self.ops:
            if op.kind in ("ese_gate", "head"):
                continue
            size = op.output_size(*sizes[op.reads[0].buffer])
            for ref in op.writes:
                known = sizes.setdefault(ref.buffer, size)
                if known != size:
                    raise AssertionError(f"{op.name} writes {size} into {ref.buffer} of size {known}")
        if concrete:
            self._spatial[(h, w)] = sizes
        return sizes

    def partial_sums_shape(self, name: str, n: int, h: int, w: int,
                           partial_sums: PartialSumsShape) -> Tuple[int, int, int]:
        """(N, T, C) of partial-sum buffer ``name`` for an n×C×h×w input, as the kernel family
        whose ``partial_sums`` shape function is given lays it out."""
        buffer = self.buffers[name]
        producer = next(op for op in self.ops if op.name == buffer.producer)
        hs, ws = self.spatial(h, w)[name]
        return partial_sums(n, hs * ws, producer.reads[0].channels, buffer.channels)

    def shapes(self, n: int, h: int, w: int,
               partial_sums: Optional[PartialSumsShape] = None) -> Dict[str, Tuple[int, ...]]:
        """Shape of every buffer for an n×C×h×w input: (N, C, H, W) maps, (N, C) vectors, and the
        partial sums' (N, T, C) from a family's ``partial_sums`` (left out without it: their
        layout is the family's)."""
        sizes = self.spatial(h, w)
        shapes = {}
        for name, b in self.buffers.items():
            if b.kind == "partial_sums":
                if partial_sums is not None:
                    shapes[name] = self.partial_sums_shape(name, n, h, w, partial_sums)
            else:
                shapes[name] = (n, b.channels, *sizes[name]) if b.kind == "map" else (n, b.channels)
        return shapes

    def feature_shapes(self, n: int, h: int, w: int) -> List[Tuple[int, ...]]:
        shapes = self.shapes(n, h, w)
        return [shapes[name] for name in self.features]

    def costs(self, n: int, h: int, w: int, element_bytes: int, param_shapes: Dict[str, Tuple[int, ...]],
              partial_sums: Optional[PartialSumsShape] = None) -> List[OpCost]:
        """MACs and bytes of each op for an n×C×h×w input; ``param_shapes``: the shape of every
        parameter tensor by path (parameters are read once per call). Activations are counted once
        per read and write (a k×k conv re-reads its halo from cache, not memory); ESE partial sums
        (of the family whose ``partial_sums`` shape function is given: a plan with an aggregation
        needs one) and gates are fp32."""
        if partial_sums is None and any(b.kind == "partial_sums" for b in self.buffers.values()):
            raise ValueError(f"{self.model}'s ESE partial sums have the layout of a kernel family: pass "
                             f"partial_sums=<family>.partial_sums_shape bound to a dtype and device")
        shapes = self.shapes(n, h, w, partial_sums)

        def shape_of(ref: Ref) -> Tuple[int, ...]:
            shape = shapes[ref.buffer]
            if self.buffers[ref.buffer].kind == "partial_sums":
                return shape  # (N, T, C): always read and written whole
            return (shape[0], ref.channels, *shape[2:])

        def size(ref: Ref) -> int:
            scale = 4 if self.buffers[ref.buffer].kind in ("partial_sums", "gate") else element_bytes
            return _numel(shape_of(ref)) * scale

        out = []
        for op in self.ops:
            in_shape, out_shape = shape_of(op.reads[0]), shape_of(op.writes[0])
            numels = [_numel(param_shapes[p]) for p in op.params]
            if op.kind in ("conv", "depthwise", "aggregation"):
                macs = n * out_shape[2] * out_shape[3] * op.kernel ** 2 * (in_shape[1] // op.groups) * out_shape[1]
            elif op.kind in ("ese_gate", "head"):  # GEMVs: one MAC per matrix entry and image
                macs = n * sum(_numel(param_shapes[p]) for p in op.params if len(param_shapes[p]) == 2)
            else:
                macs = 0
            out.append(OpCost(op, in_shape, out_shape, macs,
                              sum(size(r) for r in op.reads) + sum(numels) * element_bytes,
                              sum(size(r) for r in op.writes)))
        return out


def _numel(shape: Tuple[int, ...]) -> int:
    count = 1
    for extent in shape:
        count *= extent
    return count


class _Builder:
    def __init__(self, model: str, in_channels: int):
        self.model = model
        self.buffers: Dict[str, Buffer] = {}
        self.ops: List[Op] = []
        self.input = self.buffer("input", in_channels).whole()

    def buffer(self, name: str, channels: int, kind: str = "map", slots: int = 1, producer: str = "") -> Buffer:
        if name in self.buffers:
            raise AssertionError(f"buffer {name} declared twice")
        self.buffers[name] = Buffer(name, channels, kind, slots, producer)
        return self.buffers[name]

    def op(self, kind: str, name: str, reads, writes, params=(), stride=1, **geometry) -> None:
        self.ops.append(Op(kind, name, tuple(reads), tuple(writes), tuple(params), stride=stride_pair(stride),
                           **geometry))

    def conv(self, name: str, conv, source: Ref, target: Ref, residual: Optional[Ref] = None,
             kind: Optional[str] = None) -> None:
        """A ``FoldedConv`` (dense or depthwise) from ``source`` into ``target``."""
        kind = kind or ("depthwise" if conv.groups > 1 else "conv")
        params = [f"{name}.{p}" for p in conv.param_names()]
        self.op(kind, name, (source, residual) if residual else (source,), (target,), params,
                kernel=conv.kernel_size, stride=conv.stride, padding=conv.padding, groups=conv.groups,
                relu=conv.relu, affine=conv.affine, residual=residual is not None)

    def stage_input(self, index: int, stage, x: Ref, slot0: Ref) -> None:
        """A stage's input into its first block's slot 0: the LDS downsample, or a copy."""
        if stage.downsample is not None:
            self.conv(f"stages.{index}.downsample", stage.downsample, x, slot0)
        elif x != slot0:
            self.op("copy", f"stages.{index}.input", (x,), (slot0,))

    def layers(self, path: str, cat: Buffer, block, lower) -> Ref:
        """Each layer of a block from the previous slot into its own slot of the concat buffer
        (``lower(name, layer, source, target)`` emits a layer's ops); returns the block input."""
        block_input = previous = Ref(cat.name, 0, block.in_channels)
        start = block.in_channels
        for li, layer in enumerate(block.layers):
            target = Ref(cat.name, start, start + layer.out_channels)
            lower(f"{path}.layers.{li}", layer, previous, target)
            previous, start = target, target.stop
        return block_input

    def head(self, net, x: Ref, features: List[str]) -> Plan:
        head = self.buffer("head", net.num_outputs, kind="vector").whole()
        self.op("head", "", (x,), (head,), net.head_param_names())
        return self.plan(features, head.buffer)

    def plan(self, features: List[str], output: str) -> Plan:
        return Plan(self.model, self.buffers, tuple(self.ops), self.input.buffer, tuple(features), output)


def _lower_v1(net) -> Plan:
    """PP-HGNet (v1): stem convs → 3×3/2 max pool (none in PaddleOCR's text recognition, whose
    first stage downsamples instead) → stages of [LDS downsample] + HG-Blocks with ESE aggregation
    → head."""
    b = _Builder(f"PPHGNet_{net.config.name}" + (" text_rec" if net.config.text_rec else ""), net.stem[0].in_channels)
    x = b.input
    for i, conv in enumerate(net.stem):
        target = b.buffer(f"stem.{i}", conv.out_channels).whole()
        b.conv(f"stem.{i}", conv, x, target)
        x = target
    features = []
    for si, stage in enumerate(net.stages):
        blocks = [b.buffer(f"stages.{si}.blocks.{bi}.cat", block.total_channels, slots=len(block.layers) + 1)
                  for bi, block in enumerate(stage.blocks)]
        slot0 = Ref(blocks[0].name, 0, stage.blocks[0].in_channels)
        if si == 0 and net.config.stem_pool:
            b.op("max_pool", "stem.pool", (x,), (slot0,), kernel=3, stride=2, padding=symmetric_padding(3))
        else:
            b.stage_input(si, stage, x, slot0)
        output = b.buffer(f"stages.{si}", stage.blocks[-1].out_channels).whole()
        for bi, block in enumerate(stage.blocks):
            path, cat = f"stages.{si}.blocks.{bi}", blocks[bi]
            block_input = b.layers(path, cat, block, b.conv)
            y = b.buffer(f"{path}.y", block.out_channels).whole()
            sums = b.buffer(f"{path}.sums", block.out_channels, kind="partial_sums",
                            producer=f"{path}.aggregation").whole()
            gate = b.buffer(f"{path}.gate", block.out_channels, kind="gate").whole()
            b.op("aggregation", f"{path}.aggregation", (cat.whole(),), (y, sums),
                 [f"{path}.aggregation.{p}" for p in block.aggregation.param_names()], relu=True)
            b.op("ese_gate", path, (sums,), (gate,), (f"{path}.ese_weight", f"{path}.ese_bias"))
            target = output if bi + 1 == len(stage.blocks) else Ref(blocks[bi + 1].name, 0, block.out_channels)
            reads = (y, gate, block_input) if block.identity else (y, gate)
            b.op("scale_residual", path, reads, (target,), residual=block.identity)
        x = output
        features.append(output.buffer)
    return b.head(net, x, features)


def _lower_v2(net) -> Plan:
    """PP-HGNetV2: stem1 → (2×2/1 max pool ‖ stem2a → stem2b) into one concat → stem3 → stem4 → stages
    of [LDS downsample] + HG-Blocks (ConvBNAct or LightConv layers, squeeze and excitation 1×1s with
    the residual in the excitation's epilogue) → head."""
    stem = net.stem
    b = _Builder(f"PPHGNetV2_{net.config.name.upper()}" + (" text_rec" if net.config.text_rec else ""),
                 stem["stem1"].in_channels)
    mid = stem["stem1"].out_channels
    stem1 = b.buffer("stem.stem1", mid).whole()
    b.conv("stem.stem1", stem["stem1"], b.input, stem1)
    cat = b.buffer("stem.cat", 2 * mid, slots=2)
    b.op("max_pool", "stem.pool", (stem1,), (Ref(cat.name, 0, mid),), kernel=2, stride=1, padding=(0, 1, 0, 1),
         zero_pad=net.stem_pool_zero)
    stem2a = b.buffer("stem.stem2a", stem["stem2a"].out_channels).whole()
    b.conv("stem.stem2a", stem["stem2a"], stem1, stem2a)
    b.conv("stem.stem2b", stem["stem2b"], stem2a, Ref(cat.name, mid, 2 * mid))
    stem3 = b.buffer("stem.stem3", stem["stem3"].out_channels).whole()
    b.conv("stem.stem3", stem["stem3"], cat.whole(), stem3)
    def lower_layer(name: str, layer, source: Ref, target: Ref) -> None:
        if hasattr(layer, "conv1"):  # LightConv: the 1×1 into its own buffer, the depthwise into the slot
            reduced = b.buffer(f"{name}.conv1", layer.conv1.out_channels).whole()
            b.conv(f"{name}.conv1", layer.conv1, source, reduced)
            b.conv(f"{name}.conv2", layer.conv2, reduced, target)
        else:
            b.conv(name, layer, source, target)

    x: Optional[Ref] = None  # the previous stage's output
    features = []
    for si, stage in enumerate(net.stages):
        blocks = [b.buffer(f"stages.{si}.blocks.{bi}.cat", block.total_channels, slots=len(block.layers) + 1)
                  for bi, block in enumerate(stage.blocks)]
        slot0 = Ref(blocks[0].name, 0, stage.blocks[0].in_channels)
        if x is None:  # stem4 writes the first block's input slot (or the downsample's input)
            target = slot0 if stage.downsample is None else b.buffer("stem", stem["stem4"].out_channels).whole()
            b.conv("stem.stem4", stem["stem4"], stem3, target)
            x = target
        b.stage_input(si, stage, x, slot0)
        output = b.buffer(f"stages.{si}", stage.blocks[-1].out_channels).whole()
        for bi, block in enumerate(stage.blocks):
            path, cat_buffer = f"stages.{si}.blocks.{bi}", blocks[bi]
            block_input = b.layers(path, cat_buffer, block, lower_layer)
            squeezed = b.buffer(f"{path}.squeeze", block.squeeze.out_channels).whole()
            b.conv(f"{path}.squeeze", block.squeeze, cat_buffer.whole(), squeezed)
            target = output if bi + 1 == len(stage.blocks) else Ref(blocks[bi + 1].name, 0, block.out_channels)
            b.conv(f"{path}.excitation", block.excitation, squeezed, target,
                   residual=block_input if block.identity else None)
        x = output
        features.append(output.buffer)
    return b.head(net, x, features)


def build_plan(net) -> Plan:
    """The plan of a ``FoldedNet``."""
    return _lower_v2(net) if net.version == 2 else _lower_v1(net)
