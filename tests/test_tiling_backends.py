"""Tiles through the ONNX Runtime and OpenVINO backends (#32): a 56×56 image (2×2 tiles of the 32-px ddpm_small
export, overlap 8) restored with ``--tile 32`` through ``--backend onnxruntime`` and ``--backend openvino`` equals
its torch-backend twin (same seed), and its sidecar says it tiled; a fixed-batch engine gets its last tile call
padded; a tile size the engine was not exported for is refused before any input is read. TensorRT (not installable
here): the real bindings over a fake pointwise engine run the tile stream at the engine's batch, dynamic or fixed
in its own CUDA graph. The whole-step runner (--cuda-graph) drives the tiles as the Restorer does (CPU: bit for
bit; a GPU: captured in one CUDA graph)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from conftest import FIXTURES, rel_err
from ddpg import api
from ddpg.engine_metadata import EngineError
from ddpg.errors import ParameterError
from ddpg.io import save_image
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.backends import make_denoiser
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.tiling import TiledDenoiser
from drawn_noise import ddpg_with_drawn_noise

pytest.importorskip("onnxruntime")
CHECKPOINT = FIXTURES / "priors" / "ddpm_small.pt"
SIZE, TILE, OVERLAP, STEPS = 56, 32, 8, 4  # 56 = 32 + 24: two tiles a side overlapping by 8 px
RUN_TOL = 1e-4  # relative L2 of a whole tiled run, engine vs PyTorch, float32 (test_backend_ort's whole-run bound)
PNG16_TOL = 2  # 16-bit output levels (1/65535 each): float32 differences of ~1e-6 may flip a rounding


@pytest.fixture(scope="module")
def small_prior():
    fixture = torch.load(CHECKPOINT, weights_only=True)
    prior = create_prior(fixture["config"])
    prior.load_state_dict(fixture["state_dict"], strict=True)
    return fixture["config"], prior.eval()


@pytest.fixture(scope="module")
def engines(ddpm_engine, tmp_path_factory):
    """backend → engine file of ddpm_small (the session's ONNX export, dynamic batch 1..4); OpenVINO's IR
    converted from it (skipped without openvino)."""
    found = {"onnxruntime": ddpm_engine}
    try:
        from ddpg.export.openvino_export import ir_from_onnx
    except ImportError:
        return found
    found["openvino"] = ir_from_onnx(ddpm_engine, tmp_path_factory.mktemp("ov_tiles") / "ddpm_small.xml")
    return found


def engine_of(engines, backend):
    if backend not in engines:
        pytest.skip(f"backend {backend} not installed")
    return engines[backend]


def tiled_run(denoiser, batch: int) -> tuple[torch.Tensor, TiledDenoiser]:
    """A 4-step DDPG SR×4 run (σ_y 0.05) of one 56×56 image, the UNet over 32-px tiles in calls of ``batch``;
    the same x_T and noise draws for every denoiser."""
    run = ddpg_with_drawn_noise(make_operator("sr_bicubic", SIZE, scale=4, impl="fft"), batch=1, seed=3, steps=STEPS)
    tiled = TiledDenoiser(denoiser, TILE, OVERLAP, batch)
    return run(tiled), tiled


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_tiled_run_matches_torch(backend, engines, small_prior):
    _, prior = small_prior
    ref, _ = tiled_run(as_denoiser(prior), 16)
    options = {"threads": 1} if backend == "openvino" else {}
    got, tiled = tiled_run(make_denoiser(backend, engine=engine_of(engines, backend), **options), 4)
    assert tiled.layout((SIZE, SIZE)).grid == (2, 2) and tiled.tile_calls == 4 * STEPS
    assert torch.isfinite(got).all() and rel_err(got, ref) < RUN_TOL


def fixed_batch_copy(engine, out, batch: int):
    """The same ONNX graph with its batch fixed at ``batch`` (input and output dimension, and ddpg.batch)."""
    model = onnx.load(str(engine))
    for value in (*model.graph.input[:1], *model.graph.output[:1]):
        value.type.tensor_type.shape.dim[0].dim_value = batch
    next(p for p in model.metadata_props if p.key == "ddpg.batch").value = json.dumps([batch] * 3)
    onnx.save(model, str(out))
    return out


def test_fixed_batch_engine_gets_its_last_tile_call_padded(ddpm_engine, small_prior, tmp_path):
    """4 tiles per step through an engine fixed at batch 3: a call of 3, then 1 tile padded to 3 (the engine
    refuses any other batch), blended as the torch backend's tiles are."""
    _, prior = small_prior
    den = make_denoiser("onnxruntime", engine=fixed_batch_copy(ddpm_engine, tmp_path / "b3.onnx", 3))
    with pytest.raises(EngineError, match="exported for batch 3, got batch 1"):
        den(torch.zeros(1, 3, TILE, TILE), torch.zeros(1))
    ref, _ = tiled_run(as_denoiser(prior), 16)
    got, tiled = tiled_run(den, 3)
    assert tiled.fixed_batch and tiled.tile_calls == 4 * STEPS  # padding rows not counted
    assert rel_err(got, ref) < RUN_TOL


def restored(out, name="a"):
    return np.asarray(Image.open(out / f"{name}_restored.png"), dtype=np.int32)


@pytest.fixture(scope="module")
def photo_and_twin(small_prior, tmp_path_factory):
    """A 56×56 photo and its torch-backend restoration with --tile 32 (16-bit PNG) and sidecar."""
    config, _ = small_prior
    root = tmp_path_factory.mktemp("tiles_api")
    (root / "in").mkdir()
    save_image(torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)), root / "in" / "a.png")
    (root / "ddpm_small.yaml").write_text(json.dumps(config))  # JSON is YAML
    report = api.restore([root / "in" / "a.png"], root / "torch", prior=str(root / "ddpm_small.yaml"),
                         checkpoint=str(CHECKPOINT), task="sr4", steps=STEPS, seed=1, tile=str(TILE),
                         tile_overlap=OVERLAP, bits=16, threads=1)
    assert report.exit_code == 0, report.failed
    return root, json.loads((root / "torch" / "a.json").read_text())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_restore_with_tiles_through_the_backend_equals_its_torch_twin(backend, engines, photo_and_twin):
    root, twin = photo_and_twin
    out = root / backend
    report = api.restore([root / "in" / "a.png"], out, backend=backend, engine=str(engine_of(engines, backend)),
                         task="sr4", steps=STEPS, seed=1, tile=str(TILE), tile_overlap=OVERLAP, bits=16, threads=1)
    assert report.exit_code == 0, report.failed
    meta = json.loads((out / "a.json").read_text())
    assert meta["prior"]["backend"] == backend and meta["method"] == twin["method"] == "ddpg"
    assert meta["hyper"] == twin["hyper"]
    tiling = meta["tiling"]
    assert tiling["tiled"] and tiling["reason"] == f"--tile {TILE}" and tiling["grid"] == [2, 2]
    assert tiling["tiles"] == 4 and tiling["starts"] == {"y": [0, 24], "x": [0, 24]}
    assert tiling["tile_batch"] == 4 and twin["tiling"]["tile_batch"] == 16  # the engine's largest batch
    got, ref = restored(out), restored(root / "torch")
    assert got.shape == (SIZE, SIZE, 3) and np.abs(got - ref).max() <= PNG16_TOL


