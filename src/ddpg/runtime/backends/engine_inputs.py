"""The (x, t, y) feeds that ONNX Runtime and TensorRT engines share: class labels and timesteps checked and
shaped for a batch, with errors that name the engine file."""

from __future__ import annotations

import torch

from ddpg.engine_metadata import EngineError, EngineInfo
from ddpg.errors import ConfigError


def engine_class_labels(info: EngineInfo, class_labels, device: torch.device) -> torch.Tensor | None:
    """The engine's class labels as an int64 (n,) tensor on ``device``, n = 1 or the batch; None for an
    unconditional prior. Refuses labels for an unconditional prior and none for a conditional one."""
    if not info.conditional:
        if class_labels is not None:
            raise ConfigError(f"{info.source}: this prior is not class-conditional; drop class_labels")
        return None
    if class_labels is None:
        raise ConfigError(f"{info.source}: this prior is class-conditional: pass class_labels "
                          "(an int or a (B,) tensor of class indices)")
    return torch.as_tensor(class_labels, dtype=torch.int64).reshape(-1).to(device)


def labels_for_batch(labels: torch.Tensor | None, batch: int, source: str) -> torch.Tensor | None:
    """(batch,) labels: one label repeated, or exactly ``batch`` of them."""
    if labels is None:
        return None
    if labels.numel() == 1:
        return labels.expand(batch).contiguous()
    if labels.numel() != batch:
        raise EngineError(f"{source}: {labels.numel()} class labels for a batch of {batch}")
    return labels


def timesteps_for_batch(t, batch: int, device: torch.device, source: str) -> torch.Tensor:
    """(batch,) float32 timestep values on ``device`` from one value or ``batch`` of them."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.numel() != batch:
        raise EngineError(f"{source}: t has {t.numel()} values for a batch of {batch}")
    return t
