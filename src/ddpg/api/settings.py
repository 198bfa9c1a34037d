"""What decides a restoration apart from its input and seed: the prior (named by the user: :func:`no_prior_error`
lists the choices; :func:`size_note` says when an image is far from the prior's size), the task, method, preset,
σ_y, steps and hyper-parameters (:class:`Settings`), and the operator arguments of a task at an image's size."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

import yaml

from ddpg.checks import DEFAULT_SIGMA_Y, check_int, check_sigma_y
from ddpg.errors import ConfigError, DdpgError, ParameterError
from ddpg.models import PRIOR_NAMES
from ddpg.models.checkpoints import REGISTRY, local_path
from ddpg.operators.factory import load_array, normalised
from ddpg.operators.tasks import (
    CLI_TASKS,
    KERNEL_TASKS,
    MASK_TASKS,
    OPERATOR_OF_TASK,
    TASK_TABLE,
    check_impl,
    check_params,
    task_entry,
)
from ddpg.runtime import find_preset, get_sampler, load_preset
from ddpg.runtime.samplers import SAMPLERS

PRIOR_FAMILIES = ("celeba_hq", "imagenet256_uncond", "imagenet256_cond", "ffhq256", "face64", "gaussian")
PRIOR_IMAGES = {  # what each named prior was trained on: what it can restore
    "celeba_hq": "256-px faces, CelebA-HQ", "ffhq256": "256-px faces, FFHQ", "face64": "64-px faces",
    "imagenet256_uncond": "256-px photos of ImageNet's 1000 classes",
    "imagenet256_cond": "the same, one class at a time", "gaussian": "no images: an analytic baseline, not for photos"}
WHERE = ("bundled", "downloaded", "downloaded on first use", "no weights")  # where a prior's weights are
FAR_FROM_NATIVE = 2.0  # an image side over 2× the prior's native size, or under half of it, is far from it


def prior_choices() -> str:
    """Every named prior, what it was trained on and where its weights are (bundled, downloaded, downloaded on first
    use, none: analytic), the ones at hand first."""
    def where(name: str) -> str:
        entry = REGISTRY.get(name)
        if entry is None:
            return WHERE[3]
        return WHERE[0] if entry.bundled else WHERE[1] if local_path(entry).exists() else WHERE[2]

    places = {name: where(name) for name in PRIOR_NAMES}
    return "; ".join(f"{name} ({PRIOR_IMAGES[name]}; {places[name]})"
                     for name in sorted(PRIOR_NAMES, key=lambda n: WHERE.index(places[n])))


def no_prior_error() -> ParameterError:
    """The error of a restoration that names no prior (nor a preset, checkpoint or engine that would): no prior
    restores every photo, and a wrong one gives plausible-looking garbage, so the user picks."""
    return ParameterError("prior", "not given", f"name the prior your images fit: {prior_choices()}; or a prior "
                                                "config (.yaml), or a checkpoint whose prior is recognised")


def size_note(path: object, size: tuple[int, int], prior: str | None, native: int | None) -> str | None:
    """A note when an image restored at ``size`` (H, W, pixels) is far from the ``native`` side length the prior
    was trained on (:data:`FAR_FROM_NATIVE`), e.g. a 200×150 photo with face64 (64 px); None when it is near it or
    the prior has no native size."""
    if native is None or max(size) <= FAR_FROM_NATIVE * native and min(size) >= native / FAR_FROM_NATIVE:
        return None
    return (f"{path} is {size[1]}×{size[0]} px, far from the {native}×{native} images {_the_prior(prior)} was trained "
            f"on: expect a poor restoration. Crop and resize inputs to {native} px (the resize option), or choose a "
            "prior trained on images like yours")


def _the_prior(prior: str | None) -> str:
    return f"the prior {prior}" if prior else "the prior"


@dataclass
class Settings:
    """Everything that decides a restoration apart from the input and its seed."""

    task: str
    method: str
    preset: str | None
    sigma_y: float
    steps: int
    hyper: dict
    operator: dict  # preset operator parameters, "task" = make_operator task name


def check_task(task: str) -> str:
    """``task`` if it is one of :data:`CLI_TASKS` (a ParameterError of ``task`` otherwise)."""
    if task not in CLI_TASKS:
        raise ParameterError("task", task, f"unknown task; choose one of {', '.join(CLI_TASKS)}")
    return task


def check_task_files(task: str, mask: str | None, kernel: str | None) -> dict:
    """Refuse a mask or kernel the ``task`` does not use, or one that cannot be read, before any input is;
    returns :func:`parse_mask` of ``mask``."""
    mask_spec = parse_mask(mask)
    if mask is not None and task not in MASK_TASKS:
        raise ParameterError("mask", mask, f"applies to the {' and '.join(MASK_TASKS)} task, not {task}")
    if kernel is not None:
        if task not in KERNEL_TASKS:
            raise ParameterError("kernel", kernel, f"applies to {' and '.join(KERNEL_TASKS)}, not {task}")
        try:
            normalised(load_array(kernel, "kernel"), "kernel")
        except DdpgError as exc:
            raise ParameterError("kernel", kernel, str(exc)) from exc
    return mask_spec


def resolve_settings(task: str | None, method: str | None, preset: str | None, prior: str,
                     sigma_y: float | None, steps: int | None) -> Settings:
    """Settings from ``preset`` if named; else the paper preset of (method, prior, task) at the nearest
    σ_y (priors without presets take the CelebA-HQ rows; its variant for ``steps`` where one was tuned), with
    σ_y and steps overridden when given; else the method's defaults. Explicit arguments always win."""
    if sigma_y is not None:
        check_sigma_y(sigma_y)
    if steps is not None:
        check_int("steps", steps, 1)
    overrides = {k: v for k, v in (("sigma_y", sigma_y), ("steps", steps)) if v is not None}
    if preset is not None:
        p = load_preset(preset, **overrides)
        if method is not None and method != p.method:
            raise ParameterError("method", method, f"contradicts preset {preset} (method {p.method})")
        if task is not None and task != p.task:
            p = load_preset(preset, task=check_task(task), **overrides)
        return Settings(p.task, p.method, preset, p.sigma_y, p.steps, dict(p.hyper), dict(p.operator))
    task = check_task(task or "sr4")
    method = method or "ddpg"
    spec = get_sampler(method)
    family = prior if prior in PRIOR_FAMILIES else "celeba_hq"
    found = find_preset(method, family, task, DEFAULT_SIGMA_Y if sigma_y is None else sigma_y, steps)
    if found is not None:
        p = load_preset(found, **overrides)
        return Settings(task, method, found, p.sigma_y, p.steps, dict(p.hyper), dict(p.operator))
    name, params = OPERATOR_OF_TASK[task]
    return Settings(task, method, None, DEFAULT_SIGMA_Y if sigma_y is None else float(sigma_y),
                    steps or spec.default_steps, {}, {"task": name, **params})


