"""deblur_motion images/s on face64 when every image has its own motion kernel: ``ddpg.restore`` of 8 dev faces
(tests/fixtures/faces64_dev, 64×64) at batch size 8, image i blurred with the reference kernel of seed 10·i.

    python benchmarks/deblur_motion_batching.py --src before=/path/to/old/src --src after=src \\
        --steps 10 --rounds 3 --out benchmarks/results/deblur_motion_batching_cpu

Each round runs every ``--src`` tree once (in a subprocess with that PYTHONPATH; the order alternates between
rounds, so a busy machine weighs on each alike) and records the restore's wall time, its sampling seconds (the
sum of its sampler calls' ``restore_batch`` from the sidecars), how many images shared each call, and the
images/s of both. Writes ``<out>.json`` and ``<out>.md`` (the command, the machine, the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FACES = sorted((Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "faces64_dev").glob("*.png"))[:8]


def worker(steps: int, batch: int, threads: int) -> dict:
    """One restore in this process (the ddpg that PYTHONPATH gives); its figures."""
    import torch

    import ddpg

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        report = ddpg.restore([str(f) for f in FACES], out, task="deblur_motion", prior="face64", steps=steps,
                              batch_size=batch, seed=0)
        wall = time.perf_counter() - t0
        assert len(report.done) == len(FACES), report.failed
        timings = [json.loads(p.read_text())["timings_s"] for p in sorted(Path(out).glob("*.json"))
                   if not p.name.startswith("run_summary")]
    sampling = sum(t["restore_per_image"] for t in timings)
    return {"wall_s": round(wall, 3), "sampling_s": round(sampling, 3),
            "images_per_call": sorted({t["images_in_batch"] for t in timings}),
            "images_per_s_sampling": round(len(FACES) / sampling, 4), "images_per_s_wall": round(len(FACES) / wall, 4),
            "threads": torch.get_num_threads()}


def run_round(label: str, src: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    cmd = [sys.executable, __file__, "--worker", "--steps", str(args.steps), "--batch", str(args.batch),
           "--threads", str(args.threads)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{label}: {result}", file=sys.stderr)
    return {"label": label, **result}


def tree_commit(src: str) -> str:
    """The commit of the checkout holding the source tree ``src`` ("+ changes" when it has uncommitted ones)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", "-C", src, *cmd], capture_output=True, text=True, check=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + (" + changes" if git("status", "--porcelain") else "")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (how busy the shared machine was)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    from ddpg.bench.report import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "load_average_1_5_15": load_average(),
            "python": platform.python_version()}


def write_record(out: Path, record: dict, title: str, how: str, body: list[str], note: str = "") -> None:
    """``<out>.json`` (the whole record) and ``<out>.md``: the ``title`` heading, the command, the machine with
    ``how`` it ran (e.g. "one thread"; may be empty), its load average before and after (and ``note``), then
    ``body`` (the result's lines). ``record`` holds ``command``, ``machine`` (:func:`machine`) and ``load_after``."""
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    m = record["machine"]
    lines = [f"# {title}", "", f"Command: `{record['command']}`", "",
             f"Machine: {m['cpu']}, {m['cores']} cores{', ' + how if how else ''}; load average before "
             f"{m['load_average_1_5_15']}, after {record['load_after']}{f' ({note})' if note else ''}.", "", *body]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def summary(runs: list[dict], labels: list[str]) -> dict:
    """Median figures per label."""
    out = {}
    for label in labels:
        mine = [r for r in runs if r["label"] == label]
        out[label] = {k: statistics.median(r[k] for r in mine)
                      for k in ("images_per_s_sampling", "images_per_s_wall", "sampling_s", "wall_s")}
        out[label]["images_per_call"] = mine[0]["images_per_call"]
    return out


def write(out: Path, record: dict) -> None:
    lines = ["Trees: " + ", ".join(f"{label} = commit {c}" for label, c in record["trees"].items()) + ".", "",
             "| tree | images per sampler call | sampling images/s | wall images/s | sampling s | wall s |",
             "|---|---|---|---|---|---|"]
    for label, s in record["median"].items():
        lines.append(f"| {label} | {s['images_per_call']} | {s['images_per_s_sampling']:.3f} | "
                     f"{s['images_per_s_wall']:.3f} | {s['sampling_s']:.2f} | {s['wall_s']:.2f} |")
    lines += ["", f"Medians of {record['rounds']} rounds (order alternating); every run in `{out.name}.json`."]
    write_record(out, record, f"deblur_motion batching on face64 ({record['faces']} faces, batch {record['batch']}, "
                 f"{record['steps']} steps)", "", lines, note=record["note"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", action="append", default=[], help="LABEL=PATH of a ddpg source tree (repeatable)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--note", default="", help="how busy the machine was, for the report")
    ap.add_argument("--out", type=Path, help="write <out>.json and <out>.md")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.steps, args.batch, args.threads)))
        return 0
    trees = [entry.split("=", 1) for entry in args.src]
    commits = {label: tree_commit(src) for label, src in trees}
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    for label, src in trees:  # a checkout's path means nothing elsewhere: its commit says what it held
        command = command.replace(src, f"<checkout of {commits[label]}>/src")
    before = machine()
    runs = [run_round(label, src, args) for r in range(args.rounds)
            for label, src in (trees if r % 2 == 0 else trees[::-1])]
    record = {"command": command, "trees": commits, "faces": len(FACES), "batch": args.batch,
              "steps": args.steps, "rounds": args.rounds, "machine": before, "load_after": load_average(),
              "note": args.note, "median": summary(runs, [label for label, _ in trees]), "runs": runs}
    print(json.dumps(record["median"], indent=1))
    if args.out:
        write(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
