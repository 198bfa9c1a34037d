"""The CPU engines side by side in one run (``ddpg bench --device cpu --compare-cpu-engines``): torch fp32 (the
default ``ddpg restore --device cpu`` path), torch bf16 (the ``--precision bf16`` torso), ONNX Runtime fp32 and
OpenVINO fp32 / bf16 / int8, on the same prior, measurements and seeds.

Rounds are interleaved: each round times every engine at every batch size, the engine order rotated from round to
round, so a busy shared machine weighs on each alike; the load average is recorded each round. A timing is one
DDPG restoration of ``steps`` steps (UNet + guidance + noise, the restore command's GraphRunner) divided by its
steps: ms per step of the batch; then images/s and seconds per restored image at ``full_steps`` (100) steps. The
minimum over rounds is the figure (the least disturbed run), the median beside it. OpenVINO engines carry the
quality gate their export recorded (``ddpg export --gate``), which the table prints.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ddpg.models import as_denoiser, load_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.backends import make_denoiser
from ddpg.runtime.fast_denoiser import FastDenoiser
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.threads import use_threads

from .harness import ground_truth

FULL_STEPS = 100
BASELINE = "torch fp32"


def cpu_engines(module: torch.nn.Module, onnx: str | Path, irs: dict[str, str | Path], threads: int,
                cache_dir: Path | None = None) -> dict[str, object]:
    """label → denoiser for every engine compared. ``module``: the float32 prior; ``onnx``: its float32 ``ddpg
    export`` (dynamic batch), run by ONNX Runtime and converted to the OpenVINO fp32/bf16 IRs in the IR cache unless
    ``irs`` (precision → IR from ``ddpg export --format openvino``, e.g. gated ones) gives them; int8 only from
    ``irs``."""
    from ddpg.export.openvino_cache import openvino_ir

    engines = {BASELINE: as_denoiser(module), "torch bf16": FastDenoiser(module, precision="bf16"),
               "onnxruntime fp32": make_denoiser("onnxruntime", engine=onnx)}
    for precision in ("fp32", "bf16", "int8"):
        ir = irs.get(precision) or (openvino_ir(onnx, precision=precision, cache_dir=cache_dir)
                                    if precision != "int8" else None)
        if ir is not None:
            engines[f"openvino {precision}"] = make_denoiser("openvino", engine=ir, threads=threads)
    return engines


def time_step(denoiser, operator, y: torch.Tensor, steps: int) -> float:
    """Seconds per step of one ``steps``-step DDPG restoration of the batch ``y`` (the restore command's runner)."""
    runner = GraphRunner(denoiser, operator, "ddpg", 0.05, steps=steps, cuda_graph=False)
    seeds = list(range(y.shape[0]))
    start = time.perf_counter()
    with torch.no_grad():
        runner.restore(y, seeds)
    return (time.perf_counter() - start) / steps


def compare_cpu_engines(prior: str | torch.nn.Module, onnx: str | Path, *, irs: dict[str, str | Path] | None = None,
                        batches: Sequence[int] = (1, 2, 4, 8), steps: int = 10, rounds: int = 3, threads: int | str = 1,
                        task: str = "sr4", cache_dir: Path | None = None,
                        log: Callable[[str], None] | None = None) -> dict:
    """Interleaved rounds over every engine and batch size (module docstring); a JSON-able result. ``prior``: a
    name (loaded with its weights) or the float32 module."""
    log = log or (lambda message: None)
    n_threads = use_threads(threads)
    module = prior if isinstance(prior, torch.nn.Module) else load_prior(prior)
    engines = cpu_engines(module, onnx, irs or {}, n_threads, cache_dir)
    operator = make_operator(task, int(module.config["image_size"]), impl="fft")
    gt = ground_truth(operator.img_size, torch.device("cpu"))
    ys = {b: Restorer(None, operator, sigma_y=0.05).degrade(gt.expand(b, -1, -1, -1), list(range(b))) for b in batches}
    labels = list(engines)
    for label in labels:  # warm-up: first-call allocation, OpenVINO's shape-specific kernels
        for b in batches:
            time_step(engines[label], operator, ys[b], 2)
    samples: dict[str, dict[int, list[float]]] = {label: {b: [] for b in batches} for label in labels}
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            for b in batches:
                samples[label][b].append(time_step(engines[label], operator, ys[b], steps))
        log(f"round {r + 1}/{rounds} done (load {loads[-1]:.2f})")
    gates = {label: d.info.quality_gate for label, d in engines.items() if d.info is not None}
    return {"prior": module.config.get("name") or module.config["kind"], "task": task, "steps_timed": steps,
            "full_steps": FULL_STEPS, "rounds": rounds,
            "threads": n_threads, "batches": list(batches), "load_per_round": loads, "cpus": os.cpu_count(),
            "engines": {label: summarize(samples[label]) for label in labels}, "quality_gates": gates}


def summarize(per_batch: dict[int, list[float]]) -> dict:
    """Per batch: ms/step (min and median over rounds), images/s and s per image at FULL_STEPS; the best batch."""
    rows = {}
    for b, seconds in per_batch.items():
        best = min(seconds)
        rows[b] = {"ms_per_step": best * 1e3, "ms_per_step_median": statistics.median(seconds) * 1e3,
                   "images_per_s": b / (best * FULL_STEPS), "s_per_image": best * FULL_STEPS / b}
    best_batch = max(rows, key=lambda b: rows[b]["images_per_s"])
    return {"per_batch": rows, "best_batch": best_batch}


def markdown_table(result: dict) -> str:
    """The side-by-side table: batch 1 and each engine's best batch, speed-up against torch fp32 alike."""
    base = result["engines"][BASELINE]
    base1, base_best = base["per_batch"][1], base["per_batch"][base["best_batch"]]
    lines = [f"| engine | batch 1 ms/step | batch 1 images/s | s/image at {result['full_steps']} steps (batch 1) | "
             f"× torch fp32 (batch 1) | best batch | ms/step | images/s | s/image | × torch fp32 (its best) | "
             "quality gate |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, engine in result["engines"].items():
        one, best = engine["per_batch"][1], engine["per_batch"][engine["best_batch"]]
        gate = result["quality_gates"].get(label)
        verdict = "–" if gate is None else (
            ("pass" if gate["passed"] else "FAIL") + ", mean drop " +
            " / ".join(f"{t} {row['drop']:+.3f} dB" for t, row in gate["per_task"].items()) +
            f" ({gate['faces']} faces, {gate['steps']} steps)")
        lines.append(f"| {label} | {one['ms_per_step']:.1f} | {one['images_per_s']:.3f} | {one['s_per_image']:.2f} | "
                     f"{base1['s_per_image'] / one['s_per_image']:.2f} | {engine['best_batch']} | "
                     f"{best['ms_per_step']:.1f} | {best['images_per_s']:.3f} | {best['s_per_image']:.2f} | "
                     f"{base_best['s_per_image'] / best['s_per_image']:.2f} | {verdict} |")
    return "\n".join(lines)
