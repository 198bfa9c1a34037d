from pathlib import Path

import pytest
import torch

# Tiny models on 2 shared CI cores run far faster single-threaded (thread contention dominates).
torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures"
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())
