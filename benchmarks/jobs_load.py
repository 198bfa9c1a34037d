"""Bounded load test of the job API of ``ddpg serve`` (docs/jobs.md): does anything grow without bound?

A real server (a subprocess, ``--port 0``, its own ``TMPDIR``) is driven over HTTP for ``--rounds`` rounds. Each
round submits ``--jobs`` jobs at once and, per job, opens ``--listeners`` event streams of four kinds in turn:
one that reads to the final event with previews (its events checked: ``status`` first, step numbers rising,
the last step, one final event), one that goes away after the ``status`` event, one that goes away after its
first step event, and one that stalls (reads nothing until the job has ended, then goes away). Beside them,
every ``--delete-every``-th job is deleted while it runs, ``--vanish`` ``/v1/restore`` clients go away at a
random moment (mid-upload, queued or running) and ``--vanish`` raw clients send half a request body and close.
After each round (all jobs ended, every stream closed) the server's resident memory (VmRSS), its open file
descriptors, its request folders and its ``ddpg_serve_jobs`` / ``ddpg_serve_event_listeners`` gauges are
recorded; after the last, the test waits ``--job-ttl`` for the finished jobs to expire.

Flat means (checked in the report): after ``--warmup`` rounds (glibc's malloc arenas, up to one per thread of
the server's thread pool, fill first: run with ``MALLOC_ARENA_MAX=2`` the server levels off sooner and lower,
results/jobs_load_cpu_arena2.md) the open descriptors do not grow and resident memory grows by less than
``--rss-bound-mib``;
request folders never exceed ``--max-jobs`` (the finished jobs kept), no listener is left after any round, the
full listeners' events are in order, and once the TTL has passed no job and no folder is left.

    python benchmarks/jobs_load.py --out benchmarks/results/jobs_load_cpu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "fixtures" / "faces64_dev"
FINAL = ("done", "failed", "cancelled")


class Server:
    """``ddpg serve --port 0`` in a subprocess with its own temporary folder (its request folders)."""

    def __init__(self, args):
        self.tmp = Path(tempfile.mkdtemp(prefix="jobs-load-"))
        self.log = self.tmp / "server.log"
        cmd = [sys.executable, "-m", "ddpg", "serve", "--prior", args.prior, "--port", "0", "--max-batch",
               str(args.max_batch), "--max-queue", "256", "--job-ttl", str(args.job_ttl), "--max-jobs",
               str(args.max_jobs), "-q"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(self.tmp)}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.url = ""
        end = time.monotonic() + 600
        while time.monotonic() < end and self.proc.poll() is None:
            found = re.search(r"listening on (http://\S+)", self.log.read_text())
            if found and self._ready(found.group(1)):
                self.url = found.group(1)
                return
            time.sleep(0.2)
        raise RuntimeError(f"the server did not get ready: {self.log.read_text()[-2000:]}")

    @staticmethod
    def _ready(url: str) -> bool:
        try:
            return httpx.get(url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def gauges(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", timeout=30).text
        return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
                if not s.labels}

    def sample(self) -> dict:
        """The server's resident memory (MiB), open descriptors, request folders and job/listener gauges."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        gauges = self.gauges()
        return {"rss_mib": round(int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024, 1),
                "fds": len(os.listdir(f"/proc/{self.proc.pid}/fd")),
                "folders": len(list(self.tmp.glob("ddpg-serve-*/req-*"))),
                "jobs": gauges["ddpg_serve_jobs"], "listeners": gauges["ddpg_serve_event_listeners"],
                "queued": gauges["ddpg_serve_queue_depth"], "active": gauges["ddpg_serve_active_samples"]}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=120)


def check_events(events: list[tuple[str, dict]], steps: int) -> str | None:
    """What is wrong with a full listener's events (None: ``status`` first; step numbers above its step and
    rising, each with a preview, ending at the last step when the job was done after the status; one final
    event, last)."""
    names = [name for name, _ in events]
    if not names or names[0] != "status" or names[-1] not in FINAL or sum(n in FINAL for n in names) != 1:
        return f"events {names[:3]}...{names[-2:]}"
    first = events[0][1]["step"]
    numbers = [data["step"] for name, data in events if name == "step"]
    if numbers != sorted(set(numbers)) or any(n <= first for n in numbers):
        return f"step numbers {numbers} after status at step {first}"
    if names[-1] == "done" and first < steps and numbers[-1:] != [steps]:
        return f"done without the last step: {numbers} after status at step {first}"
    if any("preview" not in data for name, data in events if name == "step"):
        return "a step event without its preview"
    return None


