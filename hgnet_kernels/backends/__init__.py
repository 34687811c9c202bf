"""Backends that execute a ``FoldedNet``; each one lives in its own module and imports lazily.

A backend is a class with ``name``, ``OPTIONS`` (the keyword options it takes: name → (type,
description)), ``__init__(net, dtype, device, **options)`` and ``forward_features(x) -> list of 4
stage maps`` and ``logits(x)`` (x: NCHW, compute dtype, any strides).
``unavailable_reason(device, dtype)`` says why it cannot run there, or returns None.
"""
from __future__ import annotations

import importlib
from typing import Optional

import torch

BACKENDS = {
    "torch": "hgnet_kernels.backends.torch_backend:TorchBackend",
    "triton": "hgnet_kernels.backends.triton_backend:TritonBackend",
    "cuda": "hgnet_kernels.backends.cuda_backend:CudaBackend",
}

# "auto" tries these in order; the first that can run on the device wins.
AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("torch",)}


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here; the message says why and what to do."""


def backend_class(name: str):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {['auto', *BACKENDS]}")
    module_name, cls_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(f"backend {name!r} cannot be imported: {e}") from e
    return getattr(module, cls_name)


def unavailable_reason(name: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    try:
        cls = backend_class(name)
    except BackendUnavailable as e:
        return str(e)
    return cls.unavailable_reason(device, dtype)


def check_options(name: str, requested: str, device: torch.device, options: dict) -> None:
    """Every option is one the backend takes, with a value of the right type; else a ``ValueError``
    that names the valid options (raised before anything is built)."""
    valid = backend_class(name).OPTIONS
    chosen = f"backend {name!r}" + (f" (chosen by {requested!r} on {device.type})" if requested != name else "")
    for key, value in options.items():
        if key not in valid:
            listing = ", ".join(f"{k} ({doc})" for k, (_, doc) in valid.items()) or "none"
            hint = ""
            if key in ("cuda_graph", "max_graphs") and device.type != "cuda":
                hint = "; CUDA graphs need a CUDA device and the triton or cuda backend"
            raise ValueError(f"{chosen} does not take the option {key!r}{hint}. Its options: {listing}")
        kind, doc = valid[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"option {key}={value!r} of {chosen}: expected {kind.__name__} ({doc})")


def resolve_backend(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Turn ``"auto"`` into a concrete backend and check that the chosen one can run."""
    if name == "auto":
        reasons = []
        for candidate in AUTO_ORDER.get(device.type, ("torch",)):
            reason = unavailable_reason(candidate, device, dtype)
            if reason is None:
                return candidate
            reasons.append(f"{candidate}: {reason}")
        raise BackendUnavailable(f"no backend can run on {device} with {dtype}: " + "; ".join(reasons))
    reason = unavailable_reason(name, device, dtype)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is unavailable on {device} ({dtype}): {reason}")
    return name
