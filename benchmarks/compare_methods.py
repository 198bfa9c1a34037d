"""All restoration methods on the Gaussian-prior benchmark: PSNR against the exact posterior mean, NFE and CPU
time, one Markdown table (plus the raw numbers as JSON next to it).

    python benchmarks/compare_methods.py --size 32 --images 4 --out benchmarks/results/methods_gaussian_cpu

Images are drawn from ``create_prior("gaussian")`` (seed 0); image i is degraded and restored with seed i
through :class:`ddpg.runtime.Restorer`, so every method sees the same measurements. Each method runs with its
paper settings for the task (its ``gaussian`` preset: the CelebA-HQ rows for DDPG/IDPG/DDNM/DDRM, the FFHQ rows
for DiffPIR/DPS/DPPS; defaults where a method has no row), on the benchmark's operator. DiffPIR, DPS and DPPS
run with ``clip=False`` (their x̂₀ clip to [−1, 1] assumes natural images, and 14 % of this prior's pixels lie
outside that range) and, as ``+clip`` rows, as published. A second table measures DDPG's candidate selection
(``select_candidates``) on more images.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ddpg.models import as_denoiser, create_prior
from ddpg.operators import FFTBlur, FFTSuperRes, baseline, make_operator
from ddpg.runtime import Restorer, find_preset, get_sampler, load_preset

TASKS = {  # column → (preset task, make_operator task, params, sigma_y)
    "deblur_gauss σ0.05": ("deblur_gauss", "deblur_gauss", {"impl": "fft"}, 0.05),
    "sr4 σ0.05": ("sr4", "sr_bicubic", {"scale": 4, "impl": "svd"}, 0.05),
    "deblur_gauss σ0": ("deblur_gauss", "deblur_gauss", {"impl": "fft"}, 0.0),
    "sr4 σ0": ("sr4", "sr_bicubic", {"scale": 4, "impl": "svd"}, 0.0),
    "inpaint 50% σ0": ("inpaint", "inpainting", {"ratio": 0.5, "seed": 0}, 0.0),
}
METHODS = ["ddpg", "ddpg+select", "idpg", "ddnm", "ddrm", "diffpir", "diffpir+clip", "dps", "dps+clip", "dpps",
           "dpps+clip"]  # "+select": DDPG's candidate selection; "+clip": the reference's x̂₀ clip kept
NO_CLIP = {"diffpir", "dps", "dpps"}


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """PSNR in dB on the [0, 1] scale, unclamped (Gaussian samples leave the range)."""
    mse = float((((x.double() - ref.double()) / 2) ** 2).mean())
    return 10 * math.log10(1.0 / mse)


def posterior_mean(prior, operator, y: torch.Tensor, sigma_y: float) -> torch.Tensor:
    """E[x | y] = μ + P Aᵀ(A P Aᵀ + σ²I)⁻¹(y − Aμ), σ = 2σ_y: in closed form per frequency for a circular blur,
    otherwise with A P Aᵀ built densely over the measured entries (small images only)."""
    H, W = operator.img_size
    P = prior.spectrum(H, W).double()
    sigma2 = (2 * sigma_y) ** 2
    mu = prior.mean.double().view(1, 3, 1, 1).expand(y.shape[0], 3, H, W).contiguous()
    resid = y.double() - operator.A(mu)
    if isinstance(operator, FFTBlur):
        K = operator.spectrum(dtype=torch.float64, full=True)
        return mu + torch.fft.ifft2(torch.fft.fft2(resid) * P * K.conj() / (K.abs() ** 2 * P + sigma2)).real

    def cov(v):
        return torch.fft.ifft2(torch.fft.fft2(v) * P).real

    meas = operator.meas_shape(1)[1:]
    M = math.prod(meas)
    basis = torch.eye(M, dtype=torch.float64).view(M, *meas)
    C = operator.A(cov(operator.At(basis))).reshape(M, M) + sigma2 * torch.eye(M, dtype=torch.float64)
    keep = C.diagonal() > 1e-12 * C.diagonal().max()
    q = torch.zeros(y.shape[0], M, dtype=torch.float64)
    q[:, keep] = torch.linalg.solve(C[keep][:, keep], resid.reshape(y.shape[0], M)[:, keep].T).T
    return mu + cov(operator.At(q.view(y.shape[0], *meas)))


def settings(method: str, task: str, sigma_y: float) -> tuple[str | None, int, dict]:
    """(preset name or None, steps, hyper) — the method's ``gaussian`` preset at this σ_y when it exists."""
    base = method.split("+")[0]
    name = find_preset(base, "gaussian", task, sigma_y)
    if name is not None and load_preset(name).sigma_y != sigma_y and base in ("ddpg", "idpg"):
        name = None  # DDPG/IDPG rows are tuned per σ_y: use the defaults rather than another σ_y's row
    preset = load_preset(name) if name else None
    steps = preset.steps if preset else get_sampler(base).default_steps
    hyper = dict(preset.hyper) if preset else {}
    if base in NO_CLIP:
        hyper["clip"] = method.endswith("+clip")
    if method == "ddpg+select":
        hyper["select_candidates"] = True
    return name, steps, hyper


