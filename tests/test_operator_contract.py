"""The operator contract, for every task of the task table with each implementation it has, at tiny sizes:
adjointness, pinv_eta against the dense Aᵀ(AAᵀ+ηI)⁻¹, the Penrose identities of A⁺, and the decomposition
(U s Vᵀ = A) where the operator has one. A task registered in the table is tested here without edits, unless
its defaults do not fit a 12×16 image (then SMALL gives it parameters that do). The same contract holds for
operators that show only A and Aᵀ (impl ``MATRIX_FREE``: a task's operator wrapped so the base class's
conjugate-gradient pinv_eta and pinv serve, solved in float64 to 1e-13)."""

import numpy as np
import pytest
import torch

from ddpg.errors import OperatorError
from ddpg.operators import DecomposableOperator, FFTSuperRes, make_operator
from ddpg.operators.tasks import ALIASES, CLI_TASKS, KERNEL_TASKS, OPERATOR_OF_TASK, TASK_TABLE
from matrix_free import OnlyAAt

SIZE = (12, 16)
KERNEL = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, 3.0, 2.0])
SMALL = {"sr_bicubic": {"scale": 2}, "sr_avgpool": {"scale": 2}, "deblur_motion": {"kernel": KERNEL},
         "deblur_kernel": {"kernel": KERNEL}}
CASES = [(task, impl) for task, entry in TASK_TABLE.items() for impl in entry.impls or (None,)]
MATRIX_FREE = "matrix_free"
MATRIX_FREE_CASES = [(task, MATRIX_FREE) for task in ("inpainting", "colorization", "denoising", "sr_bicubic",
                                                       "deblur_gauss", "deblur_kernel")]
TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


class PreciseOnlyAAt(OnlyAAt):
    """:class:`OnlyAAt` solving in float64 to the relative residual 1e-13, for the dense comparisons."""

    solve_dtype = torch.float64
    cg_tol = 1e-13


def build(task: str, impl: str):
    if impl == MATRIX_FREE:
        return PreciseOnlyAAt(make_operator(task, SIZE, **SMALL.get(task, {})))
    return make_operator(task, SIZE, impl=impl, **SMALL.get(task, {}))


