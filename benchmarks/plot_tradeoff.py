"""The speed–quality trade-off of an evaluation suite swept over steps: PSNR (and LPIPS where measured) against
sampler seconds per image, one panel per task and metric, one line per method, each point labelled with its
steps. Reads the suite's tables.json; finished cells only.

    python benchmarks/plot_tradeoff.py benchmarks/results/eval_face64_steps/tables.json \
        -o benchmarks/results/eval_face64_steps/tradeoff.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def points(tables: dict) -> dict:
    """{task: {method: [(steps, seconds per image, psnr, lpips)], sorted by steps}} of the finished cells."""
    out: dict = {}
    for task, table in tables["tasks"].items():
        for row in table["rows"]:
            for cell in row["cells"].values():
                if cell is None or cell.get("pending"):
                    continue
                out.setdefault(task, {}).setdefault(row["method"], []).append(
                    (row["steps"], cell["seconds_per_image"], cell["psnr"], cell.get("lpips")))
    return {t: {m: sorted(v) for m, v in by.items()} for t, by in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = points(json.loads(args.tables.read_text()))
    if not data:
        raise SystemExit(f"{args.tables}: no finished cells to plot")
    metrics = ["psnr"] + (["lpips"] if any(p[3] is not None for by in data.values() for v in by.values()
                                           for p in v) else [])
    fig, axes = plt.subplots(len(metrics), len(data), figsize=(4.5 * len(data), 3.5 * len(metrics)), squeeze=False)
    for col, (task, by_method) in enumerate(data.items()):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            for method, pts in by_method.items():
                xs = [p[1] for p in pts]
                ys = [p[2] if metric == "psnr" else p[3] for p in pts]
                ax.plot(xs, ys, "o-", label=method)
                for p, x, y in zip(pts, xs, ys, strict=True):
                    ax.annotate(str(p[0]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_title(task)
            ax.set_xlabel("sampler seconds per image (CPU, shared)")
            ax.set_ylabel("PSNR (dB) ↑" if metric == "psnr" else "LPIPS ↓")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(f".{args.out.name}.part.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
