"""The benchmark: one configuration (prior, backend, precision, graph/compile options) timed at several batch
sizes — per-call UNet latency, per-step latency inside whole restorations, throughput, peak GPU memory, counted
FLOPs against a measured matrix-product rate, the guidance's share of a step, a kernel profile — and a
low-precision accuracy check on the same x_T and noise.

Weights are random (default init, seed 0) unless ``checkpoint`` is given ("auto": the registry's bundled /
cached file). Timing does not depend on the weights; the accuracy check is only meaningful with real weights.
"""

from __future__ import annotations

import gc
import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
import yaml
from torch import nn

from ddpg.errors import ConfigError
from ddpg.io import load_image
from ddpg.metrics import psnr
from ddpg.models import as_denoiser, create_prior, load_prior
from ddpg.models.checkpoints import REGISTRY
from ddpg.models.denoiser import native_image_size
from ddpg.operators import ALIASES, make_operator
from ddpg.operators.tasks import task_entry
from ddpg.runtime.backends import make_denoiser
from ddpg.runtime.backends.capabilities import backend_capabilities
from ddpg.runtime.cuda_graph import capture_graph
from ddpg.runtime.fast_denoiser import FastDenoiser
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.restorer import Restorer
from ddpg.runtime.samplers.ddpg import ddpg_sample
from ddpg.runtime.tiling import TiledDenoiser, tile_call_batch
from ddpg.samples import sample_path
from ddpg.threads import use_threads
from ddpg.versions import __version__

from .config import BenchConfig
from .flops import count_flops
from .profile import profile_parts
from .report import CPU_NOTE, SCHEMA, check_targets, environment, now_utc
from .timing import Clock, matmul_rate, summarize_ms

WARMUP_STEPS = 3  # steps of the untimed restoration before the timed ones (capture, compilation, plans)
PROFILE_CALLS = 3  # profiled UNet / guidance calls per batch size


def parse_prior_spec(spec: str | dict) -> str | dict:
    """A prior name, a YAML path, or an inline YAML/JSON mapping such as ``{kind: ddpm, ch: 16, ...}``."""
    if isinstance(spec, dict):
        return spec
    text = str(spec).strip()
    if text.startswith("{"):
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--prior: not a valid inline YAML/JSON mapping ({exc})") from exc
        if not isinstance(parsed, dict):
            raise ConfigError("--prior: an inline config must be a mapping")
        return parsed
    return text


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available")
    return dev


def build_prior(spec: str | dict, checkpoint: str | None, device: torch.device) -> torch.nn.Module:
    """The fp32 prior module: random weights (seed 0) unless ``checkpoint`` (a path, or "auto")."""
    if checkpoint is not None:
        if isinstance(spec, dict):
            raise ConfigError("--checkpoint needs a named or YAML prior, not an inline config")
        return load_prior(spec, None if checkpoint == "auto" else checkpoint, device=device).eval()
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: much faster for the 550 M-parameter ADM on a GPU
        return create_prior(spec).eval()


def _labels(prior: torch.nn.Module) -> torch.Tensor | None:
    return torch.zeros(1, dtype=torch.long) if getattr(prior, "num_classes", None) is not None else None


def build_denoiser(cfg: BenchConfig, prior: torch.nn.Module, device: torch.device, batch: int | None = None,
                   *, cache_dir: Path | None = None):
    """The benchmarked denoiser: the plain ``Denoiser``, a ``FastDenoiser``, or an ONNX Runtime / TensorRT one for
    ``batch`` images (``cfg.engine``, or the prior's export for that batch from :func:`bench_export`)."""
    if cfg.plain:
        return as_denoiser(prior, class_labels=_labels(prior))
    capabilities = backend_capabilities(cfg.backend)
    if not capabilities.engine_file:
        return FastDenoiser(prior, precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile,
                            compile_mode=cfg.compile_mode, class_labels=_labels(prior))
    if not capabilities.plan_from_onnx:
        engine = cfg.engine or bench_export(cfg, batch or min(cfg.batches), cache_dir=cache_dir)
    else:  # TensorRT's plan / OpenVINO's IR, built from the export (or an --engine .onnx) in the engine cache
        from ddpg.export.engine_plans import onnx_precision, plan_from_onnx

        engine = cfg.engine or bench_export(replace(cfg, precision=onnx_precision(cfg.backend, cfg.precision)),
                                            batch or min(cfg.batches), cache_dir=cache_dir)
        if Path(engine).suffix == ".onnx":
            engine = plan_from_onnx(cfg.backend, engine, str(device), precision=cfg.precision,
                                    cache_dir=None if cache_dir is None else cache_dir / "engines")
    return make_denoiser(cfg.backend, engine=engine, device=device, class_labels=_labels(prior))


