"""The restoration quality gate of a low-precision export (bf16, int8): whole DDPG restorations, not ε alone.

The same faces are degraded and restored with the float32 engine and with the candidate, on the same
measurement noise and sampler noise (seed = face index); PSNR of each restoration against its clean face. The
gate passes when, for every task, the candidate's mean PSNR is at most ``GATE_BOUNDS_DB[precision]`` below the
float32 mean (a gain passes); the per-face worst drop is reported beside it. The full gate is
``GATE_TASKS`` × 100 steps × σ_y 0.05 on the 32 face64 dev faces; ``faces``/``steps`` may be fewer (the report
says what ran).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ddpg.errors import InputError
from ddpg.io import load_image
from ddpg.metrics import psnr
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, find_preset, load_preset

GATE_TASKS = ("sr4", "deblur_gauss")
GATE_SIGMA_Y = 0.05
GATE_STEPS = 100
GATE_BOUNDS_DB = {"fp32": 0.0, "bf16": 0.1, "int8": 0.2}  # allowed drop of the mean PSNR below float32's
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_faces(folder: str | Path, limit: int | None = None) -> torch.Tensor:
    """The first ``limit`` images of ``folder`` (sorted by name) as (N,3,H,W) in [-1, 1]; InputError naming the
    folder when it holds none or their sizes differ."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    images = [load_image(p) for p in files]
    if len({tuple(im.shape) for im in images}) > 1:
        raise InputError(f"{folder}: images of different sizes; the gate needs the prior's size")
    return torch.stack(images) * 2 - 1


def restorer_for(denoiser, task: str, steps: int, sigma_y: float = GATE_SIGMA_Y, size: int = 64) -> Restorer:
    """A DDPG restorer of ``task`` with the prior's preset hyper-parameters when it has one (else the method's
    defaults), with the task's FFT operator (sr4, deblur_gauss)."""
    name = find_preset("ddpg", denoiser.name, task, sigma_y, steps) if denoiser.name else None
    hyper = load_preset(name).hyper if name else {}
    return Restorer(denoiser, make_operator(task, size, impl="fft"), method="ddpg", sigma_y=sigma_y, steps=steps,
                    hyper=hyper)


def restore_faces(denoiser, faces: torch.Tensor, task: str, steps: int, batch: int = 8,
                  first_seed: int = 0) -> torch.Tensor:
    """DDPG restorations (N,3,H,W) in [-1, 1] of ``faces`` degraded for ``task``; face i uses seed
    ``first_seed + i``, so two denoisers see the same measurements and the same sampler noise."""
    restorer = restorer_for(denoiser, task, steps, size=faces.shape[-1])
    out = []
    for start in range(0, len(faces), batch):
        seeds = list(range(first_seed + start, first_seed + min(start + batch, len(faces))))
        chunk = faces[start: start + len(seeds)]
        with torch.no_grad():
            out.append(restorer.restore(restorer.degrade(chunk, seeds), seeds))
    return torch.cat(out)


def face_psnrs(restored: torch.Tensor, faces: torch.Tensor) -> list[float]:
    """PSNR (dB) of each restoration against its clean face, both in [-1, 1]."""
    return [psnr((restored[i] + 1) / 2, (faces[i] + 1) / 2) for i in range(len(faces))]


@dataclass
class GateReport:
    """A candidate precision against float32 on the same restorations. ``per_task[task]``: fp32 and candidate
    mean PSNR (dB), ``drop`` (fp32 mean − candidate mean), ``worst_drop`` and ``worst_face`` (its index)."""

    precision: str
    bound_db: float
    faces: int
    steps: int
    sigma_y: float
    per_task: dict[str, dict[str, float]]
    passed: bool
    seconds: float

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        rows = "; ".join(f"{task}: fp32 {r['fp32_mean']:.2f} dB, {self.precision} {r['mean']:.2f} dB, mean drop "
                         f"{r['drop']:+.3f} dB, worst face drop {r['worst_drop']:+.3f} dB (face {int(r['worst_face'])})"
                         for task, r in self.per_task.items())
        return (f"quality gate {verdict} ({self.precision}: mean PSNR drop ≤ {self.bound_db:g} dB vs fp32; "
                f"{self.faces} faces, {self.steps} steps, σ_y {self.sigma_y:g}): {rows}")

    def to_dict(self) -> dict:
        return asdict(self)


def task_row(reference: Sequence[float], candidate: Sequence[float]) -> dict[str, float]:
    """The gate's figures for one task from per-face PSNRs of the float32 and candidate restorations."""
    drops = [r - c for r, c in zip(reference, candidate, strict=True)]
    worst = max(range(len(drops)), key=drops.__getitem__)
    n = len(drops)
    return {"fp32_mean": sum(reference) / n, "mean": sum(candidate) / n, "drop": sum(drops) / n,
            "worst_drop": drops[worst], "worst_face": float(worst)}


def quality_gate(candidate, reference, faces: torch.Tensor, precision: str, *, steps: int = GATE_STEPS,
                 tasks: Sequence[str] = GATE_TASKS, batch: int = 8, reference_psnrs: dict | None = None,
                 log: Callable[[str], None] | None = None) -> GateReport:
    """Gate ``candidate`` (a denoiser of ``precision``) against ``reference`` (the float32 one) on ``faces``
    (N,3,H,W in [-1, 1]). ``reference_psnrs`` (task → per-face PSNRs, from :func:`reference_gate_psnrs`)
    reuses the float32 restorations across candidates."""
    log = log or (lambda message: None)
    start = time.perf_counter()
    reference_psnrs = reference_psnrs or reference_gate_psnrs(reference, faces, steps=steps, tasks=tasks,
                                                              batch=batch)
    per_task = {}
    for task in tasks:
        got = face_psnrs(restore_faces(candidate, faces, task, steps, batch), faces)
        per_task[task] = task_row(reference_psnrs[task], got)
        log(f"gate {precision} {task}: mean {per_task[task]['mean']:.2f} dB (fp32 {per_task[task]['fp32_mean']:.2f})")
    bound = GATE_BOUNDS_DB[precision]
    passed = all(row["drop"] <= bound for row in per_task.values())
    return GateReport(precision, bound, len(faces), steps, GATE_SIGMA_Y, per_task, passed,
                      round(time.perf_counter() - start, 1))


def reference_gate_psnrs(reference, faces: torch.Tensor, *, steps: int = GATE_STEPS,
                         tasks: Sequence[str] = GATE_TASKS, batch: int = 8) -> dict[str, list[float]]:
    """task → per-face PSNRs of the float32 restorations (what every candidate is compared with)."""
    return {task: face_psnrs(restore_faces(reference, faces, task, steps, batch), faces) for task in tasks}
