"""Launch configurations of the Triton kernels, as data.

Tuned configs live in ``hgnet_kernels/configs/triton_<arch>.json`` (``arch`` like ``sm90``),
written by ``bench/tune_triton.py`` on that GPU: ``{"op": {"shape key": {param: value}}}``. At run
time they are only looked up (users never pay tuning time, and nothing is tuned during CUDA-graph
capture); a shape without an entry gets the op's heuristic. Under Triton's interpreter every op
uses one fixed large-tile config, the interpreter's cost being per program and loop iteration.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Dict, Optional

import torch

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def arch_name(device: torch.device) -> Optional[str]:
    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


@functools.lru_cache(maxsize=None)
def _load(arch: str) -> Dict[str, Dict[str, Dict[str, int]]]:
    path = os.path.join(CONFIG_DIR, f"triton_{arch}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def lookup(op: str, key: str, device: torch.device) -> Optional[Dict[str, int]]:
    """The tuned config of ``op`` for shape ``key`` on ``device``'s arch, or None."""
    arch = arch_name(device)
    if arch is None:
        return None
    return _load(arch).get(op, {}).get(key)


def device_peaks(device: torch.device) -> Optional[Dict[str, float]]:
    """Data-sheet peak FLOP/s per dtype and bandwidth of a known GPU (None: unknown, e.g. a CPU)."""
    if device.type != "cuda":
        return None
    with open(os.path.join(CONFIG_DIR, "devices.json")) as f:
        table = json.load(f)
    name = torch.cuda.get_device_name(device)
    for key, peaks in table.items():  # most specific names first in the file
        if not key.startswith("_") and key in name:
            return peaks
    return None
