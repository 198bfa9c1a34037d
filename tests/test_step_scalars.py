"""The DDPG/IDPG step table (one row of per-step scalars per step) and one step against values computed by
hand (docs/methods.md §3.2–3.3), not with the sampler's own code: a 4-step schedule whose ᾱ are round numbers,
and the paper's linear schedule."""

import numpy as np
import pytest
import torch

from ddpg.operators import make_operator
from ddpg.runtime.samplers.ddpg import DDPG, DDPGParams, ddpg_table
from ddpg.runtime.samplers.method import State
from ddpg.schedule import Schedule, TimeGrid, linear_schedule, time_pairs

# β = (0.1, 0.2, 0.5, 0.3) → ᾱ_0..3 = 0.9, 0.72, 0.36, 0.252 (and ᾱ_{−1} = 1); 4 steps: (3,2) (2,1) (1,0) (0,−1)
TINY = Schedule(np.array([0.1, 0.2, 0.5, 0.3]))
PAIRS = [(3, 2), (2, 1), (1, 0), (0, -1)]
GRID4 = TimeGrid.named("uniform", 4, 4)
GRID100 = TimeGrid.named("uniform", 100)
A = [0.252, 0.36, 0.72, 0.9]  # ᾱ_t per step
A_NEXT = [0.36, 0.72, 0.9, 1.0]  # ᾱ_t' per step
RATIO = [0.64 / 0.748, 0.28 / 0.64, 0.1 / 0.28, 0.0]  # (1 − ᾱ_t')/(1 − ᾱ_t)
DELTA_GAMMA2 = [0.1296, 0.5184, 0.81, 1.0]  # ᾱ_t'² (γ = 2)


def values(seq) -> torch.Tensor:
    """Scalars (Python floats or tensors) as one float64 tensor, so the checks hold for either."""
    return torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(-1)[0] for v in seq])


def close(got, expected, tol=1e-12) -> bool:
    return torch.allclose(values(got), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=tol)


def test_time_pairs_of_the_tiny_schedule():
    assert time_pairs(4, 4) == PAIRS == GRID4.pairs
    assert time_pairs(100, 1000)[0] == (990, 980) and time_pairs(100, 1000)[-1] == (0, -1)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_step_table_by_hand_for_each_step_size_mode(mode):
    """t, ᾱ, √ᾱ, √(1−ᾱ), s, s_BP(1−δ), s_LS·δ·c, √(1−ζ)·w for the tiny schedule (σ_y 0.1, γ 2: δ = w = ᾱ'²)."""
    rows = ddpg_table(TINY, GRID4, DDPGParams(sigma_y=0.1, gamma=2.0, zeta=0.36, step_size_mode=mode, scale_ls=0.5))
    s = RATIO if mode == 1 else [1.0] * 4
    s_ls = RATIO if mode == 2 else [1.0] * 4
    assert close([r.t for r in rows], [t for t, _ in PAIRS])
    assert close([r.a for r in rows], A) and close([r.a_next for r in rows], A_NEXT)
    assert close([r.sqrt_a for r in rows], np.sqrt(A)) and close([r.sqrt_1m_a for r in rows], np.sqrt(1 - np.array(A)))
    assert close([r.sqrt_a_next for r in rows], np.sqrt(A_NEXT))
    assert close([r.sqrt_1m_a_next for r in rows], np.sqrt(1 - np.array(A_NEXT)))
    assert close([r.step for r in rows], s)
    assert close([r.coef_bp for r in rows], [1 - d for d in DELTA_GAMMA2])
    assert close([r.coef_ls for r in rows], [sl * d * 0.5 for sl, d in zip(s_ls, DELTA_GAMMA2, strict=True)])
    assert close([r.mix_eps for r in rows], [0.8 * d for d in DELTA_GAMMA2])  # √(1 − 0.36) = 0.8


def test_noiseless_measurements_give_pure_bp_guidance_and_full_noise_weight():
    rows = ddpg_table(TINY, GRID4, DDPGParams(sigma_y=0.0, gamma=2.0, zeta=0.36, step_size_mode=1))
    assert close([r.coef_bp for r in rows], [1.0] * 4) and close([r.coef_ls for r in rows], [0.0] * 4)
    assert close([r.mix_eps for r in rows], [0.8] * 4) and close([r.step for r in rows], RATIO)


