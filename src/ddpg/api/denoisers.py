"""The denoiser a restore call runs (torch prior or ONNX/TensorRT engine), and the checks that refuse a device,
backend, speed option or engine before any input is read."""

from __future__ import annotations

from pathlib import Path

import torch

from ddpg.api.settings import PRIOR_FAMILIES
from ddpg.engine_metadata import check_engine_matches
from ddpg.errors import ConfigError, ParameterError
from ddpg.models import prior_config, read_state_dict
from ddpg.models.checkpoints import REGISTRY, guess_prior, sha256_file
from ddpg.precisions import PRECISIONS
from ddpg.runtime.backends import backend_capabilities
from ddpg.runtime.backends import make_denoiser as backend_denoiser


def check_device(device: str) -> None:
    """Refuse a device this torch build or machine does not have, before any work."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ParameterError("device", device, str(exc)) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("device", device, f"CUDA is not available (torch {torch.__version__}, "
                                               f"{torch.cuda.device_count()} GPUs visible)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ParameterError("device", device, f"only {torch.cuda.device_count()} GPUs visible")


def make_denoiser(prior: str | None, checkpoint: str | None, backend: str, engine: str | None, device: str,
                  class_label: int | None = None, **options):
    """The denoiser of a backend: torch with ``prior`` (+ ``checkpoint``), or an ONNX/TensorRT ``engine``
    (``options`` go to its constructor). Unavailable backends raise ConfigError("backend X not available: reason")."""
    capabilities = backend_capabilities(backend)
    labels = None if class_label is None else torch.tensor([int(class_label)])
    try:
        if not capabilities.engine_file:
            return backend_denoiser(backend, prior=prior, checkpoint=checkpoint, device=device,
                                    class_labels=labels)
        return backend_denoiser(backend, engine=_loadable_engine(backend, engine, device),
                                device=device, class_labels=labels, **options)
    except ImportError as exc:
        raise ConfigError(f"backend {backend!r} not available: {exc}") from exc
    except ConfigError as exc:
        if "class-conditional" in str(exc):
            raise ParameterError("class_label", class_label, str(exc)) from exc
        raise


def _loadable_engine(backend: str, engine: str | None, device: str) -> str | None:
    """What the runtime backend loads: for a backend that runs its own plan (``plan_from_onnx``: TensorRT's plan,
    OpenVINO's IR) an ``.onnx`` export is first built (or found) in its cache (the export layer builds, the runtime
    only loads and runs); anything else as given."""
    if (not backend_capabilities(backend).plan_from_onnx or engine is None or Path(engine).suffix != ".onnx"
            or not Path(engine).is_file()):
        return engine
    from ddpg.export.engine_plans import plan_from_onnx

    return str(plan_from_onnx(backend, engine, device))


def check_engine_prior(denoiser, preset_prior: str | None) -> str | None:
    """The prior an ONNX/TensorRT engine holds (its metadata); with a preset, the engine must hold the preset's
    prior and diffusion schedule (EngineError otherwise)."""
    info = denoiser.info
    if preset_prior is not None:
        schedule = prior_config(preset_prior) if preset_prior in PRIOR_FAMILIES else None
        check_engine_matches(info, preset_prior, schedule)
    return info.prior


def check_speed_options(backend: str, device: str, precision: str, compile: bool, cuda_graph: bool) -> None:
    """Refuse speed options this backend or device cannot honour, before any work."""
    if precision not in PRECISIONS:
        raise ParameterError("precision", precision, f"choose one of {', '.join(PRECISIONS)}")
    if backend_capabilities(backend).engine_file and (precision != "fp32" or compile):
        param, value = ("precision", precision) if precision != "fp32" else ("compile", compile)
        raise ParameterError(param, value, f"applies to the torch backend; an {backend} engine has its precision "
                                           "built in when it is exported")
    if cuda_graph and torch.device(device).type != "cuda":
        raise ParameterError("cuda_graph", cuda_graph, f"needs a CUDA device, not device {device}")


def check_engine_source(backend: str, prior: str | None, checkpoint: str | None) -> None:
    """Refuse a prior or checkpoint for a backend that reads the prior from its engine file."""
    if backend_capabilities(backend).engine_file and (prior is not None or checkpoint is not None):
        raise ParameterError("backend", backend, "reads the prior from the engine; drop prior and checkpoint")


def guess_prior_of(checkpoint: str) -> str:
    """The named prior whose architecture a checkpoint file fits."""
    name = guess_prior({k: tuple(v.shape) for k, v in read_state_dict(checkpoint).items()})
    if name is None:
        raise ParameterError("checkpoint", checkpoint, "matches no known prior; give the prior (a name or a YAML "
                                                       "config)")
    return name


def engine_batch_profile(denoiser):
    """The batch sizes an ONNX/TensorRT engine takes (its ``BatchProfile``); None for a PyTorch prior."""
    return None if denoiser.info is None else denoiser.info.batch


def size_multiple(denoiser) -> int:
    """The factor the prior's image sides must be a multiple of (its UNet's total downsampling; 1 for the
    Gaussian prior)."""
    if getattr(denoiser.prior, "downsample_factor", None):
        return int(denoiser.prior.downsample_factor)
    cfg = denoiser.config
    mult = cfg.get("ch_mult") or cfg.get("channel_mult")
    if cfg.get("kind") in ("ddpm", "adm") and mult:
        return 2 ** (len(mult) - 1)
    return 1


def prior_record(prior: str | None, checkpoint: str | None, backend: str, engine: str | None, denoiser) -> dict:
    """The sidecar's ``prior`` entry: name, backend, engine, and the source checkpoint with its sha256."""
    record = {"spec": prior, "name": denoiser.name, "backend": backend, "engine": engine,
              "checkpoint": checkpoint, "checkpoint_sha256": None}
    info = denoiser.info  # an engine: what it was exported from
    if info is not None:
        record.update(checkpoint=info.checkpoint or None, checkpoint_sha256=info.checkpoint_sha256 or None,
                      precision=info.precision)
    elif checkpoint is not None:
        record["checkpoint_sha256"] = sha256_file(Path(checkpoint))
    elif prior in REGISTRY:
        record["checkpoint_sha256"] = REGISTRY[prior].sha256
    return record