def dense(fn, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """The matrix (out, in) of a linear map on tensors (1, *shape[1:]), column j = fn(e_j)."""
    n = int(np.prod(shape[1:]))
    basis = torch.eye(n, dtype=dtype).reshape(n, *shape[1:])
    return fn(basis).reshape(n, -1).T


def matrices(op, dtype):
    """(A, A⁺) as dense matrices (m×n, n×m)."""
    image, meas = (1, 3, *SIZE), op.meas_shape(1)
    return dense(op.A, image, dtype), dense(op.pinv, meas, dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("task, impl", CASES + MATRIX_FREE_CASES)
def test_adjoint_equals_the_transpose_of_the_dense_matrix(task, impl, dtype):
    op = build(task, impl)
    A = dense(op.A, (1, 3, *SIZE), dtype)
    At = dense(op.At, op.meas_shape(1), dtype)
    assert rel(At, A.T) < TOL[dtype]
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, *SIZE, generator=g, dtype=dtype), torch.randn(op.meas_shape(2), generator=g, dtype=dtype)
    lhs, rhs = float((op.A(x) * y).sum()), float((x * op.At(y)).sum())
    assert abs(lhs - rhs) <= TOL[dtype] * (abs(lhs) + 1)


@pytest.mark.parametrize("eta", [1e-3, 0.5])
@pytest.mark.parametrize("task, impl", CASES + MATRIX_FREE_CASES)
def test_pinv_eta_equals_the_dense_solve(task, impl, eta):
    op = build(task, impl)
    A = dense(op.A, (1, 3, *SIZE), torch.float64)
    r = torch.randn(op.meas_shape(2), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    flat = r.reshape(2, -1).T
    ref = A.T @ torch.linalg.solve(A @ A.T + eta * torch.eye(A.shape[0], dtype=A.dtype), flat)
    got = op.pinv_eta(r, eta)
    assert got.shape == (2, 3, *SIZE)
    assert rel(got.reshape(2, -1).T, ref) < 1e-9
    assert rel(op.pinv_eta(r.float(), eta).double(), got) < 1e-4


@pytest.mark.parametrize("task, impl", CASES + MATRIX_FREE_CASES)
def test_a_per_sample_eta_tensor_gives_each_sample_its_own_solve(task, impl):
    """η shaped (B, 1, 1, 1) (DiffPIR's per-sample ρ) broadcasts per sample, is not read by the η check,
    and sample i equals the call with the tensor η_i alone, bit for bit."""
    op = build(task, impl)
    r = torch.randn(op.meas_shape(2), generator=torch.Generator().manual_seed(2))
    eta = torch.tensor([1e-3, 0.5]).view(2, 1, 1, 1)
    got = op.pinv_eta(r, eta)
    assert got.shape == (2, 3, *SIZE)
    for i in range(2):
        assert torch.equal(got[i:i + 1], op.pinv_eta(r[i:i + 1], eta[i:i + 1]))
    op.check_eta(torch.empty(0))  # a tensor η is never read (a host sync); Python numbers still are
    with pytest.raises(OperatorError, match="eta must be > 0"):
        op.check_eta(0.0)


@pytest.mark.parametrize("task, impl", CASES + MATRIX_FREE_CASES)
def test_pinv_satisfies_the_penrose_identities(task, impl):
    op = build(task, impl)
    A, P = matrices(op, torch.float64)
    assert rel(A @ P @ A, A) < 1e-8  # A A⁺ A = A
    assert rel(P @ A @ P, P) < 1e-8  # A⁺ A A⁺ = A⁺
    assert rel((A @ P).T, A @ P) < 1e-8 and rel((P @ A).T, P @ A) < 1e-8  # both projections symmetric


@pytest.mark.parametrize("task, impl", CASES)
def test_the_decomposition_reproduces_the_operator(task, impl):
    op = build(task, impl)
    if isinstance(op, FFTSuperRes):  # blur + decimation is diagonal in no cheap basis: refused, naming the way out
        with pytest.raises(OperatorError, match=r"DDRM needs an operator with an SVD.*impl='svd'"):
            op.spectral(torch.device("cpu"), "DDRM")
        return
    basis = op.spectral(torch.device("cpu"), "DDRM")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, *SIZE, generator=g)
    c = basis.coef(x)
    assert rel(basis.image(c), x) < 1e-5  # V orthonormal
    assert abs(float((c.abs() ** 2).sum() / (x**2).sum()) - 1) < 1e-5
    assert rel(basis.meas_coef(op.A(x)), basis.s * c) < 1e-5  # Uᵀ A x = s ⊙ Vᵀ x
    if isinstance(op, DecomposableOperator):  # in float64, through the operator's own factors
        xd = x.double()
        y = op.A(torch.randn(2, 3, *SIZE, generator=g, dtype=torch.float64))  # (inpainting: zero in the holes)
        s = op.singulars(torch.float64)
        assert rel(op.U(s * op.Vt(xd)[:, : s.numel()]), op.A(xd)) < 1e-12  # U s Vᵀ = A
        assert rel(op.V(op.Vt(xd)), xd) < 1e-12 and rel(op.U(op.Ut(y)), y) < 1e-12
        # the base class's derivations from the factors agree with the operator's faster forms
        assert rel(DecomposableOperator.A(op, xd), op.A(xd)) < 1e-12
        assert rel(DecomposableOperator.At(op, y), op.At(y)) < 1e-12
        assert rel(DecomposableOperator.pinv_eta(op, y, 0.1), op.pinv_eta(y, 0.1)) < 1e-12
        assert rel(DecomposableOperator.pinv(op, y), op.pinv(y)) < 1e-12


class DenseSVD(DecomposableOperator):
    """A test operator given only by a random SVD (one zero singular value): everything else is derived."""

    name = "dense_svd"

    def __init__(self, size: tuple[int, int], m: int, seed: int):
        super().__init__(size)
        n = 3 * size[0] * size[1]
        g = torch.Generator().manual_seed(seed)
        self.Um = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))[0]
        self.Vm = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))[0]
        self.s = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
        self.s[-1] = 0
        self.m = m

    def meas_shape(self, batch):
        return (batch, 1, 1, self.m)

    def singulars(self, dtype=torch.float32):
        return self.s.to(dtype)

    def Vt(self, x):
        return x.reshape(x.shape[0], -1) @ self.Vm.to(x.dtype)

    def V(self, v):
        return (v @ self.Vm.T.to(v.dtype)).reshape(v.shape[0], 3, *self.img_size)

    def Ut(self, y):
        return y.reshape(y.shape[0], -1) @ self.Um.to(y.dtype)

    def U(self, c):
        return (c @ self.Um.T.to(c.dtype)).reshape(self.meas_shape(c.shape[0]))


