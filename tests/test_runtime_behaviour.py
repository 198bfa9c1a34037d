"""Determinism, batch independence, presets against the paper tables, and input validation before any model
call."""

import re
from pathlib import Path

import pytest
import torch

from conftest import rel_err
from ddpg.errors import ConfigError
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer, ddpg_sample, list_presets, load_preset, time_pairs
from ddpg.runtime.samplers import get_sampler
from fake_denoiser import FakeDenoiser

SMALL_DDPM = {"kind": "ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [8],
              "image_size": 32}
METHODS_DOC = Path(__file__).resolve().parents[1] / "docs/methods.md"


def tiny_denoiser():
    torch.manual_seed(0)
    return as_denoiser(create_prior(SMALL_DDPM))


def gaussian_denoiser():
    return as_denoiser(create_prior("gaussian"))


class NeverCalled(FakeDenoiser):
    def __call__(self, x, t):
        raise AssertionError("the model must not be called for invalid input")


def test_time_grid():
    pairs = time_pairs(100)
    assert pairs[0] == (990, 980) and pairs[-1] == (0, -1) and len(pairs) == 100


def test_same_seed_is_bit_identical_and_batch_equals_single_runs_exactly():
    """Gaussian prior (FFT only): a batch of 4 is bit-identical to the 4 single runs, and a rerun to the run."""
    r = Restorer(gaussian_denoiser(), make_operator("sr4", 32, impl="fft"), method="ddpg", sigma_y=0.05,
                 steps=10, hyper=load_preset("ddpg/gaussian/sr4/0.05").hyper)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    seeds = [3, 4, 5, 6]
    y = r.degrade(x, seeds)
    batch = r.restore(y, seeds)
    assert torch.equal(batch, r.restore(r.degrade(x, seeds), seeds))
    assert torch.equal(y, torch.cat([r.degrade(x[i:i + 1], [s]) for i, s in enumerate(seeds)]))
    assert torch.equal(batch, torch.cat([r.restore(y[i:i + 1], [s]) for i, s in enumerate(seeds)]))
    assert not torch.equal(batch[0], batch[1])  # different seeds, different noise
    assert not torch.equal(batch, r.restore(y, [s + 1 for s in seeds]))


def test_unet_batch_equals_single_runs():
    """A UNet: bit-identical rerun; batch vs singles within 1e-5 relative (batched conv kernels may reorder
    sums; measured ~1e-6)."""
    op = make_operator("sr4", 32, impl="fft")
    r = Restorer(tiny_denoiser(), op, method="ddpg", sigma_y=0.05, steps=8,
                 hyper=load_preset("ddpg/celeba_hq/sr4/0.05").hyper)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    seeds = [3, 4, 5, 6]
    with torch.no_grad():
        y = r.degrade(x, seeds)
        batch = r.restore(y, seeds)
        again = r.restore(y, seeds)
        singles = torch.cat([r.restore(y[i:i + 1], [s]) for i, s in enumerate(seeds)])
    assert torch.equal(batch, again)
    assert rel_err(batch, singles) < 1e-5


@pytest.mark.parametrize("inject_noise", [True, False])
def test_callback_sees_every_step_and_noise_is_drawn_once_per_step(inject_noise):
    seen, draws = [], []

    def noise(like):
        draws.append(tuple(like.shape))
        return torch.zeros_like(like)

    out = ddpg_sample(gaussian_denoiser(), make_operator("deblur_gauss", 32), torch.zeros(2, 3, 32, 32), 0.05,
                      steps=7, inject_noise=inject_noise, x_T=torch.randn(2, 3, 32, 32), noise=noise,
                      callback=lambda k, x, x0: seen.append((k, tuple(x.shape), tuple(x0.shape))))
    assert [k for k, _, _ in seen] == list(range(7)) and draws == [(2, 3, 32, 32)] * 7
    assert out.shape == (2, 3, 32, 32) and out.dtype == torch.float32


# ---------------------------------------------------------------------------------------------- presets

DATASETS = {"CelebA-HQ": "celeba_hq", "ImageNet": "imagenet256_uncond"}
TASKS = {"sr_bicubic ×4": "sr4", "deblur_gauss": "deblur_gauss", "motion_deblur": "deblur_motion"}