def test_a_tile_the_engine_cannot_run_is_refused_before_any_input(ddpm_engine, tmp_path):
    with pytest.raises(ParameterError, match="the engine runs 32×32 tiles only"):
        api.restore([tmp_path / "missing.png"], tmp_path / "o", backend="onnxruntime", engine=str(ddpm_engine),
                    tile="64")
    assert not (tmp_path / "o").exists()


# --- TensorRT: the real bindings over a fake engine (no TensorRT or GPU here) --------------------------------------

TRT_TILE, TRT_SIDE, TRT_OVERLAP = 8, 20, 2  # 20 = 8 + 2·6: three tiles a side, 9 per image


def trt_engine_denoiser(monkeypatch, batch: tuple[int, int, int], cuda_graph: bool):
    """A TensorRTDenoiser on the real bindings and CUDA-stream code, over a fake engine of 8-px images computing
    eps = 0.5·x + t (``fake_trt_engine``), batch profile ``batch`` (min, opt, max), with the EngineInfo such an
    export carries. In CUDA-graph mode a replay re-runs the captured enqueue. Returns (denoiser, engine)."""
    import contextlib

    from ddpg.engine_metadata import BatchProfile, EngineInfo
    from ddpg.engine_sidecar import ShapeProfile
    from ddpg.runtime.backends.cuda_stream import SideStream
    from ddpg.runtime.backends.tensorrt import Bindings, EngineShapes, TensorRTDenoiser
    from fake_cuda import fake_cuda
    from fake_trt_engine import FakeEngine, fake_trt

    fake_cuda(monkeypatch, [])
    trt = fake_trt()
    engine = FakeEngine(trt, profiles=1)

    class Graph:  # the captured work is the engine's enqueue: a replay runs it again
        def replay(self):
            engine.contexts[0].execute_async_v3(77)  # the recording execute bound below

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", lambda *a, **k: contextlib.nullcontext())
    lo, opt, hi = batch
    shape = {"x": tuple((b, 3, TRT_TILE, TRT_TILE) for b in batch), "t": tuple((b,) for b in batch)}
    side = SideStream(torch.device("cpu"))
    bindings = Bindings(trt, engine, EngineShapes([ShapeProfile.from_mapping(shape)], "e.plan"), side.device,
                        lambda: side.handle, side.synchronize)
    den = TensorRTDenoiser.from_bindings(bindings, side, cuda_graph=cuda_graph)
    context = engine.contexts[0]
    context.buffers, execute = bindings.slots[0].buffers, context.execute_async_v3

    def execute_recording_batch(stream_handle):  # the batch of every engine execution, in engine.batches
        engine.batches.append(context.input_shapes["x"][0])
        return execute(stream_handle)

    context.execute_async_v3, engine.batches = execute_recording_batch, []
    den.info = EngineInfo(source="e.plan", prior=None, config={}, schedule_config={}, precision="fp32", opset=20,
                          batch=BatchProfile(lo, opt, hi), size=(TRT_TILE, TRT_TILE), inputs=("x", "t"),
                          checkpoint="", checkpoint_sha256="", versions={}, raw={})
    return den, engine


