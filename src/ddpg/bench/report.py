"""Benchmark reports: the environment (GPU, driver, library versions), and JSON / Markdown / PNG files written
atomically (temporary file in the same folder, then ``os.replace``)."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import warnings
from pathlib import Path

import torch

from ddpg.errors import ConfigError
from ddpg.io import atomic_write
from ddpg.runtime.backends.tensorrt_env import TENSORRT_WHEELS
from ddpg.versions import install_hint, versions

SCHEMA = "ddpg-bench/1"
# docs/performance.md §1: whole restoration of 100 steps, one GPU (H100)
TARGETS = {"celeba_hq": {"latency_s": 0.5, "images_per_s": 8.0, "guidance_share": 0.05},
           "imagenet256": {"latency_s": 1.5, "images_per_s": 2.4, "guidance_share": 0.02}}
PSNR_TOLERANCE_DB = 0.1  # fp16 restoration vs the fp32 path on the same noise
CPU_NOTE = ("CPU smoke run of the benchmark harness: these numbers check that the harness works and are not "
            "speed claims (the targets in docs/performance.md are for one H100).")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


SMI_FIELDS = (("name", "name"), ("driver", "driver_version"), ("max_sm_clock", "clocks.max.sm"),
              ("max_mem_clock", "clocks.max.mem"), ("power_limit", "power.limit"))


def _smi_query(exe: str, fields: tuple[str, ...]) -> list[str] | None:
    """The first GPU's values of ``fields`` (``nvidia-smi --query-gpu``), or None when the call fails."""
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    values = [v.strip() for v in lines[0].split(",")] if lines else []
    return values if len(values) == len(fields) else None


def nvidia_smi() -> dict:
    """GPU name, driver, maximum clocks and power limit from nvidia-smi; only name and driver when the full
    query is refused (a field this driver does not know fails the whole query); {} without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    for keys in (SMI_FIELDS, SMI_FIELDS[:2]):
        values = _smi_query(exe, tuple(field for _, field in keys))
        if values is not None:
            return {key: value for (key, _), value in zip(keys, values, strict=True)}
    return {}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _tensorrt_version() -> str | None:
    """The installed TensorRT: the ``tensorrt`` distribution, or one of NVIDIA's per-CUDA wheels."""
    return next((v for v in map(_version, ("tensorrt", *TENSORRT_WHEELS)) if v), None)


def environment(device: torch.device) -> dict:
    """Device, driver and library versions recorded with every result (docs/deployment.md §13)."""
    env = {"device": str(device), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
           "torch_threads": torch.get_num_threads(), **versions(device), "cuda": torch.version.cuda,
           "triton": _version("triton"), "onnxruntime": _version("onnxruntime-gpu") or _version("onnxruntime"),
           "tensorrt": _tensorrt_version()}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update({"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                    "compute_capability": f"{props.major}.{props.minor}",
                    "cudnn": torch.backends.cudnn.version(), "nvidia_smi": nvidia_smi(),
                    "cudnn_benchmark": torch.backends.cudnn.benchmark,
                    "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                    "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32})
    return env


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_json(report: dict, path: Path) -> None:
    atomic_write(Path(path), lambda tmp: tmp.write_text(json.dumps(_json_safe(report), indent=2) + "\n"))


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return str(value)


