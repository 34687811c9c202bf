"""Latency measurement: warm-up, then the median of repeated calls (synchronised on CUDA)."""
import statistics
import time
from typing import Callable, List, Sequence

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latency_ms(fn: Callable, inputs: Sequence[torch.Tensor], iters: int = 20,
                      warmup: int = 3) -> float:
    """Median wall time of ``fn(x)`` in ms, rotating through ``inputs`` so caches don't flatter."""
    device = inputs[0].device
    with torch.no_grad():
        for i in range(warmup):
            fn(inputs[i % len(inputs)])
        _sync(device)
        times: List[float] = []
        for i in range(iters):
            x = inputs[i % len(inputs)]
            _sync(device)
            start = time.perf_counter()
            fn(x)
            _sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