async def stream(client: httpx.AsyncClient, url: str, job_id: str, kind: str, ended: asyncio.Event):
    """One listener of ``kind``: full (all events), status (gone after it), step (gone after the first step
    event) or stalled (reads nothing until the job ended). Returns a full listener's events."""
    events, name = [], None
    async with client.stream("GET", f"{url}/v1/jobs/{job_id}/events", params={"preview": "1"}) as response:
        if response.status_code != 200:
            return [("http", {"status": response.status_code})]
        if kind == "stalled":
            await ended.wait()
            return []
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
                if (kind == "status") or (kind == "step" and name == "step"):
                    return []
    return events


async def vanishing_restore(client: httpx.AsyncClient, url: str, image: bytes, steps: int, rng: random.Random):
    """A /v1/restore client that goes away after a random moment."""
    task = asyncio.ensure_future(client.post(url + "/v1/restore", files={"image": ("face.png", image)},
                                             data={"steps": str(steps)}))
    await asyncio.sleep(rng.uniform(0.0, 0.5))
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, httpx.HTTPError):
        pass


def half_upload(url: str) -> None:
    """A client that sends half its body and closes the connection."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     "Content-Length: 100000\r\n\r\n".encode() + b'{"image": "AAAA')


async def wait_ended(client: httpx.AsyncClient, url: str, job_id: str) -> str:
    while True:
        response = await client.get(f"{url}/v1/jobs/{job_id}")
        state = response.json().get("state") if response.status_code == 200 else "gone"
        if state in (*FINAL, "gone"):
            return state
        await asyncio.sleep(0.5)


async def follow(client, url: str, job_id: str, args, delete: bool, rng: random.Random) -> dict:
    """A job's listeners (and its deletion while it runs, when ``delete``) until it ended."""
    ended = asyncio.Event()
    kinds = [("full", "status", "step", "stalled")[i % 4] for i in range(args.listeners)]
    listeners = [asyncio.ensure_future(stream(client, url, job_id, kind, ended)) for kind in kinds]
    if delete:
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        await client.delete(f"{url}/v1/jobs/{job_id}")
    state = await wait_ended(client, url, job_id)
    ended.set()
    results = await asyncio.gather(*listeners)
    problems = [p for kind, events in zip(kinds, results, strict=True) if kind == "full"
                for p in [check_events(events, args.steps)] if p]
    return {"state": state, "problems": problems}


async def one_round(server: Server, images: list[bytes], args, rng: random.Random) -> dict:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        submitted = await asyncio.gather(*(client.post(server.url + "/v1/jobs", files={"image": ("f.png", im)},
                                                       data={"steps": str(args.steps), "seed": str(i)})
                                           for i, im in enumerate(rng.choices(images, k=args.jobs))))
        refused = [r.status_code for r in submitted if r.status_code != 202]
        ids = [r.json()["id"] for r in submitted if r.status_code == 202]
        vanishing = [vanishing_restore(client, server.url, rng.choice(images), args.steps, rng)
                     for _ in range(args.vanish)]
        uploads = [asyncio.to_thread(half_upload, server.url) for _ in range(args.vanish)]
        outcomes = await asyncio.gather(*(follow(client, server.url, job_id, args, i % args.delete_every == 0, rng)
                                          for i, job_id in enumerate(ids)), *vanishing, *uploads)
    followed = outcomes[:len(ids)]
    states = {state: sum(o["state"] == state for o in followed) for state in {o["state"] for o in followed}}
    return {"refused": refused, "states": states, "problems": [p for o in followed for p in o["problems"]]}


def settle(server: Server, baseline_fds: int | None, timeout_s: float = 60) -> dict:
    """The server's sample once no sample is queued or active, no listener is left and (after the baseline)
    its descriptors are back to the baseline, or ``timeout_s`` passed."""
    end = time.monotonic() + timeout_s
    while True:
        sample = server.sample()
        quiet = sample["listeners"] == 0 and sample["queued"] == 0 and sample["active"] == 0
        if (quiet and (baseline_fds is None or sample["fds"] <= baseline_fds)) or time.monotonic() > end:
            return sample
        time.sleep(0.2)


def run(args) -> dict:
    images = [f.read_bytes() for f in sorted(FACES.glob("*.png"))]
    rng = random.Random(args.seed)
    server = Server(args)
    rounds, baseline = [], None
    try:
        start = server.sample()
        for i in range(args.rounds):
            t0 = time.perf_counter()
            outcome = asyncio.run(one_round(server, images, args, rng))
            sample = settle(server, baseline["fds"] if baseline else None)
            rounds.append({"round": i + 1, "seconds": round(time.perf_counter() - t0, 2), **outcome, **sample})
            print(json.dumps(rounds[-1]), flush=True)
            if i + 1 == args.warmup:
                baseline = sample
        time.sleep(args.job_ttl + 2)
        expired = server.sample()
    finally:
        server.stop()
    return {"start": start, "rounds": rounds, "after_ttl": expired}


