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

from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn

from .models import PPHGNet, PPHGNetV2
from .models.layers import ConvBNAct
from .models.pphgnet import HGBlock
from .models.pphgnet_v2 import HGV2Block, LightConvBNAct


class FoldedConv(nn.Module):
    """conv(x, weight) + bias, then ReLU when ``relu``, then ``affine[0]·y + affine[1]`` when
    ``affine`` (a folded LAB); weight is OIHW with BN folded in. ``stride`` is (sh, sw),
    ``padding`` (top, bottom, left, right)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, stride: Tuple[int, int], groups: int, relu: bool,
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


class FoldedLightConv(nn.Module):
    """PP-HGNetV2's LightConvBNAct folded: ``conv1`` (1×1, no activation), then ``conv2`` (depthwise)."""

    def __init__(self, conv1: FoldedConv, conv2: FoldedConv):
        super().__init__()
        self.conv1 = conv1
        self.conv2 = conv2

    @property
    def in_channels(self) -> int:
        return self.conv1.in_channels

    @property
    def out_channels(self) -> int:
        return self.conv2.out_channels


class FoldedBlockV2(nn.Module):
    """A PP-HGNetV2 HG-Block: ``layers`` (FoldedConv or FoldedLightConv), then the ``squeeze`` 1×1 over
    the concat and the ``excitation`` 1×1, plus the block input when ``identity``."""

    def __init__(self, layers: List[nn.Module], squeeze: FoldedConv, excitation: FoldedConv, identity: bool):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.squeeze = squeeze
        self.excitation = excitation
        self.identity = identity

    @property
    def in_channels(self) -> int:
        return self.layers[0].in_channels

    @property
    def total_channels(self) -> int:
        return self.squeeze.in_channels

    @property
    def out_channels(self) -> int:
        return self.excitation.out_channels


class FoldedStage(nn.Module):
    def __init__(self, downsample: Optional[FoldedConv], blocks: List[FoldedBlock]):
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)


class FoldedNet(nn.Module):
    """The folded network (``version`` 1 or 2). ``stem``: v1's convs in order, or v2's
    ``stem1`` … ``stem4`` by name (``stem_pool_zero``: its pool pads with zeros, as timm does).
    The head's ``last_conv_weight``, ``head_lab`` and ``fc_*`` are None where the model has no such
    layer (timm's ``head_hidden_size=None`` / ``num_classes=0``, v1 or B4–B6 without LAB)."""

    def __init__(self, config, version: int, stem: nn.Module, stages: List[FoldedStage], global_pool: str,
                 last_conv_weight: Optional[torch.Tensor], head_lab: Optional[torch.Tensor],
                 fc_weight: Optional[torch.Tensor], fc_bias: Optional[torch.Tensor], stem_pool_zero: bool = False):
        super().__init__()
        self.config = config
        self.version = version
        self.stem = stem
        self.stem_pool_zero = stem_pool_zero
        self.stages = nn.ModuleList(stages)
        self.global_pool = global_pool
        self.register_buffer("head_lab", head_lab)  # (scale, shift) of a LAB after the head's ReLU
        self.register_buffer("last_conv_weight", last_conv_weight)
        self.register_buffer("fc_weight", fc_weight)
        self.register_buffer("fc_bias", fc_bias)

    @property
    def first_conv(self) -> FoldedConv:
        """The stem's first conv: its weight tells the network's device and compute dtype."""
        return self.stem["stem1"] if self.version == 2 else self.stem[0]

    @property
    def num_outputs(self) -> int:
        """Width of the head's output: the classes, else the pooled (expanded) features."""
        for matrix in (self.fc_weight, self.last_conv_weight):
            if matrix is not None:
                return matrix.shape[0]
        return self.stages[-1].blocks[-1].out_channels

    def head_param_names(self) -> Tuple[str, ...]:
        names = ("last_conv_weight", "head_lab", "fc_weight", "fc_bias")
        return tuple(n for n in names if getattr(self, n) is not None)


def _fold_lab(weight: torch.Tensor, bias: Optional[torch.Tensor], lab, fold_dtype):
    """A LAB after a ReLU: a positive scale moves into the weights (a·relu(z) = relu(a·z)); the
    shift, and a scale ≤ 0, stay for the epilogue as an fp32 (scale, shift). A model on the meta
    device (structure only: ``shapes.folded_structure``) has no sign to read; both ways give the same shapes."""
    a, c = lab.scale.to(fold_dtype).reshape(()), lab.bias.to(fold_dtype).reshape(())
    if a.is_meta:
        return weight, bias, a.new_empty(2, dtype=torch.float32)
    if a > 0:
        weight, bias, a = weight * a, None if bias is None else bias * a, torch.ones_like(a)
    return weight, bias, torch.stack([a, c]).float()


