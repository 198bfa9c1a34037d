"""`ddpg restore` never clobbers a user's files and one bad input never stops a batch: inputs and
outputs kept apart, hostile and huge images refused per image, the memory guard, non-finite restorations,
same-stem inputs, the output folder checked first, --skip-existing against changed settings, the umask,
validation before any work (exit 2), the odds and ends (--version, completion, random-bytes checkpoints) and
downloads checked against the prior's manifest and their recorded sha256."""

import functools
import http.server
import json
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import ddpg
import ddpg.api.restoration as restoration
from conftest import FIXTURES
from ddpg import api
from ddpg.cli.main import app
from ddpg.errors import CheckpointError, ConfigError, ParameterError
from ddpg.io import DEFAULT_MAX_PIXELS
from ddpg.models import checkpoints

runner = CliRunner()


def make_images(folder: Path, sizes, names=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        name = names[i] if names else f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def png_header_only(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` followed by a tiny IDAT and IEND (a decompression bomb's
    header without its payload)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture
def images(tmp_path):
    return make_images(tmp_path / "in", [(32, 32)] * 3)


# ------------------------------------------------------------------------------------- 1. inputs vs outputs


def test_output_folder_that_is_an_input_folder_is_refused_before_any_work(images):
    before = snapshot(images)
    (images / "photo_observed.png").write_bytes((images / "img0.png").read_bytes())
    before = snapshot(images)
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(images), "--steps", "2", "-q"])
    assert res.exit_code == 2 and "-o/--outdir" in res.output and "holds inputs of this run" in res.output
    # an input file named inside the output folder, as well
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "photo_observed.png"), "-o", str(images),
                              "--observed", "-q"])
    assert res.exit_code == 2 and "holds inputs of this run" in res.output
    assert snapshot(images) == before


def test_a_users_file_in_the_output_folder_is_never_overwritten(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img1_restored.png").write_bytes(b"the user's own picture")
    (out / "img2.json").write_text('{"mine": true}')
    report = api.restore([images], out, prior="gaussian", steps=2)
    assert report.done == [str(out / "img0_restored.png")]
    failed = dict(report.failed)
    assert "img1_restored.png exists and no restoration sidecar names it" in failed[str(images / "img1.png")]
    assert "never overwritten" in failed[str(images / "img2.png")]
    assert (out / "img1_restored.png").read_bytes() == b"the user's own picture"
    assert json.loads((out / "img2.json").read_text()) == {"mine": True}
    assert report.exit_code == 1


def test_own_outputs_are_not_read_back_as_inputs_and_a_rerun_replaces_its_own(images, tmp_path):
    first = tmp_path / "first"
    assert api.restore([images], first, prior="gaussian", steps=2).exit_code == 0
    make_images(first, [(32, 32)], names=["extra.png"])  # a new clean image among the outputs
    second = api.restore([first], tmp_path / "second", prior="gaussian", steps=2)
    assert second.done == [str(tmp_path / "second" / "extra_restored.png")] and second.failed == []
    # the same settings again into the same folder: ddpg's own outputs are replaced, byte for byte the same
    before = snapshot(first)
    again = api.restore([images], first, prior="gaussian", steps=2)
    assert again.exit_code == 0 and len(again.done) == 3
    after = snapshot(first)
    for name in ("img0_restored.png", "img0_observed.png", "img2_restored.png"):
        assert after[name] == before[name]


# ------------------------------------------------------------------------------- 2. hostile and huge images


def test_hostile_and_huge_images_fail_alone(images, tmp_path):
    (images / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (images / "bomb16.png").write_bytes(png_header_only(60_000, 60_000, depth=16))
    (images / "random.tif").write_bytes(np.random.default_rng(1).bytes(2000))
    report = api.restore([images], tmp_path / "out", prior="gaussian", steps=2)
    failed = dict(report.failed)
    assert "10,000,000,000 pixels is more than the limit of 33,554,432" in failed[str(images / "bomb.png")]
    assert "60000×60000" in failed[str(images / "bomb16.png")]
    assert "cannot read image" in failed[str(images / "random.tif")]
    assert len(report.done) == 3 and report.exit_code == 1


def test_max_pixels_applies_to_every_decoder_and_memory_errors_are_per_image(images, tmp_path, monkeypatch):
    arr = np.random.default_rng(0).integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    ddpg.io.save_image(torch.from_numpy(arr.astype(np.float32) / 65535).permute(2, 0, 1), images / "deep.png",
                       bits=16)
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(tmp_path / "out"),
                              "--max-pixels", "1000", "--steps", "2", "-q"])
    assert res.exit_code == 1 and res.output.count("more than the limit of 1,000") == 4, res.output
    assert "0 restored, 0 skipped, 4 failed" in res.output

    real = ddpg.io.images.decode_png16

    def out_of_memory(data, path, max_pixels):
        raise MemoryError

    monkeypatch.setattr(ddpg.io.images, "decode_png16", out_of_memory)  # as load_image calls it
    report = api.restore([images], tmp_path / "out2", prior="gaussian", steps=2)
    assert dict(report.failed)[str(images / "deep.png")].endswith("not enough memory to decode it)")
    assert len(report.done) == 3
    monkeypatch.setattr(ddpg.io.images, "decode_png16", real)
    assert DEFAULT_MAX_PIXELS == 2**25  # the default the --max-pixels help states


# ---------------------------------------------------------------------------------------- 3. memory guard


def test_an_image_too_large_for_the_prior_is_refused_before_sampling(tmp_path, monkeypatch):
    monkeypatch.setattr(restoration, "available_bytes", lambda device: 64 << 30)  # a 64 GiB machine, anywhere
    folder = make_images(tmp_path / "in", [(64, 64)])
    Image.fromarray(np.zeros((2048, 2048, 3), np.uint8)).save(folder / "huge.png")
    report = api.restore([folder], tmp_path / "out", prior="face64", steps=2, tile="off")  # auto would tile it
    why = dict(report.failed)[str(folder / "huge.png")]
    # face64's attention over 512×512 positions alone is 256 GiB per call (tiled: tests/test_tiling_sizes.py)
    assert "2048×2048 with the face64 prior at batch 1 needs about 1536.0 GiB, more than the 64.0 GiB free" in why
    assert "restore it resized (resize=True, size=N)" in why
    assert report.done == [str(tmp_path / "out" / "img0_restored.png")]


def test_memory_guard_compares_the_estimate_with_what_is_free(images, tmp_path, monkeypatch):
    monkeypatch.setattr(restoration, "available_bytes", lambda device: 2**20)  # 1 MiB free
    report = api.restore([images / "img0.png"], tmp_path / "out", prior="face64", steps=2, batch_size=2)
    why = dict(report.failed)[str(images / "img0.png")]
    assert "more than the 0.0 GiB free on cpu" in why and "or with a smaller batch_size" in why
    from ddpg.api.memory import restore_bytes as est
    from ddpg.models import prior_config

    face = prior_config("face64")
    assert est(face, 2, (64, 64), False) > est(face, 1, (64, 64), False)  # grows with the batch
    assert est(face, 1, (64, 64), True) > est(face, 1, (64, 64), False)  # autograd keeps the activations
    assert est(None, 1, (64, 64), False) is None  # no prior config: no estimate (the Gaussian prior's own is
    # tested in test_gaussian_memory.py)


# --------------------------------------------------------------------------------- 4. non-finite results


class NaNDenoiser:
    """The Gaussian prior's denoiser with NaN predictions (as a broken checkpoint gives)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x, t, *args, **kwargs):
        return self.inner(x, t, *args, **kwargs) * float("nan")


def test_a_non_finite_restoration_is_a_failure_and_nothing_is_written(images, tmp_path):
    from ddpg.api.denoisers import make_denoiser

    out = tmp_path / "out"
    report = api.restore([images], out, steps=2, denoiser=NaNDenoiser(make_denoiser("gaussian", None, "torch",
                                                                                      None, "cpu")))
    assert report.done == [] and len(report.failed) == 3 and report.exit_code == 1
    why = report.failed[0][1]
    assert "NaN or infinite values" in why and "prior's weights" in why and "hyper-parameters of ddpg" in why
    assert list(out.iterdir()) == []


def test_sidecars_stay_strict_json(tmp_path):
    ddpg.io.save_json({"psnr": float("inf"), "x": [float("nan"), 1.0]}, tmp_path / "a.json")

    def refuse(token):
        raise ValueError(token)

    assert json.loads((tmp_path / "a.json").read_text(), parse_constant=refuse) == {"psnr": None, "x": [None, 1.0]}


# ------------------------------------------------------------------------- 5–8. stems, folder, resume, umask


def test_two_inputs_of_one_stem_the_second_is_named_and_the_run_fails(tmp_path):
    folder = make_images(tmp_path / "in", [(32, 32), (32, 32)], names=["x.png", "x.jpg"])
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(folder), "-o", str(tmp_path / "out"), "--steps",
                              "2", "-q"])
    assert res.exit_code == 1
    assert "x.png: not restored: same output name 'x' as" in res.output and "x.jpg" in res.output
    assert "1 restored, 0 skipped, 1 failed" in res.output


def test_output_folder_is_checked_before_the_first_image(images, tmp_path, monkeypatch):
    loaded = []
    monkeypatch.setattr(restoration, "load_image", lambda *a: loaded.append(a))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="cannot write there") as info:
        api.restore([images], tmp_path / "file" / "out", prior="gaussian", steps=2)
    assert info.value.param == "outdir" and loaded == []


def test_skip_existing_compares_the_settings(images, tmp_path):
    out = tmp_path / "out"
    api.restore([images / "img0.png"], out, prior="gaussian", steps=2, sigma_y=0.05)
    same = api.restore([images / "img0.png"], out, prior="gaussian", steps=2, sigma_y=0.05, skip_existing=True)
    assert same.skipped == [str(images / "img0.png")]
    before = snapshot(out)
    for changes, words in [({"steps": 3}, "steps 2 there, 3 now"), ({"seed": 5}, "seed 0 there, 5 now"),
                           ({"sigma_y": 0.1}, "sigma_y 0.05 there, 0.1 now"), ({"task": "denoise"}, "task 'sr4'"),
                           ({"method": "idpg"}, "method 'ddpg' there, 'idpg' now")]:
        report = api.restore([images / "img0.png"], out, skip_existing=True, **{"prior": "gaussian", "steps": 2,
                                                                                  "sigma_y": 0.05, **changes})
        assert report.skipped == [] and report.done == [], changes
        assert "holds a restoration with other settings" in report.failed[0][1] and words in report.failed[0][1]
    assert snapshot(out) == before


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(images, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        api.restore([images / "img0.png"], tmp_path / "out", prior="gaussian", steps=2)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()}
    assert modes == {n: mode for n in ("img0.json", "img0_observed.png", "img0_restored.png")}


# ------------------------------------------------------------------------------- 9. validation up front


@pytest.mark.parametrize("args, message", [
    (["--size", "-8", "--resize"], "--size -8: must be an integer >= 1"),
    (["--sigma-y", "inf"], "--sigma-y inf: must be a finite number in [0, 1]"),
    (["--sigma-y", "nan"], "--sigma-y nan: must be a finite number"),
    (["--sigma-y", "1e9"], "--sigma-y 1000000000.0: must be a finite number in [0, 1]"),
    (["--sigma-y", "-0.1"], "--sigma-y -0.1: must be"),
    (["--hyper", "zeta=abc"], "--hyper zeta=abc: zeta of ddpg takes a finite number"),
    (["--hyper", "step_size_mode=0.5"], "--hyper step_size_mode=0.5: step_size_mode of ddpg takes an integer"),
    (["--hyper", "zeta=.inf"], "--hyper zeta=inf: zeta of ddpg takes a finite number"),
    (["--task", "deblur_gauss", "--kernel", "GARBAGE"], "--kernel GARBAGE: GARBAGE: cannot read kernel"),
    (["--task", "inpaint", "--mask", "GARBAGE"], "--mask GARBAGE: GARBAGE: cannot read mask"),
    (["--task", "inpaint", "--mask", "random:2"], "--mask random:2: random:R needs 0 <= R < 1"),
    (["--mask", "random"], "--mask random: applies to the inpaint task, not sr4"),
    (["--task", "denoise", "--kernel", "KERNEL"], "--kernel KERNEL: applies to deblur_gauss and deblur_motion"),
    (["--prior", "gaussian", "--checkpoint", "KERNEL"], "--checkpoint KERNEL: the gaussian prior is analytic"),
    (["--batch-size", "0"], "--batch-size 0: must be an integer >= 1"),
    (["--max-pixels", "0"], "--max-pixels 0: must be an integer >= 1"),
    (["--seed", "-1"], "--seed -1: must be an integer >= 0"),
    (["--sample"], "--sample restores the bundled face; drop the inputs"),
])
def test_bad_options_exit_2_before_any_work(images, tmp_path, monkeypatch, args, message):
    loaded = []
    monkeypatch.setattr(restoration, "load_image", lambda *a: loaded.append(a))
    (tmp_path / "GARBAGE").write_bytes(b"\x89PNG not really")
    np.save(tmp_path / "kernel.npy", np.ones((3, 3)))
    subst = {"GARBAGE": str(tmp_path / "GARBAGE"), "KERNEL": str(tmp_path / "kernel.npy")}
    args = [subst.get(a, a) for a in args]
    message = message.replace("GARBAGE", str(tmp_path / "GARBAGE")).replace("KERNEL", str(tmp_path / "kernel.npy"))
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert "Traceback" not in res.output and loaded == [] and not (tmp_path / "o").exists()


def test_api_validation_names_the_parameter_not_the_flag(images, tmp_path):
    with pytest.raises(ParameterError) as info:
        api.restore([images], tmp_path / "o", prior="gaussian", sigma_y=float("inf"))
    assert info.value.param == "sigma_y" and str(info.value).startswith("sigma_y=inf: ")
    with pytest.raises(ConfigError, match="hyper"):
        api.restore([images], tmp_path / "o", prior="gaussian", hyper={"zeta": "abc"})


def test_a_batch_larger_than_the_engine_takes_is_split(ddpm_engine, tmp_path):
    folder = make_images(tmp_path / "in", [(32, 32)] * 6)  # the engine takes batches of 1..4
    report = api.restore([folder], tmp_path / "out", backend="onnxruntime", engine=str(ddpm_engine), steps=2,
                         batch_size=6)
    assert report.failed == [] and len(report.done) == 6
    assert json.loads((tmp_path / "out" / "img5.json").read_text())["batch_size"] == 4


# ------------------------------------------------------------------------------------ 10. odds and ends


def test_version_and_shell_completion():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"ddpg {ddpg.__version__}"
    res = runner.invoke(app, ["--help"])
    assert "--install-completion" in res.output and "--show-completion" in res.output


def test_random_bytes_checkpoint_is_called_what_it_is(tmp_path):
    path = tmp_path / "random.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as info:
        checkpoints.read_state_dict(path)
    text = str(info.value)
    assert text.startswith(f"{path}: not a checkpoint: neither a torch archive nor a tensor pickle")
    assert "weights_only" not in text and "arbitrary code" not in text and "trusted source" not in text


# -------------------------------------------------------------------------------------- 11. downloads


@pytest.fixture
def served(tmp_path):
    """An HTTP server of a folder holding ``w.pt`` (the ddpm_small fixture's state dict)."""
    root = tmp_path / "www"
    root.mkdir()
    (root / "w.pt").write_bytes((FIXTURES / "priors" / "ddpm_small.pt").read_bytes())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/w.pt"
    httpd.shutdown()


def test_a_download_of_other_weights_never_enters_the_cache(tmp_path, served, monkeypatch):
    monkeypatch.setenv("DDPG_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(checkpoints.REGISTRY, "celeba_hq", checkpoints.CheckpointEntry("celeba_hq", "c.pt",
                                                                                        urls=(served,)))
    with pytest.raises(CheckpointError, match=r"c\.pt\.part: not the celeba_hq prior's weights: .* missing"):
        checkpoints.resolve_checkpoint("celeba_hq", quiet=True)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_download_is_recorded_and_verified_on_every_later_load(tmp_path, served, monkeypatch):
    monkeypatch.setenv("DDPG_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(checkpoints.REGISTRY, "celeba_hq", checkpoints.CheckpointEntry("celeba_hq", "c.pt",
                                                                                        urls=(served,)))
    small = {k: tuple(v.shape) for k, v in checkpoints.read_state_dict(FIXTURES / "priors" / "ddpm_small.pt").items()}
    monkeypatch.setattr(checkpoints, "state_manifest", lambda name: small)  # the fixture stands in for celeba_hq
    path = checkpoints.resolve_checkpoint("celeba_hq", quiet=True)
    record = path.with_name("c.pt.sha256")
    assert record.read_text() == f"{checkpoints.sha256_file(path)}  c.pt\n"
    assert checkpoints.resolve_checkpoint("celeba_hq", quiet=True) == path
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # same size, one byte changed
    path.write_bytes(bytes(data))
    os.utime(path, (1, 1))  # a new mtime: not the file hashed before
    with pytest.raises(CheckpointError, match="differs from the one recorded when it was downloaded"):
        checkpoints.resolve_checkpoint("celeba_hq", quiet=True)


def test_a_file_put_in_the_cache_by_hand_is_checked_once_then_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPG_HOME", str(tmp_path))
    monkeypatch.setitem(checkpoints.REGISTRY, "celeba_hq", checkpoints.CheckpointEntry("celeba_hq", "c.pt"))
    (tmp_path / "c.pt").write_bytes((FIXTURES / "priors" / "ddpm_small.pt").read_bytes())
    with pytest.raises(CheckpointError, match="not the celeba_hq prior's weights"):
        checkpoints.resolve_checkpoint("celeba_hq")
    assert not (tmp_path / "c.pt.sha256").exists()


def test_each_methods_default_sigma_y_and_operator_are_in_the_help_and_the_sidecar(images, tmp_path):
    from ddpg.api.settings import method_defaults

    res = runner.invoke(app, ["restore", "--help"], env={"COLUMNS": "400"})
    text = " ".join(res.output.replace("│", " ").split())
    for method in ("ddpg", "ddnm", "dps"):
        d = method_defaults("sr4", method, "gaussian")
        assert f"{method}: σ_y {d['sigma_y']:g}, {d['steps']} steps, sr_bicubic ×4 ({d['operator']['impl']})" in text
    assert method_defaults("sr4", "ddnm", "gaussian")["sigma_y"] == 0  # what a user of --method ddnm gets
    api.restore([images / "img0.png"], tmp_path / "out", prior="gaussian", method="ddnm", task="denoise", steps=2)
    meta = json.loads((tmp_path / "out" / "img0.json").read_text())
    assert meta["method_defaults"] == method_defaults("denoise", "ddnm", "gaussian")
    assert meta["method_defaults"]["operator"]["task"] == "denoising"


def test_out_of_memory_while_preparing_or_sampling_one_image_fails_that_image_only(images, tmp_path, monkeypatch):
    real_load = restoration.load_image

    def load(path, *args):
        if Path(path).name == "img1.png":
            raise MemoryError  # as torch or NumPy raise it while degrading a huge image
        return real_load(path, *args)

    monkeypatch.setattr(restoration, "load_image", load)
    report = api.restore([images], tmp_path / "out", prior="gaussian", steps=2)
    assert dict(report.failed) == {str(images / "img1.png"): f"{images / 'img1.png'}: MemoryError"}
    assert len(report.done) == 2


def test_an_earlier_output_named_explicitly_is_an_input(images, tmp_path):
    api.restore([images / "img0.png"], tmp_path / "first", prior="gaussian", steps=2)
    report = api.restore([tmp_path / "first" / "img0_observed.png"], tmp_path / "second", prior="gaussian", steps=2,
                         observed=True)
    assert report.done == [str(tmp_path / "second" / "img0_restored.png")]


# ------------------------------------------------ degrade, sidecar and metadata JSON, links, named skips


def test_degrade_never_overwrites_a_users_files(images, tmp_path):
    (images / "img0_observed.png").write_bytes((images / "img0.png").read_bytes())  # the user's own picture
    before = snapshot(images)
    res = runner.invoke(app, ["degrade", str(images), "-o", str(images), "-q"])
    assert res.exit_code == 2 and "-o/--outdir" in res.output and "holds inputs of this run" in res.output
    assert snapshot(images) == before
    out = tmp_path / "out"
    out.mkdir()
    (out / "img1_observed.png").write_bytes(b"the user's own picture")
    (out / "img2_observed.json").write_text('{"mine": true}')
    mine = snapshot(out)
    res = runner.invoke(app, ["degrade", str(images / "img0.png"), str(images / "img1.png"), str(images / "img2.png"),
                              "-o", str(out), "-q"])
    assert res.exit_code == 1, res.output
    assert f"{out / 'img1_observed.png'} exists and no degradation sidecar names it" in res.output
    assert f"{out / 'img2_observed.json'} exists" in res.output and "never overwritten" in res.output
    assert "1 degraded, 0 skipped, 2 failed" in res.output
    assert {k: v for k, v in snapshot(out).items() if k in mine} == mine
    own = {k: v for k, v in snapshot(out).items() if k not in mine}
    # the same settings again: its own outputs are replaced (the same bytes) or, with --skip-existing, skipped
    report = api.degrade([images / "img0.png"], out)
    assert report.done == [str(out / "img0_observed.pt")]
    assert snapshot(out)["img0_observed.png"] == own["img0_observed.png"]
    own = {k: v for k, v in snapshot(out).items() if k not in mine}
    assert api.degrade([images / "img0.png"], out, skip_existing=True).skipped == [str(images / "img0.png")]
    other = api.degrade([images / "img0.png"], out, sigma_y=0.1)
    assert "holds a degradation with other settings" in other.failed[0][1] and "sigma_y 0.05 there, 0.1 now" in \
        other.failed[0][1]
    assert {k: v for k, v in snapshot(out).items() if k in own} == own


def test_a_link_named_like_an_output_is_never_replaced_even_dangling(images, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "img0_restored.png").symlink_to(tmp_path / "nowhere.png")  # dangling
    report = api.restore([images], out, prior="gaussian", steps=2)
    assert f"{out / 'img0_restored.png'} exists" in dict(report.failed)[str(images / "img0.png")]
    assert len(report.done) == 2 and report.exit_code == 1
    obs = tmp_path / "obs"
    obs.mkdir()
    (obs / "img1_observed.json").symlink_to(tmp_path / "nowhere.json")
    report = api.degrade([images], obs)
    assert f"{obs / 'img1_observed.json'} exists" in dict(report.failed)[str(images / "img1.png")]
    assert len(report.done) == 2 and report.exit_code == 1
    assert os.readlink(out / "img0_restored.png") == str(tmp_path / "nowhere.png")
    assert os.readlink(obs / "img1_observed.json") == str(tmp_path / "nowhere.json")
    assert not (tmp_path / "nowhere.png").exists() and not (tmp_path / "nowhere.json").exists()


DEEP_JSON = "[" * 100_000 + "]" * 100_000  # 200 kB: json.loads raises RecursionError on it


def test_deeply_nested_json_in_an_input_or_output_folder_fails_that_file_alone(images, tmp_path):
    (images / "deep.json").write_text(DEEP_JSON)
    out = tmp_path / "out"
    out.mkdir()
    (out / "img1.json").write_text(DEEP_JSON)
    report = api.restore([images], out, prior="gaussian", steps=2)
    assert len(report.done) == 2 and report.exit_code == 1
    why = dict(report.failed)[str(images / "img1.png")]
    assert f"{out / 'img1.json'}: not read: nested deeper than 64 levels" in why and "never overwritten" in why
    assert (out / "img1.json").read_text() == DEEP_JSON
    assert dict(report.notes)[str(images / "deep.json")] == f"{images / 'deep.json'}: not read: nested deeper " \
                                                             "than 64 levels"
    # an observation's metadata (observation_meta)
    obs = tmp_path / "obs"
    assert api.degrade([images / "img0.png", images / "img1.png"], obs).exit_code == 0
    (obs / "img1_observed.json").write_text(DEEP_JSON)
    report = api.restore([obs], tmp_path / "out2", prior="gaussian", steps=2, observed=True)
    assert report.done == [str(tmp_path / "out2" / "img0_restored.png")]
    why = dict(report.failed)[str(obs / "img1_observed.pt")]
    assert f"{obs / 'img1_observed.json'}: not read: nested deeper" in why


def test_a_huge_json_in_an_input_folder_is_not_read(images, tmp_path):
    import tracemalloc

    with open(images / "huge.json", "wb") as fh:
        fh.truncate(400 * 2**20)  # 400 MB, sparse: nothing is written to the disk
    tracemalloc.start()
    try:
        report = api.restore([images], tmp_path / "out", prior="gaussian", steps=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(report.done) == 3 and report.exit_code == 0
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB allocated"
    assert dict(report.notes)[str(images / "huge.json")] == f"{images / 'huge.json'}: not read: 419,430,400 bytes is " \
                                                            "more than a ddpg JSON file can be (1,048,576)"


def test_every_skipped_input_is_named_with_the_reason(images, tmp_path):
    (images / "notes.json").write_text(json.dumps({"kind": "ddpg-restoration", "outputs": {"restored": "img1.png"}}))
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images), "-o", str(out), "--steps", "2", "-q"])
    assert res.exit_code == 0 and "3 restored, 0 skipped, 0 failed" in res.output, res.output  # not an output name
    first = tmp_path / "first"
    api.restore([images / "img0.png"], first, prior="gaussian", steps=2)
    make_images(first, [(32, 32)], names=["extra.png"])
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(first), "-o", str(tmp_path / "second"), "--steps",
                              "2", "-q"])
    assert "1 restored, 2 skipped, 0 failed" in res.output, res.output
    for name in ("img0_restored.png", "img0_observed.png"):
        assert f"{first / name}: skipped: {first / 'img0.json'} names it as an output of an earlier restoration " \
               "(name the file to restore it)" in res.output
    res = runner.invoke(app, ["restore", "--prior", "gaussian", str(images / "img0.png"), "-o", str(first), "--steps",
                              "2", "-q", "--skip-existing"])
    assert "0 restored, 1 skipped, 0 failed" in res.output
    assert f"{images / 'img0.png'}: skipped: its outputs of these settings in {first} are complete" in res.output


def test_evaluate_never_overwrites_a_users_report_files(images, tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.md").write_text("my own notes")
    args = ["evaluate", "--pred", str(images), "--gt", str(images), "--no-lpips", "--no-set-metrics", "-o"]
    res = runner.invoke(app, [*args, str(out)])
    assert res.exit_code == 2 and f"{out / 'summary.md'} exists and no evaluation sidecar names it" in res.output
    assert [p.name for p in out.iterdir()] == ["summary.md"] and (out / "summary.md").read_text() == "my own notes"
    for _ in range(2):  # its own report is replaced
        res = runner.invoke(app, [*args, str(tmp_path / "own")])
        assert res.exit_code == 0, res.output
    older = tmp_path / "older"  # a report of a ddpg whose summary.json had no kind
    assert runner.invoke(app, [*args, str(older)]).exit_code == 0
    summary = json.loads((older / "summary.json").read_text())
    (older / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k not in ("kind", "outputs")}))
    assert runner.invoke(app, [*args, str(older)]).exit_code == 0


def test_an_engine_sidecar_is_read_by_the_bounded_reader(tmp_path):
    from ddpg.engine_metadata import EngineError
    from ddpg.engine_sidecar import read_sidecar

    (tmp_path / "face64.plan.json").write_text(DEEP_JSON)
    with pytest.raises(EngineError, match="face64.plan.json: not read: nested deeper than 64 levels"):
        read_sidecar(tmp_path / "face64.plan")
