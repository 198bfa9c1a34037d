"""The Python API behind the command line: ``restore``, ``degrade``, ``evaluate``.

Each writes its outputs atomically, keeps going when one input fails, and returns a report naming every
failure. Images are read in [0, 1] and mapped to [-1, 1] for the samplers.
"""

from __future__ import annotations

import csv
import io
import json
import platform
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch

import ddpg
from ddpg.errors import ConfigError, DdpgError, InputError
from ddpg.io import center_crop_resize, collect_inputs, load_image, save_image, save_json, save_tensor
from ddpg.metrics import LPIPS, psnr, ssim
from ddpg.operators import ALIASES, baseline, make_operator
from ddpg.runtime import Restorer, find_preset, get_sampler, load_preset

CLI_TASKS = ("sr4", "deblur_gauss", "deblur_motion", "inpaint", "denoise", "colorize")
SAMPLE_IMAGE = "data/samples/astronaut_face64.png"


@dataclass
class Report:
    """What a batch command did: outputs written, inputs skipped and failed (path, reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failed else 0)


def sample_path() -> Path:
    """The bundled 64×64 public-domain sample face (NASA astronaut portrait)."""
    return Path(str(resources.files("ddpg").joinpath(SAMPLE_IMAGE)))


def _versions() -> dict:
    return {"ddpg": ddpg.__version__, "torch": torch.__version__, "python": platform.python_version()}


def _operator_params(task: str, index: int, mask, kernel) -> tuple[str, dict]:
    name, params = ALIASES.get(task, (task, {}))
    params = dict(params)
    if name == "deblur_motion":
        params.update({"kernel": kernel} if kernel else {"seed": 10 * index})  # the reference: seed 10·i
    if name == "inpainting" and mask is not None:
        params["mask"] = mask
    return name, params


def _method_settings(method: str, preset: str | None, prior_name: str, task: str,
                     sigma_y: float | None, steps: int | None) -> tuple[str | None, dict]:
    """Resolve (preset name, settings): the named preset, else the paper preset for this method, prior
    family and task at σ_y, else the method's defaults."""
    if preset is None:
        family = prior_name if prior_name in ("celeba_hq", "imagenet256_uncond", "imagenet256_cond", "ffhq256",
                                              "face64", "gaussian") else "celeba_hq"
        preset = find_preset(method, family, task, 0.05 if sigma_y is None else sigma_y)
    if preset is not None:
        overrides = {k: v for k, v in (("sigma_y", sigma_y), ("steps", steps)) if v is not None}
        p = load_preset(preset, **overrides)
        if p.task != task:
            raise ConfigError(f"preset {preset} is for task {p.task}, not {task}")
        return preset, {"method": p.method, "sigma_y": p.sigma_y, "steps": p.steps, "hyper": p.hyper,
                        "operator": {k: v for k, v in p.operator.items() if k != "task"}}
    get_sampler(method)
    return None, {"method": method, "sigma_y": 0.05 if sigma_y is None else sigma_y,
                  "steps": steps or get_sampler(method).default_steps, "hyper": {}, "operator": {}}


def _prepare(img: torch.Tensor, size: int | None, resize: bool, multiple: int, path: Path) -> torch.Tensor:
    if resize and size:
        img = center_crop_resize(img, size)
    H, W = img.shape[-2:]
    if H % multiple or W % multiple:
        raise InputError(f"{path}: size {W}×{H} is not a multiple of {multiple} that this prior and task need; "
                         f"use --resize to centre-crop and resize to {size or 'the prior size'}")
    return img


def make_denoiser(prior: str, checkpoint: str | None, backend: str, engine: str | None, device: str):
    """The denoiser of a backend. ``torch``: the prior's weights (bundled, cached, downloaded or
    ``checkpoint``); the Gaussian prior needs none."""
    from ddpg.models import as_denoiser, load_prior

    if backend != "torch":
        try:
            from ddpg.runtime.backends import make_denoiser as make_backend
        except ImportError as exc:
            raise ConfigError(f"backend {backend!r} not available: {exc}") from exc
        return make_backend(backend, engine=engine, device=device)
    model = load_prior(prior, checkpoint, device=device)
    labels = None
    if getattr(model, "num_classes", None) is not None:
        labels = torch.zeros(1, dtype=torch.long)  # class 0 unless the API caller chooses otherwise
    return as_denoiser(model, class_labels=labels)