def nfe(method: str, steps: int) -> str:
    return f"{steps}+{steps}∇" if method.split("+")[0] in ("dps", "dpps") else str(steps)


def run_task(prior, den, x: torch.Tensor, column: str, methods: list[str]) -> dict:
    task, op_task, params, sigma_y = TASKS[column]
    op = make_operator(op_task, x.shape[-1], **params)
    seeds = list(range(x.shape[0]))
    y = Restorer(den, op, method="ddpg", sigma_y=sigma_y).degrade(x, seeds)
    out = {"posterior mean": {"psnr": psnr(posterior_mean(prior, op, y, sigma_y), x)},
           "baseline": {"psnr": psnr(baseline(op, y, eta=1e-2 if sigma_y > 0 else 1e-4), x),
                        "what": "bicubic" if isinstance(op, FFTSuperRes) or "sr" in op.name else "Tikhonov/A⁺"}}
    for method in methods:
        name, steps, hyper = settings(method, task, sigma_y)
        r = Restorer(den, op, method=method.split("+")[0], sigma_y=sigma_y, steps=steps, hyper=hyper)
        t0 = time.perf_counter()
        restored = r.restore(y, seeds)
        seconds = (time.perf_counter() - t0) / len(seeds)
        out[method] = {"psnr": psnr(restored, x), "nfe": nfe(method, steps), "s_per_image": seconds,
                       "preset": name, "hyper": hyper}
        print(f"{column:20s} {method:12s} {out[method]['psnr']:7.2f} dB  {seconds:6.2f} s/img", flush=True)
    return out


def selection_ablation(prior, den, size: int, images: int) -> dict:
    """DDPG with and without candidate selection on ``images`` images (seeds 100…)."""
    x = prior.sample(images, size, generator=torch.Generator().manual_seed(1))
    rows = {}
    for column in ("deblur_gauss σ0.05", "sr4 σ0.05", "deblur_gauss σ0", "sr4 σ0"):
        task, op_task, params, sigma_y = TASKS[column]
        op = make_operator(op_task, size, **params)
        seeds = list(range(100, 100 + images))
        y = Restorer(den, op, method="ddpg", sigma_y=sigma_y).degrade(x, seeds)
        res = {}
        for method in ("ddpg", "ddpg+select"):
            _, steps, hyper = settings(method, task, sigma_y)
            out = Restorer(den, op, method="ddpg", sigma_y=sigma_y, steps=steps, hyper=hyper).restore(y, seeds)
            res[method] = [psnr(out[i:i + 1], x[i:i + 1]) for i in range(images)]
        diff = torch.tensor(res["ddpg+select"]) - torch.tensor(res["ddpg"])
        rows[column] = {"ddpg": sum(res["ddpg"]) / images, "ddpg+select": sum(res["ddpg+select"]) / images,
                        "mean_gain": float(diff.mean()), "stderr": float(diff.std() / math.sqrt(images)),
                        "wins": int((diff > 0).sum()), "images": images}
        print(f"selection {column:20s} {rows[column]}", flush=True)
    return rows


