"""`ddpg export` mechanics on a tiny stand-in module and a tiny random-weight DDPM: metadata and sidecar,
atomic writes, fixed-shape checks, the validation harness (including a failing export), errors, the CLI."""

from __future__ import annotations

import copy
import json

import onnx
import pytest
import torch
import torch.nn.functional as F
import typer
import yaml
from torch import nn
from typer.testing import CliRunner

from conftest import FIXTURES, rel_err
from ddpg.cli.export import export_command
from ddpg.errors import CheckpointError, ConfigError
from ddpg.export import BatchProfile, EngineError, ExportError, export_module, export_prior, read_metadata
from ddpg.export.onnx_export import random_prior
from ddpg.models import create_prior
from ddpg.runtime.backends.onnxruntime import OrtDenoiser

pytest.importorskip("onnxruntime")

TINY_DDPM = {"kind": "ddpm", "name": "tiny_ddpm", "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
             "attn_resolutions": [], "dropout": 0.0, "resamp_with_conv": True, "image_size": 32}


class StandIn(nn.Module):
    """The smallest module with the prior contract: (x, t) → (B, 6, H, W) (learn_sigma-like), a ``.config``."""

    downsample_factor = 2

    def __init__(self):
        super().__init__()
        self.config = {"kind": "ddpm", "name": "stand_in", "image_size": 32, "beta_end": 0.02}
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.temb = nn.Linear(1, 8)
        self.conv_out = nn.Conv2d(8, 6, 3, padding=1)

    def forward(self, x, t, y=None):
        h = F.silu(self.conv_in(x) + self.temb(t[:, None] / 1000)[:, :, None, None])
        return self.conv_out(F.avg_pool2d(h, 2).repeat_interleave(2, -1).repeat_interleave(2, -2) + h)


@pytest.fixture(scope="module")
def stand_in_export(tmp_path_factory):
    torch.manual_seed(1)
    model = StandIn().eval()
    out = tmp_path_factory.mktemp("standin") / "stand_in.onnx"
    return model, export_module(model, out, batch="2")


def test_fixed_export_files_metadata_and_sidecar(stand_in_export):
    model, result = stand_in_export
    out = result.path
    assert sorted(p.name for p in out.parent.iterdir()) == ["stand_in.onnx", "stand_in.onnx.json"]  # no temp left
    assert result.data_path is None
    info = read_metadata(out)
    assert info.prior == "stand_in" and info.precision == "fp32" and info.opset == 20
    assert info.batch == BatchProfile(2, 2, 2) and info.size == (32, 32) and info.inputs == ("x", "t")
    assert info.checkpoint_sha256 == "random" and set(info.versions) >= {"torch", "onnx", "onnxscript", "ddpg"}
    assert info.schedule_config == {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                                    "num_diffusion_timesteps": 1000}
    proto = onnx.load(out)
    assert [i.name for i in proto.graph.input] == ["x", "t"] and [o.name for o in proto.graph.output] == ["eps"]
    assert proto.opset_import[0].version == 20
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [2, 3, 32, 32]  # 6 → 3
    sidecar = json.loads(result.sidecar_path.read_text())
    from ddpg.models.checkpoints import sha256_file
    assert sidecar["files"]["onnx"]["sha256"] == sha256_file(out)
    assert sidecar["metadata"]["ddpg.prior"] == "stand_in" and sidecar["validation"]["passed"] is True
    report = result.validation
    assert report.passed and report.batches == [2] and report.timesteps == [999, 500, 100, 0]
    assert report.worst_rel_l2 < 1e-5 and report.max_abs >= report.p99_abs >= report.median_abs >= 0


def test_fixed_export_rejects_other_shapes(stand_in_export):
    model, result = stand_in_export
    den = OrtDenoiser(result.path)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([999.0, 3.0])
    with torch.no_grad():
        assert rel_err(den(x, t), model(x, t)[:, :3]) < 1e-5
    with pytest.raises(EngineError, match="exported for batch 2, got batch 1; re-export with --batch"):
        den(x[:1], t[:1])
    with pytest.raises(EngineError, match="exported for 32×32 images, got 32×64"):
        den(torch.zeros(2, 3, 32, 64), t)


def test_external_data_moves_with_the_model(tmp_path, monkeypatch):
    """Models above torch's threshold (1.5 GB) keep weights in <name>.onnx.data; forced here on a tiny model."""
    from torch.onnx._internal.exporter import _onnx_program

    monkeypatch.setattr(_onnx_program, "_LARGE_MODEL_THRESHOLD", 0)
    torch.manual_seed(3)
    model = StandIn().eval()
    out = tmp_path / "big.onnx"
    result = export_module(model, out, batch="1:1:2", optimize=False)
    assert result.data_path == tmp_path / "big.onnx.data" and result.validation.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data", "big.onnx.json"]
    sidecar = json.loads(result.sidecar_path.read_text())
    from ddpg.models.checkpoints import sha256_file
    assert sidecar["files"]["data"] == {"name": "big.onnx.data", "sha256": sha256_file(result.data_path)}
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([250.0])
    with torch.no_grad():
        assert rel_err(OrtDenoiser(out)(x, t), model(x, t)[:, :3]) < 1e-5


