"""An analytic prior: stationary Gaussian images, diagonal in the orthonormal 2-D DFT.

x = μ + n with μ a per-channel mean (3,) and n a stationary field whose orthonormal-DFT coefficients are
independent with variance P_c(f) (power per frequency). Under the forward process x_t = √ᾱ x + √(1−ᾱ) ε the
exact ε-prediction is, per frequency,

    ε̂(x_t, t) = √(1−ᾱ_t) · (x̂_t − √ᾱ_t μ̂) / (ᾱ_t P + 1 − ᾱ_t).

P is either an explicit (3, H, W) tensor for one image size or a law P_c(f) = a_c · (|f|² + f0²)^(−α/2)
evaluated on any grid (f in cycles per pixel). The default law was fitted once to natural face images.

Closed forms for tests and oracles: ``spectrum(H, W)`` and ``mean`` give, for a circular blur with Fourier
response K and noise variance σ², the posterior mean x̂ = μ + F⁻¹[P K̄ (|K|² P + σ²)⁻¹ F(y − Aμ)]
(orthonormal F); ``sample`` draws exact prior samples.
"""

from __future__ import annotations

import torch
from torch import nn

from ddpg.schedule import Schedule

# Peak memory of a restoration with this prior (``ddpg restore``: loading, sampling, writing) over the process
# before it, in float32 images of the restored size (12·H·W bytes each): per image of the batch (the sampler's
# FFTs; the inputs prepared ahead and the outputs waiting for the writer scale with the batch too) and once (the
# writer's metrics: SSIM works in float64). Measured peak RSS on the 2-core CPU machine, one thread, allocations
# mapped as glibc maps those over 32 MB: 47.5 images for one photo at 512, 1024 and 2048 px; 63–71 for three
# (every method; sr4, deblurring, inpainting, denoising, colorization); 86 at batch 2 (four photos) and 122 at
# batch 4 (eight): about 18·B + 48. These constants are that plus a quarter.
RESTORE_IMAGES_PER_BATCH_IMAGE = 24
RESTORE_IMAGES_ONCE = 60


def restore_peak_bytes(batch: int, size: tuple[int, int]) -> int:
    """Estimated peak bytes of restoring images of ``size`` (H, W) in batches of ``batch`` with this prior:
    (24·batch + 60) float32 (3, H, W) images, 1.25 × to 1.8 × the measured peak (see the constants above). Each
    sampling step costs one FFT and one inverse FFT of the (batch, 3, H, W) images in the prior, O(H·W·log(H·W))
    each, besides the operator's work."""
    H, W = size
    return (RESTORE_IMAGES_PER_BATCH_IMAGE * batch + RESTORE_IMAGES_ONCE) * 3 * H * W * 4


def frequency_grid(H: int, W: int, device=None) -> torch.Tensor:
    """|f|² on the (H, W) DFT grid, f in cycles per pixel (float32)."""
    fy = torch.fft.fftfreq(H, device=device)[:, None]
    fx = torch.fft.fftfreq(W, device=device)[None, :]
    return (fy**2 + fx**2).float()


