"""The ``ddpg`` command line (Typer), a thin layer over :mod:`ddpg.api`.

Results go to stdout, progress bars and logs to stderr. Exit codes: 0 all good, 1 some inputs failed (each
named in the summary), 2 usage or setup error (nothing processed), 130 interrupted (Ctrl-C; finished
outputs are complete, nothing is half-written).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import typer
from rich.markup import escape

from ddpg import api
from ddpg.api.request import RestoreRequest
from ddpg.checks import DEFAULT_SIGMA_Y
from ddpg.errors import DdpgError
from ddpg.threads import ThreadsOption, use_threads
from ddpg.versions import __version__

from .bench import bench_command
from .doctor import doctor_command
from .export import build_engine_command, export_command
from .flags import flag_message, flags_of
from .progress import RichProgress, console, setup_logging
from .schema import TableHelp, with_options
from .serve import serve_command

app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                  help="Diffusion-prior image restoration (DDPG/IDPG and peers).\n\n"
                       "Example: `ddpg restore photos/ -o out --task sr4 --prior face64`")
models_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                         help="Known priors, their weights and the cache.\n\nExample: `ddpg models list`")
presets_app = typer.Typer(no_args_is_help=True, rich_markup_mode="markdown",
                          help="The paper presets (method/prior/task/sigma_y).\n\nExample: `ddpg presets list`")
app.add_typer(models_app, name="models")
app.add_typer(presets_app, name="presets")

QUIET = typer.Option(False, "-q", "--quiet", help="No progress bars or info logs (warnings and errors only).")


def _version(value: bool) -> None:
    if value:
        print(f"ddpg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Diffusion-prior image restoration (DDPG/IDPG and peers)."""


def fail(message: str, code: int = 2) -> None:
    console.print("[red]error:[/red]", escape(message), highlight=False)
    raise typer.Exit(code)


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt


def run(action: Callable[[], api.Report], quiet: bool, flags: Mapping[str, str] | None = None) -> api.Report:
    """Run an API call with logging set up; setup errors exit 2 (a bad parameter named by its flag in ``flags``,
    see :func:`~ddpg.cli.flags.flags_of`), Ctrl-C (or SIGTERM, handled the same way) before any input exits 130."""
    setup_logging(quiet)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return action()
    except DdpgError as exc:
        fail(flag_message(exc, flags))
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow] before any input finished")
        raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def finish(report: api.Report, what: str) -> None:
    """Name every failure, every skipped input and file not read (with why), summarise, and exit with the
    report's code."""
    for _, note in report.notes:
        console.print("[yellow]note:[/yellow]", escape(note), highlight=False)
    for path, why in report.failed:
        console.print("[red]failed:[/red]", escape(why if path in why else f"{path}: {why}"), highlight=False)
    counts = f"{len(report.done)} {what}, {len(report.skipped)} skipped, {len(report.failed)} failed"
    if report.interrupted:
        console.print(f"[yellow]interrupted[/yellow]: {counts}; finished outputs are complete, nothing is "
                      "half-written (run again with --skip-existing to resume)")
    else:
        console.print(counts)
    raise typer.Exit(report.exit_code)


@app.command(cls=TableHelp)
@with_options(RestoreRequest)
def restore(
    inputs: list[Path] = typer.Argument(None, help="Image files or folders (with --observed also .pt/.npy)."),
    sample: bool = typer.Option(False, "--sample", help="Restore the bundled sample face with face64."),
    quiet: bool = QUIET,
    **options,
) -> None:
    """Restore images: write `<name>_restored.png`, `<name>_observed.png` and a `<name>.json` sidecar.

    By default each input is the clean image, degraded first (as the papers evaluate) and scored (PSNR/SSIM
    in the sidecar); with `--observed` it is the measurement and is restored directly.

    Several GPUs: `torchrun --nproc-per-node 4 -m ddpg restore in/ -o out --prior celeba_hq --device cuda` shards the
    inputs across ranks (outputs as one process would write them) and rank 0 writes `out/run_summary.json`.

    Example: `ddpg restore faces/ -o out --task deblur_gauss --prior face64 --sigma-y 0.05 --steps 50`
    """
    if not sample and not inputs:
        fail("give input images or folders (or --sample)")
    if sample and inputs:
        fail(f"--sample restores the bundled face; drop the inputs ({', '.join(map(str, inputs))}) or --sample")
    quiet = quiet or os.environ.get("RANK", "0") not in ("", "0")  # under torchrun only rank 0 draws progress
    flags, outdir, sigma_y = flags_of(restore), options["outdir"], options["sigma_y"]
    with RichProgress(quiet) as progress:
        if sample:
            report = run(lambda: api.restore_sample(
                outdir, task=options["task"] or "sr4", method=options["method"] or "ddpg", steps=options["steps"],
                sigma_y=DEFAULT_SIGMA_Y if sigma_y is None else sigma_y, seed=options["seed"],
                device=options["device"], threads=options["threads"], progress=progress), quiet, flags)
        else:
            report = run(lambda: api.restore_on_ranks(restore_request(inputs, options), progress), quiet, flags)
    _print_restore_extra(report, outdir)
    finish(report, "restored")


