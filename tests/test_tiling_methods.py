"""Every method on every task sees the whole image (#32): with a pointwise denoiser, whose tiles blend back to its
untiled output exactly (the weights sum to one), a tiled restoration must equal the untiled one. A method or an
operator that ran per tile (A, Aᵀ or the pseudo-inverse over a tile, the mask or the blur kernel cut at a tile
border) would not. Parametrised from the method and task tables, so a new one is covered when it is registered."""

from __future__ import annotations

import pytest
import torch

from conftest import rel_err
from ddpg.operators import TASKS, make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.samplers import SAMPLERS
from ddpg.runtime.tiling import TiledDenoiser
from fake_denoiser import FakeDenoiser

SIZE = (40, 56)  # not a multiple of the tile: 3×4 tiles of 16 px overlapping by at least 4
TILE, OVERLAP, STEPS = 16, 4, 3
BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]])
PARAMS = {"sr_bicubic": {"impl": "svd"}, "sr_avgpool": {"impl": "svd"},  # the SVD (DDNM and DDRM need one)
          "deblur_motion": {"kernel": torch.eye(7).flip(0)}, "deblur_kernel": {"kernel": BLUR},
          "inpainting": {"ratio": 0.5, "seed": 1}}


class Smooth(FakeDenoiser):
    """out = 0.7·tanh(x) + t/1000 per pixel, differentiable (DPS/DPPS take its gradient)."""

    def __call__(self, x, t):
        return torch.tanh(x) * 0.7 + t.view(-1, 1, 1, 1) / 1000

    def model_output(self, x, t):
        return self(x, t)


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_tiled_restoration_equals_untiled_for_a_pointwise_denoiser(method, task):
    op = make_operator(task, SIZE, **PARAMS.get(task, {}))
    x = torch.rand(2, 3, *SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tiled = TiledDenoiser(Smooth(), TILE, OVERLAP, 5)
    runs = []
    for denoiser in (Smooth(), tiled):
        r = Restorer(denoiser, op, method=method, sigma_y=0.05, steps=STEPS)
        y = r.degrade(x, [1, 2])
        runs.append(r.restore(y, [3, 4]))
    assert tiled.tile_calls >= STEPS * 2 * 12  # it did run over the tiles (a method may call the denoiser more)
    assert torch.isfinite(runs[0]).all() and rel_err(runs[1], runs[0]) < 1e-4
