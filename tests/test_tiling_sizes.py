"""Any size through ``ddpg restore`` with tiles (#32): sizes that are not multiples of the tile or of the SR factor,
observed low-resolution photos, a 2048×2048 photo, the memory guard counting tiles, and DPS through the tiles."""

from __future__ import annotations

import json

import pytest
import torch

from ddpg import api
from ddpg.api import restoration
from ddpg.errors import InputError
from ddpg.io import load_image, save_image


def photo(path, h: int, w: int, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)), path)
    return path


def test_odd_sizes_and_an_observed_photo_are_tiled_padded_to_the_operator_only(tmp_path):
    clean = photo(tmp_path / "in" / "odd.png", 101, 130)
    report = api.restore([clean], tmp_path / "o", prior="face64", task="sr4", steps=1)
    meta = json.loads((tmp_path / "o" / "odd.json").read_text())
    assert report.exit_code == 0 and meta["tiling"]["tiled"] and meta["tiling"]["grid"] == [2, 3]
    assert meta["operator"]["padded_to"] == [104, 132]  # multiples of the SR factor 4, not of the UNet's 8
    assert load_image(tmp_path / "o" / "odd_restored.png").shape == (3, 101, 130)
    low = photo(tmp_path / "obs" / "low.png", 30, 41, seed=1)  # a real low-resolution photo → 120×164
    report = api.restore([low], tmp_path / "ob", prior="face64", task="sr4", steps=1, observed=True)
    meta = json.loads((tmp_path / "ob" / "low.json").read_text())
    assert report.exit_code == 0 and meta["tiling"]["tiled"] and meta["operator"]["padded_to"] == [120, 164]
    assert load_image(tmp_path / "ob" / "low_restored.png").shape == (3, 120, 164)


def test_a_2048_px_photo_restores_with_tiles(tmp_path):
    """The whole pipeline at 2048×2048: the analytic prior in 64-px tiles (43×43 per step over the photo wrapped
    around by 16 px), the operator and the method on the whole photo; face64 at this size is timed in
    benchmarks/tiling_photo.py."""
    big = photo(tmp_path / "in" / "big.png", 2048, 2048)
    report = api.restore([big], tmp_path / "o", prior="gaussian", task="sr4", steps=1, tile="64")
    meta = json.loads((tmp_path / "o" / "big.json").read_text())
    assert report.exit_code == 0, report.failed
    assert meta["tiling"]["tiles"] == 43 * 43 and meta["operator"]["padded_to"] == [2048, 2048]
    assert load_image(tmp_path / "o" / "big_restored.png").shape == (3, 2048, 2048)


def test_the_memory_guard_counts_tiles(tmp_path, monkeypatch):
    """face64 at 2048×2048: untiled its attention needs about 1.5 TiB, so auto tiles it (a few GiB) and --tile off
    is refused at once; DPS keeps every tile's activations for its backward pass, so it is refused even tiled."""
    monkeypatch.setattr(restoration, "available_bytes", lambda device: 16 << 30)
    path = tmp_path / "big.png"
    plan = api.plan_restore(api.RestoreRequest(inputs=[path], outdir=tmp_path / "o", prior="face64", task="sr4"))
    padded, denoiser, tiling = restoration._fit_size(plan, path, (2048, 2048), 4)
    assert tiling["tiled"] and tiling["reason"] == "the untiled pass would not fit in memory"
    assert denoiser is plan.tiled and tiling["tiles"] == 43 * 43 and padded == (2048, 2048)
    off = api.plan_restore(api.RestoreRequest(inputs=[path], outdir=tmp_path / "o", prior="face64", tile="off"))
    with pytest.raises(InputError, match=r"2048×2048 with the face64 prior at batch 1 needs about 1536\.0 GiB"):
        restoration._fit_size(off, path, (2048, 2048), 4)
    dps = api.plan_restore(api.RestoreRequest(inputs=[path], outdir=tmp_path / "o", prior="face64", method="dps"))
    with pytest.raises(InputError, match="in 1849 tiles of 64 px, needs about"):
        restoration._fit_size(dps, path, (2048, 2048), 4)


def test_dps_differentiates_through_the_tiles(tmp_path):
    image = photo(tmp_path / "in" / "a.png", 80, 100)
    report = api.restore([image], tmp_path / "o", prior="gaussian", method="dps", task="sr4", steps=3, tile="32")
    meta = json.loads((tmp_path / "o" / "a.json").read_text())
    assert report.exit_code == 0, report.failed
    assert meta["tiling"]["tiled"] and meta["method"] == "dps" and meta["metrics"]["psnr"] > 5
