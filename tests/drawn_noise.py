"""A DDPG run whose observation, x_T and per-step noise are drawn once, so several denoisers (backends, tiled or
not) can be run on exactly the same problem and compared."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ddpg.operators import degrade
from ddpg.runtime import ddpg_sample


def ddpg_with_drawn_noise(op, batch: int, seed: int, steps: int, sigma_y: float = 0.05
                          ) -> Callable[[object], torch.Tensor]:
    """``run(denoiser)`` → (batch,3,H,W) DDPG restorations of random images in [-1, 1] seen through ``op`` at
    ``sigma_y``; images, observation noise, x_T and the ``steps`` noise draws come from one generator seeded
    ``seed``, in that order."""
    shape = (batch, 3, *op.img_size)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=gen) * 2 - 1
    y = degrade(x, op, sigma_y, generator=gen)
    x_T = torch.randn(*shape, generator=gen)
    draws = [torch.randn(*shape, generator=gen) for _ in range(steps)]

    def run(denoiser) -> torch.Tensor:
        it = iter(draws)
        with torch.no_grad():
            return ddpg_sample(denoiser, op, y, sigma_y, steps=steps, x_T=x_T, noise=lambda like: next(it))

    return run
