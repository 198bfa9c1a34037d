"""Run ``ddpg serve``: load the prior once on its device, warm it up, and serve the app with uvicorn.

SIGTERM (or a first Ctrl-C) drains: new restore requests get 503 and ``/readyz`` says draining, the queued
and active samples finish within ``drain_timeout_s`` (those left then get 503), and the process exits 0.
"""

from __future__ import annotations

import fcntl
import logging
import math
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn

from ddpg.api.denoisers import check_device, check_engine_prior, engine_batch_profile, make_denoiser
from ddpg.api.tiling import AUTO_TILE_RATIO
from ddpg.errors import ConfigError
from ddpg.models.denoiser import native_image_size
from ddpg.runtime.backends.capabilities import backend_capabilities
from ddpg.threads import use_threads

from .app import ServeState, make_app
from .batch_size import AUTO_CAP, choose_batch, profile_batches
from .jobs import Preparer
from .metrics import ServeMetrics
from .options import ServeOptions
from .scheduler import POLICIES, Scheduler

log = logging.getLogger("ddpg")
WORKROOT_PREFIX = "ddpg-serve-"  # the server's folder in the temporary folder, holding its request folders
OWNER_LOCK = ".owner.lock"  # in it: flock-ed by the server while it lives


def read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"--token-file {path}: cannot read it ({exc.strerror or exc})") from exc
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"--token-file {path}: expected one token without spaces")
    return token


def parse_max_batch(value: int | str) -> int | None:
    """``--max-batch``: a positive integer, or None for ``auto``."""
    if str(value).strip().lower() == "auto":
        return None
    try:
        batch = int(value)
    except (TypeError, ValueError):
        batch = 0
    if batch < 1:
        raise ConfigError(f"--max-batch {value!r}: expected a positive integer or auto")
    return batch


def engine_batches(denoiser, max_batch: int | None, engine_batch: int | None) -> tuple[int, int | None]:
    """(most samples per tick, padded call batch) for ``--max-batch`` (None: auto, the most it may choose) and
    ``--engine-batch``, checked against an ONNX/TensorRT engine's batch profile. Unpadded, a call's batch is the
    number of active samples (1 to the most), so the engine must take 1 to that; a fixed-batch engine pads
    every call to its batch. With padding every call costs the same, so auto takes the padded batch."""
    profile = engine_batch_profile(denoiser)
    if profile is not None:
        if engine_batch is None and profile.fixed:
            engine_batch = profile.max
        if engine_batch is not None and not profile.min <= engine_batch <= profile.max:
            raise ConfigError(f"--engine-batch {engine_batch}: the engine takes batch {profile}")
        if engine_batch is None and profile.min > 1:
            raise ConfigError(f"the engine takes batch {profile}, not a single sample: give --engine-batch "
                              f"between {profile.min} and {profile.max} to pad its calls")
        if engine_batch is None and max_batch is not None and max_batch > profile.max:
            raise ConfigError(f"--max-batch {max_batch}: the engine takes batch {profile}")
    if max_batch is None:
        max_batch = engine_batch or min(AUTO_CAP, profile.max if profile is not None else AUTO_CAP)
    if engine_batch is not None and engine_batch < max_batch:
        raise ConfigError(f"--engine-batch {engine_batch} is below --max-batch {max_batch}")
    return max_batch, engine_batch


