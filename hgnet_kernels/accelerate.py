"""``accelerate(model)``: swap the PP-HGNetV2 backbone(s) inside a whole pipeline for fused ones.

It finds, anywhere inside ``model``:

* a transformers ``HGNetV2Backbone`` (the backbone of D-FINE, PP-OCRv5 server det and rec, or
  standalone): replaced by a module returning the same ``BackboneOutput`` (``feature_maps`` of its
  ``out_features``), or the tuple ``return_dict=False`` asks for (PP-OCRv5 server rec's
  ``PPOCRV5ServerRecModel`` reads the last of them and pools it itself);
* a transformers ``HGNetV2ForImageClassification``: its ``embedder`` and ``encoder`` replaced by
  one fused module that returns the encoder's ``last_hidden_state``; its pooling and ``fc`` stay;
* a timm ``hgnet_*`` / ``hgnetv2_*``: ``forward`` and ``forward_features`` fused, its head kept
  for ``forward_head``; a timm ``features_only=True`` one: the list of its stage maps;
* the D-FINE / DEIM / RT-DETRv2 torch ports' own ``HGNetv2`` backbone (D-FINE
  ``src/nn/backbone/hgnetv2.py``, RT-DETRv2 ``rtdetrv2_pytorch/src/nn/backbone/hgnetv2.py``):
  the list of the stage maps of its ``return_idx``, as its ``forward`` returns them;
* an ultralytics ``DetectionModel`` (or the ``RTDETR`` wrapper's ``.model``): its HGStem … last
  HGBlock layers replaced in its index-routed sequence; the first runs the fused backbone, and each
  stage's last index gives that stage's map, so the head reads the indices it always did.

Every replacement is built (and so checked) before any is swapped in: what cannot be swapped
exactly is refused naming the module and why, and the model is left as it was.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
import torch.nn as nn

from .fused import FusedPPHGNet
from .interop import HF, ULTRALYTICS, framework_of

_HF_BACKBONE = "HGNetV2Backbone"
_HF_CLASSIFIER = "HGNetV2ForImageClassification"


def _no_hidden_states(output_hidden_states, config, where: str) -> None:
    if output_hidden_states or (output_hidden_states is None and getattr(config, "output_hidden_states", False)):
        raise ValueError(f"{where} (accelerated by hgnet_kernels) returns the stage maps only: output_hidden_states "
                         "(the stem's and every stage's output) is not available from the fused backbone")


class FusedHFBackbone(nn.Module):
    """A transformers ``HGNetV2Backbone``'s place: the same ``BackboneOutput.feature_maps``."""

    def __init__(self, original: nn.Module, name: str, **options):
        super().__init__()
        stages = list(original.config.stage_names)
        wanted = list(original.out_features)
        if "stem" in wanted:
            raise ValueError(f"{name} ({HF} {_HF_BACKBONE}) returns the stem's output (out_features {wanted}); "
                             "the fused backbone gives stage maps only")
        try:
            self.fused = FusedPPHGNet(original, out_indices=tuple(stages.index(f) - 1 for f in wanted), **options)
        except ValueError as e:  # the same kind of error, saying where in the model the backbone is
            raise type(e)(f"{name}: {e}") from None
        self.config = original.config
        self.out_features, self.channels = original.out_features, original.channels

    def forward(self, pixel_values: torch.Tensor, output_hidden_states=None, return_dict=None, **kwargs):
        from transformers.modeling_outputs import BackboneOutput
        _no_hidden_states(output_hidden_states, self.config, _HF_BACKBONE)
        maps = tuple(m.to(pixel_values.dtype) for m in self.fused.forward_features(pixel_values))
        return_dict = self.config.return_dict if return_dict is None else return_dict
        return BackboneOutput(feature_maps=maps) if return_dict else (maps,)


class FusedHFEncoder(nn.Module):
    """A transformers ``HGNetV2ForImageClassification``'s embedder + encoder: the last stage map."""

    def __init__(self, original: nn.Module, **options):
        super().__init__()
        self.fused = FusedPPHGNet(original, out_indices=(3,), **options)
        self.config = original.config

    def forward(self, hidden_state: torch.Tensor, output_hidden_states=None, return_dict=True):
        from transformers.modeling_outputs import BaseModelOutputWithNoAttention
        _no_hidden_states(output_hidden_states, self.config, _HF_CLASSIFIER)
        last = self.fused.forward_features(hidden_state)[0].to(hidden_state.dtype)
        return BaseModelOutputWithNoAttention(last_hidden_state=last) if return_dict else (last,)