def verdicts(report: dict, args) -> list[dict]:
    rounds, after, warm = report["rounds"], report["after_ttl"], max(1, min(args.warmup, len(report["rounds"])))
    base, later = rounds[warm - 1], rounds[warm - 1:]
    growth = max(r["rss_mib"] for r in later) - base["rss_mib"]
    return [
        {"check": f"open descriptors do not grow (rounds {warm}..{len(rounds)}, after each round)",
         "value": f"{base['fds']} → max {max(r['fds'] for r in later)}",
         "ok": max(r["fds"] for r in later) <= base["fds"]},
        {"check": f"resident memory grows < {args.rss_bound_mib} MiB (rounds {warm}..{len(rounds)})",
         "value": f"{base['rss_mib']} → max {max(r['rss_mib'] for r in later)} MiB (+{growth:.1f})",
         "ok": growth < args.rss_bound_mib},
        {"check": f"request folders ≤ --max-jobs {args.max_jobs} after every round",
         "value": f"max {max(r['folders'] for r in rounds)}", "ok": max(r["folders"] for r in rounds) <= args.max_jobs},
        {"check": "no listener left after any round", "value": f"max {max(r['listeners'] for r in rounds)}",
         "ok": all(r["listeners"] == 0 for r in rounds)},
        {"check": "full listeners' events in order with one final event", "value":
         f"{sum(len(r['problems']) for r in rounds)} problems", "ok": not any(r["problems"] for r in rounds)},
        {"check": "after the TTL: no job, no folder", "value": f"{after['jobs']:.0f} jobs, {after['folders']} folders",
         "ok": after["jobs"] == 0 and after["folders"] == 0},
    ]


def markdown(report: dict) -> str:
    lines = [f"# Job API load test ({report['machine']})", "", f"`{report['command']}`", "",
             f"Load (1/5/15 min) at start: {report['load_at_start']}; MALLOC_ARENA_MAX "
             f"{report['malloc_arena_max'] or 'unset'}; prior {report['args']['prior']}, "
             f"{report['args']['steps']} steps, {report['args']['jobs']} jobs × {report['args']['listeners']} "
             f"listeners per round, {report['args']['vanish']} vanishing /v1/restore clients and "
             f"{report['args']['vanish']} half uploads per round, every {report['args']['delete_every']}th job "
             "deleted while it runs.", "",
             "| round | s | job states | RSS MiB | fds | folders | jobs kept | listeners |",
             "|---|---|---|---|---|---|---|---|"]
    start = report["start"]
    lines.append(f"| start | | | {start['rss_mib']} | {start['fds']} | {start['folders']} | {start['jobs']:.0f} | "
                 f"{start['listeners']:.0f} |")
    for r in report["rounds"]:
        states = ", ".join(f"{k} {v}" for k, v in sorted(r["states"].items()))
        lines.append(f"| {r['round']} | {r['seconds']} | {states} | {r['rss_mib']} | {r['fds']} | {r['folders']} | "
                     f"{r['jobs']:.0f} | {r['listeners']:.0f} |")
    after = report["after_ttl"]
    lines.append(f"| after TTL | | | {after['rss_mib']} | {after['fds']} | {after['folders']} | {after['jobs']:.0f} | "
                 f"{after['listeners']:.0f} |")
    lines += ["", "| check | value | ok |", "|---|---|---|"]
    lines += [f"| {v['check']} | {v['value']} | {'yes' if v['ok'] else '**no**'} |" for v in report["verdicts"]]
    return "\n".join(lines) + "\n"


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), else the machine's architecture."""
    try:
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    except OSError:
        found = None
    return found.group(1).strip() if found else platform.machine()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default="gaussian", help="gaussian: the bookkeeping under load, not the UNet")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=10, help="rounds before the baseline of the flatness checks")
    ap.add_argument("--jobs", type=int, default=16, help="jobs submitted at once per round")
    ap.add_argument("--listeners", type=int, default=4, help="event streams per job (full, status, step, stalled)")
    ap.add_argument("--vanish", type=int, default=4, help="vanishing /v1/restore clients and half uploads per round")
    ap.add_argument("--delete-every", type=int, default=5, help="delete every N-th job while it runs")
    ap.add_argument("--job-ttl", type=float, default=5.0)
    ap.add_argument("--max-jobs", type=int, default=24)
    ap.add_argument("--rss-bound-mib", type=float, default=16.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--machine", default=f"{cpu_model()}, {os.cpu_count()} cores")
    ap.add_argument("--out", default="benchmarks/results/jobs_load_cpu")
    args = ap.parse_args()
    report = {"command": shlex.join(["python", "benchmarks/jobs_load.py", *sys.argv[1:]]), "machine": args.machine,
              "load_at_start": [round(x, 2) for x in os.getloadavg()], "args": vars(args),
              "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")}
    report.update(run(args))
    report["verdicts"] = verdicts(report, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    sys.exit(0 if all(v["ok"] for v in report["verdicts"]) else 1)


if __name__ == "__main__":
    main()
