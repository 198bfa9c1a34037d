"""``ddpg serve`` as a real uvicorn server in a subprocess (Gaussian prior, 32-px images, few steps), talked to
with httpx: shared-batch restorations equal their ``ddpg restore`` twins byte for byte; 401/413/422/429, a
deadline, a client that disconnects, the SIGTERM drain; ``/metrics`` parses and its counters match.

No test waits on timing: the engine is held at a tick boundary with the server's test hook
(``--test-hooks``: ``POST /test/pause``) and each test waits for the queue state it needs in ``/metrics``."""

from __future__ import annotations

import asyncio
import base64
import fcntl
import json
import os
import re
import signal
import socket
import stat
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from ddpg.cli.main import app
from ddpg.io import save_image
from ddpg.runtime.samplers import FORWARD_METHODS
from ddpg.serve.batch_size import choose_batch
from ddpg.serve.server import OWNER_LOCK
from hostile_files import MB, huge_palette_png, huge_tiff, png_file, text_bomb, zlib_zeros
from serve_process import STEPS, TOKEN, WAIT_S, ServerProcess, counter, post, twin_png, write_images


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "token").write_text(TOKEN + "\n")
    proc = ServerProcess(tmp, "--max-batch", "4", "--max-queue", "3", "--max-pixels", str(32 * 32),
                         "--token-file", str(tmp / "token"))
    yield proc
    proc.stop()


def test_shared_batch_restorations_equal_their_restore_twins_and_full_queue_is_429(server, images, tmp_path):
    """Three requests (different seeds, tasks, methods, σ_y, one as JSON) queue while the engine is held, so
    they start together and share every tick; a fourth finds the queue full. A fifth arrives while the three
    run. Each equals ``ddpg restore`` with its settings."""
    jobs = [({"task": "sr4", "seed": 3, "steps": STEPS}, ["--task", "sr4", "--seed", "3", "--steps", str(STEPS)]),
            ({"task": "deblur_gauss", "seed": 8, "steps": STEPS + 2, "sigma_y": 0.1, "method": "idpg"},
             ["--task", "deblur_gauss", "--seed", "8", "--steps", str(STEPS + 2), "--sigma-y", "0.1",
              "--method", "idpg"]),
            ({"task": "inpaint", "seed": 5, "steps": STEPS, "mask": "random:0.5", "as_json": True,
              "response": "json"},
             ["--task", "inpaint", "--seed", "5", "--steps", str(STEPS), "--mask", "random:0.5"])]
    late = ({"task": "sr4", "seed": 11, "steps": STEPS, "hyper": {"zeta": 0.3}},
            ["--task", "sr4", "--seed", "11", "--steps", str(STEPS), "--hyper", "zeta=0.3"])
    files = [images / f"face{i}.png" for i in range(3)]

    async def scenario():
        server.pause(True)
        held = [asyncio.ensure_future(post(server, f, **dict(fields)))
                for f, (fields, _) in zip(files, jobs, strict=True)]
        while server.queued() < 3:
            await asyncio.sleep(0.05)
        refused = await post(server, files[0], task="sr4", steps=STEPS)
        server.pause(False)
        later = asyncio.ensure_future(post(server, files[1], **late[0]))
        return refused, await asyncio.gather(*held), await later

    before = server.metrics()
    refused, responses, later = asyncio.run(scenario())
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    for i, (response, (fields, args)) in enumerate(zip(responses, jobs, strict=True)):
        assert response.status_code == 200, response.text
        if fields.get("response") == "json":
            payload = response.json()
            png = base64.b64decode(payload["png"])
            assert payload["sidecar"]["seed"] == fields["seed"] and "psnr" in payload["sidecar"]["metrics"]
            assert payload["sidecar"]["timings_s"]["mean_batch"] > 1  # it shared its ticks
        else:
            png = response.content
            assert response.headers["content-type"] == "image/png"
            assert float(response.headers["X-DDPG-Psnr"]) > 0
        seconds = {k: float(response.headers[f"X-DDPG-{k}-S"]) for k in ("Prepare", "Queue", "Total")}
        assert min(seconds.values()) >= 0 and seconds["Prepare"] + seconds["Queue"] <= seconds["Total"]
        assert png == twin_png(files[i], tmp_path / f"twin{i}", *args)
    assert later.status_code == 200 and later.content == twin_png(files[1], tmp_path / "late", *late[1])
    after = server.metrics()
    assert counter(after, "ok") - counter(before, "ok") == 4
    assert counter(after, "queue_full") - counter(before, "queue_full") == 1
    assert after[("ddpg_serve_images_restored_total", ())] - before[("ddpg_serve_images_restored_total", ())] == 4
    assert after[("ddpg_serve_request_seconds_count", ())] - before[("ddpg_serve_request_seconds_count", ())] == 4


