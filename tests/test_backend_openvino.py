"""The OpenVINO backend and export: fp32 IR parity with PyTorch (one forward at several batch sizes, and a whole
10-step DDPG run of the bundled face64 prior on the same noise), the inference precision always set from the
export (never OpenVINO's own default), bf16 and int8 IRs that run and carry their quality gate, metadata in the
IR's rt_info, refusals that name the file."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from PIL import Image

from conftest import FIXTURES, rel_err
from ddpg.engine_metadata import EngineError, read_metadata
from ddpg.models import as_denoiser, create_prior, load_prior
from ddpg.operators import make_operator
from ddpg.runtime.backends import make_denoiser
from drawn_noise import ddpg_with_drawn_noise

ov = pytest.importorskip("openvino")
from ddpg.export.openvino_export import OpenVINOExport, export_openvino, ir_from_onnx  # noqa: E402
from ddpg.runtime.backends.openvino import OpenVINODenoiser, compile_config  # noqa: E402

FP32_TOL = 1e-5  # relative L2 against PyTorch, float32
HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


@pytest.fixture(scope="module")
def ddpm_small():
    fixture = torch.load(FIXTURES / "priors" / "ddpm_small.pt", weights_only=True)
    prior = create_prior(fixture["config"])
    prior.load_state_dict(fixture["state_dict"], strict=True)
    return fixture, prior.eval()


@pytest.fixture(scope="module")
def ddpm_ir(ddpm_engine, tmp_path_factory):
    return ir_from_onnx(ddpm_engine, tmp_path_factory.mktemp("ov") / "ddpm_small.xml")


def test_fp32_ir_matches_torch_at_every_batch_and_keeps_metadata(ddpm_ir, ddpm_small, ddpm_engine):
    fixture, prior = ddpm_small
    den = OpenVINODenoiser(ddpm_ir, threads=1)
    assert den.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert rel_err(den(fixture["x"], fixture["t"]), fixture["out"]) < FP32_TOL
    for batch in (1, 3, 4):
        x, t = torch.randn(batch, 3, 32, 32), torch.linspace(999, 0, batch)
        with torch.no_grad():
            assert rel_err(den(x, t), prior(x, t)) < FP32_TOL
    info, onnx_info = read_metadata(ddpm_ir), read_metadata(ddpm_engine)
    assert (info.precision, info.batch, info.size, info.config) == ("fp32", onnx_info.batch, (32, 32),
                                                                     onnx_info.config)
    with pytest.raises(EngineError, match=r"batch 1\.\.4, got batch 5"):
        den(torch.zeros(5, 3, 32, 32), torch.zeros(5))


def test_precision_is_always_explicit():
    assert compile_config("fp32")["INFERENCE_PRECISION_HINT"] == "f32"  # OpenVINO would pick bf16 here
    assert compile_config("int8")["INFERENCE_PRECISION_HINT"] == "f32"
    assert compile_config("bf16", threads=2) == {"INFERENCE_PRECISION_HINT": "bf16", "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": 2}
    with pytest.raises(EngineError, match="fp16"):
        compile_config("fp16")


def test_face64_ddpg_run_matches_torch(tmp_path):
    """A whole 10-step DDPG run of the bundled face64 prior (sr4, σ_y 0.05), same x_T and noise on both."""
    result = export_openvino("face64", out=tmp_path / "face64.xml", settings=OpenVINOExport(), batch="1:1:2",
                             validate=False, optimize=False)
    run = ddpg_with_drawn_noise(make_operator("sr4", 64, impl="fft"), batch=1, seed=5, steps=10)
    assert rel_err(run(make_denoiser("openvino", engine=result.path, threads=1)),
                   run(as_denoiser(load_prior("face64")))) < FP32_TOL


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no native bf16")
def test_bf16_ir_runs_in_bf16_and_warns_without_a_gate(ddpm_engine, ddpm_small, tmp_path, caplog):
    fixture, _ = ddpm_small
    path = ir_from_onnx(ddpm_engine, tmp_path / "bf16.xml", precision="bf16")
    with caplog.at_level(logging.WARNING, logger="ddpg"):
        den = OpenVINODenoiser(path)
    assert "without a recorded quality gate" in caplog.text
    assert den.precision == "bf16" and den.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    err = rel_err(den(fixture["x"], fixture["t"]), fixture["out"])
    assert 1e-6 < err < 5e-2  # bf16 arithmetic really ran (this small random-weight prior: 1.8e-2)


def _faces(folder, n, seed):
    folder.mkdir()
    gen = torch.Generator().manual_seed(seed)
    for i in range(n):
        pixels = (torch.rand(32, 32, 3, generator=gen) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"face_{i}.png")
    return folder


def test_int8_export_calibrates_validates_and_records_its_gate(ddpm_small, tmp_path, caplog):
    pytest.importorskip("nncf")
    fixture, _ = ddpm_small
    settings = OpenVINOExport(precision="int8", calibration=_faces(tmp_path / "calib", 2, 0),
                              gate_faces=_faces(tmp_path / "gate", 2, 1), gate_steps=3, calibration_steps=3)
    out = tmp_path / "int8.xml"
    result = export_openvino(fixture["config"], checkpoint=FIXTURES / "priors" / "ddpm_small.pt", out=out,
                             settings=settings, batch="1:1:2", rtol=1.0, optimize=False)
    assert result.validation.passed and result.gate is not None and result.gate.faces == 2
    assert set(result.gate.per_task) == {"sr4", "deblur_gauss"}
    recorded = json.loads(read_metadata(out).raw["ddpg.quality_gate"])
    assert recorded["passed"] == result.gate.passed and recorded["steps"] == 3
    sidecar = json.loads((tmp_path / "int8.xml.json").read_text())
    assert sidecar["quality_gate"]["per_task"] == recorded["per_task"]
    assert sidecar["metadata"]["ddpg.precision"] == "int8"
    ops = {op.get_type_name() for op in ov.Core().read_model(str(out)).get_ops()}
    assert "FakeQuantize" in ops or "FakeConvert" in ops
    den = OpenVINODenoiser(out)
    assert den.precision == "int8" and den(fixture["x"], fixture["t"]).shape == fixture["out"].shape
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib", "gate", "int8.bin", "int8.xml", "int8.xml.json"]


def test_refusals_name_the_file(ddpm_ir, ddpm_engine, tmp_path):
    with pytest.raises(EngineError, match=r"ddpm_small\.onnx: backend 'openvino' loads an OpenVINO IR"):
        OpenVINODenoiser(ddpm_engine)
    broken = tmp_path / "broken.xml"
    broken.write_text("<net><rt_info><ddpg>")
    with pytest.raises(EngineError, match="broken.xml: not a readable OpenVINO IR"):
        OpenVINODenoiser(broken)
    with pytest.raises(Exception, match="needs --calibration"):
        OpenVINOExport(precision="int8").check(tmp_path / "x.xml")
    with pytest.raises(Exception, match="written as NAME.xml"):
        OpenVINOExport().check(tmp_path / "x.onnx")
    shutil.copy(ddpm_ir, tmp_path / "copy.xml")  # no .bin beside it
    with pytest.raises(EngineError, match="copy.xml: OpenVINO cannot compile"):
        OpenVINODenoiser(tmp_path / "copy.xml")


def test_onnx_engine_is_converted_once_into_the_ir_cache(ddpm_engine, ddpm_small, tmp_path, monkeypatch):
    from ddpg.api.denoisers import make_denoiser as api_denoiser
    from ddpg.export import openvino_cache

    fixture, _ = ddpm_small
    monkeypatch.setenv("DDPG_CACHE", str(tmp_path))
    den = api_denoiser(None, None, "openvino", str(ddpm_engine), "cpu")
    cached = sorted((tmp_path / "engines" / "openvino").glob("*.xml"))
    assert [den.engine_path] == cached and rel_err(den(fixture["x"], fixture["t"]), fixture["out"]) < FP32_TOL
    assert read_metadata(cached[0]).versions["openvino"] == ov.__version__
    stamp = cached[0].stat().st_mtime_ns
    assert api_denoiser(None, None, "openvino", str(ddpm_engine), "cpu").engine_path == cached[0]
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not converted again
    key = openvino_cache.ir_key(ddpm_engine, "fp32", ov.__version__)
    assert openvino_cache.ir_cache_status(cached[0], key) == (True, "cached IR matches")
    assert not openvino_cache.ir_cache_status(cached[0], key | {"openvino_version": "0.0"})[0]
    cached[0].with_suffix(".bin").write_bytes(b"damaged")
    assert "does not match the sha256" in openvino_cache.ir_cache_status(cached[0], key)[1]


def test_served_restorations_equal_their_restore_twins(ddpm_ir, tmp_path):
    """``ddpg serve --backend openvino``: two requests sharing the engine's batch each equal their ``ddpg restore
    --backend openvino`` twin (batch 1) to 1/255 per pixel (float32 rounding differs across batch sizes)."""
    import asyncio
    import io

    import numpy as np
    from typer.testing import CliRunner

    from ddpg.cli.main import app
    from ddpg.io import save_image
    from serve_process import ServerProcess, post

    gen = torch.Generator().manual_seed(2)
    images = [tmp_path / f"face{i}.png" for i in range(2)]
    for image in images:
        save_image(torch.rand(3, 32, 32, generator=gen), image)
    server = ServerProcess(tmp_path, "--backend", "openvino", "--engine", str(ddpm_ir), "--max-batch", "2",
                           "--threads", "1")
    try:
        server.pause(True)  # both requests queue, then share the engine's batch

        async def run():
            served = asyncio.ensure_future(asyncio.gather(*(post(server, image, task="sr4", steps=4, seed=i)
                                                            for i, image in enumerate(images))))
            await asyncio.sleep(1.0)
            server.pause(False)
            return await served

        served = asyncio.run(run())
    finally:
        server.stop()
    for i, (image, response) in enumerate(zip(images, served, strict=True)):
        assert response.status_code == 200, response.text
        out = tmp_path / f"twin{i}"
        result = CliRunner().invoke(app, ["restore", str(image), "-o", str(out), "--backend", "openvino", "--engine",
                                          str(ddpm_ir), "--task", "sr4", "--steps", "4", "--seed", str(i), "-q"])
        assert result.exit_code == 0, result.output
        twin = np.asarray(Image.open(out / f"{image.stem}_restored.png"), dtype=np.int16)
        got = np.asarray(Image.open(io.BytesIO(response.content)), dtype=np.int16)
        assert np.abs(got - twin).max() <= 1


def test_cpu_engines_side_by_side(ddpm_engine, ddpm_ir, ddpm_small, tmp_path):
    """``ddpg bench --compare-cpu-engines``' table: every engine timed at every batch in each round, a given IR
    used as it is, the others converted; torch fp32 is the baseline (× 1.00)."""
    from ddpg.bench.cpu_compare import compare_cpu_engines, markdown_table

    _, prior = ddpm_small
    result = compare_cpu_engines(prior, ddpm_engine, irs={"fp32": ddpm_ir}, batches=(1, 2), steps=1, rounds=2,
                                 cache_dir=tmp_path)
    assert list(result["engines"]) == ["torch fp32", "torch bf16", "onnxruntime fp32", "openvino fp32",
                                       "openvino bf16"]
    assert len(result["load_per_round"]) == 2 and result["threads"] == 1
    for engine in result["engines"].values():
        rows = engine["per_batch"]
        assert set(rows) == {1, 2} and engine["best_batch"] in rows
        assert rows[2]["s_per_image"] == pytest.approx(rows[2]["ms_per_step"] / 1e3 * 100 / 2)
    table = markdown_table(result).splitlines()
    assert len(table) == 2 + 5 and table[2].startswith("| torch fp32 |") and "| 1.00 |" in table[2]
