"""DDPG/IDPG with the whole sampler step (denoiser + guidance + noise) in one CUDA graph.

The per-step scalars of ``ddpg.runtime.samplers.ddpg.step_scalars`` (ᾱ_t, ᾱ_{t'}, δ, w, step sizes) are put in
a (steps, K) device table once per run; before each step one row is copied (``copy_``, device to device) into
a static buffer that the step reads, so one graph serves every step. The step is branch-free: where the
eager step skips a term whose weight is 0 at some steps (the BP term at δ = 1), this one multiplies it by 0,
which computes the same function; a term that is 0 at every step (the LS term when σ = 0) is left out. Inputs
(x_t, y, z) live in preallocated static buffers; nothing in the loop calls ``.item()``, ``.cpu()`` or
branches on tensor values.

Noise: with ``noise=`` (or ``generator=``) z comes from the caller, drawn outside the graph and copied into the
static z buffer, so a run replays ``ddpg_sample`` exactly (and ``restore(y, seeds)`` replays
``Restorer.restore``). Without them z is drawn inside the graph from the runner's own generator (seeded by
``seed``), registered with the graph so every replay advances it.

Capture: warm-up and capture run on one side stream of the runner's device, under that device and under
``ddpg.runtime.cuda_graph.CAPTURE_LOCK`` (which ``Prefetcher`` loads also hold), because PyTorch forbids
non-captured CUDA work on any thread while a capture is underway; ``capture_error_mode="thread_local"``
only keeps other threads' CUDA calls from invalidating the capture.

On CPU (or ``cuda_graph=False``) the same step runs eagerly: the fallback and the reference for tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.runtime.cuda_graph import CAPTURE_LOCK
from ddpg.runtime.fast_denoiser import GRAPHING_COMPILE_MODES
from ddpg.runtime.samplers.ddpg import GuidanceParams, NoiseSource, check_measurement, gaussian_noise, step_scalars
from ddpg.schedule import linear_schedule, time_pairs

# columns of the per-step table
COLUMNS = ("t", "sqrt_a", "sqrt_1m_a", "sqrt_a_next", "sqrt_1m_a_next", "step", "coef_bp", "coef_ls", "mix_eps")
GRAPH_METHODS = ("ddpg", "idpg")


def step_table(schedule, steps: int, p: GuidanceParams) -> torch.Tensor:
    """(steps, len(COLUMNS)) float64 table of every per-step scalar, from the eager sampler's ``step_scalars``.

    coef_bp = s_BP·(1−δ), coef_ls = s_LS·δ·c, mix_eps = √(1−ζ)·w.
    """
    rows = []
    for k in step_scalars(schedule, time_pairs(steps, schedule.num_timesteps), p):
        rows.append([float(k.t), math.sqrt(k.a), math.sqrt(1 - k.a), math.sqrt(k.a_next), math.sqrt(1 - k.a_next),
                     k.step, k.step_bp * (1 - k.delta), k.step_ls * k.delta * p.scale_ls,
                     math.sqrt(1 - p.zeta) * k.w])
    return torch.tensor(rows, dtype=torch.float64)


@dataclass
class _Buffers:
    """Static tensors of one batch size; the graph reads and writes only these."""

    x: torch.Tensor  # x_t (B,3,H,W)
    y: torch.Tensor  # measurement
    z: torch.Tensor  # per-step noise
    x0: torch.Tensor  # x̂₀ of the last step
    x_tilde: torch.Tensor  # x̃ of the last step
    t: torch.Tensor  # (B,) timestep values
    row: torch.Tensor  # (K,) the current step's scalars
    graph: object = None  # torch.cuda.CUDAGraph once captured
    graph_noise: bool = False  # whether the captured graph draws z itself


class FastDDPGRunner:
    """DDPG/IDPG for fixed shapes with preallocated buffers and (on CUDA) one CUDA graph per batch size.

    Same function as ``ddpg_sample(denoiser, operator, y, sigma_y, steps=..., **hyper)``. ``denoiser``: any
    object of the denoiser interface; whole-step capture needs ``denoiser.graph_safe`` (``FastDenoiser`` over a
    UNet; ONNX Runtime has its own graph option instead). ``cuda_graph``: None = on when the operator's
    device is CUDA and the denoiser is graph-safe. ``warmup``: eager steps before capture (lazy init, cuDNN
    autotuning, cuFFT plans, torch.compile).
    """

    def __init__(self, denoiser, operator: Operator, sigma_y: float = 0.0, *, steps: int = 100,
                 gamma: float = 8.0, zeta: float = 0.5, eta_tilde: float = 0.7, xi: float = 1e-5,
                 step_size_mode: int = 1, scale_ls: float = 1.0, inject_noise: bool = True,
                 cuda_graph: bool | None = None, warmup: int = 2, device: torch.device | str | None = None):
        self.p = GuidanceParams(float(sigma_y), float(gamma), float(zeta), float(eta_tilde), float(xi),
                                int(step_size_mode), float(scale_ls), bool(inject_noise))
        self.p.validate()
        self.denoiser, self.operator, self.steps = denoiser, operator, int(steps)
        self.device = torch.device(device) if device is not None else operator.device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        on_cuda = self.device.type == "cuda"
        graph_safe = bool(getattr(denoiser, "graph_safe", False))
        if cuda_graph and not on_cuda:
            raise ConfigError(f"cuda_graph needs a CUDA device; the operator is on {self.device}")
        if cuda_graph and not graph_safe:
            raise ConfigError(f"cuda_graph: the {getattr(denoiser, 'backend', '?')} denoiser cannot be captured "
                              "in a torch CUDA graph (use the backend's own graph option)")
        mode = getattr(denoiser, "compile_mode", None)
        if cuda_graph and mode in GRAPHING_COMPILE_MODES and getattr(denoiser, "compiled", False):
            raise ConfigError(f"cuda_graph: torch.compile mode {mode!r} makes its own CUDA graphs; use compile_mode "
                              "'default' or 'max-autotune-no-cudagraphs' with the whole-step graph")
        self.cuda_graph = bool(on_cuda and graph_safe) if cuda_graph is None else bool(cuda_graph)
        self.warmup = max(1, int(warmup))
        schedule = getattr(denoiser, "schedule", None) or linear_schedule()
        self.table = step_table(schedule, self.steps, self.p).to(self.device, torch.float32)
        self.generator = torch.Generator(device=self.device)
        self._buffers: dict[tuple, _Buffers] = {}

    @classmethod
    def from_restorer(cls, restorer, **options) -> FastDDPGRunner:
        """The runner for a ``ddpg.runtime.Restorer`` configured with method ddpg or idpg."""
        if restorer.method not in GRAPH_METHODS:
            raise ConfigError(f"the fast runner implements {', '.join(GRAPH_METHODS)}, not {restorer.method}")
        hyper = dict(restorer.hyper)
        if hyper.pop("select_candidates", False):
            raise ConfigError("the fast runner does not implement noise-candidate selection (select_candidates); "
                              "use the plain Restorer for it")
        hyper.pop("n_max", None)  # only used with select_candidates
        return cls(restorer.denoiser, restorer.operator, restorer.sigma_y, steps=restorer.steps,
                   inject_noise=restorer.method == "ddpg", **hyper, **options)

    @property
    def method(self) -> str:
        return "ddpg" if self.p.inject_noise else "idpg"

    def settings(self) -> dict:
        """As ``Restorer.settings`` plus the runner's speed options."""
        hyper = {k: getattr(self.p, k) for k in ("gamma", "zeta", "eta_tilde", "xi", "step_size_mode", "scale_ls")}
        options = getattr(self.denoiser, "options", dict)()
        return {"method": self.method, "sigma_y": self.p.sigma_y, "steps": self.steps, "hyper": hyper,
                "operator": {"name": self.operator.name, **self.operator.params},
                "fast": {"cuda_graph": self.cuda_graph, **options}}

    # --- the step ---------------------------------------------------------------------------------------
    def _step(self, b: _Buffers, draw_noise: bool, eps: torch.Tensor | None = None) -> None:
        """One step on the static buffers (the captured region). Reads b.row, b.x, b.y, b.z; writes b.x,
        b.x0, b.x_tilde. ``eps``: a fixed ε instead of the denoiser (guidance timing)."""
        t, sqa, sq1ma, sqa_next, sq1ma_next, step, coef_bp, coef_ls, mix_eps = b.row.unbind(0)
        if eps is None:
            b.t.copy_(t.expand_as(b.t))
            eps = self.denoiser(b.x, b.t).float()
        x0 = (b.x - sq1ma * eps) / sqa
        r = self.operator.A(x0) - b.y
        update = coef_bp * self.operator.pinv_eta(r, self.p.eta)
        if self.p.scale_ls > 0 and self.p.sigma > 0:  # σ = 0: δ = 0 at every step, no LS term (as eager)
            update = update + coef_ls * self.operator.At(r)
        x_tilde = x0 - step * update
        if draw_noise:
            b.z.normal_(generator=self.generator)
        if self.p.inject_noise:
            eps_hat = (b.x - sqa * x_tilde) / sq1ma
            mix = math.sqrt(self.p.zeta) * b.z + mix_eps * eps_hat
            x_next = sqa_next * x_tilde + sq1ma_next * mix
        else:
            x_next = sqa_next * x_tilde
        b.x0.copy_(x0)
        b.x_tilde.copy_(x_tilde)
        b.x.copy_(x_next)

    def _new_buffers(self, y_shape: tuple[int, ...]) -> _Buffers:
        shape = (y_shape[0], 3, *self.operator.img_size)

        def zeros(s=shape):
            return torch.zeros(s, device=self.device)

        return _Buffers(x=zeros(), y=zeros(y_shape), z=zeros(), x0=zeros(), x_tilde=zeros(), t=zeros(shape[0]),
                        row=zeros(len(COLUMNS)))

    def _buffers_for(self, y: torch.Tensor) -> _Buffers:
        key = tuple(y.shape)
        if key not in self._buffers:
            self._buffers[key] = self._new_buffers(key)
        return self._buffers[key]

    def _capture(self, b: _Buffers, graph_noise: bool, eps: torch.Tensor | None = None) -> None:
        """Warm up on a side stream of ``self.device``, then capture one step on that stream. Buffers hold junk
        afterwards; callers refill. Holds ``CAPTURE_LOCK`` throughout (see the module docstring)."""
        with CAPTURE_LOCK, torch.cuda.device(self.device):
            b.row.copy_(self.table[0])
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self._step(b, graph_noise, eps)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            if graph_noise:  # before capture begins; its RNG state tensors go to the current device
                if not hasattr(graph, "register_generator_state"):
                    raise ConfigError("in-graph noise needs a torch with CUDAGraph.register_generator_state; pass "
                                      "noise= or generator= instead")
                graph.register_generator_state(self.generator)
            # an explicit stream: graph's shared default capture stream lives on whichever device was current
            # when the first graph in the process was made
            with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                self._step(b, graph_noise, eps)
        b.graph, b.graph_noise = graph, graph_noise

    # --- public -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, y: torch.Tensor, *, x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
               generator: torch.Generator | None = None, seed: int | None = None,
               callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Restorations (B,3,H,W) float32, [-1, 1] scale, not clamped (a new tensor).

        ``noise``/``generator`` as in ``ddpg_sample`` (z drawn outside the graph: exact replay). With neither,
        x_T and z come from the runner's generator seeded with ``seed`` (default 0), z inside the graph.
        ``callback(step, x_t, x0)`` receives the live static buffers: clone them to keep them.
        """
        check_measurement(self.operator, y)
        if y.device != self.device:
            raise ConfigError(f"y is on {y.device} but this runner computes on {self.device} (the operator's "
                              "device unless device= is given): move the operator with .to(device) first")
        shape = (y.shape[0], 3, *self.operator.img_size)
        if x_T is not None and tuple(x_T.shape) != shape:
            raise ConfigError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
        if generator is not None and noise is None:
            noise = gaussian_noise(generator)
        graph_noise = noise is None
        b = self._buffers_for(y)
        if self.cuda_graph and (b.graph is None or b.graph_noise != graph_noise):
            self._capture(b, graph_noise)
        if graph_noise:
            self.generator.manual_seed(0 if seed is None else int(seed))
        if x_T is None:
            x_T = torch.randn(shape, generator=generator if generator is not None else self.generator,
                              device=self.device)
        b.y.copy_(y)
        b.x.copy_(x_T)
        for i in range(self.steps):
            b.row.copy_(self.table[i])
            if not graph_noise:
                b.z.copy_(noise(b.x))
            if self.cuda_graph:
                b.graph.replay()
            else:
                self._step(b, graph_noise)
            if callback is not None:
                callback(i, b.x, b.x0)
        return (b.x_tilde if self.p.sigma == 0 else b.x0).clone()

    def restore(self, y: torch.Tensor, seeds: Sequence[int],
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """As ``Restorer.restore``: x_T and every z from each image's own seed stream, so the output equals the
        Restorer's (and a batch equals the single runs)."""
        from ddpg.runtime.restorer import seeded_start

        if len(seeds) != y.shape[0]:
            raise ConfigError(f"{len(seeds)} seeds for a batch of {y.shape[0]}")
        x_T, noise = seeded_start(seeds, self.operator.img_size, self.device)
        return self.sample(y, x_T=x_T, noise=noise, callback=callback)

    def release(self) -> None:
        """Drop every static buffer and captured graph (their memory returns to torch's caching allocator).
        Waits for the device first: a graph freed while a replay is in flight can free its RNG state tensors
        under it."""
        if any(b.graph is not None for b in self._buffers.values()):
            torch.cuda.synchronize(self.device)
        self._buffers.clear()

    @torch.no_grad()
    def guidance_only(self, y: torch.Tensor, eps: torch.Tensor) -> Callable[[], None]:
        """A callable running one step's guidance and re-noising with a fixed ε (no denoiser): what
        ``ddpg bench`` times for the guidance's share of a step. Captured in its own graph when the runner
        uses graphs (separate buffers: the sampling buffers are untouched)."""
        check_measurement(self.operator, y)
        b = self._new_buffers(tuple(y.shape))
        b.y.copy_(y)
        b.row.copy_(self.table[0])
        eps = eps.to(self.device, torch.float32).clone()
        if not self.cuda_graph:
            return lambda: self._step(b, True, eps)
        self._capture(b, True, eps)
        return b.graph.replay


def fast_ddpg_sample(denoiser, operator: Operator, y: torch.Tensor, sigma_y: float, *, steps: int = 100,
                     x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
                     generator: torch.Generator | None = None, callback=None, cuda_graph: bool | None = None,
                     **hyper) -> torch.Tensor:
    """``ddpg_sample`` with the fast runner (the sampler-registry call signature). Builds a runner per call;
    keep a ``FastDDPGRunner`` to reuse its graph across calls."""
    runner = FastDDPGRunner(denoiser, operator, sigma_y, steps=steps, cuda_graph=cuda_graph, **hyper)
    if noise is None and generator is None:  # the global generator, as ddpg_sample
        if x_T is None:
            x_T = torch.randn((y.shape[0], 3, *operator.img_size), device=runner.device)
        noise = gaussian_noise(None)
    return runner.sample(y, x_T=x_T, noise=noise, generator=generator, callback=callback)


__all__ = ["COLUMNS", "FastDDPGRunner", "fast_ddpg_sample", "step_table"]
