"""Sampling: schedules, the DDPG/IDPG sampler and its peers, presets and the Restorer."""

from ddpg.schedule import Schedule, linear_schedule, time_pairs

from .presets import Preset, find_preset, list_presets, load_preset
from .restorer import Restorer
from .samplers import SAMPLERS, get_sampler
from .samplers.ddpg import ddpg_sample

__all__ = ["SAMPLERS", "Preset", "Restorer", "Schedule", "ddpg_sample", "find_preset", "get_sampler",
           "linear_schedule", "list_presets", "load_preset", "time_pairs"]
