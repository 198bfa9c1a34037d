"""Load benchmark of ``ddpg serve``: a real server (one subprocess per policy) driven over HTTP at a fixed
concurrency and at Poisson arrival rates; throughput, p50/p95/p99 latency and batch occupancy for continuous
batching, request-level batching (wait up to T ms to fill a batch, then run it to the end) and one request at
a time, beside offline ``ddpg restore`` at the same batch size. JSON + Markdown + a PNG of latency against
offered load.

    python benchmarks/bench_serve.py --prior face64 --steps 10 --max-batch 4 \
        --out benchmarks/results/serve_cpu_face64

``--max-batch auto`` picks the batch once, in this process, by ``ddpg serve --max-batch auto``'s profile and
rule, and runs every server, offline ``ddpg restore`` and the saturation clients at it (the same batch for
every policy).

Targets (checked in the report): at saturation continuous batching delivers >= 90 % of offline images/s; at
the lowest load its p50 latency is <= 1.15x a lone request's; at every load its p99 is below request-level
batching's. The throughput target is judged on ``--rounds`` pairs of (offline restore, continuous saturation)
measured back to back, the order alternating per round: a shared machine's speed drifts by more than the 10 %
the target allows, so only figures taken minutes apart compare. The median of the pairs' ratios is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "fixtures" / "faces64_dev"
POLICIES = ("continuous", "request", "single")


def percentiles(values: list[float]) -> dict:
    a = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": len(values)}


def occupancy(metrics_text: str) -> tuple[float, float]:
    """(sum, count) of the server's batch-occupancy histogram."""
    out = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "ddpg_serve_batch_occupancy":
            for s in family.samples:
                if s.name.endswith("_sum"):
                    out["sum"] = s.value
                elif s.name.endswith("_count"):
                    out["count"] = s.value
    return out["sum"], out["count"]


class Server:
    """``ddpg serve`` in a subprocess with one policy."""

    def __init__(self, args, policy: str, port: int):
        cmd = [sys.executable, "-m", "ddpg", "serve", "--prior", args.prior, "--port", str(port), "--max-batch",
               str(args.batch), "--max-queue", "100000", "--policy", policy, "--batch-wait-ms",
               str(args.batch_wait_ms), "--request-timeout", "100000", "-q"]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})

    def wait_ready(self, timeout_s: float = 600) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the server did not get ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


async def one_request(client: httpx.AsyncClient, url: str, image: bytes, args, seed: int) -> float:
    t0 = time.perf_counter()
    r = await client.post(url + "/v1/restore", files={"image": ("face.png", image, "image/png")},
                          data={"task": args.task, "steps": str(args.steps), "seed": str(seed)})
    if r.status_code != 200:
        raise RuntimeError(f"request failed: {r.status_code} {r.text}")
    return time.perf_counter() - t0


async def closed_loop(url: str, images: list[bytes], args, concurrency: int, n: int, seed0: int) -> dict:
    """``concurrency`` clients each sending back to back until ``n`` requests are done."""
    latencies: list[float] = []
    counter = iter(range(n))
    async with httpx.AsyncClient(timeout=None) as client:
        async def worker() -> None:
            for i in counter:
                latencies.append(await one_request(client, url, images[i % len(images)], args, seed0 + i))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return {"mode": "concurrency", "concurrency": concurrency, "latency_s": percentiles(latencies),
            "wall_s": wall, "images_per_s": n / wall, "offered_per_s": n / wall}


async def poisson(url: str, images: list[bytes], args, rate: float, n: int, seed0: int) -> dict:
    """``n`` requests with exponential gaps of mean 1/``rate`` s (seeded), each sent at its time."""
    gaps = np.random.default_rng(seed0).exponential(1 / rate, n)
    starts = np.cumsum(gaps) - gaps[0]
    async with httpx.AsyncClient(timeout=None) as client:
        t0 = time.perf_counter()

        async def at(i: int) -> float:
            await asyncio.sleep(max(0.0, t0 + starts[i] - time.perf_counter()))
            return await one_request(client, url, images[i % len(images)], args, seed0 + i)

        latencies = await asyncio.gather(*(at(i) for i in range(n)))
        wall = time.perf_counter() - t0
    return {"mode": "poisson", "rate_per_s": rate, "latency_s": percentiles(list(latencies)), "wall_s": wall,
            "images_per_s": n / wall, "offered_per_s": rate}


def measure(url: str, run) -> dict:
    before = occupancy(httpx.get(url + "/metrics").text)
    result = asyncio.run(run)
    after = occupancy(httpx.get(url + "/metrics").text)
    ticks = after[1] - before[1]
    result["mean_batch_occupancy"] = (after[0] - before[0]) / ticks if ticks else 0.0
    return result


