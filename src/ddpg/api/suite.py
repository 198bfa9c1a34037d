"""``ddpg evaluate suite``: a YAML plan of (method, task, σ_y, steps) cells on one prior and one image folder,
each restored through :func:`ddpg.api.restore` and scored with :func:`ddpg.api.evaluate`, then one table per
task in the papers' layout (rows methods, columns σ_y) as Markdown, JSON and a PNG of sample crops.

A plan (paths relative to the working folder the command runs in)::

    prior: face64                 # or a YAML config / the analytic "gaussian"
    dataset: tests/fixtures/faces64_dev
    out: benchmarks/results/eval_face64
    cells: null                   # where the cells live (default <out>/cells; two plans may share cells)
    seed: 0                       # image i is degraded and sampled with seed + i (as `ddpg restore`)
    images: 32                    # the first N images in sorted order (default: all)
    inception: null               # Inception weights for FID/KID/GIQA (default: the standard cache)
    giqa_components: 5            # GMM-GIQA mixture (full covariances), optionally after a PCA:
    giqa_pca: null                #   components × (dims + 1) reference images are needed
    device: cpu                   # also batch_size (1) and hyper (overrides for every cell)
    operators:                    # each task's operator, one for every method (make_operator parameters;
      deblur_gauss: {sigma: 3.0, kernel_size: 25}   # default: the task's paper operator, not each preset's)
    grid:                         # blocks, each the product of its lists; later blocks add cells
      - {methods: [ddpg, idpg], tasks: [sr4], sigma_y: [0.05, 0.0], steps: [100]}
      - {methods: [dps], tasks: [sr4], sigma_y: [0.05], steps: [100], images: 8}

Each cell's outputs live in ``<out>/cells/<task>/<method>_sy<σ_y>_n<steps>/`` (what ``ddpg restore`` writes,
and ``evaluation/`` from ``ddpg evaluate``); its ``cell.json`` is written last and marks it finished: a
second run reuses it without restoring or scoring again, and an interrupted cell resumes image by image.
A cell is reused when its settings (prior name, images, method, task, σ_y, steps, hyper, seed) match and it was
restored with the prior's current weights (the checkpoint sha256 in cell.json's ``prior_record``) and with the
plan's operator for its task (cell.json's ``operator``); a cell made with other settings, weights or operator is
refused, never overwritten. Every method of a task is restored from the same measurements: the suite passes
the plan's operator to ``restore`` rather than letting each method take its own preset's (DPS's presets, for
one, blur with a wider Gaussian than DDRM's).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ddpg.api.denoisers import check_device, make_denoiser
from ddpg.api.report import NullProgress, Report
from ddpg.api.restoration import restore
from ddpg.api.settings import apply_hyper, resolve_settings
from ddpg.errors import ConfigError, InputError
from ddpg.io import collect_inputs, save_json

CELL_RECORD = "cell.json"
CELL_KIND = "ddpg-suite-cell"
PLAN_KEYS = {"prior", "dataset", "out", "seed", "images", "inception", "grid", "device", "batch_size", "hyper",
             "giqa_components", "giqa_pca", "cells", "operators"}
BLOCK_KEYS = {"methods", "tasks", "sigma_y", "steps", "images", "hyper"}


@dataclass(frozen=True)
class Cell:
    """One restoration setting of a plan, run on the first ``images`` images of the dataset."""

    method: str
    task: str
    sigma_y: float
    steps: int
    images: int
    hyper: tuple = ()  # sorted (key, value) pairs

    @property
    def name(self) -> str:
        """The cell's folder name under ``cells/<task>/``."""
        extra = "".join(f"_{k}{v:g}" if isinstance(v, float) else f"_{k}{v}" for k, v in self.hyper)
        return f"{self.method}_sy{self.sigma_y:g}_n{self.steps}{extra}"


@dataclass
class Plan:
    """A validated suite plan (see the module docstring)."""

    prior: str
    dataset: Path
    out: Path
    cells: list[Cell]
    seed: int = 0
    inception: str | None = None
    device: str = "cpu"
    batch_size: int = 1
    giqa_components: int = 5
    giqa_pca: int | None = None
    source: str = ""  # the plan file
    files: list[Path] = field(default_factory=list)  # the dataset's images in sorted order
    cells_dir: Path | None = None  # where the cells live (default <out>/cells; plans may share one)
    operators: dict = field(default_factory=dict)  # task → make_operator parameters (default: the paper's)

    def cell_dir(self, cell: Cell) -> Path:
        return (self.cells_dir or self.out / "cells") / cell.task / cell.name


