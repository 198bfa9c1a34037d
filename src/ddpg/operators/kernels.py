"""Blur and resampling kernels of the paper tasks, and the motion-blur kernel generator."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ddpg.errors import OperatorError


def keys_cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """Keys' cubic convolution kernel k(x) (a = −0.5 is MATLAB's and the reference's)."""
    x = np.abs(np.asarray(x, dtype=np.float64))
    inner = (a + 2) * x**3 - (a + 3) * x**2 + 1
    outer = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return np.where(x <= 1, inner, np.where(x < 2, outer, 0.0))


def bicubic_taps_svd(scale: int = 4) -> np.ndarray:
    """The 4·scale-tap Keys kernel of the SVD SR operator, sampled at (i − 2s + 0.5)/s, sum 1.
    Scale 4: [−0.001709, −0.010986, …, 0.240967, 0.240967, …] (16 taps)."""
    n = 4 * scale
    taps = keys_cubic((np.arange(n) - n / 2 + 0.5) / scale)
    return taps / taps.sum()


def bicubic_taps_matlab(scale: int = 4) -> np.ndarray:
    """MATLAB imresize's cubic kernel for 1/scale: width 4·scale, 4·scale + 1 taps at integer offsets,
    weights k_Keys(offset/scale)/scale (end taps 0), normalised. Scale 4: 17 taps centred at offset 0."""
    offsets = np.arange(-2 * scale, 2 * scale + 1)
    taps = keys_cubic(offsets / scale) / scale
    return taps / taps.sum()


def gaussian_taps(size: int = 5, sigma: float = 10.0) -> np.ndarray:
    """exp(−x²/2σ²) at x = −(size//2) … size//2, normalised. The paper's "Gaussian" blur is 5 taps, σ = 10."""
    if size < 1 or sigma <= 0:
        raise OperatorError(f"gaussian kernel needs size >= 1 and sigma > 0, got size={size}, sigma={sigma}")
    x = np.arange(size) - (size - 1) / 2
    taps = np.exp(-(x**2) / (2 * sigma**2))
    return taps / taps.sum()


def outer_kernel(taps: np.ndarray) -> np.ndarray:
    """Separable 2-D kernel from 1-D taps, normalised to sum 1 (float32)."""
    k = np.outer(taps, taps)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(seed: int, size: int = 61, intensity: float = 0.5) -> np.ndarray:
    """A motion-blur kernel (size×size, float32, sum 1) exactly as LeviBorodenko/motionblur's
    ``Kernel(size=(size, size), intensity).kernelMatrix`` after ``numpy.random.seed(seed)`` (first draw).

    Uses a private ``RandomState(seed)`` (the same stream as the legacy global generator) and leaves NumPy's
    global state alone. Steps: random path length, Beta-distributed steps, jittered angles, a centred and
    rotated polyline drawn with Pillow at twice the size, Gaussian-blurred, Lanczos-resized, 8-bit.
    """
    if not 0 <= intensity <= 1:
        raise OperatorError(f"motion kernel intensity must be in [0, 1], got {intensity}")
    if size < 3:
        raise OperatorError(f"motion kernel size must be >= 3, got {size}")
    rs = np.random.RandomState(seed)
    cw, ch = 2 * size, 2 * size
    diag = math.hypot(cw, ch)
    path_len = 0.75 * diag * (rs.uniform(0, 1) + rs.uniform(0, intensity**2))
    steps: list[float] = []
    while sum(steps) < path_len:
        step = rs.beta(1, 30) * (1 - intensity + 0.1) * diag
        if step < path_len:
            steps.append(step)
    max_angle = rs.uniform(0, intensity * math.pi)
    jitter = rs.beta(2, 20)
    angles = [rs.uniform(-max_angle, max_angle)]
    while len(angles) < len(steps):
        angle = rs.triangular(0, intensity * max_angle, max_angle + 0.1)
        angle *= -np.sign(angles[-1]) if rs.uniform() < jitter else np.sign(angles[-1])
        angles.append(angle)
    path = np.cumsum(np.array(steps) * np.exp(1j * np.array(angles)))
    path -= path.sum() / len(steps)
    path *= np.exp(1j * rs.uniform(0, math.pi))
    path += (cw + 1j * ch) / 2
    canvas = Image.new("RGB", (cw, ch))
    ImageDraw.Draw(canvas).line([(p.real, p.imag) for p in path], width=int(diag / 150))
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=int(diag * 0.01)))
    canvas = canvas.resize((size, size), resample=Image.LANCZOS).convert("L")
    kernel = np.asarray(canvas, dtype=np.float32)
    if kernel.sum() == 0:
        raise OperatorError(f"motion kernel of size {size} came out empty (the line width int(diag/150) is 0 "
                         "below size 54); use a larger kernel_size")
    return kernel / kernel.sum()
