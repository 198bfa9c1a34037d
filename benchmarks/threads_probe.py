"""What ``--threads auto`` is chosen by: the face64 UNet forward (64×64, t = 500) at 1 and 2 torch threads, batch 1
and 4, and optionally whole ``ddpg restore --sample`` runs at ``--threads`` 1 and 2, on this machine as it is or
with ``--burners N`` busy-loop processes keeping N cores busy meanwhile.

    python benchmarks/threads_probe.py --burners 2 --restore-steps 20 --out benchmarks/results/threads_busy

Each configuration runs in its own subprocess (a fresh torch), 2 untimed calls then ``--repeats`` timed ones
(median and min reported); the order of thread counts alternates between batch sizes. Writes ``<out>.json`` and
``<out>.md``: the command, the machine, the 1-min load average before and after each run, the figures, and the
count ``--threads auto`` resolves to at the end (the burners still running).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BURN = "while True: pass"


def worker(threads: int, batch: int, repeats: int) -> dict:
    """Median and min ms of the face64 UNet forward at ``batch`` on ``threads`` threads, in this process."""
    import torch

    from ddpg.models import load_prior

    torch.set_num_threads(threads)
    model = load_prior("face64", quiet=True)
    x, t = torch.randn(batch, 3, 64, 64), torch.full((batch,), 500, dtype=torch.long)
    times = []
    with torch.inference_mode():
        for _ in range(2):
            model(x, t)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - start)
    return {"median_ms": round(1000 * statistics.median(times), 1), "min_ms": round(1000 * min(times), 1)}


def run_unet(threads: int, batch: int, repeats: int) -> dict:
    """One :func:`worker` in a subprocess, with the load around it."""
    load = os.getloadavg()[0]
    cmd = [sys.executable, __file__, "--worker", str(threads), str(batch), "--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    result = {"what": "unet", "threads": threads, "batch": batch, **json.loads(done.stdout.strip().splitlines()[-1]),
              "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    print(result, file=sys.stderr)
    return result


def run_restore(threads: int, steps: int) -> dict:
    """Wall seconds of ``ddpg restore --sample --steps`` at ``--threads``, and the restored PNG's bytes' hash."""
    import hashlib
    import tempfile

    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ddpg", "restore", "--sample", "-o", out, "--steps", str(steps),
                        "--threads", str(threads), "-q"], check=True, capture_output=True)
        wall = time.perf_counter() - start
        restored = next(Path(out).glob("*_restored.png")).read_bytes()
    result = {"what": "restore", "threads": threads, "steps": steps, "wall_s": round(wall, 2),
              "restored_sha256": hashlib.sha256(restored).hexdigest()[:16],
              "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    print(result, file=sys.stderr)
    return result


def markdown(report: dict) -> str:
    lines = [f"# --threads: face64 on {report['machine']}", "", f"`{report['command']}`", "",
             f"{report['burners']} busy-loop processes ran meanwhile; 1-min load average at the start "
             f"{report['load_start']:.2f}; `--threads auto` resolved to {report['auto_at_end']} at the end "
             f"(load {report['load_end']:.2f}).", "",
             "| what | batch / steps | threads | median ms / wall s | min ms | load before → after |",
             "|---|---|---|---|---|---|"]
    for r in report["results"]:
        if r["what"] == "unet":
            lines.append(f"| UNet forward | batch {r['batch']} | {r['threads']} | {r['median_ms']} ms | "
                         f"{r['min_ms']} | {r['load_before']} → {r['load_after']} |")
        else:
            lines.append(f"| restore --sample | {r['steps']} steps | {r['threads']} | {r['wall_s']} s | | "
                         f"{r['load_before']} → {r['load_after']} (restored sha256 {r['restored_sha256']}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", nargs=2, type=int, metavar=("THREADS", "BATCH"), help=argparse.SUPPRESS)
    parser.add_argument("--burners", type=int, default=0, help="Busy-loop processes to run meanwhile.")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--restore-steps", type=int, default=0, help="Also time restore --sample (0: not).")
    parser.add_argument("--warm-s", type=float, default=30, help="With burners: wait this long first (the load "
                                                                  "average catches up).")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the burners (finally below)
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)]
    try:
        if burners:
            time.sleep(args.warm_s)
        load_start, results = os.getloadavg()[0], []
        for i, batch in enumerate(int(b) for b in args.batches.split(",")):
            for threads in (1, 2) if i % 2 == 0 else (2, 1):
                results.append(run_unet(threads, batch, args.repeats))
        if args.restore_steps:
            for threads in (2, 1):
                results.append(run_restore(threads, args.restore_steps))
        from ddpg.threads import resolve_threads

        auto, load_end = resolve_threads("auto", environ={}), os.getloadavg()[0]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    from ddpg.bench.report import cpu_name

    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "burners": args.burners,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
                         f"({cpu_name()}), shared", "load_start": round(load_start, 2), "load_end": round(load_end, 2),
              "auto_at_end": auto, "results": results}
    text = markdown(report)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
