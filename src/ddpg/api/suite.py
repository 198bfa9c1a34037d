"""``ddpg evaluate suite``: a YAML plan of (method, task, σ_y, steps) cells on one prior and one image folder,
each restored through :func:`ddpg.api.restore` and scored with :func:`ddpg.api.evaluate`, then one table per
task in the papers' layout (rows methods, columns σ_y) as Markdown, JSON and a PNG of sample crops.

The plan and its cells: :mod:`ddpg.api.suite_plan`. Each cell's outputs live in
``<out>/cells/<task>/<method>_sy<σ_y>_n<steps>/`` (what ``ddpg restore`` writes, and ``evaluation/`` from
``ddpg evaluate``); its ``cell.json`` is written last and marks it finished: a
second run reuses it without restoring or scoring again, and an interrupted cell resumes image by image.
A cell is reused when its settings (prior name, images, method, task, σ_y, steps, hyper, seed) match and it was
restored with the prior's current weights (the checkpoint sha256 in cell.json's ``prior_record``) and with the
plan's operator for its task (cell.json's ``operator``); a cell made with other settings, weights or operator is
refused, never overwritten. Every method of a task is restored from the same measurements: the suite passes
the plan's operator to ``restore`` rather than letting each method take its own preset's (DPS's presets, for
one, blur with a wider Gaussian than DDRM's).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch.distributed as dist

from ddpg.api.denoisers import make_denoiser
from ddpg.api.evaluation import FeatureSource, evaluate
from ddpg.api.outputs import output_folder
from ddpg.api.report import NullProgress, Report
from ddpg.api.restoration import restore
from ddpg.api.settings import apply_hyper, resolve_settings
from ddpg.api.suite_plan import (
    CELL_KIND,
    CELL_RECORD,
    Cell,
    Plan,
    cell_operator,
    cell_settings,
    operator_identity,
    planned_operator,
    shared_part,
)
from ddpg.api.suite_tables import write_tables
from ddpg.errors import ConfigError, InputError, ParameterError
from ddpg.io import read_json, save_json
from ddpg.models.checkpoints import REGISTRY
from ddpg.runtime import distributed


class CountingDenoiser:
    """A denoiser that counts the samples it evaluates (one per batch row per call), else the wrapped one."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.evaluations = 0

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, x_t, t):
        self.evaluations += int(x_t.shape[0])
        return self.inner(x_t, t)

    def model_output(self, x_t, t):
        self.evaluations += int(x_t.shape[0])
        return self.inner.model_output(x_t, t)


def finished_cell(plan: Plan, cell: Cell) -> dict | None:
    """The record of a finished cell, None when it is not finished; ConfigError when its folder holds a cell made
    with other settings (nothing there is overwritten)."""
    path = plan.cell_dir(cell) / CELL_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    if not isinstance(record, dict) or record.get("settings") != cell_settings(plan, cell):
        raise ConfigError(f"{path}: this cell was made with other settings ({record.get('settings')}); move the "
                          f"folder away or choose another 'out' for the plan")
    made, now = (record.get("prior_record") or {}).get("checkpoint_sha256"), _weights_sha256(plan.prior)
    if made != now:
        raise ConfigError(f"{path}: this cell was restored with other {plan.prior} weights (sha256 {made}, now "
                          f"{now}); move the folder away or choose another 'out' for the plan")
    settings = apply_hyper(resolve_settings(cell.task, cell.method, None, plan.prior, cell.sigma_y, cell.steps),
                           dict(cell.hyper), False)
    # records written before the suite passed one operator per task name none: restore took the preset's
    made_with = record.get("operator") or operator_identity(settings.operator)
    wanted = planned_operator(plan, cell)
    if made_with != wanted:
        raise ConfigError(f"{path}: this cell was restored with another {cell.task} operator ({made_with}) than the "
                          f"plan's ({wanted}); move the folder away or choose another 'out' for the plan")
    used = record.get("hyper") or {}
    changed = sorted(k for k in {*used, *settings.hyper} if used.get(k) != settings.hyper.get(k))
    if changed:
        raise ConfigError(f"{path}: this cell was restored with other hyper-parameters than ddpg restore takes now "
                          f"(preset {settings.preset}): " + ", ".join(f"{k} {used.get(k)} → {settings.hyper.get(k)}"
                                                                       for k in changed)
                          + "; move the folder away or choose another 'out' for the plan")
    return record


