"""``ddpg degrade``: seeded observations of clean images, and the metadata ``restore --observed`` reads back."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from ddpg.api.outputs import check_apart, claim_outputs, output_folder
from ddpg.api.report import NullProgress, Report, failure_reason
from ddpg.api.settings import (
    DEFAULT_SIGMA_Y,
    OPERATOR_OF_TASK,
    check_int,
    check_task,
    check_task_files,
    image_params,
    operator_args,
)
from ddpg.checks import check_side, check_sigma_y
from ddpg.errors import DdpgError, InputError, ParameterError
from ddpg.io import (
    DEFAULT_MAX_PIXELS,
    StagedFiles,
    center_crop_resize,
    collect_inputs,
    load_image,
    read_json,
    save_image,
    save_json,
    save_measurement,
)
from ddpg.operators import degrade as observe
from ddpg.operators import make_operator
from ddpg.runtime.restorer import MEASUREMENT_STREAM, stream_generator
from ddpg.versions import versions

OBSERVATION_KIND = "ddpg-observation"


def degrade(inputs: list[str | Path], outdir: str | Path, *, task: str = "sr4", sigma_y: float = DEFAULT_SIGMA_Y,
            seed: int = 0, resize: bool = False, size: int | None = None, mask: str | None = None,
            kernel: str | None = None, fmt: str = "pt", skip_existing: bool = False, progress=None) -> Report:
    """Seeded observations of clean images. Per input ``x``: ``x_observed.png`` (the measurement mapped to
    [0, 1] and clamped, for viewing), ``x_observed.pt`` or ``.npy`` (the exact unclipped float measurement
    in [-1, 1], what ``restore --observed`` should be given) and ``x_observed.json`` (task, operator
    parameters, σ_y, seed); ``x_observed_mask.png`` for inpainting, ``x_gt.png`` when resized. Image i uses
    seed ``seed + i`` (the same measurement noise ``restore`` draws for it) and, for deblur_motion, the
    reference kernel of seed 10·i. Files in ``outdir`` are replaced only when they are this function's outputs
    of the same settings (``skip_existing``: those inputs are skipped), as ``restore`` treats its own."""
    progress = progress or NullProgress()
    check_task(task)
    if sigma_y is not None:
        check_sigma_y(sigma_y)
    if fmt not in ("pt", "npy"):
        raise ParameterError("fmt", fmt, "must be pt or npy")
    if size is not None:
        check_side(size, DEFAULT_MAX_PIXELS)
    if resize and size is None:
        raise ParameterError("resize", resize, "needs a size (the side length, in pixels)")
    check_int("seed", seed, 0)
    mask_spec = check_task_files(task, mask, kernel)
    outdir = Path(outdir)
    files, problems = collect_inputs(inputs)
    check_apart("outdir", outdir, inputs, files)
    spec = _DegradeSpec(task, sigma_y, seed, resize, size, mask, kernel, fmt, mask_spec)
    report = Report(failed=[(str(p), why) for p, why in problems])
    progress.start(len(files), "degrade")
    with output_folder(outdir) if files else nullcontext():
        for index, path in enumerate(files):
            try:
                if _existing_outputs(spec, path, index, outdir) and skip_existing:
                    report.skip(path, f"its outputs of these settings in {outdir} are complete")
                else:
                    report.done.append(str(_degrade_one(spec, path, index, outdir)))
            except KeyboardInterrupt:
                report.interrupted = True
                break
            except (DdpgError, OSError) as exc:
                report.failed.append((str(path), failure_reason(exc, path, outdir)))
            progress.advance()
    return report


@dataclass(frozen=True)
class _DegradeSpec:
    """The options of one ``degrade`` call."""

    task: str
    sigma_y: float
    seed: int
    resize: bool
    size: int | None
    mask: str | None
    kernel: str | None
    fmt: str
    mask_spec: dict

    def settings(self, path: Path, index: int) -> dict:
        """What decides input ``index``'s outputs (its metadata's ``settings``, compared before they are
        replaced)."""
        return {"input": str(path.resolve()), "task": self.task, "sigma_y": self.sigma_y, "seed": self.seed + index,
                "resize": self.resize, "size": self.size if self.resize else None, "mask": self.mask,
                "kernel": str(Path(self.kernel).resolve()) if self.kernel else None, "format": self.fmt}


def observation_names(stem: str, fmt: str) -> dict[str, str]:
    """The files ``degrade`` may write for an input of stem ``stem`` besides its metadata (``<stem>_observed.json``),
    by role."""
    return {"ground_truth": f"{stem}_gt.png", "mask": f"{stem}_observed_mask.png",
            "measurement": f"{stem}_observed.{fmt}", "observed": f"{stem}_observed.png"}


def _existing_outputs(spec: _DegradeSpec, path: Path, index: int, outdir: Path) -> bool:
    """Whether input ``index`` has complete outputs of these settings in ``outdir``; InputError when degrading it
    would replace a file no degradation of these settings wrote (:func:`~ddpg.api.outputs.claim_outputs`)."""
    return claim_outputs(outdir, list(observation_names(path.stem, spec.fmt).values()), f"{path.stem}_observed.json",
                         OBSERVATION_KIND, lambda: spec.settings(path, index), source=path, verb="degraded",
                         noun="degradation")


def _degrade_one(spec: _DegradeSpec, path: Path, index: int, outdir: Path) -> Path:
    """Degrade input ``index`` and write its files (the metadata last, all together); returns the measurement's
    path."""
    img = load_image(path)
    if spec.resize:
        img = center_crop_resize(img, spec.size)
    hw = tuple(img.shape[1:])
    image_seed = spec.seed + index
    name0, base_params = OPERATOR_OF_TASK[spec.task]
    task_params = {"task": name0, **base_params}
    name, params, describe = operator_args(task_params, spec.task, hw, hw,
                                           per_image=image_params(task_params, index, image_seed),
                                           mask=spec.mask_spec, kernel=spec.kernel)
    try:
        op = make_operator(name, hw, **params)
    except DdpgError as exc:
        raise InputError(f"{path}: {exc}") from exc
    y = observe(img[None] * 2 - 1, op, spec.sigma_y, generator=stream_generator(image_seed, MEASUREMENT_STREAM))[0]
    names = observation_names(path.stem, spec.fmt)
    meta = {"kind": OBSERVATION_KIND, "input": str(path), "task": spec.task,
            "operator": {"name": op.name, **{k: v for k, v in op.params.items() if k != "mask"}, **describe},
            "operator_args": {k: v for k, v in params.items() if k not in ("mask", "kernel")},
            "sigma_y": spec.sigma_y, "seed": image_seed, "base_seed": spec.seed, "index": index, "size": list(hw),
            "measurement": names["measurement"], "measurement_shape": list(y.shape),
            "outputs": {"measurement": names["measurement"], "observed": names["observed"]},
            "settings": spec.settings(path, index), "versions": versions()}
    with StagedFiles() as out:
        if spec.resize:
            out.add(outdir / names["ground_truth"], lambda tmp: save_image(img, tmp))
            meta["outputs"]["ground_truth"] = names["ground_truth"]
        if "mask" in params:  # the mask the operator was built with (a user mask, or one drawn for this image)
            out.add(outdir / names["mask"], lambda tmp: save_image(params["mask"].float()[None], tmp))
            meta["operator_args"]["mask"] = meta["outputs"]["mask"] = names["mask"]
        if spec.kernel is not None:
            meta["operator_args"]["kernel"] = str(Path(spec.kernel).resolve())
        out.add(outdir / names["measurement"], lambda tmp: save_measurement(y, tmp, spec.fmt))
        out.add(outdir / names["observed"], lambda tmp: save_image(((y + 1) / 2).clamp(0, 1), tmp))
        out.add(outdir / f"{path.stem}_observed.json", lambda tmp: save_json(meta, tmp))
    return outdir / names["measurement"]


def observation_meta(path: Path) -> dict | None:
    """The metadata ``ddpg degrade`` wrote next to a measurement, if any (InputError naming it when it cannot be
    read: :func:`~ddpg.io.read_json`)."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    meta = read_json(meta_path)
    return meta if isinstance(meta, dict) and meta.get("kind") == OBSERVATION_KIND else None
