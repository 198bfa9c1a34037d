"""``ddpg degrade``: seeded observations of clean images, and the metadata ``restore --observed`` reads back."""

from __future__ import annotations

import json
from pathlib import Path

from ddpg.api.report import NullProgress, Report, failure_reason
from ddpg.api.settings import (
    DEFAULT_SIGMA_Y,
    OPERATOR_OF_TASK,
    check_int,
    check_task,
    check_task_files,
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
    save_image,
    save_json,
    save_measurement,
)
from ddpg.versions import versions

OBSERVATION_KIND = "ddpg-observation"


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
            report.failed.append((str(path), failure_reason(exc, path, outdir if isinstance(exc, OSError) else None)))
        progress.advance()
    return report


def observation_meta(path: Path) -> dict | None:
    """The metadata ``ddpg degrade`` wrote next to a measurement, if any."""
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: unreadable observation metadata ({exc})") from exc
    return meta if isinstance(meta, dict) and meta.get("kind") == OBSERVATION_KIND else None
