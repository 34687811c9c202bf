"""Load PP-HGNet weights from any of the formats users already have, strictly and atomically.

Formats, detected from the file's content (the suffix is only a hint in error messages):

* PaddleClas ``.pdparams``: a pickle of ``name -> numpy array`` written by ``paddle.save``. Read
  with a restricted unpickler (numpy arrays only), so neither paddle nor arbitrary code runs.
  BN statistics are ``bn._mean``/``bn._variance``; ``fc.weight`` is stored ``[in, out]``; Paddle's
  ``downscale_in_infer`` dropout multiplies by ``1 - p`` at inference, which is folded into
  ``fc.weight`` so our eval-mode logits equal Paddle's.
* timm ``hgnet_tiny/small/base`` state dicts (``stem.stem.0…``, ``aggregation.0/1``, ``head.*``),
  saved with ``torch.save`` or safetensors.
* our own ``PPHGNet.state_dict()``, saved with ``torch.save`` or safetensors.

Loading is all-or-nothing: every missing, unexpected, mis-shaped or non-finite entry is collected
into one ``CheckpointError`` and the model is left untouched.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from typing import Dict, Mapping, Union

import numpy as np
import torch
import torch.nn as nn

PathLike = Union[str, os.PathLike]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded into the model; the model was not modified."""


_PADDLE_IGNORED = "StructuredToParameterName@@"
_SAFETENSORS_MAX_HEADER = 100 << 20


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not a Paddle "
                                         "parameter file")
        return super().find_class(module, name)


def _read_paddle_pickle(data: bytes) -> Dict[str, torch.Tensor]:
    obj = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"a Paddle parameter file holds a dict, found {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if key == _PADDLE_IGNORED:
            continue
        if not isinstance(value, np.ndarray):
            raise pickle.UnpicklingError(f"entry {key!r} is {type(value).__name__}, not a numpy array")
        out[key] = torch.from_numpy(np.array(value, copy=True))
    return out


