"""DDPG/IDPG replay the reference's recorded runs (same ε-model, operator, y, x_T and noise)."""

import pytest

from conftest import rel_err
from ddpg.runtime import ddpg_sample
from reference_runs import RUN_PARAMS, load_run, run_hyper


@pytest.mark.parametrize("run", RUN_PARAMS)
def test_reference_run_is_reproduced(run):
    """``output`` and ``last_x0`` within 1e-4 relative L2 (the fixture README's tolerance; measured ≤ 5e-6).
    The flat y is reshaped to the operator's measurement; its layout is checked first: y − A(x_true) must be
    the recorded noise level (exactly 0 for σ_y = 0, else std within 15% of 2σ_y)."""
    fx, op, den, y = load_run(run)
    resid = y - op.A(fx["x_true"])
    if fx["sigma_y_pm1"] == 0:
        assert float(resid.abs().max()) < 1e-5
    else:
        assert abs(float(resid.std()) / fx["sigma_y_pm1"] - 1) < 0.15
    noise = iter(fx["noise"])
    x0s = []
    out = ddpg_sample(den, op, y, fx["sigma_y_01"], x_T=fx["x_T"], noise=lambda like: next(noise),
                      callback=lambda k, x, x0: x0s.append(x0), **run_hyper(fx))
    assert next(noise, None) is None and len(x0s) == fx["T_sampling"]  # exactly one draw per step
    assert rel_err(out, fx["output"]) < 1e-4
    assert rel_err(x0s[-1], fx["last_x0"]) < 1e-4