def _as_list(block: dict, key: str, where: str) -> list:
    value = block.get(key)
    if value is None:
        raise ConfigError(f"{where}: '{key}' is missing")
    return list(value) if isinstance(value, (list, tuple)) else [value]


def load_plan(path: str | Path, *, device: str | None = None, out: str | Path | None = None) -> Plan:
    """Read and check a suite plan; ``device``/``out`` override the plan's. Unknown keys, tasks and methods,
    a missing dataset or an empty grid raise ConfigError naming the plan file."""
    from ddpg.api.settings import CLI_TASKS, apply_operator
    from ddpg.errors import ParameterError
    from ddpg.runtime import SAMPLERS as METHODS

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the plan: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plan is a YAML mapping with prior, dataset, out and grid")
    unknown = set(data) - PLAN_KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown plan keys {sorted(unknown)}; known: {sorted(PLAN_KEYS)}")
    for key in ("prior", "dataset", "out", "grid"):
        if not data.get(key):
            raise ConfigError(f"{path}: '{key}' is missing")
    dataset = Path(data["dataset"])
    if not dataset.is_dir():
        raise ConfigError(f"{path}: dataset {dataset} is not a folder")
    files, _ = collect_inputs([dataset])
    files = [f for f in files if not f.stem.endswith(("_restored", "_observed", "_grid"))]
    if not files:
        raise ConfigError(f"{path}: dataset {dataset} holds no images")
    default_images = int(data.get("images") or len(files))
    base_hyper = dict(data.get("hyper") or {})
    cells: list[Cell] = []
    for i, block in enumerate(data["grid"]):
        where = f"{path}: grid block {i + 1}"
        if not isinstance(block, dict) or set(block) - BLOCK_KEYS:
            raise ConfigError(f"{where}: a mapping with keys from {sorted(BLOCK_KEYS)}")
        images = int(block.get("images", default_images))
        if not 1 <= images <= len(files):
            raise ConfigError(f"{where}: images {images} is not in 1..{len(files)} (the dataset's size)")
        hyper = tuple(sorted({**base_hyper, **(block.get("hyper") or {})}.items()))
        for method in _as_list(block, "methods", where):
            if method not in METHODS:
                raise ConfigError(f"{where}: unknown method {method!r}; choose from {', '.join(METHODS)}")
            for task in _as_list(block, "tasks", where):
                if task not in CLI_TASKS:
                    raise ConfigError(f"{where}: unknown task {task!r}; choose from {', '.join(CLI_TASKS)}")
                for sigma in _as_list(block, "sigma_y", where):
                    for steps in _as_list(block, "steps", where):
                        cell = Cell(method, task, float(sigma), int(steps), images, hyper)
                        if cell not in cells:
                            cells.append(cell)
    if not cells:
        raise ConfigError(f"{path}: the grid holds no cells")
    operators = data.get("operators") or {}
    if not isinstance(operators, dict):
        raise ConfigError(f"{path}: 'operators' maps tasks to their operator parameters, e.g. deblur_gauss: "
                          "{sigma: 3.0}")
    for task, params in operators.items():
        if task not in CLI_TASKS or not isinstance(params, dict):
            raise ConfigError(f"{path}: operators: {task!r} is not a task with a mapping of parameters; tasks: "
                              f"{', '.join(CLI_TASKS)}")
        try:
            apply_operator(resolve_settings(task, None, None, "", None, None), params)
        except ParameterError as exc:
            raise ConfigError(f"{path}: operators: {task}: {exc}") from exc
    plan = Plan(prior=str(data["prior"]), dataset=dataset, out=Path(out or data["out"]), cells=cells,
                seed=int(data.get("seed", 0)), inception=data.get("inception"),
                device=device or str(data.get("device", "cpu")), batch_size=int(data.get("batch_size", 1)),
                giqa_components=int(data.get("giqa_components", 5)), giqa_pca=data.get("giqa_pca"),
                source=str(path), files=files, cells_dir=Path(data["cells"]) if data.get("cells") else None,
                operators={task: dict(params) for task, params in operators.items()})
    check_device(plan.device)
    return plan


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