def restore(inputs: list[str | Path], outdir: str | Path, *, task: str = "sr4", preset: str | None = None,
            prior: str = "gaussian", checkpoint: str | None = None, method: str = "ddpg",
            sigma_y: float | None = None, steps: int | None = None, seed: int = 0, batch_size: int = 1,
            device: str = "cpu", observed: bool = False, backend: str = "torch", engine: str | None = None,
            skip_existing: bool = False, resize: bool = False, mask: str | None = None,
            kernel: str | None = None, progress=None, denoiser=None) -> Report:
    """Restore image files (or folders of them) into ``outdir``: ``<stem>_restored.png``,
    ``<stem>_observed.png`` and a ``<stem>.json`` sidecar (settings, seeds, versions, timings, PSNR when the
    clean image is known). By default an input is the clean image and is degraded first (seed = ``seed`` +
    index); with ``observed`` it is the measurement itself."""
    if task not in CLI_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(CLI_TASKS)}")
    outdir = Path(outdir)
    preset_name, settings = _method_settings(method, preset, prior, task, sigma_y, steps)
    files, problems = collect_inputs(inputs)
    report = Report(failed=[(str(p), why) for p, why in problems])
    if denoiser is None:
        denoiser = make_denoiser(prior, checkpoint, backend, engine, device)
    cfg = getattr(denoiser, "config", {}) or {}
    size = cfg.get("image_size")
    multiple = getattr(getattr(denoiser, "prior", None), "downsample_factor", 1)
    op_name = ALIASES.get(task, (task, {}))[0]
    scale = int(settings["operator"].get("scale", 4)) if op_name == "sr_bicubic" else 1
    operators: dict = {}

    def prepare(index: int, path: Path) -> dict:
        """Load one input and make its operator and measurement."""
        t0 = time.perf_counter()
        if observed and path.suffix == ".pt":  # the exact float measurement written by `ddpg degrade`
            y_exact = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(y_exact, torch.Tensor) or y_exact.ndim != 3:
                raise InputError(f"{path}: expected a (C, h, w) measurement tensor")
            img = (y_exact + 1) / 2
        else:
            img = load_image(path)
        name, params = _operator_params(task, index, mask, kernel)
        params.update({k: v for k, v in settings["operator"].items() if k not in params})
        if observed:
            size_hw, clean = (img.shape[1] * scale, img.shape[2] * scale), None
        else:
            img = _prepare(img, size, resize, max(multiple, scale), path)
            size_hw, clean = tuple(img.shape[1:]), img[None].to(device) * 2 - 1
        if size_hw[0] % multiple or size_hw[1] % multiple:
            raise InputError(f"{path}: restored size {size_hw} must be a multiple of {multiple}")
        key = (name, size_hw, json.dumps(params, sort_keys=True, default=str))
        if key not in operators:
            operators[key] = make_operator(name, size_hw, **params).to(device)
        restorer = Restorer(denoiser, operators[key], method=settings["method"], sigma_y=settings["sigma_y"],
                            steps=settings["steps"], hyper=settings["hyper"])
        image_seed = seed + index
        if observed:
            y = img[None].to(device) * 2 - 1
            if op_name == "colorization" and y.shape[1] == 3:
                y = y.mean(1, keepdim=True)
            restorer.operator.check_measurement(y)
        else:
            y = restorer.degrade(clean, [image_seed])
        return {"path": path, "index": index, "seed": image_seed, "key": key, "restorer": restorer, "y": y,
                "gt": None if observed else img.cpu(), "t_prepare": time.perf_counter() - t0}

    def write(item: dict, out: torch.Tensor, seconds: float) -> None:
        path, restorer, y = item["path"], item["restorer"], item["y"]
        stem = path.stem
        restored = ((out + 1) / 2).clamp(0, 1).cpu()
        sidecar = {"input": str(path), "output": f"{stem}_restored.png", "task": task, "prior": prior,
                   "checkpoint": checkpoint, "backend": backend, "preset": preset_name, "observed": observed,
                   "seed": item["seed"], "base_seed": seed, "index": item["index"], **restorer.settings(),
                   "versions": _versions(),
                   "timings_s": {"prepare": round(item["t_prepare"], 4), "restore": round(seconds, 4)}}
        save_image(((y[0] + 1) / 2).clamp(0, 1).cpu(), outdir / f"{stem}_observed.png")
        if item["gt"] is not None:
            gt = item["gt"]
            base = ((baseline(restorer.operator, y)[0] + 1) / 2).clamp(0, 1).cpu()
            sidecar["metrics"] = {"psnr": round(psnr(restored, gt), 4), "ssim": round(ssim(restored, gt), 4),
                                  "baseline_psnr": round(psnr(base, gt), 4)}
        save_image(restored, outdir / f"{stem}_restored.png")
        save_json(sidecar, outdir / f"{stem}.json")
        report.done.append(str(outdir / f"{stem}_restored.png"))

    pending = []
    for index, path in enumerate(files):
        finished = (outdir / f"{path.stem}_restored.png").exists() and (outdir / f"{path.stem}.json").exists()
        if skip_existing and finished:
            report.skipped.append(str(path))
        else:
            pending.append((index, path))
    grad = get_sampler(settings["method"]).needs_grad
    try:
        for start in range(0, len(pending), max(1, batch_size)):
            items = []
            for index, path in pending[start:start + max(1, batch_size)]:
                try:
                    items.append(prepare(index, path))
                except (DdpgError, OSError, RuntimeError) as exc:
                    report.failed.append((str(path), str(exc)))
            groups: dict = {}
            for item in items:  # one sampler call per operator; per-image seeds keep results batch-independent
                groups.setdefault(item["key"], []).append(item)
            for group in groups.values():
                names = ",".join(it["path"].stem for it in group)
                callback = progress.step_callback(names, settings["steps"]) if progress else None
                t1 = time.perf_counter()
                try:
                    with torch.enable_grad() if grad else torch.no_grad():
                        out = group[0]["restorer"].restore(torch.cat([it["y"] for it in group]),
                                                           [it["seed"] for it in group], callback=callback)
                except (DdpgError, RuntimeError) as exc:
                    report.failed.extend((str(it["path"]), str(exc)) for it in group)
                    continue
                seconds = (time.perf_counter() - t1) / len(group)
                for it, o in zip(group, out, strict=True):
                    try:
                        write(it, o, seconds)
                    except (DdpgError, OSError) as exc:
                        report.failed.append((str(it["path"]), str(exc)))
    except KeyboardInterrupt:
        report.interrupted = True
    return report