def build_state(opts: ServeOptions, workroot: Path) -> ServeState:
    """Check the options, load the denoiser and build the scheduler, request builder and metrics. With
    ``--max-batch auto`` the scheduler holds its queue until :func:`warm_up` has chosen the batch."""
    check_device(opts.device)
    use_threads(opts.threads)
    if opts.policy not in POLICIES:
        raise ConfigError(f"--policy {opts.policy!r}: choose one of {', '.join(POLICIES)}")
    requested = parse_max_batch(opts.max_batch)
    if opts.max_queue < 0 or opts.max_pixels < 1 or (opts.engine_batch is not None and opts.engine_batch < 1):
        raise ConfigError("--max-pixels and --engine-batch must be >= 1, --max-queue >= 0")
    if not opts.job_ttl_s > 0:
        raise ConfigError(f"--job-ttl {opts.job_ttl_s}: expected seconds > 0")
    if opts.max_jobs < 1:
        raise ConfigError(f"--max-jobs {opts.max_jobs}: expected at least 1")
    token = read_token(opts.token_file) if opts.token_file else None
    if backend_capabilities(opts.backend).engine_file:
        denoiser = make_denoiser(None, None, opts.backend, opts.engine, opts.device, opts.class_label)
        prior = check_engine_prior(denoiser, None)
    else:
        denoiser = make_denoiser(opts.prior, None, opts.backend, None, opts.device, opts.class_label)
        prior = opts.prior
    max_batch, engine_batch = engine_batches(denoiser, requested, opts.engine_batch)
    metrics = ServeMetrics(max_batch)
    scheduler = Scheduler(denoiser, max_batch=max_batch, max_queue=opts.max_queue, policy=opts.policy,
                          batch_wait_s=opts.batch_wait_ms / 1000, engine_batch=engine_batch, metrics=metrics)
    preparer = Preparer(denoiser, prior, opts.device, max_pixels=opts.max_pixels,
                        default_deadline_s=opts.request_timeout_s)
    info = {"prior": prior, "backend": opts.backend, "device": opts.device,
            "image_size": native_image_size(denoiser), "largest_image": largest_image(preparer)}
    state = ServeState(scheduler, preparer, metrics, workroot, token=token, max_body_bytes=opts.max_body_bytes,
                       model_info=info, test_hooks=opts.test_hooks, job_ttl_s=opts.job_ttl_s, max_jobs=opts.max_jobs)
    state.auto_batch = requested is None and engine_batch is None and opts.policy != "single"
    if state.auto_batch:
        scheduler.pause(True)
    else:
        metrics.max_batch.set(scheduler.max_batch)
    return state


def largest_image(preparer: Preparer) -> dict:
    """What /v1/models states of the largest image accepted: ``max_pixels`` (and the largest square's side), and
    how a larger image than the prior's is run (its UNet input in tiles, as ``ddpg restore --tile auto``)."""
    tiles = preparer.tiles
    record = {"max_pixels": preparer.max_pixels, "max_square_side": math.isqrt(preparer.max_pixels)}
    if tiles.tile is not None:
        record["tiles"] = {"tile": tiles.tile, "overlap": tiles.overlap,
                           "tiled_above_side": int(AUTO_TILE_RATIO * tiles.tile),
                           "note": "larger images run their UNet in tiles that join the ticks; the method's step "
                                   "runs on the whole image; an image that does not fit in memory even tiled is "
                                   "refused"}
    return record


def warm_up(state: ServeState) -> None:
    """Ready the denoiser, then mark the server ready. ``--max-batch auto``: time calls at batch 1, 2, 4, …
    and take the smallest batch within 10 % of the best images/s (:mod:`ddpg.serve.batch_size`), then release
    the queue; otherwise one call at the full batch (kernels chosen, memory reserved)."""
    scheduler = state.scheduler
    size = native_image_size(scheduler.denoiser) or 64
    device = state.preparer.device
    if state.auto_batch:
        state.batch_seconds = profile_batches(scheduler.denoiser, size, device, cap=scheduler.max_batch)
        scheduler.set_max_batch(choose_batch(state.batch_seconds))
        state.metrics.max_batch.set(scheduler.max_batch)
        log.info("ddpg serve: --max-batch auto chose %d (seconds per call by batch: %s)", scheduler.max_batch,
                 ", ".join(f"{b}: {s:.4f}" for b, s in state.batch_seconds.items()))
        scheduler.pause(False)
    else:
        batch = scheduler.engine_batch or scheduler.max_batch
        with torch.no_grad():
            scheduler.denoiser(torch.zeros(batch, 3, size, size, device=device),
                               torch.full((batch,), 500.0, device=device))
    state.ready = True
    log.info("ddpg serve: ready")


