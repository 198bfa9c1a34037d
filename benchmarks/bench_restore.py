"""Side-by-side restoration benchmark: several configurations of ``ddpg bench`` in one process, one combined
report (JSON + Markdown + PNG). Every committed number under benchmarks/results/ was made by this script; the
README next to it lists the exact command lines.

    python benchmarks/bench_restore.py --prior celeba_hq --configs plain,fp16-graph,fp16-compile-graph \
        --batches 1,8,32 --steps 100 --out benchmarks/results/bench_h100_celeba_hq

Each (configuration, batch size) runs separately and is written to ``<out>.raw/<config>__b<batch>.json`` as soon
as it finishes; with ``--resume`` finished ones are loaded instead of re-run (a GPU session cut by a time limit
continues). A run that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import traceback
from dataclasses import replace
from pathlib import Path

from ddpg.bench import BenchConfig, make_report, run_bench, write_all
from ddpg.bench.report import write_json

# name → how it differs from the default BenchConfig (torch backend, fp32, channels-last, eager)
CONFIGS: dict[str, dict] = {
    "plain": {"plain": True, "channels_last": False},
    "fp32": {},
    "fp32-graph": {"cuda_graph": True},
    "fp16": {"precision": "fp16"},
    "fp16-graph": {"precision": "fp16", "cuda_graph": True},
    "fp16-compile-graph": {"precision": "fp16", "compile": True, "cuda_graph": True},
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
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--task", default="sr4")
    ap.add_argument("--sigma-y", type=float, default=0.05)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--resume", action="store_true", help="reuse finished configurations from <out>.raw/")
    ap.add_argument("--out", required=True, help="output stem: writes <out>.json, .md, .png")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        print(f"error: unknown --configs {unknown}; choose from {', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    batches = [int(b) for b in args.batches.split(",")]
    base = BenchConfig(prior=args.prior, checkpoint=args.checkpoint, batches=batches, steps=args.steps,
                       size=args.size, task=args.task, sigma_y=args.sigma_y, device=args.device, iters=args.iters,
                       warmup=args.warmup, repeats=args.repeats, accuracy=not args.no_accuracy)
    out = Path(args.out)
    raw_dir = out.parent / f"{out.name}.raw"
    series, failures = [], []
    for name in names:
        cfg = replace(base, **CONFIGS[name])
        sizes = ([b for b in batches if b <= args.max_plain_batch] or batches[:1]) if cfg.plain else batches
        parts = []
        for B in sizes:  # one run per batch size, saved at once: a session cut by a time limit can resume
            raw = raw_dir / f"{name}__b{B}.json"
            if args.resume and raw.is_file():
                parts.append(json.loads(raw.read_text()))
                continue
            print(f"== {name} batch {B}: {cfg.label}", file=sys.stderr)
            try:
                part = run_bench(replace(cfg, batches=[B], accuracy=cfg.accuracy and B == sizes[0]),
                                 log=lambda message: print(message, file=sys.stderr))
            except Exception as exc:  # record and go on with the other runs
                traceback.print_exc()
                failures.append({"config": name, "batch": B, "error": f"{type(exc).__name__}: {exc}"})
                continue
            write_json(part, raw)
            parts.append(part)
        if parts:
            series.append(merge_parts(name, parts))
    if not series:
        print(f"error: every configuration failed: {failures}", file=sys.stderr)
        return 1
    command = "python benchmarks/bench_restore.py " + " ".join(shlex.quote(a) for a in argv)
    prior_name = args.prior if not args.prior.strip().startswith("{") else "inline prior"
    report = make_report(series, title=f"{prior_name}, {args.task}, {args.steps} steps", command=command)
    report["failures"] = failures
    for path in write_all(report, out.with_suffix(".json")):
        print(f"wrote {path}", file=sys.stderr)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
