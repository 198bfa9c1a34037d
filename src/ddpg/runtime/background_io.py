"""Background loading and saving, so image I/O overlaps GPU compute."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ddpg.errors import ConfigError
from ddpg.runtime.cuda_graph import CAPTURE_LOCK

_DONE = object()


class Prefetcher:
    """Run ``load(item)`` for the items of ``items`` in a background thread, ``depth`` ahead of the consumer.

    Iterating yields ``(item, result, error)`` in input order; a failing load yields its exception as
    ``error`` (result None) instead of stopping the stream, so a batch command can report it and go on.
    Use as a context manager (or call ``close``) to stop the thread early. Each load holds ``CAPTURE_LOCK``,
    so loads that use CUDA never run while another thread captures a CUDA graph.
    """

    def __init__(self, items: Iterable[Any], load: Callable[[Any], Any], depth: int = 2):
        if depth < 1:
            raise ConfigError(f"prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(iter(items), load), daemon=True)
        self._thread.start()

    def _put(self, value) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self, items: Iterator, load: Callable) -> None:
        for item in items:
            try:
                with CAPTURE_LOCK:
                    entry = (item, load(item), None)
            except Exception as exc:  # handed to the consumer, which decides
                entry = (item, None, exc)
            if not self._put(entry):
                return
        self._put(_DONE)

    def __iter__(self) -> Iterator[tuple[Any, Any, BaseException | None]]:
        while True:
            entry = self._queue.get()
            if entry is _DONE:
                return
            yield entry

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class BackgroundWriter:
    """Run ``fn(*args)`` jobs (image/JSON saving) in one background thread, in submission order.

    ``submit`` returns at once (blocking only when ``depth`` jobs are waiting); ``close()`` waits for every job
    and returns the list of (args, exception) of the jobs that failed. Tensors passed in should be on the CPU
    (copy them with ``.cpu()`` first) so the writer never touches the GPU stream.
    """

    def __init__(self, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self.errors: list[tuple[tuple, BaseException]] = []
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is _DONE:
                return
            fn, args = job
            try:
                fn(*args)
            except Exception as exc:
                self.errors.append((args, exc))

    def submit(self, fn: Callable, *args) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("BackgroundWriter is closed")
        self._queue.put((fn, args))

    def close(self) -> list[tuple[tuple, BaseException]]:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()
        return self.errors

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
