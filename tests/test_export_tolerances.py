"""Export validation's pass criterion at its bounds: the default tolerances are pinned, and a difference just
over each bound (relative L2 per timestep, max |Δ|) fails while one just under passes.

The exported model is ε = x/2 (exact in float32 under ONNX Runtime); the references are chosen so that the
errors are known in closed form: ε_ref = x/(2(1+ρ)) gives Δ = ρ·ε_ref, a relative L2 of exactly ρ; adding c
at one output element gives max |Δ| = c."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ddpg.export import export_module
from ddpg.export.validate import DEFAULT_RTOL, default_rtol, validate_onnx
from ddpg.schedule import linear_schedule

pytest.importorskip("onnxruntime")

SIZE = (8, 8)
TIMESTEPS = (999, 500, 100, 0)


class Half(nn.Module):
    """ε = x/2 (t enters with weight 0 so the graph keeps its input)."""

    downsample_factor = 1

    def __init__(self):
        super().__init__()
        self.config = {"kind": "ddpm", "name": "half", "image_size": SIZE[0]}

    def forward(self, x, t):
        return x * 0.5 + (t * 0.0)[:, None, None, None]


class Reference(nn.Module):
    """x/(2(1+ρ_t)) + c at output element (0, 0, 0, 0) of every call: relative L2 ρ_t at timestep t, and
    max |Δ| = max(c, max|x|·ρ/(2(1+ρ)))."""

    def __init__(self, rho: float | dict[int, float], c: float = 0.0):
        super().__init__()
        self.rho, self.c = rho, c

    def forward(self, x, t):
        rho = torch.tensor([self.rho[int(ti)] if isinstance(self.rho, dict) else self.rho for ti in t.tolist()],
                           dtype=torch.float64).view(-1, 1, 1, 1)
        out = (x.double() / (2 * (1 + rho))).float()
        out[0, 0, 0, 0] += self.c
        return out


@pytest.fixture(scope="module")
def half_onnx(tmp_path_factory):
    return export_module(Half().eval(), tmp_path_factory.mktemp("half") / "half.onnx", batch="1:2:2",
                         validate=False, optimize=False).path


def check(path, reference, **kw):
    return validate_onnx(path, reference, batches=(1, 2), timesteps=TIMESTEPS, size=SIZE,
                         schedule=linear_schedule(), **kw)


def test_default_tolerances_are_pinned():
    assert DEFAULT_RTOL == {"fp32": 1e-5, "fp16": 1e-2, "bf16": 1e-2}
    assert [default_rtol(p) for p in ("fp32", "fp16", "bf16")] == [1e-5, 1e-2, 1e-2]


def test_the_exported_model_matches_itself_exactly(half_onnx):
    report = check(half_onnx, Half())
    assert report.passed and report.max_abs == 0.0 and report.rel_l2 == 0.0
    assert report.rtol == 1e-5 and report.atol is None


@pytest.mark.parametrize("precision, bound", [("fp32", 1e-5), ("fp16", 1e-2), ("bf16", 1e-2)])
def test_default_relative_tolerance_passes_just_under_and_fails_just_over(half_onnx, precision, bound):
    under, over = check(half_onnx, Reference(0.8 * bound), precision=precision), \
        check(half_onnx, Reference(1.25 * bound), precision=precision)
    assert under.rtol == over.rtol == bound
    assert under.worst_rel_l2 == pytest.approx(0.8 * bound, rel=1e-2) and under.passed
    assert over.worst_rel_l2 == pytest.approx(1.25 * bound, rel=1e-2) and not over.passed


def test_an_explicit_relative_tolerance_replaces_the_default(half_onnx):
    assert check(half_onnx, Reference(1e-3), rtol=1.25e-3).passed
    assert not check(half_onnx, Reference(1e-3), rtol=0.8e-3).passed


def test_the_worst_timestep_decides(half_onnx):
    """Relative L2 1.25e-5 at t = 500 only, 1e-6 elsewhere: the overall relative L2 is under the bound, the
    worst timestep is not, so the check fails and names t = 500."""
    rho = {999: 1e-6, 500: 1.25e-5, 100: 1e-6, 0: 1e-6}
    report = check(half_onnx, Reference(rho))
    assert report.worst_timestep == 500 and not report.passed
    assert report.per_timestep[500] == pytest.approx(1.25e-5, rel=1e-2)
    assert report.per_timestep[999] == pytest.approx(1e-6, rel=5e-2)
    assert report.rel_l2 < 1e-5  # the pooled statistic alone would have passed


def test_absolute_tolerance_passes_just_under_and_fails_just_over(half_onnx):
    """One element off by c = 1e-3 (relative L2 far below a generous rtol): max |Δ| = c decides."""
    c = 1e-3
    assert check(half_onnx, Reference(0.0, c)).max_abs == pytest.approx(c, rel=1e-3)
    assert check(half_onnx, Reference(0.0, c), rtol=0.5, atol=1.05 * c).passed
    assert not check(half_onnx, Reference(0.0, c), rtol=0.5, atol=0.95 * c).passed
    assert check(half_onnx, Reference(0.0, c), rtol=0.5).passed  # no atol: max |Δ| is not checked


def test_both_bounds_must_hold(half_onnx):
    """Within atol but over rtol fails, as does within rtol but over atol."""
    assert not check(half_onnx, Reference(1.25e-5), atol=1.0).passed
    assert not check(half_onnx, Reference(0.0, 1e-3), rtol=1.0, atol=0.95e-3).passed


def test_pooled_statistics(half_onnx):
    """Uniform ρ: every timestep's and the pooled relative L2 are ρ (to float32 rounding of the reference, a
    relative 1e-4 here). One element off by c: median and 99th percentile of |Δ| are 0 (one element per call:
    6 of 1536), the maximum is c."""
    uniform = check(half_onnx, Reference(1e-3))
    assert uniform.rel_l2 == pytest.approx(1e-3, rel=1e-4) and 0 < uniform.median_abs <= uniform.p99_abs
    assert all(v == pytest.approx(1e-3, rel=1e-4) for v in uniform.per_timestep.values())
    assert uniform.p99_abs <= uniform.max_abs
    one = check(half_onnx, Reference(0.0, 1e-3), rtol=1.0)
    assert one.median_abs == 0.0 and one.p99_abs == 0.0 and one.max_abs == pytest.approx(1e-3, rel=1e-3)
    assert one.batches == [1, 2] and one.timesteps == list(TIMESTEPS)


class HalfWithLabels(Half):
    """Class-conditional: ε = x/2 + y/10 (y the class label)."""

    num_classes = 3

    def forward(self, x, t, y):
        return super().forward(x, t) + 0.1 * y.float()[:, None, None, None]


def test_class_labels_reach_the_export_and_the_reference(tmp_path):
    """A conditional export gets the same labels as its reference: validated against itself it matches exactly;
    against a reference that ignores the labels it does not."""
    path = export_module(HalfWithLabels().eval(), tmp_path / "cond.onnx", batch="2", validate=False,
                         optimize=False).path
    kw = {"batches": (2,), "timesteps": TIMESTEPS, "size": SIZE, "schedule": linear_schedule(), "num_classes": 3}
    assert validate_onnx(path, HalfWithLabels(), **kw).max_abs == 0.0
    assert not validate_onnx(path, lambda x, t, y: Half()(x, t), **kw).passed


def test_ratio_by_hand():
    from ddpg.export.validate import error_ratio

    assert error_ratio(4.0, 16.0) == 0.5 and error_ratio(0.0, 0.0) == 0.0 and error_ratio(1e-30, 0.0) == float("inf")
    assert error_ratio(0.25, 0.25) == 1.0 and error_ratio(0.0, 1e-30) == 0.0


def test_reported_seconds_are_the_time_the_check_took(half_onnx):
    """A bound from the clock read around the call (no speed threshold): 0 ≤ seconds ≤ the elapsed time."""
    import time

    start = time.perf_counter()
    report = check(half_onnx, Half())
    elapsed = time.perf_counter() - start
    assert 0 <= report.seconds <= elapsed + 1e-3


def test_an_error_equal_to_the_tolerance_passes(half_onnx):
    """The bounds are inclusive: tolerances set to the errors a first check measured pass a second, identical
    check (same inputs, same seed, so the same errors to the last bit)."""
    first = check(half_onnx, Reference(1e-3, 2e-3), rtol=1.0)
    again = check(half_onnx, Reference(1e-3, 2e-3), rtol=first.worst_rel_l2, atol=first.max_abs)
    assert again.worst_rel_l2 == first.worst_rel_l2 and again.max_abs == first.max_abs and again.passed
