"""The distinct layer shapes of a PP-HGNet at a given input size (for tuning and microbenchmarks)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import List

from .models.pphgnet import CONFIGS


@dataclass(frozen=True)
class ConvShape:
    kind: str        # "conv" (3×3 / 1×1 dense), "aggregation" (1×1 + ESE sums) or "depthwise" (LDS)
    kernel: int
    stride: int
    c_in: int
    c_out: int
    h: int           # input height and width
    w: int

    @property
    def h_out(self) -> int:
        return (self.h - 1) // self.stride + 1

    @property
    def w_out(self) -> int:
        return (self.w - 1) // self.stride + 1

    def macs(self, batch: int = 1) -> int:
        per_pixel = self.kernel * self.kernel * (1 if self.kind == "depthwise" else self.c_in) * self.c_out
        return batch * self.h_out * self.w_out * per_pixel

    def ident(self) -> str:
        """A name usable as a pytest id and with ``-k``."""
        return f"{self.kind}_{self.c_in}to{self.c_out}_k{self.kernel}s{self.stride}_{self.h}x{self.w}"

    def label(self) -> str:
        return (f"{self.kind} {self.c_in}->{self.c_out} {self.kernel}x{self.kernel}/s{self.stride} "
                f"@{self.h}x{self.w}")


def conv_shapes(model: str = "tiny", size: int = 224) -> "Counter[ConvShape]":
    """Each distinct conv shape of PPHGNet_<model> on a size×size input, with how often it occurs."""
    cfg = CONFIGS[model]
    shapes: Counter = Counter()
    h = (size - 1) // 2 + 1
    channels = (3,) + cfg.stem_channels
    shapes[ConvShape("conv", 3, 2, 3, channels[1], size, size)] += 1
    for c_in, c_out in zip(channels[1:-1], channels[2:]):
        shapes[ConvShape("conv", 3, 1, c_in, c_out, h, h)] += 1
    h = (h - 1) // 2 + 1  # stem max pool
    for stage in cfg.stages:
        if stage.downsample:
            shapes[ConvShape("depthwise", 3, 2, stage.in_channels, stage.in_channels, h, h)] += 1
            h = (h - 1) // 2 + 1
        for b in range(stage.block_num):
            c_in = stage.in_channels if b == 0 else stage.out_channels
            for layer in range(cfg.layer_num):
                shapes[ConvShape("conv", 3, 1, c_in if layer == 0 else stage.mid_channels,
                                 stage.mid_channels, h, h)] += 1
            shapes[ConvShape("aggregation", 1, 1, c_in + cfg.layer_num * stage.mid_channels,
                             stage.out_channels, h, h)] += 1
    return shapes


def total_macs(model: str = "tiny", size: int = 224) -> int:
    """MACs of the convolutions (the head's GEMVs add < 0.1 %)."""
    return sum(s.macs() * n for s, n in conv_shapes(model, size).items())


def distinct(model: str = "tiny", size: int = 224) -> List[ConvShape]:
    return list(conv_shapes(model, size))
