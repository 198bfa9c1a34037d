"""The one denoiser interface every sampler uses, whatever the prior, its precision and its backend: the fields
every denoiser sets (:class:`DenoiserInterface`), what a backend can do (:class:`BackendCapabilities`), the torch
prior's denoiser (:class:`Denoiser`) and what a prior's output predicts (:func:`prediction_type`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import nn

from ddpg.errors import ConfigError
from ddpg.schedule import Schedule

if TYPE_CHECKING:
    from ddpg.engine_metadata import EngineInfo

PREDICTIONS = ("epsilon", "x0", "v")  # what a prior's first 3 output channels predict


@dataclass(frozen=True)
class BackendCapabilities:
    """What a denoiser backend can do, whatever prior or engine it loads: callers read these fields, never the
    backend's name (``ddpg.runtime.backends.capabilities`` holds every backend's record)."""

    grad: bool  # ``model_output`` is differentiable in x_t: DPS and DPPS run on it
    engine_file: bool  # runs an exported engine whose metadata names the prior, its precision built in (not a module)
    engine_call_graph: bool  # ``cuda_graph`` captures the engine call inside the backend; the sampler steps stay eager
    plan_from_onnx: bool  # an ``.onnx`` export is first built into this backend's own plan (the export layer builds)


TORCH_CAPABILITIES = BackendCapabilities(grad=True, engine_file=False, engine_call_graph=False, plan_from_onnx=False)


@runtime_checkable
class DenoiserInterface(Protocol):
    """What every denoiser is, whatever its backend: ``denoiser(x_t (B,3,H,W) float32, t (B,) float32)`` →
    (B,3,H,W) float32, the prediction ``prediction`` names, and these fields, which callers read (no
    ``getattr`` with a default). With ``capabilities.grad`` it also has ``model_output(x_t, t)``: every output
    channel, differentiable in x_t."""

    backend: str  # the backend's name, for messages and records
    capabilities: BackendCapabilities  # what the backend can do
    name: str | None  # the prior's name; None for a custom config
    config: dict  # the prior's config ({} when nothing is known of it)
    schedule: Schedule  # the diffusion schedule the prior was trained with
    prediction: str  # what the output predicts: one of PREDICTIONS
    graph_safe: bool  # a whole sampler step around a call can be captured in a torch CUDA graph (no host sync or copy)
    compile_mode: str | None  # the torch.compile mode the prior runs under; None when not compiled
    prior: nn.Module | None  # the eager torch module (FLOP counts, downsampling); None for an engine
    info: EngineInfo | None  # an engine's metadata (batch profile, source weights); None for a torch prior

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    def options(self) -> dict:
        """The speed options, for reports and sidecars ({} when there are none)."""
        ...


def prediction_type(model) -> str:
    """What the output of ``model`` (a prior, or a denoiser of any backend: anything with a ``config``
    dict) predicts: its config's ``prediction``, one of PREDICTIONS — "epsilon" (ε, the default: every prior
    of this project), "x0" (x̂₀) or "v" (v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀)."""
    kind = model.config.get("prediction", "epsilon")
    if kind not in PREDICTIONS:
        raise ConfigError(f"unknown prediction type {kind!r} in the prior's config; choose one of "
                          f"{', '.join(PREDICTIONS)}")
    return kind


class Denoiser:
    """out = denoiser(x_t (B,3,H,W) float32, t (B,) float32 timestep values) → (B,3,H,W) float32: ε, or what
    the prior's :func:`prediction_type` says (x̂₀ or v).

    ``model_output`` returns every output channel (6 for learn_sigma ADM: ε then the variance values) and is
    differentiable in x_t; callers choose ``torch.no_grad``/``inference_mode`` themselves. Never captured in a
    CUDA graph (``graph_safe`` False: the analytic prior copies to the device per call; ``FastDenoiser`` is the
    graph path of a UNet).
    """

    backend = "torch"
    capabilities = TORCH_CAPABILITIES
    graph_safe = False
    compile_mode = None
    info = None

    def __init__(self, prior: nn.Module, class_labels: torch.Tensor | None = None):
        self.prior = prior
        self.config: dict = getattr(prior, "config", {})
        self.name: str | None = self.config.get("name")
        self.schedule = Schedule.from_config(self.config)
        self.prediction = prediction_type(self)
        self.class_labels = class_labels

    def options(self) -> dict:
        return {}

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
    size = model.config.get("image_size")
    return int(size) if size else None
