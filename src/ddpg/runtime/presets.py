"""Paper presets as data: ``configs/presets/<method>.yaml`` hold each method's table of settings.

A preset is named ``method/prior/task/sigma_y`` (e.g. ``ddpg/celeba_hq/sr4/0.05``). Each method file has
optional ``defaults`` (deviations from the method's params dataclass shared by its rows; the files hold only
values that differ from the dataclass defaults), ``tasks`` (task name → operator parameters),
``settings`` (the table rows) and ``prior_aliases`` (priors that reuse another prior's rows, e.g. face64 and
gaussian take the CelebA-HQ settings). A row with ``at_steps: N`` is a variant of its preset for runs of N
steps, named ``method/prior/task/sigma_y@N``: :func:`find_preset` picks it when a run asks for N steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from importlib import resources

import yaml

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError

from .samplers import get_sampler


@dataclass(frozen=True)
class Preset:
    name: str
    method: str
    prior: str
    task: str
    operator: dict
    sigma_y: float
    steps: int = 100
    hyper: dict = field(default_factory=dict)
    source: str = ""
    at_steps: int | None = None  # a variant for runs of this many steps

    def to_dict(self) -> dict:
        return asdict(self)


def sigma_key(sigma_y: float) -> str:
    return f"{float(sigma_y):g}"


def variant_name(name: str, steps: int | None) -> str:
    """The name of preset ``name``'s variant for runs of ``steps`` steps (``name`` itself for None)."""
    return name if steps is None else f"{name}@{steps}"


def _method_files() -> list[dict]:
    folder = resources.files("ddpg.configs").joinpath("presets")
    items = sorted((i for i in folder.iterdir() if i.name.endswith(".yaml")), key=lambda i: i.name)
    return [yaml.safe_load(item.read_text()) for item in items]


@lru_cache(maxsize=1)
def _task_tables() -> dict[str, dict[str, dict]]:
    """method → task name → operator parameters (``task`` holds the operator's make_operator task)."""
    return {doc["method"]: doc["tasks"] for doc in _method_files()}


@lru_cache(maxsize=1)
def _catalogue() -> dict[str, Preset]:
    presets: dict[str, Preset] = {}
    for doc in _method_files():
        method = doc["method"]
        rows = doc["settings"]
        base = {**method_defaults(method), **doc.get("defaults", {})}
        for row in rows:
            priors = [row["prior"]] + [a for a, target in doc.get("prior_aliases", {}).items()
                                       if target == row["prior"]]
            at_steps = row.get("at_steps")
            for prior in priors:
                hyper = {**base, **{k: v for k, v in row.items() if k not in ROW_KEYS}}
                name = variant_name(f"{method}/{prior}/{row['task']}/{sigma_key(row['sigma_y'])}", at_steps)
                source = row.get("source") or (doc.get("source", "") if prior == row["prior"] else
                                               f"{doc.get('source', '')} (settings of {row['prior']})")
                steps = at_steps if at_steps is not None else row.get("steps", doc.get("steps", 100))
                presets[name] = Preset(name, method, prior, row["task"], dict(doc["tasks"][row["task"]]),
                                       float(row["sigma_y"]), int(steps), hyper, source.strip(), at_steps)
    return presets


ROW_KEYS = ("prior", "task", "sigma_y", "steps", "at_steps", "source")  # a row's keys that are not hyper


def method_defaults(method: str) -> dict:
    """Every hyper-parameter of ``method`` with its default, from the method's params dataclass."""
    spec = get_sampler(method)
    return {f.name: f.default for f in fields(spec.params) if f.name in spec.hyper_names}


def list_presets(method: str | None = None, prior: str | None = None, task: str | None = None) -> list[str]:
    return [n for n, p in _catalogue().items()
            if (method is None or p.method == method) and (prior is None or p.prior == prior)
            and (task is None or p.task == task)]


def load_preset(name: str, **overrides) -> Preset:
    """A preset by name, with fields overridden one by one: ``sigma_y`` (>= 0), ``steps`` (>= 1), ``prior``,
    ``task`` (another task of the method's table: its operator parameters), ``operator`` (a dict merged into
    the operator parameters, e.g. ``operator={"seed": 10}``) or any hyper-parameter of the method."""
    catalogue = _catalogue()
    if name not in catalogue:
        close = [n for n in catalogue if n.startswith(name.rsplit("/", 1)[0])][:6]
        hint = f"; similar: {', '.join(close)}" if close else "; see `ddpg presets list`"
        raise ConfigError(f"unknown preset {name!r}{hint}")
    preset = catalogue[name]
    hyper_names = set(get_sampler(preset.method).hyper_names) | set(preset.hyper)
    top = {k: v for k, v in overrides.items() if k in ("sigma_y", "steps", "prior", "operator", "task")}
    hyper = {k: v for k, v in overrides.items() if k not in top}
    unknown = set(hyper) - hyper_names
    if unknown:
        raise ConfigError(f"preset {name}: unknown field(s) {sorted(unknown)}; preset fields: sigma_y, steps, "
                          f"prior, task, operator; hyper-parameters of {preset.method}: {sorted(hyper_names)}")
    if "sigma_y" in top:
        top["sigma_y"] = check_sigma_y(top["sigma_y"], f"preset {name}: sigma_y")
    if "steps" in top and (isinstance(top["steps"], bool) or not isinstance(top["steps"], int)
                           or top["steps"] < 1):
        raise ConfigError(f"preset {name}: steps must be a positive integer, got {top['steps']!r}")
    operator = dict(preset.operator)
    if "task" in top:
        tasks = _task_tables()[preset.method]
        if top["task"] not in tasks:
            raise ConfigError(f"preset {name}: unknown task {top['task']!r}; tasks of {preset.method}: "
                              f"{sorted(tasks)}")
        operator = dict(tasks[top["task"]])
    if "operator" in top:
        if not isinstance(top["operator"], dict):
            raise ConfigError(f"preset {name}: operator must be a dict of operator parameters, "
                              f"got {type(top['operator']).__name__}")
        operator.update(top["operator"])
    top["operator"] = operator
    return replace(preset, **top, hyper={**preset.hyper, **hyper})


def find_preset(method: str, prior: str, task: str, sigma_y: float, steps: int | None = None) -> str | None:
    """The preset for these settings, or the same method/prior/task at the nearest σ_y; its variant for
    ``steps`` when it has one."""
    catalogue = _catalogue()
    name = f"{method}/{prior}/{task}/{sigma_key(sigma_y)}"
    if name not in catalogue:
        options = [p for p in catalogue.values()
                   if (p.method, p.prior, p.task) == (method, prior, task) and p.at_steps is None]
        if not options:
            return None
        name = min(options, key=lambda p: abs(p.sigma_y - sigma_y)).name
    return variant_name(name, steps) if variant_name(name, steps) in catalogue else name
