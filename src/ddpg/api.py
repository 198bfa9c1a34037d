"""The Python API behind the command line: :func:`restore`, :func:`degrade`, :func:`evaluate`.

Each keeps going when one input fails, writes every output atomically (an image's files appear together,
its JSON sidecar last), stops cleanly on KeyboardInterrupt, and returns a :class:`Report` naming what was
done, skipped and failed. Setup problems (unknown task/preset/prior/backend, missing weights) raise
``DdpgError`` before any input is touched. Images are read in [0, 1] and mapped to [-1, 1] for the samplers.
"""

from __future__ import annotations

import logging
import math
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

import ddpg
from ddpg.errors import ConfigError, DdpgError, InputError
from ddpg.io import (
    IMAGE_SUFFIXES,
    MEASUREMENT_SUFFIXES,
    StagedFiles,
    center_crop_resize,
    collect_inputs,
    load_image,
    load_measurement,
    pad_bottom_right,
    padded_size,
    save_image,
    save_json,
    save_measurement,
)
from ddpg.metrics import LPIPS, psnr, ssim

log = logging.getLogger("ddpg")

CLI_TASKS = ("sr4", "deblur_gauss", "deblur_motion", "inpaint", "denoise", "colorize")
OPERATOR_OF_TASK = {"sr4": ("sr_bicubic", {"scale": 4}), "deblur_gauss": ("deblur_gauss", {}),
                    "deblur_motion": ("deblur_motion", {}), "inpaint": ("inpainting", {}),
                    "denoise": ("denoising", {}), "colorize": ("colorization", {})}
DEFAULT_SIGMA_Y = 0.05
PRIOR_FAMILIES = ("celeba_hq", "imagenet256_uncond", "imagenet256_cond", "ffhq256", "face64", "gaussian")
SAMPLE_IMAGE = "data/samples/astronaut_face64.png"
OBSERVATION_KIND = "ddpg-observation"
SIDECAR_KIND = "ddpg-restoration"


@dataclass
class Report:
    """What a batch call did: outputs written, inputs skipped and failed (path, reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        """130 interrupted, 1 when an input failed, else 0."""
        return 130 if self.interrupted else (1 if self.failed else 0)


class NullProgress:
    """The progress interface the API reports to (the CLI draws it; this one draws nothing)."""

    def start(self, total: int, what: str) -> None:
        """``total`` inputs are about to be processed."""

    def step_callback(self, name: str, steps: int):
        """A sampler callback ``(step, x_t, x0)`` for a batch named ``name`` of ``steps`` steps, or None."""
        return None

    def advance(self, count: int = 1) -> None:
        """``count`` inputs finished (done, skipped or failed)."""


def sample_path() -> Path:
    """The bundled 64×64 public-domain sample face (NASA astronaut portrait)."""
    return Path(str(resources.files("ddpg").joinpath(SAMPLE_IMAGE)))


def versions(device: str | torch.device = "cpu") -> dict:
    info = {"ddpg": ddpg.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


# ------------------------------------------------------------------------------------------- settings


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
    if task not in CLI_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(CLI_TASKS)}")
    return task


def resolve_settings(task: str | None, method: str | None, preset: str | None, prior: str,
                     sigma_y: float | None, steps: int | None) -> Settings:
    """Settings from ``preset`` if named; else the paper preset of (method, prior, task) at the nearest
    σ_y (priors without presets take the CelebA-HQ rows), with σ_y and steps overridden when given; else the
    method's defaults. Explicit arguments always win."""
    from ddpg.runtime import find_preset, get_sampler, load_preset

    if sigma_y is not None and not sigma_y >= 0:
        raise ConfigError(f"--sigma-y must be >= 0 (the [0, 1] scale), got {sigma_y}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    overrides = {k: v for k, v in (("sigma_y", sigma_y), ("steps", steps)) if v is not None}
    if preset is not None:
        p = load_preset(preset, **overrides)
        if method is not None and method != p.method:
            raise ConfigError(f"--method {method} contradicts --preset {preset} (method {p.method})")
        if task is not None and task != p.task:
            p = load_preset(preset, task=check_task(task), **overrides)
        return Settings(p.task, p.method, preset, p.sigma_y, p.steps, dict(p.hyper), dict(p.operator))
    task = check_task(task or "sr4")
    method = method or "ddpg"
    spec = get_sampler(method)
    family = prior if prior in PRIOR_FAMILIES else "celeba_hq"
    found = find_preset(method, family, task, DEFAULT_SIGMA_Y if sigma_y is None else sigma_y)
    if found is not None:
        p = load_preset(found, **overrides)
        return Settings(task, method, found, p.sigma_y, p.steps, dict(p.hyper), dict(p.operator))
    name, params = OPERATOR_OF_TASK[task]
    return Settings(task, method, None, DEFAULT_SIGMA_Y if sigma_y is None else float(sigma_y),
                    steps or spec.default_steps, {}, {"task": name, **params})


def parse_hyper(items: list[str] | None) -> dict:
    """``--hyper KEY=VALUE`` pairs as a dict; values are read as YAML scalars (``0.5``, ``true``, ``10``)."""
    import yaml

    hyper: dict = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"--hyper {item!r}: expected KEY=VALUE, e.g. --hyper zeta=0.3")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--hyper {item!r}: unreadable value ({exc})") from exc
        if not isinstance(parsed, (bool, int, float, str)):
            raise ConfigError(f"--hyper {item!r}: the value must be a number, a boolean or a word")
        hyper[key.strip()] = parsed
    return hyper