def describe_settings(settings: Settings, prior: str | None) -> str:
    """One line naming everything that decides a run's restorations apart from its inputs and seeds, e.g.
    ``ddpg (preset ddpg/face64/sr4/0.05), prior face64, σ_y 0.05, 100 steps, operator sr_bicubic (scale 4, impl
    svd), hyper gamma=40`` (the hyper-parameters that differ from the method's defaults): the line every restore
    prints first."""
    op = dict(settings.operator)
    name = op.pop("task")
    operator = name + (f" ({', '.join(f'{k} {v}' for k, v in op.items())})" if op else "")
    defaults = hyper_defaults()
    changed = {k: v for k, v in settings.hyper.items() if defaults.get(k, object()) != v}
    hyper = f", hyper {', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in changed.items())}" \
        if changed else ""
    return (f"{settings.method} ({f'preset {settings.preset}' if settings.preset else 'no preset: its defaults'}), "
            f"prior {prior or 'from the engine'}, σ_y {settings.sigma_y:g}, {settings.steps} steps, operator "
            f"{operator}{hyper}")


def method_defaults(task: str, method: str, prior: str) -> dict:
    """What ``method`` uses for ``task`` with ``prior`` when σ_y, steps and the preset are not given: the preset
    it picks, its σ_y, steps and operator (sidecars record it; the command line's help shows it per method)."""
    s = resolve_settings(task, method, None, prior, None, None)
    return {"preset": s.preset, "sigma_y": s.sigma_y, "steps": s.steps, "operator": s.operator}