def cell_settings(plan: Plan, cell: Cell) -> dict:
    """What a finished cell must have been made with to be reused."""
    return {"prior": plan.prior, "dataset": str(plan.dataset), "images": [f.name for f in plan.files[:cell.images]],
            "method": cell.method, "task": cell.task, "sigma_y": cell.sigma_y, "steps": cell.steps,
            "hyper": dict(cell.hyper), "seed": plan.seed}


IDENTITY_SIZE = 256  # an operator's parameters do not depend on the image size; this one takes every paper kernel


def operator_identity(operator: dict) -> dict:
    """What decides a settings' operator (``{"task": name, **params}``) apart from the per-image choices (motion
    kernel seed, mask): the name and parameters of the operator it builds, defaults filled in."""
    from ddpg.operators import make_operator

    op = make_operator(operator["task"], IDENTITY_SIZE, **{k: v for k, v in operator.items() if k != "task"})
    return _shared_part({"name": op.name, **op.params})


def _shared_part(description: dict) -> dict:
    """An operator description (a sidecar's ``operator``) without its per-image entries, as JSON holds it."""
    from ddpg.api.settings import PER_IMAGE_OPERATOR_PARAMS

    skip = (*PER_IMAGE_OPERATOR_PARAMS, "kept")
    return json.loads(json.dumps({k: v for k, v in description.items() if k not in skip}))


def planned_operator(plan: Plan, cell: Cell) -> dict:
    """:func:`operator_identity` of the operator the plan gives the cell's task."""
    from ddpg.api.settings import apply_operator

    settings = apply_operator(resolve_settings(cell.task, cell.method, None, plan.prior, cell.sigma_y, cell.steps),
                              plan.operators.get(cell.task, {}))
    return operator_identity(settings.operator)


def cell_operator(plan: Plan, cell: Cell) -> dict:
    """The operator parameters the suite gives ``restore`` for the cell, every default spelled out (the plan's
    for the task, the same for every method)."""
    return {k: v for k, v in planned_operator(plan, cell).items() if k != "name"}


def finished_cell(plan: Plan, cell: Cell) -> dict | None:
    """The record of a finished cell, None when it is not finished; ConfigError when its folder holds a cell made
    with other settings (nothing there is overwritten)."""
    path = plan.cell_dir(cell) / CELL_RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("settings") != cell_settings(plan, cell):
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
    from ddpg.models.checkpoints import REGISTRY

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
    sidecars = [json.loads((celldir / f"{stem}.json").read_text()) for stem in done]
    seconds = [s["timings_s"]["restore_per_image"] for s in sidecars]
    baseline = [s["metrics"]["baseline_psnr"] for s in sidecars if "baseline_psnr" in s.get("metrics", {})]
    first = sidecars[0] if sidecars else {}
    return {"restored": len(sidecars), "seconds_per_image": sum(seconds) / len(seconds) if seconds else None,
            "baseline": {"name": first.get("metrics", {}).get("baseline"),
                         "psnr": sum(baseline) / len(baseline) if baseline else None},
            "preset": first.get("preset"), "hyper": first.get("hyper"), "prior_record": first.get("prior"),
            "device": first.get("device"), "versions": first.get("versions"),
            "operators": [_shared_part(s["operator"]) for s in sidecars]}


def score_cell(plan: Plan, cell: Cell, restored: dict, *, inception_features=None) -> dict:
    """Score a restored cell with :func:`ddpg.api.evaluate` and write its record (last)."""
    from ddpg.api.evaluation import evaluate

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
    from ddpg.runtime import distributed

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
                from ddpg.api.evaluation import FeatureSource

                features = FeatureSource(plan.inception, plan.device)
            try:
                score_cell(plan, cell, restored, inception_features=features)
            except InputError as exc:
                report.failed.append((str(plan.cell_dir(cell)), str(exc)))
                continue
            report.done.append(str(plan.cell_dir(cell)))
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        if ctx is not None:
            distributed.finish()
    if rank == 0 and score:
        from ddpg.api.suite_tables import write_tables

        report.extra = write_tables(plan)
    return report


def _restore_on_ranks(plan: Plan, cell: Cell, denoiser, shard: tuple[int, int], progress, report: Report
                      ) -> dict | None:
    """Restore a cell across the ranks; on rank 0 {nfe_per_image} (counted over the images restored now, else
    the earlier count), None on the other ranks and when interrupted (``report.interrupted`` on every rank)."""
    import torch.distributed as dist

    from ddpg.runtime import distributed

    start = time.perf_counter()
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
    return json.loads(path.read_text()).get("nfe_per_image")


