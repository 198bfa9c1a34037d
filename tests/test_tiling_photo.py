"""face64 on a 2048×2048 photo, a few steps, through ``ddpg restore`` in a process of its own (#32). One step is
1849 UNet tile calls, about five minutes on one core of a 2-core CPU, so this test is marked ``long`` and left out
of ``make test``: run it with ``make test-long`` (the 100-step run is ``benchmarks/tiling_photo.py``).

The photo is a crowd of the dev faces. Untiled, face64's attention over it would need about 1.5 TiB, so ``--tile
auto`` must tile it (43×43 tiles of 64 px); the process's peak RSS must stay under the memory guard's estimate
for the tiled restoration, which grows with the pixel count; the restoration keeps the photo's size."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from ddpg import api
from ddpg.api import restoration
from ddpg.io import load_image, save_image
from tiling_measures import crowd

SIDE, STEPS = 2048, 2


@pytest.mark.long
def test_face64_restores_a_2048_px_photo_in_tiles_within_the_memory_guard(tmp_path):
    photo = tmp_path / "crowd.png"
    save_image(crowd(SIDE), photo)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # --threads auto: the idle cores
    done = subprocess.run([sys.executable, "-m", "ddpg", "restore", str(photo), "-o", str(tmp_path / "out"),
                           "--prior", "face64", "--task", "sr4", "--steps", str(STEPS)], env=env,
                          capture_output=True, text=True, timeout=3600)
    assert done.returncode == 0, done.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # Linux: kB, the largest child
    meta = json.loads((tmp_path / "out" / "crowd.json").read_text())
    tiling = meta["tiling"]
    assert tiling["tiled"] and tiling["reason"] == "the untiled pass would not fit in memory"
    assert (tiling["tile"], tiling["tiles"], meta["operator"]["padded_to"]) == (64, 43 * 43, [SIDE, SIDE])
    assert load_image(tmp_path / "out" / "crowd_restored.png").shape == (3, SIDE, SIDE)
    plan = api.plan_restore(api.RestoreRequest(inputs=[photo], outdir=tmp_path / "o", prior="face64", task="sr4"))
    estimate, _ = restoration._memory_need(plan, (SIDE, SIDE), plan.tiled)
    assert peak < estimate, f"peak RSS {peak / 2**30:.2f} GiB over the guard's {estimate / 2**30:.2f} GiB"
