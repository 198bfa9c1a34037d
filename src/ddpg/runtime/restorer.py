"""Restorer: prior (as a denoiser, any backend) + operator + method settings, for batches of images.

Every image owns its random streams, derived from its seed: one for the measurement noise, one for x_T and
the per-step noise. A batch therefore restores each image exactly as it would alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ddpg.checks import check_sigma_y
from ddpg.errors import ConfigError
from ddpg.models.denoiser import native_image_size
from ddpg.operators import degrade, make_operator
from ddpg.operators.base import Operator

from .presets import load_preset
from .samplers import get_sampler

MEASUREMENT_STREAM, SAMPLING_STREAM = 1, 0


def stream_generator(seed: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An independent generator for (seed, stream), seeded through NumPy's SeedSequence."""
    state = int(np.random.SeedSequence([int(seed), stream]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(state)


def seeded_start(seeds: Sequence[int], img_size: tuple[int, int], device: torch.device | str
                 ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """x_T (B,3,H,W) and a per-step noise source, each image's drawn from its own sampling stream.

    Every draw fills one preallocated (B, ...) tensor row by row (``normal_`` on the row, which draws exactly what
    ``randn`` of that row's shape would): one allocation per step instead of B draws and a ``cat``."""
    gens = [stream_generator(s, SAMPLING_STREAM, device) for s in seeds]

    def draw(shape: tuple[int, ...], device, dtype=torch.float32) -> torch.Tensor:
        out = torch.empty((len(gens), *shape), device=device, dtype=dtype)
        for row, g in zip(out, gens, strict=True):
            row.normal_(generator=g)
        return out

    def noise(like: torch.Tensor) -> torch.Tensor:
        return draw(tuple(like.shape[1:]), like.device, like.dtype)

    return draw((3, *img_size), device), noise


def seeded_observations(x: torch.Tensor, operator: Operator, sigma_y: float, seeds: Sequence[int]) -> torch.Tensor:
    """y = A x + 2σ_y n for clean images x (B,3,H,W) in [-1, 1], image i's n from its seed's measurement stream
    (what :meth:`Restorer.degrade` and ``ddpg restore`` draw)."""
    return torch.cat([degrade(x[i:i + 1], operator, sigma_y,
                              generator=stream_generator(s, MEASUREMENT_STREAM, x.device))
                      for i, s in enumerate(seeds)])


class Restorer:
    """Restore batches with one method and operator. ``steps`` defaults to the method's (``default_steps`` of its
    :class:`~ddpg.runtime.samplers.SamplerSpec`); ``hyper``: the method's hyper-parameters."""

    def __init__(self, denoiser, operator: Operator, *, method: str = "ddpg", sigma_y: float = 0.0,
                 steps: int | None = None, hyper: dict | None = None):
        self.spec = get_sampler(method)
        check_sigma_y(sigma_y)
        unknown = set(hyper or {}) - set(self.spec.hyper_names)
        if unknown:
            raise ConfigError(f"method {method}: unknown hyper-parameter(s) {sorted(unknown)}; known: "
                              f"{sorted(self.spec.hyper_names)}")
        self.denoiser, self.operator = denoiser, operator
        self.method, self.sigma_y = method, float(sigma_y)
        self.steps = int(steps if steps is not None else self.spec.default_steps)
        self.hyper = dict(hyper or {})
        self.params = self.spec.build(self.sigma_y, self.hyper)  # validated once; the method's params dataclass
        capabilities = self.spec.capabilities(self.params)
        if capabilities.needs_grad and not denoiser.capabilities.grad:
            raise ConfigError(f"method {method} {capabilities.why_not} and runs on the torch backend only, not on "
                              f"{denoiser.backend}")

    @classmethod
    def from_preset(cls, name: str, denoiser, size: int | tuple[int, int] | None = None,
                    operator: Operator | None = None, **overrides) -> Restorer:
        """Settings from a preset; the operator is built from the preset at ``size`` (default: the prior's
        image size) unless given."""
        preset = load_preset(name, **overrides)
        if operator is None:
            size = size or native_image_size(denoiser) or 256
            params = dict(preset.operator)
            operator = make_operator(params.pop("task"), size, **params)
        return cls(denoiser, operator, method=preset.method, sigma_y=preset.sigma_y, steps=preset.steps,
                   hyper=preset.hyper)

    def settings(self) -> dict:
        return {"method": self.method, "sigma_y": self.sigma_y, "steps": self.steps, "hyper": self.hyper,
                "operator": {"name": self.operator.name, **self.operator.params}}

    def degrade(self, x: torch.Tensor, seeds: Sequence[int]) -> torch.Tensor:
        """Observations y = A x + 2σ_y n of clean images x (B,3,H,W) in [-1, 1], n from each image's seed."""
        self._check_seeds(x, seeds)
        return seeded_observations(x, self.operator, self.sigma_y, seeds)

    def restore(self, y: torch.Tensor, seeds: Sequence[int],
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Restorations (B,3,H,W) float32 in the [-1, 1] scale (not clamped) of measurements y."""
        self._check_seeds(y, seeds)
        x_T, noise = seeded_start(seeds, self.operator.img_size, y.device)
        return self.spec.run(self.params, self.denoiser, self.operator, y, steps=self.steps, x_T=x_T, noise=noise,
                             callback=callback)

    @staticmethod
    def _check_seeds(t: torch.Tensor, seeds: Sequence[int]) -> None:
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            raise ConfigError(f"expected a (B, C, H, W) tensor, got {getattr(t, 'shape', type(t).__name__)}")
        if len(seeds) != t.shape[0]:
            raise ConfigError(f"{len(seeds)} seeds for a batch of {t.shape[0]}")
        if not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in seeds):
            raise ConfigError(f"seeds must be non-negative integers, got {list(seeds)}")