def describe_method_defaults(task: str = "sr4", prior: str = "gaussian") -> str:
    """One line per method: ``ddpg: σ_y 0.05, 100 steps, sr_bicubic ×4 (svd)`` for ``task`` with ``prior``."""
    lines = []
    for method in SAMPLERS:
        d = method_defaults(task, method, prior)
        op = dict(d["operator"])
        name, scale, impl = op.pop("task"), op.pop("scale", None), op.pop("impl", None)
        lines.append(f"{method}: σ_y {d['sigma_y']:g}, {d['steps']} steps, {name}" + (f" ×{scale}" if scale else "")
                     + (f" ({impl})" if impl else ""))
    return "; ".join(lines)


def parse_hyper(items: list[str] | None, param: str = "hyper", example: str = "zeta=0.3") -> dict:
    """``KEY=VALUE`` strings (the command line's ``--hyper``, or ``--operator`` with ``param``) as a dict; a value
    is a number as Python writes one (``10``, ``0.5``, ``1e-5``, ``1e-05``: what sidecars hold), else a YAML scalar
    (``true``, a word); a ParameterError of ``param`` names a malformed one."""
    parsed_items: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ParameterError(param, item, f"expected KEY=VALUE, e.g. {example}")
        parsed = _number(value.strip())
        if parsed is None:
            try:
                parsed = yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ParameterError(param, item, f"unreadable value ({exc})") from exc
        if not isinstance(parsed, (bool, int, float, str)):
            raise ParameterError(param, item, "the value must be a number, a boolean or a word")
        parsed_items[key.strip()] = parsed
    return parsed_items


_INT = re.compile(r"[+-]?[0-9]{1,18}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:nan|inf|infinity)", re.IGNORECASE)


def _number(text: str) -> int | float | None:
    """``text`` as an int or a float when it is written as one (YAML 1.1 would read ``1e-5`` as a word); else
    None. Non-finite values are returned for the parameter's own check to refuse by name."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return None


def apply_hyper(settings: Settings, hyper: dict | None, select_candidates: bool) -> Settings:
    """The settings with ``hyper`` overriding the preset's hyper-parameters (names checked against the
    method's) and, with ``select_candidates``, DDPG's noise-candidate selection switched on."""
    merged = {**settings.hyper, **(hyper or {})}
    known = get_sampler(settings.method).hyper_names
    if select_candidates:
        if "select_candidates" not in known:  # the method has no noise selection to switch on
            raise ParameterError("select_candidates", True, f"chooses DDPG's injected noise; method "
                                 f"{settings.method} has none (use method ddpg, or dpps for DPS with selection)")
        merged["select_candidates"] = True
    unknown = sorted(set(hyper or {}) - set(known))
    if unknown:
        raise ParameterError("hyper", ", ".join(unknown), f"not a hyper-parameter of {settings.method}; known: "
                                                          f"{', '.join(known) or 'none'}")
    defaults = hyper_defaults()
    for key, value in (hyper or {}).items():
        kind = type(defaults.get(key, value))
        if not _fits(value, kind):
            raise ParameterError("hyper", f"{key}={value}", f"{key} of {settings.method} takes "
                                 + {bool: "true or false", int: "an integer", float: "a finite number",
                                    str: "a word"}.get(kind, kind.__name__))
    try:
        get_sampler(settings.method).build(settings.sigma_y, merged)
    except ConfigError as exc:
        raise ParameterError("hyper", ", ".join(f"{k}={v}" for k, v in (hyper or merged).items()), str(exc)) \
            from exc
    return replace(settings, hyper=merged)


PER_IMAGE_OPERATOR_PARAMS = ("kernel", "seed", "mask", "box", "ratio")  # set per image by --kernel/--mask/the index


def apply_operator(settings: Settings, operator: Mapping | None) -> Settings:
    """The settings with the task's operator built from ``operator`` (its make_operator parameters, e.g.
    ``{"kernel_size": 25, "sigma": 3.0, "impl": "svd"}``, every other one at the paper default) instead of the
    preset's; unchanged for None. A ParameterError of ``operator`` names a parameter the task does not take."""
    if operator is None:
        return settings
    name, params = OPERATOR_OF_TASK[settings.task]
    entry = TASK_TABLE[name]
    allowed = [p for p in entry.params if p not in PER_IMAGE_OPERATOR_PARAMS] + ["impl"] * bool(entry.impls)
    unknown = sorted(set(operator) - set(allowed))
    if unknown:
        raise ParameterError("operator", ", ".join(unknown), f"not a parameter of the {settings.task} operator; it "
                             f"takes {', '.join(allowed) or 'none'} (masks and kernels: --mask, --kernel)")
    try:
        check_impl(name, operator.get("impl"), entry.impls)
        check_params(name, {k: v for k, v in operator.items() if k != "impl"})
    except DdpgError as exc:
        raise ParameterError("operator", ", ".join(f"{k}={v}" for k, v in operator.items()), str(exc)) from exc
    return replace(settings, operator={"task": name, **params, **operator})