def restore_request(inputs: list[Path], options: Mapping[str, object]) -> RestoreRequest:
    """The request of ``ddpg restore``'s inputs and options (``--hyper`` and ``--operator``: KEY=VALUE items)."""
    hyper, operator = api.parse_hyper(options["hyper"]), api.parse_hyper(options["operator"], "operator", "sigma=3.0")
    return RestoreRequest(inputs=inputs, **{**options, "hyper": hyper, "operator": operator or None})


def _print_restore_extra(report: api.Report, outdir: Path) -> None:
    """The sample's PSNR and grid, or a torchrun run's ranks, time and summary file."""
    if "psnr" in report.extra:
        console.print(f"PSNR {report.extra['psnr']:.2f} dB (baseline {report.extra['baseline_psnr']:.2f} dB); "
                      f"grid: {report.extra['grid']}")
    if "world_size" in report.extra:
        rate = report.extra.get("images_per_s")
        console.print(f"{report.extra['world_size']} ranks, {report.extra['wall_s']:.1f} s"
                      + (f", {rate:.2f} images/s" if rate else "") + f"; summary: {outdir / api.RUN_SUMMARY}")


@app.command(cls=TableHelp)
def degrade(
    inputs: list[Path] = typer.Argument(..., help="Clean image files or folders."),
    outdir: Path = typer.Option(..., "-o", "--outdir", help="Output folder."),
    task: str = typer.Option("sr4", help="{tasks}"),
    sigma_y: float = typer.Option(DEFAULT_SIGMA_Y, "--sigma-y", help="Noise std on the [0, 1] scale."),
    seed: int = typer.Option(0, help="Base seed: image i uses seed + i (the noise `restore` draws for it)."),
    resize: bool = typer.Option(False, "--resize", help="Centre-crop and resize to --size first."),
    size: int = typer.Option(None, help="Side length for --resize."),
    mask: str = typer.Option(None, help="inpaint: mask file, 'box' (default) or 'random[:R]'."),
    kernel: str = typer.Option(None, help="Blur kernel file (.npy or image)."),
    fmt: str = typer.Option("pt", "--format", help="Exact measurement file: pt | npy."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip inputs whose outputs exist (resume)."),
    quiet: bool = QUIET,
) -> None:
    """Make seeded observations: `<name>_observed.png` (for viewing), the exact unclipped float measurement
    `<name>_observed.pt` (or .npy) and its metadata `<name>_observed.json` (operator, sigma_y, seed).

    Restore them with `ddpg restore obs/ --observed -o out --prior face64` (task, sigma_y and operator come from
    the JSON).

    Example: `ddpg degrade faces/ -o obs --task sr4 --sigma-y 0.05`
    """
    with RichProgress(quiet) as progress:
        report = run(lambda: api.degrade(inputs, outdir, task=task, sigma_y=sigma_y, seed=seed, resize=resize,
                                         size=size, mask=mask, kernel=kernel, fmt=fmt, skip_existing=skip_existing,
                                         progress=progress), quiet,
                     flags_of(degrade))
    finish(report, "degraded")


evaluate_app = typer.Typer(rich_markup_mode="markdown")
app.add_typer(evaluate_app, name="evaluate")


@evaluate_app.callback(invoke_without_command=True)
@with_options(ThreadsOption)
def evaluate(
    ctx: typer.Context,
    pred: list[Path] = typer.Option(None, help="Folder of restorations; repeat for several methods."),
    gt: Path = typer.Option(None, help="Folder of ground-truth images (x.png ↔ x_restored.png or x.png)."),
    obs: Path = typer.Option(None, help="Folder of observations (x_observed.png) for the grid."),
    outdir: Path = typer.Option(None, "-o", "--outdir", help="Report folder (default: <first --pred>/evaluation)."),
    label: list[str] = typer.Option(None, help="Method names, one per --pred (default: folder names)."),
    grid_rows: int = typer.Option(8, help="Images in the comparison grid."),
    lpips: bool = typer.Option(True, "--lpips/--no-lpips", help="LPIPS (AlexNet) when available locally."),
    inception: Path = typer.Option(None, help="FID Inception weights (pt_inception-2015-12-05-6726825d.pth or "
                                              ".safetensors; default: torch hub's checkpoints folder)."),
    set_metrics: bool = typer.Option(True, "--set-metrics/--no-set-metrics", help="FID, KID, GMM-/KNN-GIQA."),
    giqa_components: int = typer.Option(5, help="GMM-GIQA mixture components (full covariances)."),
    giqa_pca: int = typer.Option(None, help="GMM-GIQA: PCA to this many dimensions before the fit."),
    quiet: bool = QUIET,
    **options,
) -> None:
    """Score restorations: PSNR (as the papers: float [0, 1], all values), SSIM (Gaussian 11×11, σ = 1.5),
    LPIPS (AlexNet, only when the `lpips` package and AlexNet weights are already on this machine), and over the
    set FID, KID, GMM-GIQA and KNN-GIQA on FID Inception features (only with its weights; never downloaded).

    Writes metrics.csv (per image), summary.json, summary.md (a Markdown table) and grid.png.
    `ddpg evaluate suite PLAN.yaml` runs a whole grid of restorations and writes the papers' tables.

    Example: `ddpg evaluate --pred out_ddpg --pred out_idpg --gt faces/ --obs out_ddpg`
    """
    if ctx.invoked_subcommand is not None:
        return
    if not pred or gt is None:
        fail("give --pred FOLDER (repeatable) and --gt FOLDER, or a subcommand (`ddpg evaluate suite PLAN`)")
    use_threads(options["threads"])
    report = run(lambda: api.evaluate(pred, gt, outdir, obs=obs, labels=label or None, grid_rows=grid_rows,
                                      use_lpips=lpips, set_metrics=set_metrics, inception=inception,
                                      giqa_components=giqa_components, giqa_pca=giqa_pca), quiet,
                 flags_of(evaluate) | {"labels": "--label"})
    summary = report.extra["summary"]
    print(Path(report.extra["outdir"]) / "summary.md")
    print((Path(report.extra["outdir"]) / "summary.md").read_text().split("\n\n")[0])
    for note in summary["notes"]:
        console.print(escape(note), highlight=False)
    finish(report, "images evaluated")


@evaluate_app.command("suite")
@with_options(ThreadsOption)
def evaluate_suite(
    plan: Path = typer.Argument(..., help="YAML plan: prior, dataset, out, grid of methods/tasks/sigma_y/steps."),
    device: str = typer.Option(None, help="cpu | cuda (default: the plan's, else cpu); under torchrun each rank "
                                          "takes cuda:LOCAL_RANK."),
    out: Path = typer.Option(None, help="Results folder (default: the plan's 'out')."),
    restore_only: bool = typer.Option(False, "--restore-only", help="Restore the cells, do not score them."),
    score_only: bool = typer.Option(False, "--score-only", help="Score the cells whose restorations are complete "
                                    "and write the tables; restore nothing (e.g. while a run restores)."),
    rescore: bool = typer.Option(False, "--rescore", help="Score finished cells again (e.g. once the FID "
                                 "Inception weights are there); their restorations are kept."),
    quiet: bool = QUIET,
    **options,
) -> None:
    """Run an evaluation plan: restore every (method, task, σ_y, steps) cell with `ddpg restore`'s engine, score
    it as `ddpg evaluate`, and write tables.md / tables.json (one table per task: rows methods, columns σ_y)
    and crop PNGs into the results folder. Finished cells are reused; an interrupted cell resumes per image.

    Several GPUs: `torchrun --nproc-per-node 4 -m ddpg evaluate suite plan.yaml --device cuda`.

    Example: `ddpg evaluate suite benchmarks/plans/face64.yaml`
    """
    from ddpg.api.suite import run_suite
    from ddpg.api.suite_plan import load_plan

    quiet = quiet or os.environ.get("RANK", "0") not in ("", "0")
    use_threads(options["threads"])  # the cells' restorations keep it (auto resolves once per process)
    with RichProgress(quiet) as progress:
        report = run(lambda: run_suite(load_plan(plan, device=device, out=out), progress=progress,
                                       restore=not score_only, score=not restore_only, rescore=rescore), quiet)
    if report.extra:
        print(Path(report.extra["out"]) / "tables.md")
    finish(report, "cells finished")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Known priors: where their weights are, sizes and checksums, and the cache folder.

    Example: `ddpg models list`
    """
    from ddpg.models import PRIOR_NAMES, REGISTRY, cache_dir
    from ddpg.models.checkpoints import local_path

    rows = []
    for name in PRIOR_NAMES:
        entry = REGISTRY.get(name)
        if entry is None:
            rows.append({"name": name, "status": "analytic (no weights)", "path": None, "size": None, "sha256": None})
            continue
        path = local_path(entry)
        status = "bundled" if entry.bundled else ("cached" if path.exists() else "not downloaded")
        rows.append({"name": name, "status": status, "path": str(path),
                     "size": path.stat().st_size if path.exists() else entry.size, "sha256": entry.sha256})
    if as_json:
        print(json.dumps({"cache": str(cache_dir()), "priors": rows}, indent=2))
        return
    print(f"cache: {cache_dir()}  (set DDPG_HOME to move it)")
    for r in rows:
        size = f"{r['size'] / 2**20:8.1f} MiB" if r["size"] else "       ?    "
        sha = (r["sha256"] or "-")[:12]
        print(f"{r['name']:20s} {r['status']:22s} {size}  sha256 {sha:12s}  {r['path'] or ''}")


@models_app.command("info")
def models_info(name: str = typer.Argument(..., help="Prior name.")) -> None:
    """A prior's architecture config and checkpoint facts (URLs, size, sha256, local path), as JSON.

    Example: `ddpg models info celeba_hq`
    """
    from ddpg.models import REGISTRY, prior_config
    from ddpg.models.checkpoints import local_path

    try:
        cfg = prior_config(name)
    except DdpgError as exc:
        fail(str(exc))
    entry = REGISTRY.get(name)
    info: dict = {"name": name, "config": cfg}
    if entry:
        path = local_path(entry)
        info["checkpoint"] = {"file": entry.filename, "urls": list(entry.urls), "size": entry.size,
                              "sha256": entry.sha256, "manual": entry.manual, "path": str(path),
                              "present": path.exists(), "bundled": bool(entry.bundled), "notes": list(entry.notes)}
    print(json.dumps(info, indent=2, default=str))


@models_app.command("download")
def models_download(name: str = typer.Argument(..., help="Prior name."), quiet: bool = QUIET) -> None:
    """Download a prior's weights into the cache (resumable, verified); prints the local path.

    Example: `ddpg models download imagenet256_uncond`
    """
    from ddpg.models import resolve_checkpoint

    setup_logging(quiet)
    try:
        print(resolve_checkpoint(name, quiet=quiet))
    except DdpgError as exc:
        fail(str(exc), code=2 if "no checkpoint registered" in str(exc) else 1)


@models_app.command("verify")
def models_verify(name: str = typer.Argument(..., help="Prior name.")) -> None:
    """Recompute the size and sha256 of a prior's local weights and compare with the registry.

    Example: `ddpg models verify face64`
    """
    from ddpg.models.checkpoints import entry_for, local_path, sha256_file, verify_file

    try:
        entry = entry_for(name)
    except DdpgError as exc:
        fail(str(exc))
    path = local_path(entry)
    if not path.exists():
        fail(f"{path}: not present (run `ddpg models download {name}`)", code=1)
    try:
        verify_file(path, entry)
    except DdpgError as exc:
        fail(str(exc), code=1)
    digest = sha256_file(path)
    known = "matches the registry" if entry.sha256 else "no registered sha256 to compare"
    print(f"{path}: {path.stat().st_size} bytes, sha256 {digest} ({known})")


@presets_app.command("list")
def presets_list(method: str = typer.Option(None, help="Only this method."),
                 prior: str = typer.Option(None, help="Only this prior."),
                 task: str = typer.Option(None, help="Only this task.")) -> None:
    """Preset names (method/prior/task/sigma_y), one per line.

    Example: `ddpg presets list --method idpg --prior celeba_hq`
    """
    from ddpg.runtime import list_presets

    for name in list_presets(method, prior, task):
        print(name)


@presets_app.command("show")
def presets_show(name: str = typer.Argument(..., help="Preset name.")) -> None:
    """Every field of a preset, as JSON.

    Example: `ddpg presets show ddpg/celeba_hq/sr4/0.05`
    """
    from ddpg.runtime import load_preset

    try:
        print(json.dumps(load_preset(name).to_dict(), indent=2))
    except DdpgError as exc:
        fail(str(exc))


# the commands kept in their own cli modules
app.command("export")(export_command)
app.command("build-engine")(build_engine_command)
app.command("bench")(bench_command)
app.command("doctor")(doctor_command)
app.command("serve")(serve_command)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
