"""Where FusedPPHGNet[torch]'s time goes on this machine: torch.profiler, by op.

    python bench/profile_torch_backend.py [--model tiny] [--batch 1] [--size 224] [--out FILE]

Writes the op table (self CPU time, share, calls) with the machine and versions to ``--out``
(default: bench/results/profile-torch-<model>-b<batch>-<date>.txt) and prints it.
"""
import argparse
import os
import platform
import sys

import torch
import torch.profiler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hgnet_kernels as hk  # noqa: E402
from hgnet_kernels.bench import machine_info  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "base"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    fused = hk.FusedPPHGNet(hk.models.randomize_statistics(hk.PPHGNet(args.model)), backend="torch")
    x = torch.randn(args.batch, 3, args.size, args.size)
    for _ in range(3):
        fused(x)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.calls):
            fused(x)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    info = machine_info(torch.device("cpu"))
    header = (f"# FusedPPHGNet[torch] PPHGNet_{args.model} {args.batch}x3x{args.size}x{args.size} fp32, "
              f"{args.calls} calls\n# {info.get('cpu')} ({info['cpu_threads']} threads), torch {info['torch']}, "
              f"python {platform.python_version()}, {info['date']}\n")
    out = args.out or os.path.join("bench", "results", f"profile-torch-{args.model}-b{args.batch}-{info['date'][:10]}.txt")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(header + table + "\n")
    print(header + table)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
