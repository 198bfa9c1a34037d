"""Algebraic properties of every operator on random shapes and dtypes."""

import numpy as np
import pytest
import torch

from ddpg.errors import OperatorError, ParameterError
from ddpg.operators import FFTBlur, FFTSuperRes, baseline, degrade, make_operator
from ddpg.operators.base import DeviceCache

CASES = [
    ("sr_bicubic", {"impl": "svd"}, (32, 48)),
    ("sr_bicubic", {"impl": "fft"}, (32, 32)),
    ("sr_bicubic", {"impl": "svd", "scale": 2}, (24, 16)),
    ("sr_avgpool", {"scale": 2}, (16, 24)),
    ("sr_avgpool", {"scale": 4, "impl": "fft"}, (32, 32)),
    ("deblur_gauss", {}, (20, 28)),
    ("deblur_gauss", {"impl": "svd"}, (20, 28)),
    ("deblur_gauss", {"kernel_size": 9, "sigma": 2.0}, (32, 32)),
    ("deblur_motion", {"seed": 3}, (64, 72)),
    ("deblur_kernel", {"kernel": np.outer([1, 2, 1], [1, 0, 3, 2])}, (17, 20)),
    ("inpainting", {"ratio": 0.6, "seed": 1}, (16, 20)),
    ("inpainting", {"box": (2, 3, 5, 6)}, (16, 16)),
    ("denoising", {}, (12, 20)),
    ("colorization", {}, (16, 12)),
]


def ids(case):
    return f"{case[0]}-{'-'.join(f'{k}{v}' for k, v in case[1].items() if k != 'kernel')}"


def inner(a, b):
    return float((a.double() * b.double()).sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_adjoint_and_pseudo_inverse(case, dtype):
    task, params, size = case
    op = make_operator(task, size, **params)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *size, generator=g, dtype=dtype)
    y = torch.randn(op.meas_shape(2), generator=g, dtype=dtype)
    if task == "inpainting":
        y = op.A(y)  # measurements live on the kept pixels
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    lhs, rhs = inner(op.A(x), y), inner(x, op.At(y))
    assert abs(lhs - rhs) <= tol * (abs(lhs) + 1)
    # A A⁺ y = y for y in the range of A
    Ax = op.A(x)
    # (errors grow with the condition number: up to ~1e5 for the 9-tap σ=2 blur at its cut-off)
    assert float((op.A(op.pinv(Ax)) - Ax).norm() / Ax.norm()) < (1e-3 if dtype == torch.float32 else 1e-8)
    # pinv_eta(A x) → A⁺ A x (the row-space part of x) as η → 0
    row = op.pinv(Ax)
    err = [float((op.pinv_eta(Ax, eta) - row).norm() / row.norm()) for eta in (1e-2, 1e-4)]
    assert err[1] < err[0] or err[0] < 10 * tol
    # (pinv_eta itself against the dense Aᵀ(AAᵀ+ηI)⁻¹: test_adjoint_and_pinv_eta_equal_the_dense_formulas)


@pytest.mark.parametrize("case", [c for c in CASES if make_operator(c[0], c[2], **c[1]).has_svd], ids=ids)
def test_svd_factors_reproduce_the_operator(case):
    task, params, size = case
    op = make_operator(task, size, **params)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    coef = op.Vt(x)
    assert coef.shape == (2, 3 * size[0] * size[1])
    assert torch.allclose(op.V(coef), x, atol=1e-10)  # V orthogonal
    s = op.singulars(torch.float64)
    Ax = op.U(s * coef[:, : s.numel()])
    assert torch.allclose(Ax, op.A(x), atol=1e-10)
    y = op.A(x)
    assert torch.allclose(op.U(op.Ut(y)), y, atol=1e-10)
    c = torch.randn(2, 3 * size[0] * size[1], dtype=torch.float64)
    assert torch.allclose(op.Vt(op.V(c)), c, atol=1e-10)  # VᵀV = I as well: V is square orthogonal
    proj = op.V(torch.cat([coef[:, : s.numel()], torch.zeros_like(coef[:, s.numel():])], 1))
    head = op.Vt(proj)[:, : s.numel()]
    assert torch.allclose(op.V(torch.cat([head, torch.zeros_like(coef[:, s.numel():])], 1)), proj, atol=1e-10)