def offline(args, files: list[Path]) -> dict:
    """``ddpg restore`` of ``files`` at the benchmark's batch in this process, the prior loaded and warmed up first
    (the server's is resident too): images/s."""
    from ddpg import api
    from ddpg.api.denoisers import make_denoiser

    denoiser = make_denoiser(args.prior, None, "torch", None, "cpu")
    options = {"task": args.task, "prior": args.prior, "steps": args.steps, "batch_size": args.batch,
               "denoiser": denoiser}
    with tempfile.TemporaryDirectory() as out:
        api.restore([str(f) for f in files[: args.batch]], Path(out) / "warm", **options)
        t0 = time.perf_counter()
        report = api.restore([str(f) for f in files], out, **options)
        wall = time.perf_counter() - t0
    if report.failed:
        raise RuntimeError(f"offline restore failed: {report.failed}")
    return {"images": len(files), "batch_size": args.batch, "wall_s": wall, "images_per_s": len(files) / wall}


def auto_batch(args) -> int:
    """The batch ``ddpg serve --max-batch auto`` would choose here (the same profile and rule)."""
    from ddpg.api.denoisers import make_denoiser
    from ddpg.models.denoiser import native_image_size
    from ddpg.serve.batch_size import choose_batch, profile_batches

    denoiser = make_denoiser(args.prior, None, "torch", None, "cpu")
    size = native_image_size(denoiser) or 64
    return choose_batch(profile_batches(denoiser, size, "cpu"))


def saturation(url: str, images: list[bytes], args, seed0: int) -> dict:
    """Requests at concurrency 2 x the batch, so the server always has a full batch and a queue."""
    return measure(url, closed_loop(url, images, args, 2 * args.batch, args.saturation, seed0))


def paired_rounds(args, url: str, images: list[bytes], offline_files: list[Path]) -> list[dict]:
    """``args.rounds`` pairs of offline restore and saturation of the server at ``url``, back to back, the
    order alternating per round."""
    pairs = []
    for r in range(args.rounds):
        serve_first = r % 2 == 1
        if serve_first:
            point = saturation(url, images, args, 5000 + 100 * r)
            ref = offline(args, offline_files)
        else:
            ref = offline(args, offline_files)
            point = saturation(url, images, args, 5000 + 100 * r)
        pairs.append({"round": r + 1, "serve_first": serve_first, "offline_images_per_s": ref["images_per_s"],
                      "serve_images_per_s": point["images_per_s"],
                      "ratio": point["images_per_s"] / ref["images_per_s"]})
        print("round", json.dumps(pairs[-1]), flush=True)
    return pairs


def run_policy(args, policy: str, port: int, images: list[bytes], offline_files: list[Path],
               offline_rate: float) -> dict:
    server = Server(args, policy, port)
    try:
        server.wait_ready()
        asyncio.run(closed_loop(server.url, images, args, 1, 1, 999))  # warm-up, not counted
        points = {"lone": measure(server.url, closed_loop(server.url, images, args, 1, args.lone, 1000))}
        points["saturation"] = saturation(server.url, images, args, 2000)
        for j, load in enumerate(args.loads):
            points[f"poisson_{load:g}"] = measure(server.url, poisson(server.url, images, args, load * offline_rate,
                                                                      args.poisson, 3000 + 100 * j))
            points[f"poisson_{load:g}"]["load_fraction"] = load
        if policy == "continuous":
            points["paired"] = paired_rounds(args, server.url, images, offline_files)
        return points
    finally:
        server.stop()


def targets(report: dict) -> list[dict]:
    res = report["policies"]
    cont, req = res["continuous"], res["request"]
    ratio = float(np.median([p["ratio"] for p in cont["paired"]]))
    low = min((k for k in cont if k.startswith("poisson_")), key=lambda k: cont[k]["load_fraction"])
    p50_ratio = cont[low]["latency_s"]["p50"] / cont["lone"]["latency_s"]["p50"]
    checks = [{"target": f"saturation images/s >= 90 % of offline (median of {len(cont['paired'])} paired rounds)",
               "measured": round(ratio, 3), "met": ratio >= 0.9},
              {"target": f"p50 at low load ({low}) <= 1.15x a lone request", "measured": round(p50_ratio, 3),
               "met": p50_ratio <= 1.15}]
    for point in [k for k in cont if k not in ("lone", "paired")]:
        a, b = cont[point]["latency_s"]["p99"], req[point]["latency_s"]["p99"]
        checks.append({"target": f"p99 below request-level batching's ({point})",
                       "measured": f"{a:.2f} s vs {b:.2f} s", "met": a < b})
    return checks


