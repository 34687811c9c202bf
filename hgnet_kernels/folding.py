"""Fold a PP-HGNet's BatchNorms into its convolutions.

For a conv ``W`` followed by eval-mode BN (γ, β, μ, σ², ε)::

    s  = γ / sqrt(σ² + ε)
    W' = W · s        (per output channel)
    b' = β − μ · s

computed in float32 (float64 when the model is float64) and only then cast to the compute dtype,
so fp16/bf16 inherit no extra rounding from the fold itself.

A learnable affine block after the ReLU (LAB: ``y = a·relu(z) + c``, scalars a and c) is folded as
far as it exactly can be: for a > 0, ``a·relu(z) = relu(a·z)``, so a moves into W' and b' and only
the shift c remains for the epilogue; for a ≤ 0 both stay in the epilogue.

The result is a module tree of plain buffers (``FoldedNet``): ``.to()``, ``state_dict()`` and
``load_state_dict()`` work on it like on any module, and every backend reads the same tensors.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn as nn

from .models.pphgnet import ConvBNAct, HGBlock, PPHGNet, PPHGNetConfig


class FoldedConv(nn.Module):
    """conv(x, weight) + bias, then ReLU when ``relu``, then ``affine[0]·y + affine[1]`` when
    ``affine`` (a folded LAB); weight is OIHW with BN folded in. ``padding`` is (top, bottom,
    left, right)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int, relu: bool,
                 padding: Optional[Tuple[int, int, int, int]] = None, affine: Optional[torch.Tensor] = None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("lab", affine)  # (scale, shift), fp32; None without a LAB
        self.stride = stride
        self.padding = padding if padding is not None else (weight.shape[-1] // 2,) * 4
        self.groups = groups
        self.relu = relu

    @property
    def affine(self) -> bool:
        return self.lab is not None

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[-1]

    @property
    def out_channels(self) -> int:
        return self.weight.shape[0]

    @property
    def in_channels(self) -> int:
        return self.weight.shape[1] * self.groups

    def param_names(self) -> Tuple[str, ...]:
        return ("weight", "bias", "lab") if self.affine else ("weight", "bias")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}→{self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, relu={self.relu}, affine={self.affine}")


class FoldedBlock(nn.Module):
    """An HG-Block: ``layers`` (3×3), ``aggregation`` (1×1 over the concat) and the ESE gate."""

    def __init__(self, layers: List[FoldedConv], aggregation: FoldedConv, ese_weight: torch.Tensor,
                 ese_bias: torch.Tensor, identity: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.aggregation = aggregation
        self.register_buffer("ese_weight", ese_weight)
        self.register_buffer("ese_bias", ese_bias)
        self.identity = identity

    @property
    def in_channels(self) -> int:
        return self.layers[0].in_channels

    @property
    def mid_channels(self) -> int:
        return self.layers[0].out_channels

    @property
    def total_channels(self) -> int:
        return self.aggregation.in_channels

    @property
    def out_channels(self) -> int:
        return self.aggregation.out_channels


class FoldedStage(nn.Module):
    def __init__(self, downsample: Optional[FoldedConv], blocks: List[FoldedBlock]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class FoldedNet(nn.Module):
    """The folded network; the head's ``last_conv_weight`` and ``fc_*`` are None where the model
    has no such layer (timm's ``head_hidden_size=None`` / ``num_classes=0``)."""

    def __init__(self, config: PPHGNetConfig, stem: List[FoldedConv], stages: List[FoldedStage],
                 global_pool: str, last_conv_weight: Optional[torch.Tensor], fc_weight: Optional[torch.Tensor],
                 fc_bias: Optional[torch.Tensor]):
        super().__init__()
        self.config = config
        self.stem = nn.ModuleList(stem)
        self.stages = nn.ModuleList(stages)
        self.global_pool = global_pool
        self.register_buffer("head_lab", None)  # (scale, shift) of a LAB after the head's ReLU
        self.register_buffer("last_conv_weight", last_conv_weight)
        self.register_buffer("fc_weight", fc_weight)
        self.register_buffer("fc_bias", fc_bias)

    @property
    def num_outputs(self) -> int:
        """Width of the head's output: the classes, else the pooled (expanded) features."""
        for matrix in (self.fc_weight, self.last_conv_weight):
            if matrix is not None:
                return matrix.shape[0]
        return self.stages[-1].blocks[-1].out_channels

    def head_param_names(self) -> Tuple[str, ...]:
        return tuple(n for n in ("last_conv_weight", "fc_weight", "fc_bias") if getattr(self, n) is not None)


def _fold_conv_bn(module: ConvBNAct, dtype: torch.dtype) -> FoldedConv:
    bn = module.bn
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics (track_running_stats=False) cannot be "
                         "folded; load trained weights or build the model with running statistics")
    fold_dtype = torch.float64 if module.conv.weight.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        scale = bn.weight.to(fold_dtype) / torch.sqrt(bn.running_var.to(fold_dtype) + bn.eps)
        weight = module.conv.weight.to(fold_dtype) * scale.view(-1, 1, 1, 1)
        bias = bn.bias.to(fold_dtype) - bn.running_mean.to(fold_dtype) * scale
        affine = None
        lab = getattr(module, "lab", None)
        if lab is not None:
            a, c = lab.scale.to(fold_dtype).reshape(()), lab.bias.to(fold_dtype).reshape(())
            if a > 0:  # a·relu(z) = relu(a·z): the scale joins the weights, only the shift stays
                weight, bias, a = weight * a, bias * a, torch.ones_like(a)
            affine = torch.stack([a, c]).float()
    return FoldedConv(weight.to(dtype).contiguous(), bias.to(dtype).contiguous(), module.conv.stride[0],
                      module.conv.groups, module.use_act, affine=affine)


def _fold_block(block: HGBlock, dtype: torch.dtype) -> FoldedBlock:
    ese = block.att.conv
    return FoldedBlock([_fold_conv_bn(layer, dtype) for layer in block.layers],
                       _fold_conv_bn(block.aggregation_conv, dtype),
                       ese.weight.detach().flatten(1).to(dtype).contiguous(),
                       ese.bias.detach().to(dtype).contiguous(), block.identity)


def fold_model(model: PPHGNet, dtype: torch.dtype = torch.float32) -> FoldedNet:
    """Fold every BN of an eval-mode ``PPHGNet`` and return the weights in ``dtype``."""
    if model.training:
        raise ValueError("FusedPPHGNet folds BatchNorm running statistics, so the model must be in "
                         "eval mode; call model.eval() first")
    stages = [FoldedStage(_fold_conv_bn(s.downsample, dtype) if s.downsample is not None else None,
                          [_fold_block(b, dtype) for b in s.blocks])
              for s in model.stages]

    def copy(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.detach().to(dtype).contiguous()

    last_conv, fc = model.last_conv, model.fc
    with torch.no_grad():
        return FoldedNet(model.config, [_fold_conv_bn(c, dtype) for c in model.stem], stages, model.global_pool,
                         copy(last_conv.weight.flatten(1)) if last_conv is not None else None,
                         copy(fc.weight) if fc is not None else None, copy(fc.bias) if fc is not None else None)
