"""A forward-only restoration method as data plus a pure step, and the one loop that runs any of them.

A method (see ``docs/architecture.md`` §2) is an object with

- ``params``: its frozen params dataclass, the one place its defaults live (validated in ``__post_init__``);
- ``capabilities(p) -> MethodCapabilities``: what running it with params ``p`` needs and allows (capture in a
  CUDA graph, per-sample batching in ``ddpg serve``), which callers read instead of its name;
- ``grid``: the name of its own time grid (:data:`ddpg.schedule.TIME_GRIDS`);
- ``table(schedule, grid, p) -> list[Row]``: one row of per-step scalars per step of the :class:`TimeGrid`
  ``grid`` (its own by default, :func:`method_grid`; any other by name) — Python floats, computed once in
  float64; every scalar that multiplies a tensor is a row entry, so a row read back from a float32 device
  table gives the same bits;
- ``start(y, operator, p, x_T, schedule, rows) -> State``;
- ``draw(noise, x, row, p) -> z``: the step's noise (B,…) from the run's noise source;
- ``step(state, out, row, z, y, operator, p, prediction) -> State``: pure; ``out`` is the prior's output
  (B,3,H,W) float32, read by :func:`.common.x0_and_eps` as ``prediction`` says (ε, x̂₀ or v); ``row`` holds
  Python floats (eager: a term whose weight is the float 0 is skipped) or tensors — 0-d for the whole batch
  (graph runner) or (B,1,1,1) per sample (:func:`stack_rows`; :func:`spectral_row` shapes them for spectral
  coefficients) — with every term computed and multiplied by its weight (branch-free);
- ``result(state, p) -> (B,3,H,W)``.

:func:`run_method` is the loop: one denoiser call, one draw and one step per row, then the callback.
The graph runner (``ddpg.runtime.graph_runner``) and ``ddpg serve``'s scheduler drive the same ``table``,
``start``, ``draw`` and ``step``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol

import torch

from ddpg.errors import ConfigError
from ddpg.schedule import Schedule, TimeGrid

from .common import NoiseSource, Scalar, coef, prepare, timestep


@dataclass(frozen=True)
class State:
    """The loop's carry: x (x_t, (B,3,H,W)), x0 (the last x̂₀), out (what ``result`` returns from) and ctx
    (per-run constants a method derives at the start, e.g. a spectral basis). ``ddpg serve`` steps a group of
    samples with the first one's ctx, so ``step`` reads from ctx only what the group shares (per-sample data
    comes from its y)."""

    x: torch.Tensor
    x0: torch.Tensor
    out: torch.Tensor
    ctx: Any = None

    def advance(self, x: torch.Tensor, x0: torch.Tensor, out: torch.Tensor) -> State:
        return replace(self, x=x, x0=x0, out=out)


@dataclass(frozen=True)
class MethodCapabilities:
    """What a method does with given params, and so where it can run: callers (the graph runner, ``ddpg
    restore``'s cuda_graph check, ``ddpg serve``, the memory estimate) read this record, never the method's
    name. ``why_not`` says, for a message, what takes a fixed-shape step away."""

    needs_grad: bool = False  # differentiates through the denoiser (its own autograd loop): backends with grad only
    noise_selection: bool = False  # picks each step's noise among candidates, their count changing per step
    host_reads: bool = False  # its step reads tensor values on the host (a data-dependent loop)

    @property
    def fixed_shape_steps(self) -> bool:
        """Whether it runs as tensor-row steps on buffers of one shape: what the graph runner and ``ddpg serve``'s
        per-sample batching need."""
        return not (self.needs_grad or self.noise_selection)

    @property
    def capturable(self) -> bool:
        """Whether its tensor-row step can run inside a CUDA graph (fixed shapes and no host read)."""
        return self.fixed_shape_steps and not self.host_reads

    @property
    def why_not(self) -> str:
        """What it does that a fixed-shape or captured step cannot ("" when nothing)."""
        return ("differentiates through the UNet" if self.needs_grad
                else "selects its noise among candidates" if self.noise_selection
                else "reads tensor values on the host in its step" if self.host_reads else "")


def plain_steps(p) -> MethodCapabilities:
    """The capabilities of a method whose step is plain with any params: no autograd, no candidate noises, no host
    read (it is captured and batched per sample)."""
    return MethodCapabilities()


class Method(Protocol):
    name: str
    params: type
    grid: str  # its own time grid's name

    def capabilities(self, p) -> MethodCapabilities: ...
    def table(self, schedule: Schedule, grid: TimeGrid, p) -> list: ...
    def start(self, y: torch.Tensor, operator, p, x_T: torch.Tensor, schedule, rows: list) -> State: ...
    def draw(self, noise: NoiseSource, x: torch.Tensor, row, p) -> torch.Tensor: ...
    def step(self, state: State, out: torch.Tensor, row, z: torch.Tensor, y: torch.Tensor, operator, p,
             prediction: str) -> State: ...
    def result(self, state: State, p) -> torch.Tensor: ...


def spectral_row(row, coefs: torch.Tensor):
    """``row`` ready to combine with spectral coefficients ``coefs`` (B, …; real or complex): each tensor
    field rounded to their real dtype (:func:`coef`), a per-sample (B, 1, 1, 1) value reshaped to (B, 1, …)
    of coefs.ndim (e.g. (B, 1) against an SVD's flat (B, N)); Python floats and 0-d tensors keep their shape."""
    real = coefs.real

    def fit(v: Scalar) -> Scalar:
        v = coef(v, real)
        return v.reshape(-1, *(1,) * (coefs.ndim - 1)) if isinstance(v, torch.Tensor) and v.ndim else v

    return type(row)(*(fit(getattr(row, f.name)) for f in fields(row)))


def skipped(weight: Scalar) -> bool:
    """Whether a term with this weight is left out: only for the Python float 0 (eager rows); a tensor
    weight never skips its term (the graph runner and per-sample rows are branch-free)."""
    return not isinstance(weight, torch.Tensor) and weight == 0


def stack_rows(rows: list, device: torch.device | str = "cpu"):
    """One row whose fields are the rows' values as float64 (B, 1, 1, 1) tensors (row i → sample i)."""
    cls = type(rows[0])
    return cls(*(torch.tensor([float(getattr(r, f.name)) for r in rows], dtype=torch.float64,
                              device=device).view(-1, 1, 1, 1) for f in fields(cls)))


def row_table(rows: list, device: torch.device | str, dtype=torch.float32) -> torch.Tensor:
    """(steps, K) tensor of the rows' fields (K = the row's field count), for a device-side table."""
    return torch.tensor([[float(getattr(r, f.name)) for f in fields(r)] for r in rows], dtype=torch.float64
                        ).to(device, dtype)


def row_of(cls, values: torch.Tensor):
    """A row of type ``cls`` whose fields are the 0-d views of ``values`` (K,)."""
    return cls(*values.unbind(0))


def noise_like(noise: NoiseSource, x: torch.Tensor, row, p) -> torch.Tensor:
    """The usual draw: one N(0, I) sample shaped like x per step."""
    return noise(x)


def make_params(cls, sigma_y: float, hyper: dict):
    """``cls(sigma_y, **hyper)`` with each value converted to its field's type (int, bool or float); an
    unknown name is refused, naming the known ones."""
    kinds = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(hyper) - set(kinds) - {"sigma_y"})
    if unknown:
        raise ConfigError(f"unknown hyper-parameter(s) {unknown}; known: {sorted(hyper_names(cls))}")
    converters = {"int": _to_int, "bool": bool, "float": float, "str": str}
    return cls(sigma_y=float(sigma_y), **{k: converters[kinds[k]](v) for k, v in hyper.items()})


def _to_int(v):
    """An integral number as int; anything else unchanged, for the params' own check to refuse by name."""
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer() else v


def hyper_names(cls) -> tuple[str, ...]:
    """The hyper-parameters a user sets: the params dataclass's fields but σ_y and the method-fixed ones."""
    return tuple(f.name for f in fields(cls) if f.name != "sigma_y" and not f.metadata.get("fixed"))


def method_grid(method: Method, schedule: Schedule, steps: int, grid: str | None = None) -> TimeGrid:
    """The ``steps``-step time grid named ``grid`` (default: the method's own) on the schedule's T."""
    return TimeGrid.named(grid or method.grid, steps, schedule.num_timesteps)


def run_method(method: Method, p, denoiser, operator, y: torch.Tensor, steps: int,
               x_T: torch.Tensor | None = None, noise: NoiseSource | None = None,
               generator: torch.Generator | None = None,
               callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
               grid: str | None = None) -> torch.Tensor:
    """Run ``method`` with params ``p``: restorations (B,3,H,W) float32, [-1, 1] scale, not clamped.

    ``denoiser`` (:class:`~ddpg.models.denoiser.DenoiserInterface`): ``denoiser(x_t, t)`` → the prior's output
    (ε, x̂₀ or v, as ``denoiser.prediction`` says);
    ``noise(like)`` supplies the per-step noise (default: N(0, I) from ``generator``); ``x_T`` defaults to
    N(0, I) from ``generator``; ``callback(step, x_t, x0)`` after every step; ``grid`` names the time grid
    (default: the method's own; e.g. "quad" runs DDPG on DiffPIR's grid)."""
    schedule, y, x_T, noise = prepare(denoiser, operator, y, x_T, noise, generator)
    prediction = denoiser.prediction
    rows = method.table(schedule, method_grid(method, schedule, steps, grid), p)
    state = method.start(y, operator, p, x_T, schedule, rows)
    for i, row in enumerate(rows):
        out = denoiser(state.x, timestep(state.x, row.t)).float()
        z = method.draw(noise, state.x, row, p)
        state = method.step(state, out, row, z, y, operator, p, prediction)
        if callback is not None:
            callback(i, state.x, state.x0)
    return method.result(state, p)
