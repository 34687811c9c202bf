"""Host (Python) time per forward of the triton backend, without a GPU.

The plan runs on CPU tensors under ``hgnet_kernels.aot.recording``: every launcher does all its
work (checks, configs, grids, allocations) and every launch takes Triton's real dispatch path
(binding, specialization key, kernel-cache hit) up to where the driver would be called. What is
timed is therefore the CPU time a forward costs before any GPU work — the cost that CUDA graphs
hide and that plain launches (``cuda_graph=False``, or past ``max_graphs``) pay on every call.
The head (a few GEMVs in PyTorch) is left out: on the CPU it would time PyTorch's CPU kernels.

    python bench/launch_overhead.py [--models tiny b0] [--dtype float16] [--batch 1] [--calls 50]
"""
import argparse
import os
import statistics
import sys
import time

os.environ.pop("TRITON_INTERPRET", None)  # noqa: E402  (before Triton is imported)

import torch  # noqa: E402

from hgnet_kernels import aot  # noqa: E402
from hgnet_kernels.backends import Backend  # noqa: E402
from hgnet_kernels.folding import fold_model  # noqa: E402
from hgnet_kernels.models import MODEL_NAMES, build_model  # noqa: E402
from hgnet_kernels.plan import build_plan  # noqa: E402
from hgnet_kernels.verify import DTYPES  # noqa: E402


def host_time(model: str, dtype: torch.dtype, batch: int, size: int, calls: int):
    """(median seconds per forward up to the last stage map, kernel launches per forward)."""
    net = fold_model(build_model(model).eval(), dtype)
    plan = build_plan(net)
    backend = Backend("triton", net, plan, torch.device("cpu"), cuda_graph=False)
    x = torch.empty((batch, plan.in_channels, size, size), dtype=dtype)
    last_stage = (len(plan.features) - 1,)
    launches = {}
    with aot.recording(90, 132, launches, dict(op="", reads_input=False)), torch.no_grad():
        backend._execute(x, last_stage)  # records each specialization once; later calls hit the cache
        per_call = sum(len(launch.grids) for launch in launches.values())
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            backend._execute(x, last_stage)
            times.append(time.perf_counter() - start)
    return statistics.median(times), per_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=["tiny", "b0"])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"host time per forward, triton backend, {args.dtype}, batch {args.batch}, {args.size} px "
          f"({os.cpu_count()} CPUs, {args.calls} calls, median)")
    for model in args.models:
        seconds, launches = host_time(model, DTYPES[args.dtype], args.batch, args.size, args.calls)
        print(f"{model:>6}: {seconds * 1e3:7.2f} ms, {launches} launches, {seconds / launches * 1e6:6.1f} µs a launch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
