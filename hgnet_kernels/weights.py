"""Load PP-HGNet weights from any of the formats users already have, strictly and atomically.

A path, state dict or module: a checkpoint file (``checkpoints``: PaddleClas ``.pdparams``, timm,
detector and our own state dicts, torch.save or safetensors), a transformers ``save_pretrained``
folder, or a transformers / ultralytics / timm ``features_only`` state dict or module, translated
onto our names with each BN's eps by ``interop``.

Loading is all-or-nothing: every missing, unexpected, mis-shaped or non-finite entry is collected
into one ``CheckpointError`` and the model is left untouched.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import Callable, Dict, Mapping, Optional, Tuple

import torch
import torch.nn as nn

from .checkpoints import (CheckpointError, PathLike, backbone_shapes, checkpoint_origin, read_checkpoint_file,
                          to_hgnet_kernels_keys, unwrap_state_dict)
from .interop import check_module, is_hf_folder, module_state, pop_bn_eps, read_hf_folder, set_bn_eps, translate


def read_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file of any supported format, or a transformers ``save_pretrained`` folder,
    into ``name -> tensor`` (keys not yet mapped)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if is_hf_folder(path):
            return read_hf_folder(path)
        found = sorted(f for f in os.listdir(path) if f.endswith((".pdparams", ".pth", ".pt", ".safetensors", ".bin")))
        hint = f"; it contains {', '.join(found[:5])}" if found else ""
        raise IsADirectoryError(f"weights path {path!r} is a directory, not a checkpoint file: pass the "
                                f"file itself (a .pdparams, torch.save or safetensors file), or a Hugging Face "
                                f"save_pretrained folder (config.json and model.safetensors){hint}")
    return read_checkpoint_file(path)


_LISTED = 5  # entries an error names of each kind: a wrong file must not produce hundreds of lines


def _first_few(keys) -> str:
    return ", ".join(keys[:_LISTED]) + (f", … ({len(keys) - _LISTED} more)" if len(keys) > _LISTED else "")


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Check every entry first, then copy; on any problem raise one error and change nothing."""
    expected = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    problems = []
    for key in sorted(set(expected) & set(given)):
        value = given[key]
        if not torch.is_tensor(value):
            problems.append(f"{key}: not a tensor ({type(value).__name__})")
        elif tuple(value.shape) != tuple(expected[key].shape):
            problems.append(f"{key}: shape {tuple(value.shape)} in the checkpoint, model expects "
                            f"{tuple(expected[key].shape)}")
        elif not value.is_floating_point():
            problems.append(f"{key}: dtype {value.dtype}, expected a floating-point tensor")
        elif value.numel() and not torch.isfinite(torch.stack(torch.aminmax(value))).all():
            # min and max are NaN where any value is, and an Inf is one of them: one pass and no
            # mask (isfinite(value).all() takes 5× as long, ~0.26 s of CPU for B6's 75 M values)
            problems.append(f"{key}: contains NaN or Inf")
    if missing or unexpected or problems:
        lines = [f"cannot load {source} into {type(model).__name__} (model left unchanged):"]
        if missing:
            lines.append(f"  {len(missing)} missing: " + _first_few(missing))
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected: " + _first_few(unexpected))
        lines.extend("  " + p for p in problems[:_LISTED])
        if len(problems) > _LISTED:
            lines.append(f"  … and {len(problems) - _LISTED} more entries with a wrong shape, dtype or value")
        if problems and any("shape" in p for p in problems):
            lines.append("  (the checkpoint's num_classes, in_channels or head width differ from the model's: "
                         "hgnet_kernels.load_model(checkpoint) builds the model it holds)")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(given[key])


