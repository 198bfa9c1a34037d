"""Tiles on a real prior (#32): face64 on 2×2 mosaics of dev faces (128×128), SR ×4, σ_y 0.05.

For each mosaic: the untiled 128-px UNet pass, 64-px tiles with overlap 16 (tiles at 0, 32, 64: the middle ones
straddle the faces) and with overlap 0 (tiles aligned with the faces), and each face restored alone at 64 px.
Reported: PSNR against the ground truth; the seam ratio (:func:`seam_ratio`: the mean absolute gradient of
(restored − truth) across the tile borders over its mean elsewhere, the faces' own borders left out of both);
each face's PSNR in the aligned mosaic against its own restoration's. Then the cost behind ``--tile auto``'s
ratio: one UNet pass over an image of side s, untiled and in 64-px tiles (overlap 16), median of three.
Writes ``<out>.json`` and ``<out>.md``:

    python benchmarks/tiling_faces.py --out benchmarks/results/tiling_faces_cpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from ddpg.io import load_image
from ddpg.models import as_denoiser, load_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.tiling import TiledDenoiser
from deblur_motion_batching import load_average, machine, write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gaussian_oracle import psnr  # noqa: E402  (PSNR of [-1, 1] batches, the tests' one copy)
from tiling_measures import FACES, mosaic, seam_ratio, tile_borders  # noqa: E402  (the tests' measures)


def restore(den, x: torch.Tensor, seeds: list[int], steps: int) -> torch.Tensor:
    """IDPG restorations (B,3,H,W) [-1, 1] of SR ×4 measurements of x (B,3,H,W) in [-1, 1], σ_y 0.05."""
    op = make_operator("sr4", x.shape[-1])
    r = Restorer(den, op, method="idpg", sigma_y=0.05, steps=steps)
    return r.restore(r.degrade(x, seeds), seeds)


def quality(den, mosaics: int, steps: int) -> dict:
    faces = [load_image(f) * 2 - 1 for f in FACES[:4 * mosaics]]
    x = torch.stack([mosaic(faces[4 * i:4 * i + 4]) for i in range(mosaics)])
    seeds = list(range(mosaics))
    runs = {"untiled": den, "tiles 64, overlap 16": TiledDenoiser(den, 64, 16, 16),
            "tiles 64, overlap 0 (aligned)": TiledDenoiser(den, 64, 0, 16)}
    out: dict = {}
    for label, d in runs.items():
        t0 = time.perf_counter()
        restored = restore(d, x, seeds, steps)
        borders = [32, 96] if d is den else tile_borders(d, 128)  # untiled: where the straddling tiles' edges lie
        out[label] = {"psnr": round(psnr(restored.clamp(-1, 1), x), 2), "borders": borders,
                      "seam_ratio": round(seam_ratio(restored - x, borders), 3),
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(label, out[label], flush=True)
        if label.endswith("(aligned)"):
            aligned = restored
    alone = restore(den, torch.stack(faces), list(range(100, 100 + len(faces))), steps)
    per_face = []
    for i, face in enumerate(faces):
        m, q = divmod(i, 4)
        r, c = divmod(q, 2)
        tile = aligned[m, :, 64 * r:64 * r + 64, 64 * c:64 * c + 64]
        per_face.append({"face": FACES[i].name, "aligned_tile": round(psnr(tile.clamp(-1, 1), face), 2),
                         "alone": round(psnr(alone[i].clamp(-1, 1), face), 2)})
    out["faces"] = per_face
    return out


def unet_cost(den, sizes: list[int]) -> list[dict]:
    """Seconds of one UNet pass (t = 500) over an image of each side, untiled and in 64-px tiles (overlap 16)."""
    rows = []
    tiled = TiledDenoiser(den, 64, 16, 16)
    for s in sizes:
        x, t = torch.randn(1, 3, s, s, generator=torch.Generator().manual_seed(s)), torch.tensor([500.0])
        row = {"side": s, "tiles": tiled.layout((s, s)).count}
        for label, d in (("untiled_s", den), ("tiled_s", tiled)):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                d(x, t)
                times.append(time.perf_counter() - t0)
            row[label] = round(statistics.median(times), 3)
        rows.append(row)
        print(row, flush=True)
    return rows


def write(out: Path, record: dict) -> None:
    q = record["quality"]
    lines = ["| UNet pass | PSNR (dB) | seam ratio | borders | s |", "|---|---|---|---|---|"]
    for label, r in q.items():
        if label != "faces":
            lines.append(f"| {label} | {r['psnr']:.2f} | {r['seam_ratio']:.3f} | {r['borders']} | {r['seconds']} |")
    diffs = [f["aligned_tile"] - f["alone"] for f in q["faces"]]
    lines += ["", "Seam ratio: mean |∇(restored − truth)| across the tile borders over its mean elsewhere (the faces' "
              "own border at 64 in neither; untiled: at 32 and 96 for comparison).", "",
              f"Aligned tiles against each face restored alone: mean {statistics.mean(diffs):+.2f} dB, range "
              f"{min(diffs):+.2f} to {max(diffs):+.2f} dB over {len(diffs)} faces.", "",
              "| side | tiles (64 px, overlap 16) | untiled UNet pass s | tiled UNet pass s |", "|---|---|---|---|"]
    for r in record["cost"]:
        lines.append(f"| {r['side']} | {r['tiles']} | {r['untiled_s']:.3f} | {r['tiled_s']:.3f} |")
    write_record(out, record, f"face64 tiles on 2×2 face mosaics ({record['mosaics']} mosaics of 128×128, SR ×4, "
                 f"σ_y 0.05, IDPG, {record['steps']} steps)", "one thread", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mosaics", type=int, default=2)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--sizes", default="64,80,96,112,128,192,256")
    args = parser.parse_args()
    torch.set_num_threads(1)
    den = as_denoiser(load_prior("face64"))
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "mosaics": args.mosaics, "steps": args.steps, "machine": machine()}
    with torch.no_grad():
        record["quality"] = quality(den, args.mosaics, args.steps)
        record["cost"] = unet_cost(den, [int(s) for s in args.sizes.split(",")])
    record["load_after"] = load_average()
    write(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
