"""A fake TensorRT engine to run without TensorRT or a GPU (test_tensorrt_runtime, test_gpu_readiness,
test_capabilities): the ``tensorrt`` enums the bindings read, and an engine whose contexts record what is bound
and compute eps = 0.5·x + t on CPU tensors."""

from __future__ import annotations

from types import SimpleNamespace


def fake_trt():
    """The ``tensorrt`` enums the bindings read (tensor modes and data types)."""
    return SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
                           DataType=SimpleNamespace(FLOAT="f32", HALF="f16", INT64="i64", INT32="i32"))


class FakeContext:
    """Records bindings; ``execute_async_v3`` computes eps = 0.5·x + t from the bound buffers. Like the TensorRT
    binding, ``set_optimization_profile_async`` raises RuntimeError rather than returning False."""

    def __init__(self, log, refuse_profile=False):
        self.log, self.addresses, self.input_shapes, self.buffers = log, {}, {}, None
        self.refuse_profile = refuse_profile

    def set_optimization_profile_async(self, profile_index, stream_handle):
        if self.refuse_profile:
            raise RuntimeError("Error in set optimization profile async.")
        self.log.append(("profile", profile_index, stream_handle))
        return True

    def set_tensor_address(self, name, memory):
        self.addresses[name] = memory
        return True

    def set_input_shape(self, name, shape):
        self.log.append(("shape", name, tuple(shape)))
        self.input_shapes[name] = tuple(shape)
        return True

    def execute_async_v3(self, stream_handle):
        self.log.append(("execute", stream_handle))
        b = self.input_shapes["x"][0]
        x, t = self.buffers["x"][:b], self.buffers["t"][:b]
        self.buffers["eps"][:b] = 0.5 * x + t[:, None, None, None]
        return True


class FakeEngine:
    def __init__(self, trt, io=(("x", "in", "f32"), ("t", "in", "f32"), ("eps", "out", "f32")), profiles=2,
                 refuse_profile=False):
        self.io, self.num_io_tensors, self.num_optimization_profiles = io, len(io), profiles
        self.log, self.contexts, self.refuse_profile = [], [], refuse_profile

    def get_tensor_name(self, index):
        return self.io[index][0]

    def get_tensor_mode(self, name):
        return dict((n, m) for n, m, _ in self.io)[name]

    def get_tensor_dtype(self, name):
        return dict((n, d) for n, _, d in self.io)[name]

    def create_execution_context(self):
        self.contexts.append(FakeContext(self.log, self.refuse_profile))
        return self.contexts[-1]