@pytest.mark.parametrize("batch, cuda_graph, calls", [((1, 2, 4), False, [4, 4, 4, 4, 2]),
                                                      ((4, 4, 4), True, [4] * 7)])
def test_tensorrt_engine_runs_the_tile_stream_at_its_batch(monkeypatch, batch, cuda_graph, calls):
    """Two 20×20 images at different timesteps through the tile policy restore uses for an engine: tiles at the
    engine's export size (8 px), in calls of its largest batch (18 tiles: 4+4+4+4+2 for a dynamic 1..4 engine; a
    fixed-batch-4 engine in its own CUDA graph gets its last call padded to 4: 5 replays after the first call's
    warm-up and capture). The fake engine is pointwise, so the blended output must be 0.5·x + t of each image
    exactly as untiled: each tile got its own image's timestep and the weights sum to one."""
    from ddpg.api.denoisers import engine_batch_profile
    from ddpg.api.tiling import engine_tile_side, tile_policy, tiled_denoiser

    den, engine = trt_engine_denoiser(monkeypatch, batch, cuda_graph)
    policy = tile_policy("auto", TRT_OVERLAP, None, 1, engine_tile_side(den))
    tiled = tiled_denoiser(den, policy, engine_batch_profile(den))
    assert (tiled.tile, tiled.batch, tiled.fixed_batch) == (TRT_TILE, 4, cuda_graph)
    x = torch.randn(2, 3, TRT_SIDE, TRT_SIDE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3.0, 5.0])
    eps = tiled(x, t)
    torch.testing.assert_close(eps, 0.5 * x + t[:, None, None, None], rtol=0, atol=2e-6)
    assert engine.batches == calls
    assert tiled.tile_calls == 18


# --- The whole-step runner (CUDA graphs on a GPU) over tiles ------------------------------------------------------

def tiled_runs(small_prior, device: str, cuda_graph: bool) -> tuple[torch.Tensor, torch.Tensor, GraphRunner]:
    """Two 56×56 images, DDPG SR×4 (FFT, σ_y 0.05), 4 steps, the UNet over 32-px tiles (overlap 8) in calls of 4:
    (the Restorer's loop, the whole-step runner with ``cuda_graph``, the runner) on the same seeds."""
    tiled = TiledDenoiser(as_denoiser(small_prior[1].to(device)), TILE, OVERLAP, 4)
    op = make_operator("sr4", SIZE, impl="fft").to(device)
    plain = Restorer(tiled, op, sigma_y=0.05, steps=STEPS)
    runner = GraphRunner.from_restorer(plain, cuda_graph=cuda_graph)
    seeds = [5, 6]
    with torch.no_grad():
        y = plain.degrade(torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1,
                          seeds)
        return plain.restore(y, seeds), runner.restore(y, seeds), runner


def test_whole_step_runner_drives_the_tiles_as_the_restorer_does(small_prior):
    """The runner behind --cuda-graph, on its eager path (CPU), over a TiledDenoiser: the Restorer's output bit
    for bit, 4 steps × 2 images × 4 tiles through the tiled UNet."""
    loop, runner_out, runner = tiled_runs(small_prior, "cpu", cuda_graph=False)
    assert torch.equal(runner_out, loop)
    assert runner.denoiser.tile_calls == 2 * STEPS * 2 * 4  # the loop's and the runner's (one TiledDenoiser)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs)")
def test_whole_step_cuda_graph_captures_the_tiled_step(small_prior, monkeypatch):
    """On a GPU: the tiled step (cut, UNet calls, blend, whole-image guidance) captured in one CUDA graph equals
    the eager loop, and replays with new inputs give the same output."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    loop, graph_out, runner = tiled_runs(small_prior, "cuda", cuda_graph=True)
    assert runner.cuda_graph and any(b.graph is not None for b in runner.buffers.values())
    assert rel_err(graph_out, loop) < 1e-4  # cuDNN may pick other kernels inside the graph
