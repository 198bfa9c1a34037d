"""Sampler registry: every restoration method by name, with what it needs from the prior and operator.

A sampler is called as ``fn(denoiser, operator, y, sigma_y, *, steps, x_T=None, noise=None,
generator=None, callback=None, **hyper)`` and returns (B,3,H,W) float32 in the [-1, 1] scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from ddpg.errors import ConfigError

from .ddnm import ddnm_sample
from .ddpg import ddpg_sample
from .ddpg_select import ddpg_sample_with_options
from .ddrm import ddrm_sample
from .diffpir import diffpir_sample
from .dpps import dpps_sample
from .dps import dps_sample


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
    "ddpg": SamplerSpec("ddpg", ddpg_sample_with_options,
                        "DDPG: preconditioned guidance with noise injection (Garber & Tirer 2024)",
                        hyper_names=DDPG_HYPER + ("select_candidates", "n_max")),
    "idpg": SamplerSpec("idpg", partial(ddpg_sample, inject_noise=False),
                        "IDPG: the deterministic variant of DDPG", hyper_names=DDPG_HYPER),
    "ddnm": SamplerSpec("ddnm", ddnm_sample, "DDNM/DDNM+: null-space projection (Wang et al. 2023); "
                        "DDNM+ for sigma_y > 0 needs an SVD operator or a circular blur", hyper_names=("eta",)),
    "ddrm": SamplerSpec("ddrm", ddrm_sample, "DDRM: per-singular-value updates (Kawar et al. 2022); SVD operators "
                        "and circular blurs", default_steps=20, hyper_names=("eta", "eta_b")),
    "diffpir": SamplerSpec("diffpir", diffpir_sample, "DiffPIR: closed-form proximal data step (Zhu et al. 2023)",
                           hyper_names=("lam", "zeta", "clip")),
    "dps": SamplerSpec("dps", dps_sample, "DPS: gradient of ||y - A x0|| through the UNet (Chung et al. 2023)",
                       default_steps=1000, needs_grad=True, hyper_names=("zeta", "var_type", "clip")),
    "dpps": SamplerSpec("dpps", dpps_sample, "DPPS: DPS with noise-candidate selection (Wu et al. 2024)",
                        default_steps=1000, needs_grad=True, hyper_names=("zeta", "n_max", "var_type", "clip")),
}


def register(spec: SamplerSpec) -> None:
    SAMPLERS[spec.name] = spec


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