def test_observed_measurement_and_uploaded_mask_equal_their_twins(server, images, tmp_path):
    """A measurement restored as it is (``observed``), and inpainting with a mask file sent beside the image."""
    low = tmp_path / "low.png"
    save_image(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2)), low)
    mask = tmp_path / "mask.png"
    keep = torch.zeros(3, 32, 32)
    keep[:, ::2] = 1
    save_image(keep, mask)
    image = images / "face2.png"

    async def both():
        async with httpx.AsyncClient(timeout=WAIT_S, headers=server.headers) as client:
            observed = client.post(server.url + "/v1/restore", files={"image": ("low.png", low.read_bytes())},
                                   data={"task": "sr4", "observed": "true", "steps": str(STEPS), "seed": "4"})
            masked = client.post(server.url + "/v1/restore", data={"task": "inpaint", "steps": str(STEPS)},
                                 files={"image": ("face2.png", image.read_bytes()),
                                        "mask": ("mask.png", mask.read_bytes())})
            return await asyncio.gather(observed, masked)

    observed, masked = asyncio.run(both())
    assert observed.status_code == 200 and masked.status_code == 200, (observed.text, masked.text)
    assert observed.content == twin_png(low, tmp_path / "obs", "--task", "sr4", "--observed", "--steps", str(STEPS),
                                        "--seed", "4")
    assert masked.content == twin_png(image, tmp_path / "mask", "--task", "inpaint", "--mask", str(mask),
                                      "--steps", str(STEPS))


def test_served_operator_equals_its_restore_twin(server, images, tmp_path):
    """``operator`` builds the task's operator as ``ddpg restore --operator`` does."""
    image = images / "face1.png"
    fields = {"task": "deblur_gauss", "steps": STEPS, "seed": 2}
    wide = asyncio.run(post(server, image, operator={"sigma": 2.0}, **fields))
    plain = asyncio.run(post(server, image, **fields))
    assert wide.status_code == plain.status_code == 200, (wide.text, plain.text)
    assert wide.content != plain.content
    assert wide.content == twin_png(image, tmp_path / "twin", "--task", "deblur_gauss", "--steps", str(STEPS),
                                    "--seed", "2", "--operator", "sigma=2.0")


@pytest.mark.parametrize("fields, field", [({"sigma_y": -1}, "sigma_y"), ({"method": "dps"}, "method"),
                                            ({"task": "sr8"}, "task"), ({"steps": "many"}, "steps"),
                                            ({"hyper": {"zeta": 2}}, "hyper"), ({"colour": "red"}, "colour"),
                                            ({"seed": -3}, "seed"), ({"operator": {"scale": 0}}, "operator"),
                                            ({"operator": {"kernel": "/etc/hostname"}}, "operator"),
                                            ({"operator": {"sigma": [3]}}, "operator")])
def test_bad_settings_are_422_naming_the_field(server, images, fields, field):
    before = counter(server.metrics(), "invalid")
    response = asyncio.run(post(server, images / "face0.png", **{"steps": STEPS, **fields}))
    assert response.status_code == 422 and response.json()["field"] == field, response.text
    assert counter(server.metrics(), "invalid") == before + 1


