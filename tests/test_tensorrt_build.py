"""Engine builds without TensorRT: precision selection for TensorRT 10 and 11, the build plan, and the
orchestration of TensorRT calls, checked against a fake ``tensorrt`` module that records them (names as in
the TensorRT Python API); the cache-aware ``build_engine`` (hit, stale, forced, undeserializable)."""

from __future__ import annotations

import json

import onnx
import pytest

from ddpg.engine_metadata import EngineError, read_metadata
from ddpg.engine_sidecar import GpuInfo, ShapeProfile, read_sidecar
from ddpg.errors import ConfigError
from ddpg.export.engine_cache import timing_cache_path
from ddpg.export.tensorrt_build import (
    TensorRTBuildError,
    TrtEnvironment,
    _trt_build,
    build_engine,
    graph_precision,
    onnx_precision,
    plan_build,
    select_precision,
)
from fake_trt_build import ENV10, GPU, V10, V11, fake_trt, tiny_onnx


def names(calls, kind):
    return [c[1:] for c in calls if c[0] == kind]


# --- precision -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, onnx_prec, requested, expected", [
    (V10, "fp32", None, ("fp32", (), ())),
    (V10, "fp32", "fp16", ("fp16", (), ("FP16",))),  # weak typing: builder flag, fp32 ONNX only
    (V10, "fp32", "bf16", ("bf16", (), ("BF16",))),
    (V10, "fp16", None, ("fp16", ("STRONGLY_TYPED",), ())),  # mixed ONNX: strongly typed, no builder flag
    (V10, "bf16", "bf16", ("bf16", ("STRONGLY_TYPED",), ())),
    (V11, "fp32", "fp32", ("fp32", (), ())),
    (V11, "fp16", None, ("fp16", (), ())),  # 11 is always strongly typed; no flags at all
    (V11, "bf16", "bf16", ("bf16", (), ())),
    ("12.0.0", "fp16", "fp16", ("fp16", (), ())),
])
def test_precision_mechanism_per_tensorrt_major(version, onnx_prec, requested, expected):
    assert select_precision(version, onnx_prec, requested) == expected


def test_precision_disagreements_are_errors():
    with pytest.raises(ConfigError, match=r"--precision fp16: TensorRT 11\.4\.0\.106 is strongly typed.*graph's "
                                          r"precision \(fp32\).*ddpg export --precision fp16"):
        select_precision(V11, "fp32", "fp16")
    with pytest.raises(ConfigError, match=r"--precision fp32: the ONNX graph is already mixed fp16"):
        select_precision(V10, "fp16", "fp32")
    with pytest.raises(ConfigError, match=r"--precision 'int8': choose one of fp32, fp16, bf16"):
        select_precision(V10, "fp32", "int8")
    with pytest.raises(ConfigError, match=r"TensorRT 8\.6\.1 is too old"):
        select_precision("8.6.1", "fp32", None)
    with pytest.raises(ConfigError, match="unrecognised TensorRT version"):
        select_precision("dev", "fp32", None)


def test_onnx_precision_comes_from_metadata_and_graph(tmp_path):
    fp32 = tiny_onnx(tmp_path / "a.onnx")
    fp16 = tiny_onnx(tmp_path / "b.onnx", precision="fp16")
    bf16 = tiny_onnx(tmp_path / "c.onnx", precision="bf16")
    assert [graph_precision(p) for p in (fp32, fp16, bf16)] == ["fp32", "fp16", "bf16"]
    assert onnx_precision(fp16, read_metadata(fp16)) == "fp16"
    model = onnx.load(str(fp16))
    for prop in model.metadata_props:
        if prop.key == "ddpg.precision":
            prop.value = "fp32"
    onnx.save_model(model, str(tmp_path / "lying.onnx"))
    with pytest.raises(ConfigError, match="its metadata says fp32 but the graph is fp16"):
        onnx_precision(tmp_path / "lying.onnx", read_metadata(tmp_path / "lying.onnx"))


