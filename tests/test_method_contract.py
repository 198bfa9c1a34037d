"""The contract every registered method keeps, parametrised from the sampler table (``SAMPLERS``) so a new
method is tested the moment it is registered: finite output of the image shape, a batch equal bit for bit to
its single runs, the same seeds giving the same output (and other seeds another), the callback once per step,
and — for every forward-only method — the graph runner's branch-free step (tensor rows) giving the plain
loop's bits on the CPU. Gaussian prior (exact ε), 16×16 images, circular blur, 4 steps."""

import pytest
import torch

from ddpg.models import as_denoiser, create_prior
from ddpg.operators import make_operator
from ddpg.runtime import Restorer
from ddpg.runtime.graph_runner import GraphRunner
from ddpg.runtime.samplers import FORWARD_METHODS, SAMPLERS, methods_where
from ddpg.runtime.samplers.method import State, method_grid, stack_rows
from fake_denoiser import FakeDenoiser

SIZE, STEPS = 16, 4
VARIANTS = [(name, {}) for name in SAMPLERS] + [("ddpg", {"select_candidates": True})]
IDS = [name + ("+select" if hyper else "") for name, hyper in VARIANTS]


@pytest.fixture(scope="module")
def prior():
    return create_prior("gaussian")


def restorer(prior, method: str, hyper: dict, sigma_y: float = 0.05, task: str = "deblur_gauss",
             params: dict | None = None) -> Restorer:
    op = make_operator(task, SIZE, **(params if params is not None else {"impl": "fft"}))
    return Restorer(as_denoiser(prior), op, method=method, sigma_y=sigma_y, steps=STEPS, hyper=hyper)


def observe(prior, r: Restorer, n: int = 3) -> torch.Tensor:
    return r.degrade(prior.sample(n, SIZE, generator=torch.Generator().manual_seed(0)), list(range(n)))


@pytest.mark.parametrize("method, hyper", VARIANTS, ids=IDS)
def test_shape_finiteness_and_one_callback_per_step(prior, method, hyper):
    r = restorer(prior, method, hyper)
    y = observe(prior, r)
    seen = []
    out = r.restore(y, [5, 6, 7], callback=lambda i, x_t, x0: seen.append((i, tuple(x_t.shape), tuple(x0.shape))))
    assert out.shape == (3, 3, SIZE, SIZE) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert seen == [(i, (3, 3, SIZE, SIZE), (3, 3, SIZE, SIZE)) for i in range(STEPS)]
    assert set(r.spec.hyper_names) <= set(vars(r.params))  # the hyper-parameters are the params' fields


@pytest.mark.parametrize("method, hyper", VARIANTS, ids=IDS)
def test_a_batch_equals_its_single_runs_bit_for_bit(prior, method, hyper):
    r = restorer(prior, method, hyper)
    y = observe(prior, r)
    batch = r.restore(y, [5, 6, 7])
    for i, seed in enumerate([5, 6, 7]):
        assert torch.equal(batch[i:i + 1], r.restore(y[i:i + 1], [seed])), i


@pytest.mark.parametrize("method, hyper", VARIANTS, ids=IDS)
def test_seeds_determine_the_output(prior, method, hyper):
    r = restorer(prior, method, hyper)
    y = observe(prior, r, 1)
    a, b, c = r.restore(y, [5]), r.restore(y, [5]), r.restore(y, [9])
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # another seed: another x_T (and other per-step noise)


OPERATORS = {"deblur_fft": ("deblur_gauss", {"impl": "fft"}), "sr4_svd": ("sr4", {"impl": "svd"}),
             "inpainting": ("inpainting", {"ratio": 0.5})}


@pytest.mark.parametrize("op_name", list(OPERATORS))
@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
@pytest.mark.parametrize("method", FORWARD_METHODS)
def test_the_runners_branch_free_step_gives_the_loops_bits_on_the_cpu(prior, method, sigma_y, op_name):
    task, params = OPERATORS[op_name]
    r = restorer(prior, method, {}, sigma_y, task, params)
    y = observe(prior, r, 2)
    runner = GraphRunner.from_restorer(r)
    assert not runner.cuda_graph  # CPU: the eager path of the captured function
    fast, plain = runner.restore(y, [3, 4]), r.restore(y, [3, 4])
    assert torch.equal(fast, plain)


