"""Prior configs: named YAML files under ddpg/configs/priors, YAML paths, or dicts → modules."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
import yaml
from torch import nn

from ddpg.errors import ConfigError

from .adm import UNetModel
from .ddpm import DDPMModel
from .gaussian import GaussianPrior

PRIOR_NAMES = ("celeba_hq", "imagenet256_uncond", "imagenet256_cond", "ffhq256", "face64", "gaussian")
SCHEDULE_DEFAULTS = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_diffusion_timesteps": 1000}


def prior_config(spec: str | Path | dict) -> dict:
    """The config dict of a prior name, a YAML path or a dict (schedule fields filled with defaults)."""
    if isinstance(spec, dict):
        cfg = dict(spec)
    else:
        text_spec = str(spec)
        if text_spec in PRIOR_NAMES:
            cfg = yaml.safe_load(resources.files("ddpg.configs").joinpath("priors", f"{text_spec}.yaml").read_text())
        elif text_spec.endswith((".yaml", ".yml")):
            path = Path(text_spec)
            if not path.is_file():
                raise ConfigError(f"{path}: prior config file not found")
            try:
                cfg = yaml.safe_load(path.read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
            if not isinstance(cfg, dict):
                raise ConfigError(f"{path}: a prior config must be a mapping")
        else:
            raise ConfigError(f"unknown prior {text_spec!r}; known: {', '.join(PRIOR_NAMES)} (or a .yaml path)")
    if cfg.get("kind") not in ("ddpm", "adm", "gaussian"):
        raise ConfigError(f"prior config needs kind: ddpm | adm | gaussian, got {cfg.get('kind')!r}")
    for key, value in SCHEDULE_DEFAULTS.items():
        cfg.setdefault(key, value)
    return cfg


def create_prior(spec: str | Path | dict) -> nn.Module:
    """Build a prior module (default-initialised weights, eval mode) from a name, YAML path or dict."""
    cfg = prior_config(spec)
    try:
        model = {"ddpm": DDPMModel, "adm": UNetModel, "gaussian": GaussianPrior}[cfg["kind"]](cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {cfg['kind']} prior config: {exc}") from exc
    return model.eval()


def meta_state_shapes(spec: str | dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a prior, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = create_prior(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
