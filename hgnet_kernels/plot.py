"""Latency-vs-batch plot of a benchmark run: one panel per model, one line per method and dtype."""
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_rows(rows, info, path) -> None:
    models = sorted({r.model for r in rows}, key=["tiny", "small", "base"].index)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        lines = defaultdict(list)
        for r in rows:
            if r.model == model and r.latency_ms:
                lines[(r.method, r.dtype)].append((r.batch, r.latency_ms))
        for (method, dtype), points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{method} {dtype}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency (ms, median)")
        ax.set_title(f"PPHGNet_{model}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{info.get('gpu') or info.get('cpu', info['device'])} · torch {info['torch']} · {info['date'][:10]}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
