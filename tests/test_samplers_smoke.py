"""Every peer sampler runs 5 steps with a tiny UNet on every operator it supports (16×16 images, 1 image):
finite output of the image shape, and the operators it cannot use are refused by name. This is a wiring test
only; what the samplers compute is checked against the exact posterior of a Gaussian prior in
test_samplers_gaussian.py (DDNM/DDRM/DiffPIR on deblurring, SR and inpainting, DDNM/DDRM on colorization and
denoising, DPS/DPPS on deblurring) and against the reference's recorded runs."""

import pytest
import torch

from conftest import FIXTURES
from ddpg.errors import OperatorError
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer

OPERATORS = {
    "sr4_svd": ("sr4", {"impl": "svd"}), "sr2_fft": ("sr_bicubic", {"scale": 2, "impl": "fft"}),
    "sr2_avgpool": ("sr_avgpool", {"scale": 2}), "deblur_gauss_fft": ("deblur_gauss", {"impl": "fft"}),
    "deblur_gauss_svd": ("deblur_gauss", {"impl": "svd"}),
    "deblur_kernel": ("deblur_kernel", {"kernel": torch.rand(5, 3, generator=torch.Generator().manual_seed(0))}),
    "inpainting": ("inpainting", {"ratio": 0.5}), "denoising": ("denoising", {}),
    "colorization": ("colorization", {}),
}
NEEDS_BASIS = {"sr2_fft"}  # no singular basis: DDRM always, DDNM+ (σ_y > 0) refuse it


@pytest.fixture(scope="module")
def unets():
    out = {}
    for name in ("ddpm_small", "adm_small_a"):  # 3 output channels; 6 (learned variance)
        torch.manual_seed(0)
        out[name] = as_denoiser(create_prior(torch.load(FIXTURES / "priors" / f"{name}.pt",
                                                        weights_only=True)["config"]))
    return out


RUNS = [("ddnm", 0.0, "ddpm_small"), ("ddnm", 0.05, "ddpm_small"), ("ddrm", 0.05, "ddpm_small"),
        ("diffpir", 0.05, "ddpm_small"), ("dps", 0.05, "adm_small_a"), ("dpps", 0.05, "adm_small_a"),
        ("ddpg", 0.05, "ddpm_small")]


@pytest.mark.parametrize("op_name", list(OPERATORS))
@pytest.mark.parametrize("method, sigma_y, unet", RUNS)
def test_five_steps_on_every_operator(unets, method, sigma_y, unet, op_name):
    task, params = OPERATORS[op_name]
    op = make_operator(task, 16, **params)
    hyper = {"select_candidates": True} if method == "ddpg" else {}
    r = Restorer(unets[unet], op, method=method, sigma_y=sigma_y, steps=5, hyper=hyper)
    y = r.degrade(torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1, [0])
    refused = op_name in NEEDS_BASIS and (method == "ddrm" or (method == "ddnm" and sigma_y > 0))
    if refused:
        with pytest.raises(OperatorError, match="impl='svd'"):
            r.restore(y, [0])
        return
    steps_seen = []
    out = r.restore(y, [0], callback=lambda i, x_t, x0: steps_seen.append(i))
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()
    assert steps_seen == [0, 1, 2, 3, 4]
