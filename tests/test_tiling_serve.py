"""``ddpg serve`` with images larger than the prior (#32): a request's tiles join the step-level batch as samples of
their own and are blended per request after each UNet tick; the method's step runs on the whole image. A tiled
sample equals its ``ddpg restore`` twin (bit for bit with the batch-invariant Gaussian prior, to float32 rounding
with face64), and ``/v1/models`` states the largest image accepted."""

from __future__ import annotations

import torch

from conftest import rel_err
from ddpg.io import save_image
from ddpg.models import as_denoiser, create_prior, load_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.samplers import get_sampler
from ddpg.runtime.tiling import TiledDenoiser
from ddpg.serve.jobs import Preparer, Upload
from ddpg.serve.scheduler import advance, start_sample
from ddpg.serve.server import largest_image


class Counting:
    """A denoiser that records the rows of each call (and forwards everything else)."""

    def __init__(self, inner):
        self.inner, self.rows = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, x, t):
        self.rows.append(x.shape[0])
        return self.inner(x, t)


def run(denoiser, samples) -> None:
    with torch.no_grad():
        while any(s.index < len(s.rows) for s in samples):
            advance(denoiser, [s for s in samples if s.index < len(s.rows)])


def test_tiles_share_ticks_with_small_samples_and_equal_the_tiled_restorer():
    den = as_denoiser(create_prior("gaussian"))
    tiled = TiledDenoiser(den, 32, 8, 4)
    spec = get_sampler("ddpg")
    p = spec.build(0.05)
    samples, twins, ops = [], [], {}
    for size, seed in ((64, 3), (32, 5), (32, 6)):
        op = ops.setdefault(size, make_operator("sr_bicubic", size, scale=4))
        r = Restorer(tiled if size == 64 else den, op, method="ddpg", sigma_y=0.05, steps=5)
        y = r.degrade(torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1, [seed])
        with torch.no_grad():
            twins.append(r.restore(y, [seed])[0])
        layout = tiled.layout((size, size)) if size == 64 else None
        samples.append(start_sample(den, op, y, spec.method, p, 5, seed, (size, p), layout=layout))
    counting = Counting(den)
    run(counting, samples)
    tiles = tiled.layout((64, 64)).count
    assert counting.rows == [tiles + 2] * 5  # one call per tick: the request's tiles and the two small samples
    assert samples[0].ticks_shared == 5 * 3  # each call: its tiles and the two other samples
    for s, twin in zip(samples, twins, strict=True):
        assert torch.equal(s.result, twin)


def test_a_served_128_px_face64_request_is_tiled_and_equals_its_restore_twin(tmp_path):
    face64 = as_denoiser(load_prior("face64"))
    preparer = Preparer(face64, "face64", "cpu", max_pixels=1 << 20, default_deadline_s=None)
    prepared = []
    for name, side in (("big", 128), ("a", 64), ("b", 64)):
        image = tmp_path / f"{name}.png"
        save_image(torch.rand(3, side, side, generator=torch.Generator().manual_seed(side + len(name))), image)
        work = tmp_path / f"work_{name}"
        work.mkdir()
        upload = Upload(files={"image": image}, names={"image": image.name})
        prepared.append(preparer.prepare({"task": "sr4", "steps": 2, "seed": 0}, upload, work, now=0.0))
    big = prepared[0]
    assert big.job.tiling["tiled"] and big.job.tiling["grid"] == [3, 3] and big.sample.layout.count == 9
    assert all(p.sample.layout is None and not p.job.tiling["tiled"] for p in prepared[1:])
    counting = Counting(face64)
    run(counting, [p.sample for p in prepared])
    assert counting.rows == [9 + 2, 9 + 2]  # tiles and small requests in one UNet call per tick
    with torch.no_grad():  # the twin: what `ddpg restore` runs for this input (the same prepare_input)
        twin = big.job.restorer.restore(big.job.y, [big.job.seed])[0]
    assert isinstance(big.job.restorer.denoiser, TiledDenoiser) and rel_err(big.sample.result, twin) < 1e-5
    limits = largest_image(preparer)
    assert limits["max_pixels"] == 1 << 20 and limits["max_square_side"] == 1024
    assert limits["tiles"]["tile"] == 64 and limits["tiles"]["tiled_above_side"] == 96