class GaussianPrior(nn.Module):
    """Stationary Gaussian prior. ``config``: kind "gaussian", ``mean`` (3 floats, [-1,1] scale),
    either ``law`` {amplitude: 3 floats, alpha, f0} or an explicit ``spectrum`` tensor given to __init__."""

    def __init__(self, config: dict | None = None, spectrum: torch.Tensor | None = None):
        super().__init__()
        cfg = {"kind": "gaussian", "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
               "num_diffusion_timesteps": 1000, "boundary": "periodic"}  # its FFTs wrap the image around
        cfg.update(config or {})
        if spectrum is None and "law" not in cfg:
            raise ValueError("GaussianPrior needs a `law` in its config or an explicit spectrum")
        self.config = cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", [0.0, 0.0, 0.0]), dtype=torch.float32))
        if spectrum is not None:
            if spectrum.ndim != 3 or spectrum.shape[0] != 3 or (spectrum <= 0).any():
                raise ValueError("spectrum must be a positive (3, H, W) tensor")
            self.register_buffer("explicit_spectrum", spectrum.float())
        else:
            self.explicit_spectrum = None

    def spectrum(self, H: int, W: int, device=None) -> torch.Tensor:
        """Power per orthonormal-DFT frequency, (3, H, W) float32."""
        if self.explicit_spectrum is not None:
            if tuple(self.explicit_spectrum.shape[1:]) != (H, W):
                raise ValueError(f"this GaussianPrior's spectrum is for {tuple(self.explicit_spectrum.shape[1:])} "
                                 f"images, not ({H}, {W})")
            return self.explicit_spectrum.to(device)
        law = self.config["law"]
        amp = torch.tensor(law["amplitude"], dtype=torch.float32, device=device)[:, None, None]
        f2 = frequency_grid(H, W, device)
        return amp * (f2 + float(law["f0"]) ** 2) ** (-float(law["alpha"]) / 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """ε-prediction (B,3,H,W) float32 for x_t (B,3,H,W) at timesteps t (B,) (integer values, float)."""
        abar_all = Schedule.from_config(self.config).alpha_bar_tensor(x.device)
        a = abar_all[t.long() + 1].view(-1, 1, 1, 1)
        P = self.spectrum(x.shape[-2], x.shape[-1], x.device)
        centred = x.float() - a.sqrt() * self.mean.view(1, 3, 1, 1)
        coef = torch.fft.fft2(centred, norm="ortho") * ((1 - a).sqrt() / (a * P + 1 - a))
        return torch.fft.ifft2(coef, norm="ortho").real

    def sample(self, n: int, size: int | tuple[int, int], generator: torch.Generator | None = None,
               device=None) -> torch.Tensor:
        """n images (n,3,H,W) drawn from the prior."""
        H, W = (size, size) if isinstance(size, int) else size
        w = torch.randn(n, 3, H, W, generator=generator, device=device)
        field = torch.fft.ifft2(self.spectrum(H, W, device).sqrt() * torch.fft.fft2(w, norm="ortho"), norm="ortho")
        return field.real + self.mean.to(device).view(1, 3, 1, 1)

    @classmethod
    def fit(cls, images: torch.Tensor, *, law: bool = False) -> GaussianPrior:
        """Fit to images (N,3,H,W) in [-1,1]: the per-channel mean and either the mean periodogram as an
        explicit spectrum, or (``law=True``) the 1/f^α law by least squares in log-log space."""
        mean = images.mean(dim=(0, 2, 3))
        centred = images - mean.view(1, 3, 1, 1)
        periodogram = (torch.fft.fft2(centred, norm="ortho").abs() ** 2).mean(0).clamp_min(1e-12)
        if not law:
            return cls({"mean": mean.tolist()}, spectrum=periodogram)
        H, W = images.shape[-2:]
        f2 = frequency_grid(H, W)
        keep = f2 > 0
        logf = 0.5 * torch.log(f2[keep])
        best = None
        for f0 in (1e-3, 3e-3, 1e-2, 3e-2):  # f0 only regularises DC; pick the best of a few
            design = torch.stack([torch.ones_like(logf), -0.5 * torch.log(f2[keep] + f0**2)], dim=1).double()
            target = torch.log(periodogram[:, keep]).double().mean(0)
            sol = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
            resid = float(((design @ sol - target) ** 2).mean())
            if best is None or resid < best[0]:
                best = (resid, f0, float(sol[1]))
        _, f0, alpha = best
        shape = (f2 + f0**2) ** (-alpha / 2)
        amp = (periodogram[:, keep] / shape[keep]).mean(1)  # per-channel scale, unbiased in power
        return cls({"mean": mean.tolist(), "law": {"amplitude": amp.tolist(), "alpha": alpha, "f0": f0}})