def apply_hyper(settings: Settings, hyper: dict | None, select_candidates: bool) -> Settings:
    """The settings with ``hyper`` overriding the preset's hyper-parameters (names checked against the
    method's) and, with ``select_candidates``, DDPG's noise-candidate selection switched on."""
    from ddpg.runtime import get_sampler

    merged = {**settings.hyper, **(hyper or {})}
    if select_candidates:
        if settings.method != "ddpg":
            raise ConfigError(f"--select-candidates chooses DDPG's injected noise; method {settings.method} "
                              "has none (use --method ddpg, or dpps for DPS with selection)")
        merged["select_candidates"] = True
    known = get_sampler(settings.method).hyper_names
    unknown = sorted(set(hyper or {}) - set(known))
    if unknown:
        raise ConfigError(f"--hyper {', '.join(unknown)}: not a hyper-parameter of {settings.method}; known: "
                          f"{', '.join(known) or 'none'}")
    return replace(settings, hyper=merged)


def parse_mask(spec: str | None) -> dict:
    """``--mask``: None/"box" (a centred box of half the size missing), "random" or "random:R" (a fraction
    R of pixels missing, default 0.5, seeded per image), or an image/.npy file (non-zero = kept)."""
    if spec is None or spec == "box":
        return {}
    match = re.fullmatch(r"random(?::([0-9.]+))?", spec)
    if match:
        ratio = float(match.group(1) or 0.5)
        if not 0 <= ratio < 1:
            raise ConfigError(f"--mask random:R needs 0 <= R < 1, got {ratio}")
        return {"ratio": ratio}
    if not Path(spec).is_file():
        raise ConfigError(f"--mask {spec}: file not found (or use 'box', 'random', 'random:0.7')")
    return {"mask": str(spec)}


def operator_args(task_params: dict, task: str, size: tuple[int, int], padded: tuple[int, int], *,
                  motion_seed: int, mask: dict, mask_seed: int, kernel: str | None) -> tuple[str, dict, dict]:
    """(make_operator task, its parameters at the padded size, a JSON description for sidecars).

    deblur_motion: the reference kernel of ``motion_seed`` unless ``kernel`` (a file) is given; deblur_gauss
    with ``kernel``: that kernel instead of the Gaussian; inpaint: ``mask`` as from :func:`parse_mask`, built
    at the unpadded ``size`` (random masks seeded with ``mask_seed``) and reflect-padded with the image."""
    from ddpg.operators import make_mask

    name = task_params["task"]
    params = {k: v for k, v in task_params.items() if k != "task"}
    desc: dict = {}
    if kernel is not None:
        if name not in ("deblur_gauss", "deblur_motion", "deblur_kernel"):
            raise ConfigError(f"--kernel applies to deblur_gauss and deblur_motion, not {task}")
        name, params = ("deblur_motion" if name == "deblur_motion" else "deblur_kernel"), {}
        params["kernel"] = kernel
        desc["kernel"] = str(kernel)
    elif name == "deblur_motion":
        params["seed"] = motion_seed
    if name == "inpainting":
        m = make_mask(size, mask.get("mask"), None, mask.get("ratio"), mask_seed)
        if tuple(padded) != tuple(size):
            m = pad_bottom_right(m[None].float(), padded)[0] > 0.5
        params = {"mask": m}
        desc["mask"] = mask.get("mask") or (f"random {mask['ratio']} missing (seed {mask_seed})" if "ratio" in mask
                                            else "centred box of half the size")
    return name, params, desc


# ------------------------------------------------------------------------------------------- denoisers