class _UltralyticsLayer(nn.Module):
    """Keeps the routing attributes ultralytics reads from every layer (``f``, ``i``, ``type``, ``np``)."""

    def __init__(self, original: nn.Module):
        super().__init__()
        self.f, self.i, self.type, self.np = original.f, original.i, type(self).__name__, 0


class FusedUltralyticsBackbone(_UltralyticsLayer):
    """At the HGStem's index: runs the fused backbone and keeps the stage maps for the taps."""

    def __init__(self, original: nn.Module, fused: FusedPPHGNet, stages: Tuple[int, ...]):
        super().__init__(original)
        self.fused, self.stages = fused, stages
        self.maps: List[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.maps = [m.to(x.dtype) for m in self.fused.forward_features(x)]
        return x  # the stem's output is read by no one but the next backbone layer (checked)


class UltralyticsStageTap(_UltralyticsLayer):
    """At a backbone layer's index: the stage map when the layer ends a stage the model reads,
    else its input passed on (read by no one: checked)."""

    def __init__(self, original: nn.Module, owner: FusedUltralyticsBackbone, stage: int, releases: bool):
        super().__init__(original)
        self.owner = [owner]  # a plain reference: the owner is registered once, at its own index
        self.stage, self.releases = stage, releases

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        owner = self.owner[0]
        if self.stage < 0:
            return x
        out = owner.maps[owner.stages.index(self.stage)]
        if self.releases:  # the backbone's last layer: the model holds what it needs from here on
            owner.maps = []
        return out


class FusedTimmHGNet(nn.Module):
    """A timm ``hgnet_*`` / ``hgnetv2_*``'s place: ``forward`` (the logits), ``forward_features``
    (the last stage map) fused, ``forward_head`` timm's own head."""

    def __init__(self, original: nn.Module, **options):
        super().__init__()
        self.fused = FusedPPHGNet(original, out_indices=(3,), **options)
        self.head = original.head
        self.num_classes, self.num_features = original.num_classes, original.num_features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused.forward_features(x)[0].to(x.dtype)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fused(x).to(x.dtype)


class FusedTimmFeatures(nn.Module):
    """A timm ``features_only=True`` hgnet's place: the list of its ``out_indices`` stage maps."""

    def __init__(self, original: nn.Module, name: str, **options):
        super().__init__()
        try:
            self.fused = FusedPPHGNet(original, **options)  # its own out_indices
        except ValueError as e:
            raise ValueError(f"{name} (timm features_only): {e}") from None
        self.feature_info = original.feature_info

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [m.to(x.dtype) for m in self.fused.forward_features(x)]


def is_torch_port_hgnetv2(module: nn.Module) -> bool:
    """The D-FINE / DEIM / RT-DETRv2 torch ports' ``HGNetv2``: a ``StemBlock`` stem, four stages in a
    ModuleList and ``return_idx``, outside any framework we know by package."""
    return (type(module).__name__ == "HGNetv2" and type(getattr(module, "stem", None)).__name__ == "StemBlock"
            and isinstance(getattr(module, "stages", None), nn.ModuleList) and hasattr(module, "return_idx"))


class FusedTorchPortHGNetv2(nn.Module):
    """A torch port's ``HGNetv2``'s place: its ``forward`` appends each stage's map whose index is in
    ``return_idx``, in stage order, so this returns the fused maps of those stages as a list."""

    def __init__(self, original: nn.Module, name: str, **options):
        super().__init__()
        stages = tuple(i for i in range(len(original.stages)) if i in original.return_idx)
        if not stages:
            raise ValueError(f"{name} (torch-port HGNetv2) has return_idx {original.return_idx}: it returns no stage "
                             "map, so there is nothing to fuse")
        if original.training:
            raise ValueError(f"{name}: FusedPPHGNet folds BatchNorm running statistics, so the model must be in "
                             "eval mode; call model.eval() first")
        from .interop import module_state
        from .weights import load_model  # its names are the torch ports' checkpoint names, which it reads
        param = next(original.parameters())
        eager = load_model(module_state(original)).to(device=param.device, dtype=param.dtype)
        self.fused = FusedPPHGNet(eager, out_indices=stages, **options)
        self.return_idx = original.return_idx

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [m.to(x.dtype) for m in self.fused.forward_features(x)]


def _ultralytics_swap(detection: nn.Module, name: str, options) -> Callable[[], None]:
    layers = detection.model
    kinds = [type(m).__name__ for m in layers]
    start = kinds.index("HGStem")
    stage_of, end = {}, start  # the walk interop's state-dict translation makes: a DWConv opens a stage
    for index in range(start + 1, len(layers)):
        if kinds[index] == "DWConv" and layers[index].conv.kernel_size == (3, 3):
            stage_of[index] = stage_of.get(index - 1, 0) + 1
        elif kinds[index] == "HGBlock":
            stage_of[index] = stage_of.get(index - 1, 0)
        else:
            break
        end = index
    ends = {max(i for i, s in stage_of.items() if s == k): k for k in set(stage_of.values())}
    save = set(getattr(detection, "save", ()))
    for index in range(start, end + 1):
        where = f"{name}.model.{index} ({kinds[index]})"
        if index > start and layers[index].f != -1:
            raise ValueError(f"{where} reads layer {layers[index].f}, not the one before it: not RT-DETR's "
                             "sequential backbone, so it cannot be swapped")
        if index in save and index not in ends:
            raise ValueError(f"{where}: the model reads this layer's output, which is inside a stage; the fused "
                             "backbone gives stage outputs only")
    needed = tuple(sorted({k for i, k in ends.items() if i in save} | {ends[end]}))
    fused = FusedPPHGNet(detection, out_indices=needed, **options)
    owner = FusedUltralyticsBackbone(layers[start], fused, needed)
    taps = {i: UltralyticsStageTap(layers[i], owner, ends[i] if i in ends and ends[i] in needed else -1,
                                   releases=i == end)
            for i in range(start + 1, end + 1)}

    def swap() -> None:
        layers[start] = owner
        for i, tap in taps.items():
            layers[i] = tap
    return swap


def _set_child(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


def accelerate(model: nn.Module, **options) -> nn.Module:
    """Replace the PP-HGNetV2 backbone(s) inside ``model`` (in place) by fused ones returning what
    the originals returned; returns ``model`` (a bare backbone: its replacement). ``options`` are ``FusedPPHGNet``'s (``backend``,
    ``dtype``, backend options); ``out_indices`` follows from what the model reads. A module that
    cannot be swapped exactly is refused, naming it and why, before anything changes."""
    if "out_indices" in options:
        raise TypeError("accelerate() takes the stages each backbone must return from the model itself; "
                        "out_indices is not an option here")
    result = model
    swaps: List[Callable[[], None]] = []
    inside = []  # names already covered by a found backbone: its submodules are not searched
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") or name == prefix for prefix in inside):
            continue
        kind, framework = type(module).__name__, framework_of(module)
        label = name or type(model).__name__
        replacement = None
        if framework == HF and kind == _HF_BACKBONE:
            replacement = FusedHFBackbone(module, label, **options)
        elif framework == HF and kind == _HF_CLASSIFIER:
            encoder = FusedHFEncoder(module, **options)

            def swap_classifier(m=module, e=encoder):
                m.embedder, m.encoder = nn.Identity(), e
            swaps.append(swap_classifier)
        elif kind == "HighPerfGpuNet" and type(module).__module__.startswith("timm."):
            replacement = FusedTimmHGNet(module, **options)
        elif kind in ("FeatureListNet", "FeatureDictNet") and \
                type(getattr(module, "stem", None)).__module__ == "timm.models.hgnet":
            if kind == "FeatureDictNet":
                raise ValueError(f"{label}: a timm features_only hgnet returning a dict (FeatureDictNet) is not "
                                 "supported; create it with the default feature_cls (a list)")
            replacement = FusedTimmFeatures(module, label, **options)
        elif is_torch_port_hgnetv2(module):
            replacement = FusedTorchPortHGNetv2(module, label, **options)
        elif framework == ULTRALYTICS and isinstance(getattr(module, "model", None), nn.Sequential) \
                and any(type(m).__name__ == "HGStem" for m in module.model):
            swaps.append(_ultralytics_swap(module, label, options))
        else:
            continue
        if replacement is not None and name:
            swaps.append(lambda n=name, r=replacement: _set_child(model, n, r))
        elif replacement is not None:  # the model is the backbone: its replacement is what the caller gets back
            result = replacement
        inside.append(name)
    if not swaps and result is model:
        raise ValueError(f"no PP-HGNet backbone found inside {type(model).__name__}: accelerate() swaps a "
                         f"{HF} {_HF_BACKBONE} / {_HF_CLASSIFIER}, an {ULTRALYTICS} RT-DETR backbone, a timm "
                         "hgnet_* / hgnetv2_* (features_only too) or the D-FINE / RT-DETRv2 torch ports' HGNetv2; "
                         "for one of ours use FusedPPHGNet(model)")
    for swap in swaps:
        swap()
    return result
