"""The bundled sample: a 64×64 face restored with the bundled face64 prior (``ddpg restore --sample``)."""

from __future__ import annotations

import json
from pathlib import Path

from ddpg.api.report import Report
from ddpg.api.restoration import restore
from ddpg.api.settings import image_params, operator_args, resolve_settings
from ddpg.checks import DEFAULT_SIGMA_Y
from ddpg.figures import comparison_grid
from ddpg.io import load_image, save_image
from ddpg.operators import baseline, make_operator
from ddpg.runtime.restorer import seeded_observations
from ddpg.samples import sample_path


def restore_sample(outdir: str | Path, *, task: str = "sr4", method: str = "ddpg", sigma_y: float = DEFAULT_SIGMA_Y,
                   steps: int | None = None, seed: int = 0, device: str = "cpu", threads: int | str = "auto",
                   progress=None) -> Report:
    """Degrade the bundled sample face, restore it with the bundled face64 prior, and write the
    restoration, the observation, a sidecar and a comparison grid (ground truth / observation / baseline /
    restoration). ``threads``: as :func:`~ddpg.api.restore`'s."""
    report = restore([sample_path()], outdir, task=task, prior="face64", method=method, sigma_y=sigma_y,
                     steps=steps, seed=seed, device=device, threads=threads, progress=progress)
    if report.done:
        outdir = Path(outdir)
        stem = sample_path().stem
        meta = json.loads((outdir / f"{stem}.json").read_text())
        gt = load_image(sample_path())
        settings = resolve_settings(task, method, None, "face64", sigma_y, steps)
        name, params, _ = operator_args(settings.operator, task, tuple(gt.shape[1:]), tuple(gt.shape[1:]),
                                        per_image=image_params(settings.operator, 0, seed), mask={}, kernel=None)
        op = make_operator(name, tuple(gt.shape[1:]), **params)
        y = seeded_observations(gt[None] * 2 - 1, op, settings.sigma_y, [seed])
        base = ((baseline(op, y)[0] + 1) / 2).clamp(0, 1)
        grid = comparison_grid([[gt, ((y[0] + 1) / 2).clamp(0, 1), base, load_image(outdir / f"{stem}_restored.png")]],
                               ["ground truth", "observation", meta["metrics"]["baseline"].split()[0], method])
        save_image(grid, outdir / f"{stem}_grid.png")
        report.extra = {"psnr": meta["metrics"]["psnr"], "baseline_psnr": meta["metrics"]["baseline_psnr"],
                        "grid": str(outdir / f"{stem}_grid.png")}
    return report
