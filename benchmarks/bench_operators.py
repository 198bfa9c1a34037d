"""Micro-benchmark: one guidance step (A, Aᵀ(AAᵀ+ηI)⁻¹, Aᵀ) per operator against one UNet call.

    python benchmarks/bench_operators.py [--size 256] [--batch 8] [--device cpu|cuda|all] [--json PATH]

Prints a Markdown table per device: build time of the operator, the median time of A, pinv_eta and At and
of the whole guidance step (A(x) − y, pinv_eta(r), At(r)), and the step's share of a sampling step
(guidance / (guidance + UNet)) for the CelebA-HQ DDPM prior with random weights (``--prior``; ``--no-unet``
skips it). Times in milliseconds, float32, after warm-up; CUDA timings synchronise around each call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ddpg.operators import make_operator

OPERATORS = [  # (label, task, params) — the paper tasks at their default settings
    ("sr_bicubic ×4 svd", "sr_bicubic", {"impl": "svd"}),
    ("sr_bicubic ×4 fft", "sr_bicubic", {"impl": "fft"}),
    ("sr_avgpool ×4 svd", "sr_avgpool", {}),
    ("deblur_gauss fft", "deblur_gauss", {}),
    ("deblur_gauss svd", "deblur_gauss", {"impl": "svd"}),
    ("deblur_motion 61² fft", "deblur_motion", {}),
    ("inpainting (box)", "inpainting", {}),
    ("denoising", "denoising", {}),
    ("colorization", "colorization", {}),
]
ETA = 1e-2


def timed(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn() in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def bench_operators(size: int, batch: int, device: torch.device, repeats: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    for label, task, params in OPERATORS:
        start = time.perf_counter()
        op = make_operator(task, size, **params).to(device)
        build_ms = (time.perf_counter() - start) * 1e3
        y = op.A(x).clone()  # also fills the per-device caches
        r = op.A(x) - y

        def step(op=op, y=y):
            res = op.A(x) - y
            return op.pinv_eta(res, ETA), op.At(res)

        with torch.inference_mode():
            rows.append({
                "operator": label, "task": task, "params": params, "build_ms": build_ms,
                "A_ms": timed(lambda op=op: op.A(x), device, repeats),
                "pinv_eta_ms": timed(lambda op=op, r=r: op.pinv_eta(r, ETA), device, repeats),
                "At_ms": timed(lambda op=op, r=r: op.At(r), device, repeats),
                "step_ms": timed(step, device, repeats),
            })
    return rows


def bench_unet(prior_name: str, size: int, batch: int, device: torch.device, repeats: int) -> dict:
    """One forward call of the prior (random weights); {"error": ...} when the prior cannot be built."""
    try:
        from ddpg.models import create_prior

        prior = create_prior(prior_name).to(device)
    except Exception as exc:  # the models package may be absent or incomplete: report, don't fail
        return {"prior": prior_name, "error": f"{type(exc).__name__}: {exc}"}
    x = torch.randn(batch, 3, size, size, device=device)
    t = torch.full((batch,), 990.0, device=device)
    with torch.inference_mode():
        ms = timed(lambda: prior(x, t), device, repeats, warmup=1)
    return {"prior": prior_name, "unet_ms": ms}


def markdown(device: torch.device, rows: list[dict], unet: dict | None, size: int, batch: int) -> str:
    lines = [f"### {device.type}: {size}×{size}, batch {batch}, float32, η = {ETA}", ""]
    if unet is None:
        lines.append("UNet: skipped (--no-unet)")
    elif "error" in unet:
        lines.append(f"UNet ({unet['prior']}): unavailable — {unet['error']}")
    else:
        lines.append(f"UNet ({unet['prior']}, random weights): {unet['unet_ms']:.1f} ms per call")
    unet_ms = unet.get("unet_ms") if unet else None
    lines += ["", "| operator | build ms | A ms | pinv_eta ms | At ms | guidance step ms | share of a step |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        share = f"{100 * row['step_ms'] / (row['step_ms'] + unet_ms):.2f} %" if unet_ms else "–"
        lines.append(f"| {row['operator']} | {row['build_ms']:.1f} | {row['A_ms']:.2f} | {row['pinv_eta_ms']:.2f} "
                     f"| {row['At_ms']:.2f} | {row['step_ms']:.2f} | {share} |")
    return "\n".join(lines)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="'all' = the CPU, and CUDA when present")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per operator product")
    parser.add_argument("--unet-repeats", type=int, default=3)
    parser.add_argument("--prior", default="celeba_hq")
    parser.add_argument("--no-unet", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    if args.size < 1 or args.batch < 1 or args.repeats < 1 or args.unet_repeats < 1:
        parser.error("--size, --batch, --repeats and --unet-repeats must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device available")

    devices = [torch.device("cpu")] if args.device in ("cpu", "all") else []
    if args.device == "cuda" or (args.device == "all" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])
    print(f"`{command}`\n")
    print(f"torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else "") + "\n")
    results = {"command": command, "torch": torch.__version__, "size": args.size, "batch": args.batch,
               "eta": ETA, "devices": {}}
    for device in devices:
        rows = bench_operators(args.size, args.batch, device, args.repeats)
        unet = None if args.no_unet else bench_unet(args.prior, args.size, args.batch, device, args.unet_repeats)
        print(markdown(device, rows, unet, args.size, args.batch) + "\n")
        results["devices"][device.type] = {"operators": rows, "unet": unet}
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
