"""Tiled UNet, whole-image guidance (#32): the tile layout (cover, overlap, partition of unity), the tiled denoiser
(one tile = the inner denoiser, blending exact for a pointwise denoiser, the tile stream independent of its
batch, fixed-batch engines), and ``ddpg restore --tile`` (options, sidecar, results independent of the batch)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from ddpg import api
from ddpg.api.tiling import AUTO_TILE_RATIO, tile_policy
from ddpg.engine_metadata import BatchProfile
from ddpg.errors import ParameterError
from ddpg.io import load_image, save_image
from ddpg.models import as_denoiser, create_prior
from ddpg.runtime.tiling import (
    DEFAULT_TILE_BATCH,
    TiledDenoiser,
    TileLayout,
    axis_starts,
    axis_weights,
    tile_call_batch,
)
from fake_denoiser import FakeDenoiser


@pytest.mark.parametrize("length,tile,overlap", [(256, 64, 16), (128, 64, 32), (200, 64, 16), (130, 64, 0),
                                                 (2048, 64, 16), (65, 64, 8), (64, 64, 16), (40, 64, 16)])
def test_axis_starts_cover_with_the_least_overlap(length, tile, overlap):
    starts = axis_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == max(length - tile, 0)
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert all(tile - g >= overlap for g in gaps)  # neighbours overlap by at least `overlap`
    assert all(abs(g - gaps[0]) <= 1 for g in gaps)  # spread evenly
    if len(starts) > 1:  # the fewest tiles: one fewer could not keep the overlap
        assert (length - tile) / (len(starts) - 2 or 1) > tile - overlap or len(starts) == 2


@pytest.mark.parametrize("size,tile,overlap", [((256, 256), 64, 16), ((128, 128), 64, 32), ((200, 130), 64, 16),
                                               ((97, 300), 32, 31), ((256, 192), 64, 0), ((50, 90), 64, 16)])
def test_weights_are_a_smooth_partition_of_unity(size, tile, overlap):
    layout = TileLayout(size, tile, overlap)
    total = layout.weight_map(torch.float64)
    assert total.shape == layout.padded
    assert torch.allclose(total, torch.ones_like(total), rtol=0, atol=1e-12)
    assert (layout.weight_map(torch.float32) - 1).abs().max() < 4e-6  # float32 rounding of up to ~30 terms
    w = axis_weights(layout.xs, tile)
    assert (w > 0).all() and (w <= 1).all()
    if overlap and len(layout.xs) > 1:  # smooth: no step larger than a ramp's over the overlap
        assert w.diff(dim=1).abs().max() < 3 / overlap


def test_overlap_must_be_smaller_than_the_tile():
    with pytest.raises(ValueError, match="overlap"):
        axis_starts(100, 64, 64)
    with pytest.raises(ParameterError, match="tile_overlap"):
        tile_policy("64", 64, 64, 8)
    with pytest.raises(ParameterError, match="multiple of 8"):
        tile_policy("60", None, 64, 8)
    assert tile_policy("auto", None, 64, 8).overlap == 16 and tile_policy("auto", None, None, 1).tile is None


class Pointwise(FakeDenoiser):
    """out = f(x, t) per pixel: tiling and blending it must give the untiled output (weights sum to one)."""

    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, x, t):
        self.calls.append(x.shape[0])
        return torch.tanh(x) * 0.7 + t.view(-1, 1, 1, 1) / 1000

    def model_output(self, x, t):
        return self(x, t)


def test_one_tile_is_the_inner_denoiser_bit_for_bit():
    inner = Pointwise()
    tiled = TiledDenoiser(inner, 64, 16, 4)
    x, t = torch.randn(3, 3, 64, 64), torch.tensor([10.0, 500.0, 999.0])
    assert torch.equal(tiled(x, t), inner(x, t))
    assert inner.calls == [3, 3]  # passed through whole, not cut


@pytest.mark.parametrize("size", [(150, 200), (64, 130), (40, 100)])
def test_blending_a_pointwise_denoiser_is_exact_and_stream_batch_does_not_matter(size):
    x, t = torch.randn(2, 3, *size), torch.tensor([100.0, 700.0])
    inner = Pointwise()
    whole = inner(x, t)
    outs = []
    for batch in (1, 5, 64):
        tiled = TiledDenoiser(inner, 64, 16, batch)
        outs.append(tiled(x, t))
        assert tiled.tile_calls == 2 * tiled.layout(size).count
    assert torch.allclose(outs[0], whole, atol=2e-6)
    assert all(torch.equal(o, outs[0]) for o in outs[1:])  # bit for bit, whatever shared a call
    # two images through one stream equal each image alone
    alone = torch.cat([TiledDenoiser(inner, 64, 16, 3)(x[i:i + 1], t[i:i + 1]) for i in range(2)])
    assert torch.equal(alone, outs[0])


def test_fixed_batch_engines_get_full_calls_and_model_output_is_differentiable():
    inner = Pointwise()
    inner.info = SimpleNamespace(batch=BatchProfile(4, 4, 4))
    tiled = TiledDenoiser(inner, 32, 8, 4)
    x = torch.randn(1, 3, 70, 50, requires_grad=True)
    out = tiled.model_output(x, torch.tensor([300.0]))
    assert set(inner.calls) == {4} and tiled.tile_calls == tiled.layout((70, 50)).count
    out.sum().backward()
    expected = 0.7 * (1 - torch.tanh(x.detach()) ** 2)  # d out / d x of the pointwise denoiser
    assert torch.allclose(x.grad, expected, atol=1e-5)


def test_a_periodic_prior_is_tiled_around_the_border_and_matches_its_exact_eps():
    """The Gaussian prior's exact ε exists at any size; its tiles, given the image wrapped around (as its FFTs see
    it), reproduce it; without that margin the image's border (a tile edge there) is far off."""
    prior = create_prior("gaussian")
    den = as_denoiser(prior)
    x = prior.sample(1, 128, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100.0])
    a = den.schedule.alpha_bar_tensor("cpu")[101]
    x_t = a.sqrt() * x + (1 - a).sqrt() * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    exact = den(x_t, t)
    wrapped = TiledDenoiser(den, 64, 16, 8)
    assert wrapped.layout((128, 128)).margin == 16 and wrapped.layout((128, 128)).grid == (3, 3)
    err = (wrapped(x_t, t) - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt()
    unwrapped = (TiledDenoiser(den, 64, 16, 8, wrap=False)(x_t, t) - exact).pow(2).mean().sqrt()
    assert err < 0.01 and unwrapped / exact.pow(2).mean().sqrt() > 0.05


def test_auto_rule():
    policy = tile_policy("auto", None, 64, 8)
    side = int(AUTO_TILE_RATIO * 64)
    assert policy.decide((64, 64), lambda: True)[0] is False
    assert policy.decide((side, side), lambda: True)[0] is False
    assert policy.decide((side + 1, 40), lambda: True)[0] is True
    assert policy.decide((80, 80), lambda: False) == (True, "the untiled pass would not fit in memory")
    assert tile_policy("off", None, 64, 8).decide((4000, 4000), lambda: False)[0] is False
    assert tile_policy("32", 8, None, 1).decide((20, 20), lambda: True)[0] is True
    assert tile_policy("auto", None, None, 1).decide((4000, 4000), lambda: False)[0] is False


def test_request_checks_tile_options(tmp_path):
    for bad in ("big", "4", "-64", 0):
        with pytest.raises(ParameterError, match="tile"):
            api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "o", tile=bad)
    with pytest.raises(ParameterError, match="tile_overlap"):
        api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "o", tile="32", tile_overlap=32)
    assert api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "o", tile=48).tile == "48"
    with pytest.raises(ParameterError, match="tile_batch"):
        api.RestoreRequest(inputs=[tmp_path], outdir=tmp_path / "o", tile_batch=0)


