"""The job API of ``ddpg serve`` (docs/jobs.md) over HTTP against real server processes (Gaussian prior, 32-px
images, few steps): a job's lifecycle (queued with its position, running at step k of N, done; cancelled while
queued and while running), its Server-Sent Events (status, the step events in order with every K-th step and
the last, previews that decode as PNGs, one final event), its result equal to its ``/v1/restore`` and
``ddpg restore`` twins and its observation to the one ``ddpg restore`` writes (clean and observed uploads),
the same refusals, auth and metrics as ``/v1/restore``, finished jobs removed with their folders after
``--job-ttl`` and beyond ``--max-jobs``, a restarted server's 404, and the page served without the token.

No test waits on timing: the engine is held at a tick boundary, or after K more ticks, with the server's test
hook (``POST /test/pause?paused=1&after=K``)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image

from ddpg.io import save_image
from ddpg.serve import job_routes
from ddpg.serve.job_store import Listener
from serve_process import STEPS, TOKEN, WAIT_S, ServerProcess, counter, twin_png, write_images

LOST = "unknown, expired, or lost when the server restarted"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("jobs")
    (tmp / "token").write_text(TOKEN + "\n")
    proc = ServerProcess(tmp, "--max-batch", "2", "--max-queue", "3", "--max-pixels", str(32 * 32),
                         "--token-file", str(tmp / "token"))
    yield proc
    proc.stop()


def hold(server: ServerProcess, after: int | None = None) -> None:
    """Hold the engine at the next tick boundary, or once ``after`` more ticks have run."""
    params = {"paused": "1", **({"after": str(after)} if after else {})}
    httpx.post(server.url + "/test/pause", params=params, headers=server.headers)


def submit(server: ServerProcess, image, **fields) -> httpx.Response:
    data = {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields.items()}
    return httpx.post(server.url + "/v1/jobs", data=data, files={"image": (image.name, image.read_bytes())},
                      headers=server.headers, timeout=WAIT_S)


def status(server: ServerProcess, job_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/jobs/{job_id}", headers=server.headers, timeout=WAIT_S)


async def listen(server: ServerProcess, job_id: str, query: str = "") -> list[tuple[str, dict]]:
    """The (event, data) pairs of a job's event stream, read until the server closes it."""
    events, name = [], None
    async with httpx.AsyncClient(timeout=WAIT_S, headers=server.headers) as client, \
            client.stream("GET", f"{server.url}/v1/jobs/{job_id}/events{query}") as stream:
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


