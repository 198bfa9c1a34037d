"""Sampler registry: every restoration method by name, with what it needs from the prior and operator.

A sampler is called as ``fn(denoiser, operator, y, sigma_y, *, steps, x_T=None, noise=None,
generator=None, callback=None, **hyper)`` and returns (B,3,H,W) float32 in the [-1, 1] scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ddpg.errors import ConfigError

from .ddpg import ddpg_sample


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    description: str
    default_steps: int = 100
    needs_grad: bool = False  # differentiates through the UNet: torch backend only
    needs_svd: bool = False  # needs operator.U/V/singulars
    hyper_names: tuple[str, ...] = field(default_factory=tuple)


DDPG_HYPER = ("gamma", "zeta", "eta_tilde", "xi", "step_size_mode", "scale_ls")

SAMPLERS: dict[str, SamplerSpec] = {
    "ddpg": SamplerSpec("ddpg", partial(ddpg_sample, inject_noise=True),
                        "DDPG: preconditioned guidance with noise injection (Garber & Tirer 2024)",
                        hyper_names=DDPG_HYPER),
    "idpg": SamplerSpec("idpg", partial(ddpg_sample, inject_noise=False),
                        "IDPG: the deterministic variant of DDPG", hyper_names=DDPG_HYPER),
}


def register(spec: SamplerSpec) -> None:
    SAMPLERS[spec.name] = spec


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