def test_diverging_restoration_is_422_naming_hyper_with_restores_message(server, images, tmp_path):
    """A restoration that comes out NaN or infinite is not served (it was a black PNG with 200): 422 naming
    ``hyper``, with the message ``ddpg restore`` gives for the same settings (which writes nothing)."""
    image = images / "face0.png"
    response = asyncio.run(post(server, image, steps=STEPS, hyper={"scale_ls": 1e30}))
    assert response.status_code == 422 and response.json()["field"] == "hyper", response.text[:300]
    result = CliRunner().invoke(app, ["restore", str(image), "-o", str(tmp_path), "--prior", "gaussian", "-q",
                                      "--steps", str(STEPS), "--hyper", "scale_ls=1e30"])
    assert result.exit_code == 1 and not list(tmp_path.iterdir())
    assert "".join(response.json()["error"].split()) in "".join(result.output.split())  # however it wraps


def test_too_many_pixels_is_413_and_unreadable_image_is_422(server, images, tmp_path):
    before = server.metrics()
    assert asyncio.run(post(server, images / "big.png", steps=STEPS)).status_code == 413
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png")
    response = asyncio.run(post(server, junk, steps=STEPS))
    assert response.status_code == 422 and response.json()["field"] == "image"
    after = server.metrics()
    assert counter(after, "too_large") == counter(before, "too_large") + 1
    assert counter(after, "invalid") == counter(before, "invalid") + 1


BOMBS = {  # name: (file name, bytes, the uploads it is sent as)
    "palette PNG of 400 M pixels": lambda: ("bomb.png", huge_palette_png(), ("image", "mask", "kernel")),
    "TIFF of 400 M pixels": lambda: ("bomb.tif", huge_tiff(), ("image", "mask", "kernel")),
    "zTXt text inflating to 64 MiB": lambda: ("bomb.png", text_bomb(b"zTXt"), ("image", "mask", "kernel")),
    "iCCP profile inflating to 64 MiB": lambda: ("bomb.png", text_bomb(b"iCCP"), ("image", "mask", "kernel")),
    # the image's 16-bit decoder inflates all the data (Pillow, reading masks and kernels, stops when full)
    "16-bit PNG of 16×16 inflating to 64 MiB": lambda: ("bomb.png", png_file(16, 16, 16, 2, zlib_zeros(64 * MB)),
                                                        ("image",)),
}


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_413_naming_the_upload(server, images, name):
    """Files Pillow itself refuses, or that inflate past what their header needs, were a 500 with a traceback:
    sent as the image, the mask or the kernel they are 413 naming that upload and the client's file name."""
    filename, data, fields = BOMBS[name]()
    face = ("face0.png", (images / "face0.png").read_bytes())
    requests = {"image": ({}, {"image": (filename, data)}),
                "mask": ({"task": "inpaint"}, {"image": face, "mask": (filename, data)}),
                "kernel": ({"task": "deblur_gauss"}, {"image": face, "kernel": (filename, data)})}
    for field in fields:
        settings, files = requests[field]
        response = httpx.post(server.url + "/v1/restore", data={"steps": str(STEPS), **settings}, files=files,
                              headers=server.headers, timeout=WAIT_S)
        assert response.status_code == 413 and response.json()["field"] == field, (field, response.text[:300])
        assert filename in response.json()["error"] and "ddpg-serve-" not in response.json()["error"]


