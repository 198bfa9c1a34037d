"""Quality metrics as the papers compute them. Inputs (B or none, 3, H, W) in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """10·log10(1/MSE) over all float values in [0, 1] (prediction clamped; no quantisation, crop or
    Y channel), as DDPG's evaluation."""
    mse = float(((pred.double().clamp(0, 1) - gt.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(1.0 / mse, dtype=torch.float64)).item()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(pred: torch.Tensor, gt: torch.Tensor, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004): 11×11 Gaussian window σ = 1.5, K1 = 0.01, K2 = 0.03, valid
    filtering, per channel, averaged over channels and pixels."""
    x = pred.double().clamp(0, 1)
    y = gt.double()
    if x.ndim == 3:
        x, y = x[None], y[None]
    C = x.shape[1]
    w = _gaussian_window().to(x)[None, None].repeat(C, 1, 1, 1)

    def filt(t):
        return F.conv2d(t, w, groups=C)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


class LPIPS:
    """LPIPS (AlexNet) when the ``lpips`` package and torchvision's AlexNet weights are present locally."""

    @staticmethod
    def load() -> tuple[LPIPS | None, str]:
        """(metric, "") or (None, the reason and how to provide it). Never downloads."""
        try:
            import lpips  # noqa: F401
        except ImportError:
            return None, "LPIPS skipped: `pip install lpips` and place torchvision's alexnet-owt-7be5be79.pth " \
                         "in the torch hub cache (~/.cache/torch/hub/checkpoints/)"
        from pathlib import Path

        hub = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
        if not hub.exists():
            return None, f"LPIPS skipped: AlexNet weights not found at {hub} (copy alexnet-owt-7be5be79.pth there)"
        metric = LPIPS()
        import lpips

        metric.net = lpips.LPIPS(net="alex", verbose=False).eval()
        return metric, ""

    def __call__(self, pred: torch.Tensor, gt: torch.Tensor) -> float:
        """On the unclamped [-1, 1] output, as DDPG evaluates it (inputs here in [0, 1])."""
        with torch.no_grad():
            return float(self.net(pred[None] * 2 - 1, gt[None] * 2 - 1).mean())
