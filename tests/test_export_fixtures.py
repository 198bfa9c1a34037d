"""The small reference priors exported to ONNX compute what the reference computed (tests/fixtures/priors):
ADM with learned variance (channels dropped in the graph), class-conditional ADM (input ``y``), and the fp16
mixed-precision recipe. (ddpm_small is exported in test_backend_ort.py, which also runs it in a DDPG loop.)

Export time dominates on the 2 shared CPU cores, so the float32 parity exports skip onnxscript's graph rewriting
(``optimize=False``: same numbers, ~25 % faster); the fp16 export, the stand-in and the CLI test keep the default
(optimised, deployable) graph."""

from __future__ import annotations

import collections

import onnx
import pytest
import torch
from onnx import TensorProto

from conftest import FIXTURES, rel_err
from ddpg.errors import ConfigError
from ddpg.export import export_prior, read_metadata
from ddpg.models import create_prior
from ddpg.runtime.backends import make_denoiser

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow

FP32_TOL = 1e-5  # relative L2 vs the reference output (docs/deployment.md §3)
FP16_TOL = 5e-3  # relative L2, fp16 torso under ONNX Runtime CPU vs fp32 reference; measured ≈1.1e-3


def _fixture(name: str) -> dict:
    return torch.load(FIXTURES / "priors" / f"{name}.pt", weights_only=True)


def _export(name: str, out, **kwargs):
    return export_prior(_fixture(name)["config"], checkpoint=FIXTURES / "priors" / f"{name}.pt", out=out, **kwargs)


def test_adm_learn_sigma_matches_reference(tmp_path):
    fx = _fixture("adm_small_a")
    result = _export("adm_small_a", tmp_path / "a.onnx", batch="1:2:3", optimize=False)
    assert result.validation.passed and result.validation.batches == [1, 3]
    assert result.validation.worst_rel_l2 < FP32_TOL
    info = read_metadata(result.path)
    from ddpg.models.checkpoints import sha256_file
    assert info.checkpoint == "adm_small_a.pt" and info.checkpoint_sha256 == sha256_file(FIXTURES / "priors" /
                                                                                         "adm_small_a.pt")
    den = make_denoiser("onnxruntime", engine=result.path)
    assert fx["out"].shape[1] == 6
    assert rel_err(den(fx["x"], fx["t"]), fx["out"][:, :3]) < FP32_TOL
    assert rel_err(den(fx["x"][:1], fx["t"][:1]), fx["out"][:1, :3]) < FP32_TOL  # batch 1 of a dynamic export


def test_class_conditional_adm_matches_reference(tmp_path):
    fx = _fixture("adm_small_b")
    result = _export("adm_small_b", tmp_path / "b.onnx", batch="2", validate=False, optimize=False)
    info = read_metadata(result.path)
    assert info.inputs == ("x", "t", "y") and info.conditional
    assert [i.name for i in onnx.load(result.path).graph.input] == ["x", "t", "y"]
    den = make_denoiser("onnxruntime", engine=result.path, class_labels=fx["y"])
    assert rel_err(den(fx["x"], fx["t"]), fx["out"][:, :3]) < FP32_TOL
    one_label = make_denoiser("onnxruntime", engine=result.path, class_labels=int(fx["y"][0]))
    prior = create_prior(fx["config"])
    prior.load_state_dict(fx["state_dict"])
    with torch.no_grad():
        ref = prior(fx["x"], fx["t"], fx["y"][:1].expand(2))
    assert rel_err(one_label(fx["x"], fx["t"]), ref) < FP32_TOL
    with pytest.raises(ConfigError, match="class-conditional: pass class_labels"):
        make_denoiser("onnxruntime", engine=result.path)


def test_fp16_adm_mixed_precision(tmp_path):
    """fp16 convolutions, fp32 GroupNorm (InstanceNormalization), timestep embedding and I/O."""
    fx = _fixture("adm_small_a")
    result = _export("adm_small_a", tmp_path / "h.onnx", precision="fp16", batch="1:2:2")
    report = result.validation
    assert report.passed and report.rtol == 1e-2
    print(f"fp16 ADM vs fp32 PyTorch: {report.summary()}")
    assert report.worst_rel_l2 < FP16_TOL and report.worst_rel_l2 > 1e-5  # really fp16, not fp32
    den = make_denoiser("onnxruntime", engine=result.path)
    assert den.precision == "fp16"
    assert rel_err(den(fx["x"], fx["t"]), fx["out"][:, :3]) < FP16_TOL
    model = onnx.shape_inference.infer_shapes(onnx.load(result.path))
    dtype = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    dtype.update({i.name: i.data_type for i in model.graph.initializer})
    dtype.update({v.name: v.type.tensor_type.elem_type for v in model.graph.input})

    def input_types(op: str) -> collections.Counter:
        return collections.Counter(dtype.get(n.input[0]) for n in model.graph.node if n.op_type == op)

    convs = input_types("Conv")
    assert convs[TensorProto.FLOAT16] >= sum(convs.values()) - 1, convs  # all but the output head
    for op in ("InstanceNormalization", "Softmax", "Sin", "Cos"):
        types = input_types(op)
        assert types and set(types) == {TensorProto.FLOAT}, (op, types)
    for io in list(model.graph.input[:2]) + list(model.graph.output):
        assert io.type.tensor_type.elem_type == TensorProto.FLOAT


def test_face64_export_matches_torch(tmp_path):
    """The bundled face64 prior (8.95 M parameters) exported in fp32 computes what the torch prior computes, at
    early, middle and late timesteps; the export names the prior and its bundled weights (measured 2.3e-7)."""
    from ddpg.models import REGISTRY, load_prior

    result = export_prior("face64", out=tmp_path / "face64.onnx", batch="1:3:3", validate=False, optimize=False)
    info = read_metadata(result.path)
    assert (info.prior, info.size, info.precision) == ("face64", (64, 64), "fp32")
    assert info.checkpoint_sha256 == REGISTRY["face64"].sha256
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(3, 3, 64, 64, generator=gen), torch.tensor([5.0, 500.0, 990.0])
    with torch.no_grad():
        ref = load_prior("face64")(x, t)
    err = rel_err(make_denoiser("onnxruntime", engine=result.path)(x, t), ref)
    print(f"face64 ONNX Runtime vs torch, rel. L2 {err:.2e}")
    assert err < FP32_TOL


CUDA_GRAPH_HAZARDS = {"Shape", "Size", "NonZero", "If", "Loop", "Scan", "SplitToSequence", "SequenceAt", "Range"}


def test_fixed_batch_fp16_export_is_cuda_graph_ready(tmp_path):
    """What ``OrtDenoiser(cuda_graph=True)`` needs of a fixed-batch export (docs/deployment.md §6, §10): static I/O
    shapes and no op whose output ONNX Runtime keeps on the CPU (Shape, Size: their consumers fall back to the CPU
    provider with copies) nor control flow or sequences, which the CUDA provider refuses to capture. Learned-sigma
    ADM in fp16: attention, GroupNorm casts, the channel slice."""
    result = _export("adm_small_a", tmp_path / "g.onnx", precision="fp16", batch="2", validate=False)
    model = onnx.load(result.path)
    ops = collections.Counter(n.op_type for n in model.graph.node)
    assert not CUDA_GRAPH_HAZARDS & set(ops), ops
    assert ops["Slice"] == 1 and ops["Cast"] > 0  # learn_sigma channels dropped; the fp16 torso is really there
    for value in list(model.graph.input) + list(model.graph.output):
        assert all(d.HasField("dim_value") for d in value.type.tensor_type.shape.dim), value