def test_every_route_but_healthz_needs_the_token(server, images):
    before = counter(server.metrics(), "unauthorized")
    assert httpx.get(server.url + "/healthz").status_code == 200
    for path in ("/readyz", "/metrics", "/v1/models"):
        assert httpx.get(server.url + path).status_code == 401
    wrong = httpx.post(server.url + "/v1/restore", headers={"Authorization": "Bearer nope"},
                       files={"image": ("a.png", (images / "face0.png").read_bytes())})
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
    assert counter(server.metrics(), "unauthorized") == before + 1
    for scheme in ("bearer", "BEARER"):  # auth schemes are case-insensitive (RFC 7235)
        assert httpx.get(server.url + "/v1/models", headers={"Authorization": f"{scheme} {TOKEN}"}).status_code == 200
    models = httpx.get(server.url + "/v1/models", headers=server.headers).json()["models"][0]
    assert models["prior"] == "gaussian" and models["methods"] == list(FORWARD_METHODS)


def test_disconnected_client_frees_its_place_and_overdue_request_is_504(server, images):
    async def scenario():
        server.pause(True)
        gone = asyncio.ensure_future(post(server, images / "face0.png", steps=STEPS))
        while server.queued() < 1:
            await asyncio.sleep(0.05)
        gone.cancel()  # the client closes its connection
        while counter(server.metrics(), "disconnected") < before + 1:
            await asyncio.sleep(0.05)
        assert server.queued() == 0
        overdue = asyncio.ensure_future(post(server, images / "face1.png", steps=STEPS, deadline_s=0.05))
        while server.queued() < 1:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # the deadline (counted from the server's receipt, before queueing) is over
        server.pause(False)
        return await overdue

    before, overdue_before = counter(server.metrics(), "disconnected"), counter(server.metrics(), "deadline")
    overdue = asyncio.run(scenario())
    assert overdue.status_code == 504 and "deadline" in overdue.json()["error"]
    assert counter(server.metrics(), "deadline") == overdue_before + 1