def restore_sample(outdir: str | Path, *, task: str = "sr4", method: str = "ddpg", sigma_y: float = 0.05,
                   steps: int | None = None, seed: int = 0, device: str = "cpu", progress=None) -> Report:
    """Degrade the bundled sample face, restore it with the bundled face64 prior, and write the
    restoration, the observation and a comparison grid (ground truth / observation / baseline / ours)."""
    report = restore([sample_path()], outdir, task=task, prior="face64", method=method, sigma_y=sigma_y,
                     steps=steps, seed=seed, device=device, progress=progress)
    if report.done:
        outdir = Path(outdir)
        stem = sample_path().stem
        meta = json.loads((outdir / f"{stem}.json").read_text())
        gt = load_image(sample_path())
        restored = load_image(outdir / f"{stem}_restored.png")
        op_params = meta["operator"]
        name = op_params.pop("name")
        op_params.pop("kept", None)
        op = make_operator(name, gt.shape[1:], **op_params)
        y = load_image(outdir / f"{stem}_observed.png") if task != "colorize" else None
        base = ((baseline(op, y[None] * 2 - 1)[0] + 1) / 2).clamp(0, 1) if y is not None else gt
        observation = torch.nn.functional.interpolate(y[None], size=gt.shape[1:], mode="nearest")[0] \
            if y is not None else gt
        grid = comparison_grid([gt, observation, base, restored], scale=4)
        save_image(grid, outdir / f"{stem}_grid.png")
        report.extra = {"psnr": meta["metrics"]["psnr"], "baseline_psnr": meta["metrics"]["baseline_psnr"],
                        "grid": str(outdir / f"{stem}_grid.png")}
    return report


def comparison_grid(images: list[torch.Tensor], scale: int = 1, gap: int = 2) -> torch.Tensor:
    """Images (3, H, W) side by side (nearest-upscaled by ``scale``), white gaps."""
    ups = [torch.nn.functional.interpolate(im[None], scale_factor=scale, mode="nearest")[0] for im in images]
    H = max(u.shape[1] for u in ups)
    cols = []
    for u in ups:
        pad = torch.ones(3, H, u.shape[2])
        pad[:, : u.shape[1]] = u
        cols += [pad, torch.ones(3, H, gap)]
    return torch.cat(cols[:-1], dim=2)


def degrade(inputs: list[str | Path], outdir: str | Path, *, task: str = "sr4", sigma_y: float = 0.05,
            seed: int = 0, resize_to: int | None = None, mask: str | None = None,
            kernel: str | None = None) -> Report:
    """Observations of clean images: ``<stem>_observed.png`` (measurement in [0, 1], clamped for display),
    ``<stem>_observed.pt`` (the exact float measurement in [-1, 1]) and ``<stem>_observed.json``."""
    from ddpg.operators import degrade as make_observation
    from ddpg.runtime.restorer import MEASUREMENT_STREAM, stream_generator

    if task not in CLI_TASKS:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(CLI_TASKS)}")
    if sigma_y < 0:
        raise ConfigError(f"sigma_y must be >= 0, got {sigma_y}")
    outdir = Path(outdir)
    files, problems = collect_inputs(inputs)
    report = Report(failed=[(str(p), why) for p, why in problems])
    for index, path in enumerate(files):
        try:
            img = load_image(path)
            if resize_to:
                img = center_crop_resize(img, resize_to)
            name, params = _operator_params(task, index, mask, kernel)
            op = make_operator(name, tuple(img.shape[1:]), **params)
            image_seed = seed + index
            y = make_observation(img[None] * 2 - 1, op, sigma_y,
                                 generator=stream_generator(image_seed, MEASUREMENT_STREAM))
            save_tensor(y[0], outdir / f"{path.stem}_observed.pt")
            save_image(((y[0] + 1) / 2).clamp(0, 1), outdir / f"{path.stem}_observed.png")
            save_json({"input": str(path), "task": task, "operator": {"name": op.name, **op.params},
                       "sigma_y": sigma_y, "seed": image_seed, "versions": _versions()},
                      outdir / f"{path.stem}_observed.json")
            report.done.append(str(outdir / f"{path.stem}_observed.png"))
        except KeyboardInterrupt:
            report.interrupted = True
            break
        except (DdpgError, OSError) as exc:
            report.failed.append((str(path), str(exc)))
    return report