def paper_rows(section: str) -> list[list[str]]:
    """Data rows of the table under ``### {section}`` in docs/methods.md, cells stripped, − → -."""
    text = METHODS_DOC.read_text()
    body = text[text.index(f"### {section}"):]
    body = body[:body.index("\n#", 1)]  # up to the next heading
    rows = [[c.strip().replace("−", "-") for c in line.strip().strip("|").split("|")]
            for line in body.splitlines() if line.startswith("| CelebA-HQ") or line.startswith("| ImageNet")]
    return rows


def number(cell: str) -> float | None:
    return None if cell == "–" else float(cell)


@pytest.mark.parametrize("method, section", [("ddpg", "5.1 DDPG"), ("idpg", "5.2 IDPG")])
def test_presets_match_the_paper_tables(method, section):
    """Every row of docs/methods.md §5.1/§5.2 is a preset with the same γ, ζ, η̃, mode, operator impl, and the
    same derived η (relative 1e-9); and no paper preset exists that the table lacks."""
    rows = paper_rows(section)
    assert len(rows) == 16
    names = set()
    for row in rows:
        if method == "ddpg":
            dataset, task, sigma_y, gamma, zeta, eta_tilde, mode, impl, eta = row
        else:
            dataset, task, sigma_y, gamma, eta_tilde, impl, eta = row
            zeta, mode = None, "0"
        name = f"{method}/{DATASETS[dataset]}/{TASKS[task]}/{float(sigma_y):g}"
        names.add(name)
        p = load_preset(name)
        assert p.sigma_y == float(sigma_y) and p.steps == 100 and p.hyper["scale_ls"] == 1.0
        assert p.hyper["step_size_mode"] == int(mode)
        assert p.operator["impl"] == impl.lower()
        for key, cell in (("gamma", gamma), ("zeta", zeta), ("eta_tilde", eta_tilde)):
            if cell is not None and number(cell) is not None:
                assert p.hyper[key] == number(cell), (name, key)
        derived = get_sampler(method).build(p.sigma_y, p.hyper).eta
        assert abs(derived - float(eta)) <= 1e-9 * float(eta), (name, derived, eta)
    paper = {n for n in list_presets(method) if n.split("/")[1] in DATASETS.values()
             and "evaluation_" in load_preset(n).source}  # the inpainting rows are not the paper's (§5.4)
    assert paper == names


def test_presets_spot_values_and_aliases():
    paper = [n for m in ("ddpg", "idpg") for n in list_presets(m) if n.split("/")[1] in ("celeba_hq",
                                                                                       "imagenet256_uncond")]
    assert len(paper) == 36  # the paper's 32 and the CelebA-HQ inpainting rows (docs/methods.md §5.4)
    p = load_preset("ddpg/celeba_hq/deblur_motion/0.01")
    assert (p.hyper["gamma"], p.hyper["zeta"], p.hyper["eta_tilde"], p.hyper["step_size_mode"]) == (50, 0.5, 6.0, 0)
    assert load_preset("idpg/imagenet256_uncond/sr4/0.05").hyper["gamma"] == 30
    for alias in ("face64", "gaussian"):  # reuse the CelebA-HQ rows (besides face64's own step variants)
        for method in ("ddpg", "idpg"):
            mine = {n.split("/", 2)[2] for n in list_presets(method, prior=alias) if "@" not in n}
            celeba = {n.split("/", 2)[2] for n in list_presets(method, prior="celeba_hq")}
            assert mine == celeba and len(mine) == 12  # the paper's 10 and inpainting at σ_y 0 and 0.05
        a, b = load_preset(f"ddpg/{alias}/sr4/0.05"), load_preset("ddpg/celeba_hq/sr4/0.05")
        assert (a.hyper, a.operator, a.prior) == (b.hyper, b.operator, alias)


def test_every_preset_builds_its_operator():
    def operator_configs(method=None):
        return {tuple(sorted(load_preset(n).operator.items())) for n in list_presets(method)}

    assert len(operator_configs("ddpg") | operator_configs("idpg")) == 4  # SR, two blurs, inpainting
    for cfg in operator_configs():
        params = dict(cfg)
        op = make_operator(params.pop("task"), 64, **params)
        assert op.img_size == (64, 64)


