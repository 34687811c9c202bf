"""The picture of a benchmark run: one panel per (model, batch, dtype), a horizontal bar per method
(throughput, images/s), the speedup over eager written on each bar. Methods are named on the axis,
so there is no legend to cover the data; colours group eager, torch.compile and our backends."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

_COLOURS = {"eager": "#9e9e9e", "compile": "#4c72b0", "fused": "#dd8452"}


def _colour(method: str) -> str:
    return next((c for prefix, c in _COLOURS.items() if method.startswith(prefix)), "#55a868")


def plot_rows(rows, info, path) -> None:
    cases = []
    for r in rows:
        key = (r.model, r.batch, r.dtype)
        if key not in cases:
            cases.append(key)
    columns = min(len(cases), 3)
    lines = math.ceil(len(cases) / columns)
    height = max(len([r for r in rows if (r.model, r.batch, r.dtype) == cases[0]]), 4) * 0.32 + 1.2
    fig, axes = plt.subplots(lines, columns, figsize=(6.2 * columns, height * lines), squeeze=False)
    for ax, (model, batch, dtype) in zip(axes.flat, cases):
        case = [r for r in rows if (r.model, r.batch, r.dtype) == (model, batch, dtype)]
        names = [r.method for r in case]
        values = [r.images_per_s or 0.0 for r in case]
        ax.barh(range(len(case)), values, color=[_colour(n) for n in names])
        ax.set_yticks(range(len(case)), names, fontsize=8)
        ax.invert_yaxis()
        top = max(values) if any(values) else 1.0
        for i, r in enumerate(case):
            if not r.images_per_s:
                label = r.error.split(":")[0] if r.error else "not run"  # "failed" or "unavailable"
            else:
                label = f"{r.speedup_vs_eager:.2f}× eager" if r.speedup_vs_eager else f"{r.images_per_s:.0f}/s"
                if r.correct is False:
                    label += "  WRONG"
            ax.text((r.images_per_s or 0.0) + top * 0.01, i, label, va="center", fontsize=7)
        ax.set_xlim(0, top * 1.3)
        ax.set_xlabel("images / s (higher is better)", fontsize=8)
        ax.set_title(f"{model}  batch {batch}  {dtype}  ({case[0].size})", fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(cases):]:
        ax.axis("off")
    fig.suptitle(f"{info.get('gpu') or info.get('cpu', info['device'])} · torch {info['torch']} · {info['date'][:10]}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
