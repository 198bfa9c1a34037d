"""The sinusoidal timestep embedding against values written out by hand (ADM: cos first, f_k = 10000^(−k/half);
DDPM: sin first, f_k = 10000^(−k/(half−1))), for even and odd widths."""

import math

import pytest
import torch

from ddpg.models.nn import sinusoidal_embedding

T = torch.tensor([0.0, 3.0, 250.0])


def rows(fn):
    return torch.tensor([fn(float(t)) for t in T], dtype=torch.float32)


@pytest.mark.parametrize("dim, sin_first, offset, by_hand", [
    (8, False, 0, lambda t: [math.cos(t), math.cos(t / 10), math.cos(t / 100), math.cos(t / 1000),
                             math.sin(t), math.sin(t / 10), math.sin(t / 100), math.sin(t / 1000)]),
    (8, True, 1, lambda t: [math.sin(t), math.sin(t * 10 ** (-4 / 3)), math.sin(t * 10 ** (-8 / 3)),
                            math.sin(t / 10000), math.cos(t), math.cos(t * 10 ** (-4 / 3)),
                            math.cos(t * 10 ** (-8 / 3)), math.cos(t / 10000)]),
    (5, False, 0, lambda t: [math.cos(t), math.cos(t / 100), math.sin(t), math.sin(t / 100), 0.0]),
    (5, True, 1, lambda t: [math.sin(t), math.sin(t / 10000), math.cos(t), math.cos(t / 10000), 0.0]),
])
def test_embedding_by_hand(dim, sin_first, offset, by_hand):
    emb = sinusoidal_embedding(T, dim, sin_first=sin_first, denominator_offset=offset)
    assert emb.shape == (3, dim) and emb.dtype == torch.float32
    torch.testing.assert_close(emb, rows(by_hand), rtol=0, atol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.float16])
def test_embedding_is_float32_whatever_the_timestep_dtype(dtype):
    emb = sinusoidal_embedding(T.to(dtype), 8, sin_first=False, denominator_offset=0)
    assert emb.dtype == torch.float32
    torch.testing.assert_close(emb, sinusoidal_embedding(T, 8, sin_first=False, denominator_offset=0))
