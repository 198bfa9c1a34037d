"""The restoration quality gate of OpenVINO bf16/int8 IRs against float32 (``ddpg.export.quality_gate``), with one
float32 reference shared by every candidate:

    python benchmarks/openvino_gate.py --faces tests/fixtures/faces64_dev --limit 32 --steps 100 \\
        --candidate bf16=face64_bf16.xml --candidate int8=face64_int8.xml --threads 1 \\
        --out benchmarks/results/openvino_gate_face64 [--record]

The float32 reference is the PyTorch face64 prior (the OpenVINO fp32 IR equals it to 1e-5). For each task
(sr4, deblur_gauss; σ_y 0.05) the faces are restored with the reference, then with each candidate, on the same
seeds (face i: seed i); the faces go in chunks of ``--batch``, every task and precision per chunk, and per-face
PSNRs and the gate's figures are written to ``<out>.json`` / ``<out>.md`` after each chunk, so an interrupted run
holds whole faces. ``--record`` writes each candidate's gate into its IR's metadata; ``--record-from`` does so
(and writes the verdicts) from the faces an interrupted run's ``<out>.json`` holds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from ddpg.export.openvino_export import record_gate
from ddpg.export.quality_gate import (
    GATE_BOUNDS_DB,
    GATE_SIGMA_Y,
    GATE_TASKS,
    GateReport,
    face_psnrs,
    load_faces,
    restore_faces,
    task_row,
)
from ddpg.models import as_denoiser, load_prior
from ddpg.runtime.backends.openvino import OpenVINODenoiser


def write(out: Path, doc: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps(doc, indent=2))
    lines = [f"# OpenVINO quality gate, face64 ({doc.get('faces_done', 0)} of {doc['faces']} faces done, "
             f"{doc['steps']} steps, σ_y {GATE_SIGMA_Y})", "",
             f"Command: `{doc['command']}`", "", f"Machine: {doc['machine']}; load average at start "
             f"{doc['load_start']}, at the last update {doc['load_now']}", "",
             "| task | precision | mean PSNR (dB) | fp32 mean | mean drop (dB) | worst face drop (dB) | bound | "
             "seconds |", "|---|---|---|---|---|---|---|---|"]
    for task, rows in doc["tasks"].items():
        for precision, row in rows.get("gate", {}).items():
            lines.append(f"| {task} | {precision} | {row['mean']:.3f} | {row['fp32_mean']:.3f} | {row['drop']:+.3f} "
                         f"| {row['worst_drop']:+.3f} (face {int(row['worst_face'])}) | {GATE_BOUNDS_DB[precision]} "
                         f"| {rows['seconds'][precision]:.0f} |")
    for precision, verdict in doc.get("verdicts", {}).items():
        lines.append(f"\n{precision}: {verdict}")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", required=True)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--candidate", action="append", default=[], help="PRECISION=IR.xml")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--out", required=True)
    ap.add_argument("--record-from", action="store_true", help="Restore nothing: the verdicts of the faces that "
                    "<out>.json holds (an interrupted run), written into it and, with --record, into the IRs.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    candidates = dict(c.split("=", 1) for c in args.candidate)
    if args.record_from:
        doc = json.loads(out.with_suffix(".json").read_text())
        verdicts(doc, candidates, args.record, sum(sum(r["seconds"].values()) for r in doc["tasks"].values()))
        write(out, doc)
        return
    faces = load_faces(args.faces, args.limit)
    denoisers = {p: OpenVINODenoiser(path, threads=args.threads, gate_warning=False) for p, path in candidates.items()}
    reference = as_denoiser(load_prior("face64"))
    doc = {"command": "python " + shlex.join(sys.argv), "faces": len(faces), "steps": args.steps,
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
           "threads": args.threads, "load_start": os.getloadavg()[0], "load_now": None,
           "tasks": {t: {"psnr": {}, "gate": {}, "seconds": {}} for t in GATE_TASKS}}
    start = time.perf_counter()
    for first in range(0, len(faces), args.batch):  # chunk by chunk: an interrupted run has whole faces done
        chunk = faces[first: first + args.batch]
        for task in GATE_TASKS:
            rows = doc["tasks"][task]
            for precision, den in {"fp32": reference, **denoisers}.items():
                t0 = time.perf_counter()
                got = face_psnrs(restore_faces(den, chunk, task, args.steps, args.batch, first_seed=first), chunk)
                rows["psnr"].setdefault(precision, []).extend(got)
                rows["seconds"][precision] = rows["seconds"].get(precision, 0.0) + time.perf_counter() - t0
                if precision != "fp32":
                    rows["gate"][precision] = task_row(rows["psnr"]["fp32"], rows["psnr"][precision])
        doc["faces_done"] = first + len(chunk)
        doc["load_now"] = os.getloadavg()[0]
        write(out, doc)
        print(f"faces {doc['faces_done']}/{len(faces)} done ({time.perf_counter() - start:.0f} s)", flush=True)
    verdicts(doc, candidates, args.record, round(time.perf_counter() - start, 1))
    write(out, doc)


def verdicts(doc: dict, candidates: dict[str, str], record: bool, seconds: float) -> None:
    """Each candidate's GateReport over the faces done, its summary into ``doc``; with ``record`` written into
    its IR (``record_gate``)."""
    for precision, path in candidates.items():
        per_task = {t: doc["tasks"][t]["gate"][precision] for t in GATE_TASKS}
        bound = GATE_BOUNDS_DB[precision]
        gate = GateReport(precision, bound, doc["faces_done"], doc["steps"], GATE_SIGMA_Y, per_task,
                          all(r["drop"] <= bound for r in per_task.values()), seconds)
        doc.setdefault("verdicts", {})[precision] = gate.summary()
        if record:
            record_gate(path, gate)


if __name__ == "__main__":
    main()
