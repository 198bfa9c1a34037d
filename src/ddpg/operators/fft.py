"""Circular-boundary operators by FFT: convolution blur and blur + s-fold decimation (SR).

Kernels are placed with their centre ((kh−1)//2, (kw−1)//2) at pixel (0, 0), so A is a true convolution;
Aᵀ multiplies by conj(K̂) (exact for any kernel size). Spectra are computed once per device and dtype and
all batch items and channels go through one rfft2/irfft2. Blurs of one size stack (:meth:`FFTBlur.stack`):
sample i of a batch is multiplied by its own K̂_i.
"""

from __future__ import annotations

import numpy as np
import torch

from ddpg.errors import OperatorError

from .base import DeviceCache, Operator, SpectralBasis, per_sample


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


def nonzero_threshold(power: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Eigenvalues of AAᵀ (σ²) at or below this count as zero for A⁺: σ ≤ max(H, W)·eps·σ_max, NumPy's
    default rcond for pinv; σ_max per spectrum, the last two dimensions of ``power`` (one value per sample of a
    stacked operator, shaped to broadcast against it)."""
    rcond = max(size) * torch.finfo(power.dtype).eps
    return power.amax(dim=(-2, -1), keepdim=True) * rcond**2


class FFTBlur(Operator):
    """y = k ⊛ x (circular), measurement (B, 3, H, W)."""

    has_svd = False

    def __init__(self, kernel, img_size: int | tuple[int, int], name: str = "deblur_kernel"):
        super().__init__(img_size)
        k = torch.as_tensor(np.asarray(kernel, dtype=np.float64))
        if k.ndim != 2:
            raise OperatorError(f"{name}: the kernel must be 2-D, got shape {tuple(k.shape)}")
        H, W = self.img_size
        if k.shape[0] > H or k.shape[1] > W:
            raise OperatorError(f"{name}: kernel {tuple(k.shape)} is larger than the image {(H, W)}")
        if not torch.isfinite(k).all() or float(k.sum()) == 0:
            raise OperatorError(f"{name}: the kernel must be finite with a non-zero sum")
        self.name = name
        self.kernel = k.float()
        self.params = {"kernel_shape": list(k.shape)}
        padded = torch.zeros(H, W, dtype=torch.float64)
        padded[: k.shape[0], : k.shape[1]] = k
        padded = torch.roll(padded, shifts=(-((k.shape[0] - 1) // 2), -((k.shape[1] - 1) // 2)), dims=(0, 1))
        self._padded = padded
        self._spec = DeviceCache(lambda dev, dt: torch.fft.rfft2(padded).to(dev, _complex(dt)))
        self._full = DeviceCache(lambda dev, dt: torch.fft.fft2(padded).to(dev, _complex(dt)))

    def spectrum(self, device=None, dtype=torch.float32, full: bool = False) -> torch.Tensor:
        """K̂ on the image grid: the rfft2 half (H, W//2+1), or the full fft2 (H, W) with ``full``; (samples, 1, …)
        for a stacked blur."""
        return (self._full if full else self._spec).get(torch.device(device or self.device), dtype)

    def batch_key(self) -> tuple:
        """Blurs of one task, image size and device stack, whatever their kernels."""
        return (FFTBlur, self.name, self.img_size, str(self.device))

    @classmethod
    def stack(cls, operators: list[Operator]) -> Operator:
        return StackedFFTBlur(operators)

    def _apply(self, x: torch.Tensor, factor) -> torch.Tensor:
        return torch.fft.irfft2(per_sample(torch.fft.rfft2(x), factor, self.samples), s=x.shape[-2:])

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        return self._apply(x, self.spectrum(x.device, x.dtype))

    def At(self, y: torch.Tensor) -> torch.Tensor:
        self.check_image(y)
        return self._apply(y, self.spectrum(y.device, y.dtype).conj())

    def pinv_eta(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        self.check_eta(eta)
        self.check_image(r)
        K = self.spectrum(r.device, r.dtype)
        return self._apply(r, K.conj() / (K.abs() ** 2 + eta))

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        self.check_image(r)
        K = self.spectrum(r.device, r.dtype)
        power = K.abs() ** 2
        keep = power > nonzero_threshold(power, self.img_size)
        return self._apply(r, torch.where(keep, K.conj() / torch.where(keep, power, 1), 0))

    def spectral(self, device: torch.device, method: str = "this method") -> SpectralBasis:
        return FourierBasis(self.spectrum(device, torch.float32, full=True), self.img_size)


class FourierBasis(SpectralBasis):
    """A circular blur is diagonal in the orthonormal 2-D DFT: A = F* diag(K̂) F, so V = F*, s = |K̂| and
    U = F* diag(K̂/|K̂|). Coefficients are complex (B, 3, H, W), Hermitian-symmetric for real images; every
    sampler rule multiplies them by real factors that depend only on |K̂| (symmetric in frequency), so images
    stay real. ``K`` is the full spectrum (H, W); singular values at or below :func:`nonzero_threshold` are 0."""

    def __init__(self, K: torch.Tensor, size: tuple[int, int]):
        mag = K.abs()
        keep = mag**2 > nonzero_threshold(mag**2, size)
        self.s = torch.where(keep, mag, 0)
        self.phase_conj = torch.where(keep, K.conj() / torch.where(keep, mag, 1), 0)

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x, norm="ortho")

    def image(self, c: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(c, norm="ortho").real

    def meas_coef(self, y: torch.Tensor) -> torch.Tensor:
        return self.phase_conj * torch.fft.fft2(y, norm="ortho")


class StackedFFTBlur(FFTBlur):
    """The circular blurs of a batch: sample i (of ``samples``) is blurred with operator i's kernel, by its own
    cached spectrum K̂_i, so A, Aᵀ, P_η, A⁺ and the Fourier basis give sample i what operator i gives alone.
    There is no single ``kernel``; the spectra are (samples, 1, H, W//2+1) (full: (samples, 1, H, W))."""

    def __init__(self, operators: list[FFTBlur]):
        Operator.__init__(self, operators[0].img_size)
        self.name, self.device, self.samples = operators[0].name, operators[0].device, len(operators)
        self.params = {"samples": len(operators)}
        self._spec = DeviceCache(lambda dev, dt: torch.stack([op.spectrum(dev, dt) for op in operators])[:, None])
        self._full = DeviceCache(
            lambda dev, dt: torch.stack([op.spectrum(dev, dt, full=True) for op in operators])[:, None])

    def batch_key(self) -> Operator:
        return self


def footprint_centre(kernel: torch.Tensor) -> tuple[float, float]:
    """Where a centred convolution with ``kernel`` looks, relative to the output pixel: (k ⊛ x)[n] weighs
    x[n + d] by k[c − d] (c = ((kh−1)//2, (kw−1)//2)), so the weighted mean of d is c − Σ k[m]·m / Σ k."""
    k = kernel.double()
    total = float(k.sum())
    rows = float((k.sum(1) * torch.arange(k.shape[0], dtype=k.dtype)).sum()) / total
    cols = float((k.sum(0) * torch.arange(k.shape[1], dtype=k.dtype)).sum()) / total
    return ((k.shape[0] - 1) // 2 - rows, (k.shape[1] - 1) // 2 - cols)


class FFTSuperRes(Operator):
    """y = (k ⊛ x)[..., ::s, ::s] (circular blur, keep pixel (0, 0) of every s×s block);
    measurement (B, 3, H/s, W/s). (AAᵀ + ηI)⁻¹ is exact in the low-resolution domain: AAᵀ is the circular
    convolution with the autocorrelation of k subsampled by s.

    What a closed-form (DiffPIR-style) data step needs: ``spectrum()`` (K̂ on the H×W grid), ``scale`` and
    the sampling phase — samples are taken at pixel (0, 0) of each block (``x[..., ::s, ::s]`` after the
    blur), and ``sample_offset`` is the (row, col) centre of sample (0, 0)'s footprint (0 for a symmetric
    kernel; (s−1)/2 for the block-average kernel of ``sr_avgpool``)."""

    sample_phase = (0, 0)

    def __init__(self, kernel, scale: int, img_size: int | tuple[int, int], name: str = "sr_bicubic"):
        super().__init__(img_size)
        H, W = self.img_size
        if scale < 1 or H % scale or W % scale:
            raise OperatorError(f"{name}: scale {scale} must divide the image size {(H, W)}")
        self.blur = FFTBlur(kernel, img_size, name=name)
        self.kernel = self.blur.kernel
        self.scale = int(scale)
        self.sample_offset = footprint_centre(self.blur.kernel)
        self.name = name
        self.params = {"scale": self.scale, "impl": "fft", "kernel_shape": list(self.kernel.shape)}
        autocorr = torch.fft.irfft2(torch.fft.rfft2(self.blur._padded).abs() ** 2, s=(H, W))
        lr_response = torch.fft.rfft2(autocorr[:: self.scale, :: self.scale])
        self._lr = DeviceCache(lambda dev, dt: lr_response.real.to(dev, dt))  # real: autocorrelation is even

    def meas_shape(self, batch: int) -> tuple[int, ...]:
        H, W = self.img_size
        return (batch, 3, H // self.scale, W // self.scale)

    def spectrum(self, device=None, dtype=torch.float32, full: bool = False) -> torch.Tensor:
        return self.blur.spectrum(device, dtype, full=full)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur.A(x)[..., :: self.scale, :: self.scale]

    def upsample_zeros(self, y: torch.Tensor) -> torch.Tensor:
        """Zero-filled upsampling (values at positions 0::s)."""
        H, W = self.img_size
        up = y.new_zeros(*y.shape[:-2], H, W)
        up[..., :: self.scale, :: self.scale] = y
        return up

    def At(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return self.blur.At(self.upsample_zeros(y))

    def _lr_solve(self, r: torch.Tensor, factor) -> torch.Tensor:
        return torch.fft.irfft2(torch.fft.rfft2(r) * factor, s=r.shape[-2:])

    def pinv_eta(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        self.check_eta(eta)
        self.check_measurement(r)
        return self.At(self._lr_solve(r, 1.0 / (self._lr.get(r.device, r.dtype) + eta)))

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        self.check_measurement(r)
        h = self._lr.get(r.device, r.dtype)
        keep = h.abs() > nonzero_threshold(h.abs(), self.img_size)
        return self.At(self._lr_solve(r, torch.where(keep, 1.0 / torch.where(keep, h, 1), 0)))