def markdown(report: dict) -> str:
    """The report as Markdown: environment, command line, one row per (series, batch), accuracy."""
    env = report["environment"]
    lines = [f"# ddpg bench: {report.get('title', '')}".rstrip(), ""]
    if report.get("note"):
        lines += [f"**{report['note']}**", ""]
    device = env.get("gpu") or env.get("cpu")
    lines += [f"- created: {report['created_utc']}",
              f"- device: {device} ({env['device']}); torch {env['torch']}, CUDA {env.get('cuda')}, "
              f"cuDNN {env.get('cudnn')}, ONNX Runtime {env.get('onnxruntime')}, TensorRT {env.get('tensorrt')}",
              f"- driver: {env.get('nvidia_smi', {}).get('driver', '–')}; python {env['python']}; "
              f"{env['platform']}"]
    if report.get("command"):
        lines.append(f"- command: `{report['command']}`")
    lines += ["", "Whole restoration = steps × (UNet + guidance) per image; latency per step from CUDA events "
              "(perf_counter on CPU) after warm-up.", "",
              "| series | batch | steps | s / image | images / s | step p50 / p90 / p99 ms | UNet p50 / p90 / p99 ms "
              "| guidance share | peak MiB | GFLOP / NFE | TFLOP/s | of matmul rate |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in report["series"]:
        for r in s["results"]:
            st, un = r["step_ms"], r["unet_ms"]
            frac = r.get("fraction_of_matmul")
            lines.append(
                f"| {s['label']} | {r['batch']} | {s['config']['steps']} | {_fmt(r['s_per_image'])} | "
                f"{_fmt(r['images_per_s'])} | {_fmt(st['p50'])} / {_fmt(st['p90'])} / {_fmt(st['p99'])} | "
                f"{_fmt(un['p50'])} / {_fmt(un['p90'])} / {_fmt(un['p99'])} | {100 * r['guidance_share']:.1f} % | "
                f"{_fmt(r.get('peak_mem_mib'))} | {_fmt(r['flops_per_nfe'] / 1e9)} | {_fmt(r['achieved_tflops'])} | "
                f"{'–' if frac is None else f'{100 * frac:.1f} %'} |")
    tiled = [(s["label"], r) for s in report["series"] for r in s["results"] if r.get("tiles_per_image")]
    if tiled:
        lines += ["", "Tiled UNet (--tile): " + "; ".join(
            f"{label} batch {r['batch']}: {r['tiles_per_image']} tiles per image, {_fmt(r['tiles_per_s'])} tiles/s, "
            f"{_fmt(r['s_per_megapixel'])} s per megapixel" for label, r in tiled)]
    extra = [f"{s['label']}: {s['fp32_prior_mib']:.0f} MiB" for s in report["series"] if s.get("fp32_prior_mib")]
    if any(r.get("peak_mem_mib") is not None for s in report["series"] for r in s["results"]):
        lines += ["", "Peak MiB: the most torch allocated during the timed restorations, less what was allocated "
                  "before the configuration was built (CUDA graph pools and ONNX Runtime's own arena are not "
                  "counted; `peak_reserved_mib` in the JSON has torch's reserved peak)."
                  + (" It includes the fp32 prior the harness keeps for the accuracy check: " + "; ".join(extra)
                     if extra else "")]
    rates = [(s["label"], s.get("matmul")) for s in report["series"] if s.get("matmul")]
    if rates:
        lines += ["", "Matrix-product reference rate, measured in each series' run (the denominator of its last "
                  "column): " + "; ".join(f"{label}: {m['dtype']} {m['n']}³ {m['tflops']:.3g} TFLOP/s"
                                          for label, m in rates)]
    acc = [(s["label"], s["accuracy"]) for s in report["series"] if s.get("accuracy")]
    if acc:
        lines += ["", "Accuracy: the series against the plain fp32 path on the same x_T and noise (batch 1, PSNR in "
                  "dB against the ground truth):", "",
                  "| series | reference | PSNR reference | precision | PSNR | difference dB | PSNR vs reference | "
                  "rel. L2 |", "|---|---|---|---|---|---|---|---|"]
        for label, a in acc:
            lines.append(f"| {label} | {a['reference']} | {_fmt(a['psnr_reference'], 4)} | {a['precision']} | "
                         f"{_fmt(a['psnr_low'], 4)} | {_fmt(a['psnr_difference_db'], 3)} | "
                         f"{_fmt(a['psnr_low_vs_reference'], 4)} | {_fmt(a['rel_l2'], 3)} |")
        lines += [f"\n{label}: {a['note']}." for label, a in acc if a.get("note")]
    gates = [(s["label"], s["quality_gate"]) for s in report["series"] if s.get("quality_gate")]
    if gates:
        from ddpg.export.quality_gate import GateReport

        lines += ["", "Restoration quality gates recorded in the engines (ddpg export --gate):", ""]
        lines += [f"- {label}: {GateReport(**gate).summary()}" for label, gate in gates]
    lines += _targets_lines(report) + _where_time_goes(report)
    if report.get("interrupted"):
        lines += ["", "**The run was interrupted (time limit): configurations or batch sizes are missing.**"]
    if report.get("failures"):
        lines += ["", "Failed runs:", ""] + [f"- {f['config']} batch {f['batch']}: {f['error']}"
                                           for f in report["failures"]]
    return "\n".join(lines) + "\n"


def prior_targets(prior) -> dict | None:
    """``TARGETS`` of a named prior (or YAML path) whose name starts with a key; None for others."""
    if not isinstance(prior, str):
        return None
    stem = Path(prior).stem
    return next((t for key, t in TARGETS.items() if stem.startswith(key)), None)


def _check(target: str, batch: int | None, value: float, limit: float, met: bool) -> dict:
    return {"target": target, "batch": batch, "value": value, "limit": limit, "met": bool(met)}


def check_targets(series: dict) -> list[dict]:
    """Each performance target of the series' prior: latency at batch 1 (s/image ≤), throughput at the best
    batch (images/s ≥), the guidance share of a step at every batch (≤), the low-precision PSNR difference
    (|dB| ≤ 0.1). [] for priors without targets."""
    targets = prior_targets(series["config"]["prior"])
    rows = series["results"]
    if targets is None or not rows:
        return []
    checks = [_check("latency_s", 1, r["s_per_image"], targets["latency_s"], r["s_per_image"] <= targets["latency_s"])
              for r in rows if r["batch"] == 1]
    best = max(rows, key=lambda r: r["images_per_s"])
    checks.append(_check("images_per_s", best["batch"], best["images_per_s"], targets["images_per_s"],
                         best["images_per_s"] >= targets["images_per_s"]))
    checks += [_check("guidance_share", r["batch"], r["guidance_share"], targets["guidance_share"],
                      r["guidance_share"] <= targets["guidance_share"]) for r in rows]
    acc = series.get("accuracy")
    if acc and acc.get("psnr_difference_db") is not None:
        diff = acc["psnr_difference_db"]
        checks.append(_check("psnr_difference_db", 1, diff, PSNR_TOLERANCE_DB, abs(diff) <= PSNR_TOLERANCE_DB))
    return checks


def _targets_lines(report: dict) -> list[str]:
    rows = [(s["label"], c) for s in report["series"] for c in s.get("targets") or check_targets(s)]
    if not rows:
        return []
    lines = ["", "Targets (docs/performance.md §1; latency at batch 1, throughput at the best batch):", "",
             "| series | target | batch | value | limit | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {label} | {c['target']} | {c['batch']} | {_fmt(c['value'], 4)} | {c['limit']} | "
              f"{'yes' if c['met'] else '**no**'} |" for label, c in rows]
    return lines


def _profile_lines(label: str, batch: int, prof: dict) -> list[str]:
    if "error" in prof:
        return ["", f"{label}, batch {batch}: profile failed ({prof['error']})"]
    shares = ", ".join(f"{name} {100 * v:.1f} %" for name, v in prof["shares"].items())
    parts = ", ".join(f"{name} {100 * v:.1f} %" for name, v in prof["part_shares"].items())
    lines = ["", f"**{label}, batch {batch}** — kernel time by part: {parts}; by kind: {shares}", "",
             "| kernel | part | kind | µs / call | launches / call | share |", "|---|---|---|---|---|---|"]
    lines += [f"| `{k['name'][:90]}` | {k['part']} | {k['category']} | {_fmt(k['us_per_call'])} | "
              f"{_fmt(k['launches_per_call'])} | {100 * k['share']:.1f} % |" for k in prof["top"][:8]]
    return lines


def _where_time_goes(report: dict) -> list[str]:
    """Profile summaries of the rows behind every missed target (the PSNR check has no profile)."""
    lines = []
    for s in report["series"]:
        missed = sorted({c["batch"] for c in (s.get("targets") or check_targets(s))
                         if not c["met"] and c["target"] != "psnr_difference_db"})
        for r in s["results"]:
            if r["batch"] in missed and r.get("profile"):
                lines += _profile_lines(s["label"], r["batch"], r["profile"])
    if not lines:
        return []
    return ["", "Where the time goes, for the rows that miss a target (torch.profiler, eager UNet and guidance "
            "calls; kinds from kernel names):", *lines]


def write_markdown(report: dict, path: Path) -> None:
    text = markdown(report)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def write_plot(report: dict, path: Path) -> None:
    """PNG: throughput (images/s) and latency (s/image) against batch size, one line per series."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError(f"{path}: the plot needs matplotlib: {install_hint('plot')}") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(10, 4))
    for s in report["series"]:
        batches = [r["batch"] for r in s["results"]]
        ax_tp.plot(batches, [r["images_per_s"] for r in s["results"]], marker="o", label=s["label"])
        ax_lat.plot(batches, [r["s_per_image"] for r in s["results"]], marker="o", label=s["label"])
    all_batches = sorted({r["batch"] for s in report["series"] for r in s["results"]})
    for ax, ylabel in ((ax_tp, "images / s (whole restoration)"), (ax_lat, "s / image (whole restoration)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_batches, [str(b) for b in all_batches])
        ax.minorticks_off()
        ax.set_xlabel("batch")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    ax_lat.set_yscale("log")
    ax_tp.legend(fontsize=8)
    env = report["environment"]
    title = f"{report.get('title', '')} — {env.get('gpu') or env.get('cpu')}"
    if report.get("note"):
        title += "\n(CPU smoke run, not a speed claim)" if env["device"].startswith("cpu") else ""
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)


def write_all(report: dict, json_path: Path) -> list[Path]:
    """``json_path`` plus the Markdown and PNG next to it (same stem); returns the paths written. The JSON and
    Markdown are written first; without matplotlib the PNG is skipped with a warning."""
    json_path = Path(json_path)
    paths = [json_path, json_path.with_suffix(".md"), json_path.with_suffix(".png")]
    write_json(report, paths[0])
    write_markdown(report, paths[1])
    try:
        write_plot(report, paths[2])
    except ConfigError as exc:  # matplotlib missing: the JSON and Markdown stand without the plot
        warnings.warn(str(exc), stacklevel=2)
        return paths[:2]
    return paths


__all__ = ["CPU_NOTE", "PSNR_TOLERANCE_DB", "SCHEMA", "TARGETS", "check_targets", "environment", "markdown",
           "now_utc", "nvidia_smi", "prior_targets", "write_all", "write_json", "write_markdown", "write_plot"]