def export_key(cfg: BenchConfig, batch: int) -> dict:
    """What a bench export depends on: prior, weights, precision, the (fixed) batch, size and the exporting code."""
    weights: object = "random"
    if cfg.checkpoint == "auto":
        entry = REGISTRY.get(str(cfg.prior))
        weights = {"registry": str(cfg.prior), "sha256": entry.sha256 if entry else None}
    elif cfg.checkpoint is not None:
        stat = Path(cfg.checkpoint).stat()
        weights = {"file": str(Path(cfg.checkpoint).resolve()), "bytes": stat.st_size, "mtime": stat.st_mtime}
    return {"prior": cfg.prior, "weights": weights, "precision": cfg.precision, "batch": int(batch),
            "size": cfg.size, "ddpg": __version__, "torch": torch.__version__}


def bench_export(cfg: BenchConfig, batch: int, *, cache_dir: Path | None = None, log=None) -> Path:
    """The ONNX export of ``cfg.prior`` that the engine backends run at ``batch``: one fixed batch profile (a
    TensorRT engine is tuned for its profile's opt shape, so each benchmarked batch gets its own), exported once
    per (prior, weights, precision, batch, size) into ``<cache>/bench-onnx/`` and reused while its files match the
    sha256 its sidecar records. ``cache_dir``: default ``$DDPG_CACHE`` or the user cache folder."""
    from ddpg.export import export_prior
    from ddpg.export.engine_cache import default_cache_dir
    from ddpg.export.onnx_export import sha256_of

    if isinstance(cfg.prior, dict):
        raise ConfigError(f"--backend {cfg.backend} with an inline prior config: export it first and pass --engine")
    key = export_key(cfg, batch)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    root = (Path(cache_dir) if cache_dir is not None else default_cache_dir().parent) / "bench-onnx"
    out = root / f"{Path(str(cfg.prior)).stem}-{cfg.precision}-b{batch}-{digest}.onnx"
    sidecar = out.with_name(out.name + ".json")
    if out.is_file() and sidecar.is_file():
        files = json.loads(sidecar.read_text()).get("files", {})
        if files and all((root / f["name"]).is_file() and sha256_of(root / f["name"]) == f["sha256"]
                         for f in files.values()):
            return out
    export_prior(cfg.prior, out=out, checkpoint=None if cfg.checkpoint in (None, "auto") else cfg.checkpoint,
                 precision=cfg.precision, batch=str(batch), random_weights=cfg.checkpoint is None,
                 size=None if cfg.size is None else (cfg.size, cfg.size), validate=False, log=log)
    return out


def _engine_per_batch(cfg: BenchConfig) -> bool:
    """Whether each batch size runs its own export (engine backends without a given --engine)."""
    return backend_capabilities(cfg.backend).engine_file and not cfg.plain and cfg.engine is None


