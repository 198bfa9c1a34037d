"""A photo far larger than the prior (#32): ``ddpg.restore`` of a SIDE×SIDE "crowd" (a grid of the 64-px dev
faces, alternate ones mirrored) with face64, SR ×4, σ_y 0.05, ``--tile auto``, in a fresh process.

Reports the wall and sampling seconds, seconds per megapixel, the peak RSS of the process, the tiling the
sidecar records, and checks the time against (UNet tile evaluations) × (one tile's cost): one tile's cost is the
median seconds per tile of calls of face64 on batches of ``tile_batch`` 64-px tiles, timed in the same process
after the restoration, on the same backend and thread count. Writes ``<out>.json`` and ``<out>.md``; ``--figure
PATH`` also writes a before/after crop (observed, nearest-upscaled | restored | ground truth). ``--backend
openvino|onnxruntime --engine FILE`` runs an exported engine (an OpenVINO IR, an ONNX file) instead of torch
fp32. Run as:

    python benchmarks/tiling_photo.py --side 2048 --steps 2 --out benchmarks/results/tiling_2048_cpu
    python benchmarks/tiling_photo.py --side 2048 --steps 100 --threads 2 --backend openvino \
        --engine face64_int8.xml --out benchmarks/results/tiling_2048_openvino_int8
    python benchmarks/tiling_photo.py --side 2048 --steps 100 --device cuda --out benchmarks/results/tiling_2048_gpu
    python benchmarks/tiling_photo.py --side 256 --steps 25 --out benchmarks/results/tiling_256_cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import ddpg
from ddpg.figures import comparison_grid
from ddpg.io import load_image, save_image
from ddpg.runtime.backends import make_denoiser
from deblur_motion_batching import load_average, machine, write_record

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiling_measures import crowd  # noqa: E402  (the test helper, shared with tests/test_tiling_photo.py)


def tile_cost(tile_batch: int, backend: str, engine: Path | None, threads: int, device: str,
              calls: int = 5) -> tuple[float, float]:
    """Median (wall, process CPU) seconds per 64-px tile of face64 calls on batches of ``tile_batch`` tiles, on
    ``backend`` and ``device`` with ``threads`` threads (CPU seconds do not grow with other processes' load, wall
    seconds do; on a GPU each call is synchronised)."""
    if backend == "torch":
        den = make_denoiser("torch", prior="face64", device=device)
    else:
        den = make_denoiser(backend, engine=engine, threads=threads)
    x = torch.randn(tile_batch, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    t = torch.full((tile_batch,), 500.0, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    wall, cpu = [], []
    with torch.no_grad():
        den(x, t)
        for _ in range(calls):
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            den(x, t)
            sync()
            wall.append((time.perf_counter() - t0) / tile_batch)
            cpu.append((time.process_time() - c0) / tile_batch)
    return statistics.median(wall), statistics.median(cpu)


def run(side: int, steps: int, work: Path, backend: str, engine: Path | None, threads: int, device: str) -> dict:
    photo = work / "crowd.png"
    save_image(crowd(side), photo)
    t0, c0 = time.perf_counter(), time.process_time()
    model = {"prior": "face64"} if backend == "torch" else {"backend": backend, "engine": engine}
    report = ddpg.restore([photo], work / "out", task="sr4", steps=steps, seed=0, threads=threads, device=device,
                          **model)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if report.exit_code:
        raise SystemExit(f"restore failed: {report.failed}")
    sidecar = json.loads((work / "out" / "crowd.json").read_text())
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    tiling, sampling = sidecar["tiling"], sidecar["timings_s"]["restore_batch"]
    per_tile, per_tile_cpu = tile_cost(tiling["tile_batch"], backend, engine, threads, device)
    evaluations = steps * tiling["tiles"]
    return {"side": side, "steps": steps, "method": sidecar["method"], "backend": backend,
            "engine": None if engine is None else engine.name, "threads": threads,
            "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
            "wall_s": round(wall, 2),
            "sampling_s": sampling, "s_per_megapixel": round(sampling / (side * side / 1e6), 2),
            "peak_rss_gib": round(peak_rss / 2**30, 3), "tiling": tiling, "tile_evaluations": evaluations,
            "one_tile_s": round(per_tile, 4), "predicted_s": round(evaluations * per_tile, 2),
            "time_over_predicted": round(sampling / (evaluations * per_tile), 3), "cpu_s": round(cpu, 2),
            "one_tile_cpu_s": round(per_tile_cpu, 4),
            "cpu_over_predicted": round(cpu / (evaluations * per_tile_cpu), 3), "psnr": sidecar["metrics"]["psnr"],
            "baseline_psnr": sidecar["metrics"]["baseline_psnr"]}


def figure(work: Path, path: Path, crop: int) -> None:
    """(observed upscaled | restored | truth), each the top-left ``crop`` pixels, with labels, as a palette PNG."""
    truth = load_image(work / "crowd.png")[:, :crop, :crop]
    restored = load_image(work / "out" / "crowd_restored.png")[:, :crop, :crop]
    observed = load_image(work / "out" / "crowd_observed.png")
    observed = observed.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :crop, :crop]
    save_image(comparison_grid([[observed, restored, truth]], ["observed (4x nearest)", "restored", "truth"]), path)
    with Image.open(path) as img:  # a 256-colour palette: small enough to commit (about 50 KB)
        small = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def write(out: Path, record: dict) -> None:
    r, t = record["result"], record["result"]["tiling"]
    lines = [f"Tiling: {t['reason']}; {t['grid'][0]}×{t['grid'][1]} = {t['tiles']} tiles of {t['tile']} px "
             f"(overlap ≥ {t['overlap']}), {t['tile_batch']} per UNet call.", "",
             "| figure | value |", "|---|---|",
             f"| wall s (load, degrade, sample, write) | {r['wall_s']} |", f"| sampling s | {r['sampling_s']} |",
             f"| s per megapixel (sampling) | {r['s_per_megapixel']} |", f"| peak RSS GiB | {r['peak_rss_gib']} |",
             f"| UNet tile evaluations (steps × tiles) | {r['tile_evaluations']} |",
             f"| one tile's cost s (median, batches of {t['tile_batch']}) | {r['one_tile_s']} |",
             f"| predicted sampling s (evaluations × one tile) | {r['predicted_s']} |",
             f"| sampling / predicted | {r['time_over_predicted']} |",
             f"| process CPU s of the whole restore call (load, degrade, sample, write) | {r['cpu_s']} |",
             f"| one tile's CPU s (median) | {r['one_tile_cpu_s']} |",
             f"| CPU s / (evaluations × one tile's CPU s) | {r['cpu_over_predicted']} |",
             f"| PSNR dB (bicubic baseline) | {r['psnr']} ({r['baseline_psnr']}) |"]
    write_record(out, record, f"face64 on a {r['side']}×{r['side']} photo (SR ×4, σ_y 0.05, {r['method']}, "
                 f"{r['steps']} steps, --tile auto, {r['backend']}{'' if r['engine'] is None else ' ' + r['engine']})",
                 f"{r['threads']} thread(s), device {r.get('device', 'cpu')}", lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--figure", type=Path, help="write the before/after crop here (PNG)")
    parser.add_argument("--crop", type=int, default=192)
    parser.add_argument("--backend", choices=["torch", "openvino", "onnxruntime"], default="torch")
    parser.add_argument("--engine", type=Path, help="the exported engine (with --backend openvino|onnxruntime)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (torch backend)")
    args = parser.parse_args()
    if (args.backend == "torch") != (args.engine is None):
        parser.error("--engine goes with --backend openvino|onnxruntime, and only with them")
    if args.backend != "torch" and args.device != "cpu":
        parser.error("--backend openvino|onnxruntime run here on --device cpu")
    torch.set_num_threads(args.threads)
    record = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "machine": machine()}
    with tempfile.TemporaryDirectory() as tmp:
        record["result"] = run(args.side, args.steps, Path(tmp), args.backend, args.engine, args.threads,
                               args.device)
        if args.figure:
            figure(Path(tmp), args.figure, args.crop)
    record["load_after"] = load_average()
    write(args.out, record)
    print(json.dumps(record["result"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
