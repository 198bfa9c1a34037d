"""What tiling costs in quality (#32), against exact answers and on faces.

Oracle: the analytic Gaussian prior is stationary, so its exact ε and the closed-form posterior mean exist at any
size. On a 256×256 sample of it (SR ×4 and Gaussian deblurring by circular FFT operators, σ_y 0.05, IDPG with its
gaussian presets, 50 steps), the restoration with 64-px tiles overlapping by 16 must score within 0.5 dB of the
untiled one against the posterior mean, and better than 64-px tiles with no overlap. Measured at 100 steps on two
images (``benchmarks/results/tiling_oracle_cpu.md``): untiled 31.84 / 30.41 dB, overlap 16 31.84 / 30.41, no
overlap 24.47 / 26.91 (sr4 / deblur_gauss).

Seams: face64 on a 2×2 mosaic of dev faces (128×128, SR ×4, σ_y 0.05, IDPG, 10 steps); tiles of 64 overlapping by
16 start at 0, 32 and 64, so the middle ones straddle the faces. Across the tile borders at 32 and 96 the mean
absolute gradient of (restored − truth) must be at most 1.1× its mean elsewhere (the faces' own border at 64,
where the content itself jumps, counts in neither). Tiles aligned with the faces (overlap 0) must reproduce each
face's own 64-px restoration within 0.5 dB (mean over the four faces; different x_T, same measurement noise law).
"""

from __future__ import annotations

import statistics

import pytest
import torch

from ddpg.io import load_image
from ddpg.models import as_denoiser, create_prior, load_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, load_preset
from ddpg.runtime.tiling import TiledDenoiser
from gaussian_oracle import posterior_mean, psnr
from tiling_measures import FACES, mosaic, seam_ratio, tile_borders


@pytest.mark.parametrize("task", ["sr4", "deblur_gauss"])
def test_tiled_matches_untiled_against_the_posterior_mean(task):
    prior = create_prior("gaussian")
    den = as_denoiser(prior)
    x = prior.sample(1, 256, generator=torch.Generator().manual_seed(0))
    op = make_operator(task, 256, impl="fft")
    hyper = load_preset(f"idpg/gaussian/{task}/0.05").hyper
    scores = {}
    for label, d in (("untiled", den), ("overlap", TiledDenoiser(den, 64, 16, 32)),
                     ("no overlap", TiledDenoiser(den, 64, 0, 32))):
        r = Restorer(d, op, method="idpg", sigma_y=0.05, steps=50, hyper=hyper)
        y = r.degrade(x, [0])
        with torch.no_grad():
            scores[label] = psnr(r.restore(y, [0]), posterior_mean(prior, op, y, 0.05))
    assert abs(scores["overlap"] - scores["untiled"]) <= 0.5, scores
    assert scores["overlap"] > scores["no overlap"] + 1, scores


@pytest.fixture(scope="module")
def faces():
    return [load_image(f) * 2 - 1 for f in FACES[:4]]


def sr4(den, x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    op = make_operator("sr4", x.shape[-1])
    r = Restorer(den, op, method="idpg", sigma_y=0.05, steps=10)
    with torch.no_grad():
        return r.restore(r.degrade(x, seeds), seeds)


def test_no_seams_and_aligned_tiles_reproduce_each_face(faces):
    den = as_denoiser(load_prior("face64"))
    x = mosaic(faces)[None]
    straddling = TiledDenoiser(den, 64, 16, 16)
    borders = tile_borders(straddling, 128)
    assert borders == [32, 64, 96]
    ratio = seam_ratio(sr4(straddling, x, [0]) - x, borders)
    assert ratio <= 1.1, ratio
    aligned = sr4(TiledDenoiser(den, 64, 0, 16), x, [0])[0]
    alone = sr4(den, torch.stack(faces), [1, 2, 3, 4])
    gaps = []
    for i, face in enumerate(faces):
        r, c = divmod(i, 2)
        tile = aligned[:, 64 * r:64 * r + 64, 64 * c:64 * c + 64]
        gaps.append(psnr(tile, face) - psnr(alone[i], face))
    assert abs(statistics.mean(gaps)) <= 0.5, gaps
