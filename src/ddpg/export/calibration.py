"""Calibration data for post-training int8 (NNCF): the (x_t, t) pairs a float32 denoiser really sees while it
restores faces, across the sampler's timesteps (``ddpg export --calibration DIR``), not random tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .quality_gate import GATE_TASKS, load_faces, restore_faces

CALIBRATION_STEPS = 50  # sampler steps of each calibration restoration
CALIBRATION_ITEMS = 300  # (x_t, t) pairs kept, evenly spread over every call of every restoration


class RecordingDenoiser:
    """``inner`` (any denoiser), recording the inputs of every call (one (x_t (1,3,H,W), t (1,)) pair per image);
    same interface as ``inner``, whose fields it forwards."""

    def __init__(self, inner):
        self.inner = inner
        self.backend, self.capabilities, self.name, self.config = inner.backend, inner.capabilities, inner.name, \
            inner.config
        self.schedule, self.prediction, self.graph_safe = inner.schedule, inner.prediction, inner.graph_safe
        self.compile_mode, self.prior, self.info = inner.compile_mode, inner.prior, inner.info
        self.pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def options(self) -> dict:
        return self.inner.options()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t_values = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(x_t.shape[0])
        for i in range(x_t.shape[0]):
            self.pairs.append((x_t[i: i + 1].detach().float().numpy().copy(),
                               t_values[i: i + 1].detach().numpy().copy()))
        return self.inner(x_t, t)


def collect_calibration(denoiser, folder: str | Path, *, steps: int = CALIBRATION_STEPS,
                        tasks: Sequence[str] = GATE_TASKS, items: int = CALIBRATION_ITEMS,
                        limit: int | None = None) -> list[dict[str, np.ndarray]]:
    """Feeds ``{"x": (1,3,H,W), "t": (1,)}`` float32 recorded while ``denoiser`` (float32) restores the images of
    ``folder`` (the first ``limit``) for each task in ``tasks`` at ``steps`` steps; ``items`` of them, evenly
    spaced over the recording (so every timestep band and every image is represented)."""
    faces = load_faces(folder, limit)
    recorder = RecordingDenoiser(denoiser)
    for task in tasks:
        restore_faces(recorder, faces, task, steps)
    pairs = recorder.pairs
    keep = np.unique(np.linspace(0, len(pairs) - 1, min(items, len(pairs))).round().astype(int))
    return [{"x": pairs[i][0], "t": pairs[i][1]} for i in keep]