def markdown(report: dict) -> str:
    a = report["args"]
    chosen = " chosen by --max-batch auto" if a["max_batch"] == "auto" else ""
    lines = [f"# ddpg serve load benchmark ({a['prior']}, {a['task']}, {a['steps']} steps, max batch "
             f"{a['batch']}{chosen})", "", f"Machine: {report['machine']}", "", f"Command: `{report['command']}`", "",
             f"Offline `ddpg restore` at batch {a['batch']} (prior resident, warmed up) before the servers: "
             f"{report['offline']['images_per_s']:.3f} images/s (the Poisson rates are fractions of it).", "",
             "| policy | point | offered req/s | images/s | p50 s | p95 s | p99 s | mean batch |",
             "|---|---|---|---|---|---|---|---|"]
    for policy, points in report["policies"].items():
        for name, p in points.items():
            if name == "paired":
                continue
            lat = p["latency_s"]
            lines.append(f"| {policy} | {name} | {p['offered_per_s']:.3f} | {p['images_per_s']:.3f} | "
                         f"{lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | {p['mean_batch_occupancy']:.2f} |")
    pairs = report["policies"].get("continuous", {}).get("paired", [])
    if pairs:
        lines += ["", "Paired rounds (offline restore and continuous batching at saturation, back to back):", "",
                  "| round | first | offline images/s | continuous images/s | ratio |", "|---|---|---|---|---|"]
        lines += [f"| {p['round']} | {'server' if p['serve_first'] else 'offline'} | {p['offline_images_per_s']:.3f} | "
                  f"{p['serve_images_per_s']:.3f} | {p['ratio']:.3f} |" for p in pairs]
    lines += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else 'no'} |" for c in report["targets"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy, points in report["policies"].items():
        rows = sorted((p["offered_per_s"], p["latency_s"]["p50"], p["latency_s"]["p99"])
                      for k, p in points.items() if k not in ("lone", "paired"))
        x = [r[0] for r in rows]
        line, = ax.plot(x, [r[1] for r in rows], "o-", label=f"{policy} p50")
        ax.plot(x, [r[2] for r in rows], "s--", color=line.get_color(), label=f"{policy} p99")
    ax.set_xlabel("offered load (requests/s; saturation: the achieved rate)")
    ax.set_ylabel("latency (s)")
    ax.set_title(f"ddpg serve, {report['args']['prior']}, {report['args']['steps']} steps")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="face64")
    ap.add_argument("--task", default="sr4")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--max-batch", default="4", help="a batch, or auto (see above)")
    ap.add_argument("--batch-wait-ms", type=float, default=2000.0, help="request-level batching's wait T")
    ap.add_argument("--lone", type=int, default=3, help="requests one after another (the lone latency)")
    ap.add_argument("--saturation", type=int, default=16, help="requests at concurrency 2 x max batch")
    ap.add_argument("--poisson", type=int, default=8, help="requests per Poisson point")
    ap.add_argument("--loads", default="0.25,0.75", help="Poisson rates as fractions of offline images/s")
    ap.add_argument("--rounds", type=int, default=3, help="paired (offline, continuous saturation) rounds")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument("--machine", default=f"{platform.machine()} CPU, {os.cpu_count()} cores")
    ap.add_argument("--out", default="benchmarks/results/serve_cpu_face64")
    args = ap.parse_args()
    args.loads = [float(v) for v in args.loads.split(",")]
    args.batch = auto_batch(args) if args.max_batch == "auto" else int(args.max_batch)
    print("batch", args.batch, flush=True)
    files = sorted(FACES.glob("*.png"))
    images = [f.read_bytes() for f in files]
    report = {"command": shlex.join(["python", "benchmarks/bench_serve.py", *sys.argv[1:]]), "machine": args.machine,
              "args": {k: v for k, v in vars(args).items() if k not in ("machine",)}}
    offline_files = files[: max(args.saturation, 2 * args.batch)]
    report["offline"] = offline(args, offline_files)
    print("offline", json.dumps(report["offline"]), flush=True)
    report["policies"] = {}
    for i, policy in enumerate(args.policies.split(",")):
        report["policies"][policy] = run_policy(args, policy, args.port + i, images, offline_files,
                                                report["offline"]["images_per_s"])
        print(policy, json.dumps(report["policies"][policy]), flush=True)
    if {"continuous", "request"} <= set(report["policies"]):
        report["targets"] = targets(report)
    else:
        report["targets"] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    plot(report, out.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