def _fold_conv_bn(module: ConvBNAct, dtype: torch.dtype, padding=None) -> FoldedConv:
    bn = module.bn
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("BatchNorm without running statistics (track_running_stats=False) cannot be "
                         "folded; load trained weights or build the model with running statistics")
    fold_dtype = torch.float64 if module.conv.weight.dtype == torch.float64 else torch.float32
    with torch.no_grad():
        weight, bias = module.conv.weight.to(fold_dtype), bn.bias.to(fold_dtype)
        # A meta model (structure only) has no values to fold, only shapes; arithmetic on meta
        # tensors runs Python references whose first use imports torch._dynamo (~2.3 s of CPU).
        if not weight.is_meta:
            scale = bn.weight.to(fold_dtype) / torch.sqrt(bn.running_var.to(fold_dtype) + bn.eps)
            weight = weight * scale.view(-1, 1, 1, 1)
            bias = bias - bn.running_mean.to(fold_dtype) * scale
        affine = None
        if getattr(module, "lab", None) is not None:
            weight, bias, affine = _fold_lab(weight, bias, module.lab, fold_dtype)
    return FoldedConv(weight.to(dtype).contiguous(), bias.to(dtype).contiguous(), tuple(module.conv.stride),
                      module.conv.groups, module.use_act, padding=padding, affine=affine)


def _fold_block(block: HGBlock, dtype: torch.dtype) -> FoldedBlock:
    ese = block.att.conv
    return FoldedBlock([_fold_conv_bn(layer, dtype) for layer in block.layers],
                       _fold_conv_bn(block.aggregation_conv, dtype),
                       ese.weight.detach().flatten(1).to(dtype).contiguous(),
                       ese.bias.detach().to(dtype).contiguous(), block.identity)


def _fold_layer_v2(layer: nn.Module, dtype: torch.dtype) -> nn.Module:
    if isinstance(layer, LightConvBNAct):
        return FoldedLightConv(_fold_conv_bn(layer.conv1, dtype), _fold_conv_bn(layer.conv2, dtype))
    return _fold_conv_bn(layer, dtype)


def _fold_block_v2(block: HGV2Block, dtype: torch.dtype) -> FoldedBlockV2:
    return FoldedBlockV2([_fold_layer_v2(layer, dtype) for layer in block.layers],
                         _fold_conv_bn(block.aggregation_squeeze_conv, dtype),
                         _fold_conv_bn(block.aggregation_excitation_conv, dtype), block.identity)


_SAME_2x2 = (0, 1, 0, 1)  # Paddle's "SAME" for a 2×2 stride-1 window: one row below, one column right


def fold_model(model: Union[PPHGNet, PPHGNetV2], dtype: torch.dtype = torch.float32) -> FoldedNet:
    """Fold every BN (and LAB) of an eval-mode ``PPHGNet`` or ``PPHGNetV2``; weights in ``dtype``."""
    if model.training:
        raise ValueError("FusedPPHGNet folds BatchNorm running statistics, so the model must be in "
                         "eval mode; call model.eval() first")
    v2 = isinstance(model, PPHGNetV2)
    fold_block = _fold_block_v2 if v2 else _fold_block
    stages = [FoldedStage(_fold_conv_bn(s.downsample, dtype) if s.downsample is not None else None,
                          [fold_block(b, dtype) for b in s.blocks])
              for s in model.stages]
    if v2:
        stem = model.stem
        stem = nn.ModuleDict({"stem1": _fold_conv_bn(stem.stem1, dtype),
                              "stem2a": _fold_conv_bn(stem.stem2a, dtype, _SAME_2x2),
                              "stem2b": _fold_conv_bn(stem.stem2b, dtype, _SAME_2x2),
                              "stem3": _fold_conv_bn(stem.stem3, dtype), "stem4": _fold_conv_bn(stem.stem4, dtype)})
    else:
        stem = nn.ModuleList(_fold_conv_bn(c, dtype) for c in model.stem)

    def copy(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        return None if t is None else t.detach().to(dtype).contiguous()

    last_conv, fc, head_lab = model.last_conv, model.fc, getattr(model, "lab", None)
    with torch.no_grad():
        last_weight = None
        if last_conv is not None:
            fold_dtype = torch.float64 if last_conv.weight.dtype == torch.float64 else torch.float32
            last_weight = last_conv.weight.flatten(1).to(fold_dtype)
            if head_lab is not None:
                last_weight, _, head_lab = _fold_lab(last_weight, None, head_lab, fold_dtype)
        return FoldedNet(model.config, 2 if v2 else 1, stem, stages, model.global_pool, copy(last_weight),
                         head_lab if last_conv is not None else None,
                         copy(fc.weight) if fc is not None else None, copy(fc.bias) if fc is not None else None,
                         stem_pool_zero=v2 and model.stem_pool_padding == "zero")
