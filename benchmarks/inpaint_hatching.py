"""Hatching in the hole of DDPG/IDPG inpainting on face64: ``ddpg.restore`` of the first ``--faces`` dev faces
(tests/fixtures/faces64_dev, 64×64, the default mask: a centred 32×32 box missing) for each configuration given,
and per configuration the high-frequency energy of the restored hole (mean squared Laplacian inside the box, a
pixel in from its edges) over the ground truth's (median and max over the faces; hatching shows as a ratio well
above 1, a smooth fill well below), the mean PSNR of the box and of the whole image.

    python benchmarks/inpaint_hatching.py --faces 4 --out benchmarks/results/inpaint_hatching \\
        '{"method": "idpg", "steps": 20, "hyper": {"step_size_mode": 1}}' '{"method": "idpg", "steps": 20}'

Each configuration is a JSON object of ``ddpg.restore`` options (prior face64 and task inpaint are set); one
process, one thread (``--threads``), all faces in one batch. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import ddpg
from ddpg.io import load_image

FACES = sorted((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces64_dev").glob("*.png"))
LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)


def hole_energy(image: torch.Tensor) -> float:
    """Mean squared Laplacian of (3, 64, 64) ``image`` in [0, 1] inside the centred 32×32 box, a pixel in."""
    return float(F.conv2d(image[None], LAPLACIAN, groups=3)[0][:, 16:46, 16:46].pow(2).mean())


def box_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(float((a[:, 16:48, 16:48] - b[:, 16:48, 16:48]).pow(2).mean()))


def measure(options: dict, faces: list[Path], threads: int) -> dict:
    """Restore ``faces`` with ``options``; the hole energy ratios and PSNRs."""
    with tempfile.TemporaryDirectory() as out:
        report = ddpg.restore([str(f) for f in faces], out, prior="face64", task="inpaint", batch_size=len(faces),
                              threads=threads, **options)
        assert not report.failed, report.failed
        ratios, boxes, whole, preset = [], [], [], None
        for f in faces:
            gt, restored = load_image(f), load_image(Path(out) / f"{f.stem}_restored.png")
            sidecar = json.loads((Path(out) / f"{f.stem}.json").read_text())
            ratios.append(hole_energy(restored) / hole_energy(gt))
            boxes.append(box_psnr(restored, gt))
            whole.append(sidecar["metrics"]["psnr"])
            preset = sidecar.get("preset")
    return {"options": options, "preset": preset, "hole_hf_ratio_median": round(statistics.median(ratios), 2),
            "hole_hf_ratio_max": round(max(ratios), 2), "hole_hf_ratios": [round(r, 2) for r in ratios],
            "box_psnr": round(statistics.mean(boxes), 2), "psnr": round(statistics.mean(whole), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("configs", nargs="+", help="JSON objects of ddpg.restore options")
    parser.add_argument("--faces", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for spec in args.configs:
        rows.append(measure(json.loads(spec), FACES[: args.faces], args.threads))
        print(rows[-1], file=sys.stderr, flush=True)
    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "faces": args.faces,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared; torch {torch.__version__}",
              "load_end": round(os.getloadavg()[0], 2), "rows": rows}
    lines = [f"# Inpainting hatching on face64 ({args.faces} dev faces)", "", f"`{report['command']}`", "",
             f"{report['machine']}; 1-min load at the end {report['load_end']}.", "",
             "| options | preset | hole HF / ground truth (median, max) | box PSNR dB | PSNR dB |",
             "|---|---|---|---|---|"]
    lines += [f"| `{json.dumps(r['options'])}` | {r['preset'] or '–'} | {r['hole_hf_ratio_median']}, "
              f"{r['hole_hf_ratio_max']} | {r['box_psnr']} | {r['psnr']} |" for r in rows]
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
