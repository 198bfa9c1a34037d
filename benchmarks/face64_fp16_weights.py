"""The bundled face64 weights are stored as float16 safetensors: do restorations with them match the fp32
originals? Restores the 32 dev faces (tests/fixtures/faces64_dev) with both weight files (both computed in
float32, same measurements, same seeds) and reports the mean PSNR of each and their difference.

    python benchmarks/face64_fp16_weights.py --reference path/to/face64_ema.pt \
        --tasks sr4 --steps 20 --out benchmarks/results/face64_fp16_weights

``--reference``: the fp32 ``face64_ema.pt`` the fp16 file was made from (not in the repository). Writes
``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ddpg.io import load_image
from ddpg.metrics import psnr
from ddpg.models import as_denoiser, load_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, load_preset

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "fixtures" / "faces64_dev"


def restore_all(denoiser, faces: torch.Tensor, task: str, method: str, steps: int, sigma_y: float) -> list[float]:
    """Per-image PSNR (dB) of the restorations of ``faces`` (B,3,64,64) in [-1, 1], seeds 0..B-1."""
    operator = make_operator(task, 64, impl="fft")
    preset = load_preset(f"{method}/face64/{task}/{sigma_y}")
    restorer = Restorer(denoiser, operator, method=method, sigma_y=sigma_y, steps=steps, hyper=preset.hyper)
    seeds = list(range(len(faces)))
    y = restorer.degrade(faces, seeds)
    with torch.no_grad():
        out = restorer.restore(y, seeds)
    return [psnr(((o + 1) / 2).clamp(0, 1), (x + 1) / 2) for o, x in zip(out, faces, strict=True)]


def markdown(command: str, rows: list[dict]) -> str:
    """The results table of a run."""
    faces = rows[0]["faces"] if rows else 0
    lines = [f"# face64: fp16-stored vs fp32 weights on the {faces} dev faces", "", f"`{command}`", "",
             "| task | method | steps | σ_y | PSNR fp32 weights | PSNR fp16 weights | mean Δ (dB) "
             "| largest per-image abs Δ (dB) | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        a, b = r["mean_psnr"].values()
        lines.append(f"| {r['task']} | {r['method']} | {r['steps']} | {r['sigma_y']} | {a:.4f} | {b:.4f} | "
                     f"{r['mean_difference_db']:+.5f} | {r['max_abs_image_difference_db']:.4f} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", required=True, help="the fp32 face64_ema.pt")
    ap.add_argument("--tasks", default="sr4", help="comma-separated, e.g. sr4,deblur_gauss")
    ap.add_argument("--method", default="ddpg")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--sigma-y", type=float, default=0.05)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    files = sorted(FACES.glob("*.png"))
    faces = torch.stack([load_image(f) for f in files]) * 2 - 1
    weights = {"fp32 (face64_ema.pt)": as_denoiser(load_prior("face64", args.reference)),
               "fp16 safetensors (bundled)": as_denoiser(load_prior("face64"))}
    rows = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        start = time.perf_counter()
        per_image = {name: restore_all(d, faces, task, args.method, args.steps, args.sigma_y)
                     for name, d in weights.items()}
        ref, low = per_image.values()
        diffs = [b - a for a, b in zip(ref, low, strict=True)]
        rows.append({"task": task, "method": args.method, "steps": args.steps, "sigma_y": args.sigma_y,
                     "faces": len(files), "mean_psnr": {n: sum(v) / len(v) for n, v in per_image.items()},
                     "mean_difference_db": sum(diffs) / len(diffs), "max_abs_image_difference_db": max(map(abs, diffs)),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    command = "python benchmarks/face64_fp16_weights.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(command, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
