"""Operators with per-image parameters in one batch: blurs of different kernels and masks of different pixels
stack into one operator (``stack_operators``) that gives sample i, bit for bit, what operator i gives alone —
A, Aᵀ, P_η, A⁺, the spectral basis, DiffPIR's pasted-back pixels — so every method restores a batch of them as
it restores each alone, ``ddpg restore`` runs them in one sampler call and ``ddpg serve`` in one step call."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ddpg
from ddpg.errors import OperatorError
from ddpg.io import save_image
from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator, stack_operators
from ddpg.runtime import Restorer
from ddpg.runtime.samplers import FORWARD_METHODS, SAMPLERS, get_sampler
from ddpg.serve.scheduler import advance, start_sample

SIZE = (16, 20)
SEEDS = [4, 5, 6]


def blurs() -> list:
    """Three motion blurs with kernels of different shapes and values."""
    g = np.random.default_rng(0)
    return [make_operator("deblur_motion", SIZE, kernel=g.random((k, k + 1))) for k in (3, 5, 4)]


def masks() -> list:
    """Three random masks (half the pixels missing, seeds 0, 1, 2)."""
    return [make_operator("inpainting", SIZE, ratio=0.5, seed=s) for s in range(3)]


KINDS = {"deblur_motion": blurs, "inpainting": masks}


def each_equals_its_own(batched: torch.Tensor, ops: list, fn) -> bool:
    """Whether row j·len(ops) + i of ``batched`` is, bit for bit, fn(operator i, that row)."""
    return all(torch.equal(batched[n:n + 1], fn(ops[n % len(ops)], n)) for n in range(batched.shape[0]))


@pytest.mark.parametrize("kind", KINDS)
def test_a_stacked_operator_gives_each_sample_its_own_operators_bits(kind):
    ops = KINDS[kind]()
    stacked = stack_operators(ops)
    assert stacked.samples == 3 and stacked is not ops[0]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, *SIZE, generator=g)
    eta = torch.tensor([1e-3, 0.1, 0.5]).view(3, 1, 1, 1)  # DiffPIR's per-sample ρ
    for name in ("A", "At", "pinv"):
        assert each_equals_its_own(getattr(stacked, name)(x), ops,
                                   lambda op, n, name=name: getattr(op, name)(x[n:n + 1]))
    assert each_equals_its_own(stacked.pinv_eta(x, 0.1), ops, lambda op, n: op.pinv_eta(x[n:n + 1], 0.1))
    assert each_equals_its_own(stacked.pinv_eta(x, eta), ops, lambda op, n: op.pinv_eta(x[n:n + 1], eta[n:n + 1]))
    assert each_equals_its_own(stacked.paste_known(x, x.flip(0)), ops,
                               lambda op, n: op.paste_known(x[n:n + 1], x.flip(0)[n:n + 1]))
    candidates = torch.randn(6, 3, *SIZE, generator=g)  # two per sample, candidate-major (DPPS's and DDPG's scores)
    assert each_equals_its_own(stacked.A(candidates), ops, lambda op, n: op.A(candidates[n:n + 1]))
    basis = stacked.spectral(torch.device("cpu"), "DDRM")
    for i, op in enumerate(ops):
        own = op.spectral(torch.device("cpu"), "DDRM")
        assert torch.equal(basis.s[i], own.s.expand_as(basis.s[i]))
        assert torch.equal(basis.meas_coef(x)[i:i + 1], own.meas_coef(x[i:i + 1]))
        assert torch.equal(basis.image(basis.coef(x))[i:i + 1], own.image(own.coef(x[i:i + 1])))


def test_operators_stack_only_with_their_kind_and_batch():
    blur, mask = blurs(), masks()
    assert stack_operators([mask[0]] * 3) is mask[0]  # one operator broadcasts over the batch, as always
    with pytest.raises(OperatorError, match="cannot share a batch"):
        stack_operators([blur[0], mask[0]])
    with pytest.raises(OperatorError, match="cannot share a batch"):
        stack_operators([make_operator("sr_bicubic", SIZE, scale=2), make_operator("sr_bicubic", SIZE, scale=2)])
    with pytest.raises(OperatorError, match="a batch of 2 images for an operator of 3 samples"):
        stack_operators(blur).A(torch.zeros(2, 3, *SIZE))
    with pytest.raises(OperatorError, match="no flat SVD layout"):
        stack_operators(mask).Vt(torch.zeros(3, 3, *SIZE))


def measurements(ops: list, sigma_y: float) -> torch.Tensor:
    x = torch.rand(3, 3, *SIZE, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return torch.cat([Restorer(None, op, sigma_y=sigma_y).degrade(x[i:i + 1], [s])
                      for i, (op, s) in enumerate(zip(ops, SEEDS, strict=True))])


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
@pytest.mark.parametrize("method", [*SAMPLERS, "ddpg+select"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_method_restores_a_batch_of_different_operators_as_each_alone(kind, method, sigma_y):
    """Bit for bit: a batch of three kernels (or masks) equals three single restorations."""
    ops, denoiser = KINDS[kind](), as_denoiser(create_prior("gaussian"))
    method, hyper = ("ddpg", {"select_candidates": True}) if method == "ddpg+select" else (method, {})
    spec = get_sampler(method)
    needs_grad = spec.capabilities(spec.build(sigma_y, hyper)).needs_grad
    steps = 3 if needs_grad else 5
    y = measurements(ops, sigma_y)

    def restore(op, y, seeds):
        with torch.set_grad_enabled(needs_grad):
            return Restorer(denoiser, op, method=method, sigma_y=sigma_y, steps=steps, hyper=hyper).restore(
                y, seeds).detach()

    alone = torch.cat([restore(op, y[i:i + 1], [SEEDS[i]]) for i, op in enumerate(ops)])
    assert torch.equal(restore(stack_operators(ops), y, SEEDS), alone)


@pytest.mark.parametrize("method", FORWARD_METHODS)
def test_served_samples_with_different_kernels_share_a_step_call_and_equal_their_twins(method):
    ops, denoiser = blurs(), as_denoiser(create_prior("gaussian"))
    y = measurements(ops, 0.05)
    spec = get_sampler(method)
    p = spec.build(0.05)
    with torch.no_grad():
        twins = [Restorer(denoiser, op, method=method, sigma_y=0.05, steps=5).restore(y[i:i + 1], [SEEDS[i]])[0]
                 for i, op in enumerate(ops)]
        samples = [start_sample(denoiser, op, y[i:i + 1], spec.method, p, 5, SEEDS[i], ("blur", p))
                   for i, op in enumerate(ops)]
        while samples[0].index < 5:
            advance(denoiser, samples)
    assert samples[0].stacked[1].samples == 3  # the group stepped with the three kernels stacked
    for sample, twin in zip(samples, twins, strict=True):
        assert torch.equal(sample.result, twin)


@pytest.mark.parametrize("task, options", [("deblur_motion", {}), ("inpaint", {"mask": "random:0.5"})])
def test_restore_runs_per_image_operators_in_one_call_with_the_outputs_of_one_by_one(tmp_path, task, options):
    """Three faces whose motion kernels (seed 10·i) or random masks (the image's seed) differ: restored at batch
    size 3 in one sampler call, with the PNGs of a batch-size-1 run."""
    gen = torch.Generator().manual_seed(3)
    (tmp_path / "in").mkdir()
    for i in range(3):
        save_image(torch.rand(3, 64, 64, generator=gen), tmp_path / "in" / f"face{i}.png")
    common = {"task": task, "prior": "gaussian", "steps": 4, "seed": 2, **options}
    for batch in (1, 3):
        report = ddpg.restore([str(tmp_path / "in")], tmp_path / f"b{batch}", batch_size=batch, **common)
        assert len(report.done) == 3 and not report.failed
    for i in range(3):
        sidecar = json.loads((tmp_path / "b3" / f"face{i}.json").read_text())
        assert sidecar["timings_s"]["images_in_batch"] == 3
        for name in (f"face{i}_restored.png", f"face{i}_observed.png"):
            assert (tmp_path / "b3" / name).read_bytes() == (tmp_path / "b1" / name).read_bytes()