def test_a_decomposition_alone_gives_a_operator_and_its_inverses():
    op = DenseSVD((2, 3), m=7, seed=3)
    A_ref = op.Um @ torch.diag(op.s) @ op.Vm[:, :7].T
    A = dense(op.A, (1, 3, 2, 3), torch.float64)
    assert rel(A, A_ref) < 1e-12
    assert rel(dense(op.At, op.meas_shape(1), torch.float64), A_ref.T) < 1e-12
    assert rel(dense(op.pinv, op.meas_shape(1), torch.float64), torch.linalg.pinv(A_ref)) < 1e-10
    eta = 0.3
    ref = A_ref.T @ torch.linalg.inv(A_ref @ A_ref.T + eta * torch.eye(7, dtype=torch.float64))
    assert rel(dense(lambda r: op.pinv_eta(r, eta), op.meas_shape(1), torch.float64), ref) < 1e-12
    with pytest.raises(OperatorError, match="measurement must have shape"):
        op.pinv(torch.zeros(1, 7))


def test_the_cli_names_come_from_the_table():
    for cli in CLI_TASKS:
        name, params = OPERATOR_OF_TASK[cli]
        assert TASK_TABLE[name].cli == cli
        a, b = make_operator(cli, 64), make_operator(name, 64, **params)
        assert type(a) is type(b) and a.params == b.params
    assert set(KERNEL_TASKS) <= set(CLI_TASKS)
    assert all(TASK_TABLE[OPERATOR_OF_TASK[t][0]].kernel_task in TASK_TABLE for t in KERNEL_TASKS)
    assert all(target in TASK_TABLE for target, _ in ALIASES.values())


@pytest.mark.parametrize("task, impl", CASES)
def test_impls_and_parameters_are_checked_against_the_table(task, impl):
    if impl is None:  # exact operators without implementations ignore impl
        assert make_operator(task, SIZE, impl="fft", **SMALL.get(task, {})).params == build(task, impl).params
    else:
        assert build(task, impl).params["impl"] == impl
        with pytest.raises(OperatorError, match="impl"):
            make_operator(task, SIZE, impl="dense", **SMALL.get(task, {}))
    with pytest.raises(OperatorError, match=r"unknown parameter\(s\) \['bogus'\]"):
        make_operator(task, SIZE, bogus=1)


@pytest.mark.parametrize("task, impl", CASES + MATRIX_FREE_CASES + [("dense_svd", None)])
def test_every_map_refuses_a_tensor_of_the_wrong_shape(task, impl):
    """A, Aᵀ, A⁺ and pinv_eta name the shape they expected, for every operator (the decomposition-only one
    uses DecomposableOperator's own A and Aᵀ; a blur's measurement is an image)."""
    op = DenseSVD(SIZE, m=5, seed=0) if task == "dense_svd" else build(task, impl)
    image, meas = torch.zeros(1, 3, *SIZE), torch.zeros(op.meas_shape(1))
    wrong_image, wrong_meas = torch.zeros(1, 3, SIZE[0] + 1, SIZE[1]), torch.zeros(1, *op.meas_shape(1)[1:-1], 1)
    assert op.A(image).shape == meas.shape and op.At(meas).shape == image.shape
    with pytest.raises(OperatorError, match=rf"expected images \(B, C, {SIZE[0]}, {SIZE[1]}\)"):
        op.A(wrong_image)
    for fn in (op.At, op.pinv, lambda r: op.pinv_eta(r, 0.1)):
        with pytest.raises(OperatorError, match=r"measurement must have shape|expected images \(B, C, "):
            fn(wrong_meas)


@pytest.mark.parametrize("weights", [(0.3333, 0.3334, 0.3333), (0.299, 0.587, 0.114), (0.1, 0.1, 0.8)])
def test_colorization_basis_starts_with_w_over_its_norm_for_any_weights(weights):
    """The QR of [w, e₁, e₂] may return −w/‖w‖ first; the sign fix makes it +w/‖w‖ (so U = I and s = ‖w‖
    give U s Vᵀ = A), whatever rounding leaves in the other columns' products with w (tried on the task's
    weights and on two others, e.g. Rec. 601's)."""
    from ddpg.operators import Colorization

    op = type("Weighted", (Colorization,), {"weights": weights})(SIZE)
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    s = op.singulars(torch.float64)
    assert rel(op.U(s * op.Vt(x)[:, : s.numel()]), op.A(x)) < 1e-12
    assert float(s[0]) == pytest.approx(float(np.linalg.norm(weights)), rel=1e-12)