def check_device(device: str) -> None:
    """Refuse a device this torch build or machine does not have, before any work."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"--device {device}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available (torch {torch.__version__}, "
                          f"{torch.cuda.device_count()} GPUs visible)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPUs visible")


def make_denoiser(prior: str | None, checkpoint: str | None, backend: str, engine: str | None, device: str,
                  class_label: int | None = None, **options):
    """The denoiser of a backend: torch with ``prior`` (+ ``checkpoint``), or an ONNX/TensorRT ``engine``
    (``options`` go to its constructor). Unavailable backends raise ConfigError("backend X not available: reason")."""
    try:
        from ddpg.runtime.backends import BACKENDS
        from ddpg.runtime.backends import make_denoiser as backend_denoiser
    except ImportError as exc:
        raise ConfigError(f"backend {backend!r} not available: {exc}") from exc
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    labels = None if class_label is None else torch.tensor([int(class_label)])
    try:
        if backend == "torch":
            return backend_denoiser("torch", prior=prior, checkpoint=checkpoint, device=device,
                                    class_labels=labels)
        return backend_denoiser(backend, engine=engine, device=device, class_labels=labels, **options)
    except ImportError as exc:
        raise ConfigError(f"backend {backend!r} not available: {exc}") from exc
    except ConfigError as exc:
        if "class-conditional" in str(exc):
            raise ConfigError(f"{exc} (use --class-label N)") from exc
        raise


def check_engine_prior(denoiser, preset_prior: str | None) -> str | None:
    """The prior an ONNX/TensorRT engine holds (its metadata); with a preset, the engine must hold the preset's
    prior and diffusion schedule (EngineError otherwise)."""
    from ddpg.export import check_engine_matches
    from ddpg.models import prior_config

    info = denoiser.info
    if preset_prior is not None:
        schedule = prior_config(preset_prior) if preset_prior in PRIOR_FAMILIES else None
        check_engine_matches(info, preset_prior, schedule)
    return info.prior


def check_speed_options(backend: str, device: str, precision: str, compile: bool, cuda_graph: bool) -> None:
    """Refuse speed options this backend or device cannot honour, before any work."""
    from ddpg.runtime.fast import PRECISIONS

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if backend != "torch" and (precision != "fp32" or compile):
        raise ConfigError(f"--precision/--compile apply to the torch backend; an {backend} engine has its "
                          "precision built in (`ddpg export --precision`)")
    if cuda_graph and torch.device(device).type != "cuda":
        raise ConfigError(f"--cuda-graph needs a CUDA device, not --device {device}")


def guess_prior_of(checkpoint: str) -> str:
    """The named prior whose architecture a checkpoint file fits."""
    from ddpg.models import read_state_dict
    from ddpg.models.checkpoints import guess_prior

    name = guess_prior({k: tuple(v.shape) for k, v in read_state_dict(checkpoint).items()})
    if name is None:
        raise ConfigError(f"--checkpoint {checkpoint}: matches no known prior; pass --prior NAME or a YAML config")
    return name


def size_multiple(denoiser) -> int:
    """The factor the prior's image sides must be a multiple of (its UNet's total downsampling; 1 for the
    Gaussian prior)."""
    module = getattr(denoiser, "prior", None)
    if getattr(module, "downsample_factor", None):
        return int(module.downsample_factor)
    cfg = getattr(denoiser, "config", {}) or {}
    mult = cfg.get("ch_mult") or cfg.get("channel_mult")
    if cfg.get("kind") in ("ddpm", "adm") and mult:
        return 2 ** (len(mult) - 1)
    return 1


def _prior_record(prior: str | None, checkpoint: str | None, backend: str, engine: str | None, denoiser) -> dict:
    from ddpg.models.checkpoints import REGISTRY, sha256_file

    record = {"spec": prior, "name": getattr(denoiser, "name", None), "backend": backend, "engine": engine,
              "checkpoint": checkpoint, "checkpoint_sha256": None}
    info = getattr(denoiser, "info", None)  # an engine: what it was exported from
    if info is not None:
        record.update(checkpoint=info.checkpoint or None, checkpoint_sha256=info.checkpoint_sha256 or None,
                      precision=info.precision)
    elif checkpoint is not None:
        record["checkpoint_sha256"] = sha256_file(Path(checkpoint))
    elif prior in REGISTRY:
        record["checkpoint_sha256"] = REGISTRY[prior].sha256
    return record


# ------------------------------------------------------------------------------------------- restore


@dataclass
class _Job:
    path: Path
    stem: str
    index: int
    seed: int
    size: tuple[int, int]  # restored size before padding (H, W)
    padded: tuple[int, int]
    clean: torch.Tensor | None  # (3, H, W) in [0, 1], clean inputs only
    y: torch.Tensor  # (1, C, h', w') in [-1, 1] at the padded size, on the device
    y_view: torch.Tensor  # (C, h, w) the unpadded measurement in [0, 1], CPU (the observed PNG)
    baseline: torch.Tensor | None  # (3, H, W) bicubic / Tikhonov in [0, 1], CPU; clean inputs only
    key: tuple
    restorer: object
    sampler: Callable  # restore(y, seeds, callback=None): the restorer's, or a CUDA-graph runner's
    describe: dict
    source: dict
    t_load: float


def _observation_meta(path: Path) -> dict | None:
    """The metadata ``ddpg degrade`` wrote next to a measurement, if any."""
    import json

    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: unreadable observation metadata ({exc})") from exc
    return meta if isinstance(meta, dict) and meta.get("kind") == OBSERVATION_KIND else None


def output_stem(path: Path) -> str:
    """Outputs of ``x.png`` and of its observation ``x_observed.pt`` share the stem ``x``."""
    return path.stem[: -len("_observed")] if path.stem.endswith("_observed") else path.stem


def restore(inputs: list[str | Path], outdir: str | Path, *, task: str | None = None, preset: str | None = None,
            prior: str | None = None, checkpoint: str | None = None, method: str | None = None,
            sigma_y: float | None = None, steps: int | None = None, seed: int = 0, batch_size: int = 1,
            device: str = "cpu", observed: bool = False, backend: str = "torch", engine: str | None = None,
            skip_existing: bool = False, resize: bool = False, size: int | None = None, mask: str | None = None,
            kernel: str | None = None, bits: int = 8, class_label: int | None = None,
            hyper: dict | None = None, select_candidates: bool = False, precision: str = "fp32",
            compile: bool = False, cuda_graph: bool = False, shard: tuple[int, int] = (0, 1), progress=None,
            denoiser=None) -> Report:
    """Restore image files (or folders of them) into ``outdir``.

    Per input ``x``: ``x_restored.png``, ``x_observed.png`` (the measurement mapped to [0, 1]) and ``x.json``
    (settings, seeds, versions, timings; PSNR/SSIM against the clean input). By default an input is the clean
    image and is degraded first with seed ``seed + index``; with ``observed`` it is the measurement itself
    (an image, or the exact ``.pt``/``.npy`` of ``ddpg degrade``, whose metadata JSON supplies task, σ_y and
    operator parameters). Sizes that the prior and operator cannot take are reflect-padded at the bottom and
    right and cropped back: a clean image is padded before it is degraded (the operator is built at the
    padded size, so the measurement is exact); an observed measurement is itself reflect-padded to the
    matching measurement size (for SR ×s: to multiples of lcm(m, s)/s), so the restoration near the bottom
    and right edges treats the mirrored margin as data; inpainting masks are padded the same way.
    ``resize`` centre-crops and resizes to ``size`` (default: the prior's size). ``hyper`` overrides the
    method's hyper-parameters; ``select_candidates`` turns on DDPG's noise-candidate selection.
    Speed (torch backend): ``precision`` fp16/bf16 runs the UNet torso in low precision (guidance stays float32),
    ``compile`` wraps it in ``torch.compile``, ``cuda_graph`` (CUDA, ddpg/idpg) captures each whole sampler step
    in one CUDA graph (torch, fixed-shape TensorRT engines) or, with ONNX Runtime, the engine call (ONNX
    Runtime's own graph mode; fixed-batch exports). ``shard=(rank, world_size)``: handle only this rank's
    contiguous share of the sorted inputs (indices, hence seeds and outputs, stay global). ``denoiser`` skips
    building one from prior/checkpoint/backend."""
    progress = progress or NullProgress()
    outdir = Path(outdir)
    if bits not in (8, 16):
        raise ConfigError(f"--bits must be 8 or 16, got {bits}")
    if batch_size < 1 or seed < 0:
        raise ConfigError("--batch-size must be >= 1 and --seed >= 0")
    check_device(device)
    check_speed_options(backend, device, precision, compile, cuda_graph)
    if backend != "torch" and (prior is not None or checkpoint is not None):
        raise ConfigError(f"--backend {backend} reads the prior from --engine; drop --prior/--checkpoint")
    if prior is None and checkpoint is not None and backend == "torch" and denoiser is None:
        prior = guess_prior_of(checkpoint)
    preset_prior = None
    if preset is not None:
        from ddpg.runtime import load_preset

        preset_prior = load_preset(preset).prior
    if backend != "torch" and denoiser is None:  # the engine says which prior it holds
        options = {"cuda_graph": True} if cuda_graph and backend == "onnxruntime" else {}
        denoiser = make_denoiser(None, None, backend, engine, device, class_label, **options)
        prior = check_engine_prior(denoiser, preset_prior)
    prior = prior or (preset_prior or "gaussian" if backend == "torch" else None)
    settings = apply_hyper(resolve_settings(task, method, preset, prior or "", sigma_y, steps), hyper,
                           select_candidates)
    mask_spec = parse_mask(mask)
    if kernel is not None and not Path(kernel).is_file():
        raise ConfigError(f"--kernel {kernel}: file not found")
    step_graph = cuda_graph and backend != "onnxruntime"  # ONNX Runtime captures its own engine call instead
    if step_graph and (settings.method not in ("ddpg", "idpg") or settings.hyper.get("select_candidates")):
        raise ConfigError(f"--cuda-graph captures DDPG/IDPG steps; not method {settings.method}"
                          + (" with --select-candidates" if settings.hyper.get("select_candidates") else ""))
    if denoiser is None:
        denoiser = make_denoiser(prior, checkpoint, backend, engine, device, class_label)
    if backend == "torch" and (precision != "fp32" or compile or cuda_graph):
        from ddpg.runtime.fast import FastDenoiser

        denoiser = FastDenoiser(denoiser, precision=precision, compile=compile, device=device)
    if step_graph and not getattr(denoiser, "graph_safe", False):
        raise ConfigError(f"--cuda-graph: this denoiser ({getattr(denoiser, 'name', None) or backend}) cannot be "
                          "captured in a CUDA graph (the analytic prior, or an engine with a dynamic batch)")
    schedule = getattr(denoiser, "schedule", None)
    if schedule is not None and settings.steps > len(schedule.betas):
        raise ConfigError(f"--steps {settings.steps} exceeds the prior's {len(schedule.betas)} diffusion steps")
    prior_size = (getattr(denoiser, "config", {}) or {}).get("image_size")
    if resize and not (size or prior_size):
        raise ConfigError(f"--resize needs --size N: the prior {prior} has no fixed image size")
    target = size or prior_size
    multiple = size_multiple(denoiser)
    prior_info = _prior_record(prior, checkpoint, backend, engine, denoiser)
    speed = {"precision": precision, "compile": compile, "cuda_graph": cuda_graph}
    from ddpg.operators import make_operator
    from ddpg.runtime import Restorer, get_sampler

    spec = get_sampler(settings.method)
    suffixes = IMAGE_SUFFIXES | (MEASUREMENT_SUFFIXES if observed else frozenset())
    files, problems = collect_inputs(inputs, suffixes)
    from ddpg.runtime.distributed import shard_indices

    mine = set(shard_indices(len(files), *shard))
    report = Report(failed=[(str(p), why) for p, why in problems] if shard[0] == 0 else [])
    operators: dict = {}
    runners: dict = {}
    stems: dict[str, Path] = {}

    def prepare(index: int, path: Path) -> _Job:
        t0 = time.perf_counter()
        meta = _observation_meta(path) if observed else None
        op_task, sigma = dict(settings.operator), settings.sigma_y
        motion_seed, mask_here, kernel_here = 10 * index, mask_spec, kernel  # the reference: kernel seed 10·i
        source = {"kind": "observed" if observed else "clean"}
        if meta is not None:  # written by `ddpg degrade`: its task, σ_y and operator, unless overridden
            if meta["task"] != settings.task:
                raise InputError(f"{path}: observed with task {meta['task']}, not {settings.task}; pass "
                                 f"--task {meta['task']}")
            args = dict(meta["operator_args"])
            motion_seed = args.pop("seed", motion_seed)
            if mask is None and "mask" in args:
                mask_here = {"mask": str(path.parent / args.pop("mask"))}
            if kernel is None and args.get("kernel"):
                kernel_here = args.pop("kernel")
            op_task = {"task": meta["operator"]["name"], **{k: v for k, v in args.items()
                                                           if k not in ("mask", "kernel")}}
            sigma = meta["sigma_y"] if sigma_y is None else float(sigma_y)
            source.update({"metadata": str(path.with_suffix(".json")), "degrade_seed": meta.get("seed")})
        scale = int(op_task.get("scale", 1)) if op_task["task"] in ("sr_bicubic", "sr_avgpool") else 1
        clean = None
        if observed:
            y = load_measurement(path) if path.suffix.lower() in MEASUREMENT_SUFFIXES else load_image(path) * 2 - 1
            if op_task["task"] == "colorization" and y.shape[0] == 3:
                y = y.mean(0, keepdim=True)
            hw = (y.shape[1] * scale, y.shape[2] * scale)
            padded_y = padded_size(tuple(y.shape[1:]), math.lcm(multiple, scale) // scale)
            padded = (padded_y[0] * scale, padded_y[1] * scale)
        else:
            clean = load_image(path)
            if resize:
                clean = center_crop_resize(clean, target)
            hw = tuple(clean.shape[1:])
            padded = padded_size(hw, math.lcm(multiple, scale))
        if padded != hw:
            log.info("%s: %d×%d padded to %d×%d (the prior and operator need multiples of %d); output cropped "
                     "back", path, hw[1], hw[0], padded[1], padded[0], math.lcm(multiple, scale))
        image_seed = seed + index
        try:
            name, params, describe = operator_args(op_task, settings.task, hw, padded, motion_seed=motion_seed,
                                                   mask=mask_here, mask_seed=image_seed, kernel=kernel_here)
            key = (name, padded, repr(sorted((k, v.tolist() if isinstance(v, torch.Tensor) else v)
                                             for k, v in params.items())))
            if key not in operators:
                operators[key] = make_operator(name, padded, **params).to(device)
        except DdpgError as exc:
            raise InputError(f"{path}: {exc}") from exc
        restorer = Restorer(denoiser, operators[key], method=settings.method, sigma_y=sigma, steps=settings.steps,
                            hyper=settings.hyper)
        sampler = restorer.restore
        if step_graph:  # one runner (buffers + graphs) per operator and σ_y, replaying the Restorer exactly
            from ddpg.runtime.graph_sampler import FastDDPGRunner

            if (key, sigma) not in runners:
                runners[(key, sigma)] = FastDDPGRunner.from_restorer(restorer, cuda_graph=True)
            sampler = runners[(key, sigma)].restore
        if observed:
            y = pad_bottom_right(y, padded_y)[None].to(device)
            if name == "inpainting":
                y = y * operators[key].mask.to(y)
            try:
                restorer.operator.check_measurement(y)
            except DdpgError as exc:
                raise InputError(f"{path}: {exc}") from exc
        else:
            x = pad_bottom_right(clean, padded)[None].to(device) * 2 - 1
            y = restorer.degrade(x, [image_seed])
        describe.update({"size": list(hw), "padded_to": list(padded), "resized": bool(resize and not observed)})
        H, W = hw
        y_view = ((y[0, :, : math.ceil(H / scale), : math.ceil(W / scale)] + 1) / 2).clamp(0, 1).cpu()
        base = None
        if clean is not None:
            from ddpg.operators import baseline

            base = ((baseline(restorer.operator, y)[0, :, :H, :W] + 1) / 2).clamp(0, 1).cpu()
        return _Job(path, output_stem(path), index, image_seed, hw, padded, clean, y, y_view, base, key, restorer,
                    sampler, describe, source, time.perf_counter() - t0)

    def write(job: _Job, out: torch.Tensor, timing: dict) -> None:
        """The job's files and sidecar (runs in the writer thread: CPU tensors only)."""
        t0 = time.perf_counter()
        H, W = job.size
        restored = ((out[:, :H, :W] + 1) / 2).clamp(0, 1).cpu()
        op = job.restorer.operator
        sidecar = {"kind": SIDECAR_KIND, "input": str(job.path), "outputs": {
            "restored": f"{job.stem}_restored.png", "observed": f"{job.stem}_observed.png"},
            "task": settings.task, "method": settings.method, "preset": settings.preset, "prior": prior_info,
            "sigma_y": job.restorer.sigma_y, "steps": settings.steps, "hyper": settings.hyper,
            "operator": {"name": op.name, **{k: v for k, v in op.params.items() if k != "mask"}, **job.describe},
            "seed": job.seed, "base_seed": seed, "index": job.index, "input_kind": job.source,
            "device": str(device), "bits": bits, "batch_size": batch_size, "speed": speed,
            "versions": versions(device),
            "timings_s": {"load_and_degrade": round(job.t_load, 4), **timing}}
        if job.clean is not None:
            metrics = {"psnr": round(psnr(restored, job.clean), 4),
                       "baseline_psnr": round(psnr(job.baseline, job.clean), 4),
                       "baseline": "bicubic" if getattr(op, "scale", 1) > 1 else "tikhonov (eta=1e-2)"}
            if min(H, W) >= 11:
                metrics["ssim"] = round(ssim(restored, job.clean), 4)
            sidecar["metrics"] = metrics
        with StagedFiles() as files:
            if resize and job.clean is not None:
                files.add(outdir / f"{job.stem}_gt.png", lambda tmp: save_image(job.clean, tmp, bits))
                sidecar["outputs"]["ground_truth"] = f"{job.stem}_gt.png"
            files.add(outdir / f"{job.stem}_observed.png", lambda tmp: save_image(job.y_view, tmp, bits))
            files.add(outdir / f"{job.stem}_restored.png", lambda tmp: save_image(restored, tmp, bits))
            sidecar["timings_s"]["write"] = round(time.perf_counter() - t0, 4)
            files.add(outdir / f"{job.stem}.json", lambda tmp: save_json(sidecar, tmp))
        report.done.append(str(outdir / f"{job.stem}_restored.png"))

    pending: list[tuple[int, Path]] = []
    for index, path in enumerate(files):
        stem = output_stem(path)
        if stem in stems:
            if index in mine:
                report.failed.append((str(path), f"same output name {stem!r} as {stems[stem]}; rename one"))
            continue
        stems[stem] = path
        if index not in mine:
            continue
        if skip_existing and (outdir / f"{stem}.json").is_file() and (outdir / f"{stem}_restored.png").is_file():
            report.skipped.append(str(path))
        else:
            pending.append((index, path))

    def write_and_count(job: _Job, out: torch.Tensor, timing: dict) -> None:
        try:
            write(job, out, timing)
        except (DdpgError, OSError) as exc:
            report.failed.append((str(job.path), _reason(exc, job.path, outdir)))
        finally:
            progress.advance()

    def run_batch(jobs: list[_Job]) -> None:
        groups: dict = {}
        for job in jobs:  # one sampler call per operator and σ_y; per-image seeds make batching invisible
            groups.setdefault((job.key, job.restorer.sigma_y), []).append(job)
        for group in groups.values():
            callback = progress.step_callback(",".join(j.stem for j in group), settings.steps)
            t1 = time.perf_counter()
            try:
                with torch.enable_grad() if spec.needs_grad else torch.no_grad():
                    out = group[0].sampler(torch.cat([j.y for j in group]), [j.seed for j in group],
                                           callback=callback).detach().cpu()
            except (DdpgError, RuntimeError, ValueError) as exc:  # e.g. out of memory, a backend error
                report.failed.extend((str(j.path), _reason(exc, j.path)) for j in group)
                progress.advance(len(group))
                continue
            seconds = time.perf_counter() - t1
            timing = {"restore_batch": round(seconds, 4), "restore_per_image": round(seconds / len(group), 4),
                      "images_in_batch": len(group)}
            for job, o in zip(group, out, strict=True):
                writer.submit(write_and_count, job, o, timing)

    # loading/degrading the next inputs and writing finished ones overlap the sampling (background threads)
    from ddpg.runtime.fast import BackgroundWriter, Prefetcher

    progress.start(len(pending), "restore")
    writer = BackgroundWriter(depth=2 * batch_size)
    prefetch = Prefetcher(pending, lambda item: prepare(*item), depth=batch_size + 1)
    try:
        batch: list[_Job] = []
        for (_, path), job, error in prefetch:
            if error is not None:
                if not isinstance(error, (DdpgError, OSError)):
                    raise error
                report.failed.append((str(path), _reason(error, path)))
                progress.advance()
                continue
            batch.append(job)
            if len(batch) == batch_size:
                run_batch(batch)
                batch = []
        if batch:
            run_batch(batch)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        prefetch.close()
        for (job, *_), exc in writer.close():  # finished outputs are written (or failed) before returning
            report.failed.append((str(job.path), _reason(exc, job.path, outdir)))
    return report


RUN_SUMMARY = "run_summary.json"


def restore_on_ranks(inputs: list[str | Path], outdir: str | Path, *, device: str = "cpu", **options) -> Report:
    """:func:`restore` as launched by ``torchrun --nproc-per-node N ddpg restore ...``: each rank restores its
    contiguous share of the sorted inputs on its own device (``cuda`` → cuda:LOCAL_RANK; gloo on CPU, NCCL on
    GPUs); rank 0 returns the merged report (``extra``: world size, per-rank summaries, images/s) and writes it
    to ``outdir/run_summary.json``; the other ranks return their own. Seeds follow the global input index, so
    the outputs equal a single-process run's. Without torchrun this is :func:`restore`."""
    from ddpg.runtime import distributed

    if not distributed.launched_by_torchrun():
        return restore(inputs, outdir, device=device, **options)
    ctx = distributed.dist_context(device)
    start = time.perf_counter()
    report = restore(inputs, outdir, device=str(ctx.device), shard=(ctx.rank, ctx.world_size), **options)
    summary = distributed.gather_summary({
        "rank": ctx.rank, "device": str(ctx.device), "done": report.done, "skipped": report.skipped,
        "failed": [list(f) for f in report.failed], "interrupted": report.interrupted,
        "exit_code": report.exit_code, "wall_s": round(time.perf_counter() - start, 4)})
    distributed.finish()
    if summary is None:
        return report
    merged = Report(done=summary["done"], skipped=summary["skipped"], failed=[tuple(f) for f in summary["failed"]],
                    interrupted=summary["interrupted"],
                    extra={k: summary[k] for k in ("world_size", "ranks", "wall_s", "images_per_s") if k in summary})
    save_json({"kind": "ddpg-run-summary", **summary}, Path(outdir) / RUN_SUMMARY)
    return merged


def _reason(exc: BaseException, path: Path, outdir: Path | None = None) -> str:
    """A failure message that names the file."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and outdir is not None:
        return f"cannot write outputs to {outdir}: {exc.strerror or text}" + \
            (f" ({exc.filename})" if exc.filename else "")
    return text if str(path) in text else f"{path}: {text}"


def restore_sample(outdir: str | Path, *, task: str = "sr4", method: str = "ddpg", sigma_y: float = 0.05,
                   steps: int | None = None, seed: int = 0, device: str = "cpu", progress=None) -> Report:
    """Degrade the bundled sample face, restore it with the bundled face64 prior, and write the
    restoration, the observation, a sidecar and a comparison grid (ground truth / observation / baseline /
    restoration)."""
    from ddpg.cli.grid import comparison_grid
    from ddpg.operators import baseline

    report = restore([sample_path()], outdir, task=task, prior="face64", method=method, sigma_y=sigma_y,
                     steps=steps, seed=seed, device=device, progress=progress)
    if report.done:
        outdir = Path(outdir)
        stem = sample_path().stem
        import json

        meta = json.loads((outdir / f"{stem}.json").read_text())
        gt = load_image(sample_path())
        from ddpg.runtime import Restorer

        settings = resolve_settings(task, method, None, "face64", sigma_y, steps)
        name, params, _ = operator_args(settings.operator, task, tuple(gt.shape[1:]), tuple(gt.shape[1:]),
                                        motion_seed=0, mask={}, mask_seed=seed, kernel=None)
        from ddpg.operators import make_operator

        op = make_operator(name, tuple(gt.shape[1:]), **params)
        y = Restorer(None, op, method=method, sigma_y=settings.sigma_y, steps=1).degrade(gt[None] * 2 - 1, [seed])
        base = ((baseline(op, y)[0] + 1) / 2).clamp(0, 1)
        grid = comparison_grid([[gt, ((y[0] + 1) / 2).clamp(0, 1), base, load_image(outdir / f"{stem}_restored.png")]],
                               ["ground truth", "observation", meta["metrics"]["baseline"].split()[0], method])
        save_image(grid, outdir / f"{stem}_grid.png")
        report.extra = {"psnr": meta["metrics"]["psnr"], "baseline_psnr": meta["metrics"]["baseline_psnr"],
                        "grid": str(outdir / f"{stem}_grid.png")}
    return report


# ------------------------------------------------------------------------------------------- degrade


def degrade(inputs: list[str | Path], outdir: str | Path, *, task: str = "sr4", sigma_y: float = DEFAULT_SIGMA_Y,
            seed: int = 0, resize: bool = False, size: int | None = None, mask: str | None = None,
            kernel: str | None = None, fmt: str = "pt", progress=None) -> Report:
    """Seeded observations of clean images. Per input ``x``: ``x_observed.png`` (the measurement mapped to
    [0, 1] and clamped, for viewing), ``x_observed.pt`` or ``.npy`` (the exact unclipped float measurement
    in [-1, 1], what ``restore --observed`` should be given) and ``x_observed.json`` (task, operator
    parameters, σ_y, seed); ``x_observed_mask.png`` for inpainting, ``x_gt.png`` when resized. Image i uses
    seed ``seed + i`` (the same measurement noise ``restore`` draws for it) and, for deblur_motion, the
    reference kernel of seed 10·i."""
    from ddpg.operators import degrade as observe
    from ddpg.operators import make_operator
    from ddpg.runtime.restorer import MEASUREMENT_STREAM, stream_generator

    progress = progress or NullProgress()
    check_task(task)
    if not sigma_y >= 0:
        raise ConfigError(f"--sigma-y must be >= 0 (the [0, 1] scale), got {sigma_y}")
    if fmt not in ("pt", "npy"):
        raise ConfigError(f"--format must be pt or npy, got {fmt!r}")
    if resize and not size:
        raise ConfigError("--resize needs --size N")
    if seed < 0:
        raise ConfigError("--seed must be >= 0")
    if kernel is not None and not Path(kernel).is_file():
        raise ConfigError(f"--kernel {kernel}: file not found")
    mask_spec = parse_mask(mask)
    outdir = Path(outdir)
    name0, base_params = OPERATOR_OF_TASK[task]
    files, problems = collect_inputs(inputs)
    report = Report(failed=[(str(p), why) for p, why in problems])
    progress.start(len(files), "degrade")
    for index, path in enumerate(files):
        try:
            img = load_image(path)
            if resize:
                img = center_crop_resize(img, size)
            hw = tuple(img.shape[1:])
            image_seed = seed + index
            name, params, describe = operator_args({"task": name0, **base_params}, task, hw, hw,
                                                   motion_seed=10 * index, mask=mask_spec, mask_seed=image_seed,
                                                   kernel=kernel)
            try:
                op = make_operator(name, hw, **params)
            except DdpgError as exc:
                raise InputError(f"{path}: {exc}") from exc
            y = observe(img[None] * 2 - 1, op, sigma_y, generator=stream_generator(image_seed, MEASUREMENT_STREAM))[0]
            stem = path.stem
            rebuild = {k: v for k, v in params.items() if k not in ("mask", "kernel")}
            meta = {"kind": OBSERVATION_KIND, "input": str(path), "task": task,
                    "operator": {"name": op.name, **{k: v for k, v in op.params.items() if k != "mask"}, **describe},
                    "operator_args": rebuild, "sigma_y": sigma_y, "seed": image_seed, "base_seed": seed,
                    "index": index, "size": list(hw), "measurement": f"{stem}_observed.{fmt}",
                    "measurement_shape": list(y.shape), "versions": versions()}
            with StagedFiles() as out:
                if resize:
                    out.add(outdir / f"{stem}_gt.png", lambda tmp, im=img: save_image(im, tmp))
                if name == "inpainting":
                    mask_img = op.mask.float()[None]
                    out.add(outdir / f"{stem}_observed_mask.png", lambda tmp, m=mask_img: save_image(m, tmp))
                    meta["operator_args"]["mask"] = f"{stem}_observed_mask.png"
                if kernel is not None:
                    meta["operator_args"]["kernel"] = str(Path(kernel).resolve())
                out.add(outdir / f"{stem}_observed.{fmt}", lambda tmp, t=y: save_measurement(t, tmp, fmt))
                out.add(outdir / f"{stem}_observed.png",
                        lambda tmp, t=y: save_image(((t + 1) / 2).clamp(0, 1), tmp))
                out.add(outdir / f"{stem}_observed.json", lambda tmp, m=meta: save_json(m, tmp))
            report.done.append(str(outdir / f"{stem}_observed.{fmt}"))
        except KeyboardInterrupt:
            report.interrupted = True
            break
        except (DdpgError, OSError) as exc:
            report.failed.append((str(path), _reason(exc, path, outdir if isinstance(exc, OSError) else None)))
        progress.advance()
    return report


# ------------------------------------------------------------------------------------------- evaluate

METRIC_NOTES = {
    "psnr": "PSNR in dB: 10·log10(1/MSE) over all values of the [0, 1] images (prediction clamped); no "
            "quantisation, Y channel or border crop (as the DDPG paper).",
    "ssim": "SSIM: 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, valid filtering, averaged over "
            "positions and RGB channels.",
    "lpips": "LPIPS: AlexNet, lpips package v0.1 linear heads, on the saved images mapped to [-1, 1].",
}


def _gt_key(path: Path) -> str | None:
    """The pairing key of a ground-truth file, None for files that are outputs of ``restore``."""
    stem = path.stem
    if stem.endswith(("_restored", "_observed", "_observed_mask", "_grid")):
        return None
    return stem[: -len("_gt")] if stem.endswith("_gt") else stem


def _find(folder: Path, key: str, kinds: tuple[str, ...]) -> Path | None:
    for kind in kinds:
        for suffix in (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"):
            candidate = folder / f"{key}{kind}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _labels(preds: list[Path], labels: list[str] | None) -> list[str]:
    if labels:
        if len(labels) != len(preds):
            raise ConfigError(f"{len(labels)} --label values for {len(preds)} --pred folders")
        names = list(labels)
    else:
        names = [p.resolve().name or str(p) for p in preds]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def evaluate(pred: list[str | Path] | str | Path, gt: str | Path, outdir: str | Path | None = None, *,
             obs: str | Path | None = None, labels: list[str] | None = None, grid_rows: int = 8,
             use_lpips: bool = True) -> Report:
    """PSNR, SSIM (and LPIPS when available locally) of one or more prediction folders against a
    ground-truth folder, paired by name: ground truth ``x.png`` (or ``x_gt.png``) ↔ prediction
    ``x_restored.png`` or ``x.png`` ↔ observation ``x_observed.png`` (``obs``, for the grid only).

    Writes ``metrics.csv`` (one row per image and method), ``summary.json``, ``summary.md`` and ``grid.png``
    (ground truth / observation / each method, first ``grid_rows`` images) into ``outdir`` (default:
    ``<first pred>/evaluation``). A missing or mis-sized prediction fails that image for that method."""
    import csv
    import io as _io

    from ddpg.cli.grid import comparison_grid

    preds = [Path(p) for p in ([pred] if isinstance(pred, (str, Path)) else pred)]
    if not preds:
        raise ConfigError("give at least one --pred folder")
    gt = Path(gt)
    for folder in [*preds, gt, *([Path(obs)] if obs is not None else [])]:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: not a folder")
    names = _labels(preds, labels)
    outdir = Path(outdir) if outdir is not None else preds[0] / "evaluation"
    lpips_metric, lpips_note = LPIPS.load() if use_lpips else (None, "LPIPS not computed (disabled)")
    gt_files, problems = collect_inputs([gt])
    report = Report(failed=[(str(p), why) for p, why in problems])
    pairs: dict[str, Path] = {}
    for path in gt_files:
        key = _gt_key(path)
        if key is not None and (key not in pairs or path.stem.endswith("_gt")):
            pairs[key] = path
    if not pairs:
        raise InputError(f"{gt}: no ground-truth images")
    rows: list[dict] = []
    grid: list[list[torch.Tensor | None]] = []
    for key, gt_path in sorted(pairs.items()):
        try:
            ref = load_image(gt_path)
        except DdpgError as exc:
            report.failed.append((str(gt_path), str(exc)))
            continue
        panels: list[torch.Tensor | None] = [ref]
        if obs is not None:
            o = _find(Path(obs), key, ("_observed", ""))
            panels.append(load_image(o) if o is not None else None)
        for folder, name in zip(preds, names, strict=True):
            p = _find(folder, key, ("_restored", ""))
            try:
                if p is None:
                    raise InputError(f"{folder}: no prediction for {gt_path.name} ({key}_restored.png or {key}.png)")
                img = load_image(p)
                if img.shape != ref.shape:
                    raise InputError(f"{p}: size {img.shape[2]}×{img.shape[1]} differs from the ground truth "
                                     f"{gt_path.name} ({ref.shape[2]}×{ref.shape[1]})")
            except DdpgError as exc:
                report.failed.append((str(p or folder), str(exc)))
                panels.append(None)
                continue
            row = {"image": key, "method": name, "psnr": psnr(img, ref),
                   "ssim": ssim(img, ref) if min(ref.shape[1:]) >= 11 else float("nan"),
                   "lpips": lpips_metric(img, ref) if lpips_metric is not None else float("nan")}
            rows.append(row)
            panels.append(img)
        if len(grid) < grid_rows:
            grid.append(panels)
    if not rows:
        raise InputError(f"no prediction could be evaluated against {gt}: " +
                         "; ".join(why for _, why in report.failed[:3]))
    summary = {"ground_truth": str(gt), "lpips": lpips_note or "computed", "definitions": METRIC_NOTES,
               "methods": {}}
    for folder, name in zip(preds, names, strict=True):
        mine = [r for r in rows if r["method"] == name]
        entry: dict = {"pred": str(folder), "images": len(mine)}
        for metric in ("psnr", "ssim", "lpips"):
            values = [r[metric] for r in mine if not math.isnan(r[metric])]
            entry[metric] = sum(values) / len(values) if values else None
        summary["methods"][name] = entry
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "method", "psnr", "ssim", "lpips"], lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in rows)
    lines = ["| method | images | PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ |", "|---|---|---|---|---|"]
    for name, entry in summary["methods"].items():
        cells = [f"{entry['psnr']:.2f}" if entry["psnr"] is not None else "–",
                 f"{entry['ssim']:.4f}" if entry["ssim"] is not None else "–",
                 f"{entry['lpips']:.4f}" if entry["lpips"] is not None else "–"]
        lines.append(f"| {name} | {entry['images']} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {text}" for text in METRIC_NOTES.values())]
    if lpips_note:
        lines.append(f"- {lpips_note}")
    columns = ["ground truth", *(["observation"] if obs is not None else []), *names]
    grid_image = comparison_grid(grid, columns) if grid else None
    with StagedFiles() as files:
        files.add(outdir / "metrics.csv", lambda tmp: tmp.write_text(buf.getvalue()))
        files.add(outdir / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        if grid_image is not None:
            files.add(outdir / "grid.png", lambda tmp: save_image(grid_image, tmp))
        files.add(outdir / "summary.json", lambda tmp: save_json(summary, tmp))
    report.done = sorted({r["image"] for r in rows})
    report.extra = {"summary": summary, "outdir": str(outdir), "rows": rows}
    return report
