"""The ``ddpg`` command line (Typer). Exit codes: 0 all good, 1 some inputs failed, 2 usage errors,
130 interrupted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.markup import escape

from ddpg import api
from ddpg.errors import DdpgError

from .progress import StepProgress, console

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="markdown",
                  help="Diffusion-prior image restoration with DDPG/IDPG.\n\nExample: `ddpg restore --sample -o out`")
models_app = typer.Typer(no_args_is_help=True, help="Known priors, their checkpoints and the cache.")
presets_app = typer.Typer(no_args_is_help=True, help="The paper presets.")
app.add_typer(models_app, name="models")
app.add_typer(presets_app, name="presets")


def fail(message: str, code: int = 2) -> None:
    console.print("[red]error:[/red]", escape(message), highlight=False)
    raise typer.Exit(code)


def finish(report: api.Report, what: str) -> None:
    for path, why in report.failed:
        console.print("[red]failed:[/red]", escape(why if path in why else f"{path}: {why}"), highlight=False)
    if report.interrupted:
        console.print(f"[yellow]interrupted[/yellow] after {len(report.done)} {what}; finished outputs are "
                      "complete, nothing is half-written")
    else:
        console.print(f"{len(report.done)} {what}, {len(report.skipped)} skipped, {len(report.failed)} failed")
    raise typer.Exit(report.exit_code)


@app.command()
def restore(
    inputs: list[Path] = typer.Argument(None, help="Image files or folders."),
    outdir: Path = typer.Option(..., "-o", "--outdir", help="Output folder."),
    sample: bool = typer.Option(False, "--sample", help="Restore the bundled sample face with face64."),
    task: str = typer.Option("sr4", help="sr4 | deblur_gauss | deblur_motion | inpaint | denoise | colorize"),
    preset: str = typer.Option(None, help="Preset name, e.g. ddpg/celeba_hq/sr4/0.05 (see `ddpg presets list`)."),
    prior: str = typer.Option("gaussian", help="Prior name or YAML (gaussian and face64 need no download)."),
    checkpoint: str = typer.Option(None, help="Weights file for --prior."),
    backend: str = typer.Option("torch", help="torch | onnxruntime | tensorrt"),
    engine: str = typer.Option(None, help="ONNX model or TensorRT plan for the other backends."),
    sigma_y: float = typer.Option(None, "--sigma-y", help="Measurement noise std on the [0, 1] scale."),
    steps: int = typer.Option(None, help="Sampling steps (default: the preset's)."),
    method: str = typer.Option("ddpg", help="ddpg | idpg (and the other registered samplers)."),
    batch_size: int = typer.Option(1, help="Images per batch."),
    seed: int = typer.Option(0, help="Base seed; image i uses seed + i."),
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N"),
    observed: bool = typer.Option(False, help="Inputs are measurements (e.g. real low-resolution photos)."),
    skip_existing: bool = typer.Option(False, help="Skip inputs whose outputs exist (resume)."),
    resize: bool = typer.Option(False, help="Centre-crop and resize clean inputs to the prior's size."),
    mask: str = typer.Option(None, help="Inpainting mask image (white = kept)."),
    kernel: str = typer.Option(None, help="Motion/blur kernel (.npy or image) instead of the seeded one."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bars."),
) -> None:
    """Restore images. By default each input is the clean image, degraded first (as the papers evaluate).

    Example: `ddpg restore photos/ -o out --task deblur_gauss --prior face64 --sigma-y 0.05`
    """
    if not sample and not inputs:
        fail("give input images or folders, or --sample")
    try:
        with StepProgress(quiet) as progress:
            if sample:
                report = api.restore_sample(outdir, task=task, method=method, steps=steps, seed=seed,
                                            device=device, progress=progress,
                                            **({"sigma_y": sigma_y} if sigma_y is not None else {}))
            else:
                report = api.restore(inputs, outdir, task=task, preset=preset, prior=prior,
                                     checkpoint=checkpoint, method=method, sigma_y=sigma_y, steps=steps,
                                     seed=seed, batch_size=batch_size, device=device, observed=observed,
                                     backend=backend, engine=engine, skip_existing=skip_existing,
                                     resize=resize, mask=mask, kernel=kernel, progress=progress)
    except DdpgError as exc:
        fail(str(exc))
    if sample and report.extra:
        console.print(f"PSNR {report.extra['psnr']:.2f} dB (bicubic {report.extra['baseline_psnr']:.2f} dB); "
                      f"grid: {report.extra['grid']}")
    finish(report, "restored")


@app.command()
def degrade(
    inputs: list[Path] = typer.Argument(..., help="Clean image files or folders."),
    outdir: Path = typer.Option(..., "-o", "--outdir"),
    task: str = typer.Option("sr4", help="sr4 | deblur_gauss | deblur_motion | inpaint | denoise | colorize"),
    sigma_y: float = typer.Option(0.05, "--sigma-y", help="Noise std on the [0, 1] scale."),
    seed: int = typer.Option(0, help="Base seed; image i uses seed + i."),
    resize: int = typer.Option(None, help="Centre-crop and resize to this size first."),
    mask: str = typer.Option(None, help="Inpainting mask image."),
    kernel: str = typer.Option(None, help="Blur kernel file."),
) -> None:
    """Make seeded observations: PNG, exact float measurement (.pt) and metadata (.json).

    Example: `ddpg degrade faces/ -o obs --task sr4 --sigma-y 0.05`
    """
    try:
        report = api.degrade(inputs, outdir, task=task, sigma_y=sigma_y, seed=seed, resize_to=resize, mask=mask,
                             kernel=kernel)
    except DdpgError as exc:
        fail(str(exc))
    finish(report, "degraded")


@app.command()
def evaluate(
    pred: list[Path] = typer.Option(..., help="Folder(s) of restorations (one per method)."),
    gt: Path = typer.Option(..., help="Folder of ground-truth images."),
    obs: Path = typer.Option(None, help="Folder of observations (for the grid)."),
    outdir: Path = typer.Option(None, "-o", "--outdir", help="Where to write the reports (default: first --pred)."),
) -> None:
    """PSNR (as the papers), SSIM and LPIPS (when available locally): CSV, JSON, Markdown and a grid.

    Example: `ddpg evaluate --pred out --gt faces/`
    """
    try:
        report = api.evaluate(pred, gt, outdir, obs=obs)
    except DdpgError as exc:
        fail(str(exc))
    for key, value in report.extra["mean"].items():
        console.print(f"{key}: {value:.4f}")
    if report.extra["lpips"] != "AlexNet":
        console.print(report.extra["lpips"])
    finish(report, "evaluated")


@models_app.command("list")
def models_list() -> None:
    """Known priors, whether their weights are here, and the cache folder.

    Example: `ddpg models list`
    """
    from ddpg.models import PRIOR_NAMES, REGISTRY, cache_dir
    from ddpg.models.checkpoints import local_path

    print(f"cache: {cache_dir()}")
    for name in PRIOR_NAMES:
        entry = REGISTRY.get(name)
        where = "analytic, no weights" if entry is None else (
            "bundled" if entry.bundled else ("cached" if local_path(entry).exists() else "not downloaded"))
        print(f"{name:20s} {where}")


@models_app.command("info")
def models_info(name: str) -> None:
    """Config and checkpoint facts of one prior.

    Example: `ddpg models info celeba_hq`
    """
    from ddpg.models import REGISTRY, prior_config
    from ddpg.models.checkpoints import local_path

    try:
        cfg = prior_config(name)
    except DdpgError as exc:
        fail(str(exc))
    entry = REGISTRY.get(name)
    info = {"config": cfg}
    if entry:
        info["checkpoint"] = {"file": entry.filename, "urls": list(entry.urls), "size": entry.size,
                              "sha256": entry.sha256, "manual": entry.manual, "path": str(local_path(entry)),
                              "present": local_path(entry).exists(), "notes": list(entry.notes)}
    print(json.dumps(info, indent=2))


@models_app.command("download")
def models_download(name: str) -> None:
    """Download a prior's weights into the cache (resumable).

    Example: `ddpg models download imagenet256_uncond`
    """
    from ddpg.models import resolve_checkpoint

    try:
        print(resolve_checkpoint(name))
    except DdpgError as exc:
        fail(str(exc), code=1)


@models_app.command("verify")
def models_verify(name: str) -> None:
    """Recompute size and sha256 of a prior's local weights against the registry.

    Example: `ddpg models verify face64`
    """
    from ddpg.models import REGISTRY
    from ddpg.models.checkpoints import entry_for, local_path, sha256_file, verify_file

    try:
        entry = entry_for(name)
        path = local_path(entry)
        if not path.exists():
            fail(f"{path}: not present (run `ddpg models download {name}`)", code=1)
        verify_file(path, entry)
    except DdpgError as exc:
        fail(str(exc), code=1)
    digest = sha256_file(path)
    known = "matches the registry" if REGISTRY[name].sha256 else "no registered sha256 to compare"
    print(f"{path}: {path.stat().st_size} bytes, sha256 {digest} ({known})")


@presets_app.command("list")
def presets_list(method: str = typer.Option(None), prior: str = typer.Option(None),
                 task: str = typer.Option(None)) -> None:
    """Preset names (method/prior/task/sigma_y).

    Example: `ddpg presets list --method idpg --prior celeba_hq`
    """
    from ddpg.runtime import list_presets

    for name in list_presets(method, prior, task):
        print(name)


@presets_app.command("show")
def presets_show(name: str) -> None:
    """Every field of a preset.

    Example: `ddpg presets show ddpg/celeba_hq/sr4/0.05`
    """
    from ddpg.runtime import load_preset

    try:
        print(json.dumps(load_preset(name).to_dict(), indent=2))
    except DdpgError as exc:
        fail(str(exc))


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