def _weights_sha256(prior: str) -> str | None:
    """The sha256 of a named prior's registered weights (None for the analytic prior), as sidecars record it."""
    entry = REGISTRY.get(prior)
    return entry.sha256 if entry is not None else None


def restore_cell(plan: Plan, cell: Cell, denoiser, *, shard: tuple[int, int] = (0, 1), progress=None) -> dict:
    """Restore this rank's share of the cell's images (resuming: images with outputs are skipped) and return
    {done, skipped, failed, evaluations (denoiser samples), interrupted}."""
    counter = CountingDenoiser(denoiser)
    report = restore(plan.files[:cell.images], plan.cell_dir(cell), prior=plan.prior, method=cell.method,
                     task=cell.task, sigma_y=cell.sigma_y, steps=cell.steps, hyper=dict(cell.hyper) or None,
                     seed=plan.seed, operator=cell_operator(plan, cell), batch_size=plan.batch_size,
                     device=plan.device, skip_existing=True,
                     shard=shard, progress=progress, denoiser=counter)
    return {"done": report.done, "skipped": report.skipped, "failed": [list(f) for f in report.failed],
            "evaluations": counter.evaluations, "interrupted": report.interrupted}


def _restore_stats(celldir: Path, names: list[str]) -> dict:
    """From the sidecars: the images restored, mean sampler seconds per image, the baseline's mean PSNR (bicubic
    or Tikhonov, on the same measurements, as ``restore`` computes it), and the preset, hyper-parameters, prior
    record and versions the restorations used (the first image's)."""
    done = [Path(n).stem for n in names if (celldir / f"{Path(n).stem}.json").is_file()
            and (celldir / f"{Path(n).stem}_restored.png").is_file()]  # as restore's skip_existing
    sidecars = [read_json(celldir / f"{stem}.json") for stem in done]
    seconds = [s["timings_s"]["restore_per_image"] for s in sidecars]
    baseline = [s["metrics"]["baseline_psnr"] for s in sidecars if "baseline_psnr" in s.get("metrics", {})]
    first = sidecars[0] if sidecars else {}
    return {"restored": len(sidecars), "seconds_per_image": sum(seconds) / len(seconds) if seconds else None,
            "baseline": {"name": first.get("metrics", {}).get("baseline"),
                         "psnr": sum(baseline) / len(baseline) if baseline else None},
            "preset": first.get("preset"), "hyper": first.get("hyper"), "prior_record": first.get("prior"),
            "device": first.get("device"), "versions": first.get("versions"),
            "operators": [shared_part(s["operator"]) for s in sidecars]}


def score_cell(plan: Plan, cell: Cell, restored: dict, *, inception_features=None) -> dict:
    """Score a restored cell with :func:`ddpg.api.evaluate` and write its record (last)."""
    celldir = plan.cell_dir(cell)
    names = [f.name for f in plan.files[:cell.images]]
    stats = _restore_stats(celldir, names)
    if stats["restored"] < len(names):
        raise InputError(f"{celldir}: {len(names) - stats['restored']} of {len(names)} images are not restored "
                         "(see the failures above); run the suite again to retry them")
    wanted = planned_operator(plan, cell)
    other = next((op for op in stats.pop("operators") if any(op.get(k) != v for k, v in wanted.items())), None)
    if other is not None:
        raise InputError(f"{celldir}: restored with another {cell.task} operator ({other}) than the plan's "
                         f"({wanted}); move the folder away and run the suite again")
    report = evaluate(celldir, plan.dataset, celldir / "evaluation", labels=[cell.method],
                      images=[Path(n).stem for n in names], inception=plan.inception,
                      features=inception_features, giqa_components=plan.giqa_components, giqa_pca=plan.giqa_pca)
    summary = report.extra["summary"]
    record = {"kind": CELL_KIND, "settings": cell_settings(plan, cell), "operator": wanted, **stats,
              "nfe_per_image": restored.get("nfe_per_image"), "metrics": summary["methods"][cell.method],
              "notes": summary["notes"], "evaluation": str(celldir / "evaluation")}
    save_json(record, celldir / CELL_RECORD)
    return record


