"""Any forward-only method with the whole step (denoiser + ``method.step`` + noise) in one CUDA graph.

The method's own table (:mod:`.samplers.method`: one row of per-step scalars per step) goes to a (steps, K)
float32 device table once per run; before each step one row is copied (device to device) into a static
buffer, and the captured function reads it as 0-d tensors and calls exactly the method's ``step`` — the step
the eager loop ``run_method`` calls with Python floats. With tensor rows the step is branch-free (a term
whose weight is 0 at some step is multiplied by 0, not skipped), so one graph serves every step. Inputs
(x_t, y, z) and the state live in preallocated static buffers; nothing in the loop calls ``.item()``,
``.cpu()`` or branches on tensor values.

Noise: with ``noise=`` (or ``generator=``) z comes from the caller, drawn outside the graph by the method's
``draw`` and copied into the static z buffer, so a run replays ``run_method`` exactly (and ``restore(y,
seeds)`` replays ``Restorer.restore``). Without them z is drawn inside the graph from the runner's own
generator (seeded by ``seed``), registered with the graph so every replay advances it.

Capture: :func:`ddpg.runtime.cuda_graph.capture_graph`. On CPU (or ``cuda_graph=False``) the same function
runs eagerly: the fallback and, on the CPU, bit-identical to ``run_method`` (tested for every forward-only
method and operator). Not here: what the method's capabilities rule out — noise-candidate selection (DDPG's
select_candidates: a candidate count that changes per step) and autograd loops (DPS/DPPS).
DiffPIR passes its per-step ρ to ``operator.pinv_eta`` as a tensor; the operators' η check leaves tensors
unread (ρ > 0 follows from its validated params), so its step is captured like the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch

from ddpg.errors import ConfigError
from ddpg.operators.base import Operator
from ddpg.runtime.cuda_graph import capture_graph
from ddpg.runtime.fast_denoiser import GRAPHING_COMPILE_MODES
from ddpg.runtime.restorer import seeded_start
from ddpg.runtime.samplers import get_sampler, methods_where
from ddpg.runtime.samplers.common import NoiseSource, check_inputs, gaussian_noise
from ddpg.runtime.samplers.method import State, method_grid, row_of, row_table

# the methods whose step can be captured with their default params (a listing for messages)
GRAPH_METHODS = methods_where(lambda capabilities: capabilities.capturable)


@dataclass
class _Buffers:
    """Static tensors of one batch size; the graph reads and writes only these."""

    x: torch.Tensor  # x_t (B,3,H,W)
    y: torch.Tensor  # measurement
    z: torch.Tensor  # per-step noise
    x0: torch.Tensor  # x̂₀ of the last step
    out: torch.Tensor  # the state's ``out`` of the last step
    t: torch.Tensor  # (B,) timestep values
    row: torch.Tensor  # (K,) the current step's scalars
    ctx: object = None  # the method's constants from its first start (operator and b.y only), kept
    graph: object = None  # torch.cuda.CUDAGraph once captured
    graph_noise: bool = False  # whether the captured graph draws z itself


class GraphRunner:
    """A forward-only method (ddpg, idpg, ddnm, ddrm, diffpir) for fixed shapes with preallocated buffers and
    (on CUDA) one CUDA graph per batch size. Same function as ``Restorer(denoiser, operator, method=...,
    sigma_y=..., steps=..., hyper=...)``; the method's capabilities with these params must allow fixed-shape steps
    (and capture, for a graph). ``denoiser``: any denoiser of the interface; whole-step capture needs
    ``denoiser.graph_safe`` (``FastDenoiser`` over a UNet). ``cuda_graph``: None = on when the operator's device
    is CUDA, the denoiser is graph-safe and the step capturable. ``warmup``: eager steps before capture."""

    def __init__(self, denoiser, operator: Operator, method: str = "ddpg", sigma_y: float = 0.0, *,
                 steps: int | None = None, hyper: dict | None = None, cuda_graph: bool | None = None,
                 warmup: int = 2, device: torch.device | str | None = None):
        self.spec = get_sampler(method)
        self.p = self.spec.build(sigma_y, hyper)
        capabilities = self.spec.capabilities(self.p)
        if capabilities.needs_grad:
            raise ConfigError(f"the graph runner runs forward-only methods, not {method} (it "
                              f"{capabilities.why_not})")
        if capabilities.noise_selection:
            raise ConfigError(f"the graph runner does not implement noise-candidate selection (method {method} with "
                              "select_candidates); use the plain Restorer for it")
        self.method, self.name, self.hyper = self.spec.method, method, dict(hyper or {})
        self.denoiser, self.operator = denoiser, operator
        self.steps = int(steps if steps is not None else self.spec.default_steps)
        self.device = torch.device(device) if device is not None else operator.device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if cuda_graph and not capabilities.capturable:
            raise ConfigError(f"cuda_graph: the {method} step cannot be captured (it {capabilities.why_not}; graph "
                              f"methods: {', '.join(GRAPH_METHODS)}); it runs eagerly with cuda_graph=None or False")
        self.cuda_graph = self._use_graph(cuda_graph) and capabilities.capturable
        self.warmup = max(1, int(warmup))
        self.schedule = denoiser.schedule
        self.rows = self.method.table(self.schedule, method_grid(self.method, self.schedule, self.steps), self.p)
        self.prediction = denoiser.prediction
        self.row_cls = type(self.rows[0])
        self.table = row_table(self.rows, self.device)
        self.generator = torch.Generator(device=self.device)
        self._buffers: dict[tuple, _Buffers] = {}

    def _use_graph(self, cuda_graph: bool | None) -> bool:
        on_cuda = self.device.type == "cuda"
        graph_safe = self.denoiser.graph_safe
        if cuda_graph and not on_cuda:
            raise ConfigError(f"cuda_graph needs a CUDA device; the operator is on {self.device}")
        if cuda_graph and not graph_safe:
            raise ConfigError(f"cuda_graph: the {self.denoiser.backend} denoiser cannot be captured in a torch CUDA "
                              "graph (use the backend's own graph option)")
        mode = self.denoiser.compile_mode
        if cuda_graph and mode in GRAPHING_COMPILE_MODES:
            raise ConfigError(f"cuda_graph: torch.compile mode {mode!r} makes its own CUDA graphs; use compile_mode "
                              "'default' or 'max-autotune-no-cudagraphs' with the whole-step graph")
        return bool(on_cuda and graph_safe) if cuda_graph is None else bool(cuda_graph)

    @classmethod
    def from_restorer(cls, restorer, **options) -> GraphRunner:
        """The runner for a ``ddpg.runtime.Restorer`` (its method, σ_y, steps and hyper-parameters)."""
        return cls(restorer.denoiser, restorer.operator, restorer.method, restorer.sigma_y, steps=restorer.steps,
                   hyper=restorer.hyper, **options)

    def settings(self) -> dict:
        """As ``Restorer.settings`` plus the runner's speed options."""
        options = self.denoiser.options()
        return {"method": self.name, "sigma_y": self.p.sigma_y, "steps": self.steps, "hyper": self.hyper,
                "operator": {"name": self.operator.name, **self.operator.params},
                "fast": {"cuda_graph": self.cuda_graph, **options}}

    # --- the step ---------------------------------------------------------------------------------------
    def _step(self, b: _Buffers, draw_noise: bool, out: torch.Tensor | None = None) -> None:
        """One step on the static buffers (the captured region): ``method.step`` with the row b.row as 0-d
        tensors. ``out``: a fixed model output instead of the denoiser's (guidance timing)."""
        row = row_of(self.row_cls, b.row)
        if out is None:
            b.t.copy_(row.t.expand_as(b.t))
            out = self.denoiser(b.x, b.t).float()
        if draw_noise:
            b.z.normal_(generator=self.generator)
        new = self.method.step(State(b.x, b.x0, b.out, b.ctx), out, row, b.z, b.y, self.operator, self.p,
                               self.prediction)
        b.x0.copy_(new.x0)
        b.out.copy_(new.out)
        b.x.copy_(new.x)

    def _new_buffers(self, y_shape: tuple[int, ...]) -> _Buffers:
        shape = (y_shape[0], 3, *self.operator.img_size)

        def zeros(s=shape):
            return torch.zeros(s, device=self.device)

        return _Buffers(x=zeros(), y=zeros(y_shape), z=zeros(), x0=zeros(), out=zeros(), t=zeros(shape[0]),
                        row=zeros(self.table.shape[1]))

    def _buffers_for(self, y_shape: tuple[int, ...]) -> _Buffers:
        if y_shape not in self._buffers:
            self._buffers[y_shape] = self._new_buffers(y_shape)
        return self._buffers[y_shape]

    def _start(self, b: _Buffers, x_T: torch.Tensor) -> None:
        """The method's start from b.y and x_T into the static buffers."""
        state = self.method.start(b.y, self.operator, self.p, x_T.to(self.device, torch.float32), self.schedule,
                                  self.rows)
        b.x.copy_(state.x)
        b.x0.copy_(state.x0)
        b.out.copy_(state.out)
        if b.ctx is None:  # a captured graph reads the first start's ctx; a later start's is equal to it
            b.ctx = state.ctx

    def _capture(self, b: _Buffers, graph_noise: bool, out: torch.Tensor | None = None) -> None:
        b.row.copy_(self.table[0])
        b.graph = capture_graph(lambda: self._step(b, graph_noise, out), self.device, warmup=self.warmup,
                                generator=self.generator if graph_noise else None)
        b.graph_noise = graph_noise

    # --- public -------------------------------------------------------------------------------------------
    @property
    def buffers(self) -> Mapping[tuple, _Buffers]:
        """The static buffers (and captured graph) held per measurement shape: a read-only view, emptied by
        ``release``."""
        return MappingProxyType(self._buffers)

    @torch.no_grad()
    def sample(self, y: torch.Tensor, *, x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
               generator: torch.Generator | None = None, seed: int | None = None,
               callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Restorations (B,3,H,W) float32, [-1, 1] scale, not clamped (a new tensor).

        ``noise``/``generator`` as in ``run_method`` (z drawn outside the graph: exact replay). With neither,
        x_T and z come from the runner's generator seeded with ``seed`` (default 0), z inside the graph.
        ``callback(step, x_t, x0)`` receives the live static buffers: clone them to keep them.
        """
        shape = check_inputs(self.operator, y, x_T)
        if y.device != self.device:
            raise ConfigError(f"y is on {y.device} but this runner computes on {self.device} (the operator's "
                              "device unless device= is given): move the operator with .to(device) first")
        if generator is not None and noise is None:
            noise = gaussian_noise(generator)
        graph_noise = noise is None
        b = self._buffers_for(tuple(y.shape))
        b.y.copy_(y)
        if self.cuda_graph and (b.graph is None or b.graph_noise != graph_noise):
            self._start(b, torch.zeros(shape, device=self.device))  # the ctx the graph will read
            self._capture(b, graph_noise)
        if graph_noise:
            self.generator.manual_seed(0 if seed is None else int(seed))
        if x_T is None:
            x_T = torch.randn(shape, generator=generator if generator is not None else self.generator,
                              device=self.device)
        self._start(b, x_T)
        for i in range(self.steps):
            b.row.copy_(self.table[i])
            if not graph_noise:
                b.z.copy_(self.method.draw(noise, b.x, self.rows[i], self.p))
            if self.cuda_graph:
                b.graph.replay()
            else:
                self._step(b, graph_noise)
            if callback is not None:
                callback(i, b.x, b.x0)
        return self.method.result(State(b.x, b.x0, b.out, b.ctx), self.p).clone()

    def restore(self, y: torch.Tensor, seeds: Sequence[int],
                callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
        """As ``Restorer.restore``: x_T and every z from each image's own seed stream, so the output equals the
        Restorer's (and a batch equals the single runs)."""
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
        """A callable running one step's ``method.step`` and noise with a fixed ε (no denoiser): what ``ddpg
        bench`` times for the guidance's share of a step. Captured in its own graph when the runner uses
        graphs (separate buffers: the sampling buffers are untouched)."""
        shape = check_inputs(self.operator, y)
        b = self._new_buffers(tuple(y.shape))
        b.y.copy_(y)
        self._start(b, torch.zeros(shape, device=self.device))
        b.row.copy_(self.table[0])
        eps = eps.to(self.device, torch.float32).clone()
        if not self.cuda_graph:
            return lambda: self._step(b, True, eps)
        self._capture(b, True, eps)
        return b.graph.replay


__all__ = ["GRAPH_METHODS", "GraphRunner"]