# --- plan ----------------------------------------------------------------------------------------------------

def test_plan_for_tensorrt_10_and_11(tmp_path):
    fp32 = tiny_onnx(tmp_path / "a.onnx", batch="1:2:4")
    info = read_metadata(fp32)
    plan = plan_build(fp32, info, tensorrt_version=V10, gpu=GPU, precision="fp16", opt_level=4, workspace_gib=0.5)
    assert (plan.precision, plan.network_flags, plan.builder_flags, plan.cleared_flags) == \
        ("fp16", (), ("FP16",), ("TF32",))
    assert plan.flags == ("clear:TF32", "set:FP16") and plan.workspace_bytes == 1 << 29 and plan.opt_level == 4
    assert [p.to_dict() for p in plan.profiles] == [{"x": [[1, 3, 32, 32], [2, 3, 32, 32], [4, 3, 32, 32]],
                                                     "t": [[1], [2], [4]]}]
    assert plan_build(fp32, info, tensorrt_version=V10, gpu=GPU, tf32=True).cleared_flags == ()
    with pytest.raises(ConfigError, match="strongly typed"):
        plan_build(fp32, info, tensorrt_version=V11, gpu=GPU, precision="fp16")
    fp16 = tiny_onnx(tmp_path / "b.onnx", precision="fp16")
    plan = plan_build(fp16, read_metadata(fp16), tensorrt_version=V11, gpu=GPU)
    assert (plan.precision, plan.flags) == ("fp16", ("clear:TF32",))
    key10 = plan_build(fp16, read_metadata(fp16), tensorrt_version=V10, gpu=GPU).key("a" * 64, GPU)
    assert key10.flags == ("clear:TF32", "network:STRONGLY_TYPED") and key10.precision == "fp16"


def test_plan_argument_errors(tmp_path):
    path = tiny_onnx(tmp_path / "a.onnx", batch="1:2:4")
    info = read_metadata(path)
    with pytest.raises(ConfigError, match=r"--opt-level 6: .* integer 0\.\.5"):
        plan_build(path, info, tensorrt_version=V10, gpu=GPU, opt_level=6)
    with pytest.raises(ConfigError, match="--workspace 0"):
        plan_build(path, info, tensorrt_version=V10, gpu=GPU, workspace_gib=0)
    with pytest.raises(ConfigError, match=r"profile batch 1\.\.8: .* accepts batch 1\.\.4 only"):
        plan_build(path, info, tensorrt_version=V10, gpu=GPU,
                   profiles={"x": ((1, 3, 32, 32), (2, 3, 32, 32), (8, 3, 32, 32)), "t": ((1,), (2,), (8,))})
    bf16 = tiny_onnx(tmp_path / "c.onnx", precision="bf16")
    with pytest.raises(ConfigError, match=r"Tesla T4 \(sm7\.5\) has no bf16 support"):
        plan_build(bf16, read_metadata(bf16), tensorrt_version=V10, gpu=GpuInfo("Tesla T4", "7.5"))


# --- the TensorRT calls ----------------------------------------------------------------------------------------

