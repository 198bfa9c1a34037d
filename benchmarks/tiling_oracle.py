"""Tiled UNet passes against the exact answer (#32): the analytic Gaussian prior is stationary, so its exact ε and
the closed-form posterior mean exist at any size. On 256×256 samples of it (SR ×4 and Gaussian deblurring by
circular FFT operators, σ_y 0.05), each method restores untiled and with 64-px tiles at several overlaps (and
with overlap 16 but no wrapped margin at the image's border); every restoration is scored against the posterior
mean and against the true images (PSNR, dB, [0, 1] scale, unclamped). Writes ``<out>.json`` and ``<out>.md``:

    python benchmarks/tiling_oracle.py --out benchmarks/results/tiling_oracle_cpu
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, load_preset
from ddpg.runtime.tiling import TiledDenoiser
from deblur_motion_batching import load_average, machine, write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gaussian_oracle import posterior_mean, psnr  # noqa: E402  (the tests' closed form, one copy)

OVERLAPS = (0, 8, 16, 32)


def variants(den) -> list[tuple[str, object]]:
    """(label, denoiser): untiled, 64-px tiles at each overlap, and overlap 16 without the wrapped margin."""
    return ([("untiled", den)] + [(f"tiles 64, overlap {o}", TiledDenoiser(den, 64, o, 64)) for o in OVERLAPS]
            + [("tiles 64, overlap 16, no wrap", TiledDenoiser(den, 64, 16, 64, wrap=False))])


def run(size: int, images: int, steps: int, methods: list[str], tasks: list[str]) -> list[dict]:
    prior = create_prior("gaussian")
    den = as_denoiser(prior)
    x = prior.sample(images, size, generator=torch.Generator().manual_seed(0))
    seeds = list(range(images))
    rows = []
    for task in tasks:
        op = make_operator(task, size, impl="fft")
        for method in methods:
            preset = load_preset(f"{method}/gaussian/{task}/0.05")
            y = Restorer(den, op, method=method, sigma_y=0.05, steps=steps).degrade(x, seeds)
            mean = posterior_mean(prior, op, y, 0.05)
            for label, d in variants(den):
                t0 = time.perf_counter()
                out = Restorer(d, op, method=method, sigma_y=0.05, steps=steps, hyper=preset.hyper).restore(y, seeds)
                rows.append({"task": task, "method": method, "variant": label,
                             "psnr_vs_mean": round(psnr(out, mean), 2), "psnr_vs_truth": round(psnr(out, x), 2),
                             "mean_vs_truth": round(psnr(mean, x), 2), "seconds": round(time.perf_counter() - t0, 2)})
                print(rows[-1], flush=True)
    return rows


def write(out: Path, record: dict) -> None:
    lines = ["PSNR (dB) of each restoration against the closed-form posterior mean and against the true images; "
             "the posterior mean itself scores the last column against them.", "",
             "| task | method | UNet pass | vs posterior mean | vs truth | posterior mean vs truth | s |",
             "|---|---|---|---|---|---|---|"]
    for r in record["rows"]:
        lines.append(f"| {r['task']} | {r['method']} | {r['variant']} | {r['psnr_vs_mean']:.2f} | "
                     f"{r['psnr_vs_truth']:.2f} | {r['mean_vs_truth']:.2f} | {r['seconds']:.1f} |")
    write_record(out, record, f"Tiled against untiled on the Gaussian oracle ({record['size']}×{record['size']}, "
                 f"{record['images']} images, {record['steps']} steps, σ_y 0.05)", "one thread", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--methods", default="idpg,ddpg")
    parser.add_argument("--tasks", default="sr4,deblur_gauss")
    args = parser.parse_args()
    torch.set_num_threads(1)
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "size": args.size,
              "images": args.images, "steps": args.steps, "machine": machine()}
    with torch.no_grad():
        record["rows"] = run(args.size, args.images, args.steps, args.methods.split(","), args.tasks.split(","))
    record["load_after"] = load_average()
    write(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
