"""``ddpg restore``: restore image files (or their measurements) into a folder, batch by batch, with loading
and writing overlapped with the sampling; :func:`restore_on_ranks` shares one call out across torchrun ranks.

A :class:`~ddpg.api.request.RestoreRequest` becomes a :class:`RestorePlan` (:func:`plan_restore`); each input
becomes an :class:`InputJob` (:func:`prepare_input`), is sampled in a batch, and :func:`write_outputs` writes it."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from ddpg.api.degradation import observation_meta
from ddpg.api.denoisers import (
    check_engine_prior,
    engine_batch_profile,
    guess_prior_of,
    make_denoiser,
    prior_record,
    size_multiple,
)
from ddpg.api.memory import available_bytes, restore_bytes, tiled_restore_bytes
from ddpg.api.outputs import check_apart, claim_outputs, named_outputs, output_folder, read_sidecar
from ddpg.api.report import NullProgress, Report, failure_reason
from ddpg.api.request import RestoreRequest
from ddpg.api.settings import (
    Settings,
    apply_hyper,
    apply_operator,
    check_task_files,
    describe_settings,
    image_params,
    method_defaults,
    no_prior_error,
    operator_args,
    resolve_settings,
    size_note,
)
from ddpg.api.tiling import TilePolicy, engine_tile_side, tile_policy, tiled_denoiser
from ddpg.errors import DdpgError, InputError, ParameterError
from ddpg.io import (
    IMAGE_SUFFIXES,
    MEASUREMENT_SUFFIXES,
    StagedFiles,
    center_crop_resize,
    collect_inputs,
    image_size,
    load_image,
    load_measurement,
    pad_bottom_right,
    padded_size,
    save_image,
    save_json,
)
from ddpg.metrics import psnr, ssim
from ddpg.models.denoiser import native_image_size
from ddpg.operators import baseline, make_operator, stack_operators
from ddpg.operators.baselines import auto_baseline_name
from ddpg.operators.tasks import task_entry
from ddpg.runtime import Restorer, distributed, get_sampler, load_preset
from ddpg.runtime.backends.capabilities import backend_capabilities
from ddpg.runtime.background_io import BackgroundWriter, Prefetcher
from ddpg.runtime.distributed import shard_indices
from ddpg.runtime.fast_denoiser import FastDenoiser
from ddpg.runtime.graph_runner import GRAPH_METHODS, GraphRunner
from ddpg.threads import use_threads
from ddpg.versions import versions

log = logging.getLogger("ddpg")

SIDECAR_KIND = "ddpg-restoration"
RUN_SUMMARY = "run_summary.json"
RUN_SUMMARY_KIND = "ddpg-run-summary"
# what loading, degrading or restoring one input may raise without stopping the others (torch reports running
# out of memory as a RuntimeError or MemoryError); anything else is a bug and stops the run
PER_IMAGE_ERRORS = (DdpgError, OSError, RuntimeError, ValueError, MemoryError)
MAX_GRAPH_RUNNERS = 4  # CUDA-graph runners kept at once (one per operator and σ_y), least recently used dropped


@dataclass
class RestorePlan:
    """What every input of one restoration shares: the request, its resolved settings and denoiser, and the
    operators and graph runners built so far (keyed by operator, and by operator and σ_y). :func:`restore` makes
    one with :func:`plan_restore`; a caller with its own denoiser and sidecar record (``ddpg serve``) may build
    one by name and run :func:`prepare_input` and :func:`write_outputs` on it, as ``restore`` does."""

    request: RestoreRequest
    settings: Settings
    denoiser: object
    record: dict  # the sidecar entries every output shares
    mask_spec: dict = field(default_factory=dict)  # parse_mask(request.mask)
    target: int | None = None  # the side length of resized inputs
    multiple: int = 1  # image sides must be multiples of this (the prior's downsampling)
    step_graph: bool = False  # whole-step CUDA-graph runners instead of the Restorer's loop
    batch_size: int = 1  # the request's, lowered to what an engine takes
    needs_grad: bool = False
    cudnn_tune: bool = False  # let cuDNN time its convolution algorithms during the run
    tiles: TilePolicy = TilePolicy("off", None, 0)  # --tile / --tile-overlap, resolved for the prior
    tiled: object = None  # the denoiser wrapped to run over tiles (a TiledDenoiser); None when nothing tiles
    operators: dict = field(default_factory=dict)
    runners: dict = field(default_factory=dict)


@dataclass
class InputJob:
    """One input, loaded and degraded (:func:`prepare_input`), waiting for its batch."""

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
    key: tuple  # the operator's identity (task, padded size, parameters): one operator and graph runner per key
    group: tuple  # jobs with equal groups share a sampler call (:func:`group_sampler`)
    restorer: object
    sampler: Callable  # restore(y, seeds, callback=None): the restorer's, or a CUDA-graph runner's
    describe: dict
    source: dict
    t_load: float
    settings: dict  # what the sidecar's "settings" records and skip_existing compares
    tiling: dict = field(default_factory=dict)  # the sidecar's "tiling": whether the UNet ran over tiles, and how


@contextmanager
def cudnn_autotune(enabled: bool) -> Iterator[None]:
    """``torch.backends.cudnn.benchmark`` set to ``enabled`` inside the block (when True), restored after."""
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = before or enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def output_stem(path: Path) -> str:
    """Outputs of ``x.png`` and of its observation ``x_observed.pt`` share the stem ``x``."""
    return path.stem[: -len("_observed")] if path.stem.endswith("_observed") else path.stem


def restore(inputs: Sequence[str | Path] | RestoreRequest, outdir: str | Path | None = None, *, progress=None,
            **options) -> Report:
    """Restore image files (or folders of them) into ``outdir``: ``restore(inputs, outdir, **options)`` with the
    options of :class:`RestoreRequest` (TypeError naming an unknown one), or ``restore(request)``.

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
    method's hyper-parameters; ``select_candidates`` turns on DDPG's noise-candidate selection; ``operator``
    builds the task's operator from these make_operator parameters (e.g. ``{"sigma": 3.0, "kernel_size": 25}``)
    instead of the preset's, so that several methods can be compared on one measurement.
    Speed (torch backend): ``precision`` fp16/bf16 runs the UNet torso in low precision (guidance stays float32),
    ``compile`` wraps it in ``torch.compile``, ``cuda_graph`` (CUDA; the forward-only methods) captures each whole
    sampler step in one CUDA graph (torch, fixed-shape TensorRT engines) or, with ONNX Runtime, the engine call (ONNX
    Runtime's own graph mode; fixed-batch exports); on CUDA any of them also turns on cuDNN's algorithm timing
    (``cudnn.benchmark``) for the call. ``shard=(rank, world_size)``: handle only this rank's
    contiguous share of the sorted inputs (indices, hence seeds and outputs, stay global). ``denoiser`` skips
    building one from prior/checkpoint/backend. ``progress``: a :class:`NullProgress`-like reporter."""
    if isinstance(inputs, RestoreRequest):
        if outdir is not None or options:
            raise TypeError("restore(request) takes no other arguments; the request holds every option")
        request = inputs
    else:
        request = RestoreRequest.from_options(inputs, outdir, **options)
    progress = progress or NullProgress()
    files, collected = _collect(request.inputs, request.outdir, request.observed)
    threads = use_threads(request.threads)
    plan = plan_restore(request)
    log.info("restore: %s, %d CPU threads%s", describe_settings(plan.settings, plan.record["prior"]["name"]),
             threads, " (an observation's metadata names its own task, operator and σ_y)" if request.observed else "")
    note = _size_note(plan, files) if request.shard[0] == 0 else None
    if note is not None:
        log.warning("%s", note)
    # the ranks of a torchrun job share the lock restore_on_ranks took
    with output_folder(request.outdir) if files and request.shard[1] == 1 else nullcontext():
        report, pending = _pending_inputs(plan, files, collected)
        with cudnn_autotune(plan.cudnn_tune):
            run_plan(plan, pending, report, progress)
    return report


def _size_note(plan: RestorePlan, files: list[Path]) -> str | None:
    """The note (:func:`~ddpg.api.settings.size_note`) of the first input restored far from the prior's native
    size, its size read from its header (an observed image's times the task's scale; ``.pt``/``.npy``
    measurements are not looked at; an input the plan tiles is not far from it); None when none is or the prior
    has no native size."""
    native = native_image_size(plan.denoiser)
    if native is None or not files:
        return None
    prior = plan.record["prior"]["name"]
    if plan.request.resize:  # every input is cropped and resized to the target
        return size_note(files[0], (plan.target, plan.target), prior, native)
    op = plan.settings.operator
    scale = task_entry(op["task"]).measurement_scale(op) if plan.request.observed else 1
    for path in files:
        size = None if path.suffix.lower() in MEASUREMENT_SUFFIXES else image_size(path)
        size = None if size is None else (size[0] * scale, size[1] * scale)
        if size is not None and plan.tiles.decide(size, lambda: True)[0]:
            continue  # the prior sees it in tiles of its own size
        note = None if size is None else size_note(path, size, prior, native)
        if note is not None:
            return note
    return None


def plan_restore(request: RestoreRequest) -> RestorePlan:
    """The plan of ``request``: its settings resolved (preset, method, σ_y, steps, hyper-parameters) and checked,
    then its denoiser built (or the request's, wrapped for the speed options) and checked against them."""
    prior, denoiser = _prior_and_engine(request)
    settings = apply_hyper(resolve_settings(request.task, request.method, request.preset, prior or "",
                                            request.sigma_y, request.steps), request.hyper, request.select_candidates)
    settings = apply_operator(settings, request.operator)
    mask_spec = check_task_files(settings.task, request.mask, request.kernel)
    spec = get_sampler(settings.method)
    capabilities = spec.capabilities(spec.build(settings.sigma_y, settings.hyper))
    # a backend that captures its own engine call (ONNX Runtime) runs the steps eagerly
    step_graph = request.cuda_graph and not backend_capabilities(request.backend).engine_call_graph
    if step_graph and not capabilities.capturable:
        raise ParameterError("cuda_graph", True, f"captures the steps of {', '.join(GRAPH_METHODS)}; not those of "
                             f"method {settings.method} with these settings, which {capabilities.why_not}")
    denoiser = _torch_denoiser(request, denoiser, prior)
    if step_graph and not denoiser.graph_safe:
        raise ParameterError("cuda_graph", True, f"this denoiser ({denoiser.name or request.backend}) cannot be "
                             "captured in a CUDA graph (the analytic prior, or an engine with a dynamic batch)")
    schedule = denoiser.schedule
    if settings.steps > len(schedule.betas):
        raise ParameterError("steps", settings.steps, f"exceeds the prior's {len(schedule.betas)} diffusion steps")
    prior_size = native_image_size(denoiser)
    if request.resize and not (request.size or prior_size):
        raise ParameterError("resize", True, f"needs a size (the prior {prior} has no fixed image size)")
    batch_size = _engine_batch(denoiser, request.batch_size)
    multiple = size_multiple(denoiser)
    tiles = tile_policy(request.tile, request.tile_overlap, prior_size, multiple, engine_tile_side(denoiser))
    profile = engine_batch_profile(denoiser)
    # the speed options also let cuDNN time its convolution algorithms per shape (as `ddpg bench` does); the
    # plain path keeps cuDNN's heuristic choice, which does not vary from run to run
    tune = torch.device(request.device).type == "cuda" and (request.precision != "fp32" or request.compile
                                                            or request.cuda_graph)
    return RestorePlan(request=request, settings=settings, denoiser=denoiser,
                       record=sidecar_record(request, settings,
                                             prior_record(prior, request.checkpoint, request.backend, request.engine,
                                                          denoiser), versions(request.device), batch_size=batch_size,
                                             cudnn_tune=tune,
                                             method_defaults=method_defaults(settings.task, settings.method,
                                                                             prior or "")),
                       mask_spec=mask_spec, target=request.size or prior_size, multiple=multiple,
                       step_graph=step_graph, batch_size=batch_size,
                       needs_grad=capabilities.needs_grad, cudnn_tune=tune, tiles=tiles,
                       tiled=tiled_denoiser(denoiser, tiles, profile, request.tile_batch))


def _prior_and_engine(request: RestoreRequest) -> tuple[str | None, object]:
    """(prior name, the request's denoiser or its ONNX/TensorRT engine, else None): an engine says which prior it
    holds; a checkpoint alone is recognised; else the preset's prior, or the request's denoiser's. Naming none is
    an error listing the priors (:func:`~ddpg.api.settings.no_prior_error`): there is no default prior."""
    backend, denoiser, prior = request.backend, request.denoiser, request.prior
    engine_file = backend_capabilities(backend).engine_file
    if prior is None and request.checkpoint is not None and not engine_file and denoiser is None:
        prior = guess_prior_of(request.checkpoint)
    preset_prior = None
    if request.preset is not None:
        preset_prior = load_preset(request.preset).prior
    if engine_file and denoiser is None:  # the engine says which prior it holds
        engine_graph = request.cuda_graph and backend_capabilities(backend).engine_call_graph
        options = {"cuda_graph": True} if engine_graph else {}
        denoiser = make_denoiser(None, None, backend, request.engine, request.device, request.class_label, **options)
        prior = check_engine_prior(denoiser, preset_prior)
    if engine_file:
        return prior, denoiser
    prior = prior or preset_prior or (None if denoiser is None else denoiser.name)
    if prior is None and denoiser is None:
        raise no_prior_error()
    return prior, denoiser


def _torch_denoiser(request: RestoreRequest, denoiser, prior: str | None):
    """``denoiser``, or the torch prior's when None; on the torch backend wrapped for the speed options."""
    backend = request.backend
    if denoiser is None:
        denoiser = make_denoiser(prior, request.checkpoint, backend, request.engine, request.device,
                                 request.class_label)
    speed = request.precision != "fp32" or request.compile or request.cuda_graph
    if not backend_capabilities(backend).engine_file and speed:
        denoiser = FastDenoiser(denoiser, precision=request.precision, compile=request.compile, device=request.device)
    return denoiser


def sidecar_record(request: RestoreRequest, settings: Settings, prior: dict, versions: dict, *, batch_size: int = 1,
                   cudnn_tune: bool = False, method_defaults: dict | None = None) -> dict:
    """The sidecar entries every output of a request shares (a :class:`RestorePlan`'s ``record``): its settings,
    ``prior`` (:func:`~ddpg.api.denoisers.prior_record`), ``versions`` (:func:`~ddpg.versions.versions`), the
    batch size it ran at, the speed options (with the CPU threads torch runs on) and, when given, what the method
    does by default."""
    record = {"task": settings.task, "method": settings.method, "preset": settings.preset, "prior": prior,
              "steps": settings.steps, "hyper": settings.hyper, "base_seed": request.seed,
              "device": str(request.device), "bits": request.bits, "batch_size": batch_size, "versions": versions}
    if method_defaults is not None:
        record["method_defaults"] = method_defaults
    record["speed"] = {"precision": request.precision, "compile": request.compile, "cuda_graph": request.cuda_graph,
                       "cudnn_autotune": cudnn_tune, "threads": torch.get_num_threads()}
    return record


def _pending_inputs(plan: RestorePlan, files: list[Path], collected: Report) -> tuple[Report, list[tuple[int, Path]]]:
    """(the report so far, the (index, path) inputs of this rank's shard to restore): an input whose output
    name another took, or whose outputs exist (skipped with ``skip_existing``, else refused unless they are
    this restoration's own), is reported, not restored. ``collected``: what :func:`_collect` reported (rank 0
    reports it)."""
    shard = plan.request.shard
    mine = set(shard_indices(len(files), *shard))
    report = collected if shard[0] == 0 else Report()
    stems: dict[str, Path] = {}
    pending: list[tuple[int, Path]] = []
    for index, path in enumerate(files):
        stem = output_stem(path)
        if stem in stems:
            if index in mine:
                report.failed.append((str(path), f"not restored: same output name {stem!r} as {stems[stem]} "
                                                 "(rename one)"))
            continue
        stems[stem] = path
        if index not in mine:
            continue
        try:
            if _existing_outputs(plan, index, path, stem) and plan.request.skip_existing:
                report.skip(path, f"its outputs of these settings in {plan.request.outdir} are complete")
                continue
        except (DdpgError, OSError) as exc:
            report.failed.append((str(path), failure_reason(exc, path, plan.request.outdir)))
            continue
        pending.append((index, path))
    return report, pending


def _collect(inputs: list[str | Path], outdir: Path, observed: bool) -> tuple[list[Path], Report]:
    """The input files and a report of the unusable ones, of the files in input folders that earlier
    restorations' sidecars there name as outputs (skipped, unless named explicitly) and of the JSON files there
    that could not be read; refuses an output folder that holds an input of this run."""
    files, problems = collect_inputs(inputs, IMAGE_SUFFIXES | (MEASUREMENT_SUFFIXES if observed else frozenset()))
    check_apart("outdir", outdir, inputs, files)
    earlier, unread = _earlier_outputs(dict.fromkeys(Path(p).resolve() for p in inputs if Path(p).is_dir()))
    report = Report(failed=[(str(p), why) for p, why in problems], notes=[(str(p), why) for p, why in unread])
    explicit = {Path(p).resolve() for p in inputs if not Path(p).is_dir()}
    kept = []
    for path in files:
        if path.resolve() in earlier and path.resolve() not in explicit:
            report.skip(path, earlier[path.resolve()])
        else:
            kept.append(path)
    return kept, report


def output_names(stem: str) -> list[str]:
    """The images a restoration of an input of stem ``stem`` may write (its sidecar is ``<stem>.json``)."""
    return [f"{stem}_restored.png", f"{stem}_observed.png", f"{stem}_gt.png"]


def _earlier_outputs(folders: Iterable[Path]) -> tuple[dict[Path, str], list[tuple[Path, str]]]:
    """({file: why it is not an input} for the outputs that restoration sidecars ``<stem>.json`` in ``folders``
    name — only the names a restoration gives them, :func:`output_names` — and [(JSON file, why it was not
    read)]."""
    earlier, unread = {}, []
    for folder in folders:
        for sidecar in sorted(folder.glob("*.json")):
            try:
                record = read_sidecar(sidecar, SIDECAR_KIND)
            except InputError as exc:
                unread.append((sidecar, str(exc)))
                continue
            for name in named_outputs(record or {}) & set(output_names(sidecar.stem)):
                earlier[(folder / name).resolve()] = f"{sidecar} names it as an output of an earlier restoration " \
                                                     "(name the file to restore it)"
    return earlier, unread


def _job_settings(plan: RestorePlan, index: int, path: Path) -> dict:
    """What decides input ``index``'s outputs (its sidecar's ``settings``): input, task, method, steps, σ_y,
    seed, hyper-parameters, prior and checkpoint, operator options, size handling and bit depth."""
    op_task, sigma, options, _ = _operator_task(plan, index, path)
    prior = plan.record.get("prior", {})
    return json.loads(json.dumps({
        "input": str(path.resolve()), "observed": plan.request.observed, "task": plan.settings.task,
        "method": plan.settings.method, "steps": plan.settings.steps, "sigma_y": sigma,
        "seed": plan.request.seed + index, "hyper": plan.settings.hyper, "operator": op_task,
        "prior": prior.get("name") or prior.get("spec"), "checkpoint_sha256": prior.get("checkpoint_sha256"),
        "mask": options["mask"], "kernel": options["kernel"], "resize": plan.request.resize,
        "size": plan.target if plan.request.resize else None, "bits": plan.request.bits,
        "tile": plan.request.tile, "tile_overlap": plan.request.tile_overlap}, default=str))


def _existing_outputs(plan: RestorePlan, index: int, path: Path, stem: str) -> bool:
    """Whether input ``index`` already has complete outputs of these settings in the output folder. Raises
    InputError when restoring it would overwrite a file no restoration of these settings wrote (a user's file,
    a link, or the outputs of other settings, with the difference): :func:`~ddpg.api.outputs.claim_outputs`."""
    return claim_outputs(plan.request.outdir, output_names(stem), f"{stem}.json", SIDECAR_KIND,
                         lambda: _job_settings(plan, index, path), source=path, verb="restored", noun="restoration")


def _engine_batch(denoiser, batch_size: int) -> int:
    """``batch_size``, lowered to the largest batch an ONNX/TensorRT engine takes (a batch is split to fit)."""
    profile = engine_batch_profile(denoiser)
    largest = None if profile is None else profile.max
    if largest is not None and batch_size > largest:
        log.info("batch size %d split into batches of %d: the engine takes at most %d", batch_size, largest, largest)
        return largest
    return batch_size


def run_plan(plan: RestorePlan, pending: list[tuple[int, Path]], report: Report, progress) -> None:
    """Restore the ``pending`` (index, path) inputs in batches of ``plan.batch_size`` into ``report``; the next
    inputs load and degrade, and finished ones are written, in background threads while the sampler runs."""
    needs_grad, batch_size = plan.needs_grad, plan.batch_size

    def write_and_count(job: InputJob, out: torch.Tensor, timing: dict) -> None:
        try:
            report.done.append(write_outputs(plan, job, out, timing))
        except (DdpgError, OSError, MemoryError) as exc:
            report.failed.append((str(job.path), failure_reason(exc, job.path, plan.request.outdir)))
        finally:
            progress.advance()

    def run_batch(jobs: list[InputJob]) -> None:
        groups: dict = {}
        for job in jobs:  # one sampler call per kind of operator and σ_y; per-image seeds make batching invisible
            groups.setdefault(job.group, []).append(job)
        for group in groups.values():
            callback = progress.step_callback(",".join(j.stem for j in group), plan.settings.steps)
            t1 = time.perf_counter()
            try:
                with torch.enable_grad() if needs_grad else torch.no_grad():
                    out = group_sampler(group)(torch.cat([j.y for j in group]), [j.seed for j in group],
                                               callback=callback).detach().cpu()
            except PER_IMAGE_ERRORS as exc:  # e.g. out of memory, a backend error
                report.failed.extend((str(j.path), failure_reason(exc, j.path)) for j in group)
                progress.advance(len(group))
                continue
            seconds = time.perf_counter() - t1
            timing = {"restore_batch": round(seconds, 4), "restore_per_image": round(seconds / len(group), 4),
                      "images_in_batch": len(group)}
            for job, o in zip(group, out, strict=True):
                problem = not_finite(plan, job, o)
                if problem is None:
                    writer.submit(write_and_count, job, o, timing)
                else:
                    report.failed.append((str(job.path), problem))
                    progress.advance()

    progress.start(len(pending), "restore")
    writer = BackgroundWriter(depth=2 * batch_size)
    prefetch = Prefetcher(pending, lambda item: prepare_input(plan, *item), depth=batch_size + 1)
    try:
        batch: list[InputJob] = []
        for (_, path), job, error in prefetch:
            if error is not None:
                if not isinstance(error, PER_IMAGE_ERRORS):
                    raise error
                report.failed.append((str(path), failure_reason(error, path)))
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
            report.failed.append((str(job.path), failure_reason(exc, job.path, plan.request.outdir)))


def group_sampler(jobs: list[InputJob]) -> Callable:
    """The sampler of a group of jobs (equal ``group``): the first job's when they share its operator, else a
    Restorer of the same settings on their stacked operator (``stack_operators``: image i's kernel or mask for
    sample i, so each image is restored as alone)."""
    first = jobs[0].restorer
    operator = stack_operators([job.restorer.operator for job in jobs])
    if operator is first.operator:
        return jobs[0].sampler
    return Restorer(first.denoiser, operator, method=first.method, sigma_y=first.sigma_y, steps=first.steps,
                    hyper=first.hyper).restore


def not_finite(plan: RestorePlan, job: InputJob, out: torch.Tensor) -> str | None:
    """Why the restoration ``out`` of ``job`` is not written, None when it is finite: it has NaN or infinite
    values (the sampler diverged); the message names the checkpoint and the hyper-parameters."""
    if torch.isfinite(out).all():
        return None
    prior = plan.record["prior"]
    source = prior["checkpoint"] or prior["engine"] or prior["name"] or prior["spec"]
    return (f"{job.path}: not written: the restoration has NaN or infinite values (the sampler diverged); check the "
            f"prior's weights ({source}) and the hyper-parameters of {plan.settings.method} "
            f"({json.dumps(plan.settings.hyper)}, σ_y {job.restorer.sigma_y}, {plan.settings.steps} steps)")


def _operator_task(plan: RestorePlan, index: int, path: Path) -> tuple[dict, float, dict, dict]:
    """(operator task and parameters, σ_y, operator_args options, input description) of one input: the
    settings', or for an observation written by ``ddpg degrade`` its metadata's, unless given explicitly; the
    per-image parameters are its task's draw for the input (:func:`image_params`) unless the metadata records
    them."""
    settings = plan.settings
    op_task, sigma = dict(settings.operator), settings.sigma_y
    seed = plan.request.seed + index
    options = {"per_image": image_params(op_task, index, seed), "mask": plan.mask_spec, "kernel": plan.request.kernel}
    source = {"kind": "observed" if plan.request.observed else "clean"}
    meta = observation_meta(path) if plan.request.observed else None
    if meta is None:
        return op_task, sigma, options, source
    if plan.request.operator is not None:
        raise InputError(f"{path}: this measurement was made with the operator its metadata names "
                         f"({path.with_suffix('.json')}); drop the operator option to restore it")
    if meta["task"] != settings.task:
        raise InputError(f"{path}: observed with task {meta['task']}, not {settings.task}; restore it with task "
                         f"{meta['task']}")
    args = dict(meta["operator_args"])
    if plan.request.mask is None and "mask" in args:
        options["mask"] = {"mask": str(path.parent / args.pop("mask"))}
    if plan.request.kernel is None and args.get("kernel"):
        options["kernel"] = args.pop("kernel")
    op_task = {"task": meta["operator"]["name"], **{k: v for k, v in args.items() if k not in ("mask", "kernel")}}
    drawn = image_params(op_task, index, seed)
    options["per_image"] = {k: op_task.pop(k, v) for k, v in drawn.items()}  # as recorded, else drawn
    sigma = meta["sigma_y"] if plan.request.sigma_y is None else float(plan.request.sigma_y)
    source.update({"metadata": str(path.with_suffix(".json")), "degrade_seed": meta.get("seed")})
    return op_task, sigma, options, source


def prepare_input(plan: RestorePlan, index: int, path: Path) -> InputJob:
    """Input ``index`` of the plan (its seed is ``request.seed + index``), as :func:`restore` prepares each: load
    it, pad it to what the prior and operator take, build (or reuse, in ``plan.operators``) its operator and
    sampler, and degrade it (clean inputs) or check it (observed ones). InputError names the file."""
    t0 = time.perf_counter()
    op_task, sigma, options, source = _operator_task(plan, index, path)
    task = task_entry(op_task["task"])
    scale = task.measurement_scale(op_task)
    clean = None
    if plan.request.observed:
        y = load_measurement(path, plan.request.max_pixels) if path.suffix.lower() in MEASUREMENT_SUFFIXES else \
            load_image(path, plan.request.max_pixels) * 2 - 1
        hw = (y.shape[1] * scale, y.shape[2] * scale)
    else:
        clean = load_image(path, plan.request.max_pixels)
        hw = (plan.target, plan.target) if plan.request.resize else tuple(clean.shape[1:])
    padded, denoiser, tiling = _fit_size(plan, path, hw, scale)  # before any work at that size
    padded_y = (padded[0] // scale, padded[1] // scale)
    if clean is not None and plan.request.resize:
        clean = center_crop_resize(clean, plan.target)
    image_seed = plan.request.seed + index
    try:
        name, params, describe = operator_args(op_task, plan.settings.task, hw, padded, **options)
        key = (name, padded, repr(sorted((k, v.tolist() if isinstance(v, torch.Tensor) else v)
                                         for k, v in params.items())))
        if key not in plan.operators:
            plan.operators[key] = make_operator(name, padded, **params).to(plan.request.device)
    except DdpgError as exc:
        raise InputError(f"{path}: {exc}") from exc
    operator = plan.operators[key]
    restorer = Restorer(denoiser, operator, method=plan.settings.method, sigma_y=sigma,
                        steps=plan.settings.steps, hyper=plan.settings.hyper)
    sampler = restorer.restore
    if plan.step_graph:  # one runner (buffers + graphs) per operator and σ_y, replaying the Restorer exactly
        runner = plan.runners.pop((key, sigma), None) or GraphRunner.from_restorer(restorer, cuda_graph=True)
        plan.runners[(key, sigma)] = runner  # now the most recently used
        if len(plan.runners) > MAX_GRAPH_RUNNERS:  # each holds graphs and their private memory pools
            plan.runners.pop(next(iter(plan.runners))).release()  # it captures again if its inputs come back
        sampler = runner.restore
    if plan.request.observed:
        y = task_entry(name).observe(pad_bottom_right(y, padded_y)[None].to(plan.request.device), operator)
        try:
            operator.check_measurement(y)
        except DdpgError as exc:
            raise InputError(f"{path}: {exc}") from exc
    else:
        x = pad_bottom_right(clean, padded)[None].to(plan.request.device) * 2 - 1
        y = restorer.degrade(x, [image_seed])
    describe.update({"size": list(hw), "padded_to": list(padded),
                     "resized": bool(plan.request.resize and not plan.request.observed)})
    H, W = hw
    y_view = ((y[0, :, : math.ceil(H / scale), : math.ceil(W / scale)] + 1) / 2).clamp(0, 1).cpu()
    base = None if clean is None else ((baseline(operator, y)[0, :, :H, :W] + 1) / 2).clamp(0, 1).cpu()
    # step_graph: one CUDA-graph runner per operator; else operators of one kind stack into one call
    group = (key if plan.step_graph else operator.batch_key(), sigma)
    return InputJob(path, output_stem(path), index, image_seed, hw, padded, clean, y, y_view, base, key, group,
                    restorer, sampler, describe, source, time.perf_counter() - t0, _job_settings(plan, index, path),
                    tiling)


def _fit_size(plan: RestorePlan, path: Path, hw: tuple[int, int], scale: int) -> tuple[tuple[int, int], object, dict]:
    """(padded size, the denoiser, the sidecar's tiling entry) of an image of size ``hw`` whose measurement is
    ``scale`` × smaller: tiled or not as the plan's tile policy decides (auto: whether the untiled pass fits),
    padded at the bottom and right to what the operator (and, untiled, the prior) take, and refused
    (:func:`_check_memory`) when even that does not fit."""
    def untiled_size() -> tuple[int, int]:
        return padded_size(hw, math.lcm(plan.multiple, scale))

    tiled, reason = plan.tiles.decide(hw, lambda: _memory_need(plan, untiled_size(), None)[0] <= _free(plan))
    padded = padded_size(hw, scale) if tiled else untiled_size()
    _check_memory(plan, path, padded, plan.tiled if tiled else None)
    if padded != hw:
        log.info("%s: %d×%d padded to %d×%d (the %s need multiples of %d); output cropped back", path, hw[1], hw[0],
                 padded[1], padded[0], "operator" if tiled else "prior and operator",
                 scale if tiled else math.lcm(plan.multiple, scale))
    tiling = plan.tiles.record(tiled, reason, plan.tiled, padded)
    return padded, plan.tiled if tiled else plan.denoiser, tiling


def _free(plan: RestorePlan) -> float:
    """Bytes free on the plan's device (infinite where that cannot be told)."""
    have = available_bytes(plan.request.device)
    return float("inf") if have is None else have


def _memory_need(plan: RestorePlan, padded: tuple[int, int], tiled) -> tuple[float, str]:
    """(estimated peak bytes, 0 when unknown; how the UNet runs, for a message) of restoring images of the padded
    size at the plan's batch, untiled or over the tiles of ``tiled`` (a TiledDenoiser)."""
    config = plan.denoiser.config
    if tiled is None:
        need, how = restore_bytes(config, plan.batch_size, padded, plan.needs_grad), ""
    else:
        layout = tiled.layout(padded)
        need = tiled_restore_bytes(config, plan.batch_size, padded, layout.tile, tiled.batch, layout.count,
                                   plan.needs_grad)
        how = f", in {layout.count} tiles of {layout.tile} px,"
    return need or 0, how


def _check_memory(plan: RestorePlan, path: Path, padded: tuple[int, int], tiled) -> None:
    """Refuse an input whose restoration at the padded size (untiled, or over the tiles of ``tiled``) would need
    more memory than the device has free."""
    need, how = _memory_need(plan, padded, tiled)
    have = available_bytes(plan.request.device) if need else None
    if need and have is not None and need > have:
        config = plan.denoiser.config
        smaller = " or with a smaller batch_size" if plan.batch_size > 1 else ""
        raise InputError(f"{path}: not restored: {padded[1]}×{padded[0]} with the {config.get('name') or 'given'} "
                         f"prior at batch {plan.batch_size}{how} needs about {need / 2**30:.1f} GiB, more than the "
                         f"{have / 2**30:.1f} GiB free on {plan.request.device}; restore it resized "
                         f"(resize=True, size=N){smaller}")


def write_outputs(plan: RestorePlan, job: InputJob, out: torch.Tensor, timing: dict) -> str:
    """Write a job's images and its sidecar (last) into ``plan.request.outdir``, as :func:`restore` writes each,
    every file under a temporary name and then renamed; returns the restored image's path. Touches CPU tensors
    only (it runs in restore's writer thread). ``out``: (3, H', W') in [-1, 1] at the padded size; ``timing``:
    seconds entries for the sidecar's ``timings_s``."""
    t0 = time.perf_counter()
    H, W = job.size
    restored = ((out[:, :H, :W] + 1) / 2).clamp(0, 1).cpu()
    op = job.restorer.operator
    stem, outdir, bits = job.stem, plan.request.outdir, plan.request.bits
    sidecar = {"kind": SIDECAR_KIND, "input": str(job.path),
               "outputs": {"restored": f"{stem}_restored.png", "observed": f"{stem}_observed.png"},
               **plan.record, "sigma_y": job.restorer.sigma_y,
               "operator": {"name": op.name, **{k: v for k, v in op.params.items() if k != "mask"}, **job.describe},
               "seed": job.seed, "index": job.index, "input_kind": job.source, "settings": job.settings,
               "tiling": job.tiling,
               "timings_s": {"load_and_degrade": round(job.t_load, 4), **timing}}
    if job.clean is not None:
        metrics = {"psnr": round(psnr(restored, job.clean), 4),
                   "baseline_psnr": round(psnr(job.baseline, job.clean), 4),
                   "baseline": auto_baseline_name(op)}
        if min(H, W) >= 11:
            metrics["ssim"] = round(ssim(restored, job.clean), 4)
        sidecar["metrics"] = metrics
    with StagedFiles() as files:
        if plan.request.resize and job.clean is not None:
            files.add(outdir / f"{stem}_gt.png", lambda tmp: save_image(job.clean, tmp, bits))
            sidecar["outputs"]["ground_truth"] = f"{stem}_gt.png"
        files.add(outdir / f"{stem}_observed.png", lambda tmp: save_image(job.y_view, tmp, bits))
        files.add(outdir / f"{stem}_restored.png", lambda tmp: save_image(restored, tmp, bits))
        sidecar["timings_s"]["write"] = round(time.perf_counter() - t0, 4)
        files.add(outdir / f"{stem}.json", lambda tmp: save_json(sidecar, tmp))
    return str(outdir / f"{stem}_restored.png")


def restore_on_ranks(request: RestoreRequest, progress=None) -> Report:
    """:func:`restore` of ``request`` as launched by ``torchrun --nproc-per-node N ddpg restore ...``: each rank
    restores its contiguous share of the sorted inputs on its own device (``cuda`` → cuda:LOCAL_RANK; gloo on
    CPU, NCCL on GPUs); rank 0 returns the merged report (``extra``: world size, per-rank summaries, images/s)
    and writes it to ``outdir/run_summary.json``; the other ranks return their own. Seeds follow the global
    input index, so the outputs equal a single-process run's. Without torchrun this is :func:`restore`."""
    if not distributed.launched_by_torchrun():
        return restore(request, progress=progress)
    ctx = distributed.dist_context(request.device)
    start = time.perf_counter()
    shard = (ctx.rank, ctx.world_size)
    with output_folder(request.outdir, shard=shard):  # rank 0 holds the lock for every rank
        report = restore(replace(request, device=str(ctx.device), shard=shard), progress=progress)
        summary = distributed.gather_summary({
            "rank": ctx.rank, "device": str(ctx.device), "done": report.done, "skipped": report.skipped,
            "failed": [list(f) for f in report.failed], "interrupted": report.interrupted,
            "exit_code": report.exit_code, "wall_s": round(time.perf_counter() - start, 4),
            "notes": [list(n) for n in report.notes]})
        distributed.finish()
        if summary is None:
            return report
        merged = Report(done=summary["done"], skipped=summary["skipped"],
                        failed=[tuple(f) for f in summary["failed"]], interrupted=summary["interrupted"],
                        notes=[tuple(n) for rank in summary["ranks"] for n in rank["notes"]],
                        extra={k: summary[k] for k in ("world_size", "ranks", "wall_s", "images_per_s")
                               if k in summary})
        _save_run_summary(request.outdir / RUN_SUMMARY, summary, merged)
    return merged


def _save_run_summary(path: Path, summary: dict, report: Report) -> None:
    """Write the merged summary of a torchrun restoration, unless ``path`` is a file that is not one (a user's
    file, a link): then the report names it as a failure."""
    try:
        if os.path.lexists(path) and read_sidecar(path, RUN_SUMMARY_KIND) is None:
            raise InputError(f"{path}: not written: a file there is not a ddpg run summary; it is never overwritten")
    except InputError as exc:
        report.failed.append((str(path), str(exc)))
        return
    save_json({"kind": RUN_SUMMARY_KIND, **summary}, path)
