"""Host (Python) time per forward of the triton or cuda backend, without a GPU.

The plan runs on CPU tensors and every launcher does all its Python work (checks, configs, grids,
allocations); only the kernel itself is not run:

* ``--family triton``: under ``hgnet_kernels.aot.recording`` every launch takes Triton's real
  dispatch path (binding, specialization key, kernel-cache hit) up to where the driver would be
  called;
* ``--family cuda``: CPU tensors take the CUDA family's emulator branch, whose entry points
  (``emulator.call``: the ctypes marshalling of every pointer, shape and stride is done) are
  replaced by a stub that counts the launches. On a GPU the same launchers call the torch
  extension's functions instead (pybind argument conversion in place of the ctypes marshalling).

What is timed is therefore the CPU time a forward costs before any GPU work — the cost that CUDA
graphs hide and that plain launches (``cuda_graph=False``, or past ``max_graphs``) pay on every
call. The head (a few GEMVs in PyTorch) is left out: on the CPU it would time PyTorch's CPU kernels.

    python bench/launch_overhead.py [--family triton] [--models tiny b0] [--dtype float16] [--batch 1] [--calls 50]
"""
import argparse
import collections
import contextlib
import os
import statistics
import sys
import time
from typing import Iterator

os.environ.pop("TRITON_INTERPRET", None)  # noqa: E402  (before Triton is imported)

import torch  # noqa: E402

from hgnet_kernels import aot  # noqa: E402
from hgnet_kernels.backends import Backend  # noqa: E402
from hgnet_kernels.folding import fold_model  # noqa: E402
from hgnet_kernels.models import MODEL_NAMES, build_model  # noqa: E402
from hgnet_kernels.plan import build_plan  # noqa: E402
from hgnet_kernels.verify import DTYPES  # noqa: E402


@contextlib.contextmanager
def stubbed_cuda_launches(launches: collections.Counter) -> Iterator[None]:
    """Inside, the CUDA family's emulated launches are counted in ``launches`` (by entry point)
    instead of run: everything up to the ctypes call is done, the kernel is not."""
    from hgnet_kernels.kernels.cuda import emulator

    real = emulator.call

    def count(name: str, *args) -> None:
        launches[name] += 1

    emulator.call = count
    try:
        yield
    finally:
        emulator.call = real


def host_time(family: str, model: str, dtype: torch.dtype, batch: int, size: int, calls: int):
    """(median seconds per forward up to the last stage map, kernel launches per forward)."""
    net = fold_model(build_model(model).eval(), dtype)
    plan = build_plan(net)
    backend = Backend(family, net, plan, torch.device("cpu"), cuda_graph=False)
    x = torch.empty((batch, plan.in_channels, size, size), dtype=dtype)
    last_stage = (len(plan.features) - 1,)
    if family == "triton":
        recorded = {}
        stub = aot.recording(90, 132, recorded, dict(op="", reads_input=False))

        def launches() -> int:
            return sum(len(launch.grids) for launch in recorded.values())
    else:
        counted = collections.Counter()
        stub = stubbed_cuda_launches(counted)

        def launches() -> int:
            return sum(counted.values())
    with stub, torch.no_grad():
        backend._execute(x, last_stage)  # the first call: Triton records each specialization once
        per_call = launches()
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            backend._execute(x, last_stage)
            times.append(time.perf_counter() - start)
    return statistics.median(times), per_call


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=["triton", "cuda"], default="triton")
    parser.add_argument("--models", nargs="+", choices=MODEL_NAMES, default=["tiny", "b0"])
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"host time per forward, {args.family} backend, {args.dtype}, batch {args.batch}, {args.size} px "
          f"({os.cpu_count()} CPUs, {args.calls} calls, median)")
    for model in args.models:
        seconds, launches = host_time(args.family, model, DTYPES[args.dtype], args.batch, args.size, args.calls)
        print(f"{model:>6}: {seconds * 1e3:7.2f} ms, {launches} launches, {seconds / launches * 1e6:6.1f} µs a launch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
