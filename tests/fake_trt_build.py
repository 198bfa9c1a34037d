"""What an engine build needs, without TensorRT (test_tensorrt_cache, test_tensorrt_build, test_engine_loading): a
tiny ONNX prior with ddpg metadata, a GPU, TensorRT versions, and a fake ``tensorrt`` module for builds."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ddpg.engine_metadata import BatchProfile, build_metadata
from ddpg.engine_sidecar import GpuInfo
from ddpg.export.tensorrt_build import TrtEnvironment

CONFIG = {"kind": "ddpm", "name": "tiny", "image_size": 32, "beta_schedule": "linear", "beta_start": 1e-4,
          "beta_end": 0.02, "num_diffusion_timesteps": 1000}
GPU = GpuInfo("NVIDIA H100 80GB HBM3", "9.0", "550.54")
V10, V11 = "10.9.0.34", "11.4.0.106"


def tiny_onnx(path, *, precision="fp32", batch="1:2:4", size=(32, 32), conditional=False, external=False,
              scale=0.5):
    """eps = x · w (w a (1,3,1,1) initializer), with ddpg metadata; fp16 computes in half between Casts."""
    low = precision != "fp32"
    dtype = {"fp32": TensorProto.FLOAT, "fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}[precision]
    weight = numpy_helper.from_array(np.full((1, 3, 1, 1), scale, np.float32), "w")
    if low:
        weight = helper.make_tensor("w", dtype, (1, 3, 1, 1), [scale] * 3) if precision == "bf16" else \
            numpy_helper.from_array(np.full((1, 3, 1, 1), scale, np.float16), "w")
    nodes = [helper.make_node("Cast", ["x"], ["xl"], to=dtype), helper.make_node("Mul", ["xl", "w"], ["el"]),
             helper.make_node("Cast", ["el"], ["eps"], to=TensorProto.FLOAT)] if low else \
        [helper.make_node("Mul", ["x", "w"], ["eps"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, *size]),
              helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B"])]
    if conditional:
        inputs.append(helper.make_tensor_value_info("y", TensorProto.INT64, ["B"]))
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info("eps", TensorProto.FLOAT,
                                                                                     ["B", 3, *size])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    meta = build_metadata(CONFIG, precision=precision, opset=20, batch=BatchProfile.parse(batch), size=size,
                          conditional=conditional, checkpoint="random", checkpoint_sha256="random",
                          versions={"ddpg": "test"})
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def fake_trt(version: str = V10, *, parse_ok: bool = True, build_ok: bool = True, deserialize_ok: bool = True,
             network_inputs: tuple[str, ...] = ("x", "t"), timing_ok: bool = True) -> SimpleNamespace:
    """A stand-in for the ``tensorrt`` module: the documented names, recording every call in ``.calls``.
    Enum values are those of NvInfer.h: TensorRT 11's BuilderFlag has no FP16/BF16 (removed), so touching them
    fails as it would there, and its NetworkDefinitionCreationFlag has no EXPLICIT_BATCH. ``create_timing_cache``
    returns None for a blob TensorRT cannot read (``b"CORRUPT"``)."""
    calls: list[tuple] = []
    v11 = version.startswith("11")
    flags = {"TF32": 6} if v11 else {"FP16": 0, "BF16": 17, "TF32": 6}
    network_flags = {"STRONGLY_TYPED": 0} if v11 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}

    class Logger:
        WARNING = "WARNING"

        def __init__(self, level):
            self.level = level

    class Profile:
        def set_shape(self, input, min, opt, max):  # the binding's keyword names
            calls.append(("set_shape", input, tuple(min), tuple(opt), tuple(max)))

    class TimingCache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return self.blob + b"+timings"

    class Config:
        builder_optimization_level = None

        def set_memory_pool_limit(self, pool, pool_size):
            calls.append(("set_memory_pool_limit", pool, pool_size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag))

        def clear_flag(self, flag):
            calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            calls.append(("add_optimization_profile",))

        def create_timing_cache(self, serialized_timing_cache):
            calls.append(("create_timing_cache", bytes(serialized_timing_cache)))
            return None if serialized_timing_cache == b"CORRUPT" else TimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", ignore_mismatch))
            return timing_ok or cache.blob == b""

    class Network:
        num_inputs = len(network_inputs)

        def get_input(self, index):
            return SimpleNamespace(name=network_inputs[index])

    class Builder:
        def __init__(self, logger):
            assert logger.level == "WARNING"

        def create_network(self, flags=0):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network", config.builder_optimization_level))
            return bytearray(b"ENGINE " + version.encode()) if build_ok else None

    class OnnxParser:
        num_errors = 2

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, model):
            calls.append(("parse_from_file", model))
            return parse_ok

        def get_error(self, index):
            return f"In node {index}: unsupported operator"

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, serialized_engine):
            calls.append(("deserialize_cuda_engine", len(serialized_engine)))
            return object() if deserialize_ok and bytes(serialized_engine).startswith(b"ENGINE") else None

    return SimpleNamespace(
        __version__=version, calls=calls, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser, Runtime=Runtime,
        BuilderFlag=SimpleNamespace(**flags), NetworkDefinitionCreationFlag=SimpleNamespace(**network_flags),
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"))


ENV10 = TrtEnvironment(V10, GPU)  # TensorRT 10 on the H100
