"""Peer samplers, piece by piece: grids, candidate counts, spectral bases, closed-form data steps, DPS
gradients against finite differences (float64, tiny UNets), and the clear errors."""

import math
from dataclasses import fields

import pytest
import torch

from conftest import FIXTURES, rel_err
from ddpg.errors import ConfigError, OperatorError
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, linear_schedule, list_presets, load_preset
from ddpg.runtime.backends.capabilities import ONNXRUNTIME_CAPABILITIES
from ddpg.runtime.samplers import get_sampler
from ddpg.runtime.samplers.diffpir import data_step
from ddpg.runtime.samplers.dpps import candidate_count
from ddpg.runtime.samplers.dps import ancestral_steps, norm_and_grad, respaced_timesteps
from ddpg.schedule import TimeGrid, quad_timesteps

MOTION_LIKE = torch.rand(7, 5, generator=torch.Generator().manual_seed(5)).numpy()  # asymmetric, non-square


def crel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().norm() / b.abs().norm())


def test_diffpir_quad_grid_matches_the_reference():
    assert quad_timesteps(20) == [999, 770, 675, 602, 541, 487, 438, 393, 351, 311, 274, 239, 205, 172, 141,
                                  111, 82, 54, 26, 0]
    grid = quad_timesteps(100)
    assert grid[:6] == [999, 899, 857, 825, 798, 775] and grid[-5:] == [20, 15, 10, 5, 0]


def test_dpps_candidate_counts_match_the_paper_schedule():
    sched = linear_schedule()
    counts = {t: candidate_count(sched.alpha_bar(t), 50) for t in range(1000)}
    assert all(counts[t] == 2 for t in range(528, 1000)) and counts[527] > 2
    assert (counts[500], counts[400], counts[300], counts[200], counts[100], counts[0]) == (4, 10, 23, 42, 49, 50)
    assert sum(counts.values()) == 16255


def test_ancestral_steps_are_ddpm_at_1000_and_respaced_below():
    sched = linear_schedule()
    plan = ancestral_steps(sched, 1000)
    assert [k.t for k in plan] == list(range(999, -1, -1))
    for k in (plan[0], plan[500], plan[-2]):  # β of the grid equals the schedule's β_t
        assert k.beta == pytest.approx(float(sched.betas[k.t]), rel=1e-9)
        assert k.coef_x0 == pytest.approx(k.beta * math.sqrt(k.a_prev) / (1 - k.a), rel=1e-12)
    assert plan[-1].coef_x0 == pytest.approx(1.0) and plan[-1].coef_xt == pytest.approx(0.0, abs=1e-12)
    assert respaced_timesteps(100, 1000) == [round(i * 999 / 99) for i in range(100)]
    short = ancestral_steps(sched, 10)
    prod = math.prod(1 - k.beta for k in short)  # respaced β telescope to ᾱ of the first step
    assert prod == pytest.approx(sched.alpha_bar(999), rel=1e-9)


@pytest.mark.parametrize("task, params", [("sr4", {"impl": "svd"}), ("deblur_gauss", {"impl": "fft"}),
                                          ("deblur_kernel", {"kernel": MOTION_LIKE}), ("inpainting", {"ratio": 0.5}),
                                          ("colorization", {}), ("denoising", {}),
                                          ("deblur_gauss", {"impl": "svd"})])
def test_spectral_basis_diagonalises_the_operator(task, params):
    op = make_operator(task, 32, **params)
    view = op.spectral(torch.device("cpu"), "test")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    c = view.coef(x)
    assert rel_err(view.image(c), x) < 1e-5  # V orthonormal
    assert (c.abs() ** 2).sum() == pytest.approx(float((x**2).sum()), rel=1e-4)
    assert crel_err(view.meas_coef(op.A(x)), view.s * c) < 1e-4  # Uᵀ A x = s ⊙ Vᵀ x


def test_spectral_basis_refuses_fft_superresolution():
    with pytest.raises(OperatorError, match="impl='svd'"):
        make_operator("sr4", 32, impl="fft").spectral(torch.device("cpu"), "DDRM")


