"""Checkpoint files and the key names in them: what ``interop`` (foreign frameworks' names) and
``weights`` (loading into the models) both build on.

Formats, detected from the file's content (the suffix is only a hint in error messages):

* PaddleClas ``.pdparams``: a pickle of ``name -> numpy array`` written by ``paddle.save``. Read
  with a restricted unpickler (numpy arrays only), so neither paddle nor arbitrary code runs.
  BN statistics are ``bn._mean``/``bn._variance``; ``fc.weight`` is stored ``[in, out]``; Paddle's
  ``downscale_in_infer`` dropout multiplies by ``1 - p`` at inference, which is folded into
  ``fc.weight`` so our eval-mode logits equal Paddle's.
* timm ``hgnet_tiny/small/base`` and ``hgnetv2_*`` state dicts (``stem.stem.0…``, ``aggregation.0/1``,
  ``head.*``), and those of D-FINE, DEIM and RT-DETRv2's torch port, saved with ``torch.save`` or
  safetensors.
* our own ``PPHGNet.state_dict()``, saved with ``torch.save`` or safetensors.

``to_hgnet_kernels_keys`` maps the Paddle and timm names onto ours (a detector's or OCR model's
backbone found under its prefix).
"""
from __future__ import annotations

import io
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple, Union

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


