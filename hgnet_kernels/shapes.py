"""The distinct conv layers (and, for the tuner, the other kernel ops) of a model at a given input
size, read off its plan (for tuning and microbenchmarks): no shape arithmetic of its own."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import List, Tuple

import torch

from .folding import FoldedNet, fold_model
from .models import build_model
from .plan import Plan, build_plan


# The conv kinds of the plan; the tuner also asks for the other ops its kernels tune.
CONV_KINDS = ("conv", "aggregation", "depthwise")
KERNEL_KINDS = (*CONV_KINDS, "max_pool", "scale_residual", "ese_gate")


@dataclass(frozen=True)
class ConvShape:
    kind: str        # "conv" (dense), "aggregation" (1×1 + ESE sums), "depthwise"; or a KERNEL_KINDS op
    kernel: int
    stride: int
    c_in: int
    c_out: int
    h: int           # input height and width (an ESE gate's: the map its sums were taken over)
    w: int
    h_out: int
    w_out: int
    padding: Tuple[int, int, int, int]  # (top, bottom, left, right): the tuned configs' keys hold it

    def macs(self, batch: int = 1) -> int:
        per_pixel = self.kernel * self.kernel * (1 if self.kind == "depthwise" else self.c_in) * self.c_out
        return batch * self.h_out * self.w_out * per_pixel

    def ident(self) -> str:
        """A name usable as a pytest id and with ``-k``."""
        return f"{self.kind}_{self.c_in}to{self.c_out}_k{self.kernel}s{self.stride}_{self.h}x{self.w}"

    def label(self) -> str:
        return (f"{self.kind} {self.c_in}->{self.c_out} {self.kernel}x{self.kernel}/s{self.stride} "
                f"@{self.h}x{self.w}")


def folded_structure(model: str, text_rec: bool = False) -> FoldedNet:
    """The folded network of a model by short name, structure only: built on the meta device (its
    weights are meta tensors, so nothing is initialised or allocated); ``text_rec``: PaddleOCR's
    text-recognition layout of it."""
    with torch.device("meta"):
        return fold_model(build_model(model, text_rec=text_rec))


def model_plan(model: str, text_rec: bool = False) -> Plan:
    """The plan of a model by short name (``folded_structure``'s: structure only)."""
    return build_plan(folded_structure(model, text_rec))


def conv_shapes(model: str = "tiny", size: int = 224, kinds: Tuple[str, ...] = CONV_KINDS) -> "Counter[ConvShape]":
    """Each distinct op of ``kinds`` (default: the convs) of a model (``"tiny"`` … ``"b6"``) on a
    size×size input, with how often it occurs."""
    plan = model_plan(model)
    spatial = plan.spatial(size, size)
    shapes: Counter = Counter()
    for op in plan.ops:
        if op.kind in kinds:
            source, target = op.reads[0], op.writes[0]
            h, w = spatial[source.buffer]
            h_out, w_out = spatial.get(target.buffer, (h, w))  # an ESE gate writes (N, C), no map
            shapes[ConvShape(op.kind, op.kernel, op.stride_arg, source.channels, target.channels,
                             h, w, h_out, w_out, op.padding)] += 1
    return shapes


def distinct(model: str = "tiny", size: int = 224) -> List[ConvShape]:
    return list(conv_shapes(model, size))
