"""`ddpg restore` and `ddpg degrade` on tiny images with the Gaussian prior and a tiny random UNet:
outputs, sidecars, seeds, metrics, observed measurements, padding, batching, resuming, usage errors."""

import hashlib
import json
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ddpg import api
from ddpg.cli.main import app
from ddpg.io import load_image, load_measurement
from ddpg.metrics import psnr
from ddpg.models import create_prior
from ddpg.operators import make_operator

runner = CliRunner()
TINY_DDPM = {"kind": "ddpm", "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [],
             "image_size": 32}


def make_images(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        base = rng.integers(60, 200, (1, 1, 3))
        arr = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i}.png")
    return folder


def psnr_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR (dB) of two [0, 1] images: 10·log10(1 / mean squared difference)."""
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def ssim_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) of two (C, H, W) [0, 1] images: 11×11 Gaussian window σ 1.5 over the valid
    positions, K1 = 0.01, K2 = 0.03, per channel, averaged; written with scipy, independently of ddpg.metrics."""
    from scipy.signal import correlate

    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    scores = []
    for x, y in zip(a.astype(np.float64), b.astype(np.float64), strict=True):
        def f(v):
            return correlate(v, window, mode="valid")
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        scores.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    return float(np.mean(scores))


@pytest.fixture
def tiny_unet(tmp_path):
    """A random-weight tiny DDPM as (prior YAML, checkpoint) files."""
    ckpt = tmp_path / "tiny.pt"
    torch.save(create_prior(TINY_DDPM).state_dict(), ckpt)
    (tmp_path / "tiny.yaml").write_text(json.dumps(TINY_DDPM))  # JSON is valid YAML
    return tmp_path / "tiny.yaml", ckpt


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "in", [(32, 32)] * 3)


def test_restore_writes_images_and_sidecars_whose_metrics_match(images, tmp_path):
    out = tmp_path / "out"
    start = time.perf_counter()
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(out), "--task", "deblur_gauss",
                              "--steps", "5", "--sigma-y", "0.05", "--seed", "7", "-q"])
    elapsed = time.perf_counter() - start
    assert res.exit_code == 0, res.output
    assert "3 restored, 0 skipped, 0 failed" in res.output
    for i in range(3):
        meta = json.loads((out / f"img{i}.json").read_text())
        assert (meta["seed"], meta["base_seed"], meta["index"]) == (7 + i, 7, i)
        assert meta["preset"] == "ddpg/gaussian/deblur_gauss/0.05" and meta["steps"] == 5
        assert meta["operator"]["name"] == "deblur_gauss" and meta["sigma_y"] == 0.05
        assert meta["prior"]["name"] == "gaussian" and meta["versions"]["torch"] == torch.__version__
        assert meta["timings_s"]["restore_per_image"] > 0
        assert meta["timings_s"]["images_in_batch"] == 1  # a count among the times
        for name, seconds in meta["timings_s"].items():  # the times are bounded by the clock read around the run
            assert name == "images_in_batch" or 0 <= seconds <= elapsed, name
        operator = meta["operator"]
        assert (operator["kernel_size"], operator["sigma"], operator["impl"]) == (5, 10.0, "fft")
        restored, gt = load_image(out / f"img{i}_restored.png").numpy(), load_image(images / f"img{i}.png").numpy()
        # the sidecar scores the float restoration, the direct computation (written here) its 8-bit PNG
        assert meta["metrics"]["psnr"] == pytest.approx(psnr_by_hand(restored, gt), abs=0.05)
        assert meta["metrics"]["ssim"] == pytest.approx(ssim_by_hand(restored, gt), abs=0.01)
        assert load_image(out / f"img{i}_observed.png").shape == (3, 32, 32)
        assert meta["outputs"] == {"restored": f"img{i}_restored.png", "observed": f"img{i}_observed.png"}
        # the baseline is Tikhonov (η = 1e-2) of the measurement, here recomputed from the 8-bit observed PNG
        assert meta["metrics"]["baseline"] == "tikhonov (eta=0.01)"
        y = load_image(out / f"img{i}_observed.png")[None] * 2 - 1
        tik = ((make_operator("deblur_gauss", 32).pinv_eta(y, 1e-2) + 1) / 2).clamp(0, 1)[0].numpy()
        assert meta["metrics"]["baseline_psnr"] == pytest.approx(psnr_by_hand(tik, gt), abs=0.1)
    assert not list(out.glob(".*"))
    # no ground-truth copy without --resize (the input is the ground truth)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"img{i}{s}" for i in range(3)
                                                           for s in (".json", "_observed.png", "_restored.png"))


