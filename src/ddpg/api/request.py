"""What one :func:`~ddpg.api.restore` call is asked to do: :class:`RestoreRequest`, every option with its
default, checked once when it is made (a :class:`~ddpg.errors.ParameterError` naming the parameter)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from ddpg.api.denoisers import check_device, check_speed_options
from ddpg.api.settings import check_int
from ddpg.checks import check_side, check_sigma_y
from ddpg.errors import ParameterError
from ddpg.io import DEFAULT_MAX_PIXELS


@dataclass(frozen=True, kw_only=True)
class RestoreRequest:
    """Every option of a restoration. ``inputs``: image files or folders (with ``observed`` also ``.pt``/``.npy``
    measurements); ``outdir``: the output folder. ``sigma_y`` is the noise std on the [0, 1] image scale;
    ``size`` and ``max_pixels`` are in pixels (side length, and H·W); ``bits`` the output PNG depth (8 or 16);
    ``shard=(rank, world_size)`` restores only that rank's contiguous share of the sorted inputs; ``denoiser``
    (an object with the denoiser interface) skips building one from prior/checkpoint/backend. The meaning of
    each option is documented on :func:`~ddpg.api.restore`."""

    inputs: tuple[str | Path, ...]
    outdir: Path
    task: str | None = None
    preset: str | None = None
    prior: str | None = None
    checkpoint: str | None = None
    method: str | None = None
    sigma_y: float | None = None
    steps: int | None = None
    seed: int = 0
    batch_size: int = 1
    device: str = "cpu"
    observed: bool = False
    backend: str = "torch"
    engine: str | None = None
    skip_existing: bool = False
    resize: bool = False
    size: int | None = None
    mask: str | None = None
    kernel: str | None = None
    bits: int = 8
    class_label: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    hyper: Mapping[str, object] | None = None
    operator: Mapping[str, object] | None = None
    select_candidates: bool = False
    precision: str = "fp32"
    compile: bool = False
    cuda_graph: bool = False
    shard: tuple[int, int] = (0, 1)
    denoiser: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outdir", Path(self.outdir))
        if self.bits not in (8, 16):
            raise ParameterError("bits", self.bits, "must be 8 or 16")
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        check_int("max_pixels", self.max_pixels, 1)
        if self.steps is not None:
            check_int("steps", self.steps, 1)
        if self.size is not None:
            check_side(self.size, self.max_pixels)
        if self.sigma_y is not None:
            check_sigma_y(self.sigma_y)
        if self.hyper is not None and not isinstance(self.hyper, Mapping):
            raise ParameterError("hyper", self.hyper, "must be a mapping of hyper-parameter names to values")
        if self.operator is not None and not isinstance(self.operator, Mapping):
            raise ParameterError("operator", self.operator, "must be a mapping of operator parameters to values")
        check_shard(self.shard)
        check_device(self.device)
        check_speed_options(self.backend, self.device, self.precision, self.compile, self.cuda_graph)
        if self.backend != "torch" and (self.prior is not None or self.checkpoint is not None):
            raise ParameterError("backend", self.backend, "reads the prior from the engine; drop prior and "
                                                          "checkpoint")
        if self.checkpoint is not None and self.prior == "gaussian":
            raise ParameterError("checkpoint", self.checkpoint, "the gaussian prior is analytic and takes no weights")

    @classmethod
    def from_options(cls, inputs: Sequence[str | Path], outdir: str | Path, **options) -> RestoreRequest:
        """The request of ``restore(inputs, outdir, **options)``; TypeError naming any option it does not
        have (and the ones it has)."""
        unknown = sorted(set(options) - set(option_names()))
        if unknown:
            raise TypeError(f"unknown restore option{'s' * (len(unknown) > 1)} {', '.join(unknown)}; known: "
                            f"{', '.join(option_names())}")
        return cls(inputs=inputs, outdir=outdir, **options)


def option_names() -> tuple[str, ...]:
    """The names of :class:`RestoreRequest`'s options (every field but ``inputs`` and ``outdir``)."""
    return tuple(f.name for f in fields(RestoreRequest) if f.name not in ("inputs", "outdir"))


def check_shard(shard: object) -> None:
    """Refuse a ``shard`` that is not ``(rank, world_size)`` with integers 0 <= rank < world_size."""
    if not (isinstance(shard, tuple) and len(shard) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in shard) and 0 <= shard[0] < shard[1]):
        raise ParameterError("shard", shard, "must be (rank, world_size) with integers 0 <= rank < world_size")