def _find_pred(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}_restored.png", f"{stem}.png"):
        if (folder / name).is_file():
            return folder / name
    return None


def evaluate(pred: list[str | Path] | str | Path, gt: str | Path, outdir: str | Path | None = None, *,
             obs: str | Path | None = None, grid: bool = True) -> Report:
    """PSNR, SSIM (and LPIPS when available) of each prediction folder against ground truth, paired by file
    stem (``<stem>_restored.png`` or ``<stem>.png``). Writes ``metrics.csv``, ``summary.json``, ``summary.md``
    and ``grid.png`` into ``outdir`` (default: the first prediction folder)."""
    preds = [Path(p) for p in ([pred] if isinstance(pred, (str, Path)) else pred)]
    gt = Path(gt)
    for folder in preds + [gt]:
        if not folder.is_dir():
            raise InputError(f"{folder}: not a folder")
    outdir = Path(outdir) if outdir else preds[0]
    lpips_metric, lpips_note = LPIPS.load()
    gt_files, problems = collect_inputs([gt])
    report = Report(failed=[(str(p), why) for p, why in problems])
    rows, grid_rows = [], []
    for gt_path in gt_files:
        try:
            ref = load_image(gt_path)
            row = {"image": gt_path.stem}
            panels = [ref]
            if obs is not None:
                o = _find_pred(Path(obs), gt_path.stem) or (Path(obs) / f"{gt_path.stem}_observed.png")
                if o.is_file():
                    panels.append(torch.nn.functional.interpolate(load_image(o)[None], size=ref.shape[1:],
                                                                  mode="nearest")[0])
            for folder in preds:
                p = _find_pred(folder, gt_path.stem)
                if p is None:
                    raise InputError(f"{folder}: no prediction for {gt_path.name}")
                img = load_image(p)
                if img.shape != ref.shape:
                    raise InputError(f"{p}: size {tuple(img.shape[1:])} differs from ground truth "
                                     f"{tuple(ref.shape[1:])}")
                tag = folder.name
                row[f"{tag}/psnr"] = psnr(img, ref)
                row[f"{tag}/ssim"] = ssim(img, ref)
                if lpips_metric is not None:
                    row[f"{tag}/lpips"] = lpips_metric(img, ref)
                panels.append(img)
            rows.append(row)
            if len(grid_rows) < 8:
                grid_rows.append(comparison_grid(panels))
        except (DdpgError, OSError) as exc:
            report.failed.append((str(gt_path), str(exc)))
    if not rows:
        raise InputError(f"{gt}: no image could be evaluated")
    keys = [k for k in rows[0] if k != "image"]
    summary = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", *keys])
    writer.writeheader()
    writer.writerows(rows)
    from ddpg.io import _atomic

    _atomic(outdir / "metrics.csv", lambda tmp: tmp.write_text(buf.getvalue()))
    save_json({"count": len(rows), "mean": summary, "lpips": lpips_note or "AlexNet"}, outdir / "summary.json")
    methods = sorted({k.split("/")[0] for k in keys})
    metric_names = [m for m in ("psnr", "ssim", "lpips") if any(k.endswith("/" + m) for k in keys)]
    lines = ["| method | " + " | ".join(metric_names) + " |", "|---|" + "---|" * len(metric_names)]
    for m in methods:
        lines.append(f"| {m} | " + " | ".join(f"{summary[f'{m}/{n}']:.4f}" for n in metric_names) + " |")
    if lpips_note:
        lines += ["", lpips_note]
    _atomic(outdir / "summary.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    if grid and grid_rows:
        width = max(g.shape[2] for g in grid_rows)
        padded = [torch.nn.functional.pad(g, (0, width - g.shape[2]), value=1.0) for g in grid_rows]
        save_image(torch.cat(padded, dim=1), outdir / "grid.png")
    report.done = [r["image"] for r in rows]
    report.extra = {"mean": summary, "lpips": lpips_note or "AlexNet", "outdir": str(outdir)}
    return report
