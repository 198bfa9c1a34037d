"""The TensorRT engine cache without TensorRT: profile and size parsing, the engine key (every field counts,
external data included), the sidecar, and stale/foreign engine detection."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ddpg.engine_metadata import BatchProfile, EngineError, EngineInfo
from ddpg.engine_sidecar import EngineKey, GpuInfo, ShapeProfile, check_engine_environment, read_sidecar, sidecar_path
from ddpg.errors import ConfigError
from ddpg.export.engine_cache import (
    as_profiles,
    cache_status,
    check_profiles,
    external_data_files,
    hash_onnx,
    make_sidecar,
    parse_batches,
    parse_size,
    profiles_for,
    timing_cache_path,
    write_engine,
)
from fake_trt_build import GPU, tiny_onnx


def info_for(path) -> EngineInfo:
    from ddpg.engine_metadata import read_metadata

    return read_metadata(path)


PROFILE = ShapeProfile.from_mapping({"x": ((1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32)),
                                     "t": ((1,), (2,), (4,))})


def key(**changes) -> EngineKey:
    base = EngineKey(onnx_sha256="a" * 64, tensorrt_version="10.9.0.34", gpu_name=GPU.name,
                     compute_capability=GPU.compute_capability, precision="fp32", profiles=(PROFILE,),
                     opt_level=3, workspace_bytes=8 << 30, flags=("clear:TF32",))
    return dataclasses.replace(base, **changes)


# --- parsing -----------------------------------------------------------------------------------------------

def test_parse_size_forms_and_errors():
    assert parse_size("256") == (256, 256)
    assert parse_size("64x48") == (64, 48)
    assert parse_size("64,48") == (64, 48)
    assert parse_size("64 48") == (64, 48)
    assert parse_size((32, 16)) == (32, 16)
    for bad in ("", "0", "64x", "ax64", "1x2x3", "-32"):
        with pytest.raises(ConfigError, match="--size"):
            parse_size(bad)


def test_parse_batches_one_or_several_profiles():
    assert parse_batches("4") == [BatchProfile(4, 4, 4)]
    assert parse_batches("1,2:4:8") == [BatchProfile(1, 1, 1), BatchProfile(2, 4, 8)]
    assert parse_batches(["1", "2:4:8"]) == [BatchProfile(1, 1, 1), BatchProfile(2, 4, 8)]
    with pytest.raises(ConfigError, match=r"item '4:2:8'.*MIN <= OPT <= MAX"):
        parse_batches("1,4:2:8")
    with pytest.raises(ConfigError, match="expected N or MIN:OPT:MAX"):
        parse_batches("1,,2")
    with pytest.raises(ConfigError, match="twice"):
        parse_batches("2,2")
    with pytest.raises(ConfigError, match="item 'x'"):
        parse_batches("x")


def test_shape_profile_validation_and_acceptance():
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile.from_mapping({"x": ((4, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))})
    with pytest.raises(ConfigError, match="differ in rank"):
        ShapeProfile.from_mapping({"x": ((1, 3, 8, 8), (2, 3, 8), (8, 3, 8, 8))})
    with pytest.raises(ConfigError, match="exactly three shapes"):
        ShapeProfile.from_mapping({"x": ((1, 3, 8, 8), (8, 3, 8, 8))})
    assert PROFILE.accepts({"x": (3, 3, 32, 32), "t": (3,)})
    assert not PROFILE.accepts({"x": (5, 3, 32, 32), "t": (5,)})
    assert not PROFILE.accepts({"x": (2, 3, 64, 64), "t": (2,)})
    assert not PROFILE.fixed
    assert ShapeProfile.from_mapping({"x": ((2, 3, 8, 8),) * 3}).fixed
    assert PROFILE.describe() == "x: batch 1..4, 3×32×32"
    assert ShapeProfile.from_mapping(PROFILE.to_dict()) == PROFILE
    assert as_profiles(PROFILE.to_dict()) == [PROFILE]


def test_profiles_for_an_export_and_their_checks(tmp_path):
    info = info_for(tiny_onnx(tmp_path / "m.onnx", batch="1:2:8", conditional=True))
    (default,) = profiles_for(info)
    assert default.to_dict() == {"x": [[1, 3, 32, 32], [2, 3, 32, 32], [8, 3, 32, 32]],
                                 "t": [[1], [2], [8]], "y": [[1], [2], [8]]}
    fixed, dyn = profiles_for(info, parse_batches("1,2:4:8"), size=(32, 32))
    assert fixed.fixed and dyn.get("x")[1] == (4, 3, 32, 32)
    with pytest.raises(ConfigError, match=r"--size 64x64: .* exported for 32x32"):
        profiles_for(info, size=(64, 64))
    with pytest.raises(ConfigError, match=r"--batch 1:8:16: .* accepts batch 1\.\.8 only"):
        profiles_for(info, parse_batches("1:8:16"))
    check_profiles([default], info)
    with pytest.raises(ConfigError, match="do not match the ONNX inputs"):
        check_profiles([PROFILE], info)
    wrong_size = ShapeProfile.from_mapping({"x": ((1, 3, 64, 64),) * 3, "t": ((1,),) * 3, "y": ((1,),) * 3})
    with pytest.raises(ConfigError, match=r"takes x of shape \(B, 3, 32, 32\)"):
        check_profiles([wrong_size], info)
    mismatched = ShapeProfile.from_mapping({"x": ((1, 3, 32, 32),) * 3, "t": ((2,),) * 3, "y": ((1,),) * 3})
    with pytest.raises(ConfigError, match="batch range must equal x's"):
        check_profiles([mismatched], info)


# --- key ---------------------------------------------------------------------------------------------------

def test_engine_key_digest_changes_with_every_field():
    base = key()
    assert base.digest() == key().digest() and len(base.digest()) == 64
    other_profile = ShapeProfile.from_mapping({"x": ((1, 3, 32, 32), (4, 3, 32, 32), (4, 3, 32, 32)),
                                               "t": ((1,), (4,), (4,))})
    changes = {"onnx_sha256": "b" * 64, "tensorrt_version": "11.4.0.106", "gpu_name": "NVIDIA A100",
               "compute_capability": "8.0", "precision": "fp16", "profiles": (other_profile,), "opt_level": 4,
               "workspace_bytes": 4 << 30, "flags": ("set:FP16",)}
    digests = {base.digest()}
    for field, value in changes.items():
        changed = key(**{field: value})
        digests.add(changed.digest())
        assert [d.split(":")[0] for d in changed.differences(base)] == [field]
    assert len(digests) == len(changes) + 1
    assert EngineKey.from_dict(json.loads(json.dumps(base.to_dict()))) == base
    assert key(flags=("b", "a")).digest() == key(flags=("a", "b")).digest()  # flag order does not matter


def test_onnx_hash_covers_external_data(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx", external=True)
    assert [p.name for p in external_data_files(path)] == ["m.onnx.data"]
    combined, files = hash_onnx(path)
    assert set(files) == {"m.onnx", "m.onnx.data"}
    data = tmp_path / "m.onnx.data"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # same model file, other weights
    data.write_bytes(bytes(raw))
    assert hash_onnx(path)[0] != combined
    data.unlink()
    with pytest.raises(EngineError, match="external-data file 'm.onnx.data' is missing"):
        hash_onnx(path)
    # renaming the model file alone does not change the key; its content does
    inline = tiny_onnx(tmp_path / "a.onnx")
    copy = tmp_path / "b.onnx"
    copy.write_bytes(inline.read_bytes())
    assert hash_onnx(inline)[0] == hash_onnx(copy)[0]
    assert hash_onnx(tiny_onnx(tmp_path / "c.onnx", scale=0.25))[0] != hash_onnx(inline)[0]
    with pytest.raises(EngineError, match="not a readable ONNX model"):
        (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
        hash_onnx(tmp_path / "junk.onnx")


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path):
    a = timing_cache_path(tmp_path, GPU, "10.9.0.34")
    assert a.parent == tmp_path / "timing"
    assert a != timing_cache_path(tmp_path, GPU, "11.4.0.106")
    assert a != timing_cache_path(tmp_path, GpuInfo("NVIDIA A100-SXM4-80GB", "8.0"), "10.9.0.34")
    assert "nvidia-h100-80gb-hbm3-sm9.0" in a.name


# --- sidecar and cache status ------------------------------------------------------------------------------

def stored_engine(tmp_path, k: EngineKey, plan: bytes = b"PLAN-BYTES"):
    import hashlib

    path = tmp_path / "m.plan"
    sidecar = make_sidecar(k, plan_sha256=hashlib.sha256(plan).hexdigest(), plan_bytes=len(plan),
                           onnx_path=tmp_path / "m.onnx", onnx_files={"m.onnx": "0" * 64},
                           onnx_metadata={"ddpg.prior": "tiny"}, inputs=["x", "t"], gpu=GPU, build_seconds=1.25,
                           built_at="2025-01-01T00:00:00Z", versions={"tensorrt": k.tensorrt_version},
                           timing_cache=None)
    write_engine(path, plan, sidecar)
    return path


def test_sidecar_round_trip_and_hit(tmp_path):
    k = key()
    path = stored_engine(tmp_path, k)
    data = read_sidecar(path)
    assert sidecar_path(path).name == "m.plan.json"
    assert data["key_digest"] == k.digest() and data["build_seconds"] == 1.25
    assert data["gpu"]["driver"] == "550.54" and data["onnx_metadata"] == {"ddpg.prior": "tiny"}
    assert cache_status(path, k).hit
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_stale_or_foreign_engines_are_not_hits(tmp_path):
    k = key()
    path = stored_engine(tmp_path, k)
    assert cache_status(tmp_path / "other.plan", k).reason == "no engine yet"
    newer = key(tensorrt_version="10.13.0.35")
    status = cache_status(path, newer)
    assert not status.hit and "tensorrt_version: 10.9.0.34 → 10.13.0.35" in status.reason
    assert "compute_capability" in cache_status(path, key(compute_capability="8.9")).reason
    path.write_bytes(b"PLAN-BYTES-tampered")
    assert "does not match the sha256" in cache_status(path, k).reason
    stored_engine(tmp_path, k)
    sidecar_path(path).write_text("{not json")
    assert "unreadable engine sidecar" in cache_status(path, k).reason
    sidecar_path(path).write_text(json.dumps({"format": "something-else"}))
    assert "sidecar format 'something-else'" in cache_status(path, k).reason
    sidecar_path(path).unlink()
    assert "no sidecar m.plan.json" in cache_status(path, k).reason
    data = json.loads(json.dumps(make_sidecar(k, plan_sha256="", plan_bytes=0, onnx_path="m.onnx", onnx_files={},
                                              onnx_metadata={}, inputs=[], gpu=GPU, build_seconds=0, built_at="",
                                              versions={}, timing_cache=None)))
    data["key"]["key_version"] = 99
    sidecar_path(path).write_text(json.dumps(data))
    assert "unreadable engine key" in cache_status(path, k).reason


def test_runtime_refuses_engines_of_other_tensorrt_or_gpu(tmp_path):
    path = stored_engine(tmp_path, key())
    data = read_sidecar(path)
    check_engine_environment(data, path, "10.9.0.34", GPU)
    with pytest.raises(EngineError, match=r"built for TensorRT 10\.9\.0\.34 \(this machine has 11\.4\.0\.106\)"):
        check_engine_environment(data, path, "11.4.0.106", GPU)
    with pytest.raises(EngineError, match=r"GPU NVIDIA H100 80GB HBM3 sm9\.0 \(this is NVIDIA L4 sm8\.9\).*"
                                          "not portable"):
        check_engine_environment(data, path, "10.9.0.34", GpuInfo("NVIDIA L4", "8.9"))