def model_to_load(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` without its random initialisation, for a caller that loads every entry next.

    Built on the meta device, then given memory on the default device filled with NaN, so an entry
    that a load missed is seen, not left holding stale bytes; the BN step counters, which loads
    skip, start at 0 as in a newly built model. (Random initialisation is most of the cost of
    building a model: ~1.4 s of CPU for PP-HGNet base or B6.)"""
    with torch.device("meta"):
        model = build()
    model.to_empty(device=torch.empty(0).device)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.fill_(float("nan") if tensor.is_floating_point() else 0)
    return model


def load_weights(model: nn.Module, source) -> nn.Module:
    """Load ``source`` (a path, a state dict, or a timm ``hgnet_*`` module) into ``model``.

    ``model`` is a ``PPHGNet``; the format is detected from the content. Returns ``model``.
    """
    state, label, _ = _source_state(source)
    state = _backbone_of_text_rec(to_hgnet_kernels_keys(state, _paddle_dropout(model)))
    bn_eps = pop_bn_eps(state)
    argument = repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "…"
    _check_same_model(model, state, label, argument)
    load_state_dict_strict(model, state, source=label)
    set_bn_eps(model, bn_eps)  # every name is a BN the strict load just filled
    return model


def _check_same_model(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, argument: str) -> None:
    """A checkpoint of another variant is named for what it holds, with the calls that load it
    (``argument``: how those calls are shown the checkpoint)."""
    from .models import CONFIGS, model_label
    try:
        held = infer_model_name(state)
    except CheckpointError:
        return  # a custom shape: the strict load reports it entry by entry
    text_rec = is_text_rec(state)
    if held == model.config.name and text_rec == model.text_rec:
        return
    v1 = held in CONFIGS
    label = f"PPHGNet_{held}" if v1 else f"PPHGNetV2_{held.upper()}"
    if text_rec:  # no builder function takes text_rec: the class does
        label, other = f"{label} text_rec", (f"{'PPHGNet' if v1 else 'PPHGNetV2'}({held!r}, num_classes=0, "
                                             f"class_expand=None, text_rec=True) and load_weights(model, {argument})")
    else:
        other = f"{'pphgnet_' if v1 else 'pphgnetv2_'}{held}(weights={argument})"
    raise CheckpointError(f"{source} holds a {label}, not a {model_label(model)} (model left unchanged): call "
                          f"hgnet_kernels.load_model({argument}), which builds the model a checkpoint holds, or "
                          f"{other}")


def _source_state(source) -> Tuple[Dict[str, object], str, Optional[str]]:
    """The state dict of a path, state dict or module (a module's with its BNs' eps entries), a
    transformers / ultralytics / timm features_only one already in our names (``interop``); the
    label for messages; that framework's stem-pool rule, or None to tell it from the keys."""
    if isinstance(source, (str, os.PathLike)):
        label, state = repr(os.fspath(source)), read_checkpoint(source)
    elif isinstance(source, nn.Module):
        label, state = type(source).__name__, module_state(check_module(source))
    else:
        label, state = type(source).__name__, dict(unwrap_state_dict(source))
    foreign = translate(state)
    if foreign is None:
        return state, label, None
    return foreign.state, f"{label} ({foreign.framework})", foreign.stem_pool_padding


def _paddle_dropout(model: nn.Module) -> float:
    """The p of the Paddle dropout before the FC (v2 has it only after a head 1×1 conv)."""
    if hasattr(model, "dropout_prob"):
        return model.dropout_prob if getattr(model, "last_conv", None) is not None else 0.0
    return model.config.dropout_prob


_STEM_WIDTH_TO_SIZE = {48: "tiny", 64: "small", 96: "base"}
_HEAD_KEYS = ("last_conv.", "lab.", "fc.")


def is_text_rec(state: Mapping[str, object]) -> bool:
    """Whether a state dict in our names holds a PP-OCR text-recognition backbone (PaddleOCR's
    ``PPHGNet_small(det=False)`` / ``PPHGNetV2_B4(text_rec=True)``, transformers' PPOCRV5ServerRec):
    only they downsample in the first stage, and that comes with their strides, which no tensor
    shows (a transformers config.json that says otherwise is refused)."""
    return "stages.0.downsample.conv.weight" in state


def _backbone_of_text_rec(state: Dict[str, object]) -> Dict[str, object]:
    """A text-recognition checkpoint's backbone: PaddleOCR's B4 ``text_rec`` carries a classifier
    head (``last_conv``, ``fc``) its forward never runs, which is left out."""
    if not is_text_rec(state):
        return state
    return {k: v for k, v in state.items() if not k.startswith(_HEAD_KEYS)}



def _variant_shapes(state: Mapping[str, torch.Tensor]) -> Dict[str, Tuple[int, ...]]:
    """The backbone shapes that tell a PP-HGNetV2 variant: all but the first conv's input channels,
    which are the image's (``in_channels`` / timm's ``in_chans``), not the variant's."""
    shapes = backbone_shapes(state)
    first = shapes.get("stem.stem1.conv.weight")
    if first is not None:
        shapes["stem.stem1.conv.weight"] = (first[0], *first[2:])
    return shapes


@functools.lru_cache(maxsize=None)
def _v2_shapes(name: str, text_rec: bool) -> Dict[str, Tuple[int, ...]]:
    from .models import PPHGNetV2
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = PPHGNetV2(name, num_classes=0, class_expand=None, text_rec=text_rec)
    return _variant_shapes(model.state_dict())


def infer_model_name(state: Mapping[str, torch.Tensor]) -> str:
    """Which model (``"tiny"``/``"small"``/``"base"`` or ``"b0"`` … ``"b6"``) a state dict in our key
    names (``to_hgnet_kernels_keys``) holds (a text-recognition one too: ``is_text_rec``)."""
    from .models import CONFIGS_V2
    if "stem.stem1.conv.weight" in state:
        shapes = _variant_shapes(state)
        for name in CONFIGS_V2:
            if _v2_shapes(name, is_text_rec(state)) == shapes:
                return name
        width = tuple(state["stem.stem1.conv.weight"].shape)
        raise CheckpointError(f"a PP-HGNetV2 whose shapes match none of B0–B6 (stem1 weight {width}): a custom "
                              "configuration; build it with PPHGNetV2(PPHGNetV2Config(name, stem_channels, stages, "
                              "use_lab), num_classes=..., in_channels=..., class_expand=...) to those shapes and call "
                              "load_weights(model, checkpoint)")
    weight = state.get("stem.0.conv.weight")
    if not torch.is_tensor(weight):
        raise CheckpointError("no stem convolution in the checkpoint: not a PP-HGNet")
    width = weight.shape[0]
    if width not in _STEM_WIDTH_TO_SIZE:
        raise CheckpointError(f"stem.0.conv.weight has {width} output channels; PP-HGNet tiny/small/base have "
                              f"{sorted(_STEM_WIDTH_TO_SIZE)}")
    return _STEM_WIDTH_TO_SIZE[width]


def timm_feature_stages(module: nn.Module) -> Tuple[int, ...]:
    """The stages a timm ``features_only=True`` hgnet (``FeatureListNet``) returns, its
    ``out_indices``; a ``ValueError`` when it returns anything else or lacks stages the fused
    backbone runs through."""
    modules = module.feature_info.module_name()
    if not all(m.startswith("stages.") for m in modules):
        raise ValueError(f"a timm features_only hgnet returning {modules} is not supported: the fused backbone "
                         "gives stage maps only (stages.0 … stages.3)")
    held = sorted(int(name.split("_")[1]) for name, _ in module.named_children() if name.startswith("stages_"))
    if held != [0, 1, 2, 3]:
        raise ValueError(f"a timm features_only hgnet holding stages {held} (timm drops the stages after the last "
                         "out_indices) is not supported: create it with out_indices ending at 3 and use the maps "
                         "you need")
    return tuple(int(m.split(".")[1]) for m in modules)


def _timm_options(module: nn.Module) -> dict:
    """Model options that reproduce a timm ``hgnet_*`` / ``hgnetv2_*`` module exactly; a
    ``ValueError`` naming the first option that has no exact equivalent here (nothing is converted
    then)."""
    from .models import POOL_TYPES
    kind = type(module).__name__
    if kind == "FeatureListNet":
        timm_feature_stages(module)
        return {}  # no head: its stage modules are all there is, converted like its state dict
    if kind.startswith("Feature") or getattr(module, "feature_info", None) is not None and kind != "HighPerfGpuNet":
        raise ValueError(f"a timm features_only=True module of class {kind} is not supported: create it with the "
                         "default feature_cls (FeatureListNet, a list of stage maps)")
    if kind != "HighPerfGpuNet":
        raise TypeError(f"expected a timm HighPerfGpuNet (hgnet_* or hgnetv2_*), got {kind}")
    v2 = type(getattr(module, "stem", None)).__name__ == "StemV2"
    if not v2 and getattr(module, "use_lab", False):
        raise ValueError("timm hgnet_* (v1) with use_lab=True is not supported: PP-HGNet v1 has no learnable "
                         "affine blocks (PP-HGNetV2, hgnetv2_*, has them)")
    if len(module.stages) != 4:
        raise ValueError(f"a timm hgnet_* with {len(module.stages)} stages (prune_intermediate_layers?) is not "
                         "supported: PP-HGNet has 4")
    head = module.head
    pool = getattr(head.global_pool, "pool_type", "")
    pool = pool[4:] if pool.startswith("fast") else pool  # "fast" pools compute the same values
    if pool not in POOL_TYPES:
        raise ValueError(f"timm global_pool={pool!r} is not supported; supported: {', '.join(POOL_TYPES)}")
    last = head.last_conv
    if isinstance(last, nn.Sequential):
        kinds = [type(m).__name__ for m in last]
        expected = ["Conv2d", "ReLU"] + (["LearnableAffineBlock"] if v2 and getattr(module, "use_lab", False) else [])
        if kinds != expected:
            raise ValueError(f"a timm head with last_conv {kinds} is not supported (expected {', '.join(expected)})")
        class_expand = last[0].out_channels
    elif isinstance(last, nn.Identity):
        class_expand = None  # head_hidden_size=None
    else:
        raise ValueError(f"a timm head whose last_conv is {type(last).__name__} is not supported")
    return dict(global_pool=pool, class_expand=class_expand)


def load_model(source, stem_pool_padding: Optional[str] = None, global_pool: Optional[str] = None) -> "nn.Module":
    """Build the matching eval-mode model for a checkpoint path, state dict or timm model: the
    variant (PP-HGNet tiny / small / base, PP-HGNetV2 B0–B6), ``num_classes``, ``in_channels``, the
    head's ``class_expand`` and (v2) ``use_lab`` come from the weights; a timm module also gives its
    ``global_pool``. A state dict cannot tell it: ``global_pool`` ("avg", "max", "avgmax") says it,
    and without it "avg" is used, with a warning for a timm classifier's state dict, whose
    ``global_pool`` option could have been another (PaddleClas's heads are "avg"). A detector's or
    OCR model's checkpoint gives its backbone (no head: ``forward_features`` is what it is for); a
    PP-OCR text-recognition one (``is_text_rec``) builds PaddleOCR's ``text_rec`` layout. The v2 stem pool pads as
    the checkpoint's framework does (Paddle: ignored cells; timm, D-FINE, RT-DETRv2: zeros), unless
    ``stem_pool_padding`` says otherwise. Options with no exact equivalent are refused with a
    ``ValueError`` that names them."""
    from .models import CONFIGS, POOL_TYPES, PPHGNet, PPHGNetV2
    if global_pool is not None and global_pool not in POOL_TYPES:
        raise ValueError(f"global_pool={global_pool!r} is not supported; supported: {', '.join(POOL_TYPES)}")
    options = {}
    if isinstance(source, nn.Module):
        options = _timm_options(source) if type(source).__module__.startswith("timm.") else {}
    if global_pool is not None and options.get("global_pool", global_pool) != global_pool:
        raise ValueError(f"global_pool={global_pool!r} contradicts the timm model's own {options['global_pool']!r}; "
                         "drop the argument (a timm module says how it pools)")
    state, label, framework_padding = _source_state(source)
    origin = checkpoint_origin(state)
    provisional = _backbone_of_text_rec(to_hgnet_kernels_keys(state, 0.0))
    pop_bn_eps(provisional)
    name = infer_model_name(provisional)
    v2 = name not in CONFIGS
    options["text_rec"] = is_text_rec(provisional)
    if "fc.weight" in provisional:
        options["num_classes"] = provisional["fc.weight"].shape[0]
    elif "fc.bias" not in provisional:
        options["num_classes"] = 0  # no classifier: timm's num_classes=0, or a detector's backbone
    else:
        raise CheckpointError("the checkpoint has fc.bias but no fc.weight")
    options["class_expand"] = provisional["last_conv.weight"].shape[0] if "last_conv.weight" in provisional else None
    if "global_pool" not in options:
        options["global_pool"] = global_pool or "avg"
        has_head = options["num_classes"] > 0 or options["class_expand"] is not None
        if global_pool is None and has_head and origin.layout == "timm" and not origin.prefix:
            warnings.warn("load_model: a timm state dict does not record how the classifier pools, so it is built "
                          "with global_pool='avg' (timm's default); if the model was created with another pool, pass "
                          "load_model(..., global_pool='max' or 'avgmax'), or hand load_model the timm module itself",
                          UserWarning, stacklevel=2)
    options["in_channels"] = provisional["stem.stem1.conv.weight" if v2 else "stem.0.conv.weight"].shape[1]
    if v2:
        options["use_lab"] = any(k.startswith("lab.") or ".lab." in k for k in provisional)
        options["stem_pool_padding"] = stem_pool_padding or framework_padding or origin.stem_pool_padding
        model = model_to_load(lambda: PPHGNetV2(name, **options))
    else:
        model = model_to_load(lambda: PPHGNet(name, **options))
    mapped = _backbone_of_text_rec(to_hgnet_kernels_keys(state, _paddle_dropout(model)))
    bn_eps = pop_bn_eps(mapped)
    load_state_dict_strict(model, mapped, source=label)
    set_bn_eps(model, bn_eps)  # every name is a BN the strict load just filled
    return model.eval()
