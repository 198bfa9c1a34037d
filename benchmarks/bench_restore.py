"""Side-by-side restoration benchmark: several configurations of ``ddpg bench`` in one process, one combined
report (JSON + Markdown + PNG). Every committed number under benchmarks/results/ was made by this script; the
README next to it lists the exact command lines.

    python benchmarks/bench_restore.py --prior celeba_hq --configs plain,fp16-graph,fp16-compile-graph \
        --batches 1,8,32 --steps 100 --out benchmarks/results/bench_h100_celeba_hq

Each (configuration, batch size) runs separately and is written to ``<out>.raw/<config>__b<batch>.json`` as soon
as it finishes (a failure to ``<config>__b<batch>.failed.json``). With ``--resume`` finished runs whose settings
match are loaded instead of re-run, and failed ones are not retried (``--retry-failed`` retries them), so a GPU
session cut by a time limit continues where it stopped. SIGTERM or Ctrl-C ends the run in progress and still
writes the report of the finished runs (exit status 130).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import traceback
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ddpg.bench import BenchConfig, make_report, parse_prior_spec, run_bench, write_all
from ddpg.bench.report import write_json

# name → how it differs from the default BenchConfig (torch backend, fp32, eager, the mode's default layout:
# NCHW eager, channels-last under torch.compile); "-cl" / "-nchw" force the other layout, to compare the two
CONFIGS: dict[str, dict] = {
    "plain": {"plain": True, "channels_last": False},
    "fp32": {},
    "fp32-graph": {"cuda_graph": True},
    "fp16": {"precision": "fp16"},
    "fp16-graph": {"precision": "fp16", "cuda_graph": True},
    "fp16-graph-cl": {"precision": "fp16", "cuda_graph": True, "channels_last": True},
    "fp16-compile-graph": {"precision": "fp16", "compile": True, "cuda_graph": True},
    "fp16-compile-graph-nchw": {"precision": "fp16", "compile": True, "cuda_graph": True, "channels_last": False},
    "bf16-compile-graph": {"precision": "bf16", "compile": True, "cuda_graph": True},
    "ort-fp16": {"backend": "onnxruntime", "precision": "fp16"},
    "ort-fp32": {"backend": "onnxruntime", "precision": "fp32"},
}


def merge_parts(name: str, parts: list[dict]) -> dict:
    """One series from the per-batch runs of a configuration (accuracy from the run that made it)."""
    merged = dict(parts[0])
    merged["config_name"] = name
    merged["results"] = [r for part in parts for r in part["results"]]
    merged["config"] = {**parts[0]["config"], "batches": [r["batch"] for r in merged["results"]]}
    merged["accuracy"] = next((part["accuracy"] for part in parts if part.get("accuracy")), None)
    return merged


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prior", required=True, help="prior name, YAML path or inline mapping")
    ap.add_argument("--checkpoint", default=None, help="weights file or 'auto' (default: random weights)")
    ap.add_argument("--configs", default="plain,fp16-graph", help=f"comma-separated, from: {', '.join(CONFIGS)}")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--max-plain-batch", type=int, default=8, help="largest batch for the slow plain baseline")
    ap.add_argument("--compile-batches", default=None,
                    help="batch sizes of the torch.compile configurations (default: --batches); each size "
                         "compiles anew, and their accuracy check runs only when batch 1 is among them")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--task", default="sr4")
    ap.add_argument("--sigma-y", type=float, default=0.05)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--no-profile", action="store_true", help="skip the torch.profiler summaries")
    ap.add_argument("--resume", action="store_true", help="reuse finished runs from <out>.raw/")
    ap.add_argument("--retry-failed", action="store_true", help="with --resume, run failed runs again")
    ap.add_argument("--out", required=True, help="output stem: writes <out>.json, .md, .png")
    return ap.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def batch_sizes(cfg: BenchConfig, args: argparse.Namespace) -> list[int]:
    """The batch sizes a configuration runs at: the plain baseline up to --max-plain-batch, compiled ones at
    --compile-batches."""
    if cfg.plain:
        return [b for b in cfg.batches if b <= args.max_plain_batch] or cfg.batches[:1]
    if cfg.compile and args.compile_batches:
        return _ints(args.compile_batches)
    return cfg.batches


# settings that a saved run must share with the requested one to be reused by --resume
SAME = ("prior", "checkpoint", "steps", "iters", "warmup", "repeats", "task", "sigma_y", "seed")


def config_record(cfg: BenchConfig) -> dict:
    """``cfg`` as a saved run's ``config`` holds it (the prior spec parsed, as ``run_bench`` records it)."""
    return {**asdict(cfg), "prior": parse_prior_spec(cfg.prior)}


