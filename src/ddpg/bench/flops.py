"""FLOPs of one denoiser call, counted with ``torch.utils.flop_counter.FlopCounterMode`` (multiply-add = 2 FLOP;
convolutions, matrix products and attention; element-wise work and FFTs are not counted)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(module: torch.nn.Module, batch: int, size: tuple[int, int], *, device: torch.device | str = "cpu",
                class_labels: torch.Tensor | None = None) -> int:
    """FLOPs of ``module(x, t[, y])`` for x of shape (batch, 3, *size) on ``device``."""
    x = torch.randn(batch, 3, *size, device=device)
    t = torch.full((batch,), 500.0, device=device)
    labels = None if class_labels is None else torch.as_tensor(class_labels, device=device).expand(batch)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x, t, labels)
    return int(counter.get_total_flops())


__all__ = ["count_flops"]
