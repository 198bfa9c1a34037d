"""Determinism, batch independence, presets, and input validation before any model call."""

import pytest
import torch

from conftest import rel_err
from ddpg.errors import ConfigError
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, ddpg_sample, list_presets, load_preset, time_pairs

SMALL_DDPM = {"kind": "ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
              "image_size": 32}


def tiny_denoiser():
    torch.manual_seed(0)
    return as_denoiser(create_prior(SMALL_DDPM))


class NeverCalled:
    schedule = None

    def __call__(self, x, t):
        raise AssertionError("the model must not be called for invalid input")


def test_time_grid():
    pairs = time_pairs(100)
    assert pairs[0] == (990, 980) and pairs[-1] == (0, -1) and len(pairs) == 100


def test_same_seed_is_bit_identical_and_batch_equals_single_runs():
    den = tiny_denoiser()
    op = make_operator("sr4", 32, impl="fft")
    r = Restorer(den, op, method="ddpg", sigma_y=0.05, steps=8, hyper=load_preset("ddpg/celeba_hq/sr4/0.05").hyper)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    seeds = [3, 4, 5, 6]
    with torch.no_grad():
        y = r.degrade(x, seeds)
        batch = r.restore(y, seeds)
        again = r.restore(y, seeds)
        singles = torch.cat([r.restore(r.degrade(x[i:i + 1], [s]), [s]) for i, s in enumerate(seeds)])
    assert torch.equal(batch, again)
    assert rel_err(batch, singles) < 1e-5  # batched conv kernels may reorder sums


def test_presets_cover_the_paper_tables():
    paper = [n for n in list_presets() if n.split("/")[1] in ("celeba_hq", "imagenet256_uncond")]
    assert len(paper) == 32
    p = load_preset("ddpg/celeba_hq/deblur_motion/0.01")
    assert (p.hyper["gamma"], p.hyper["zeta"], p.hyper["eta_tilde"], p.hyper["step_size_mode"]) == (50, 0.5, 6.0, 0)
    assert load_preset("idpg/imagenet256_uncond/sr4/0.05").hyper["gamma"] == 30
    assert load_preset("ddpg/celeba_hq/sr4/0.05", gamma=3, sigma_y=0.1).hyper["gamma"] == 3
    with pytest.raises(ConfigError, match="unknown field"):
        load_preset("ddpg/celeba_hq/sr4/0.05", gama=3)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("ddpg/celeba_hq/sr8/0.05")


@pytest.mark.parametrize("kwargs, message", [
    ({"y": torch.zeros(1, 3, 32, 32)}, "y has shape"),
    ({"sigma_y": -0.1}, "sigma_y must be >= 0"),
    ({"zeta": 1.5}, "zeta must be in"),
    ({"step_size_mode": 3}, "step_size_mode"),
    ({"x_T": torch.zeros(1, 3, 16, 16)}, "x_T has shape"),
])
def test_bad_input_fails_before_the_model_is_called(kwargs, message):
    op = make_operator("sr4", 32, impl="fft")
    args = {"y": torch.zeros(1, 3, 8, 8), "sigma_y": 0.05} | kwargs
    y, sigma_y = args.pop("y"), args.pop("sigma_y")
    with pytest.raises(ConfigError, match=message):
        ddpg_sample(NeverCalled(), op, y, sigma_y, steps=5, **args)


def test_restorer_rejects_unknown_method_and_seed_mismatch():
    op = make_operator("denoising", 8)
    with pytest.raises(ConfigError, match="unknown method"):
        Restorer(NeverCalled(), op, method="magic")
    r = Restorer(NeverCalled(), op)
    with pytest.raises(ConfigError, match="seeds"):
        r.restore(torch.zeros(2, 3, 8, 8), [1])