def _unwrap(obj) -> Mapping[str, torch.Tensor]:
    """Accept a bare state dict or the usual training wrappers around one."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model", "model_state_dict", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and not torch.is_tensor(inner):
                return _unwrap(inner)
        return obj
    raise CheckpointError(f"expected a state dict (a mapping of names to tensors), found {type(obj).__name__}")


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first object of torch.save's pre-zip format


def _is_torch_legacy(data: bytes) -> bool:
    # protocol-2 pickle whose first opcode is LONG1 (0x8a) with 10 bytes: torch's magic number
    return data[:2] == b"\x80\x02" and data[2:4] == b"\x8a\x0a" and \
        int.from_bytes(data[4:14], "little") == _TORCH_LEGACY_MAGIC


def _torch_load_problem(error: Exception) -> str:
    """torch.load's failure in our words: its advice to retry with weights_only=False is unsafe
    and never what this library does, so it is not repeated."""
    text = str(error)
    if "central directory" in text or "zip archive" in text or isinstance(error, EOFError):
        return "the torch.save archive is damaged or truncated (copy or download it again)"
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds Python objects other than tensors, which hgnet_kernels never unpickles; "
                "re-save just the weights with torch.save(model.state_dict(), path)")
    return f"torch.load failed: {text.splitlines()[0][:200]}"


def _pickle_problem(error: Exception, size: int) -> str:
    if isinstance(error, EOFError) or "truncated" in str(error) or "ran out of input" in str(error).lower():
        return f"the pickle ends early ({size} bytes): the file is truncated (copy or download it again)"
    return str(error).splitlines()[0][:200]


def read_checkpoint(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file of any supported format into ``name -> tensor`` (keys not yet mapped)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith((".pdparams", ".pth", ".pt", ".safetensors", ".bin")))
        hint = f"; it contains {', '.join(found[:5])}" if found else ""
        raise IsADirectoryError(f"weights path {path!r} is a directory, not a checkpoint file: pass the "
                                f"file itself (a .pdparams, torch.save or safetensors file){hint}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist (this library never downloads "
                                "weights: pass the path of a .pdparams, timm or hgnet_kernels checkpoint)")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError(f"{path!r} is {len(data)} bytes long: not a checkpoint (truncated?)")
    if data[:2] == b"PK":  # torch.save's zip container
        try:
            return dict(_unwrap(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - reported with the file name
            raise CheckpointError(f"cannot read {path!r} as a torch.save checkpoint: {_torch_load_problem(e)}") from None
    header_len = int.from_bytes(data[:8], "little")
    if 0 < header_len <= min(_SAFETENSORS_MAX_HEADER, len(data) - 8) and data[8:9] == b"{":
        try:
            from safetensors.torch import load as load_safetensors
        except ImportError as e:
            raise CheckpointError(f"{path!r} is a safetensors file; pip install safetensors") from e
        try:
            return dict(load_safetensors(data))
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read {path!r} as a safetensors file: {str(e)[:200]}") from None
    if _is_torch_legacy(data):
        try:
            with warnings.catch_warnings():  # torch warns about the legacy format
                warnings.simplefilter("ignore")
                return dict(_unwrap(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)))
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read {path!r} as a (legacy) torch.save checkpoint: "
                                  f"{_torch_load_problem(e)}") from None
    if data[:1] == b"\x80":  # a raw pickle: paddle.save's .pdparams
        try:
            return _read_paddle_pickle(data)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"cannot read {path!r} as a PaddleClas .pdparams: "
                                  f"{_pickle_problem(e, len(data))}") from None
    raise CheckpointError(f"cannot read {path!r}: not a PaddleClas .pdparams, torch.save or safetensors "
                          f"checkpoint (it starts with bytes {data[:8]!r})")


_TIMM_RULES = [
    (re.compile(r"^stem\.stem\.(\d+)\."), r"stem.\1."),
    (re.compile(r"\.aggregation\.0\."), ".aggregation_conv."),
    (re.compile(r"\.aggregation\.1\."), ".att."),
    (re.compile(r"^head\.last_conv\.0\."), "last_conv."),
    (re.compile(r"^head\.fc\."), "fc."),
]


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """``"paddle"``, ``"timm"`` or ``"hgnet_kernels"``, from the key names."""
    keys = list(state)
    if any(k.endswith("bn._mean") or k.endswith("bn._variance") for k in keys):
        return "paddle"
    if any(k.startswith("stem.stem.") or k.startswith("head.") or ".aggregation.0." in k for k in keys):
        return "timm"
    return "hgnet_kernels"


def to_hgnet_kernels_keys(state: Mapping[str, torch.Tensor], dropout_prob: float) -> Dict[str, torch.Tensor]:
    """Map a Paddle or timm state dict onto ``PPHGNet``'s names (ours pass through)."""
    layout = detect_layout(state)
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if layout == "paddle":
            key = key.replace("bn._mean", "bn.running_mean").replace("bn._variance", "bn.running_var")
            if key == "fc.weight":
                # Paddle stores [in, out] and scales by (1 - p) at inference (downscale_in_infer).
                value = value.t().contiguous() * (1.0 - dropout_prob) if value.dim() == 2 else value
        elif layout == "timm":
            for pattern, repl in _TIMM_RULES:
                key = pattern.sub(repl, key)
        out[key] = value
    return out


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
        elif not torch.isfinite(value).all():
            problems.append(f"{key}: contains NaN or Inf")
    if missing or unexpected or problems:
        lines = [f"cannot load {source} into {type(model).__name__} (model left unchanged):"]
        if missing:
            lines.append(f"  {len(missing)} missing: " + ", ".join(missing))
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected: " + ", ".join(unexpected))
        lines.extend("  " + p for p in problems)
        if problems and any("shape" in p for p in problems):
            lines.append("  (a shape mismatch usually means the checkpoint is for another model size "
                         "or num_classes: tiny / small / base)")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for key, target in expected.items():
            target.copy_(given[key])


