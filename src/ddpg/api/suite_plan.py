"""A ``ddpg evaluate suite`` plan: its YAML format, checked into :class:`Plan` and its :class:`Cell` s, and what
decides a cell (its settings and the one operator of its task).

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

Where each cell's outputs live and when a finished cell is reused: :mod:`ddpg.api.suite`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ddpg.api.denoisers import check_device
from ddpg.api.settings import CLI_TASKS, PER_IMAGE_OPERATOR_PARAMS, apply_operator, resolve_settings
from ddpg.errors import ConfigError, ParameterError
from ddpg.io import collect_inputs
from ddpg.operators import make_operator
from ddpg.runtime import SAMPLERS as METHODS

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


def cell_settings(plan: Plan, cell: Cell) -> dict:
    """What a finished cell must have been made with to be reused."""
    return {"prior": plan.prior, "dataset": str(plan.dataset), "images": [f.name for f in plan.files[:cell.images]],
            "method": cell.method, "task": cell.task, "sigma_y": cell.sigma_y, "steps": cell.steps,
            "hyper": dict(cell.hyper), "seed": plan.seed}


IDENTITY_SIZE = 256  # an operator's parameters do not depend on the image size; this one takes every paper kernel


def operator_identity(operator: dict) -> dict:
    """What decides a settings' operator (``{"task": name, **params}``) apart from the per-image choices (motion
    kernel seed, mask): the name and parameters of the operator it builds, defaults filled in."""
    op = make_operator(operator["task"], IDENTITY_SIZE, **{k: v for k, v in operator.items() if k != "task"})
    return shared_part({"name": op.name, **op.params})


def shared_part(description: dict) -> dict:
    """An operator description (a sidecar's ``operator``) without its per-image entries, as JSON holds it."""
    skip = (*PER_IMAGE_OPERATOR_PARAMS, "kept")
    return json.loads(json.dumps({k: v for k, v in description.items() if k not in skip}))


def planned_operator(plan: Plan, cell: Cell) -> dict:
    """:func:`operator_identity` of the operator the plan gives the cell's task."""
    settings = apply_operator(resolve_settings(cell.task, cell.method, None, plan.prior, cell.sigma_y, cell.steps),
                              plan.operators.get(cell.task, {}))
    return operator_identity(settings.operator)


def cell_operator(plan: Plan, cell: Cell) -> dict:
    """The operator parameters the suite gives ``restore`` for the cell, every default spelled out (the plan's
    for the task, the same for every method)."""
    return {k: v for k, v in planned_operator(plan, cell).items() if k != "name"}
