"""Will a restoration fit in memory? An estimate from the prior's own forward pass, traced on the meta device
(shapes only, no memory), against what the device has free — so an image too large for the prior is refused
in seconds rather than running until memory runs out."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ddpg.models import create_prior
from ddpg.models.gaussian import restore_peak_bytes

NO_GRAD_FACTOR = 6  # peak ≈ 6 × the largest tensor of one UNet call without autograd (face64 CPU, 64–256 px: 4.7–5)


@functools.lru_cache(maxsize=4)
def _meta_model(config_json: str) -> torch.nn.Module:
    """The prior of a config built on the meta device (parameters without memory), once per config."""
    with torch.device("meta"):
        return create_prior(json.loads(config_json))


@functools.lru_cache(maxsize=64)
def _trace(config_json: str, batch: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """(bytes of every tensor one forward pass creates, bytes of its largest one) for ``batch`` images of
    ``size``; None when the prior cannot be traced on the meta device."""
    class Count(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.total = self.largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    n = t.numel() * t.element_size()
                    self.total += n
                    self.largest = max(self.largest, n)
            return out

    try:
        config = json.loads(config_json)
        model = _meta_model(config_json)
        with torch.device("meta"):
            x, t = torch.zeros(batch, 3, *size), torch.zeros(batch)
            kwargs = {"y": torch.zeros(batch, dtype=torch.long)} if config.get("num_classes") else {}
            count = Count()
            with count, torch.no_grad():
                model(x, t, **kwargs)
    except Exception:  # a config the tracer cannot run: no estimate rather than a wrong one
        return None
    return count.total, count.largest


def restore_bytes(config: dict | None, batch: int, size: tuple[int, int], needs_grad: bool) -> int | None:
    """Estimated peak bytes of restoring ``batch`` images of ``size`` (H, W) with the prior of ``config``: for
    a UNet, all of one forward pass's tensors when the method differentiates through it (autograd keeps them),
    else :data:`NO_GRAD_FACTOR` × its largest tensor; for the analytic Gaussian prior, its own measured estimate
    (:func:`ddpg.models.gaussian.restore_peak_bytes`). None without a config of either kind."""
    if config and config.get("kind") == "gaussian":
        return restore_peak_bytes(batch, size)
    if not config or config.get("kind") not in ("ddpm", "adm"):
        return None
    traced = _trace(json.dumps(config, sort_keys=True, default=str), batch, tuple(size))
    if traced is None:
        return None
    total, largest = traced
    return total if needs_grad else NO_GRAD_FACTOR * largest


def tiled_restore_bytes(config: dict | None, batch: int, size: tuple[int, int], tile: int, tile_batch: int,
                        tiles: int, needs_grad: bool) -> int | None:
    """Estimated peak bytes of restoring ``batch`` images of ``size`` (H, W) whose UNet runs over ``tiles`` tiles
    of ``tile`` px each, ``tile_batch`` per call: one call's UNet memory (:func:`restore_bytes` of that call; with
    autograd, every tile's forward pass of the batch, all kept for the backward one) plus the whole-image work of
    the method, the operator and the writer (the analytic prior's measured per-pixel cost,
    :func:`ddpg.models.gaussian.restore_peak_bytes`, which holds the same float32 images and FFTs). Grows with the
    pixel count, not with attention over the image; None when the UNet's share cannot be estimated."""
    if needs_grad:
        unet = restore_bytes(config, 1, (tile, tile), True)
        unet = None if unet is None else unet * tiles * batch
    else:
        unet = restore_bytes(config, min(tile_batch, tiles * batch), (tile, tile), False)
    return None if unet is None else unet + restore_peak_bytes(batch, size)


def available_bytes(device: str | torch.device) -> int | None:
    """Memory free for a restoration on ``device``: CUDA's free memory plus what torch's cache holds, or the
    system's available memory (Linux ``MemAvailable``); None where it cannot be told."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