def markdown(results: dict, ablation: dict, meta: dict) -> str:
    cols = list(results)
    lines = [f"# All methods on the Gaussian-prior benchmark ({meta['size']}×{meta['size']}, {meta['images']} images)",
             "", f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} thread(s); CPU shared with other "
             "jobs while it ran, so times are indicative only.", "",
             "PSNR (dB, [0,1] scale, unclamped) against the clean images; NFE = UNet evaluations per image "
             "(`+N∇` = N backward passes); time = s per image for the whole restoration, CPU. "
             "A perfect posterior sampler scores ≈ 3 dB below the posterior mean.", "",
             "| method | " + " | ".join(cols) + " | NFE | s/image (mean) |",
             "|---|" + "---|" * (len(cols) + 2)]
    for row in ("posterior mean", "baseline"):
        label = row if row == "posterior mean" else "baseline (bicubic for SR, Tikhonov η=1e-2 / 1e-4, A⁺y inpainting)"
        lines.append(f"| {label} | " + " | ".join(f"{results[c][row]['psnr']:.2f}" for c in cols) + " | – | – |")
    for m in METHODS:
        if m not in results[cols[0]]:
            continue
        nfes = sorted({results[c][m]["nfe"] for c in cols})
        secs = sum(results[c][m]["s_per_image"] for c in cols) / len(cols)
        lines.append(f"| {m} | " + " | ".join(f"{results[c][m]['psnr']:.2f}" for c in cols)
                     + f" | {' / '.join(nfes)} | {secs:.2f} |")
    lines += ["", "Settings: each method's `gaussian` preset for the task when one exists (DDPG/IDPG: CelebA-HQ rows "
              "at that σ_y, defaults for inpainting; DDNM/DDRM: CelebA-HQ rows; DiffPIR/DPS/DPPS: FFHQ rows — "
              "DiffPIR inpainting runs 20 steps; DPS/DPPS have no noiseless rows and use their noisy rows' ζ), "
              "else the method's defaults; DiffPIR/DPS/DPPS with `clip=False` (`+clip`: with the reference's clip "
              "of x̂₀ to [−1, 1], which this prior's out-of-range pixels penalise). "
              "Operators: circular FFT 5-tap σ=10 Gaussian blur, SVD bicubic ×4 (reflective borders), random 50 % "
              "inpainting.", "",
              f"## DDPG candidate selection (`select_candidates=True`), {ablation[next(iter(ablation))]['images']} "
              "other images", "",
              "| task | DDPG | DDPG + selection | mean gain (± s.e.) | images improved |", "|---|---|---|---|---|"]
    for c, r in ablation.items():
        lines.append(f"| {c} | {r['ddpg']:.2f} | {r['ddpg+select']:.2f} | {r['mean_gain']:+.2f} ± {r['stderr']:.2f} "
                     f"| {r['wins']}/{r['images']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--ablation-images", type=int, default=16)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/methods_gaussian_cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"--methods: unknown {sorted(unknown)}; known: {', '.join(METHODS)}")
    prior = create_prior("gaussian")
    den = as_denoiser(prior)
    x = prior.sample(args.images, args.size, generator=torch.Generator().manual_seed(0))
    results = {c: run_task(prior, den, x, c, methods) for c in TASKS}
    ablation = selection_ablation(prior, den, args.size, args.ablation_images)
    meta = {"command": "python benchmarks/compare_methods.py " + shlex.join(sys.argv[1:] if argv is None else argv),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
            "torch": torch.__version__, "threads": args.threads, "size": args.size, "images": args.images}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".md", markdown(results, ablation, meta)),
                         (".json", json.dumps({"meta": meta, "results": results, "selection": ablation}, indent=1,
                                              ensure_ascii=False))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out.with_suffix(suffix))
    print(f"wrote {out}.md and {out}.json")


if __name__ == "__main__":
    main()
