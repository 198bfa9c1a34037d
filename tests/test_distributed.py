"""Sharding across torchrun ranks: index sharding, the rank-0 summary, and a real 2-process gloo run on CPU
(spawned like torchrun: RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* in the environment)."""

import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ddpg.errors import ConfigError
from ddpg.runtime.distributed import (
    COLLECTIVE_TIMEOUT,
    dist_context,
    finish,
    gather_summary,
    merge_summaries,
    shard,
    shard_indices,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.mark.parametrize("mode", ["contiguous", "strided"])
@pytest.mark.parametrize("count,world", [(0, 2), (1, 3), (5, 2), (7, 3), (8, 4), (10, 1)])
def test_shards_are_disjoint_balanced_and_cover_everything(mode, count, world):
    parts = [shard_indices(count, r, world, mode) for r in range(world)]
    flat = sorted(i for p in parts for i in p)
    assert flat == list(range(count))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    if mode == "contiguous":
        assert [i for p in parts for i in p] == list(range(count))  # blocks in rank order
        assert sizes == sorted(sizes, reverse=True)
    assert shard(list("abcdefghij")[:count], world - 1, world, mode) == [
        "abcdefghij"[i] for i in parts[-1]]


def test_shard_errors():
    with pytest.raises(ConfigError, match="rank 2"):
        shard_indices(4, 2, 2)
    with pytest.raises(ConfigError, match="shard mode"):
        shard_indices(4, 0, 2, mode="random")


def test_single_process_context_and_summary(monkeypatch):
    for var in TORCHRUN_VARS:
        monkeypatch.delenv(var, raising=False)
    ctx = dist_context("cpu")
    assert tuple(ctx) == (0, 1, torch.device("cpu")) and ctx.is_main and not ctx.distributed
    assert not torch.distributed.is_initialized()
    summary = gather_summary({"done": ["a"], "failed": [], "wall_s": 2.0})
    assert summary["world_size"] == 1 and summary["done"] == ["a"] and summary["images_per_s"] == 0.5
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE"):
        dist_context("cpu")


def test_nccl_rank_sets_and_binds_its_gpu_with_a_long_timeout(monkeypatch):
    """Under torchrun with --device cuda (CUDA faked on this CPU machine): rank 1 makes cuda:1 current before the
    NCCL group forms (gather_object uses the current device), binds the group to it (device_id), and waits for
    slower ranks longer than NCCL's 10-minute default."""
    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", dev)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kw: calls.append(("init", kw)))
    ctx = dist_context("cuda")
    assert ctx == (1, 2, torch.device("cuda", 1))
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("init", {"backend": "nccl", "rank": 1, "world_size": 2, "timeout": COLLECTIVE_TIMEOUT,
                               "device_id": torch.device("cuda", 1)})]
    assert COLLECTIVE_TIMEOUT.total_seconds() >= 24 * 3600
    calls.clear()
    dist_context("cpu")
    assert calls == [("init", {"backend": "gloo", "rank": 1, "world_size": 2, "timeout": COLLECTIVE_TIMEOUT})]
    with pytest.raises(ConfigError, match="device=cuda:0: under torchrun give device cuda"):
        dist_context("cuda:0")


def test_merge_summaries():
    merged = merge_summaries([
        {"done": ["a", "b"], "skipped": [], "failed": [], "wall_s": 2.0, "exit_code": 0},
        {"done": ["c"], "skipped": ["d"], "failed": [["e", "unreadable"]], "wall_s": 3.0, "exit_code": 1,
         "interrupted": False}])
    assert merged["done"] == ["a", "b", "c"] and merged["skipped"] == ["d"]
    assert merged["failed"] == [["e", "unreadable"]]
    assert merged["exit_code"] == 1 and merged["wall_s"] == 3.0 and merged["images_per_s"] == 1.0
    assert merged["world_size"] == 2 and not merged["interrupted"]


def tiny_job(index: int) -> torch.Tensor:
    """A deterministic restoration of image ``index`` (seeded by its global index, as `ddpg restore` does)."""
    from ddpg.models import GaussianPrior, as_denoiser, prior_config
    from ddpg.operators import make_operator
    from ddpg.runtime import ddpg_sample

    g = torch.Generator().manual_seed(100 + index)
    op = make_operator("deblur_gauss", 16)
    y = op.A(torch.rand(1, 3, 16, 16, generator=g) * 2 - 1)
    den = as_denoiser(GaussianPrior(prior_config("gaussian")))
    with torch.no_grad():
        return ddpg_sample(den, op, y, 0.05, steps=3, generator=g)


def _worker(rank: int, world: int, port: int, outdir: str, count: int) -> None:
    # the rendezvous store is the parent's (as torchrun's agent store): every rank connects to it as a client
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True")
    ctx = dist_context("cpu")
    assert torch.distributed.get_backend() == "gloo"
    t0 = time.perf_counter()
    done = []
    for index in shard_indices(count, ctx.rank, ctx.world_size):
        torch.save(tiny_job(index), Path(outdir) / f"{index}.pt")
        done.append(index)
    summary = gather_summary({"rank": ctx.rank, "device": str(ctx.device), "done": done, "failed": [],
                              "wall_s": time.perf_counter() - t0})
    if ctx.is_main:
        (Path(outdir) / "summary.json").write_text(json.dumps(summary))
    else:
        assert summary is None
    finish()


def rendezvous_store() -> torch.distributed.TCPStore:
    """A TCPStore server on a port the OS picks at bind time and that stays bound while the ranks run (no
    free-then-reuse race for the port)."""
    return torch.distributed.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


def test_two_gloo_ranks_share_the_work_and_rank0_summarises(tmp_path):
    count = 5
    store = rendezvous_store()
    mp.spawn(_worker, args=(2, store.port, str(tmp_path), count), nprocs=2, join=True)
    del store
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert [r["rank"] for r in summary["ranks"]] == [0, 1]
    assert [r["done"] for r in summary["ranks"]] == [[0, 1, 2], [3, 4]]
    assert sorted(summary["done"]) == list(range(count))
    for index in range(count):  # the same result as a single process: seeds follow the global index
        torch.testing.assert_close(torch.load(tmp_path / f"{index}.pt", weights_only=True), tiny_job(index),
                                   rtol=1e-6, atol=1e-6)


def test_torchrun_restore_shards_inputs_and_matches_one_process(tmp_path):
    """`torchrun --nproc-per-node 2 -m ddpg restore` (gloo, CPU): every image restored once, byte-identical to
    a single-process run, and rank 0's run_summary.json names each rank's share."""
    import subprocess
    import sys

    import numpy as np
    from PIL import Image

    from ddpg import api

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"im{i}.png")
    args = ["restore", "--prior", "gaussian", str(src), "--task", "deblur_gauss", "--steps", "3", "--seed", "4", "-q"]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "ddpg", *args, "-o", str(tmp_path / "ranks")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads((tmp_path / "ranks" / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["exit_code"] == 0
    assert [len(r["done"]) for r in summary["ranks"]] == [3, 2]
    assert sorted(Path(p).name for p in summary["done"]) == [f"im{i}_restored.png" for i in range(5)]
    single = api.restore([src], tmp_path / "one", prior="gaussian", task="deblur_gauss", steps=3, seed=4)
    assert single.exit_code == 0
    for i in range(5):
        for suffix in ("_restored.png", "_observed.png"):
            name = f"im{i}{suffix}"
            assert (tmp_path / "ranks" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
        assert json.loads((tmp_path / "ranks" / f"im{i}.json").read_text())["seed"] == 4 + i