class DrainingServer(uvicorn.Server):
    """uvicorn with a draining first SIGTERM/SIGINT (a second SIGINT exits at once)."""

    def __init__(self, config: uvicorn.Config, state: ServeState, drain_timeout_s: float):
        super().__init__(config)
        self.serve_state, self.drain_timeout_s = state, drain_timeout_s
        self._draining = False

    def handle_exit(self, sig: int, frame) -> None:
        if self._draining:
            if sig == signal.SIGINT:
                super().handle_exit(sig, frame)
            return
        self._draining = True
        scheduler = self.serve_state.scheduler
        scheduler.draining = True  # new requests get 503 from now on
        log.warning("ddpg serve: %s: draining %d queued and %d active requests (at most %.0f s); new ones get 503",
                    signal.Signals(sig).name, len(scheduler.queue), len(scheduler.active), self.drain_timeout_s)
        threading.Thread(target=self._drain, name="ddpg-drain", daemon=True).start()

    def _drain(self) -> None:
        scheduler, start = self.serve_state.scheduler, time.monotonic()
        if scheduler.drain(self.drain_timeout_s):
            log.warning("ddpg serve: drained in %.1f s; exiting", time.monotonic() - start)
        else:
            log.warning("ddpg serve: drain bound of %.0f s passed; failing the requests left", self.drain_timeout_s)
            scheduler.close()
        self.should_exit = True


def listening_url(sock: socket.socket) -> str:
    """``http://host:port`` of a bound socket (the port the OS picked for port 0)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def remove_stale_workroots(temp: Path) -> list[Path]:
    """Remove the folders that killed servers left in ``temp``: only this user's real folders named
    ``ddpg-serve-*`` holding a lock file that no live process holds (a live server holds its own). Returns them."""
    removed = []
    for root in temp.glob(f"{WORKROOT_PREFIX}*"):
        try:
            info = os.lstat(root)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            fd = os.open(root / OWNER_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or no lock file: not a server's folder
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(root, ignore_errors=True)
            removed.append(root)
        except BlockingIOError:  # a live server's
            pass
        finally:
            os.close(fd)
    if removed:
        log.info("ddpg serve: removed the folders of %d servers that were killed: %s", len(removed),
                 ", ".join(map(str, removed)))
    return removed


@contextmanager
def workroot() -> Iterator[Path]:
    """The server's folder for its request folders, in the temporary folder, removed on leaving; its lock held
    while this process lives, so a later server removes it if this one is killed (:func:`remove_stale_workroots`,
    run first)."""
    remove_stale_workroots(Path(tempfile.gettempdir()))
    root = Path(tempfile.mkdtemp(prefix=WORKROOT_PREFIX))
    fd, name = tempfile.mkstemp(dir=root)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(name, root / OWNER_LOCK)  # locked before it has the name other servers look for
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        os.close(fd)


def serve(opts: ServeOptions, on_listening: Callable[[str], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; returns after the drain. ``on_listening(url)`` is called once the socket
    is bound (with ``port`` 0, the URL names the port the OS picked)."""
    with workroot() as root:
        state = build_state(opts, root)
        config = uvicorn.Config(make_app(state), host=opts.host, port=opts.port, log_level="warning",
                                timeout_graceful_shutdown=10, lifespan="off")
        server = DrainingServer(config, state, opts.drain_timeout_s)
        sock = config.bind_socket()
        if on_listening is not None:
            on_listening(listening_url(sock))
        threading.Thread(target=warm_up, args=(state,), name="ddpg-warmup", daemon=True).start()
        try:
            server.run(sockets=[sock])
        finally:
            state.scheduler.close()
