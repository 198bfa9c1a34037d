"""Diffusion priors: the DDPM and ADM UNets, the analytic Gaussian prior, configs, checkpoints, and the
denoiser interface the samplers use."""

from .checkpoints import REGISTRY, cache_dir, download, load_prior, read_state_dict, resolve_checkpoint
from .configs import PRIOR_NAMES, create_prior, prior_config
from .denoiser import PREDICTIONS, Denoiser, as_denoiser, prediction_type
from .gaussian import GaussianPrior

__all__ = [
    "PREDICTIONS", "PRIOR_NAMES", "REGISTRY", "Denoiser", "GaussianPrior", "as_denoiser", "cache_dir",
    "create_prior", "download", "load_prior", "prediction_type", "prior_config", "read_state_dict",
    "resolve_checkpoint",
]