async def until(condition) -> None:
    for _ in range(int(WAIT_S / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("state not reached")


def listeners(server: ServerProcess) -> float:
    return server.metrics()[("ddpg_serve_event_listeners", ())]


def test_job_lifecycle_events_cancel_and_result_equal_twins(server, images, tmp_path):
    """Jobs A and B queue (positions 1 and 2) while the engine is held; two ticks later both run at step 2,
    and B is cancelled while running; C, queued behind the held engine, is cancelled while queued. A runs on:
    its listeners get status, the step events they asked for in order (every 2nd and the last, with previews
    that decode as PNGs of the image's size), and one final ``done``; its result equals ``/v1/restore`` and
    ``ddpg restore`` with the same settings. B's listener ends with ``cancelled``."""
    steps, image = STEPS - 1, images / "face0.png"  # 5 steps: every=2 gives 2, 4 and the last, 5
    fields = {"task": "sr4", "seed": 7, "steps": steps}

    async def scenario():
        hold(server)
        a, b = submit(server, image, **fields), submit(server, images / "face1.png", steps=steps)
        assert a.status_code == b.status_code == 202, (a.text, b.text)
        assert a.headers["location"] == a.json()["urls"]["self"] == f"/v1/jobs/{a.json()['id']}"
        ids = a.json()["id"], b.json()["id"]
        assert [(status(server, i).json()["state"], status(server, i).json()["position"]) for i in ids] == \
            [("queued", 1), ("queued", 2)]
        early = httpx.get(f"{server.url}/v1/jobs/{ids[0]}/observed", headers=server.headers)
        assert early.status_code == 409 and early.json()["state"] == "queued"
        streams = [asyncio.ensure_future(listen(server, ids[0], "?every=2&preview=1")),
                   asyncio.ensure_future(listen(server, ids[0])), asyncio.ensure_future(listen(server, ids[1]))]
        await until(lambda: listeners(server) == 3)
        hold(server, after=2)
        await until(lambda: status(server, ids[0]).json()["step"] == 2)
        running = status(server, ids[0]).json()
        cancelled = httpx.delete(f"{server.url}/v1/jobs/{ids[1]}", headers=server.headers).json()
        assert server.metrics()[("ddpg_serve_active_samples", ())] == 1  # its place in the batch is free
        c = submit(server, images / "face2.png", steps=steps).json()
        queued = status(server, c["id"]).json()
        gone = httpx.delete(f"{server.url}/v1/jobs/{c['id']}", headers=server.headers).json()
        await until(lambda: server.queued() == 0)
        server.pause(False)
        return ids, running, cancelled, queued, gone, await asyncio.gather(*streams)

    ids, running, cancelled, queued, gone, (previewed, every, of_b) = asyncio.run(scenario())
    assert (running["state"], running["step"], running["steps"], running["position"]) == ("running", 2, steps, None)
    assert running["settings"] == {"task": "sr4", "method": "ddpg", "prior": "gaussian", "sigma_y": 0.05,
                                   "steps": steps}
    assert cancelled["state"] == "cancelled" and cancelled["step"] == 2 and cancelled["error"]["status"] == 409
    assert (queued["state"], queued["position"], gone["state"], gone["step"]) == ("queued", 1, "cancelled", 0)
    assert [name for name, _ in previewed] == ["status", "step", "step", "step", "done"]
    assert [data["step"] for _, data in previewed[1:-1]] == [2, 4, 5]
    for _, data in previewed[1:-1]:
        preview = Image.open(io.BytesIO(base64.b64decode(data["preview"])))
        assert preview.format == "PNG" and preview.size == (32, 32)
    assert [name for name, _ in every] == ["status", *["step"] * steps, "done"]
    assert [data["step"] for _, data in every[1:-1]] == list(range(1, steps + 1))
    assert "preview" not in every[1][1] and every[-1][1]["state"] == "done" and every[-1][1]["step"] == steps
    assert [name for name, _ in of_b][0] == "status" and of_b[-1][0] == "cancelled"
    result = httpx.get(f"{server.url}/v1/jobs/{ids[0]}/result", headers=server.headers)
    assert result.status_code == 200 and result.headers["content-type"] == "image/png"
    assert result.headers["X-DDPG-Seed"] == "7" and float(result.headers["X-DDPG-Psnr"]) > 0
    as_json = httpx.get(f"{server.url}/v1/jobs/{ids[0]}/result?format=json", headers=server.headers).json()
    assert base64.b64decode(as_json["png"]) == result.content and as_json["sidecar"]["seed"] == 7
    data = {k: str(v) for k, v in fields.items()}
    restored = httpx.post(server.url + "/v1/restore", data=data, files={"image": ("face0.png", image.read_bytes())},
                          headers=server.headers, timeout=WAIT_S)
    assert restored.status_code == 200 and restored.content == result.content
    assert result.content == twin_png(image, tmp_path / "twin", "--task", "sr4", "--seed", "7", "--steps", str(steps))
    observed = httpx.get(f"{server.url}/v1/jobs/{ids[0]}/observed", headers=server.headers)
    assert observed.status_code == 200 and observed.headers["content-type"] == "image/png"
    assert observed.content == base64.b64decode(as_json["observed"]) == (tmp_path / "twin" / "face0_observed.png"
                                                                          ).read_bytes()
    assert Image.open(io.BytesIO(observed.content)).size == (8, 8)  # sr4 of a 32-px image
    for job_id in ids[1], queued["id"]:
        refused = httpx.get(f"{server.url}/v1/jobs/{job_id}/result", headers=server.headers)
        assert refused.status_code == 409 and refused.json()["state"] == "cancelled"
        none = httpx.get(f"{server.url}/v1/jobs/{job_id}/observed", headers=server.headers)
        assert none.status_code == 404 and none.json() == {
            "error": f"job {job_id} is cancelled: it has no observation (a failed or cancelled job keeps no files)",
            "state": "cancelled"}
    assert listeners(server) == 0


def folders(server: ServerProcess) -> set:
    return set(server.workroot.glob("ddpg-serve-*/req-*"))


def test_late_listener_gets_status_then_the_final_event_and_deleting_a_job_removes_its_folder(server, images):
    before = folders(server)
    job = submit(server, images / "face0.png", steps=2).json()
    first = asyncio.run(listen(server, job["id"]))  # joins before or while it runs: ends with done
    late = asyncio.run(listen(server, job["id"], "?every=1&preview=1"))
    assert first[-1][0] == "done" and [name for name, _ in late] == ["status", "done"]
    assert late[0][1]["state"] == "done" and late[0][1]["timings"]["total_s"] >= late[0][1]["timings"]["running_s"]
    for path, field in (("/events?every=0", "every"), ("/events?preview=yes", "preview"),
                        ("/result?format=tiff", "format")):
        refused = httpx.get(f"{server.url}/v1/jobs/{job['id']}{path}", headers=server.headers)
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    (folder,) = folders(server) - before
    assert any(folder.glob("*_restored.png"))
    deleted = httpx.delete(f"{server.url}/v1/jobs/{job['id']}", headers=server.headers)
    assert deleted.status_code == 200 and deleted.json()["state"] == "done" and not folder.exists()
    for path in ("", "/result", "/observed", "/events"):
        missing = httpx.get(f"{server.url}/v1/jobs/{job['id']}{path}", headers=server.headers)
        assert missing.status_code == 404 and missing.json()["error"] == f"no job {job['id']}: {LOST}"


def test_an_observed_uploads_observation_is_its_restore_twins(server, tmp_path):
    """A measurement uploaded with ``observed=true``: the job's observation is the one ``ddpg restore --observed``
    writes for it (the upload as the restorer read it), byte for byte, in the JSON result and alone."""
    measurement = tmp_path / "low.png"
    save_image(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4)), measurement)
    job = submit(server, measurement, task="sr4", observed="true", steps=2, seed=5).json()
    assert asyncio.run(listen(server, job["id"]))[-1][0] == "done"
    as_json = httpx.get(f"{server.url}/v1/jobs/{job['id']}/result?format=json", headers=server.headers).json()
    alone = httpx.get(f"{server.url}{job['urls']['observed']}", headers=server.headers)
    twin_png(measurement, tmp_path / "twin", "--task", "sr4", "--observed", "--steps", "2", "--seed", "5")
    assert alone.content == base64.b64decode(as_json["observed"]) == (tmp_path / "twin" / "low_observed.png"
                                                                       ).read_bytes()
    assert as_json["sidecar"]["settings"]["observed"] is True


