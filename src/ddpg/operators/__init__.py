"""Degradation operators (A, Aᵀ, Aᵀ(AAᵀ+ηI)⁻¹, A⁺; SVD factors where they exist), kernels and observations."""

from .base import Operator
from .degrade import baseline, bicubic_upsample, degrade
from .factory import ALIASES, TASKS, make_mask, make_operator
from .fft import FFTBlur, FFTSuperRes
from .kernels import motion_kernel
from .svd import Colorization, Identity, Inpainting, SeparableSVD

__all__ = [
    "ALIASES", "TASKS", "Colorization", "FFTBlur", "FFTSuperRes", "Identity", "Inpainting", "Operator",
    "SeparableSVD", "baseline", "bicubic_upsample", "degrade", "make_mask", "make_operator", "motion_kernel",
]