def load_weights(model: nn.Module, source) -> nn.Module:
    """Load ``source`` (a path, a state dict, or a timm ``hgnet_*`` module) into ``model``.

    ``model`` is a ``PPHGNet``; the format is detected from the content. Returns ``model``.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        state = read_checkpoint(source)
    else:
        name = type(source).__name__
        state = dict(_unwrap(source))
    state = to_hgnet_kernels_keys(state, model.config.dropout_prob)
    load_state_dict_strict(model, state, source=repr(name))
    return model


_STEM_WIDTH_TO_SIZE = {48: "tiny", 64: "small", 96: "base"}


def infer_model_size(state: Mapping[str, torch.Tensor]) -> str:
    """Which PP-HGNet (tiny / small / base) a checkpoint of any supported layout belongs to."""
    for key in ("stem.0.conv.weight", "stem.stem.0.conv.weight"):
        if key in state and torch.is_tensor(state[key]):
            width = state[key].shape[0]
            if width in _STEM_WIDTH_TO_SIZE:
                return _STEM_WIDTH_TO_SIZE[width]
            raise CheckpointError(f"{key} has {width} output channels; PP-HGNet tiny/small/base have "
                                  f"{sorted(_STEM_WIDTH_TO_SIZE)}")
    raise CheckpointError("no stem convolution (stem.0.conv.weight) in the checkpoint: not a PP-HGNet")


def _timm_options(module: nn.Module) -> dict:
    """``PPHGNet`` options that reproduce a timm ``hgnet_*`` module exactly; a ``ValueError`` naming
    the first option that has no exact equivalent here (nothing is converted then)."""
    from .models.pphgnet import POOL_TYPES
    kind = type(module).__name__
    if kind.startswith("Feature") or getattr(module, "feature_info", None) is not None and kind != "HighPerfGpuNet":
        raise ValueError(f"a timm features_only=True module ({kind}) is not supported: create the model without "
                         "features_only and call FusedPPHGNet(model).forward_features(x), which returns the "
                         "stage maps at strides 4, 8, 16 and 32")
    if kind != "HighPerfGpuNet":
        raise TypeError(f"expected a timm HighPerfGpuNet (hgnet_*), got {kind}")
    if type(getattr(module, "stem", None)).__name__ != "StemV1":
        raise ValueError("timm hgnetv2_* (PP-HGNetV2) models are not supported yet; only hgnet_tiny/small/base")
    if getattr(module, "use_lab", False):
        raise ValueError("timm hgnet_* with use_lab=True is not supported: PP-HGNet v1 has no learnable "
                         "affine blocks")
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
        if kinds != ["Conv2d", "ReLU"]:
            raise ValueError(f"a timm head with last_conv {kinds} is not supported (expected Conv2d, ReLU)")
        class_expand = last[0].out_channels
    elif isinstance(last, nn.Identity):
        class_expand = None  # head_hidden_size=None
    else:
        raise ValueError(f"a timm head whose last_conv is {type(last).__name__} is not supported")
    return dict(global_pool=pool, class_expand=class_expand)


def load_model(source) -> "nn.Module":
    """Build the matching eval-mode ``PPHGNet`` for a checkpoint path, state dict or timm model: the
    size (tiny / small / base), ``num_classes``, ``in_channels`` and the head's ``class_expand`` come
    from the weights; a timm module also gives its ``global_pool`` (a state dict cannot: it is "avg").
    Options with no exact equivalent are refused with a ``ValueError`` that names them."""
    from .models.pphgnet import CONFIGS, PPHGNet
    options = {}
    if isinstance(source, nn.Module):
        options = _timm_options(source) if type(source).__name__ != "PPHGNet" else {}
    state = read_checkpoint(source) if isinstance(source, (str, os.PathLike)) else dict(_unwrap(source))
    size = infer_model_size(state)
    mapped = to_hgnet_kernels_keys(state, CONFIGS[size].dropout_prob)
    if "fc.weight" in mapped:
        options["num_classes"] = mapped["fc.weight"].shape[0]
    elif "fc.bias" not in mapped:
        options["num_classes"] = 0  # timm num_classes=0: no classifier
    else:
        raise CheckpointError("the checkpoint has fc.bias but no fc.weight")
    if "last_conv.weight" not in mapped:
        options["class_expand"] = None
    elif torch.is_tensor(mapped["last_conv.weight"]):
        options["class_expand"] = mapped["last_conv.weight"].shape[0]
    options["in_channels"] = mapped["stem.0.conv.weight"].shape[1]
    model = PPHGNet(size, **options)
    load_state_dict_strict(model, mapped, source=repr(os.fspath(source)) if isinstance(source, (str, os.PathLike))
                           else type(source).__name__)
    return model.eval()
