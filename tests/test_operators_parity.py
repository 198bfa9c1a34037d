"""Operators reproduce the reference's A, Aᵀ and Aᵀ(AAᵀ+ηI)⁻¹ (fixtures of the reference code)."""

import numpy as np
import pytest
import torch

from conftest import FIXTURES, SHARED, rel_err
from ddpg.operators import (
    bicubic_taps_matlab,
    bicubic_taps_svd,
    gaussian_taps,
    make_operator,
    motion_kernel,
    outer_kernel,
)

SPECS = {
    "sr4_fft": ("sr_bicubic", {"impl": "fft"}),
    "sr4_svd": ("sr_bicubic", {"impl": "svd"}),
    "deblur_gauss_fft": ("deblur_gauss", {}),
    "deblur_motion_fft": ("deblur_motion", {}),
    "denoising_svd": ("denoising", {}),
    "colorization_svd": ("colorization", {}),
    "sr2_avgpool_svd": ("sr_avgpool", {"scale": 2}),
    "inpainting_svd": ("inpainting", {}),
}


def check_fixture(path, name):
    """A, Aᵀ and both P_η within 1e-5 relative error. Operators are built from their defaults (the motion
    kernel from seed 0, as the fixture was), only the inpainting mask comes from the fixture."""
    fx = torch.load(path, weights_only=True)
    task, params = SPECS[name]
    if name == "inpainting_svd":
        params = {"mask": fx["meta"]["mask_hw"].numpy()}
    n = fx["img_size"]
    op = make_operator(task, n, **params)
    x = fx["x"]
    B = x.shape[0]
    if name == "inpainting_svd":  # the reference lists kept entries pixel-major, channel-minor
        def flat(t):
            return t.permute(0, 2, 3, 1)[:, op.mask].reshape(B, -1)

        v = torch.zeros(B, n, n, 3)
        v[:, op.mask] = fx["v"].reshape(B, -1, 3)
        v = v.permute(0, 3, 1, 2)
    else:
        def flat(t):
            return t.reshape(B, -1)

        v = fx["v"].reshape(op.meas_shape(B))
    assert rel_err(flat(op.A(x)), fx["Ax"]) < 1e-5
    assert rel_err(op.At(v).reshape(B, -1), fx["Atv"]) < 1e-5
    for eta in ("0.0001", "0.01"):
        assert rel_err(op.pinv_eta(v, float(eta)).reshape(B, -1), fx[f"pinv_eta_{eta}"]) < 1e-5


@pytest.mark.parametrize("name, expected", [
    ("sr4_fft", lambda: outer_kernel(bicubic_taps_matlab(4))),
    ("sr4_svd", lambda: bicubic_taps_svd(4)),
    ("deblur_gauss_fft", lambda: gaussian_taps(5, 10.0)),
    ("deblur_motion_fft", lambda: motion_kernel(0)),
])
def test_kernels_match_reference_meta(name, expected):
    meta = torch.load(FIXTURES / "operators" / f"{name}_64.pt", weights_only=True)["meta"]
    ref = (meta["kernel"] if "kernel" in meta else meta["kernel_1d"]).double().numpy()
    assert np.abs(expected() - ref).max() <= 1e-7  # the fixture stores float32 taps


@pytest.mark.parametrize("name", list(SPECS))
def test_operator_matches_reference_64(name):
    check_fixture(FIXTURES / "operators" / f"{name}_64.pt", name)


@pytest.mark.parametrize("name", ["sr4_fft", "sr4_svd", "deblur_gauss_fft", "deblur_motion_fft"])
def test_operator_matches_reference_256(name):
    path = SHARED / "fixtures" / "operators" / f"{name}_256.pt"
    if not path.exists():
        pytest.skip(f"{path} not available")
    check_fixture(path, name)


@pytest.mark.parametrize("seed", [0, 10, 20, 30])
def test_motion_kernels_match_reference_generator(seed):
    ref = np.load(FIXTURES / "motion_kernels_61_i0.5.npz")[f"seed_{seed}"]
    state = np.random.get_state()
    k = motion_kernel(seed)
    assert np.abs(k - ref).max() <= 1e-6
    assert np.array_equal(np.random.get_state()[1], state[1])  # global NumPy state untouched


def test_motion_operator_uses_the_seeded_kernel():
    op = make_operator("deblur_motion", 64, seed=10)
    ref = np.load(FIXTURES / "motion_kernels_61_i0.5.npz")["seed_10"]
    assert np.abs(op.kernel.numpy() - ref).max() <= 1e-6
