"""The PP-HGNetV2s users hold in Hugging Face transformers, ultralytics and timm ``features_only``,
translated onto our names, with what their tensors do not say.

* **transformers** (``HGNetV2Backbone`` / ``HGNetV2ForImageClassification``, and the backbone of
  D-FINE under ``model.backbone.model.`` and of PP-OCRv5 server det and rec under ``model.backbone.``):
  ``embedder.stemN.convolution / .normalization``, ``encoder.stages.i.blocks.j.layers.k``,
  ``aggregation.0 / 1``; the classifier has no head 1×1 conv; the stem pool pads with zeros. A
  ``save_pretrained`` folder's ``config.json`` holds what the weights do not (strides, the
  activation) and is checked against them.
* **ultralytics RT-DETR** (``RTDETRDetectionModel``: l = B4, x = B5): ``HGStem`` / ``HGBlock`` /
  ``DWConv`` at flat indices ``model.{i}`` of an index-routed ``Sequential``. Every BatchNorm has
  eps = 1e-3 (set by ultralytics' ``initialize_weights``; no state dict carries it), and its
  predict / export path fuses Conv+BN in place (conv weight and bias, no BN): such a conv loads as
  the conv followed by an identity BN (weight 1, mean 0, var 1, eps 0), which folds exactly.
* **timm** ``features_only=True`` state dicts: ``stages_N.`` for ``stages.N.``.

A BN's eps travels through every key translation as a pseudo entry ``"<bn module>.eps"`` (a
float), taken from the modules when a module is given and from the framework's known value for a
state dict; ``pop_bn_eps`` takes them out before the tensors are checked and loaded.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from .checkpoints import (CheckpointError, backbone_shapes, checkpoint_origin, read_checkpoint_file,
                          to_hgnet_kernels_keys)
from .models.pphgnet import TEXT_REC_STRIDES

HF = "Hugging Face transformers"
ULTRALYTICS = "ultralytics"
_EPS = ".eps"
_ULTRALYTICS_EPS = 1e-3  # ultralytics.utils.torch_utils.initialize_weights sets every BatchNorm2d's eps
_FUSED_BN_EPS = 0.0      # an identity BN in front of which ultralytics already folded its own

_HF_STEM = "embedder.stem1.convolution.weight"
_HF_RULES = [
    (re.compile(r"^embedder\."), "stem."),
    (re.compile(r"^encoder\.stages\."), "stages."),
    (re.compile(r"\.convolution\."), ".conv."),
    (re.compile(r"\.normalization\."), ".bn."),
    (re.compile(r"\.aggregation\.0\."), ".aggregation_squeeze_conv."),
    (re.compile(r"\.aggregation\.1\."), ".aggregation_excitation_conv."),
]
_ULTRALYTICS_STEM = re.compile(r"^(.*?)(\d+)\.stem1\.conv\.weight$")
_TIMM_FEATURES = re.compile(r"^stages_(\d+)\.")


@dataclass
class Translated:
    """A third-party state dict in our names (backbone, and a classifier's ``fc``), with the BN eps
    pseudo entries, and the stem-pool rule of its framework."""
    framework: str
    state: Dict[str, object]
    stem_pool_padding: str


def pop_bn_eps(state: Dict[str, object]) -> Dict[str, float]:
    """Remove the ``"<bn>.eps"`` pseudo entries; returns BN module name → eps."""
    names = [k for k in state if k.endswith(".bn" + _EPS)]
    return {k[: -len(_EPS)]: float(state.pop(k)) for k in names}


def set_bn_eps(model: nn.Module, bn_eps: Mapping[str, float]) -> None:
    """Give each named BN of ``model`` its eps (after the checked load; names were checked)."""
    modules = dict(model.named_modules())
    for name, eps in bn_eps.items():
        modules[name].eps = eps


# ---- modules ----------------------------------------------------------------------------------------

def _norm_eps(name: str, module: nn.Module) -> Optional[float]:
    """The eps of a norm layer with running statistics; None for other modules."""
    if not isinstance(getattr(module, "running_var", None), torch.Tensor):
        return None
    if isinstance(getattr(module, "eps", None), float):
        return module.eps
    if type(module).__name__ == "DFineFrozenBatchNorm2d":
        return 1e-5  # transformers' D-FINE frozen BN: a constant in its forward
    raise ValueError(f"{name} is a {type(module).__name__} whose epsilon cannot be read: not supported (its fold "
                     "would be inexact)")


def module_state(module: nn.Module) -> Dict[str, object]:
    """``module.state_dict()`` with every BN's eps as a pseudo entry ``"<bn>.eps"``."""
    state: Dict[str, object] = dict(module.state_dict())
    for name, sub in module.named_modules():
        eps = _norm_eps(name, sub)
        if eps is not None:
            state[name + _EPS] = eps
    return state


def framework_of(module: nn.Module) -> Optional[str]:
    root = type(module).__module__.split(".")[0]
    return {"transformers": HF, "ultralytics": ULTRALYTICS}.get(root)


def check_module(module: nn.Module) -> nn.Module:
    """What a transformers or ultralytics module's weights cannot show, checked; returns the module
    whose state dict holds the backbone (ultralytics' ``RTDETR`` wrapper gives its ``.model``)."""
    framework = framework_of(module)
    if framework == HF:
        config = getattr(module, "config", None)
        if config is None or not hasattr(config, "to_dict"):
            raise TypeError(f"{HF} {type(module).__name__} has no config: not an HGNetV2 model")
        check_hf_config(config.to_dict(), source=f"{HF} {type(module).__name__}")
        return module
    if framework == ULTRALYTICS:
        return _check_ultralytics_module(module)
    return module


def _check_ultralytics_module(module: nn.Module) -> nn.Module:
    inner = getattr(module, "model", None)
    if isinstance(inner, nn.Module) and not isinstance(inner, nn.Sequential):
        module = inner  # the RTDETR / YOLO wrapper around its DetectionModel
    layers = getattr(module, "model", None)
    if not isinstance(layers, nn.Sequential):
        raise TypeError(f"{ULTRALYTICS} {type(module).__name__} has no layer sequence (.model): pass the "
                        "RTDETR model or its DetectionModel")
    kinds = [type(m).__name__ for m in layers]
    if "HGStem" not in kinds:
        raise TypeError(f"{ULTRALYTICS} {type(module).__name__} has no HGStem: its backbone is not a PP-HGNetV2 "
                        f"(layers {', '.join(kinds[:6])}, …)")
    start = kinds.index("HGStem")
    for index in range(start, len(layers)):
        layer, kind = layers[index], kinds[index]
        if kind not in ("HGStem", "HGBlock", "DWConv") or kind == "DWConv" and layer.conv.kernel_size != (3, 3):
            break
        for name, param in layer.named_parameters():
            if param.dtype != torch.float32 and param.is_floating_point():
                raise ValueError(f"{ULTRALYTICS} model.{index}.{name} is {param.dtype}: an ultralytics model in half "
                                 "precision (its predict / export path rounds the fused weights to it) is not "
                                 "loaded; pass the float32 model (model.float(), or load the .pt again) and ask "
                                 "FusedPPHGNet for dtype=torch.float16")
        _check_ultralytics_layer(f"model.{index}", kind, layer)
    return module


def _act(conv: nn.Module) -> str:
    return type(getattr(conv, "act", None)).__name__


def _check_ultralytics_layer(name: str, kind: str, layer: nn.Module) -> None:
    """The activations and strides RT-DETR's yaml gives, which a state dict cannot show."""
    if kind == "DWConv":
        convs, want_act = {"": layer}, "Identity"
        if layer.conv.stride != (2, 2):
            raise ValueError(f"{ULTRALYTICS} {name} (DWConv) has stride {layer.conv.stride}; a PP-HGNetV2 "
                             "downsample has stride 2")
    elif kind == "HGStem":
        convs, want_act = {f"stem{s}": getattr(layer, f"stem{s}") for s in ("1", "2a", "2b", "3", "4")}, "ReLU"
    else:
        convs = {"sc": layer.sc, "ec": layer.ec}
        for i, m in enumerate(layer.m):
            if type(m).__name__ == "LightConv":
                if _act(m.conv1) != "Identity":
                    raise ValueError(f"{ULTRALYTICS} {name}.m.{i}.conv1 has activation {_act(m.conv1)}; "
                                     "PP-HGNetV2's light conv has none there")
                convs[f"m.{i}.conv2"] = m.conv2
            else:
                convs[f"m.{i}"] = m
        want_act = "ReLU"
    for sub, conv in convs.items():
        if _act(conv) != want_act:
            raise ValueError(f"{ULTRALYTICS} {name}.{sub} has activation {_act(conv)}; PP-HGNetV2 has "
                             f"{want_act} there (RT-DETR's HGStem / HGBlock use act=nn.ReLU())")


# ---- translation --------------------------------------------------------------------------------------

def translate(state: Mapping[str, object]) -> Optional[Translated]:
    """A transformers, ultralytics or timm ``features_only`` state dict (a module's, with its eps
    entries, or a file's) in our names; None for Paddle, timm and our own names
    (``checkpoints.to_hgnet_kernels_keys`` maps them)."""
    hf = sorted(k[: -len(_HF_STEM)] for k in state if k.endswith(_HF_STEM))
    if hf:
        return _from_hf(state, min(hf, key=len))
    for key in state:
        match = _ULTRALYTICS_STEM.match(key)
        if match and f"{match.group(1)}{int(match.group(2)) + 1}.sc.conv.weight" in state:
            return _from_ultralytics(state, match.group(1), int(match.group(2)))
    if any(_TIMM_FEATURES.match(k) for k in state):
        return _from_timm_features(state)
    return None


def _from_hf(state: Mapping[str, object], prefix: str) -> Translated:
    out: Dict[str, object] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue  # a detector's encoder / decoder, an OCR neck and head
        key = key[len(prefix):]
        for pattern, repl in _HF_RULES:
            key = pattern.sub(repl, key)
        out[key] = value
    return Translated(HF, out, "zero")


def _ultralytics_unit(state: Mapping[str, object], prefix: str) -> Dict[str, object]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _is_dwconv(unit: Mapping[str, object]) -> bool:
    weight = unit.get("conv.weight")
    return (torch.is_tensor(weight) and weight.dim() == 4 and weight.shape[1] == 1 and tuple(weight.shape[2:]) == (3, 3)
            and all(k.startswith(("conv.", "bn.")) or k == "bn" + _EPS for k in unit))


def _from_ultralytics(state: Mapping[str, object], prefix: str, stem_index: int) -> Translated:
    """HGStem at ``model.{stem_index}``, then HGBlocks (stage 0), and a DWConv opening each later
    stage, until the first index that is neither (the encoder's input projection)."""
    out: Dict[str, object] = {}

    def put(ours: str, unit: Mapping[str, object]) -> None:
        for key, value in unit.items():
            out[f"{ours}.{key}"] = value

    put("stem", _ultralytics_unit(state, f"{prefix}{stem_index}."))
    stage, block, index = 0, 0, stem_index + 1
    while True:
        unit = _ultralytics_unit(state, f"{prefix}{index}.")
        if "sc.conv.weight" in unit:
            renamed = {re.sub(r"^m\.", "layers.", re.sub(r"^sc\.", "aggregation_squeeze_conv.",
                                                         re.sub(r"^ec\.", "aggregation_excitation_conv.", k))): v
                       for k, v in unit.items()}
            put(f"stages.{stage}.blocks.{block}", renamed)
            block += 1
        elif _is_dwconv(unit):
            stage, block = stage + 1, 0
            put(f"stages.{stage}.downsample", unit)
        else:
            break
        index += 1
    for key, value in list(out.items()):
        if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float32:
            raise CheckpointError(f"{ULTRALYTICS} {key} is {value.dtype}: an ultralytics model in half precision "
                                  "(its predict / export path rounds the fused weights to it) is not loaded; save "
                                  "the float32 model's state dict (model.float()) and ask FusedPPHGNet for "
                                  "dtype=torch.float16")
    _unfuse(out)
    for key in [k for k in out if k.endswith(".bn.running_var")]:
        out.setdefault(key[: -len(".running_var")] + _EPS, _ULTRALYTICS_EPS)
    return Translated(ULTRALYTICS, out, "zero")


def _unfuse(out: Dict[str, object]) -> None:
    """A conv ultralytics fused with its BN (weight and bias, no BN) becomes the conv followed by an
    identity BN with eps 0: its fold gives back exactly that weight and bias."""
    for key in [k for k in out if k.endswith(".conv.bias")]:
        unit = key[: -len(".conv.bias")]
        if f"{unit}.bn.running_var" in out:
            raise CheckpointError(f"{ULTRALYTICS} {unit}: a conv with a bias and a BN after it is not an ultralytics "
                                  "Conv, fused or not")
        bias = out.pop(key)
        out[f"{unit}.bn.weight"] = torch.ones_like(bias)
        out[f"{unit}.bn.bias"] = bias
        out[f"{unit}.bn.running_mean"] = torch.zeros_like(bias)
        out[f"{unit}.bn.running_var"] = torch.ones_like(bias)
        out[f"{unit}.bn{_EPS}"] = _FUSED_BN_EPS


def _from_timm_features(state: Mapping[str, object]) -> Translated:
    renamed = {_TIMM_FEATURES.sub(r"stages.\1.", k): v for k, v in state.items()}
    origin = checkpoint_origin(renamed)
    return Translated("timm features_only", to_hgnet_kernels_keys(renamed, 0.0), origin.stem_pool_padding)


# ---- transformers config.json ---------------------------------------------------------------------

_DEFAULT_STEM_STRIDES = ((2, 2), (1, 1), (1, 1), (2, 2), (1, 1))
_TEXT_REC_STEM_STRIDES = ((2, 2), (1, 1), (1, 1), (1, 1), (1, 1))  # PPOCRV5ServerRec: stem3 at stride 1


def _pairs(strides) -> Tuple[Tuple[int, int], ...]:
    return tuple(tuple(s) if isinstance(s, (list, tuple)) else (s, s) for s in strides)


def _hgnet_config(config: Mapping, source: str) -> Mapping:
    model_type = config.get("model_type")
    if model_type == "hgnet_v2":
        return config
    backbone = config.get("backbone_config")
    if isinstance(backbone, Mapping) and backbone.get("model_type") == "hgnet_v2":
        return backbone
    inner = backbone.get("model_type") if isinstance(backbone, Mapping) else None
    raise CheckpointError(f"{source}: a {HF} {model_type!r} model whose backbone is "
                          f"{inner or 'not given'}, not HGNetV2 (PP-HGNetV2): nothing here to load")


def check_hf_config(config: Mapping, source: str, state: Optional[Mapping[str, object]] = None) -> None:
    """Refuse, naming it, what config.json says and this library cannot run exactly; with the
    weights (``state``, our names), refuse a config that does not describe them."""
    model_type = config.get("model_type")
    hg = _hgnet_config(config, source)
    if hg.get("hidden_act", "relu") != "relu":
        raise CheckpointError(f"{source}: {HF} HGNetV2 with hidden_act={hg['hidden_act']!r} is not supported "
                              "(PP-HGNetV2 uses relu)")
    if _is_text_rec_config(hg) is None:
        stem = _pairs(hg.get("stem_strides", [s for s, _ in _DEFAULT_STEM_STRIDES]))
        downsample = list(hg.get("stage_downsample", [False, True, True, True]))
        stage = [s for s, down in zip(_pairs(hg.get("stage_downsample_strides", [2, 2, 2, 2])), downsample) if down]
        raise CheckpointError(f"{source} ({model_type}): {HF} HGNetV2 with stem_strides {list(stem)}, stage_downsample "
                              f"{downsample} and stage downsample strides {stage} is not supported (PP-HGNetV2: stem "
                              "(2, 1, 1, 2, 1), stages 2 from the second; PP-OCRv5 server rec: stem (2, 1, 1, 1, 1), "
                              f"every stage downsampled by {[tuple(s) for s in TEXT_REC_STRIDES]})")
    if state is not None:
        _check_config_matches_weights(hg, state, source)


def _is_text_rec_config(hg: Mapping) -> Optional[bool]:
    """Whether an HGNetV2 config has PP-OCR text recognition's strides (True) or PP-HGNetV2's
    (False); None for any other strides (not supported)."""
    stem = _pairs(hg.get("stem_strides", [s for s, _ in _DEFAULT_STEM_STRIDES]))
    downsample = [bool(d) for d in hg.get("stage_downsample", [False, True, True, True])]
    strides = _pairs(hg.get("stage_downsample_strides", [2, 2, 2, 2]))
    if stem == _DEFAULT_STEM_STRIDES and downsample == [False, True, True, True] and \
            all(s == (2, 2) for s, down in zip(strides, downsample) if down):
        return False
    if stem == _TEXT_REC_STEM_STRIDES and downsample == [True] * 4 and strides == TEXT_REC_STRIDES:
        return True
    return None


def _check_config_matches_weights(hg: Mapping, state: Mapping[str, object], source: str) -> None:
    from .models import PPHGNetV2, PPHGNetV2Config, StageV2Config
    try:
        stages = tuple(StageV2Config(*row) for row in zip(
            hg["stage_in_channels"], hg["stage_mid_channels"], hg["stage_out_channels"], hg["stage_num_blocks"],
            hg["stage_downsample"], hg["stage_light_block"], hg["stage_kernel_size"], hg["stage_numb_of_layers"]))
        in_channels, mid, out = hg["stem_channels"]
        use_lab = bool(hg.get("use_learnable_affine_block", False))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: config.json's HGNetV2 part is incomplete or malformed ({e})") from None
    config = PPHGNetV2Config("config.json", (mid, out), stages, use_lab)
    with torch.device("meta"):
        described = PPHGNetV2(config, num_classes=0, in_channels=in_channels, class_expand=None,
                              text_rec=bool(_is_text_rec_config(hg)))
    want, have = backbone_shapes(described.state_dict()), backbone_shapes(state)
    problems = [f"{k}: config {want.get(k, 'absent')}, weights {have.get(k, 'absent')}"
                for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
    has_lab = any(".lab." in k for k in state)
    if has_lab != use_lab:
        problems.insert(0, f"use_learnable_affine_block={use_lab} but the weights {'have' if has_lab else 'lack'} LABs")
    if problems:
        raise CheckpointError(f"{source}: config.json does not describe these weights ({len(problems)} differences; "
                              "nothing loaded):\n  " + "\n  ".join(problems[:6])
                              + ("\n  …" if len(problems) > 6 else ""))


# ---- save_pretrained folders ---------------------------------------------------------------------

_INDEX = "model.safetensors.index.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def is_hf_folder(path: str) -> bool:
    names = set(os.listdir(path))
    return "config.json" in names and bool(names & {_INDEX, *_WEIGHT_FILES})


def read_hf_folder(path: str) -> Dict[str, torch.Tensor]:
    """A ``save_pretrained`` folder's tensors (every shard of a sharded one), after checking its
    config.json against them; raw transformers names (``translate`` maps them)."""
    source = repr(path)
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{source}: cannot read config.json ({e})") from None
    index_path = os.path.join(path, _INDEX)
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as f:
                weight_map = json.load(f)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{source}: cannot read {_INDEX} ({e})") from None
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(path, s))]
        if missing:
            raise CheckpointError(f"{source}: {len(missing)} of the {len(shards)} shards {_INDEX} lists are missing: "
                                  f"{', '.join(missing)} (copy or download the whole folder; nothing loaded)")
        state: Dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_checkpoint_file(os.path.join(path, shard)))
        absent = sorted(set(weight_map) - set(state))
        if absent:
            raise CheckpointError(f"{source}: {len(absent)} tensors {_INDEX} lists are in none of the shards: "
                                  f"{', '.join(absent[:5])} (a damaged or mixed folder; nothing loaded)")
    else:
        weights = next(os.path.join(path, n) for n in _WEIGHT_FILES if os.path.isfile(os.path.join(path, n)))
        state = read_checkpoint_file(weights)
    translated = translate(state) if any(k.endswith(_HF_STEM) for k in state) else None
    if translated is None:
        raise CheckpointError(f"{source}: a {HF} folder ({config.get('model_type')!r}) whose weights hold no "
                              f"HGNetV2 backbone ({_HF_STEM} under any prefix)")
    check_hf_config(config, source, translated.state)
    return state