def resident_kib(pid: int, key: str = "VmRSS") -> int:
    """The process's resident set (VmRSS), or its peak (VmHWM), in KiB, from /proc."""
    return int(re.search(rf"{key}:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_sustained_overload_leaves_memory_descriptors_and_folders_flat(images, tmp_path):
    """Eight rounds of overload: three requests queue (the engine held at a tick boundary), then 40 uploads of
    a 256×256 image (~190 KiB each) arrive, ten at a time, and must all be refused. After each round no request
    folder is left; from the second round to the last the server's open descriptors do not grow and its
    resident memory grows by less than 16 MiB (measured: −1 to +4 MiB; keeping each refused upload adds
    6 × 40 × 190 KiB ≈ 45 MiB, and a server patched to do so failed here at +51 MiB)."""
    server = ServerProcess(tmp_path, "--max-batch", "4", "--max-queue", "3")
    files = [images / f"face{i}.png" for i in range(3)]
    big = tmp_path / "upload.png"
    save_image(torch.rand(3, 256, 256, generator=torch.Generator().manual_seed(2)), big)

    async def round_of_overload():
        server.pause(True)
        held = [asyncio.ensure_future(post(server, f, steps=STEPS, seed=i)) for i, f in enumerate(files)]
        while server.queued() < 3:
            await asyncio.sleep(0.05)
        refused = []
        for _ in range(4):  # ten at a time: the peak of uploads in memory together stays small beside a leak
            refused += await asyncio.gather(*(post(server, big, steps=STEPS, seed=i) for i in range(10)))
        server.pause(False)
        return refused, await asyncio.gather(*held)

    def overload() -> None:
        refused, held = asyncio.run(round_of_overload())
        assert {x.status_code for x in refused} == {429} and [x.status_code for x in held] == [200] * 3
        assert [p.name for p in server.workroot.glob("*/req-*")] == []

    def descriptors() -> int:
        return len(os.listdir(f"/proc/{server.proc.pid}/fd"))

    try:
        overload()
        overload()  # the state after the second round is the baseline: the first warms allocator and caches
        fds, rss = descriptors(), resident_kib(server.proc.pid)
        for _ in range(6):
            overload()
            server.wait_until(lambda: descriptors() <= fds)  # sockets the clients closed are closed here too
        growth = resident_kib(server.proc.pid) - rss
        assert growth < 16 * 1024, f"resident memory grew by {growth} KiB over six rounds of overload"
        metrics = server.metrics()
        assert counter(metrics, "queue_full") == 8 * 40 and counter(metrics, "ok") == 8 * 3
        assert server.queued() == 0
    finally:
        server.stop()


def test_sigterm_drains_requests_in_flight_refuses_new_ones_and_exits(images, tmp_path):
    server = ServerProcess(tmp_path, "--max-batch", "2", "--drain-timeout", str(WAIT_S))
    try:
        async def scenario():
            server.pause(True)
            held = [asyncio.ensure_future(post(server, images / f"face{i}.png", steps=STEPS, seed=i))
                    for i in range(2)]
            while server.queued() < 2:
                await asyncio.sleep(0.05)
            server.proc.send_signal(signal.SIGTERM)
            while httpx.get(server.url + "/readyz").status_code != 503:
                await asyncio.sleep(0.05)
            refused = await post(server, images / "face2.png", steps=STEPS)
            server.pause(False)
            return refused, await asyncio.gather(*held)

        refused, held = asyncio.run(scenario())
        assert refused.status_code == 503
        assert [r.status_code for r in held] == [200, 200]
        assert server.proc.wait(timeout=WAIT_S) == 0
        log = " ".join(Path(server.log.name).read_text().split())
        assert "SIGTERM: draining 2 queued and 0 active requests" in log and "drained in" in log
    finally:
        server.stop()


def test_max_batch_auto_reports_its_profile_and_choice_and_restores(images, tmp_path):
    """With ``--max-batch auto`` the server times the denoiser at start-up, takes the batch its rule picks from
    that profile (whatever this machine's speed), reports both, and restores as ``ddpg restore`` does."""
    server = ServerProcess(tmp_path, "--max-batch", "auto")
    try:
        (model,) = httpx.get(server.url + "/v1/models").json()["models"]
        seconds = {int(b): s for b, s in model["batch_seconds"].items()}
        assert model["max_batch_auto"] is True and 1 in seconds and all(s > 0 for s in seconds.values())
        assert model["max_batch"] == choose_batch(seconds)
        assert server.metrics()[("ddpg_serve_max_batch", ())] == model["max_batch"]
        response = asyncio.run(post(server, images / "face0.png", task="sr4", seed=4, steps=STEPS))
        assert response.status_code == 200, response.text
        assert response.content == twin_png(images / "face0.png", tmp_path / "twin", "--task", "sr4", "--seed", "4",
                                            "--steps", str(STEPS))
    finally:
        server.stop()


@pytest.mark.parametrize("args, message", [(["--token-file", "/nonexistent/token"], "--token-file"),
                                           (["--policy", "eager"], "--policy"),
                                           (["--max-batch", "8", "--engine-batch", "4"], "--engine-batch"),
                                           (["--max-batch", "lots"], "--max-batch"), (["--job-ttl", "0"], "--job-ttl"),
                                           (["--max-jobs", "0"], "--max-jobs")])
def test_bad_server_options_exit_2_naming_the_flag(args, message):
    result = CliRunner().invoke(app, ["serve", "--prior", "gaussian", *args])
    assert result.exit_code == 2 and message in result.output


def test_mask_field_never_names_a_server_path(server, images, tmp_path):
    """A mask file on the server's disk, one that does not exist and a malformed random mask are all refused
    with one message (so a client cannot learn which paths exist), naming the ``mask`` upload instead."""
    on_disk = tmp_path / "mask.png"
    save_image(torch.ones(3, 32, 32), on_disk)
    specs = [(str(on_disk), False), (str(tmp_path / "absent.png"), False), ("random:lots", False),
             (str(on_disk), True)]
    answers = [asyncio.run(post(server, images / "face0.png", task="inpaint", steps=STEPS, mask=spec, as_json=js))
               for spec, js in specs]
    for response in answers:
        assert response.status_code == 422 and response.json()["field"] == "mask", response.text
        assert "`mask` file" in response.json()["error"] and "mask_png" in response.json()["error"]
    assert len({response.json()["error"] for response in answers}) == 1


def multipart_body(filename: str, data: bytes, **fields: str) -> tuple[bytes, dict]:
    """A multipart body written byte by byte (httpx escapes control characters in file names)."""
    boundary = "ddpgtestboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 'Content-Type: image/png\r\n\r\n'.encode() + data + f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), {"content-type": f"multipart/form-data; boundary={boundary}"}


def json_body(image: Path, extra: str) -> tuple[bytes, dict]:
    """A JSON body with ``extra`` members written as raw JSON text (numbers and nesting JSON allows but
    Python's parser refuses)."""
    encoded = base64.b64encode(image.read_bytes()).decode()
    body = {"image": encoded, "steps": STEPS}
    return f"{json.dumps(body)[:-1]}, {extra}}}".encode(), {"content-type": "application/json"}


DEEP = "[" * 100_000 + "]" * 100_000
HOSTILE_REQUESTS = {  # name: (body builder, the field the 422 names)
    "json integer of 5000 digits": (lambda im: json_body(im, '"seed": ' + "9" * 5000), "body"),
    "json hyper nested 100000 deep": (lambda im: json_body(im, f'"hyper": {{"zeta": {DEEP}}}'), "body"),
    "json hyper holding a list": (lambda im: json_body(im, '"hyper": {"zeta": [[[0.3]]]}'), "hyper"),
    "json hyper of a 4000-digit integer": (lambda im: json_body(im, '"hyper": {"n_max": ' + "9" * 4000 + "}"),
                                           "hyper"),
    "json steps of 4000 digits": (lambda im: json_body(im, '"steps": ' + "9" * 4000), "steps"),
    "json file name with NUL": (lambda im: json_body(im, '"filename": "face.p\\u0000ng"'), "image"),
    "json file name of 300 characters": (lambda im: json_body(im, f'"filename": "face.{"x" * 300}"'), "image"),
    "multipart hyper nested 100000 deep": (lambda im: multipart_body("f.png", im.read_bytes(), hyper=DEEP),
                                           "hyper"),
    "multipart hyper of a 5000-digit integer": (
        lambda im: multipart_body("f.png", im.read_bytes(), hyper='{"zeta": ' + "9" * 5000 + "}"), "hyper"),
    "multipart seed of 5000 digits": (lambda im: multipart_body("f.png", im.read_bytes(), seed="9" * 5000), "seed"),
    "multipart file name with NUL": (lambda im: multipart_body("face.p\x00ng", im.read_bytes()), "image"),
    "multipart file name of 300 characters": (lambda im: multipart_body("face." + "x" * 300, im.read_bytes()),
                                              "image"),
}


def test_json_without_a_file_name_restores(server, images):
    """An empty ``filename`` is the default ``image.png``."""
    response = asyncio.run(post(server, images / "face0.png", steps=2, as_json=True, filename=""))
    assert response.status_code == 200 and response.content.startswith(b"\x89PNG"), response.text[:300]


@pytest.mark.parametrize("name", HOSTILE_REQUESTS)
def test_malformed_requests_are_422_naming_the_field(server, images, name):
    build, field = HOSTILE_REQUESTS[name]
    content, headers = build(images / "face0.png")
    response = httpx.post(server.url + "/v1/restore", content=content, headers={**server.headers, **headers},
                          timeout=WAIT_S)
    assert response.status_code == 422 and response.json()["field"] == field, response.text[:500]
    assert len(response.json()["error"]) < 300  # the message does not quote the hostile value whole


def open_file_bytes(pid: int) -> int:
    """Bytes in the regular files a process holds open, deleted ones too (an anonymous spool file)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            info = fd.stat()
        except OSError:  # closed meanwhile
            continue
        total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def chunks(head: bytes, mib: int, watch=lambda: None):
    """``head``, then ``mib`` MiB of filler, sent chunked (no Content-Length); ``watch()`` after every 4 MiB."""
    yield head
    for i in range(mib):
        yield b"0" * (1 << 20)
        if i % 4 == 3:
            watch()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the server's memory from /proc")
def test_chunked_bodies_over_the_limit_are_413_and_memory_stays_bounded(tmp_path):
    """A 256 MiB JSON body and a 256 MiB multipart upload, both chunked (no Content-Length to check first),
    are refused with 413 once 32 MiB (the default limit) have come; meanwhile the files the server holds open
    never grow by 32 MiB (it spooled the upload whole to a temporary file) and its peak resident memory grows by
    less than 128 MiB (reading the JSON body whole grew it by 523 MiB; measured now: +31 MiB)."""
    server = ServerProcess(tmp_path)
    boundary = "ddpgtestboundary"
    bodies = [(b'{"image": "', "application/json"),
              (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'.encode(),
               f"multipart/form-data; boundary={boundary}")]
    on_disk = [open_file_bytes(server.proc.pid)]
    try:
        peak = resident_kib(server.proc.pid, "VmHWM")
        for head, kind in bodies:
            content = chunks(head, 256, lambda: on_disk.append(open_file_bytes(server.proc.pid)))
            response = httpx.post(server.url + "/v1/restore", content=content, headers={"content-type": kind},
                                  timeout=WAIT_S)
            assert response.status_code == 413 and "limit" in response.json()["error"], response.text[:300]
        growth = resident_kib(server.proc.pid, "VmHWM") - peak
        assert growth < 128 * 1024, f"peak resident memory grew by {growth} KiB"
        assert max(on_disk) - on_disk[0] < 32 << 20, f"open files grew by {max(on_disk) - on_disk[0]} bytes"
        assert [p.name for p in server.workroot.glob("*/req-*")] == []
        assert counter(server.metrics(), "too_large") == 2
    finally:
        server.stop()


def test_client_gone_mid_upload_is_one_log_line_and_no_traceback(server):
    """A client that sends half its body and closes the connection: counted as disconnected, one log line."""
    before = counter(server.metrics(), "disconnected")
    logged = len(Path(server.log.name).read_text())
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"POST /v1/restore HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode() + b'{"image": "AAAA')
    server.wait_until(lambda: counter(server.metrics(), "disconnected") == before + 1 or
                      "Traceback" in Path(server.log.name).read_text()[logged:])
    log = Path(server.log.name).read_text()[logged:]
    assert "Traceback" not in log and log.count("disconnected") == 1, log
    assert counter(server.metrics(), "disconnected") == before + 1


def test_start_up_removes_the_folder_of_a_killed_server_and_nothing_else(images, tmp_path):
    """A server killed (SIGKILL) with an upload queued leaves its folder and the upload behind; the next server
    on the same temporary folder removes that folder at start-up, and nothing else: not a live server's (its
    lock held, here by the test) nor a folder of that name without a lock (not a server's)."""
    killed = ServerProcess(tmp_path)

    async def kill_with_an_upload_queued():
        killed.pause(True)
        upload = asyncio.ensure_future(post(killed, images / "face0.png", steps=STEPS))
        while killed.queued() < 1:
            await asyncio.sleep(0.05)
        killed.stop()
        with pytest.raises(httpx.TransportError):
            await upload

    asyncio.run(kill_with_an_upload_queued())
    (left,) = killed.workroot.glob("ddpg-serve-*/req-*/image.png")
    live, foreign = killed.workroot / "ddpg-serve-live", killed.workroot / "ddpg-serve-notes"
    live.mkdir()
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a server's")
    with open(live / OWNER_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        restarted = ServerProcess(tmp_path, workroot=killed.workroot)
        try:
            assert not left.parents[1].exists()
            assert live.is_dir() and (foreign / "notes.txt").exists()
            assert len(list(killed.workroot.glob("ddpg-serve-*"))) == 3  # the restarted server's own, live, foreign
        finally:
            restarted.stop()