def unwrap_state_dict(obj) -> Mapping[str, torch.Tensor]:
    """Accept a bare state dict or the usual training wrappers around one; an EMA copy (D-FINE,
    DEIM and RT-DETRv2 keep ``{"model", "ema": {"module"}}``) wins, as their exports do."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        ema = obj.get("ema")
        if isinstance(ema, Mapping) and isinstance(ema.get("module"), Mapping):
            return unwrap_state_dict(ema["module"])
        for wrapper in ("state_dict", "model", "model_state_dict", "module"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and not torch.is_tensor(inner):
                return unwrap_state_dict(inner)
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
    if "GLOBAL ultralytics." in text:
        return ("an ultralytics checkpoint: it pickles ultralytics' model classes, which hgnet_kernels never "
                "unpickles; load it with ultralytics (RTDETR(path)) and pass the model, or save "
                "RTDETR(path).model.state_dict() with torch.save and pass that file")
    if "Weights only load failed" in text or "weights_only" in text:
        return ("it holds Python objects other than tensors, which hgnet_kernels never unpickles; "
                "re-save just the weights with torch.save(model.state_dict(), path)")
    return f"torch.load failed: {text.splitlines()[0][:200]}"


def _pickle_problem(error: Exception, size: int) -> str:
    if isinstance(error, EOFError) or "truncated" in str(error) or "ran out of input" in str(error).lower():
        return f"the pickle ends early ({size} bytes): the file is truncated (copy or download it again)"
    return str(error).splitlines()[0][:200]


def read_checkpoint_file(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read a checkpoint file of any supported format into ``name -> tensor`` (keys not yet mapped)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist (this library never downloads "
                                "weights: pass the path of a .pdparams, timm or hgnet_kernels checkpoint)")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise CheckpointError(f"{path!r} is {len(data)} bytes long: not a checkpoint (truncated?)")
    if data[:2] == b"PK":  # torch.save's zip container
        try:
            return dict(unwrap_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)))
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
                return dict(unwrap_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)))
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


_TIMM_V1_RULES = [
    (re.compile(r"^stem\.stem\.(\d+)\."), r"stem.\1."),
    (re.compile(r"\.aggregation\.0\."), ".aggregation_conv."),
    (re.compile(r"\.aggregation\.1\."), ".att."),
    (re.compile(r"^head\.last_conv\.0\."), "last_conv."),
    (re.compile(r"^head\.fc\."), "fc."),
]
# timm hgnetv2_*, D-FINE / DEIM, RT-DETRv2's torch port (its 2×2 stem convs sit after a ZeroPad2d).
_TORCH_V2_RULES = [
    (re.compile(r"\.aggregation\.0\."), ".aggregation_squeeze_conv."),
    (re.compile(r"\.aggregation\.1\."), ".aggregation_excitation_conv."),
    (re.compile(r"^head\.last_conv\.0\."), "last_conv."),
    (re.compile(r"^head\.last_conv\.2\."), "lab."),
    (re.compile(r"^head\.fc\."), "fc."),
    (re.compile(r"^stem\.(stem2[ab])\.conv\.1\."), r"stem.\1.conv."),
]

# The first stem conv's key in each naming, longest first: it locates the backbone inside a
# detector or OCR checkpoint ("backbone.", "backbone.pphgnet_b4.", …).
_STEM_KEYS = ("stem.stem.0.conv.weight", "stem.stem1.conv.weight", "stem.0.conv.weight")


@dataclass(frozen=True)
class Origin:
    """Where a state dict comes from: ``layout`` "paddle" (PaddleClas, PaddleDetection,
    PaddleOCR), "timm" (timm, D-FINE, DEIM, RT-DETRv2's torch port) or "hgnet_kernels";
    ``version`` 1 (PP-HGNet) or 2 (PP-HGNetV2); ``prefix`` stripped from the backbone's keys."""
    layout: str
    version: int
    prefix: str

    @property
    def stem_pool_padding(self) -> str:
        """Paddle's "SAME" stem pool ignores the padded cells; the torch ports pad with zeros."""
        return "ignore" if self.layout in ("paddle", "hgnet_kernels") else "zero"


def checkpoint_origin(state: Mapping[str, torch.Tensor]) -> Origin:
    prefix = None
    for suffix in _STEM_KEYS:
        found = sorted(k[: -len(suffix)] for k in state if k.endswith(suffix))
        if found:
            prefix = min(found, key=len)
            break
    if prefix is None:
        raise CheckpointError("no PP-HGNet stem convolution (stem.0.conv.weight, stem.stem.0.conv.weight or "
                              "stem.stem1.conv.weight, under any prefix) in the checkpoint: not a PP-HGNet")
    keys = [k[len(prefix):] for k in state if k.startswith(prefix)]
    version = 2 if any(k.startswith("stem.stem1.") for k in keys) else 1
    if any(k.endswith("bn._mean") or k.endswith("bn._variance") for k in keys):
        layout = "paddle"
    elif any(k.startswith("stem.stem.") or k.startswith("head.") or ".aggregation.0." in k
             or k.startswith("stem.stem2a.conv.1.") for k in keys):
        layout = "timm"
    else:
        layout = "hgnet_kernels"
    return Origin(layout, version, prefix)


def to_hgnet_kernels_keys(state: Mapping[str, torch.Tensor], dropout_prob: float) -> Dict[str, torch.Tensor]:
    """Map a Paddle, timm or detector state dict onto our models' names (ours pass through): the
    backbone's keys only, its prefix stripped. ``dropout_prob``: the model's Paddle head dropout,
    whose inference scale 1 − p is folded into a Paddle ``fc.weight``."""
    origin = checkpoint_origin(state)
    rules = {(1, "timm"): _TIMM_V1_RULES, (2, "timm"): _TORCH_V2_RULES}.get((origin.version, origin.layout), [])
    out: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(origin.prefix):
            continue  # a detector's neck and head
        key = key[len(origin.prefix):]
        if origin.layout == "paddle":
            key = key.replace("bn._mean", "bn.running_mean").replace("bn._variance", "bn.running_var")
            if key == "fc.weight" and torch.is_tensor(value) and value.dim() == 2:
                # Paddle stores [in, out] and scales by (1 - p) at inference (downscale_in_infer).
                value = value.t().contiguous() * (1.0 - dropout_prob)
        for pattern, repl in rules:
            key = pattern.sub(repl, key)
        out[key] = value
    return out


def backbone_shapes(state: Mapping[str, torch.Tensor]) -> Dict[str, Tuple[int, ...]]:
    """Shapes of the stem and stage tensors, LAB scalars and BN counters left out."""
    return {k: tuple(v.shape) for k, v in state.items()
            if k.startswith(("stem.", "stages.")) and ".lab." not in k and not k.endswith("num_batches_tracked")
            and torch.is_tensor(v)}

