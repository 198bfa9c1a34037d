"""Diffusion schedules as data.

A :class:`Schedule` holds the β sequence of a prior's forward process and the derived ᾱ_t
(0-based, ᾱ_t = ∏_{s≤t}(1−β_s)), with the convention ᾱ_{−1} = 1. A :class:`TimeGrid` holds the integer
timesteps a sampler visits; its steps are (t, t') pairs, t' = −1 for the final step. Nothing here holds state
that a sampler step mutates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ddpg.errors import ConfigError

BETA_SCHEDULES = ("linear", "quad", "const", "jsd", "sigmoid", "cosine")
TIME_GRIDS = ("uniform", "quad")  # DDPG, DDNM and DDRM step on "uniform", DiffPIR on "quad"


def make_betas(
    kind: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02, num_timesteps: int = 1000
) -> np.ndarray:
    """β_t for t = 0..T−1 in float64 (T = ``num_timesteps``), by the names the reference configs use."""
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    T = num_timesteps
    if kind == "linear":
        betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)
    elif kind == "quad":
        betas = np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2
    elif kind == "const":
        betas = np.full(T, beta_end, dtype=np.float64)
    elif kind == "jsd":  # 1/T, 1/(T-1), ..., 1
        betas = 1.0 / np.linspace(T, 1, T, dtype=np.float64)
    elif kind == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-np.linspace(-6, 6, T)))
        betas = s * (beta_end - beta_start) + beta_start
    elif kind == "cosine":  # improved-DDPM, ᾱ(t) = cos²((t/T + s)/(1 + s)·π/2), β capped at 0.999
        def abar(u: float) -> float:
            return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = np.array([min(1 - abar((i + 1) / T) / abar(i / T), 0.999) for i in range(T)])
    else:
        raise ValueError(f"unknown beta schedule {kind!r}; choose one of {', '.join(BETA_SCHEDULES)}")
    return betas


@dataclass(frozen=True)
class Schedule:
    """β and ᾱ of a prior's forward process (float64 numpy, length T)."""

    betas: np.ndarray

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        """Build from a prior config's ``beta_schedule``, ``beta_start``, ``beta_end``,
        ``num_diffusion_timesteps`` fields (defaults: linear 1e-4 → 0.02 over 1000 steps)."""
        return cls(
            make_betas(
                config.get("beta_schedule", "linear"),
                float(config.get("beta_start", 1e-4)),
                float(config.get("beta_end", 0.02)),
                int(config.get("num_diffusion_timesteps", 1000)),
            )
        )

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """ᾱ_t for t = 0..T−1 (float64)."""
        return np.cumprod(1.0 - self.betas)

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t as a Python float, with ᾱ_{−1} = 1."""
        if t == -1:
            return 1.0
        if not 0 <= t < self.num_timesteps:
            raise ValueError(f"timestep {t} outside [-1, {self.num_timesteps - 1}]")
        return float(self.alphas_cumprod[t])

    def alpha_bar_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """ᾱ as a float32 tensor of length T + 1 where index 0 holds ᾱ_{−1} = 1 and index t + 1 holds ᾱ_t."""
        ab = np.concatenate([[1.0], self.alphas_cumprod])
        return torch.tensor(ab, dtype=torch.float32, device=device)

    def to_dict(self) -> dict:
        return {"num_timesteps": self.num_timesteps, "beta_first": float(self.betas[0]),
                "beta_last": float(self.betas[-1])}


def linear_schedule(num_timesteps: int = 1000) -> Schedule:
    """The schedule every prior of this project uses: linear β 1e-4 → 0.02."""
    return Schedule(make_betas("linear", 1e-4, 0.02, num_timesteps))


def time_pairs(steps: int = 100, num_timesteps: int = 1000) -> list[tuple[int, int]]:
    """The reference (RePaint, no jumps) grid: skip = T // steps, pairs (t, t') from
    ((steps−1)·skip, (steps−2)·skip) down to (0, −1). 100 steps → (990, 980) … (10, 0), (0, −1)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    skip = num_timesteps // steps
    seq = list(range(steps - 1, -2, -1))  # steps-1, ..., 0, -1
    return [(a * skip, b * skip if b >= 0 else -1) for a, b in zip(seq[:-1], seq[1:], strict=True)]


def quad_timesteps(steps: int, num_timesteps: int = 1000) -> list[int]:
    """DiffPIR's "quad" grid, from T−1 down to 0 (``steps`` entries): seq_i = ⌊√(i·T²/(steps−1))⌋ with 1
    taken from the last entry, t_i = T−1−seq_i (100 steps: 999, 899, 857, …, 5, 0)."""
    if not 2 <= steps <= num_timesteps:
        raise ConfigError(f"the quad time grid needs 2 <= steps <= {num_timesteps}, got {steps}")
    seq = [int(s) for s in np.sqrt(np.linspace(0, num_timesteps**2, steps))]
    seq[-1] -= 1
    return [num_timesteps - 1 - s for s in seq]


@dataclass(frozen=True)
class TimeGrid:
    """The integer timesteps a sampler visits, in its order (t_0 first, each in [0, T)); step i goes from t_i
    to t_{i+1}, the last step to t' = −1 (ᾱ = 1). ``name`` is the rule that built it (one of TIME_GRIDS)."""

    name: str
    timesteps: tuple[int, ...]

    @classmethod
    def named(cls, name: str, steps: int, num_timesteps: int = 1000) -> TimeGrid:
        """The ``steps``-step grid of rule ``name`` for a T = ``num_timesteps`` schedule: "uniform" (the pairs
        of :func:`time_pairs`) or "quad" (:func:`quad_timesteps`)."""
        if name == "uniform":
            return cls(name, tuple(t for t, _ in time_pairs(steps, num_timesteps)))
        if name == "quad":
            return cls(name, tuple(quad_timesteps(steps, num_timesteps)))
        raise ConfigError(f"unknown time grid {name!r}; choose one of {', '.join(TIME_GRIDS)}")

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The steps as (t, t') pairs, t' = −1 for the last."""
        return list(zip(self.timesteps, (*self.timesteps[1:], -1), strict=True))

    def __len__(self) -> int:
        return len(self.timesteps)
