"""The generic pinv_eta and pinv of an operator that defines only A and Aᵀ (conjugate gradients, float32 by
default) against the closed forms of the project's operators, their clear errors, and samplers run on such an
operator. The dense float64 contract for these operators: ``test_operator_contract.py`` (impl matrix_free)."""

import pytest
import torch

from ddpg.errors import OperatorError
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from matrix_free import OnlyAAt

SIZE = 32
OPERATORS = {"inpainting": ("inpainting", {"ratio": 0.5}), "deblur_fft": ("deblur_gauss", {"impl": "fft"}),
             "deblur_svd": ("deblur_gauss", {"impl": "svd"}), "sr4_svd": ("sr4", {"impl": "svd"}),
             "sr4_fft": ("sr4", {"impl": "fft"}), "colorization": ("colorization", {}), "denoising": ("denoising", {})}
# A⁺ by the normal equations needs a moderate condition number: the blurs' smallest singular values are ~1e-6
WELL_CONDITIONED = ["inpainting", "sr4_svd", "sr4_fft", "colorization", "denoising"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def pair(name: str):
    """(the exact operator, the same operator seen through A and Aᵀ only)."""
    task, params = OPERATORS[name]
    op = make_operator(task, SIZE, **params)
    return op, OnlyAAt(op)


def measurement(op, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(op.meas_shape(batch), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("eta", [1e-2, 0.5])
@pytest.mark.parametrize("name", list(OPERATORS))
def test_pinv_eta_by_conjugate_gradients_equals_the_closed_form(name, eta):
    op, only = pair(name)
    r = measurement(op)
    got = only.pinv_eta(r, eta)
    assert got.dtype == torch.float32 and got.shape == (2, 3, SIZE, SIZE)
    assert rel(got, op.pinv_eta(r, eta)) < 1e-4
    assert rel(only.pinv_eta(r, torch.tensor(eta)), op.pinv_eta(r, eta)) < 1e-4  # a 0-d tensor η (DiffPIR's ρ)


@pytest.mark.parametrize("name", WELL_CONDITIONED)
def test_pinv_by_the_normal_equations_equals_the_closed_form(name):
    """A⁺r for any r, also off the range of A (inpainting: values in the holes, which A⁺ ignores)."""
    op, only = pair(name)
    r = measurement(op)
    assert rel(only.pinv(r), op.pinv(r)) < 1e-4


def test_a_solve_that_does_not_converge_says_so():
    op, only = pair("deblur_fft")
    only.cg_max_iter = 3
    with pytest.raises(OperatorError, match=r"pinv_eta: conjugate gradients did not reach the relative residual "
                                            r"1e-05 in 3 iterations .*cg_max_iter"):
        only.pinv_eta(measurement(op), 1e-3)
    with pytest.raises(OperatorError, match="pinv: conjugate gradients did not reach"):
        only.pinv(measurement(op))


def test_a_non_finite_right_hand_side_is_refused():
    op, only = pair("sr4_svd")
    r = measurement(op)
    r[1, 0, 0, 0] = float("nan")
    with pytest.raises(OperatorError, match="non-finite residual"):
        only.pinv_eta(r, 0.1)


def test_a_zero_right_hand_side_gives_zero():
    op, only = pair("deblur_fft")
    r = measurement(op)
    r[0] = 0
    got = only.pinv_eta(r, 0.1)
    assert torch.equal(got[0], torch.zeros_like(got[0])) and got[1].abs().max() > 0


@pytest.mark.parametrize("method, name, sigma_y", [("ddpg", "deblur_fft", 0.05), ("ddnm", "inpainting", 0.0),
                                                   ("diffpir", "inpainting", 0.05), ("ddpg", "sr4_fft", 0.0)])
def test_samplers_run_on_an_operator_with_only_a_and_its_adjoint(method, name, sigma_y):
    """The same restoration as with the operator's closed forms, to the solver's tolerance."""
    prior = create_prior("gaussian")
    op, only = pair(name)
    exact = Restorer(as_denoiser(prior), op, method=method, sigma_y=sigma_y, steps=5)
    y = exact.degrade(prior.sample(2, SIZE, generator=torch.Generator().manual_seed(0)), [0, 1])
    generic = Restorer(as_denoiser(prior), only, method=method, sigma_y=sigma_y, steps=5)
    assert rel(generic.restore(y, [3, 4]), exact.restore(y, [3, 4])) < 1e-4