def ground_truth(size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """The bundled sample face (1,3,H,W) in [-1, 1], resized to ``size`` when needed."""
    img = load_image(sample_path())[None]
    if tuple(img.shape[-2:]) != tuple(size):
        img = torch.nn.functional.interpolate(img, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
    return (img * 2 - 1).to(device)


def _capture_unet(denoiser, x: torch.Tensor, t: torch.Tensor, warmup: int):
    """The denoiser alone in a CUDA graph (static x, t): the UNet-only latency with launch overhead removed
    (``capture_graph``, as the graph runner)."""
    return capture_graph(lambda: denoiser(x, t), x.device, warmup=warmup).replay


class RestorationPath:
    """Whole restorations on the plain path (``Restorer`` / ``ddpg_sample``) or the fast path
    (``GraphRunner``), with the DDPG default hyper-parameters."""

    def __init__(self, cfg: BenchConfig, denoiser, operator):
        self.cfg, self.denoiser, self.operator = cfg, denoiser, operator
        self.runner = None if cfg.plain else GraphRunner(denoiser, operator, "ddpg", cfg.sigma_y, steps=cfg.steps,
                                                         cuda_graph=cfg.cuda_graph)

    def restore(self, y: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        """x_T and noise from each image's seed streams (identical on both paths)."""
        if self.runner is not None:
            return self.runner.restore(y, seeds)
        with torch.no_grad():
            return Restorer(self.denoiser, self.operator, sigma_y=self.cfg.sigma_y, steps=self.cfg.steps).restore(
                y, seeds)

    def sample(self, y: torch.Tensor, callback=None) -> torch.Tensor:
        """A restoration with noise drawn each path's fast way (inside the graph when captured)."""
        if self.runner is not None:
            return self.runner.sample(y, seed=self.cfg.seed, callback=callback)
        g = torch.Generator(device=y.device).manual_seed(self.cfg.seed)
        with torch.no_grad():
            return ddpg_sample(self.denoiser, self.operator, y, self.cfg.sigma_y, steps=self.cfg.steps,
                               generator=g, callback=callback)

    def guidance_fn(self, y: torch.Tensor, eps: torch.Tensor, *, eager: bool = False):
        """One step's guidance and re-noising with a fixed ε: the runner's (graph-captured when it uses graphs)
        or, with ``eager`` or on the plain path, an eager step."""
        runner = self.runner
        if runner is None or eager:
            runner = GraphRunner(self.denoiser, self.operator, "ddpg", self.cfg.sigma_y, steps=self.cfg.steps,
                                 cuda_graph=False)
        return runner.guidance_only(y, eps)

    def warm_up(self, y: torch.Tensor, steps: int = WARMUP_STEPS) -> None:
        """A restoration stopped after ``steps`` steps (lazy init, graph capture, compilation, FFT plans)."""

        def stop(i, x_t, x0):
            if i + 1 >= steps:
                raise _WarmupDone

        try:
            self.sample(y, callback=stop)
        except _WarmupDone:
            pass


class _WarmupDone(Exception):
    """Raised by the warm-up restoration's callback to end it early."""


def _psnr01(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR (dB) of x against ref, both (B,3,H,W) on the [-1, 1] scale, each mapped to [0, 1] and clamped (ref
    may be an unclamped restoration)."""
    return psnr(((x + 1) / 2).clamp(0, 1).cpu(), ((ref + 1) / 2).clamp(0, 1).cpu())


RANDOM_WEIGHTS_NOTE = ("random weights: the PSNR of a restoration against the ground truth means nothing, so only "
                       "the agreement of the two restorations is reported")


def accuracy_check(cfg: BenchConfig, prior, path: RestorationPath, gt: torch.Tensor, y: torch.Tensor,
                   device: torch.device) -> dict:
    """Restore one image with the plain fp32 path and with the benchmarked path (its precision, backend and
    options) on the same x_T and noise (the image's seed streams): the PSNR and relative L2 between the two
    restorations and, with real weights only (``checkpoint``), the PSNR of each against the ground truth and their
    difference (docs/deployment.md §12). Not for the plain path itself: it is the reference."""
    plain = replace(cfg, plain=True, compile=False, cuda_graph=False, backend="torch", precision="fp32")
    reference = RestorationPath(plain, as_denoiser(prior, class_labels=_labels(prior)), path.operator)
    if _engine_per_batch(cfg):  # the check restores one image: the batch-1 export
        path = RestorationPath(cfg, build_denoiser(cfg, prior, device, 1), path.operator)
    seeds = [cfg.seed]
    ref = reference.restore(y, seeds)
    low = path.restore(y, seeds)
    rel = float((low.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))
    check = {"reference": "torch fp32 plain", "precision": cfg.precision, "label": cfg.label,
             "psnr_reference": None, "psnr_low": None, "psnr_difference_db": None,
             "psnr_low_vs_reference": _psnr01(low, ref), "rel_l2": rel, "steps": cfg.steps, "task": cfg.task,
             "sigma_y": cfg.sigma_y, "seed": cfg.seed, "note": RANDOM_WEIGHTS_NOTE if cfg.checkpoint is None else None}
    if cfg.checkpoint is not None:
        p_ref, p_low = _psnr01(ref, gt), _psnr01(low, gt)
        check.update(psnr_reference=p_ref, psnr_low=p_low, psnr_difference_db=p_low - p_ref)
    return check


def _call_latencies(cfg: BenchConfig, path: RestorationPath, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                    clock: Clock) -> tuple[list[float], list[float], torch.Tensor]:
    """Milliseconds of each timed UNet-only and guidance-only call, and the ε (B,3,H,W) the guidance used.
    Their graphs are freed on return, before the restorations' peak memory is measured."""
    denoiser = path.denoiser
    with torch.no_grad():
        graph_unet = cfg.cuda_graph and clock.cuda and denoiser.graph_safe
        unet = _capture_unet(denoiser, x, t, cfg.warmup) if graph_unet else (lambda: denoiser(x, t))
        unet_ms = clock.time_calls(unet, cfg.iters, cfg.warmup)
        eps = denoiser(x, t).float()
        guidance_ms = clock.time_calls(path.guidance_fn(y, eps), cfg.iters, cfg.warmup)
    return unet_ms, guidance_ms, eps


def _restorations(cfg: BenchConfig, path: RestorationPath, y: torch.Tensor,
                  clock: Clock) -> tuple[list[float], list[float]]:
    """``cfg.repeats`` whole restorations: milliseconds of every step, and of each restoration."""
    step_ms, restore_ms = [], []
    for _ in range(cfg.repeats):
        marks = [clock.mark()]
        path.sample(y, callback=lambda i, x_t, x0, marks=marks: marks.append(clock.mark()))
        clock.sync()
        step_ms += [clock.elapsed_ms(a, b) for a, b in zip(marks[:-1], marks[1:], strict=True)]
        restore_ms.append(clock.elapsed_ms(marks[0], marks[-1]))
    return step_ms, restore_ms


def _free_cached(clock: Clock) -> None:
    """Collect garbage and return cached, unused GPU blocks to the driver (CUDA only)."""
    gc.collect()
    if clock.cuda:
        torch.cuda.synchronize(clock.device)
        torch.cuda.empty_cache()


def _profile(path: RestorationPath, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, eps: torch.Tensor,
             device: torch.device) -> dict:
    """``profile.profile_parts`` of eager UNet and guidance calls (graph replays hide nothing but the launch
    overhead); an error is recorded instead of raised, so a profiler failure never loses the timings."""
    try:
        with torch.no_grad():
            parts = {"unet": lambda: path.denoiser(x, t), "guidance": path.guidance_fn(y, eps, eager=True)}
            return profile_parts(parts, device, calls=PROFILE_CALLS)
    except Exception as exc:  # a diagnostic only
        return {"error": f"{type(exc).__name__}: {exc}"}


def bench_batch(cfg: BenchConfig, B: int, path: RestorationPath, gt: torch.Tensor, clock: Clock,
                flops_module: nn.Module, labels: torch.Tensor | None, matmul: dict | None,
                baseline_bytes: int = 0) -> dict:
    """Every measurement at batch size ``B``. Peak memory (MiB, CUDA only): the most allocated by torch during
    the timed restorations, less ``baseline_bytes`` (what was allocated before this configuration was built)."""
    device, operator = clock.device, path.operator
    if path.runner is not None:
        path.runner.release()  # graphs of the previous batch size would count in this one's peak memory
    H, W = operator.img_size
    y = measurements(cfg, operator, gt, B)
    x = torch.randn(B, 3, H, W, device=device)
    t = torch.full((B,), 500.0, device=device)
    unet_ms, guidance_ms, eps = _call_latencies(cfg, path, x, t, y, clock)
    path.warm_up(y)
    _free_cached(clock)
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats(device)
    step_ms, restore_ms = _restorations(cfg, path, y, clock)
    peak = (torch.cuda.max_memory_allocated(device) - baseline_bytes) / 2**20 if clock.cuda else None
    reserved = torch.cuda.max_memory_reserved(device) / 2**20 if clock.cuda else None
    tiler = path.denoiser if isinstance(path.denoiser, TiledDenoiser) else None
    tiles = tiler.layout((H, W)).count if tiler else None
    flops = (count_flops(flops_module, B * tiles, (tiler.tile, tiler.tile), device=device, class_labels=labels)
             if tiler else count_flops(flops_module, B, (H, W), device=device, class_labels=labels))
    profile = _profile(path, x, t, y, eps, device) if cfg.profile else None
    restore_s = sum(restore_ms) / len(restore_ms) / 1e3
    step, guidance = summarize_ms(step_ms), summarize_ms(guidance_ms)
    achieved = flops * cfg.steps / restore_s / 1e12
    return {"batch": B, "unet_ms": summarize_ms(unet_ms), "step_ms": step, "guidance_ms": guidance,
            "guidance_share": min(1.0, guidance["p50"] / step["p50"]), "restore_s": restore_s,
            "restore_s_all": [m / 1e3 for m in restore_ms], "s_per_image": restore_s / B,
            "images_per_s": B / restore_s, "peak_mem_mib": peak, "peak_reserved_mib": reserved,
            "flops_per_nfe": flops, "restoration_tflop": flops * cfg.steps / 1e12, "achieved_tflops": achieved,
            "fraction_of_matmul": achieved / matmul["tflops"] if matmul and matmul["tflops"] > 0 else None,
            "s_per_megapixel": restore_s / (B * H * W / 1e6), "tiles_per_image": tiles,
            "tiles_per_s": B * tiles * cfg.steps / restore_s if tiles else None, "profile": profile}


def measurements(cfg: BenchConfig, operator, gt: torch.Tensor, batch: int) -> torch.Tensor:
    """y = A x + 2σ_y n for ``batch`` copies of the ground truth, n from seeds cfg.seed + i."""
    seeds = [cfg.seed + i for i in range(batch)]
    return Restorer(None, operator, sigma_y=cfg.sigma_y).degrade(gt.expand(batch, -1, -1, -1), seeds)


def run_bench(cfg: BenchConfig, *, measure_matmul: bool = True, log=None) -> dict:
    """Benchmark one configuration at every batch size of ``cfg.batches``; returns one series dict
    (``label``, ``config``, ``matmul``, ``results`` per batch, ``accuracy``, ``params``)."""
    cfg = replace(cfg, prior=parse_prior_spec(cfg.prior))
    cfg.validate()
    log = log or (lambda message: None)
    log(f"threads: {use_threads(cfg.threads)}")
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every configuration, the plain baseline included
    clock = Clock(device)
    _free_cached(clock)
    baseline = torch.cuda.memory_allocated(device) if clock.cuda else 0  # left by earlier runs in this process
    prior = build_prior(cfg.prior, cfg.checkpoint, device)
    size = cfg.size or native_image_size(prior) or 256
    name, params = ALIASES.get(cfg.task, (cfg.task, {}))
    impl = task_entry(name).bench_impl  # the implementation it times (SR: the FFT operator); None: the default
    operator = make_operator(name, size, **params, impl=impl).to(device)
    gt = ground_truth(operator.img_size, device)
    denoiser = tiled(cfg, build_denoiser(cfg, prior, device, cfg.batches[0]))
    path = RestorationPath(cfg, denoiser, operator)
    flops_module = denoiser.prior or prior
    matmul = matmul_rate(device) if measure_matmul else None
    results = []
    for B in cfg.batches:
        log(f"{cfg.label}: batch {B}")
        if _engine_per_batch(cfg) and B != cfg.batches[0]:  # this batch's own export (fixed profile)
            path = RestorationPath(cfg, tiled(cfg, build_denoiser(cfg, prior, device, B)), operator)
        results.append(bench_batch(cfg, B, path, gt, clock, flops_module, _labels(prior), matmul, baseline))
    accuracy = None
    if cfg.accuracy and not cfg.plain:  # the plain path is the check's reference
        log(f"{cfg.label}: accuracy check against the plain fp32 path")
        accuracy = accuracy_check(cfg, prior, path, gt, measurements(cfg, operator, gt, 1), device)
    config = asdict(cfg)
    config.update({"size": list(operator.img_size), "operator": {"name": operator.name, **operator.params},
                   "device": str(device), "weights": "random (seed 0)" if cfg.checkpoint is None else cfg.checkpoint,
                   "denoiser_options": denoiser.options()})
    fp32_bytes = sum(t.numel() * t.element_size() for t in (*prior.parameters(), *prior.buffers()))
    return {"label": cfg.label, "config": config, "matmul": matmul, "results": results, "accuracy": accuracy,
            "quality_gate": None if denoiser.info is None else denoiser.info.quality_gate,
            "params": sum(p.numel() for p in prior.parameters()),
            "fp32_prior_mib": None if cfg.plain else fp32_bytes / 2**20}


def tiled(cfg: BenchConfig, denoiser):
    """``denoiser`` run over ``--tile`` tiles in calls of ``--tile-batch`` tiles
    (:func:`~ddpg.runtime.tiling.tile_call_batch`), or itself without ``--tile``."""
    if cfg.tile is None:
        return denoiser
    profile = denoiser.info.batch if denoiser.info is not None else None
    return TiledDenoiser(denoiser, cfg.tile, cfg.overlap, tile_call_batch(profile, cfg.tile_batch))


def make_report(series: list[dict], *, title: str, command: str | None = None) -> dict:
    """The report dict that ``report.write_all`` writes: environment, note (CPU runs), series (each with its
    prior's ``targets`` checked, ``report.check_targets``)."""
    device = torch.device(series[0]["config"]["device"]) if series else torch.device("cpu")
    return {"schema": SCHEMA, "title": title, "created_utc": now_utc(), "command": command,
            "note": CPU_NOTE if device.type == "cpu" else None, "environment": environment(device),
            "series": [{**s, "targets": check_targets(s)} for s in series]}


__all__ = ["bench_export", "build_denoiser", "build_prior", "export_key", "make_report", "parse_prior_spec",
           "run_bench"]