@pytest.mark.parametrize("op_name", list(OPERATORS))
@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
@pytest.mark.parametrize("method", FORWARD_METHODS)
def test_samples_at_different_steps_share_a_step_call(prior, method, sigma_y, op_name):
    """Per-sample rows (``stack_rows``, as ``ddpg serve`` batches): sample i of a stacked step equals its single
    step with row i as a tensor, and its single step with the Python-float row (the eager loop's), bit for bit.
    Rows: the first step and the last."""
    task, params = OPERATORS[op_name]
    r = restorer(prior, method, {}, sigma_y, task, params)
    g = torch.Generator().manual_seed(1)
    y = observe(prior, r, 2)
    x_T, eps, z = (torch.randn(2, 3, SIZE, SIZE, generator=g) for _ in range(3))
    method_, p, schedule = r.spec.method, r.params, r.denoiser.schedule
    rows = method_.table(schedule, method_grid(method_, schedule, STEPS), p)
    picked = [rows[0], rows[-1]]
    singles = [method_.start(y[i:i + 1], r.operator, p, x_T[i:i + 1], schedule, rows) for i in range(2)]
    stacked = State(*(torch.cat([getattr(s, k) for s in singles]) for k in ("x", "x0", "out")), singles[0].ctx)
    together = method_.step(stacked, eps, stack_rows(picked), z, y, r.operator, p, "epsilon")
    for i, (single, row) in enumerate(zip(singles, picked, strict=True)):
        args = (eps[i:i + 1], z[i:i + 1], y[i:i + 1], r.operator, p, "epsilon")
        as_tensor = method_.step(single, args[0], stack_rows([row]), *args[1:])
        as_float = method_.step(single, args[0], row, *args[1:])
        for name in ("x", "x0", "out"):
            got = getattr(together, name)[i:i + 1]
            assert torch.equal(got, getattr(as_tensor, name)), (i, name)
            assert torch.equal(got, getattr(as_float, name)), (i, name)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CUDA graphs)")


@needs_cuda
@pytest.mark.parametrize("method", methods_where(lambda capabilities: capabilities.capturable))
def test_cuda_graph_replay_matches_the_eager_loop(method, monkeypatch):
    """On CUDA: the captured step against the plain loop (relative L2 < 1e-5: a division by a Python scalar may
    run as a multiplication by its reciprocal there)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    op = make_operator("deblur_gauss", SIZE, impl="fft").to("cuda")

    prior = create_prior("gaussian")
    inner = as_denoiser(prior.to("cuda"))

    class GraphSafe(FakeDenoiser):  # the Gaussian prior's ε (FFTs and elementwise ops only), marked capturable
        graph_safe, schedule = True, inner.schedule

        def __call__(self, x, t):
            return inner(x, t)

    r = Restorer(GraphSafe(), op, method=method, sigma_y=0.05, steps=STEPS)
    y = r.degrade(prior.sample(2, SIZE, generator=torch.Generator("cuda").manual_seed(0)), [0, 1])
    with torch.no_grad():
        graph = GraphRunner.from_restorer(r, cuda_graph=True).restore(y, [3, 4])
        eager = r.restore(y, [3, 4])
    assert ((graph - eager).norm() / eager.norm()).item() < 1e-5


class HalfEps:
    """A denoiser whose ε comes back in float16 (a low-precision engine's output); ``widen`` casts it back
    to float32 itself, as the step should."""

    def __init__(self, inner, widen: bool):
        self.inner, self.widen = inner, widen

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = self.inner(x, t).half()
        return eps.float() if self.widen else eps

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize("method", FORWARD_METHODS)
def test_a_half_precision_eps_is_widened_before_the_guidance_maths(prior, method):
    """The guidance runs in float32 whatever precision the denoiser returns: ε in float16 gives the bits of
    the same ε handed over in float32, in the loop and in the graph runner."""
    r = restorer(prior, method, {})
    y = observe(prior, r, 2)
    outs = []
    for widen in (False, True):
        denoiser = HalfEps(as_denoiser(prior), widen)
        half = Restorer(denoiser, r.operator, method=method, sigma_y=r.sigma_y, steps=STEPS, hyper={})
        outs.append((half.restore(y, [3, 4]), GraphRunner.from_restorer(half).restore(y, [3, 4])))
    (loop, runner), (loop_ref, runner_ref) = outs
    assert loop.dtype == runner.dtype == torch.float32
    assert torch.equal(loop, loop_ref) and torch.equal(runner, runner_ref)
    assert not torch.equal(loop_ref, r.restore(y, [3, 4]))  # float16 ε does differ from float32 ε
