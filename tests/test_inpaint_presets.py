"""DDPG and IDPG inpainting presets (docs/methods.md §5.4: not in the paper, derived from its rules), and the hatching
IDPG leaves in the hole at 20 steps (inherent: IDPG injects no noise, and no measurement constrains the hole),
measured as the high-frequency energy of the restored hole over the ground truth's: DDPG's injected noise keeps
it below 1 at the same 20 steps, IDPG's hatching is about twice it and more."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ddpg import api
from ddpg.io import load_image
from ddpg.runtime import find_preset, load_preset

FACES = [Path(__file__).parent / "fixtures" / "faces64_dev" / f"face_{i}.png" for i in (256, 259)]
LAPLACIAN = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)


def hole_energy(image: torch.Tensor) -> float:
    """Mean squared Laplacian (3, H, W in [0, 1]) inside the default mask's hole, the centred 32×32 box of a 64-px
    image, less a pixel at each side (the Laplacian of the edge mixes both sides)."""
    lap = F.conv2d(image[None], LAPLACIAN, groups=3)[0]  # (3, H-2, W-2): pixel (i, j) at (i-1, j-1)
    return float(lap[:, 16:46, 16:46].pow(2).mean())


def hole_ratios(out: Path, method: str) -> list[float]:
    """Hole energy over the ground truth's of the two faces restored by ``method``'s inpainting preset at 20 steps."""
    report = api.restore(FACES, out, prior="face64", method=method, task="inpaint", steps=20, batch_size=2, threads=1)
    assert report.exit_code == 0, report.failed
    return [hole_energy(load_image(out / f"{f.stem}_restored.png")) / hole_energy(load_image(f)) for f in FACES]


@pytest.mark.parametrize("method", ["ddpg", "idpg"])
def test_inpainting_presets_for_the_noiseless_and_the_default_noise(method):
    noiseless, noisy = load_preset(f"{method}/face64/inpaint/0"), load_preset(f"{method}/face64/inpaint/0.05")
    assert noiseless.operator == noisy.operator == {"task": "inpainting"} and "not in the paper" in noisy.source
    assert noiseless.hyper["step_size_mode"] == 0 and noisy.hyper["step_size_mode"] == 1
    assert noisy.hyper["gamma"] == 8.0 and noisy.hyper["eta_tilde"] == (0.7 if method == "ddpg" else 0.6)
    if method == "ddpg":  # DDNM's η 0.85 = √ζ; the noisy row: the deblur_gauss 0.05 row, DDPGParams' defaults
        assert (noiseless.hyper["zeta"], noisy.hyper["zeta"]) == (0.72, 0.5)
    assert find_preset(method, "face64", "inpaint", 0.05, 20) == f"{method}/face64/inpaint/0.05"


def test_at_20_steps_ddpg_fills_the_hole_without_the_hatching_idpg_leaves(tmp_path):
    assert max(hole_ratios(tmp_path / "ddpg", "ddpg")) < 1.0  # measured 0.22 and 0.41
    assert min(hole_ratios(tmp_path / "idpg", "idpg")) > 1.5  # measured 3.46 and 1.96