def run_suite(plan: Plan, *, progress=None, restore: bool = True, score: bool = True, rescore: bool = False,
              features=None) -> Report:
    """Run every cell of ``plan`` not finished yet (restore on this rank's share, then score on rank 0), then
    write the tables. Under torchrun the ranks share each cell's images as ``restore`` shares its inputs.
    ``restore=False`` scores only the cells whose restorations are all there (the others stay pending: a run in
    another process may be making them); ``score=False`` only restores; ``rescore`` scores finished cells again
    (e.g. once the Inception weights are there). ``features``: the Inception FeatureSource to score with
    (default: the plan's weights)."""
    progress = progress or NullProgress()
    ctx = distributed.dist_context(plan.device) if restore and distributed.launched_by_torchrun() else None
    rank, world = (ctx.rank, ctx.world_size) if ctx else (0, 1)
    plan.device = str(ctx.device) if ctx else plan.device
    report = Report()
    denoiser = None
    try:
        for cell in plan.cells:
            if finished_cell(plan, cell) is not None and not rescore:
                report.skipped.append(str(plan.cell_dir(cell)))
                continue
            if restore:
                denoiser = denoiser or make_denoiser(plan.prior, None, "torch", None, plan.device)
                restored = _restore_on_ranks(plan, cell, denoiser, (rank, world), progress, report)
                if restored is None:  # interrupted (every rank stops), or another rank's turn to wait
                    if report.interrupted:
                        break
                    continue
            else:
                names = [f.name for f in plan.files[:cell.images]]
                if _restore_stats(plan.cell_dir(cell), names)["restored"] < len(names):
                    continue
                restored = {"nfe_per_image": _previous_nfe(plan, cell)}
            if not score:
                continue
            if features is None:
                features = FeatureSource(plan.inception, plan.device)
            try:
                score_cell(plan, cell, restored, inception_features=features)
            except (InputError, ParameterError) as exc:  # e.g. its evaluation folder in use by another run
                report.failed.append((str(plan.cell_dir(cell)), str(exc)))
                continue
            report.done.append(str(plan.cell_dir(cell)))
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if ctx is not None:
            distributed.finish()
    if rank == 0 and score:
        report.extra = write_tables(plan)
    return report


def _restore_on_ranks(plan: Plan, cell: Cell, denoiser, shard: tuple[int, int], progress, report: Report
                      ) -> dict | None:
    """Restore a cell across the ranks; on rank 0 {nfe_per_image} (counted over the images restored now, else
    the earlier count), None on the other ranks and when interrupted (``report.interrupted`` on every rank)."""
    start = time.perf_counter()
    # one process locks the cell's folder in restore; the ranks of a torchrun job share rank 0's lock
    with output_folder(plan.cell_dir(cell), "out", shard) if shard[1] > 1 else nullcontext():
        mine = restore_cell(plan, cell, denoiser, shard=shard, progress=progress)
    merged = distributed.gather_summary({**mine, "wall_s": time.perf_counter() - start})
    stop = [merged["interrupted"] if merged is not None else False]
    if shard[1] > 1:  # rank 0 decides for everyone, so no rank waits at a collective the others left
        dist.broadcast_object_list(stop, src=0)
    report.interrupted = bool(stop[0])
    if merged is None or report.interrupted:
        return None
    report.failed.extend(tuple(f) for f in merged["failed"])
    samples = sum(r["evaluations"] for r in merged["ranks"])
    new = len(merged["done"])
    restored = {"nfe_per_image": samples / new if new else _previous_nfe(plan, cell)}
    _save_progress(plan, cell, restored)
    return restored


PROGRESS_RECORD = "restore_progress.json"


def _save_progress(plan: Plan, cell: Cell, restored: dict) -> None:
    if restored["nfe_per_image"] is not None:
        save_json({"settings": cell_settings(plan, cell), **restored}, plan.cell_dir(cell) / PROGRESS_RECORD)


def _previous_nfe(plan: Plan, cell: Cell) -> float | None:
    """The NFE counted when an interrupted cell's earlier images were restored (None if never counted)."""
    path = plan.cell_dir(cell) / PROGRESS_RECORD
    if not path.is_file():
        return None
    record = read_json(path)
    return record.get("nfe_per_image") if isinstance(record, dict) else None


