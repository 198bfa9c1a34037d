"""The one denoiser interface every sampler uses, whatever the prior and its precision, and what a prior's
output predicts (:func:`prediction_type`)."""

from __future__ import annotations

import torch
from torch import nn

from ddpg.errors import ConfigError
from ddpg.schedule import Schedule

PREDICTIONS = ("epsilon", "x0", "v")  # what a prior's first 3 output channels predict


def prediction_type(model) -> str:
    """What the output of ``model`` (a prior, or a denoiser of any backend: anything with a ``config``
    dict) predicts: its config's ``prediction``, one of PREDICTIONS — "epsilon" (ε, the default: every prior
    of this project), "x0" (x̂₀) or "v" (v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀)."""
    kind = (getattr(model, "config", None) or {}).get("prediction", "epsilon")
    if kind not in PREDICTIONS:
        raise ConfigError(f"unknown prediction type {kind!r} in the prior's config; choose one of "
                          f"{', '.join(PREDICTIONS)}")
    return kind


class Denoiser:
    """out = denoiser(x_t (B,3,H,W) float32, t (B,) float32 timestep values) → (B,3,H,W) float32: ε, or what
    the prior's :func:`prediction_type` says (x̂₀ or v).

    ``model_output`` returns every output channel (6 for learn_sigma ADM: ε then the variance values) and is
    differentiable in x_t; callers choose ``torch.no_grad``/``inference_mode`` themselves.
    """

    backend = "torch"
    supports_grad = True

    def __init__(self, prior: nn.Module, class_labels: torch.Tensor | None = None):
        self.prior = prior
        self.config: dict = getattr(prior, "config", {})
        self.name: str | None = self.config.get("name")
        self.schedule = Schedule.from_config(self.config)
        self.prediction = prediction_type(prior)
        self.class_labels = class_labels

    def _labels(self, batch: int, device) -> torch.Tensor | None:
        if self.class_labels is None:
            return None
        labels = self.class_labels.to(device)
        return labels.expand(batch) if labels.numel() == 1 else labels

    def model_output(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.prior(x_t, t, self._labels(x_t.shape[0], x_t.device)).float()

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model_output(x_t, t)[:, :3]


def as_denoiser(prior: nn.Module, class_labels: torch.Tensor | int | None = None) -> Denoiser:
    """Wrap a prior module (UNet or GaussianPrior) in the :class:`Denoiser` interface."""
    if isinstance(class_labels, int):
        class_labels = torch.tensor([class_labels])
    name = getattr(prior, "config", {}).get("name") or getattr(prior, "config", {}).get("kind", "")
    conditional = getattr(prior, "num_classes", None) is not None
    if conditional and class_labels is None:
        raise ConfigError(f"prior {name} is class-conditional: pass class_labels")
    if not conditional and class_labels is not None:
        raise ConfigError(f"prior {name} is unconditional: class_labels must be None")
    return Denoiser(prior, class_labels)


def native_image_size(model) -> int | None:
    """The side (pixels) of the square images ``model`` (a prior, denoiser or engine) was trained on, from its
    config; None when it has none (the analytic prior)."""
    size = (getattr(model, "config", {}) or {}).get("image_size")
    return int(size) if size else None