def test_full_queue_refuses_a_job_and_defaults_are_what_a_job_resolves_to(server, images):
    """Three jobs fill the queue of the held engine (the third naming only task and method: it resolves to
    what ``/v1/models`` lists as their defaults); a fourth is 429 with ``Retry-After``; deleting the three
    empties the queue and their folders."""
    (model,) = httpx.get(server.url + "/v1/models", headers=server.headers).json()["models"]
    before = folders(server)
    hold(server)
    try:
        jobs = [submit(server, images / "face0.png", steps=2).json() for _ in range(2)]
        jobs.append(submit(server, images / "face1.png", task="deblur_gauss", method="idpg").json())
        refused = submit(server, images / "face2.png", steps=2)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        settings = status(server, jobs[2]["id"]).json()["settings"]
        assert model["defaults"]["idpg"]["deblur_gauss"]["sigma_y"] == settings["sigma_y"]
        assert model["defaults"]["idpg"]["deblur_gauss"]["steps"] == settings["steps"]
        assert [job["position"] for job in jobs] == [1, 2, 3]
        for job in jobs:
            assert httpx.delete(f"{server.url}/v1/jobs/{job['id']}", headers=server.headers).status_code == 200
        assert server.queued() == 0 and folders(server) == before
    finally:
        server.pause(False)


@pytest.mark.parametrize("fields, field", [({"sigma_y": -1}, "sigma_y"), ({"method": "dps"}, "method"),
                                            ({"colour": "red"}, "colour")])
def test_refused_jobs_have_restores_status_and_body(server, images, fields, field):
    before = counter(server.metrics(), "invalid")
    job = submit(server, images / "face0.png", steps=STEPS, **fields)
    restore = httpx.post(server.url + "/v1/restore", data={"steps": str(STEPS), **{k: str(v) for k, v in
                                                                                    fields.items()}},
                         files={"image": ("face0.png", (images / "face0.png").read_bytes())}, headers=server.headers)
    assert job.status_code == restore.status_code == 422 and job.json() == restore.json()
    assert job.json()["field"] == field and counter(server.metrics(), "invalid") == before + 2


