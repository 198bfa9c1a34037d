"""Quality metrics as the papers compute them, on images (3, H, W) or (1, 3, H, W) in [0, 1].

- PSNR (docs/methods.md §9): 10·log10(1/MSE), MSE over all float values; the prediction is clamped to
  [0, 1]; no quantisation, no Y channel, no border crop.
- SSIM (Wang et al. 2004): 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, data range 1, valid
  filtering (no padding), population statistics; the SSIM map averaged over positions and channels.
- LPIPS (AlexNet, ``lpips`` package defaults): only when the package and torchvision's AlexNet weights are
  already on this machine; nothing is downloaded.

Set metrics (FID, KID, GMM-/KNN-GIQA) on Inception pool features live in :mod:`ddpg.metrics.sets`, the FID
Inception network in :mod:`ddpg.metrics.inception` and the feature cache in :mod:`ddpg.metrics.features`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddpg.errors import InputError
from ddpg.metrics.sets import GaussianMixtureModel, fid, fit_giqa_gmm, kid, knn_giqa

SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
ALEXNET_WEIGHTS = "alexnet-owt-7be5be79.pth"

__all__ = ["LPIPS", "GaussianMixtureModel", "fid", "fit_giqa_gmm", "gaussian_window", "kid", "knn_giqa", "psnr",
           "ssim", "ssim_map"]


def _pair(pred: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float64 (1, C, H, W); the shapes must agree."""
    x, y = pred.detach().double().cpu(), gt.detach().double().cpu()
    x, y = (x[None] if x.ndim == 3 else x), (y[None] if y.ndim == 3 else y)
    if x.shape != y.shape or x.ndim != 4 or x.shape[0] != 1:
        raise InputError(f"metrics compare one image with one image of the same shape; got "
                         f"{tuple(pred.shape)} and {tuple(gt.shape)}")
    return x, y


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """PSNR in dB of ``pred`` (clamped to [0, 1]) against ``gt``; inf for identical images."""
    x, y = _pair(pred, gt)
    mse = float(((x.clamp(0, 1) - y) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * torch.log10(torch.tensor(mse, dtype=torch.float64)).item()


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(size,) float64 Gaussian weights summing to 1; SSIM's window is their outer product."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """The SSIM map (C, H − 10, W − 10) float64 of ``pred`` (clamped to [0, data_range]) against ``gt``."""
    x, y = _pair(pred, gt)
    x = x.clamp(0, data_range)
    H, W = x.shape[-2:]
    if min(H, W) < SSIM_WINDOW:
        raise InputError(f"SSIM needs images of at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels, got {W}×{H}")
    g = gaussian_window()

    def filt(t: torch.Tensor) -> torch.Tensor:  # the window's valid correlation, one axis at a time
        return t.unfold(-1, SSIM_WINDOW, 1).matmul(g).unfold(-2, SSIM_WINDOW, 1).matmul(g)

    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x**2
    var_y = filt(y * y) - mu_y**2
    cov = filt(x * y) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    return (((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)))[0]


def ssim(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM over positions and channels (see the module docstring for the definition)."""
    return float(ssim_map(pred, gt, data_range).mean())


class LPIPS:
    """LPIPS (AlexNet, version 0.1 linear heads) from the ``lpips`` package, computed on [-1, 1] inputs."""

    def __init__(self, net) -> None:
        self.net = net

    @staticmethod
    def availability() -> str:
        """"" when LPIPS can run without a download, else why not and how to provide it."""
        try:
            import lpips  # noqa: F401
        except ImportError:
            return ("LPIPS not computed: the `lpips` package is not installed (`pip install lpips`, which also "
                    f"needs torchvision) and torchvision's AlexNet weights {ALEXNET_WEIGHTS} must be in "
                    f"{Path(torch.hub.get_dir()) / 'checkpoints'}")
        weights = Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_WEIGHTS
        if not weights.is_file():
            return (f"LPIPS not computed: AlexNet weights not found at {weights}; copy {ALEXNET_WEIGHTS} there "
                    "(ddpg never downloads at run time)")
        return ""

    @classmethod
    def load(cls) -> tuple[LPIPS | None, str]:
        """(metric, "") when available, else (None, the reason and how to provide it)."""
        reason = cls.availability()
        if reason:
            return None, reason
        import lpips

        return cls(lpips.LPIPS(net="alex", verbose=False).eval()), ""

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> float:
        """LPIPS distance of images in [0, 1] (mapped to [-1, 1] as LPIPS expects)."""
        x, y = _pair(pred, gt)
        with torch.no_grad():
            return float(self.net(x.float() * 2 - 1, y.float() * 2 - 1).mean())
