"""Degradation operators (A, Aᵀ, Aᵀ(AAᵀ+ηI)⁻¹, A⁺; SVD factors where they exist), kernels, observations and
measurement-only baselines. Importing it registers the plug-in tasks ``$DDPG_TASKS`` names
(:func:`~.tasks.load_task_plugins`)."""

import os

from .base import DecomposableOperator, Operator, SpectralBasis, stack_operators
from .baselines import baseline, bicubic_upsample, pinv_baseline, tikhonov
from .factory import make_mask
from .fft import FFTBlur, FFTSuperRes
from .kernels import bicubic_taps_matlab, bicubic_taps_svd, gaussian_taps, motion_kernel, outer_kernel
from .observation import degrade
from .svd import Colorization, Identity, Inpainting, SeparableSVD
from .tasks import ALIASES, PLUGINS_VARIABLE, TASKS, load_task_plugins, make_operator, register_task, unregister_task

__all__ = [
    "ALIASES", "TASKS", "Colorization", "DecomposableOperator", "FFTBlur", "FFTSuperRes", "Identity", "Inpainting",
    "Operator", "SeparableSVD", "SpectralBasis", "baseline", "bicubic_taps_matlab", "bicubic_taps_svd",
    "bicubic_upsample", "degrade", "gaussian_taps", "make_mask", "make_operator", "motion_kernel", "outer_kernel",
    "pinv_baseline", "register_task", "stack_operators", "tikhonov", "unregister_task",
]

load_task_plugins(os.environ.get(PLUGINS_VARIABLE))