def test_job_routes_need_the_token_and_the_page_does_not(server, images):
    before = counter(server.metrics(), "unauthorized")
    for method, path in (("POST", "/v1/jobs"), ("GET", "/v1/jobs/x"), ("GET", "/v1/jobs/x/events"),
                         ("GET", "/v1/jobs/x/result"), ("GET", "/v1/jobs/x/observed"), ("DELETE", "/v1/jobs/x")):
        assert httpx.request(method, server.url + path).status_code == 401, path
    assert counter(server.metrics(), "unauthorized") == before + 1  # the refused submission
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    for name in ("..%2Fapp.py", "%2e%2e%2fapp.py", "..%5Capp.py", "index.htm", "app.py", "__init__.py"):
        assert httpx.get(f"{server.url}/static/{name}").status_code == 404, name
    (model,) = httpx.get(server.url + "/v1/models", headers=server.headers).json()["models"]
    assert model["token_required"] is True and TOKEN not in json.dumps(model)
    assert set(model["method_tasks"]) == set(model["methods"]) and model["limits"]["max_pixels"] == 32 * 32


def test_finished_jobs_are_bounded_expire_and_a_restarted_server_says_it_lost_them(images, tmp_path):
    """``--max-jobs 1``: a second finished job removes the first with its folder. A job of a killed server is
    a 404 saying so on the next one, which (``--job-ttl 1``) removes a finished job once its time is over."""
    server = ServerProcess(tmp_path, "--max-jobs", "1")
    try:
        ids, kept = [], []
        for i in range(2):
            before = folders(server)
            ids.append(submit(server, images / f"face{i}.png", steps=2).json()["id"])
            kept += folders(server) - before  # its folder, made before it was queued
            assert asyncio.run(listen(server, ids[-1]))[-1][0] == "done"
        assert status(server, ids[0]).status_code == 404 and not kept[0].exists()
        assert status(server, ids[1]).json()["state"] == "done" and kept[1].exists()
        assert server.metrics()[("ddpg_serve_jobs", ())] == 1 and counter(server.metrics(), "ok") == 2
    finally:
        server.stop()
    restarted = ServerProcess(tmp_path, "--job-ttl", "1", workroot=server.workroot)
    try:
        missing = status(restarted, ids[1])
        assert missing.status_code == 404 and missing.json()["error"] == f"no job {ids[1]}: {LOST}"
        assert not kept[1].exists()  # the killed server's folder went at start-up
        job_id = submit(restarted, images / "face2.png", steps=2).json()["id"]
        assert asyncio.run(listen(restarted, job_id))[-1][0] == "done"
        restarted.wait_until(lambda: status(restarted, job_id).status_code == 404)
        assert folders(restarted) == set() and restarted.metrics()[("ddpg_serve_jobs", ())] == 0
    finally:
        restarted.stop()


def test_an_idle_event_stream_sends_keep_alive_comments_then_the_events(monkeypatch):
    """The stream's generator, driven in-process with the keep-alive period cut to 10 ms: while nothing
    happens it sends comment lines; then the step events after the status's step and the final event."""
    class Jobs:
        def __init__(self):
            self.left = []

        def status(self, job) -> dict:
            return {"state": "running", "step": 1}

        def unlisten(self, job, listener) -> None:
            self.left.append(listener)

    monkeypatch.setattr(job_routes, "KEEPALIVE_S", 0.01)

    async def scenario() -> list[str]:
        jobs, listener = Jobs(), Listener(every=1, preview=False)
        stream = job_routes.events(jobs, None, listener)
        chunks = [await anext(stream), await anext(stream), await anext(stream)]
        for step in (1, 2):
            listener.push({"step": step, "steps": 2})
        listener.end("done", {"state": "done"})
        chunks += [chunk async for chunk in stream]
        assert jobs.left == [listener]
        return chunks

    chunks = asyncio.run(scenario())
    assert chunks[0].startswith("event: status\n") and chunks[1:3] == [": keep-alive\n\n"] * 2
    assert chunks[3:] == ['event: step\ndata: {"step": 2, "steps": 2}\n\n', 'event: done\ndata: {"state": "done"}\n\n']