def test_restored_png_is_the_restorers_output(images, tmp_path):
    """The CLI's image is the Restorer's restoration of the same degraded input with the image's seed (preset
    ddpg/gaussian/deblur_gauss/0.05), mapped from [-1, 1] to [0, 1] and rounded to 8 bits."""
    from ddpg.models import as_denoiser
    from ddpg.runtime import Restorer, load_preset

    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "img0.png"), "-o", str(out), "--task",
                              "deblur_gauss", "--steps", "5", "--sigma-y", "0.05", "--seed", "7", "-q"])
    assert res.exit_code == 0, res.output
    r = Restorer(as_denoiser(create_prior("gaussian")), make_operator("deblur_gauss", 32), method="ddpg",
                 sigma_y=0.05, steps=5, hyper=load_preset("ddpg/gaussian/deblur_gauss/0.05").hyper)
    x = load_image(images / "img0.png")[None] * 2 - 1
    with torch.no_grad():
        expected = ((r.restore(r.degrade(x, [7]), [7])[0] + 1) / 2).clamp(0, 1)
    assert (load_image(out / "img0_restored.png") - expected).abs().max() <= 0.5 / 255 + 1e-6
    report = api.restore([images / "img1.png"], tmp_path / "api", prior="gaussian", task="deblur_gauss", steps=1)
    assert report.done == [str(tmp_path / "api" / "img1_restored.png")]  # the report names the written image


def test_sidecar_metrics_of_the_smallest_images(tmp_path):
    """SSIM's 11×11 window fits an 11-pixel image (scored) but not a 10-pixel one (left out); PSNR always."""
    small = make_images(tmp_path / "in", [(11, 12), (10, 12)])
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(small), "-o", str(out), "--task", "deblur_gauss",
                              "--steps", "2", "--sigma-y", "0.05", "-q"])
    assert res.exit_code == 0, res.output
    fits, too_small = (json.loads((out / f"img{i}.json").read_text())["metrics"] for i in range(2))
    restored, gt = load_image(out / "img0_restored.png").numpy(), load_image(small / "img0.png").numpy()
    assert fits["ssim"] == pytest.approx(ssim_by_hand(restored, gt), abs=0.01)
    assert "ssim" not in too_small and "psnr" in too_small


def test_resized_inputs_keep_their_ground_truth_beside_the_restoration(tmp_path):
    """--resize: the centre-cropped, resized input is the ground truth the metrics use; it is written too."""
    src = make_images(tmp_path / "in", [(20, 24)])
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(src), "-o", str(out), "--task", "deblur_gauss",
                              "--steps", "2", "--resize", "--size", "16", "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "img0.json").read_text())
    assert meta["outputs"]["ground_truth"] == "img0_gt.png"
    gt, restored = load_image(out / "img0_gt.png").numpy(), load_image(out / "img0_restored.png").numpy()
    assert gt.shape == restored.shape == (3, 16, 16)
    assert meta["metrics"]["psnr"] == pytest.approx(psnr_by_hand(restored, gt), abs=0.05)
    # an observed input has no ground truth, and --resize leaves it as it is
    obs = make_images(tmp_path / "obs", [(8, 8)])
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(obs), "-o", str(tmp_path / "o"), "--observed",
                              "--task", "sr4", "--steps", "2", "--resize", "--size", "16", "-q"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["img0.json", "img0_observed.png",
                                                                  "img0_restored.png"]
    assert load_image(tmp_path / "o" / "img0_restored.png").shape == (3, 32, 32)