@pytest.mark.parametrize("task, params", [
    ("sr_bicubic", {"impl": "fft"}), ("sr_bicubic", {"impl": "svd"}), ("sr_bicubic", {"impl": "svd", "scale": 2}),
    ("sr_avgpool", {}), ("sr_avgpool", {"impl": "fft", "scale": 2}),
])
def test_sample_offset_is_where_a_linear_ramp_is_sampled(task, params):
    """Kernels sum to 1 and are symmetric about their footprint centre, so A maps the ramp a·i + b·j to its
    value at the centre of each sample, scale·r + sample_offset (away from the borders)."""
    op = make_operator(task, 64, **params)
    i = torch.arange(64, dtype=torch.float64)
    ramp = (0.3 * i[:, None] - 0.7 * i[None, :]).expand(1, 3, 64, 64)
    r = torch.arange(64 // op.scale, dtype=torch.float64) * op.scale
    expected = 0.3 * (r[:, None] + op.sample_offset[0]) - 0.7 * (r[None, :] + op.sample_offset[1])
    inner = slice(16 // op.scale, -16 // op.scale)
    assert torch.allclose(op.A(ramp)[0, 0, inner, inner], expected[inner, inner], atol=1e-10)


def test_spectra_and_matrices_are_computed_once_per_device_and_dtype(monkeypatch):
    built = []  # (cache, dtype) of every build, counted through DeviceCache's constructor
    original = DeviceCache.__init__

    def counting(cache, build):
        original(cache, lambda dev, dt: built.append((id(cache), str(dt))) or build(dev, dt))

    monkeypatch.setattr(DeviceCache, "__init__", counting)
    for op in (make_operator("deblur_gauss", 32), make_operator("sr_bicubic", 32, impl="fft"),
               make_operator("sr_bicubic", 32)):
        built.clear()
        for dtype in (torch.float32, torch.float64, torch.float32):
            x = torch.randn(1, 3, 32, 32, dtype=dtype)
            op.pinv_eta(op.A(x), 0.1)
        assert len(built) == len(set(built)), built  # nothing rebuilt
        assert sorted({dtype for _, dtype in built}) == ["torch.float32", "torch.float64"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_cuda_matches_cpu(case):
    task, params, size = case
    op = make_operator(task, size, **params)
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    y = op.A(x)
    cuda_op = make_operator(task, size, **params).to("cuda")
    assert torch.allclose(cuda_op.A(x.cuda()).cpu(), y, atol=1e-10)
    assert torch.allclose(cuda_op.At(y.cuda()).cpu(), op.At(y), atol=1e-10)
    assert torch.allclose(cuda_op.pinv_eta(y.cuda(), 1e-3).cpu(), op.pinv_eta(y, 1e-3), atol=1e-8)


def test_fft_and_svd_average_pooling_agree():
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    a = make_operator("sr_avgpool", 32, scale=4, impl="fft")
    b = make_operator("sr_avgpool", 32, scale=4, impl="svd")
    assert torch.allclose(a.A(x), b.A(x), atol=1e-12)
    y = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(a.At(y), b.At(y), atol=1e-12)
    assert torch.allclose(a.pinv_eta(y, 1e-3), b.pinv_eta(y, 1e-3), atol=1e-10)


def test_fft_and_svd_gaussian_blur_agree_away_from_the_border():
    x = torch.zeros(1, 3, 32, 32, dtype=torch.float64)
    x[..., 8:24, 8:24] = torch.randn(1, 3, 16, 16, dtype=torch.float64)  # compact support: no boundary effect
    a = make_operator("deblur_gauss", 32, impl="fft")
    b = make_operator("deblur_gauss", 32, impl="svd", threshold=0.0)
    assert torch.allclose(a.A(x), b.A(x), atol=1e-12)


def test_degrade_is_seeded_and_unclipped():
    op = make_operator("denoising", 8)
    x = torch.full((1, 3, 8, 8), 0.99)
    y1, y2 = degrade(x, op, 0.5, seed=3), degrade(x, op, 0.5, seed=3)
    assert torch.equal(y1, y2) and y1.max() > 1
    assert abs(float((y1 - x).std()) - 1.0) < 0.25  # 2·σ_y = 1 on the [-1, 1] scale
    assert baseline(make_operator("sr4", 16), torch.zeros(1, 3, 4, 4)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("call, message", [
    (lambda: make_operator("sr_bicubic", 30, scale=4), "must divide"),
    (lambda: make_operator("sr_avgpool", 32, scale=0), "scale=.* must be an integer >= 1"),
    (lambda: make_operator("sr_bicubic", 32, scale=2.5), "scale=.* must be an integer >= 1"),
    (lambda: make_operator("sr_bicubic", 8, scale=4), "smaller than the 16-tap kernel"),
    (lambda: make_operator("sr_bicubic", 32, impl="dense"), "impl must be"),
    (lambda: make_operator("denoising", (0, 16)), "size must be"),
    (lambda: make_operator("deblur_kernel", 16), "needs kernel="),
    (lambda: make_operator("deblur_kernel", 16, kernel=np.ones((2, 3, 3))), "must be 2-D"),
    (lambda: make_operator("deblur_kernel", 16, kernel=np.ones((17, 3))), "larger than the image"),
    (lambda: make_operator("deblur_kernel", 16, kernel=np.ones((3, 17))), "larger than the image"),
    (lambda: FFTBlur(np.ones((3, 17)), 16), "larger than the image"),
    (lambda: FFTBlur(np.ones((17, 3)), 16), "larger than the image"),
    (lambda: FFTBlur(np.array([[1.0, -1.0]]), 16), "non-zero sum"),
    (lambda: FFTBlur(np.array([[1.0, np.nan]]), 16), "finite"),
    (lambda: FFTBlur(np.array([[1.0, np.inf]]), 16), "finite"),
    (lambda: FFTBlur(np.ones(3), 16), "must be 2-D"),
    (lambda: make_operator("deblur_kernel", 16, kernel=np.array([[1.0, -1.0]])), "non-zero sum"),
    (lambda: make_operator("deblur_kernel", 16, kernel="/nonexistent/k.npy"), "file not found"),
    (lambda: make_operator("deblur_motion", 64, intensity=1.5), "intensity"),
    (lambda: make_operator("inpainting", 16, box=(10, 10, 8, 8)), "does not fit"),
    (lambda: make_operator("inpainting", 16, ratio=1.0), "ratio"),
    (lambda: make_operator("deblur_motion", 32), "larger than the image"),
    (lambda: make_operator("deblur_gauss", 4, kernel_size=5), "larger than the image"),
    (lambda: make_operator("inpainting", 16, mask=np.ones((8, 8))), "mask has shape"),
    (lambda: make_operator("deblurr", 16), "unknown task"),
    (lambda: make_operator("denoising", 16, sigma=3), "unknown parameter"),
    (lambda: make_operator("deblur_gauss", 16).pinv_eta(torch.zeros(1, 3, 16, 16), 0.0), "eta must be > 0"),
    (lambda: make_operator("sr4", 16).At(torch.zeros(1, 3, 16, 16)), "measurement must have shape"),
    (lambda: make_operator("deblur_gauss", 16).pinv_eta(torch.zeros(1, 3, 16, 16), float("nan")), "eta"),
    (lambda: make_operator("sr4", 32, impl="svd").pinv_eta(torch.zeros(1, 3, 8, 8), -1e-3), "eta must be > 0"),
    (lambda: make_operator("colorization", 8).pinv_eta(torch.zeros(1, 1, 8, 8), 0), "eta must be > 0"),
])
def test_bad_parameters_raise_clear_errors(call, message):
    with pytest.raises(OperatorError, match=message):
        call()


def test_degrade_refuses_a_negative_sigma_y_naming_it():
    with pytest.raises(ParameterError, match="sigma_y"):
        degrade(torch.zeros(1, 3, 8, 8), make_operator("denoising", 8), -0.1)


# --- every operator against its dense matrix -----------------------------------------------------------------
# (task, params, size): small images so the dense (m × 3HW) matrix is cheap; every task of the factory appears
# (test_dense_cases_cover_every_task), with each of its implementations.
DENSE_CASES = [
    ("sr_bicubic", {"impl": "svd"}, (16, 20)),
    ("sr_bicubic", {"impl": "svd", "scale": 2}, (10, 8)),
    ("sr_bicubic", {"impl": "fft"}, (20, 20)),
    ("sr_bicubic", {"impl": "fft", "scale": 2}, (10, 12)),
    ("sr_avgpool", {"impl": "svd", "scale": 2}, (8, 10)),
    ("sr_avgpool", {"impl": "fft", "scale": 2}, (8, 12)),
    ("sr_avgpool", {"impl": "fft", "scale": 3}, (9, 12)),
    ("deblur_gauss", {"impl": "fft"}, (8, 12)),
    ("deblur_gauss", {"impl": "svd"}, (10, 8)),
    ("deblur_gauss", {"impl": "fft", "kernel_size": 4, "sigma": 1.5}, (9, 8)),  # even kernel
    ("deblur_motion", {"kernel": np.arange(20.0).reshape(4, 5) % 7}, (10, 9)),
    ("deblur_kernel", {"kernel": np.outer([1, 2, 1], [1, 0, 3, 2])}, (7, 10)),
    ("inpainting", {"ratio": 0.4, "seed": 2}, (8, 10)),
    ("inpainting", {"box": (1, 2, 3, 4)}, (6, 8)),
    ("denoising", {}, (6, 8)),
    ("colorization", {}, (8, 6)),
]


def dense(op, dtype=torch.float64) -> torch.Tensor:
    """The operator's matrix (m × 3HW), built column by column: column j is A applied to basis image j."""
    H, W = op.img_size
    n = 3 * H * W
    basis = torch.eye(n, dtype=dtype).reshape(n, 3, H, W)
    return op.A(basis).reshape(n, -1).T


def test_dense_cases_cover_every_task():
    from ddpg.operators.tasks import TASKS

    assert {task for task, _, _ in DENSE_CASES} == set(TASKS)


@pytest.mark.parametrize("case", DENSE_CASES, ids=ids)
def test_adjoint_and_pinv_eta_equal_the_dense_formulas(case):
    """Aᵀy = Mᵀy and pinv_eta(r, η) = Mᵀ(MMᵀ + ηI)⁻¹r for the dense matrix M of A, in float64 and float32."""
    task, params, size = case
    op = make_operator(task, size, **params)
    M = dense(op)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(op.meas_shape(2), generator=g, dtype=torch.float64)
    if task == "inpainting":
        y = op.A(y)  # measurements live on the kept pixels
    flat_y = y.reshape(2, -1).T
    assert torch.allclose(op.At(y).reshape(2, -1).T, M.T @ flat_y, atol=1e-12)
    gram = M @ M.T
    for eta in (1e-3, 0.1, 2.0):
        expected = M.T @ torch.linalg.solve(gram + eta * torch.eye(len(gram), dtype=gram.dtype), flat_y)
        got = op.pinv_eta(y, eta).reshape(2, -1).T
        assert float((got - expected).norm() / expected.norm()) < 1e-10, eta
        got32 = op.pinv_eta(y.float(), eta).reshape(2, -1).T.double()
        assert float((got32 - expected).norm() / expected.norm()) < 1e-4, eta


@pytest.mark.parametrize("case", DENSE_CASES, ids=ids)
def test_pinv_equals_the_dense_pseudo_inverse(case):
    task, params, size = case
    op = make_operator(task, size, **params)
    M = dense(op)
    in_range = op.A(torch.randn(2, 3, *size, dtype=torch.float64))
    anywhere = torch.randn(op.meas_shape(2), dtype=torch.float64)  # with a part outside the range of A
    if task == "inpainting":
        anywhere = op.A(anywhere)  # measurements live on the kept pixels
    for y in (in_range, anywhere):
        expected = torch.linalg.pinv(M, rtol=1e-9) @ y.reshape(2, -1).T
        got = op.pinv(y).reshape(2, -1).T
        assert float((got - expected).norm() / expected.norm()) < 1e-8


def delta(shape, at) -> np.ndarray:
    kernel = np.zeros(shape)
    kernel[at] = 1.0
    return kernel


@pytest.mark.parametrize("shape, at", [((2, 2), (0, 0)), ((4, 2), (1, 0)), ((4, 6), (1, 2)), ((3, 4), (1, 1))])
def test_fft_kernels_are_centred_at_their_lower_middle_tap(shape, at):
    """A delta kernel at c = ((kh−1)//2, (kw−1)//2) is the identity for odd and even sizes, and a delta one tap
    before c in each direction shifts the image by one pixel ((k ⊛ x)[n] = x[n + c − m] for the delta at m)."""
    x = torch.randn(1, 3, 8, 12, dtype=torch.float64)
    assert torch.allclose(make_operator("deblur_kernel", (8, 12), kernel=delta(shape, at)).A(x), x, atol=1e-12)
    if at[0] > 0 and at[1] > 0:
        shifted = torch.roll(x, shifts=(-1, -1), dims=(2, 3))  # x[n + (1, 1)]
        before = delta(shape, (at[0] - 1, at[1] - 1))
        assert torch.allclose(make_operator("deblur_kernel", (8, 12), kernel=before).A(x), shifted, atol=1e-12)
    sr = FFTSuperRes(delta(shape, at), 2, (8, 12))
    assert torch.allclose(sr.A(x), x[..., ::2, ::2], atol=1e-12)  # sample (0, 0) of each block, no shift


@pytest.mark.parametrize("size, sigma, threshold", [(5, 10.0, 3e-2), (5, 10.0, 0.2), (4, 1.5, 3e-2)])
def test_svd_blur_is_the_zero_boundary_convolution_with_small_singular_values_truncated(size, sigma, threshold):
    """The SVD blur against a matrix built independently: np.convolve of each basis vector (zero boundary,
    'same' alignment; for a symmetric even kernel that is taps k//2 before to (k+1)//2 − 1 after), its 1-D
    singular values below the threshold set to 0 (the truncated A is the operator)."""
    taps = np.exp(-(np.arange(size) - (size - 1) / 2) ** 2 / (2 * sigma**2))
    taps /= taps.sum()

    def truncated(n):
        conv = np.stack([np.convolve(np.eye(n)[j], taps, mode="same") for j in range(n)], axis=1)
        U, s, Vt = np.linalg.svd(conv)
        assert (s < threshold).any()  # the threshold truncates something at this size
        return torch.as_tensor(U @ np.diag(np.where(s < threshold, 0.0, s)) @ Vt)

    op = make_operator("deblur_gauss", (12, 32), impl="svd", kernel_size=size, sigma=sigma, threshold=threshold)
    x = torch.randn(2, 3, 12, 32, dtype=torch.float64)
    assert torch.allclose(op.A(x), truncated(12) @ x @ truncated(32).T, atol=1e-12)


@pytest.mark.parametrize("gain", [1.0, 1e3])
def test_fft_pinv_drops_singular_values_under_numpys_default_rcond(gain):
    """A⁺ treats σ ≤ max(H, W)·eps·σ_max as zero (NumPy's pinv default, relative to σ_max): a blur whose
    spectrum is ``gain`` except gain·5e-16 at one frequency pair (under 8·eps = 1.8e-15, over eps) has
    A⁺A = the projection removing that pair."""
    spectrum = torch.ones(8, 8, dtype=torch.complex128)
    spectrum[0, 1] = spectrum[0, 7] = 5e-16
    op = FFTBlur(gain * torch.fft.ifft2(spectrum).real.numpy(), 8)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    keep = spectrum.real > 0.5
    expected = torch.fft.ifft2(torch.fft.fft2(x) * keep).real
    assert torch.allclose(op.pinv(op.A(x)), expected, atol=1e-10)


def test_kernel_taps_by_hand():
    """Keys (a = −0.5) at the SVD SR positions (i − 2s + ½)/s and at MATLAB's integer offsets/s, Gaussian taps
    at x − (size−1)/2, the separable outer kernel: values worked out by hand, for odd and even sizes."""
    from ddpg.operators.kernels import bicubic_taps_matlab, bicubic_taps_svd, gaussian_taps, keys_cubic, outer_kernel

    # keys(0.25) = 0.8671875, keys(0.75) = 0.2265625, keys(1.25) = −0.0703125, keys(1.75) = −0.0234375; sum 2
    half = np.array([-0.0234375, -0.0703125, 0.2265625, 0.8671875]) / 2
    np.testing.assert_allclose(bicubic_taps_svd(2), np.concatenate([half, half[::-1]]), atol=1e-15)
    svd4 = bicubic_taps_svd(4)  # the docstring's values
    assert len(svd4) == 16 and abs(svd4[0] + 0.001709) < 1e-6 and abs(svd4[1] + 0.010986) < 1e-6
    assert abs(svd4[7] - 0.240967) < 1e-6 and abs(svd4[8] - 0.240967) < 1e-6
    # keys(k/2)/2 for k = −4..4: 0, −0.0625, 0, 0.5625, 1, 0.5625, 0, −0.0625, 0 (halved; already sum 1)
    np.testing.assert_allclose(bicubic_taps_matlab(2), [0, -0.03125, 0, 0.28125, 0.5, 0.28125, 0, -0.03125, 0],
                               atol=1e-15)
    np.testing.assert_allclose(keys_cubic(np.array([0.0, 1.0, 2.0, 2.5])), [1, 0, 0, 0], atol=1e-15)
    odd = np.exp(-np.array([4.0, 1.0, 0.0, 1.0, 4.0]) / 200)
    np.testing.assert_allclose(gaussian_taps(5, 10.0), odd / odd.sum(), atol=1e-15)
    even = np.exp(-np.array([2.25, 0.25, 0.25, 2.25]) / 4.5)  # x = ±1.5, ±0.5; 2σ² = 4.5
    np.testing.assert_allclose(gaussian_taps(4, 1.5), even / even.sum(), atol=1e-15)
    np.testing.assert_allclose(outer_kernel(np.array([1.0, 2.0, 1.0])),
                               np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16, atol=1e-7)
    assert outer_kernel(np.array([1.0, 2.0, 1.0])).dtype == np.float32


@pytest.mark.parametrize("case", DENSE_CASES, ids=ids)
def test_every_method_refuses_wrong_shapes_and_bad_eta(case):
    """A, Aᵀ, pinv_eta and pinv name the shape they expected (OperatorError, not a broadcasting error), and
    pinv_eta refuses η ≤ 0 on every operator."""
    task, params, size = case
    op = make_operator(task, size, **params)
    H, W = size
    y = torch.zeros(op.meas_shape(1))
    wrong_y = torch.zeros(*y.shape[:-1], y.shape[-1] + 1)
    with pytest.raises(OperatorError, match="expected images"):
        op.A(torch.zeros(1, 3, H, W + 1))
    for call in (lambda: op.At(wrong_y), lambda: op.pinv_eta(wrong_y, 0.1), lambda: op.pinv(wrong_y)):
        with pytest.raises(OperatorError, match="measurement must have shape|expected images"):
            call()
    for eta in (0.0, -1e-3):
        with pytest.raises(OperatorError, match="eta must be > 0"):
            op.pinv_eta(y, eta)


@pytest.mark.parametrize("task, params, n", [("deblur_gauss", {}, 16), ("sr4", {"impl": "fft"}, 20)])
def test_fft_spectrum_defaults_to_the_operators_device_and_float32(task, params, n):
    op = make_operator(task, n, **params)
    K = op.spectrum()
    assert K.device == op.device and K.dtype == torch.complex64 and K.shape == (n, n // 2 + 1)
    assert torch.equal(K, op.spectrum("cpu", torch.float32))
    full = op.spectrum(dtype=torch.float64, full=True)
    assert full.dtype == torch.complex128 and full.shape == (n, n)
    assert torch.allclose(full[:, : n // 2 + 1], K.to(torch.complex128), atol=1e-6)
    # an explicit device wins over the operator's (the meta device stands in for a GPU here)
    assert op.spectrum("meta").device.type == "meta" and op.spectrum("meta", full=True).device.type == "meta"


@pytest.mark.parametrize("size, sigma", [(0, 1.0), (-3, 1.0), (5, 0.0), (5, -1.0)])
def test_gaussian_taps_refuse_an_empty_size_or_a_non_positive_sigma(size, sigma):
    from ddpg.operators.kernels import gaussian_taps

    with pytest.raises(OperatorError, match=rf"size >= 1 and sigma > 0, got size={size}, sigma={sigma}"):
        gaussian_taps(size, sigma)
    with pytest.raises(OperatorError, match="kernel_size=.* must be an integer >= 1|sigma=.* must be a finite number"):
        make_operator("deblur_gauss", 16, kernel_size=size, sigma=sigma)
    assert gaussian_taps(1, 1e-3).tolist() == [1.0]  # the smallest kernel and sigma are accepted


def test_footprint_centre_by_hand_and_for_an_unnormalised_kernel():
    """k = [[1, 0, 0, 0], [2, 1, 1, 0]] (2×4, both sides even, not square): centre c = ((2−1)//2, (4−1)//2)
    = (0, 1), Σk = 5, row mean (0·1 + 1·4)/5 = 0.8, column mean (0·3 + 1·1 + 2·1 + 3·0)/5 = 0.6, so the
    footprint is at (−0.8, 0.4); scaling k does not move it."""
    from ddpg.operators.fft import footprint_centre

    k = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 0.0]])
    assert footprint_centre(k) == pytest.approx((-0.8, 0.4), abs=1e-12)
    assert footprint_centre(3 * k) == pytest.approx((-0.8, 0.4), abs=1e-12)


@pytest.mark.parametrize("k", [3, 4, 7])
def test_zero_boundary_toeplitz_rows_by_hand(k):
    """Row i of the zero-boundary convolution matrix weighs x[j] by taps[j − i + k//2] for
    j = i − k//2 … i + ⌈k/2⌉ − 1 inside the image: for odd k that is NumPy's centred correlation."""
    from ddpg.operators.svd import toeplitz_zero_boundary

    taps = np.arange(1.0, k + 1)
    mat = toeplitz_zero_boundary(9, taps)
    if k % 2:
        x = np.random.default_rng(k).normal(size=9)
        np.testing.assert_allclose(mat @ x, np.correlate(x, taps, "same"), atol=1e-12)
    else:  # k = 4: row i covers i − 2 … i + 1 with taps 1, 2, 3, 4
        assert mat[0, :3].tolist() == [3.0, 4.0, 0.0] and mat[4, 2:6].tolist() == [1.0, 2.0, 3.0, 4.0]
        assert mat[8, 6:].tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("scale, size", [(0, (16, 16)), (-2, (16, 16)), (3, (16, 16)), (3, (15, 16)),
                                         (3, (18, 16))])
def test_fft_superresolution_refuses_a_scale_that_does_not_divide_the_image(scale, size):
    with pytest.raises(OperatorError, match=rf"scale {scale} must divide the image size"):
        FFTSuperRes(np.ones((2, 2)), scale, size)


def test_fft_superresolution_at_scale_1_is_its_blur_and_drops_the_same_frequencies():
    """Scale 1 is accepted and is the blur itself: with the kernel [1/2, 1/2] (|K̂| = 0 on the Nyquist column)
    its A⁺ equals the blur's, which zeroes those frequencies, and A A⁺ A = A."""
    kernel = np.array([[0.5, 0.5]])
    sr, blur = FFTSuperRes(kernel, 1, 16), FFTBlur(kernel, 16)
    r = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(sr.A(r), blur.A(r), atol=1e-6)
    assert torch.allclose(sr.pinv(r), blur.pinv(r), atol=1e-5)
    assert torch.allclose(sr.A(sr.pinv(sr.A(r))), sr.A(r), atol=1e-5)
    nyquist = torch.fft.rfft2(sr.pinv(r))[..., 8]  # the Nyquist column of the rfft2 half-spectrum
    assert float(nyquist.abs().max()) < 1e-4


RCOND_16 = 16 * float(torch.finfo(torch.float32).eps)  # NumPy's pinv rcond for a 16×16 float32 operator


@pytest.mark.parametrize("eps, zeros", [(1e-8, 16), (0.9 * RCOND_16, 16), (1.2 * RCOND_16, 0), (1e-5, 0)])
def test_the_fourier_basis_drops_exactly_the_frequencies_the_pseudo_inverse_drops(eps, zeros):
    """A 1×2 kernel 3·[(1+ε)/2, (1−ε)/2] (sum 3: not normalised) has |K̂| = 3ε along the Nyquist column
    (16 frequencies of a 16×16 image) and up to 3 elsewhere. NumPy's rcond drops σ ≤ 16·eps₃₂·σ_max, i.e.
    ε ≤ 16·eps₃₂ (tried far below, just below, just above and far above): the Fourier basis (DDRM/DDNM on a
    circular blur) zeroes the same singular values as A⁺, its Uᵀy is 0 there, and V diag(1/s) Uᵀ equals A⁺."""
    from ddpg.operators.base import reciprocal

    op = FFTBlur(3 * np.array([[(1 + eps) / 2, (1 - eps) / 2]]), 16)
    basis = op.spectral(torch.device("cpu"))
    s = basis.s
    assert int((s == 0).sum()) == zeros
    if zeros == 0:
        assert float(s.min()) == pytest.approx(3 * eps, rel=1e-3) and float(s.max()) == pytest.approx(3, rel=1e-6)
    r = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    coef = basis.meas_coef(r)
    assert torch.equal(coef[..., s == 0], torch.zeros_like(coef[..., s == 0]))
    via_basis = basis.image(reciprocal(s) * coef)
    reference = op.pinv(r)
    assert float((via_basis - reference).norm() / reference.norm()) < 1e-5