def test_tensorrt_10_fp32_onnx_to_fp16_uses_the_builder_flag(tmp_path):
    path = tiny_onnx(tmp_path / "a.onnx", batch="1:2:4")
    info = read_metadata(path)
    profiles = [ShapeProfile.from_mapping({"x": ((1, 3, 32, 32),) * 3, "t": ((1,),) * 3}),
                ShapeProfile.from_mapping({"x": ((2, 3, 32, 32), (3, 3, 32, 32), (4, 3, 32, 32)),
                                           "t": ((2,), (3,), (4,))})]
    plan = plan_build(path, info, tensorrt_version=V10, gpu=GPU, precision="fp16", profiles=profiles,
                      opt_level=5, workspace_gib=2)
    trt = fake_trt(V10)
    blob, timing = _trt_build(plan, trt, b"OLD", print)
    assert blob == b"ENGINE " + V10.encode() and timing == b"OLD+timings"
    calls = trt.calls
    assert names(calls, "create_network") == [(0,)]  # weakly typed network
    assert names(calls, "parse_from_file") == [(str(path),)]  # by path: external data resolves
    assert names(calls, "set_memory_pool_limit") == [("WORKSPACE", 2 << 30)]
    assert names(calls, "set_flag") == [(trt.BuilderFlag.FP16,)]
    assert names(calls, "clear_flag") == [(trt.BuilderFlag.TF32,)]
    assert names(calls, "set_shape") == [("t", (1,), (1,), (1,)), ("x", (1, 3, 32, 32), (1, 3, 32, 32),
                                                                        (1, 3, 32, 32)),
                                         ("t", (2,), (3,), (4,)), ("x", (2, 3, 32, 32), (3, 3, 32, 32),
                                                                   (4, 3, 32, 32))]
    assert len(names(calls, "add_optimization_profile")) == 2
    assert names(calls, "create_timing_cache") == [(b"OLD",)] and names(calls, "set_timing_cache") == [(False,)]
    assert names(calls, "build_serialized_network") == [(5,)]
    order = [c[0] for c in calls]
    assert order.index("parse_from_file") < order.index("set_shape") < order.index("build_serialized_network")


def test_tensorrt_10_mixed_onnx_is_strongly_typed(tmp_path):
    path = tiny_onnx(tmp_path / "a.onnx", precision="fp16")
    trt = fake_trt(V10)
    _trt_build(plan_build(path, read_metadata(path), tensorrt_version=V10, gpu=GPU), trt, None, print)
    assert names(trt.calls, "create_network") == [(1 << trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED,)] == [(2,)]
    assert names(trt.calls, "set_flag") == []  # never FP16 together with strong typing
    assert names(trt.calls, "create_timing_cache") == []  # no timing cache asked for


def test_tensorrt_11_sets_no_precision_flags(tmp_path):
    path = tiny_onnx(tmp_path / "a.onnx", precision="fp16")
    trt = fake_trt(V11)  # has no BuilderFlag.FP16: touching it would raise AttributeError
    _trt_build(plan_build(path, read_metadata(path), tensorrt_version=V11, gpu=GPU), trt, b"", print)
    assert names(trt.calls, "create_network") == [(0,)]  # STRONGLY_TYPED is deprecated and ignored on 11
    assert names(trt.calls, "set_flag") == [] and names(trt.calls, "clear_flag") == [(trt.BuilderFlag.TF32,)]


def test_tensorrt_failures_carry_clear_messages(tmp_path):
    path = tiny_onnx(tmp_path / "a.onnx")
    plan = plan_build(path, read_metadata(path), tensorrt_version=V10, gpu=GPU)
    with pytest.raises(TensorRTBuildError, match=r"cannot parse this ONNX model: In node 0: unsupported operator; "
                                                 "In node 1"):
        _trt_build(plan, fake_trt(parse_ok=False), None, print)
    with pytest.raises(TensorRTBuildError, match="failed to build the engine"):
        _trt_build(plan, fake_trt(build_ok=False), None, print)
    with pytest.raises(TensorRTBuildError, match=r"parsed network has inputs \['x'\], its metadata says"):
        _trt_build(plan, fake_trt(network_inputs=("x",)), None, print)
    messages = []
    trt = fake_trt(timing_ok=False)
    _trt_build(plan, trt, b"FOREIGN", messages.append)
    assert "does not match this GPU/TensorRT" in messages[0]
    assert names(trt.calls, "create_timing_cache") == [(b"FOREIGN",), (b"",)]
    trt = fake_trt()
    _, timing = _trt_build(plan, trt, b"CORRUPT", messages.append)  # unreadable: TensorRT returns None
    assert names(trt.calls, "create_timing_cache") == [(b"CORRUPT",), (b"",)] and timing == b"+timings"
    assert len(names(trt.calls, "set_timing_cache")) == 1  # never called with None