def test_diffpir_data_step_equals_the_reference_closed_forms():
    g = torch.Generator().manual_seed(2)
    x0, x = torch.randn(2, 3, 32, 32, generator=g).double(), torch.randn(2, 3, 32, 32, generator=g).double()
    tau = 0.37
    blur = make_operator("deblur_gauss", 32, impl="fft")  # IFFT[(K̄·Y + τ·X0)/(|K|² + τ)]
    K = blur.spectrum(dtype=torch.float64, full=True)
    y = blur.A(x)
    ref = torch.fft.ifft2((K.conj() * torch.fft.fft2(y) + tau * torch.fft.fft2(x0)) / (K.abs() ** 2 + tau)).real
    assert rel_err(data_step(blur, x0, y, tau), ref) < 1e-10
    sr = make_operator("sr4", 32, impl="fft")  # USRNet / Zhao et al. 2016 closed form
    s, K = 4, sr.spectrum(dtype=torch.float64, full=True)
    y = sr.A(x)
    d = K.conj() * torch.fft.fft2(sr.upsample_zeros(y)) + tau * torch.fft.fft2(x0)

    def fold(z):  # average of the s×s aliased spectral blocks
        return z.reshape(*z.shape[:-2], s, 32 // s, s, 32 // s).mean(dim=(-4, -2))

    tiled = (fold(K * d) / (fold(K.abs() ** 2) + tau)).repeat(1, 1, s, s)
    ref = torch.fft.ifft2((d - K.conj() * tiled) / tau).real
    assert rel_err(data_step(sr, x0, y, tau), ref) < 1e-10
    inp = make_operator("inpainting", 32, ratio=0.5)
    m = inp.mask.double()
    y = inp.A(x)
    assert rel_err(data_step(inp, x0, y, tau), (m * y + tau * x0) / (m + tau)) < 1e-12


def tiny_unet(name: str) -> torch.nn.Module:
    fixture = torch.load(FIXTURES / "priors" / f"{name}.pt", weights_only=True)
    torch.manual_seed(3)
    return create_prior(fixture["config"])


@pytest.mark.parametrize("name, task, clip", [("ddpm_small", "deblur_gauss", False), ("adm_small_a", "sr4", False),
                                              ("adm_small_a", "inpainting", True)])
def test_dps_gradient_matches_finite_differences(name, task, clip):
    """The UNets keep embeddings, norms and the output head in float32 (`.double()` is not supported), so the
    check runs in float32: central differences with step 1e-2 along unit directions, agreement to 1 %."""
    model = tiny_unet(name)
    op = make_operator(task, 32)
    g = torch.Generator().manual_seed(4)
    x_t = torch.randn(1, 3, 32, 32, generator=g)
    y = op.A(torch.randn(1, 3, 32, 32, generator=g).clamp(-1, 1))
    t, a = 300, linear_schedule().alpha_bar(300)
    grad, _, _, _, r = norm_and_grad(model, op, y, x_t, t, a, "epsilon", clip)

    @torch.no_grad()
    def residual_norm(x):  # r(x_t) = ‖y − A(x̂₀(x_t))‖, written out independently
        x0 = (x - math.sqrt(1 - a) * model(x, torch.full((1,), float(t)))[:, :3]) / math.sqrt(a)
        return float((y - op.A(x0.clamp(-1, 1) if clip else x0)).norm())

    assert residual_norm(x_t) == pytest.approx(float(r), rel=1e-5)
    h = 1e-2
    for _ in range(2):
        v = torch.randn(x_t.shape, generator=g)
        v /= v.norm()
        fd = (residual_norm(x_t + h * v) - residual_norm(x_t - h * v)) / (2 * h)
        assert fd == pytest.approx(float((grad * v).sum()), rel=1e-2, abs=1e-3 * float(grad.norm()))
    assert float(grad.norm()) > 0


class FrozenDenoiser:
    """A denoiser without gradients, like the ONNX Runtime and TensorRT backends."""

    backend = "onnxruntime"
    capabilities = ONNXRUNTIME_CAPABILITIES

    def __init__(self, den):
        self._den = den

    def __getattr__(self, name: str):
        return getattr(self._den, name)

    def __call__(self, x, t):
        return self._den(x, t)


@pytest.mark.parametrize("method", ["dps", "dpps"])
def test_gradient_methods_refuse_backends_without_gradients(method):
    den = as_denoiser(create_prior("gaussian"))
    op = make_operator("deblur_gauss", 32)
    y = torch.zeros(1, 3, 32, 32)
    spec = get_sampler(method)
    assert spec.capabilities(spec.build(0.0)).needs_grad
    with pytest.raises(ConfigError, match="torch backend"):
        Restorer(FrozenDenoiser(den), op, method=method, steps=5)
    with pytest.raises(ConfigError, match="torch backend"):
        get_sampler(method).restore(FrozenDenoiser(den), op, y, 0.0, steps=5)
    with torch.inference_mode(), pytest.raises(ConfigError, match="inference_mode"):
        get_sampler(method).restore(den, op, torch.zeros(1, 3, 32, 32), 0.0, steps=5)


def test_svd_methods_refuse_fft_superresolution_clearly():
    den = as_denoiser(create_prior("gaussian"))
    op = make_operator("sr4", 32, impl="fft")
    y = torch.zeros(1, 3, 8, 8)
    with pytest.raises(OperatorError, match="DDRM needs an operator with an SVD"):
        get_sampler("ddrm").restore(den, op, y, 0.0, steps=5)
    with pytest.raises(OperatorError, match="DDNM\\+"):
        get_sampler("ddnm").restore(den, op, y, 0.05, steps=5)
    get_sampler("ddnm").restore(den, op, y, 0.0, steps=2)  # noiseless DDNM only needs A⁺


@pytest.mark.parametrize("method, hyper", [("ddnm", {"eta": 1.5}), ("ddrm", {"eta_b": -0.1}),
                                           ("diffpir", {"lam": 0.0}), ("dps", {"var_type": "wide"}),
                                           ("dpps", {"n_max": 1})])
def test_bad_hyper_parameters_are_named(method, hyper):
    den = as_denoiser(create_prior("gaussian"))
    op = make_operator("deblur_gauss", 32)
    name = next(iter(hyper))
    with pytest.raises(ConfigError, match=name):
        get_sampler(method).restore(den, op, torch.zeros(1, 3, 32, 32), 0.05, steps=3, **hyper)


@pytest.mark.parametrize("method", ["ddnm", "ddrm", "diffpir", "dps", "dpps"])
def test_presets_build_their_operator_and_fit_the_sampler(method):
    spec = get_sampler(method)
    accepted = {f.name for f in fields(spec.params)}
    names = list_presets(method)
    assert names and all(n.startswith(f"{method}/") for n in names)
    operators = set()
    for name in names:
        p = load_preset(name)
        assert set(p.hyper) <= set(spec.hyper_names) <= accepted, name
        operators.add(tuple(sorted(p.operator.items())))
    for cfg in operators:
        params = dict(cfg)
        assert make_operator(params.pop("task"), 64, **params).img_size == (64, 64)


def test_presets_carry_the_papers_settings():
    """Spot values from docs/methods.md §6.6 (σ conventions: DPS σ 0.05 and DPPS σ 0.01 on [−1, 1])."""
    assert load_preset("ddnm/celeba_hq/sr4/0").hyper == {"eta": 0.85}
    ddrm = load_preset("ddrm/celeba_hq/sr4/0.05")
    assert (ddrm.steps, ddrm.hyper, ddrm.operator["impl"]) == (20, {"eta": 0.85, "eta_b": 1.0}, "svd")
    deblur = load_preset("diffpir/ffhq256/deblur_gauss/0.05")
    assert (deblur.steps, deblur.hyper["lam"], deblur.hyper["zeta"], deblur.operator["sigma"]) == (100, 7.0, 0.3, 3.0)
    inpaint = load_preset("diffpir/ffhq256/inpaint/0")
    assert (inpaint.steps, inpaint.hyper["lam"], inpaint.hyper["zeta"]) == (20, 1.0, 1.0)
    assert inpaint.operator["ratio"] == 0.5
    assert load_preset("dps/ffhq256/sr4/0.025").hyper["zeta"] == 0.3
    assert load_preset("dps/imagenet256_uncond/inpaint/0.025").hyper["zeta"] == 0.5
    assert load_preset("dps/ffhq256/deblur_gauss/0.025").steps == 1000
    assert load_preset("dpps/ffhq256/deblur_motion/0.005").hyper["zeta"] == 0.4
    assert load_preset("dpps/gaussian/sr4/0.005").hyper == {"zeta": 1.0, "n_max": 50, "var_type": "auto", "clip": True}


@pytest.mark.parametrize("task, params", [("sr4", {"impl": "svd"}), ("deblur_gauss", {"impl": "fft"})])
def test_ddnm_plus_equals_ddrm_up_to_the_start(task, params):
    """With σ > 0, η_b = 1 and the same η, DDNM+'s λ/d₁/d₂ rules are DDRM's three per-component rules written in
    VP units (derived in the module docstrings); only the start differs (DDRM starts from y, shifting x_T by
    ≈ ȳ/σ_T). On the same grid, x_T and noise the outputs must agree closely — a cross-check of both."""
    prior = create_prior("gaussian")
    den = as_denoiser(prior)
    op = make_operator(task, 32, **params)
    x = prior.sample(2, 32, generator=torch.Generator().manual_seed(3))
    outs = []
    for method in ("ddnm", "ddrm"):
        r = Restorer(den, op, method=method, sigma_y=0.05, steps=20)
        outs.append(r.restore(r.degrade(x, [1, 2]), [1, 2]))
    assert rel_err(outs[0], outs[1]) < 1e-3
    assert rel_err(outs[0], x) > 0.05  # not trivially equal to the truth


def test_ddpg_candidate_selection_keeps_per_image_the_noise_that_best_explains_y():
    """DDPG with select_candidates: every step but the last draws N_t = candidate_count(ᾱ_t, n_max) noises per
    image (the last step's noise is multiplied by 0: zeros); the step keeps, for each image, the candidate z_j
    minimising ‖√ᾱ'·(y − A x̃) − √(1−ᾱ')·√ζ·A z_j‖, i.e. it equals the plain step given that z_j."""
    from ddpg.runtime.samplers.ddpg import DDPG, DDPGParams
    from ddpg.runtime.samplers.method import State

    den = as_denoiser(create_prior("gaussian"))
    op = make_operator("deblur_gauss", 16)
    p = DDPGParams(sigma_y=0.05, zeta=0.1, select_candidates=True, n_max=6)
    rows = DDPG().table(linear_schedule(), TimeGrid.named("uniform", 10), p)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 16, 16, generator=g)
    y = op.A(torch.rand(3, 3, 16, 16, generator=g) * 2 - 1)
    y = y + 0.3 * torch.randn(y.shape, generator=g)  # far noisier than σ_y: y − A x̃ weighs like the noise term

    def noise(like):
        return torch.randn(like.shape, generator=g)

    assert rows[-1].a_next == 1 and all(row.a_next < 1 for row in rows[:-1])
    assert torch.equal(DDPG().draw(noise, x, rows[-1], p), torch.zeros_like(x))
    chosen = set()
    for row in rows[:-1]:
        n = candidate_count(row.a, p.n_max)
        z = DDPG().draw(noise, x, row, p)
        assert z.shape == (3, 3 * n, 16, 16) and n >= 2
        eps = den(x, torch.full((3,), float(row.t)))
        new = DDPG().step(State(x, x, x), eps, row, z, y, op, p, "epsilon")
        plain = [DDPG().step(State(x, x, x), eps, row, z[:, 3 * j:3 * j + 3], y, op, p, "epsilon")
                 for j in range(n)]
        for b in range(3):
            x_tilde = plain[0].out[b:b + 1]  # x̃ does not depend on z
            scores = [float((math.sqrt(row.a_next) * (y[b:b + 1] - op.A(x_tilde))
                             - math.sqrt(1 - row.a_next) * math.sqrt(p.zeta) * op.A(z[b:b + 1, 3 * j:3 * j + 3]))
                            .norm()) for j in range(n)]
            best = min(range(n), key=scores.__getitem__)
            chosen.add(best)
            assert torch.allclose(new.x[b], plain[best].x[b], atol=1e-6)
    assert len(chosen) > 1  # not always the same index
