"""The UNets reproduce the reference forward and the published checkpoints' parameter layout."""

import json

import pytest
import torch

from conftest import FIXTURES, rel_err
from ddpg.models import as_denoiser, create_prior
from ddpg.models.configs import meta_state_shapes

MANIFESTS = {
    "celeba_hq": ("ddpm_celeba_hq.json", 113_673_219),
    "imagenet256_uncond": ("adm_imagenet256_uncond.json", 552_814_086),
    "imagenet256_cond": ("adm_imagenet256_cond.json", 553_838_086),
    "ffhq256": ("adm_ffhq256.json", 93_563_910),
}


@pytest.mark.parametrize("name", list(MANIFESTS))
def test_full_size_configs_match_checkpoint_manifests(name):
    fname, params = MANIFESTS[name]
    manifest = json.loads((FIXTURES / "state_dict_manifests" / fname).read_text())
    shapes = meta_state_shapes(name)
    expected = {k: tuple(v) for k, v in manifest["state_dict"].items()}
    assert shapes == expected
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    assert total == params == manifest["params"]


@pytest.mark.parametrize("name", ["ddpm_small", "adm_small_a", "adm_small_b"])
def test_small_priors_reproduce_reference_forward(name):
    fx = torch.load(FIXTURES / "priors" / f"{name}.pt", weights_only=True)
    model = create_prior(fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    with torch.no_grad():
        out = model(fx["x"], fx["t"], fx.get("y"))
    assert out.shape == fx["out"].shape
    assert rel_err(out, fx["out"]) < 1e-5


@pytest.mark.parametrize("name", ["ddpm_small", "adm_small_a"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_torso_stays_close_to_fp32(name, dtype):
    fx = torch.load(FIXTURES / "priors" / f"{name}.pt", weights_only=True)
    model = create_prior(fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    model.to_dtype(dtype)
    # the precision-critical parts stay float32
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n or "temb" in n
               or "time_embed" in n)
    with torch.no_grad():
        out = model(fx["x"], fx["t"])
    assert out.dtype == torch.float32
    tol = 1e-2 if dtype == torch.float16 else 2e-2  # bf16 has an 8-bit mantissa
    assert rel_err(out, fx["out"]) < tol


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["ddpm_small", "adm_small_a"])
def test_fp16_on_cuda(name):
    fx = torch.load(FIXTURES / "priors" / f"{name}.pt", weights_only=True)
    model = create_prior(fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    model.cuda().to_dtype(torch.float16)
    with torch.no_grad():
        out = model(fx["x"].cuda(), fx["t"].cuda())
    assert rel_err(out.cpu(), fx["out"]) < 1e-2


def test_denoiser_returns_three_float32_channels_and_needs_labels_for_class_cond():
    fx = torch.load(FIXTURES / "priors" / "adm_small_b.pt", weights_only=True)
    model = create_prior(fx["config"])
    model.load_state_dict(fx["state_dict"], strict=True)
    with pytest.raises(ValueError, match="class-conditional"):
        as_denoiser(model)
    den = as_denoiser(model, class_labels=fx["y"])
    with torch.no_grad():
        eps = den(fx["x"], fx["t"])
    assert eps.dtype == torch.float32 and eps.shape == (2, 3, 32, 32)
    assert rel_err(eps, fx["out"][:, :3]) < 1e-5

    fa = torch.load(FIXTURES / "priors" / "adm_small_a.pt", weights_only=True)
    ma = create_prior(fa["config"])
    ma.load_state_dict(fa["state_dict"])
    with pytest.raises(ValueError, match="unconditional"):
        as_denoiser(ma, class_labels=3)
    with torch.no_grad():
        assert torch.equal(as_denoiser(ma)(fa["x"], fa["t"]), ma(fa["x"], fa["t"])[:, :3])
    x = fa["x"][:1].clone().requires_grad_(True)  # DPS/DPPS differentiate through the denoiser
    as_denoiser(ma).model_output(x, fa["t"][:1]).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_create_prior_from_name_yaml_path_and_dict(tmp_path):
    import yaml

    from ddpg.errors import ConfigError
    from ddpg.models import prior_config

    cfg = prior_config("face64")
    assert cfg["name"] == "face64" and cfg["kind"] == "ddpm" and cfg["num_diffusion_timesteps"] == 1000
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**cfg, "name": "mine"}))
    with torch.device("meta"):
        by_path, by_dict = create_prior(path), create_prior({k: v for k, v in cfg.items() if "beta" not in k})
    assert by_path.config["name"] == "mine" and not by_path.training
    assert by_dict.config["beta_end"] == 0.02  # schedule defaults filled in
    assert meta_state_shapes("face64") == {k: tuple(v.shape) for k, v in by_path.state_dict().items()}
    with pytest.raises(ConfigError, match="unknown prior 'celeba'"):
        create_prior("celeba")
    with pytest.raises(ConfigError, match="kind"):
        create_prior({"ch": 8})