def test_degrade_then_observed_restore_equals_restoring_the_clean_image(images, tmp_path):
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "img0.png"), "-o", str(tmp_path / "a"),
                              "--task", "sr4", "--steps", "5", "--seed", "3", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["degrade", str(images / "img0.png"), "-o", str(tmp_path / "obs"), "--task", "sr4",
                              "--sigma-y", "0.05", "--seed", "3", "--format", "npy", "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "obs" / "img0_observed.json").read_text())
    assert meta["task"] == "sr4" and meta["seed"] == 3 and meta["sigma_y"] == 0.05
    y = load_measurement(tmp_path / "obs" / "img0_observed.npy")
    assert y.shape == (3, 8, 8) and meta["measurement_shape"] == [3, 8, 8]
    shown = load_image(tmp_path / "obs" / "img0_observed.png")
    assert (shown - ((y + 1) / 2).clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6
    # task, σ_y and operator come from the metadata; the seed is the same → the same restoration
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(tmp_path / "obs"), "-o", str(tmp_path / "b"),
                              "--observed", "--steps", "5", "--seed", "3", "-q"])
    assert res.exit_code == 0, res.output
    assert torch.equal(load_image(tmp_path / "a" / "img0_restored.png"),
                       load_image(tmp_path / "b" / "img0_restored.png"))
    side = json.loads((tmp_path / "b" / "img0.json").read_text())
    assert side["input_kind"]["kind"] == "observed" and "metrics" not in side
    # an observed PNG (a "real" low-resolution photo) restores to 4× its size
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(tmp_path / "obs" / "img0_observed.png"), "-o",
                              str(tmp_path / "c"), "--observed", "--task", "sr4", "--steps", "3", "-q"])
    assert res.exit_code == 0, res.output
    assert load_image(tmp_path / "c" / "img0_restored.png").shape == (3, 32, 32)


