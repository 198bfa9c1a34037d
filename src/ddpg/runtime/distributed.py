"""Running past one GPU: ``torchrun --nproc-per-node N ddpg restore ...`` gives each rank a contiguous shard of
the inputs on its own device (cuda:LOCAL_RANK) and a summary gathered on rank 0.

Without torchrun (no ``WORLD_SIZE`` in the environment, or ``WORLD_SIZE=1``) everything is a no-op: rank 0 of a
world of 1 on the requested device. Image ``i`` of the full input list keeps its global index on every rank, so
seeds (``seed + i``) and therefore outputs do not depend on the number of ranks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, NamedTuple, TypeVar

import torch
import torch.distributed as dist

from ddpg.errors import ConfigError, ParameterError

T = TypeVar("T")
SHARD_MODES = ("contiguous", "strided")
# The ranks meet only once, after their shares (gather_summary): a rank that finished (or skipped everything)
# early waits there for the slowest one. torch's defaults (10 min under NCCL, 30 min otherwise) would abort it;
# a rank that dies instead makes torchrun stop the others, so a long timeout hides no hang.
COLLECTIVE_TIMEOUT = timedelta(days=7)


class DistContext(NamedTuple):
    """This process's rank, the number of ranks and the device it computes on."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def launched_by_torchrun() -> bool:
    """Whether this process is one of several ranks (``WORLD_SIZE`` > 1 in the environment)."""
    return _env_int("WORLD_SIZE", 1) > 1


def dist_context(device: str | torch.device = "auto", backend: str | None = None) -> DistContext:
    """Read torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; join the process group when there is more than
    one rank (``backend``: "nccl" for CUDA devices, "gloo" otherwise, unless given; collectives time out after
    ``COLLECTIVE_TIMEOUT``). Under NCCL the rank's device is made current before the group is formed, and bound
    to it (``device_id``): NCCL's object collectives use ``torch.cuda.current_device()``.

    ``device``: "auto" (CUDA when available, else CPU), "cpu", "cuda" (→ cuda:LOCAL_RANK under torchrun), or
    "cuda:N" (single process only: under torchrun each rank takes cuda:LOCAL_RANK).
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent")
    requested = torch.device("cuda" if str(device) == "auto" and torch.cuda.is_available() else
                             "cpu" if str(device) == "auto" else device)
    if requested.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError("device", device, "CUDA is not available on this machine")
        if world > 1:
            if requested.index is not None:
                raise ParameterError("device", device, f"under torchrun give device cuda; rank {rank} uses "
                                                       f"cuda:LOCAL_RANK (cuda:{local_rank})")
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPUs")
            requested = torch.device("cuda", local_rank)
        elif requested.index is None:
            requested = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(requested)
    if world > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if requested.type == "cuda" else "gloo")
        kwargs = {"device_id": requested} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT, **kwargs)
    return DistContext(rank, world, requested)


def shard_indices(count: int, rank: int, world_size: int, mode: str = "contiguous") -> list[int]:
    """The global indices of ``count`` items that rank ``rank`` of ``world_size`` handles.

    "contiguous": rank r gets one block [start, stop); the first ``count % world_size`` ranks get one item more
    (blocks of sizes differing by at most one, in order). "strided": rank r gets r, r + world_size, ... Both are
    deterministic, disjoint and together cover every index exactly once.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in a world of {world_size}")
    if count < 0:
        raise ConfigError(f"item count must be >= 0, got {count}")
    if mode == "strided":
        return list(range(rank, count, world_size))
    if mode != "contiguous":
        raise ConfigError(f"shard mode {mode!r}: choose one of {', '.join(SHARD_MODES)}")
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return list(range(start, start + base + (rank < extra)))


def shard(items: Sequence[T], rank: int, world_size: int, mode: str = "contiguous") -> list[T]:
    """The items of ``shard_indices(len(items), rank, world_size, mode)``, in order."""
    return [items[i] for i in shard_indices(len(items), rank, world_size, mode)]


def merge_summaries(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One summary of every rank's: lists (done, skipped, failed) concatenated in rank order, counts and
    ``seconds`` summed, ``interrupted`` any, ``exit_code`` the largest, ``wall_s`` the slowest rank's, and the
    per-rank dicts kept under ``ranks``."""
    merged: dict[str, Any] = {"world_size": len(summaries), "ranks": list(summaries)}
    for key in ("done", "skipped", "failed"):
        merged[key] = [entry for s in summaries for entry in s.get(key, [])]
    merged["interrupted"] = any(s.get("interrupted", False) for s in summaries)
    merged["exit_code"] = max((int(s.get("exit_code", 0)) for s in summaries), default=0)
    walls = [float(s["wall_s"]) for s in summaries if "wall_s" in s]
    if walls:
        merged["wall_s"] = max(walls)
        merged["images_per_s"] = len(merged["done"]) / merged["wall_s"] if merged["wall_s"] > 0 else None
    return merged


def gather_summary(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Collect every rank's JSON-able ``summary`` on rank 0 and merge them (``merge_summaries``).

    Returns the merged dict on rank 0 and None on the other ranks; in a single process, the merge of one.
    Every rank must call it (it is a collective).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return merge_summaries([summary])
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered: list | None = [None] * world if rank == 0 else None
    dist.gather_object(summary, gathered, dst=0)
    return merge_summaries(gathered) if rank == 0 else None


def finish() -> None:
    """Leave the process group (after the last collective); a no-op without one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


__all__ = ["COLLECTIVE_TIMEOUT", "SHARD_MODES", "DistContext", "dist_context", "finish", "gather_summary",
           "launched_by_torchrun", "merge_summaries", "shard", "shard_indices"]