def _fits(value: object, kind: type) -> bool:
    """Whether a hyper-parameter ``value`` has the type of its default (an int passes for a float)."""
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def hyper_defaults() -> dict:
    """Every hyper-parameter's default value, from the methods' params dataclasses (the type a value must
    have)."""
    defaults: dict = {}
    for spec in SAMPLERS.values():
        for f in fields(spec.params):
            if f.name in spec.hyper_names:
                defaults.setdefault(f.name, f.default)
    return defaults


def named_mask(spec: str | None) -> dict | None:
    """A named ``--mask`` as :func:`parse_mask` returns it: {} for None/"box", {"ratio": R} for "random" or
    "random:R"; None for any other value (a file name), without looking at the disk."""
    if spec is None or spec == "box":
        return {}
    match = re.fullmatch(r"random(?::([0-9]*\.?[0-9]+))?", spec)
    if match is None:
        return None
    ratio = float(match.group(1) or 0.5)
    if not 0 <= ratio < 1:
        raise ParameterError("mask", spec, "random:R needs 0 <= R < 1")
    return {"ratio": ratio}


def parse_mask(spec: str | None) -> dict:
    """``--mask``: None/"box" (a centred box of half the size missing), "random" or "random:R" (a fraction
    R of pixels missing, default 0.5, seeded per image), or an image/.npy file (non-zero = kept)."""
    named = named_mask(spec)
    if named is not None:
        return named
    if not Path(spec).is_file():
        raise ParameterError("mask", spec, "file not found (or use 'box', 'random', 'random:0.7')")
    try:
        load_array(spec, "mask")
    except DdpgError as exc:
        raise ParameterError("mask", spec, str(exc)) from exc
    return {"mask": str(spec)}


def image_params(task_params: dict, index: int, seed: int) -> dict:
    """The operator parameters drawn for input ``index`` whose seed is ``seed`` (its task's ``per_image``: e.g. the
    reference's motion kernel seed 10·index)."""
    return task_entry(task_params["task"]).per_image(index, seed)


def operator_args(task_params: dict, task: str, size: tuple[int, int], padded: tuple[int, int], *,
                  per_image: dict, mask: dict, kernel: str | None) -> tuple[str, dict, dict]:
    """(make_operator task, its parameters at the padded size, a JSON description for sidecars) of one input of
    ``size`` padded to ``padded``, from the settings' ``task_params`` ({"task": name, **parameters}) and the
    input's ``per_image`` parameters (:func:`image_params`, or what its observation recorded).

    ``kernel`` (a file): the task's ``kernel_task`` with that kernel, instead of the task's own kernel and its
    per-image parameters; a task built from a user mask: ``mask`` (:func:`parse_mask`) and the per-image
    parameters instead of the settings' mask parameters. Then the task's ``fit`` to the padded size (inpainting:
    the mask built at the unpadded ``size`` and reflect-padded with the image)."""
    name = task_params["task"]
    entry = task_entry(name)
    params = {k: v for k, v in task_params.items() if k != "task"}
    desc: dict = {}
    if kernel is not None:
        if entry.kernel_task is None:
            raise ParameterError("kernel", kernel, f"applies to {' and '.join(KERNEL_TASKS)}, not {task}")
        name, params = entry.kernel_task, {"kernel": kernel}
        desc["kernel"] = str(kernel)
    elif entry.user_mask:
        params = {**mask, **per_image}
        desc["mask"] = mask.get("mask") or (f"random {mask['ratio']} missing (seed {params.get('seed', 0)})"
                                            if "ratio" in mask else "centred box of half the size")
    else:
        params.update(per_image)
    return name, task_entry(name).fit(params, size, padded), desc

