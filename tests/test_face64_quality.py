"""The bundled face64 prior restores real faces (the first 8 of the held-out UTKFace dev faces in
tests/fixtures/faces64_dev), at 25 steps: a quarter of the papers' 100 and as good on these faces (the face64
step sweep in benchmarks/results/eval_face64_steps), so the check costs a quarter of the time.

Measured on the development machine (CPU, one thread, faces face_256 … face_263, seeds 0–7, σ_y = 0.05, 25 steps,
the face64 presets (ddpg: its 25-step variants), FFT operators; mean PSNR in dB):

| task | baseline | DDPG | IDPG |
|---|---|---|---|
| SR ×4 (FFT) | bicubic 22.09 | 25.53 | 26.11 |
| Gaussian deblur | Tikhonov (η = 1e-2) 16.24 | 28.26 | 30.15 |

(At 100 steps the same run gave 25.45 / 25.83 and 28.47 / 29.59.) Each method must beat the baseline by 3 dB and
stay within 0.5 dB of its measured PSNR: a sampler that loses its guidance, its noise schedule or its
preconditioning falls far below both.
"""

import pytest
import torch

from conftest import FIXTURES
from ddpg.io import load_image
from ddpg.metrics import psnr
from ddpg.models import as_denoiser, load_prior
from ddpg.operators import baseline, make_operator
from ddpg.runtime import Restorer, find_preset, load_preset

FACES = sorted((FIXTURES / "faces64_dev").glob("*.png"))[:8]


@pytest.fixture(scope="module")
def faces():
    assert [f.name for f in FACES] == [f"face_{i}.png" for i in range(256, 264)]  # the faces measured above
    return torch.stack([load_image(f) for f in FACES]) * 2 - 1


@pytest.fixture(scope="module")
def denoiser():
    return as_denoiser(load_prior("face64"))


def mean_psnr(out, x):
    return sum(psnr((out[i] + 1) / 2, (x[i] + 1) / 2) for i in range(len(x))) / len(x)


MEASURED = {("sr4", "ddpg"): 25.53, ("sr4", "idpg"): 26.11, ("deblur_gauss", "ddpg"): 28.26,
            ("deblur_gauss", "idpg"): 30.15}
STEPS = 25


@pytest.mark.parametrize("task", ["sr4", "deblur_gauss"])
@pytest.mark.parametrize("method", ["ddpg", "idpg"])
def test_face64_beats_the_baseline_by_3db(faces, denoiser, task, method):
    op = make_operator(task, 64, impl="fft")
    preset = load_preset(find_preset(method, "face64", task, 0.05, STEPS))
    r = Restorer(denoiser, op, method=method, sigma_y=0.05, steps=STEPS, hyper=preset.hyper)
    seeds = list(range(8))
    y = r.degrade(faces, seeds)
    with torch.no_grad():
        restored = mean_psnr(r.restore(y, seeds), faces)
    assert restored >= mean_psnr(baseline(op, y), faces) + 3.0
    assert restored >= MEASURED[task, method] - 0.5