def test_linear_schedule_step_sizes_and_delta_crossings_match_the_documented_values():
    """docs/methods.md §3.3: mode-1 step 1.000, 0.990, 0.808, 0.046, 0 at k = 0, 50, 90, 98, 99; the first step at
    which δ (= 1 − coef_bp, s_BP = 1) exceeds 0.5 for each γ."""
    rows = ddpg_table(linear_schedule(), GRID100, DDPGParams(sigma_y=0.05, gamma=8.0, step_size_mode=1))
    assert close([rows[k].step for k in (0, 50, 90, 98, 99)], [1.0, 0.990, 0.808, 0.046, 0.0], tol=5e-4)
    for gamma, first in {3: 84, 5: 87, 8: 90, 12: 91, 30: 94, 50: 95, 100: 96, 300: 97}.items():
        rows = ddpg_table(linear_schedule(), GRID100, DDPGParams(sigma_y=0.05, gamma=float(gamma)))
        crossed = [i for i, r in enumerate(rows) if 1 - r.coef_bp > 0.5]
        assert crossed[0] == first, gamma
        assert close([rows[-1].coef_bp], [0.0])  # pure LS at the last step


@pytest.mark.parametrize("sigma_y, eta_tilde, xi, expected", [
    (0.05, 0.7, 1e-5, 0.1**2 * 0.7),  # σ = 2σ_y = 0.1
    (0.001, 0.7, 1e-5, 1e-4),  # σ²η̃ = 2.8e-6: floored at 1e-4
    (0.05, 0.0, 1e-5, 1e-4),  # η̃ = 0 is the floor, not the obsolete branch
    (0.05, -1.0, 1e-5, 1e-4 + 1e-5 * 25.5**2),  # the reference's obsolete branch: 1e-4 + ξ(255σ)²
    (0.0, 0.7, 1e-5, 1e-4),
])
def test_eta_by_hand(sigma_y, eta_tilde, xi, expected):
    p = DDPGParams(sigma_y=sigma_y, eta_tilde=eta_tilde, xi=xi)
    assert p.sigma == pytest.approx(2 * sigma_y, abs=1e-15)
    assert p.eta == pytest.approx(expected, rel=1e-12)


# One step on constant images with A = I (P_η r = r/(1+η), Aᵀr = r) at the pair (2, 1): ᾱ = 0.36, ᾱ' = 0.72,
# σ_y = 0.1 (σ = 0.2), γ = 2 (δ = w = 0.5184), η̃ = 0.5 (η = 0.02), c = 0.5, ζ = 0.25; x = 1, ε = 0.5, y = 0.2,
# z = −1. Then x̂₀ = (1 − 0.8·0.5)/0.6 = 1, r = 0.8 and, per mode (s, s_BP, s_LS):
#   x̃ = 1 − s·(s_BP·0.4816·0.8/1.02 + s_LS·0.5184·0.5·0.8),   ε̂ = (1 − 0.6·x̃)/0.8,
#   DDPG x' = √0.72·x̃ + √0.28·(0.5·(−1) + √0.75·0.5184·ε̂),   IDPG x' = √0.72·x̃
# (evaluated once in plain float arithmetic, apart from the project code; digits below).
BY_HAND = {  # mode: (x̃, DDPG x', IDPG x')
    0: (0.4149145098039215, 0.31051686660214023, 0.3520666361940542),
    1: (0.7440250980392156, 0.5311386488244287, 0.6313262306358182),
    2: (0.5315545098039215, 0.38870737641341974, 0.45103895814317285),
}


def one_step(mode: int, sigma_y: float, inject_noise: bool):
    op = make_operator("denoising", 4)
    p = DDPGParams(sigma_y=sigma_y, gamma=2.0, zeta=0.25, eta_tilde=0.5, step_size_mode=mode, scale_ls=0.5,
                   inject_noise=inject_noise)
    row = ddpg_table(TINY, GRID4, p)[1]
    full = lambda v: torch.full((1, 3, 4, 4), v, dtype=torch.float64)  # noqa: E731
    new = DDPG().step(State(full(1.0), full(1.0), full(1.0)), full(0.5), row, full(-1.0), full(0.2), op, p,
                       "epsilon")
    return new.x, new.x0, new.out


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("inject_noise", [True, False])
def test_one_step_by_hand(mode, inject_noise):
    x_next, x0, x_tilde = one_step(mode, 0.1, inject_noise)
    tilde, ddpg_next, idpg_next = BY_HAND[mode]
    assert torch.allclose(x0, torch.ones_like(x0), atol=1e-12)
    assert torch.allclose(x_tilde, torch.full_like(x_tilde, tilde), atol=1e-12)
    assert torch.allclose(x_next, torch.full_like(x_next, ddpg_next if inject_noise else idpg_next), atol=1e-12)


def test_one_noiseless_step_by_hand():
    """σ_y = 0: δ = 0, w = 1, η = 1e-4, mode 1 (s = 0.4375): x̃ = 1 − 0.4375·0.8/1.0001,
    x' = √0.72·x̃ + √0.28·(−0.5 + √0.75·(1 − 0.6·x̃)/0.8)."""
    x_next, _, x_tilde = one_step(1, 0.0, True)
    assert torch.allclose(x_tilde, torch.full_like(x_tilde, 0.6500349965003499), atol=1e-12)
    assert torch.allclose(x_next, torch.full_like(x_next, 0.6364072224162955), atol=1e-12)