def test_failed_validation_writes_nothing(tmp_path):
    torch.manual_seed(2)
    model = StandIn().eval()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.conv_out.bias.add_(1e-3)  # the reference differs from what is exported
    out = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="failed validation, nothing written") as info:
        export_module(model, out, batch="1:2:3", reference=other)
    report = info.value.report
    assert not report.passed and report.batches == [1, 3] and report.worst_rel_l2 > 1e-5
    assert list(tmp_path.iterdir()) == []
    # the same model passes once the tolerance admits the difference (explicit override)
    result = export_module(model, out, batch="1:2:3", reference=other, rtol=0.5, atol=1e-2, optimize=False)
    assert result.validation.passed and result.validation.atol == 1e-2 and out.exists()


def test_argument_errors(tmp_path):
    out = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match="--opset 21: unsupported; ddpg exports opset 18–20"):
        export_prior("face64", out=out, opset=21)
    with pytest.raises(ConfigError, match="--precision 'int8'"):
        export_prior("face64", out=out, precision="int8")
    with pytest.raises(CheckpointError, match="missing.pt: checkpoint file not found"):
        export_prior(TINY_DDPM, out=out, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        export_prior(out=out, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="give --prior"):
        export_prior(out=out)
    with pytest.raises(ConfigError, match="exclude each other"):
        export_prior(TINY_DDPM, out=out, checkpoint=FIXTURES / "priors" / "ddpm_small.pt", random_weights=True)
    with pytest.raises(ConfigError, match="gaussian prior is analytic"):
        export_prior("gaussian", out=out, random_weights=True)
    with pytest.raises(ConfigError, match="bf16.*--no-validate"):
        export_prior(TINY_DDPM, out=out, precision="bf16", random_weights=True)
    with pytest.raises(ConfigError, match="--size 33 32: .*multiples of 2"):
        export_prior(TINY_DDPM, out=out, size=(33, 32), random_weights=True)
    with pytest.raises(ConfigError, match="MIN <= OPT <= MAX"):
        BatchProfile.parse("4:2:8")
    with pytest.raises(ConfigError, match="expected N or MIN:OPT:MAX"):
        BatchProfile.parse("1-8")
    with pytest.raises(ConfigError, match="--format 'coreml'"):
        export_prior(TINY_DDPM, out=out, format="coreml")
    for device in ("gpu", "meta"):  # refused before the (slow) export, not after it
        with pytest.raises(ConfigError, match=f"--device '{device}': validation runs ONNX Runtime on cpu, cuda"):
            export_prior(TINY_DDPM, out=out, random_weights=True, device=device)
    assert list(tmp_path.iterdir()) == []


def test_tensorrt_format_fails_clearly_without_tensorrt(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="TensorRT is not available|TensorRT support is not available"):
            export_prior(TINY_DDPM, out=tmp_path / "m.plan", format="tensorrt", random_weights=True)
        assert list(tmp_path.iterdir()) == []  # refused before any export
    else:
        pytest.skip("TensorRT is installed")


def test_random_weights_are_not_degenerate():
    """ADM zero-initialises its output convolutions; --random-weights must still give a non-zero output."""
    cfg = torch.load(FIXTURES / "priors" / "adm_small_a.pt", weights_only=True)["config"]
    assert not create_prior(cfg)(torch.randn(1, 3, 32, 32), torch.tensor([500.0])).any()
    a, b = random_prior(cfg), random_prior(cfg)
    x, t = torch.randn(1, 3, 32, 32), torch.tensor([500.0])
    with torch.no_grad():
        out = a(x, t)
        assert out.abs().mean() > 1e-3 and torch.equal(out, b(x, t))  # seeded: reproducible


def test_cli_exports_a_prior_yaml(tmp_path):
    app = typer.Typer()
    app.command()(export_command)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY_DDPM))
    out = tmp_path / "out" / "tiny.onnx"
    runner = CliRunner()
    result = runner.invoke(app, ["--prior", str(spec), "--random-weights", "--batch", "1:1:3", "--opset", "19",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "worst timestep" in result.output
    info = read_metadata(out)
    assert info.prior == "tiny_ddpm" and info.opset == 19 and info.batch == BatchProfile(1, 1, 3)
    assert info.checkpoint == "random" and info.config["ch_mult"] == [1, 2]
    x, t = torch.randn(3, 3, 32, 32), torch.tensor([999.0, 500.0, 0.0])
    ref = random_prior(info.config)
    with torch.no_grad():
        assert rel_err(OrtDenoiser(out)(x, t), ref(x, t)) < 1e-5
    bad = runner.invoke(app, ["--prior", str(spec), "--opset", "21", "--random-weights", "-o", str(out)])
    assert bad.exit_code == 2 and "opset 18–20" in bad.output
    missing = runner.invoke(app, ["--prior", str(spec), "--checkpoint", str(tmp_path / "nope.pt"), "-o", str(out)])
    assert missing.exit_code == 2 and "nope.pt" in missing.output and "not found" in missing.output