def test_tiles_per_call_default_to_the_engines_largest_batch_and_must_fit_it():
    assert tile_call_batch(None) == DEFAULT_TILE_BATCH and tile_call_batch(None, 64) == 64  # PyTorch: any
    dynamic, fixed = BatchProfile(1, 4, 8), BatchProfile(4, 4, 4)
    assert tile_call_batch(dynamic) == 8 and tile_call_batch(dynamic, 3) == 3 and tile_call_batch(fixed) == 4
    with pytest.raises(ParameterError, match=r"at most 8 per call \(re-export it with --batch 1:9:9\)"):
        tile_call_batch(dynamic, 9)
    with pytest.raises(ParameterError, match="runs batches of 4 only"):
        tile_call_batch(fixed, 2)


def test_restore_tiles_records_it_and_does_not_depend_on_the_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, (h, w) in enumerate([(72, 100), (72, 100), (40, 40)]):
        save_image(torch.rand(3, h, w, generator=g), inputs / f"img{i}.png")
    runs = {}
    for batch, tile_batch in ((1, None), (3, None), (3, 5)):  # images per batch, tiles per UNet call
        out = tmp_path / f"b{batch}_{tile_batch}"
        report = api.restore([inputs], out, prior="gaussian", task="sr4", steps=3, tile="32", tile_overlap=8,
                             batch_size=batch, tile_batch=tile_batch)
        assert report.exit_code == 0, report.failed
        runs[batch, tile_batch] = [load_image(out / f"img{i}_restored.png") for i in range(3)]
    for other in ((3, None), (3, 5)):
        assert all(torch.equal(a, b) for a, b in zip(runs[1, None], runs[other], strict=True))
    assert json.loads((tmp_path / "b3_5" / "img0.json").read_text())["tiling"]["tile_batch"] == 5
    meta = json.loads((tmp_path / "b1_None" / "img0.json").read_text())
    # the analytic prior is periodic: the tiles cover the image wrapped around by the overlap, (72+16)×(100+16)
    assert meta["tiling"]["tiled"] and meta["tiling"]["grid"] == [4, 5] and meta["tiling"]["tile"] == 32
    assert meta["operator"]["padded_to"] == [72, 100]  # the operator's multiple (4), not the prior's
    assert meta["settings"]["tile"] == "32" and runs[1, None][0].shape == (3, 72, 100)
    untiled = api.restore([inputs / "img2.png"], tmp_path / "auto", prior="gaussian", task="sr4", steps=3)
    meta = json.loads((tmp_path / "auto" / "img2.json").read_text())
    assert untiled.exit_code == 0 and meta["tiling"] == {
        "mode": "auto", "tiled": False, "reason": "the prior has no native size (give --tile SIZE to tile)"}


def test_bench_tile_reports_tiles_per_second_and_seconds_per_megapixel():
    from ddpg.bench.config import BenchConfig
    from ddpg.bench.harness import make_report, run_bench
    from ddpg.bench.report import markdown

    cfg = BenchConfig(batches=[2], prior="gaussian", size=80, tile=32, tile_overlap=8, steps=2, iters=1, warmup=0,
                      profile=False, accuracy=False, device="cpu", threads=1)
    series = run_bench(cfg, measure_matmul=False)
    (r,) = series["results"]
    tiles = TileLayout((80, 80), 32, 8, margin=8).count  # the analytic prior's tiles wrap around by the overlap
    assert series["label"].endswith("tiles 32/8") and r["tiles_per_image"] == tiles
    assert r["tiles_per_s"] == pytest.approx(2 * tiles * 2 / r["restore_s"])
    assert r["s_per_megapixel"] == pytest.approx(r["restore_s"] / (2 * 80 * 80 / 1e6))
    with pytest.raises(Exception, match="overlap"):
        BenchConfig(batches=[1], tile=32, tile_overlap=32).validate()
    assert "tiles/s" in markdown(make_report([series], title="tiles"))