# --- build_engine: the cache ---------------------------------------------------------------------------------

def builds(trt) -> int:
    return len(names(trt.calls, "build_serialized_network"))


def test_build_engine_writes_plan_sidecar_and_timing_cache_then_hits(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx", batch="1:2:4", external=True)
    trt = fake_trt()
    log = []
    record = build_engine(onnx_path, out=tmp_path / "m.plan", cache_dir=tmp_path / "cache", trt=trt,
                          environment=ENV10, log=log.append)
    assert not record.cache_hit and record.reason == "no engine yet" and builds(trt) == 1
    assert record.path.read_bytes() == b"ENGINE " + V10.encode()
    side = read_sidecar(record.path)
    assert side["key_digest"] == record.key.digest() and side["build_seconds"] >= 0
    assert set(side["onnx"]["files"]) == {"m.onnx", "m.onnx.data"}
    assert side["onnx_metadata"]["ddpg.prior"] == "tiny" and side["versions"]["tensorrt"] == V10
    assert side["gpu"] == {"name": GPU.name, "compute_capability": "9.0", "driver": "550.54"}
    assert side["key"]["profiles"] == [{"t": [[1], [2], [4]], "x": [[1, 3, 32, 32], [2, 3, 32, 32],
                                                                    [4, 3, 32, 32]]}]
    timing = timing_cache_path(tmp_path / "cache", GPU, V10)
    assert record.timing_cache == timing and timing.read_bytes() == b"+timings"
    assert any("building m.plan" in m for m in log)

    again = build_engine(onnx_path, out=tmp_path / "m.plan", cache_dir=tmp_path / "cache", trt=trt,
                         environment=ENV10)
    assert again.cache_hit and builds(trt) == 1 and again.key == record.key
    assert names(trt.calls, "deserialize_cuda_engine")  # the hit was verified by deserializing

    changed = build_engine(onnx_path, out=tmp_path / "m.plan", cache_dir=tmp_path / "cache", trt=trt,
                           environment=ENV10, opt_level=4)
    assert not changed.cache_hit and "opt_level: 3 → 4" in changed.reason and builds(trt) == 2
    assert names(trt.calls, "create_timing_cache")[-1] == (b"+timings",)  # the persistent cache is reused


def test_stale_foreign_or_forced_engines_are_rebuilt(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    out = tmp_path / "m.plan"
    trt = fake_trt()
    kwargs = dict(out=out, cache_dir=tmp_path, trt=trt, environment=ENV10)
    build_engine(onnx_path, **kwargs)
    assert build_engine(onnx_path, force=True, **kwargs).reason == "forced rebuild (--force)"
    newer = fake_trt("10.13.0.35")
    record = build_engine(onnx_path, out=out, cache_dir=tmp_path, trt=newer,
                          environment=TrtEnvironment("10.13.0.35", GPU))
    assert "tensorrt_version: 10.9.0.34 → 10.13.0.35" in record.reason and builds(newer) == 1
    other_gpu = TrtEnvironment("10.13.0.35", GpuInfo("NVIDIA L4", "8.9"))
    assert "gpu_name" in build_engine(onnx_path, out=out, cache_dir=tmp_path, trt=newer,
                                      environment=other_gpu).reason
    json_path = out.with_name("m.plan.json")
    json_path.write_text("{")
    assert "unreadable engine sidecar" in build_engine(onnx_path, out=out, cache_dir=tmp_path, trt=newer,
                                                       environment=other_gpu).reason
    cannot_load = fake_trt("10.13.0.35", deserialize_ok=False)
    record = build_engine(onnx_path, out=out, cache_dir=tmp_path, trt=cannot_load, environment=other_gpu)
    assert record.reason == "stale engine: TensorRT could not deserialize the cached plan"
    assert builds(cannot_load) == 1


def test_default_engine_path_is_keyed_in_the_cache_dir(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    trt = fake_trt()
    a = build_engine(onnx_path, cache_dir=tmp_path / "c", trt=trt, environment=ENV10, timing_cache=False)
    b = build_engine(onnx_path, cache_dir=tmp_path / "c", trt=trt, environment=ENV10, timing_cache=False,
                     opt_level=2)
    assert a.path.parent == tmp_path / "c" and a.path.name == f"m-{a.key.digest()[:16]}.plan"
    assert a.path != b.path and a.path.is_file() and b.path.is_file()
    assert a.timing_cache is None and not (tmp_path / "c" / "timing").exists()
    assert build_engine(onnx_path, cache_dir=tmp_path / "c", trt=trt, environment=ENV10,
                        timing_cache=False).cache_hit


def test_build_engine_input_errors(tmp_path):
    with pytest.raises(EngineError, match="ONNX file not found"):
        build_engine(tmp_path / "missing.onnx", trt=fake_trt(), environment=ENV10)
    plain = tiny_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(plain))
    del model.metadata_props[:]
    onnx.save_model(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(EngineError, match="no ddpg metadata"):
        build_engine(tmp_path / "foreign.onnx", trt=fake_trt(), environment=ENV10)
    fp32 = tiny_onnx(tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="strongly typed"):
        build_engine(fp32, precision="fp16", cache_dir=tmp_path, trt=fake_trt(V11),
                     environment=TrtEnvironment(V11, GPU))
    assert not list(tmp_path.glob("*.plan"))  # nothing written on a refused build
    with pytest.raises(ConfigError, match=r"-o .*m\.onnx: name the engine file \(e\.g\. m\.plan\)"):
        build_engine(fp32, out=fp32, cache_dir=tmp_path, trt=fake_trt(), environment=ENV10)
    assert read_metadata(fp32).prior == "tiny"  # the ONNX model is untouched


def test_without_tensorrt_the_error_names_the_missing_module(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        with pytest.raises(ConfigError, match=f"TensorRT is not available here \\({exc}\\)"):
            build_engine(tiny_onnx(tmp_path / "m.onnx"), cache_dir=tmp_path)
    else:
        pytest.skip("tensorrt is installed here")


def test_sidecar_is_json_with_sorted_keys(tmp_path):
    onnx_path = tiny_onnx(tmp_path / "m.onnx")
    record = build_engine(onnx_path, out=tmp_path / "m.plan", cache_dir=tmp_path, trt=fake_trt(), environment=ENV10)
    text = record.sidecar_path.read_text()
    assert json.loads(text)["format"] == "ddpg-tensorrt-engine/1" and text.endswith("\n")


def test_build_engine_command(tmp_path, monkeypatch):
    import typer
    from typer.testing import CliRunner

    from ddpg.cli.export import build_engine_command
    from ddpg.export import tensorrt_build

    trt = fake_trt()
    monkeypatch.setattr(tensorrt_build, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(tensorrt_build, "detect_environment", lambda trt, device=None: ENV10)
    app = typer.Typer()
    app.command()(build_engine_command)
    onnx_path = tiny_onnx(tmp_path / "m.onnx", batch="1:2:4")
    args = [str(onnx_path), "-o", str(tmp_path / "m.plan"), "--batch", "1,2:3:4", "--size", "32x32",
            "--cache-dir", str(tmp_path / "c")]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "built in" in result.output
    assert [p["x"][2][0] for p in read_sidecar(tmp_path / "m.plan")["key"]["profiles"]] == [1, 4]
    assert "reused" in runner.invoke(app, args).output and builds(trt) == 1
    result = runner.invoke(app, [str(onnx_path), "--batch", "1:9:4"])
    assert result.exit_code == 2 and "error: --batch '1:9:4'" in result.output
    result = runner.invoke(app, [str(onnx_path), "--size", "64"])
    assert result.exit_code == 2 and "exported for 32x32" in result.output