def test_preset_overrides_field_by_field():
    p = load_preset("ddpg/celeba_hq/sr4/0.05", gamma=3, sigma_y=0.1, steps=20)
    assert (p.hyper["gamma"], p.hyper["zeta"], p.sigma_y, p.steps) == (3, 0.8, 0.1, 20)
    m = load_preset("ddpg/celeba_hq/deblur_motion/0.05", operator={"seed": 10})
    assert m.operator == {"task": "deblur_motion", "impl": "fft", "seed": 10, "kernel_size": 61, "intensity": 0.5}
    assert load_preset("ddpg/celeba_hq/deblur_motion/0.05").operator["seed"] == 0  # the catalogue is unchanged
    assert load_preset("idpg/celeba_hq/sr4/0.05", task="deblur_gauss").operator == {"task": "deblur_gauss",
                                                                                  "impl": "fft"}
    for bad, message in [({"gama": 3}, "unknown field"),
                         ({"sigma_y": -0.1}, r"preset ddpg/celeba_hq/sr4/0.05: sigma_y=-0.1: must be a finite number"),
                         ({"steps": 0}, "steps must be a positive integer"), ({"task": "sr8"}, "unknown task"),
                         ({"operator": 4}, "operator must be a dict")]:
        with pytest.raises(ConfigError, match=message):
            load_preset("ddpg/celeba_hq/sr4/0.05", **bad)
    with pytest.raises(ConfigError, match=re.escape("unknown preset 'ddpg/celeba_hq/sr8/0.05'")):
        load_preset("ddpg/celeba_hq/sr8/0.05")


# ---------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, message", [
    ({"y": torch.zeros(1, 3, 32, 32)}, "y has shape"),
    ({"y": torch.zeros(3, 8, 8)}, "y has shape"),
    ({"y": [[0.0]]}, "y must be a torch.Tensor"),
    ({"sigma_y": -0.1}, r"sigma_y=-0.1: must be a finite number in \[0, 1\]"),
    ({"sigma_y": 1.5}, r"sigma_y=1.5: must be a finite number in \[0, 1\]"),
    ({"sigma_y": float("nan")}, "sigma_y must be a finite number"),
    ({"zeta": 1.5}, "zeta must be in"),
    ({"zeta": -0.1}, "zeta must be in"),
    ({"step_size_mode": 3}, "step_size_mode must be 0, 1 or 2"),
    ({"step_size_mode": 1.5}, "step_size_mode must be 0, 1 or 2"),
    ({"gamma": float("inf")}, "gamma must be a finite number"),
    ({"gamma": 0}, "gamma must be > 0"),
    ({"steps": 0}, "steps must be in"),
    ({"x_T": torch.zeros(1, 3, 16, 16)}, "x_T has shape"),
])
def test_bad_input_fails_before_the_model_is_called(kwargs, message):
    op = make_operator("sr4", 32, impl="fft")
    args = {"y": torch.zeros(1, 3, 8, 8), "sigma_y": 0.05, "steps": 5} | kwargs
    y, sigma_y = args.pop("y"), args.pop("sigma_y")
    with pytest.raises(ValueError, match=message):
        ddpg_sample(NeverCalled(), op, y, sigma_y, **args)


def test_restorer_bad_input_fails_before_the_model_is_called():
    op = make_operator("denoising", 8)
    with pytest.raises(ConfigError, match="unknown method 'magic'"):
        Restorer(NeverCalled(), op, method="magic")
    with pytest.raises(ConfigError, match="unknown preset"):
        Restorer.from_preset("ddpg/celeba_hq/sr8/0.05", NeverCalled(), size=32)
    with pytest.raises(ConfigError, match=r"sigma_y=-0.05: must be a finite number in \[0, 1\]"):
        Restorer(NeverCalled(), op, sigma_y=-0.05)
    with pytest.raises(ConfigError, match=re.escape("unknown hyper-parameter(s) ['gama']")):
        Restorer(NeverCalled(), op, hyper={"gama": 3})
    with pytest.raises(ConfigError, match="zeta must be in"):  # the params are validated on construction
        Restorer(NeverCalled(), op, hyper={"zeta": 2.0})
    with pytest.raises(ConfigError, match="step_size_mode"):
        Restorer.from_preset("ddpg/celeba_hq/sr4/0.05", NeverCalled(), size=32, step_size_mode=7)
    r = Restorer(NeverCalled(), op)
    with pytest.raises(ConfigError, match="1 seeds for a batch of 2"):
        r.restore(torch.zeros(2, 3, 8, 8), [1])
    with pytest.raises(ConfigError, match="seeds must be non-negative integers"):
        r.restore(torch.zeros(1, 3, 8, 8), [-1])
    with pytest.raises(ConfigError, match="y has shape"):
        r.restore(torch.zeros(1, 3, 4, 4), [1])
