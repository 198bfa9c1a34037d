"""Degradation operators (A, Aᵀ, Aᵀ(AAᵀ+ηI)⁻¹, A⁺; SVD factors where they exist), kernels, observations and
measurement-only baselines."""

from .base import DecomposableOperator, Operator, SpectralBasis
from .baselines import baseline, bicubic_upsample, pinv_baseline, tikhonov
from .factory import make_mask
from .fft import FFTBlur, FFTSuperRes
from .kernels import bicubic_taps_matlab, bicubic_taps_svd, gaussian_taps, motion_kernel, outer_kernel
from .observation import degrade
from .svd import Colorization, Identity, Inpainting, SeparableSVD
from .tasks import ALIASES, TASKS, make_operator

__all__ = [
    "ALIASES", "TASKS", "Colorization", "DecomposableOperator", "FFTBlur", "FFTSuperRes", "Identity", "Inpainting",
    "Operator", "SeparableSVD", "SpectralBasis", "baseline", "bicubic_taps_matlab", "bicubic_taps_svd",
    "bicubic_upsample", "degrade", "gaussian_taps", "make_mask", "make_operator", "motion_kernel", "outer_kernel",
    "pinv_baseline", "tikhonov",
]
