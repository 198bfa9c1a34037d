"""Sampler registry: every restoration method by name, its params dataclass and how it runs.

A forward-only method (``method``: the ``method`` protocol of :mod:`.method`) runs through the one loop
:func:`.method.run_method`; DPS and DPPS differentiate through the UNet and keep their own loops (``loop``).
``SamplerSpec.capabilities(p)`` says what a method with params ``p`` needs and allows; :func:`methods_where`
lists the methods whose default params have a capability.
``SamplerSpec.restore(denoiser, operator, y, sigma_y, steps=..., x_T=None, noise=None, generator=None,
callback=None, **hyper)`` runs either and returns (B,3,H,W) float32 in the [-1, 1] scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ddpg.errors import ConfigError

from .ddnm import DDNM
from .ddpg import DDPG, DDPGParams
from .ddrm import DDRM
from .diffpir import DiffPIR
from .dpps import DPPSParams, dpps_sample
from .dps import DPSParams, dps_sample
from .method import Method, MethodCapabilities, hyper_names, make_params, run_method


@dataclass(frozen=True)
class SamplerSpec:
    """One method: ``params`` (its dataclass; ``fixed`` pins fields the method sets, e.g. IDPG's
    inject_noise=False), and either ``method`` (forward-only) or ``loop`` (autograd, with
    ``loop_capabilities``)."""

    name: str
    description: str
    params: type
    method: Method | None = None
    loop: Callable | None = None
    default_steps: int = 100
    loop_capabilities: MethodCapabilities | None = None  # what ``loop`` needs (a method's: method.capabilities)
    fixed: dict = field(default_factory=dict)

    @property
    def hyper_names(self) -> tuple[str, ...]:
        """The params' fields a user sets: all but σ_y, the method-fixed ones and those ``fixed`` pins."""
        return tuple(n for n in hyper_names(self.params) if n not in self.fixed)

    def build(self, sigma_y: float, hyper: dict | None = None):
        """Validated params from σ_y and hyper-parameters named as the dataclass's fields."""
        return make_params(self.params, sigma_y, {**(hyper or {}), **self.fixed})

    def capabilities(self, p) -> MethodCapabilities:
        """What the method with built params ``p`` needs and allows: its ``method``'s, or its loop's."""
        return self.method.capabilities(p) if self.method is not None else self.loop_capabilities

    def run(self, p, denoiser, operator, y: torch.Tensor, *, steps: int, x_T: torch.Tensor | None = None,
            noise=None, generator: torch.Generator | None = None, callback=None) -> torch.Tensor:
        """The method with built params ``p``: the loop ``run_method`` (forward-only) or its own ``loop``."""
        if self.method is not None:
            return run_method(self.method, p, denoiser, operator, y, steps, x_T, noise, generator, callback)
        return self.loop(denoiser, operator, y, p, steps=steps, x_T=x_T, noise=noise, generator=generator,
                         callback=callback)

    def restore(self, denoiser, operator, y: torch.Tensor, sigma_y: float, *, steps: int,
                x_T: torch.Tensor | None = None, noise=None, generator: torch.Generator | None = None,
                callback=None, **hyper) -> torch.Tensor:
        """:meth:`run` with the params built from σ_y and ``hyper``."""
        return self.run(self.build(sigma_y, hyper), denoiser, operator, y, steps=steps, x_T=x_T, noise=noise,
                        generator=generator, callback=callback)


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpg": SamplerSpec("ddpg", "DDPG: preconditioned guidance with noise injection (Garber & Tirer 2024)",
                        DDPGParams, DDPG(), fixed={"inject_noise": True}),
    "idpg": SamplerSpec("idpg", "IDPG: the deterministic variant of DDPG", DDPGParams, DDPG(),
                        fixed={"inject_noise": False, "select_candidates": False}),
    "ddnm": SamplerSpec("ddnm", "DDNM/DDNM+: null-space projection (Wang et al. 2023); DDNM+ for sigma_y > 0 "
                        "needs an SVD operator or a circular blur", DDNM.params, DDNM()),
    "ddrm": SamplerSpec("ddrm", "DDRM: per-singular-value updates (Kawar et al. 2022); SVD operators and circular "
                        "blurs", DDRM.params, DDRM(), default_steps=20),
    "diffpir": SamplerSpec("diffpir", "DiffPIR: closed-form proximal data step (Zhu et al. 2023)",
                           DiffPIR.params, DiffPIR()),
    "dps": SamplerSpec("dps", "DPS: gradient of ||y - A x0|| through the UNet (Chung et al. 2023)", DPSParams,
                       loop=dps_sample, default_steps=1000, loop_capabilities=MethodCapabilities(needs_grad=True)),
    "dpps": SamplerSpec("dpps", "DPPS: DPS with noise-candidate selection (Wu et al. 2024)", DPPSParams,
                        loop=dpps_sample, default_steps=1000,
                        loop_capabilities=MethodCapabilities(needs_grad=True, noise_selection=True)),
}
FORWARD_METHODS = tuple(name for name, spec in SAMPLERS.items() if spec.method is not None)


def methods_where(capable: Callable[[MethodCapabilities], bool]) -> tuple[str, ...]:
    """The methods whose default params (σ_y 0) have ``capable`` capabilities, in registry order (for listings and
    messages; a run checks its own params)."""
    return tuple(name for name, spec in SAMPLERS.items() if capable(spec.capabilities(spec.build(0.0))))


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(sorted(SAMPLERS))}")
    return SAMPLERS[name]
