"""``ddpg serve`` in a subprocess for the tests that talk to a real server (test_serve_http, test_serve_jobs,
test_web_page, test_task_plugin): the process, its token, the longest wait, a request, and the ``ddpg restore`` twin
a served result must equal."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from ddpg.cli.main import app
from ddpg.io import save_image

SRC = Path(__file__).resolve().parents[1] / "src"
TOKEN = "s3cret-token"
STEPS = 6
WAIT_S = 120  # the most any wait for a server state may take before the test fails


class ServerProcess:
    """``ddpg serve --port 0`` in a subprocess: the OS picks the port at bind time and the server prints its
    URL, so no free-then-reuse race can hand the port to another process."""

    def __init__(self, tmp: Path, *extra: str, workroot: Path | None = None):
        cmd = [sys.executable, "-m", "ddpg", "serve", "--prior", "gaussian", "--port", "0", "--test-hooks", "-q",
               *extra]
        # closed in stop
        self.log = tempfile.NamedTemporaryFile("w", dir=tmp, prefix="server-", suffix=".log", delete=False)  # noqa: SIM115
        # the server's TMPDIR: its request folders
        self.workroot = workroot or Path(tempfile.mkdtemp(dir=tmp, prefix="work-"))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               "TMPDIR": str(self.workroot)}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.headers = {"Authorization": f"Bearer {TOKEN}"} if "--token-file" in extra else {}
        self.url = ""
        self.wait_until(self._listening)
        self.wait_until(lambda: httpx.get(self.url + "/readyz", headers=self.headers).status_code == 200)

    def _listening(self) -> bool:
        found = re.search(r"listening on (http://\S+)", Path(self.log.name).read_text())
        self.url = found.group(1) if found else ""
        return bool(found)

    def wait_until(self, condition) -> None:
        end = time.monotonic() + WAIT_S
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"the server exited: {Path(self.log.name).read_text()}"
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server state not reached in {WAIT_S} s")

    def metrics(self) -> dict:
        text = httpx.get(self.url + "/metrics", headers=self.headers).text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def queued(self) -> float:
        return self.metrics()[("ddpg_serve_queue_depth", ())]

    def pause(self, paused: bool) -> None:
        httpx.post(self.url + "/test/pause", params={"paused": "1" if paused else "0"}, headers=self.headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def write_images(folder: Path) -> Path:
    """Three random 32-px images (face0-2.png) and a 40-px one (big.png) in ``folder``, seeded."""
    gen = torch.Generator().manual_seed(1)
    for i in range(3):
        save_image(torch.rand(3, 32, 32, generator=gen), folder / f"face{i}.png")
    save_image(torch.rand(3, 40, 40, generator=gen), folder / "big.png")
    return folder


def counter(metrics: dict, outcome: str) -> float:
    return metrics[("ddpg_serve_requests_total", (("outcome", outcome),))]


def twin_png(image: Path, out: Path, *args: str) -> bytes:
    """The restored PNG of ``ddpg restore image`` with the same settings."""
    result = CliRunner().invoke(app, ["restore", str(image), "-o", str(out), "--prior", "gaussian", "-q", *args])
    assert result.exit_code == 0, result.output
    return (out / f"{image.stem}_restored.png").read_bytes()


async def post(server: ServerProcess, image: Path, **fields) -> httpx.Response:
    async with httpx.AsyncClient(timeout=WAIT_S, headers=server.headers) as client:
        if fields.pop("as_json", False):
            body = {"image": base64.b64encode(image.read_bytes()).decode(), "filename": image.name, **fields}
            return await client.post(server.url + "/v1/restore", json=body)
        data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
        return await client.post(server.url + "/v1/restore", data=data,
                                 files={"image": (image.name, image.read_bytes(), "image/png")})
