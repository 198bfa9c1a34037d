"""How many CPU threads torch (and ONNX Runtime on the CPU) use: the ``--threads auto|N`` option of ``ddpg restore``,
``serve``, ``bench`` and ``evaluate``, declared once (:func:`threads_option`), its one rule
(:func:`resolve_threads`) and the one place that applies it (:func:`apply_threads`).

``auto`` is the cores nobody else is using: ``max(1, CPUs available to this process − round(1-min load
average))``; a ``OMP_NUM_THREADS`` the user set wins over it. Measured on a shared 2-core machine
(docs/performance.md): two threads are 1.6× faster than one when the machine is quiet, and 2.5–5× slower when
two other processes keep both cores busy. Torch-free until :func:`apply_threads` runs (the command line reads
the option before it imports torch).
"""

from __future__ import annotations

import logging
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass

from ddpg.errors import ParameterError
from ddpg.schema import option

log = logging.getLogger("ddpg")

AUTO = "auto"
THREADS_HELP = ("CPU threads for torch and ONNX Runtime: N, or auto: the cores not busy (CPUs minus the 1-min load "
                "average, at least 1); OMP_NUM_THREADS, when set, wins over auto.")

_applied: int | None = None  # the count apply_threads last set in this process


def check_threads(spec: object, param: str = "threads") -> int | str:
    """``spec`` as ``"auto"`` or an int >= 1 (``"4"`` → 4); :class:`~ddpg.errors.ParameterError` naming
    ``param`` otherwise."""
    if spec == AUTO:
        return AUTO
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec)
    if isinstance(spec, bool) or not isinstance(spec, int) or spec < 1:
        raise ParameterError(param, spec, "must be auto or a whole number of threads >= 1")
    return spec


def threads_option() -> typing.Any:
    """The ``threads`` option field (default ``auto``) of an option dataclass (``RestoreRequest``,
    ``ServeOptions``, ``BenchConfig``, :class:`ThreadsOption`)."""
    return option(AUTO, kind=str, parse=check_threads, help=THREADS_HELP)


@dataclass(frozen=True)
class ThreadsOption:
    """``--threads`` alone, for a command without an option dataclass of its own (``ddpg evaluate``)."""

    threads: int | str = threads_option()


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average (runnable processes, averaged), 0 where the OS reports none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows
        return 0.0


def env_threads(environ: Mapping[str, str]) -> int | None:
    """The thread count ``OMP_NUM_THREADS`` in ``environ`` names (its first entry), None when unset or not a
    number >= 1."""
    first = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) >= 1 else None


def resolve_threads(spec: object, *, cpus: int | None = None, load: float | None = None,
                    environ: Mapping[str, str] | None = None) -> int:
    """The thread count of ``spec``: N itself; for ``auto`` the user's ``OMP_NUM_THREADS`` when set, else
    ``max(1, cpus − round(load))``. ``cpus`` (default :func:`available_cpus`), ``load`` (default
    :func:`load_average`) and ``environ`` (default ``os.environ``) are given by tests."""
    spec = check_threads(spec)
    if spec != AUTO:
        return spec
    chosen = env_threads(os.environ if environ is None else environ)
    if chosen is not None:
        return chosen
    cpus = available_cpus() if cpus is None else cpus
    load = load_average() if load is None else load
    return max(1, cpus - round(load))


def apply_threads(n: int) -> int:
    """Run torch's CPU work on ``n`` threads (intra-op; inter-op too where torch still allows it: only before
    its first parallel work) and make ``n`` the intra-op count of ONNX Runtime CPU sessions made after this
    (:func:`applied_threads`). Returns ``n``."""
    global _applied
    import torch  # torch-free until a command runs

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # already set, or inter-op work already started: intra-op is what counts here
        pass
    _applied = n
    return n


def applied_threads() -> int | None:
    """The count :func:`apply_threads` last set in this process (None before): ONNX Runtime's intra-op threads."""
    return _applied


def use_threads(spec: object) -> int:
    """Resolve ``spec`` and apply it (:func:`apply_threads`); returns the count. ``auto`` is resolved once per
    process: once this process has applied a count it keeps it, since the load average then includes its own
    work."""
    spec = check_threads(spec)
    if spec == AUTO and _applied is not None:
        return _applied
    n = apply_threads(resolve_threads(spec))
    if spec == AUTO:
        log.info("threads: %d (auto: %d CPUs, 1-min load %.2f%s)", n, available_cpus(), load_average(),
                 ", OMP_NUM_THREADS" if env_threads(os.environ) is not None else "")
    return n