def stale_settings(saved: dict, cfg: BenchConfig) -> list[str]:
    """Names of the settings in which a saved run's ``config`` differs from ``cfg`` (empty: reusable)."""
    wanted = config_record(cfg)
    diffs = [k for k in SAME if saved.get(k) != wanted[k]]
    if cfg.size is not None and saved.get("size") not in ([cfg.size, cfg.size], cfg.size):
        diffs.append("size")
    if cfg.device != "auto" and torch.device(saved.get("device", "cpu")).type != torch.device(cfg.device).type:
        diffs.append("device")
    return diffs


def _load(path: Path, cfg: BenchConfig) -> dict | None:
    """A saved run or failure record if ``path`` exists and matches ``cfg``; None otherwise."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    diffs = stale_settings(saved["config"], cfg)
    if diffs:
        print(f"-- {path.name}: made with other settings ({', '.join(diffs)}): running again", file=sys.stderr)
        return None
    return saved


STOP: list[int] = []  # the signal that asked to stop, once one has


def _interrupt(signum, frame):
    STOP.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(name: str, cfg: BenchConfig, raw_dir: Path, args: argparse.Namespace) -> tuple[dict | None, dict | None]:
    """(series part, failure) of one (configuration, batch size) run: loaded with --resume, else run and saved."""
    B = cfg.batches[0]
    raw, failed = raw_dir / f"{name}__b{B}.json", raw_dir / f"{name}__b{B}.failed.json"
    if args.resume:
        if (part := _load(raw, cfg)) is not None:
            return part, None
        if not args.retry_failed and (failure := _load(failed, cfg)) is not None:
            print(f"-- {name} batch {B} failed before ({failure['error']}); --retry-failed runs it", file=sys.stderr)
            return None, {"config": name, "batch": B, "error": failure["error"]}
    print(f"== {name} batch {B}: {cfg.label}", file=sys.stderr)
    try:
        part = run_bench(cfg, log=lambda message: print(message, file=sys.stderr))
    except Exception as exc:  # record and go on with the other runs
        if STOP:  # a stop signal that surfaced as another error: not a failure of this configuration
            raise KeyboardInterrupt from exc
        traceback.print_exc()
        failure = {"config": name, "batch": B, "error": f"{type(exc).__name__}: {exc}"}
        write_json({**failure, "config": config_record(cfg)}, failed)
        return None, failure
    failed.unlink(missing_ok=True)
    write_json(part, raw)
    return part, None


def run_all(names: list[str], base: BenchConfig, raw_dir: Path, args: argparse.Namespace
            ) -> tuple[list[dict], list[dict], bool]:
    """(series, failures, interrupted) of every configuration; an interrupt keeps the finished runs."""
    series, failures = [], []
    try:
        for name in names:
            cfg = replace(base, **CONFIGS[name])
            sizes, parts = batch_sizes(cfg, args), []
            try:
                for B in sizes:  # one run per batch size, saved at once
                    if STOP:  # the interrupt surfaced as another error inside a run (e.g. a dead compile worker)
                        raise KeyboardInterrupt
                    accuracy = cfg.accuracy and B == sizes[0] and (B == 1 or not cfg.compile)
                    part, failure = run_one(name, replace(cfg, batches=[B], accuracy=accuracy), raw_dir, args)
                    parts += [part] if part else []
                    failures += [failure] if failure else []
            finally:
                if parts:
                    series.append(merge_parts(name, parts))
    except KeyboardInterrupt:
        print("-- interrupted: writing the report of the finished runs", file=sys.stderr)
        return series, failures, True
    return series, failures, False


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown --configs {unknown}; choose from {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    base = BenchConfig(prior=args.prior, checkpoint=args.checkpoint, batches=_ints(args.batches), steps=args.steps,
                       size=args.size, task=args.task, sigma_y=args.sigma_y, device=args.device, iters=args.iters,
                       warmup=args.warmup, repeats=args.repeats, accuracy=not args.no_accuracy,
                       profile=not args.no_profile)
    out = Path(args.out)
    STOP.clear()
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a time limit's SIGTERM still writes the report
    try:
        series, failures, interrupted = run_all(names, base, out.parent / f"{out.name}.raw", args)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not series:
        print(f"error: no configuration finished: {failures}", file=sys.stderr)
        return 130 if interrupted else 1
    command = "python benchmarks/bench_restore.py " + " ".join(shlex.quote(a) for a in argv)
    prior_name = args.prior if not args.prior.strip().startswith("{") else "inline prior"
    report = make_report(series, title=f"{prior_name}, {args.task}, {args.steps} steps", command=command)
    report["failures"] = failures
    report["interrupted"] = interrupted
    for path in write_all(report, out.with_suffix(".json")):
        print(f"wrote {path}", file=sys.stderr)
    return 130 if interrupted else (1 if failures else 0)


if __name__ == "__main__":
    sys.exit(main())
