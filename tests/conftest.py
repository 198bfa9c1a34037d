import os
import threading
from pathlib import Path

import pytest
import torch

# Tiny models on 2 shared CI cores run far faster single-threaded (thread contention dominates).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # `--threads auto` (the default) keeps to it, here and in subprocesses

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ddpm_engine(tmp_path_factory) -> Path:
    """The ddpm_small fixture prior (an unnamed DDPM, 32 px) exported to ONNX once per session: dynamic batch
    1..4, example batch 2; validation and graph optimisation, tested in test_export_*.py, are skipped to save
    time."""
    from ddpg.export import export_prior

    out = tmp_path_factory.mktemp("ort") / "ddpm_small.onnx"
    fixture = torch.load(FIXTURES / "priors" / "ddpm_small.pt", weights_only=True)
    export_prior(fixture["config"], checkpoint=FIXTURES / "priors" / "ddpm_small.pt", out=out, batch="1:2:4",
                 validate=False, optimize=False)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def lock_free_elsewhere(lock=None) -> bool:
    """Whether another thread could take ``lock`` (default: the CUDA-graph CAPTURE_LOCK) right now; deterministic,
    since the probe thread is joined before the answer is read."""
    if lock is None:
        from ddpg.runtime.cuda_graph import CAPTURE_LOCK as lock
    got = []

    def probe():
        got.append(lock.acquire(blocking=False))
        if got[0]:
            lock.release()

    thread = threading.Thread(target=probe)
    thread.start()
    thread.join()
    return got[0]