def test_tiny_unet_checkpoint_native_size_padding_and_16bit(tmp_path, tiny_unet):
    images = make_images(tmp_path / "in", [(30, 42)])
    yaml_path, ckpt = tiny_unet
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", str(images), "-o", str(out), "--prior", str(yaml_path),
                              "--checkpoint", str(ckpt), "--method", "idpg", "--task", "sr4", "--steps", "4",
                              "--bits", "16"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "img0.json").read_text())
    assert meta["method"] == "idpg" and meta["operator"]["padded_to"] == [32, 48]  # multiples of lcm(8, 4)
    assert meta["prior"]["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert load_image(out / "img0_restored.png").shape == (3, 30, 42)  # cropped back
    assert (out / "img0_restored.png").read_bytes()[24] == 16  # PNG bit depth
    # a checkpoint alone must match a known prior's architecture
    res = runner.invoke(app, ["restore", str(images), "-o", str(out), "--checkpoint", str(ckpt)])
    assert res.exit_code == 2 and "matches no known prior" in res.output


def test_batches_equal_single_runs_and_skip_existing_resumes(images, tmp_path):
    one = api.restore([images], tmp_path / "one", prior="gaussian", task="sr4", steps=4, batch_size=1)
    three = api.restore([images], tmp_path / "three", prior="gaussian", task="sr4", steps=4, batch_size=3)
    assert one.exit_code == three.exit_code == 0
    for i in range(3):
        assert torch.equal(load_image(tmp_path / "one" / f"img{i}_restored.png"),
                           load_image(tmp_path / "three" / f"img{i}_restored.png"))
    api.restore([images / "img0.png"], tmp_path / "r", prior="gaussian", steps=3)
    report = api.restore([images], tmp_path / "r", prior="gaussian", steps=3, skip_existing=True)
    assert report.skipped == [str(images / "img0.png")] and len(report.done) == 2


def test_task_options_motion_kernel_seed_and_masks(tmp_path):
    images = make_images(tmp_path / "in", [(64, 64), (64, 64)])
    report = api.restore([images], tmp_path / "m", prior="gaussian", task="deblur_motion", steps=3)
    assert report.exit_code == 0, report.failed
    seeds = [json.loads((tmp_path / "m" / f"img{i}.json").read_text())["operator"]["seed"] for i in range(2)]
    assert seeds == [0, 10]  # the reference: image i uses kernel seed 10·i
    report = api.restore([images / "img0.png"], tmp_path / "i", prior="gaussian", task="inpaint", mask="random:0.3",
                         steps=3)
    meta = json.loads((tmp_path / "i" / "img0.json").read_text())
    assert report.exit_code == 0 and abs(meta["operator"]["kept"] / 64**2 - 0.7) < 0.05


@pytest.mark.parametrize("args, message", [
    (["--task", "sr3"], "unknown task"),
    (["--preset", "ddpg/nope/sr4/0"], "unknown preset"),
    (["--bits", "12"], "--bits 12: must be 8 or 16"),
    (["--backend", "tensorrt", "--engine", "ENGINE"], "backend 'tensorrt' not available"),
    (["--backend", "onnxruntime"], "needs an engine file"),
    (["--resize"], "--resize True: needs a size"),
    (["--mask", "nofile.png"], "--mask nofile.png: file not found"),
    (["--device", "cuda:99"], "--device cuda:99"),
    (["--steps", "2000"], "exceeds the prior's 1000 diffusion steps"),
    (["--hyper", "zeta"], "--hyper zeta: expected KEY=VALUE"),
    (["--hyper", "lam=2"], "lam: not a hyper-parameter of ddpg"),
    (["--operator", "sigma"], "--operator sigma: expected KEY=VALUE"),
    (["--task", "deblur_gauss", "--operator", "scale=2"], "scale: not a parameter of the deblur_gauss operator"),
    (["--operator", "impl=dct"], "--operator impl=dct: sr_bicubic: impl must be 'svd' or 'fft'"),
    (["--method", "idpg", "--select-candidates"], "--select-candidates True: chooses DDPG's injected noise"),
    (["--cuda-graph"], "--cuda-graph True: needs a CUDA device"),
    (["--precision", "fp8"], "--precision fp8: choose one of"),
    (["--backend", "onnxruntime", "--engine", "ENGINE", "--precision", "fp16"],
     "--precision fp16: applies to the torch backend"),
])
def test_usage_errors_exit_2(images, tmp_path, args, message):
    if "tensorrt" in args:
        try:
            import tensorrt  # noqa: F401
            pytest.skip("TensorRT is installed here")
        except ImportError:
            pass
    (tmp_path / "engine.plan").write_bytes(b"not an engine")
    args = [str(tmp_path / "engine.plan") if a == "ENGINE" else a for a in args]
    prior = [] if "--backend" in args else ["--prior", "gaussian"]  # an engine names its own
    res = runner.invoke(app, ["restore", *prior, str(images), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "o").exists()


def test_hyper_overrides_and_candidate_selection_reach_the_sampler(images, tmp_path):
    common = ["restore", "--prior", "gaussian", str(images / "img0.png"), "--task", "deblur_gauss", "--steps", "4",
              "-q"]
    runs = {"plain": [], "zeta": ["--hyper", "zeta=0.9", "--hyper", "step_size_mode=0"],
            "select": ["--select-candidates"]}
    out = {}
    for name, extra in runs.items():
        res = runner.invoke(app, [*common, "-o", str(tmp_path / name), *extra])
        assert res.exit_code == 0, res.output
        out[name] = (json.loads((tmp_path / name / "img0.json").read_text())["hyper"],
                     load_image(tmp_path / name / "img0_restored.png"))
    preset_hyper = out["plain"][0]
    assert out["zeta"][0] == {**preset_hyper, "zeta": 0.9, "step_size_mode": 0}
    assert out["select"][0] == {**preset_hyper, "select_candidates": True}
    for name in ("zeta", "select"):  # the overrides change the restoration, not only the sidecar
        assert not torch.equal(out[name][1], out["plain"][1]), name


def test_onnx_engine_restore_records_the_engine_and_checks_the_preset(ddpm_engine, tmp_path):
    """An ONNX engine's metadata names its prior: a preset for another prior is refused before any input is
    read; without a preset the engine's prior and source checkpoint are recorded."""
    import onnx

    images = make_images(tmp_path / "in", [(32, 32)])
    base = ["restore", str(images), "--backend", "onnxruntime", "--task", "sr4", "--steps", "3", "-q"]
    res = runner.invoke(app, [*base, "--engine", str(ddpm_engine), "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "a" / "img0.json").read_text())
    assert meta["prior"]["backend"] == "onnxruntime" and meta["prior"]["precision"] == "fp32"
    assert meta["prior"]["checkpoint"].endswith("ddpm_small.pt") and len(meta["prior"]["checkpoint_sha256"]) == 64
    assert meta["preset"] == "ddpg/celeba_hq/sr4/0.05"  # an unnamed DDPM takes the CelebA-HQ rows

    res = runner.invoke(app, [*base, "--engine", str(ddpm_engine), "--preset", "ddpg/face64/sr4/0.05",
                              "-o", str(tmp_path / "b")])
    assert res.exit_code == 2 and "custom (unnamed) prior but the preset needs prior 'face64'" in res.output
    assert not (tmp_path / "b").exists()

    model = onnx.load(str(ddpm_engine))  # the same graph, labelled as face64
    next(p for p in model.metadata_props if p.key == "ddpg.prior").value = "face64"
    named = tmp_path / "named.onnx"
    onnx.save(model, str(named))
    res = runner.invoke(app, [*base, "--engine", str(named), "--preset", "ddpg/face64/sr4/0.05",
                              "-o", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "c" / "img0.json").read_text())["prior"]["spec"] == "face64"
    res = runner.invoke(app, [*base, "--engine", str(named), "--preset", "ddpg/ffhq256/sr4/0.05",
                              "-o", str(tmp_path / "d")])
    assert res.exit_code == 2 and "holds 'face64' but the preset needs prior 'ffhq256'" in res.output


def test_low_precision_unet_stays_close_to_fp32_and_is_recorded(tmp_path, tiny_unet):
    """--precision bf16 (the CPU's low-precision type) runs the UNet torso in bf16, the guidance in fp32."""
    images = make_images(tmp_path / "in", [(32, 32)])
    yaml_path, ckpt = tiny_unet
    restored = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        res = runner.invoke(app, ["restore", str(images), "-o", str(out), "--prior", str(yaml_path),
                                  "--checkpoint", str(ckpt), "--task", "deblur_gauss", "--steps", "4",
                                  "--precision", precision, "-q"])
        assert res.exit_code == 0, res.output
        assert json.loads((out / "img0.json").read_text())["speed"]["precision"] == precision
        restored[precision] = load_image(out / "img0_restored.png")
    assert not torch.equal(restored["fp32"], restored["bf16"])  # really another precision
    assert psnr(restored["bf16"], restored["fp32"]) > 30


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_restore_equals_the_eager_restore(tmp_path, tiny_unet):
    """--cuda-graph replays each whole DDPG step from one CUDA graph: same outputs as the eager sampler."""
    images = make_images(tmp_path / "in", [(32, 32)] * 2)
    yaml_path, ckpt = tiny_unet
    common = dict(prior=str(yaml_path), checkpoint=str(ckpt), task="deblur_gauss", steps=6,
                  device="cuda", batch_size=2)
    assert api.restore([images], tmp_path / "eager", **common).exit_code == 0
    assert api.restore([images], tmp_path / "graph", cuda_graph=True, **common).exit_code == 0
    for i in range(2):
        eager = load_image(tmp_path / "eager" / f"img{i}_restored.png")
        graph = load_image(tmp_path / "graph" / f"img{i}_restored.png")
        assert (eager - graph).abs().max() <= 1 / 255 + 1e-6  # at most one 8-bit level (TF32/cuDNN choices)


def test_graph_runners_are_capped_and_the_least_recently_used_is_released(tmp_path, monkeypatch):
    """--cuda-graph keeps one whole-step runner per operator and σ_y; past MAX_GRAPH_RUNNERS the least recently
    used one releases its graphs (runners faked: CUDA graphs need a GPU)."""
    from ddpg.api import restoration
    from ddpg.api.denoisers import make_denoiser
    from ddpg.api.settings import resolve_settings
    from ddpg.runtime.graph_runner import GraphRunner

    class FakeRunner:
        def __init__(self, size):
            self.size = size

        def release(self):
            released.append(self.size)

        def restore(self, y, seeds, callback=None):
            return y

    released, made = [], []

    def from_restorer(cls, restorer, **options):
        made.append(restorer.operator.img_size)
        return FakeRunner(restorer.operator.img_size)

    monkeypatch.setattr(GraphRunner, "from_restorer", classmethod(from_restorer))
    sizes = [(8 + 2 * i, 8 + 2 * i) for i in range(restoration.MAX_GRAPH_RUNNERS + 2)]
    folder = make_images(tmp_path / "in", sizes)
    plan = api.RestorePlan(request=api.RestoreRequest(prior="gaussian", inputs=(folder,), outdir=tmp_path / "out"),
                           settings=resolve_settings("deblur_gauss", None, None, "gaussian", None, 2),
                           denoiser=make_denoiser("gaussian", None, "torch", None, "cpu"), record={}, step_graph=True)
    order = [0, 1, 2, 3, 0, 4, 5, 0]  # image 0 is used again before it would be evicted
    jobs = [api.prepare_input(plan, i, folder / f"img{i}.png") for i in order]
    assert made == [sizes[i] for i in (0, 1, 2, 3, 4, 5)]  # image 0's runner was reused, not rebuilt
    assert released == [sizes[1], sizes[2]]  # least recently used first; image 0's survived
    assert list(k[0][1] for k in plan.runners) == [sizes[3], sizes[4], sizes[5], sizes[0]]
    assert all(job.sampler.__self__.size == job.padded for job in jobs)


def test_cudnn_autotune_is_scoped_to_the_call():
    from ddpg.api.restoration import cudnn_autotune

    before = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        with pytest.raises(KeyboardInterrupt), cudnn_autotune(True):
            assert torch.backends.cudnn.benchmark
            raise KeyboardInterrupt
        assert torch.backends.cudnn.benchmark is False
        torch.backends.cudnn.benchmark = True  # a caller's own setting is never turned off
        with cudnn_autotune(False):
            assert torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before


@pytest.mark.parametrize("method", ["ddpg", "dps"])
def test_the_sample_writes_its_grid_for_every_kind_of_method(tmp_path, method):
    """`restore --sample` draws the grid's observation without a denoiser, so a method that needs the UNet's
    gradient (DPS) exits 0 with its grid too (it used to fail after restoring)."""
    res = runner.invoke(app, ["restore", "--sample", "-o", str(tmp_path), "--method", method, "--steps", "2", "-q"])
    assert res.exit_code == 0, res.output
    grid = load_image(tmp_path / "astronaut_face64_grid.png")
    restored = load_image(tmp_path / "astronaut_face64_restored.png")
    h, w = restored.shape[1:]
    assert grid.shape[1] >= h and grid.shape[2] >= 4 * w  # ground truth, observation, baseline, restoration


def test_sr_sidecar_scores_the_bicubic_baseline(images, tmp_path):
    """SR×4: the sidecar's baseline is bicubic upsampling of the measurement, here recomputed from the 8-bit
    observed PNG with torch's block-centred bicubic interpolation (the SVD operator averages each 4×4 block
    about its centre)."""
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "img0.png"), "-o", str(out), "--task",
                              "sr4", "--steps", "2", "-q"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "img0.json").read_text())
    assert meta["metrics"]["baseline"] == "bicubic"
    y = load_image(out / "img0_observed.png")[None] * 2 - 1
    up = torch.nn.functional.interpolate(y, size=(32, 32), mode="bicubic", align_corners=False)
    expected = psnr_by_hand(((up + 1) / 2).clamp(0, 1)[0].numpy(), load_image(images / "img0.png").numpy())
    # measured 0.002 dB apart (the sidecar scores the float measurement); Tikhonov's is 0.2 dB off
    assert meta["metrics"]["baseline_psnr"] == pytest.approx(expected, abs=0.02)


def test_operator_option_builds_the_measurement_and_resume_notices_it(images, tmp_path):
    """--operator replaces the preset's operator (the rest at the paper defaults): the measurement is the one
    make_operator builds, the sidecar records it, and --skip-existing refuses outputs of another operator."""
    src = images / "img0.png"
    base = ["restore", "--prior", "gaussian", str(src), "--task", "deblur_gauss", "--method", "dps", "--steps", "2",
            "--sigma-y", "0", "-q"]
    out = tmp_path / "o"
    res = runner.invoke(app, [*base, "-o", str(out), "--operator", "sigma=1.5", "--operator", "kernel_size=7"])
    assert res.exit_code == 0, res.output
    sidecar = json.loads((out / "img0.json").read_text())
    assert {k: sidecar["operator"][k] for k in ("name", "kernel_size", "sigma", "impl")} == {
        "name": "deblur_gauss", "kernel_size": 7, "sigma": 1.5, "impl": "fft"}  # dps's preset: 25×25 σ 3
    assert sidecar["settings"]["operator"] == {"task": "deblur_gauss", "sigma": 1.5, "kernel_size": 7}
    # the observed PNG (σ_y 0) is this operator's measurement of the image, up to 8-bit rounding
    clean = load_image(src)[None] * 2 - 1
    observed = load_image(out / "img0_observed.png")[None] * 2 - 1
    wanted = make_operator("deblur_gauss", 32, sigma=1.5, kernel_size=7).A(clean)
    presets = make_operator("deblur_gauss", 32, sigma=3.0, kernel_size=25).A(clean)
    assert (observed - wanted).abs().max() <= 1.01 / 255 < 4 / 255 < (observed - presets).abs().max()
    res = runner.invoke(app, [*base, "-o", str(out), "--operator", "sigma=2.5", "--skip-existing"])
    assert res.exit_code == 1 and "other settings" in res.output and "operator" in res.output, res.output
    res = runner.invoke(app, [*base, "-o", str(out), "--operator", "sigma=1.5", "--operator", "kernel_size=7",
                              "--skip-existing"])
    assert res.exit_code == 0 and "1 skipped" in res.output, res.output
