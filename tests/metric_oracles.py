"""What the metric tests share (test_metrics, test_metrics_sets, test_cli_evaluate, test_eval_suite): SSIM by hand
on a checkerboard, and a seeded random-weight FID Inception to compute features with (no download)."""

import numpy as np
import torch

from ddpg.metrics.inception import FIDInception

C1, C2 = 0.01**2, 0.03**2  # SSIM's stabilisers for a data range of 1


def checkerboard_ssim_by_hand(a: float, e: float, b: float, f: float) -> float:
    """Mean SSIM of a + e·P against b + f·P (P the ±1 checkerboard) over a valid map with as many windows
    centred on +1 as on −1. With s = Σ_u g_u (−1)^u of the 1-D Gaussian g, a window's weighted mean of P is
    ±s², its variance 1 − s⁴: μx = a ± e s², σx² = e²(1 − s⁴), σy² = f²(1 − s⁴), σxy = e f (1 − s⁴)."""
    u = np.arange(11) - 5.0
    g = np.exp(-(u**2) / (2 * 1.5**2))
    g /= g.sum()
    s2 = float(np.sum(g * (-1.0) ** np.arange(11))) ** 2
    v = 1 - s2**2
    total = 0.0
    for sign in (1, -1):
        mx, my = a + sign * e * s2, b + sign * f * s2
        total += (2 * mx * my + C1) * (2 * e * f * v + C2) / ((mx**2 + my**2 + C1) * ((e**2 + f**2) * v + C2))
    return total / 2


def random_inception() -> FIDInception:
    """Seeded random weights; He-normal convolutions keep the activations from vanishing through 94 layers."""
    torch.manual_seed(0)
    net = FIDInception().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net
