"""What one :func:`~ddpg.api.restore` call is asked to do: :class:`RestoreRequest`, every option with its
default, checked once when it is made (a :class:`~ddpg.errors.ParameterError` naming the parameter). Each option's
default, help and flags are written once, on its field (:mod:`ddpg.schema`): ``ddpg restore``'s options and
``ddpg serve``'s request fields are built from them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from ddpg.checks import DEFAULT_MAX_PIXELS, DEFAULT_SIGMA_Y, check_int, check_side, check_sigma_y, check_tile
from ddpg.errors import ParameterError
from ddpg.schema import option
from ddpg.threads import check_threads, threads_option


@dataclass(frozen=True, kw_only=True)
class RestoreRequest:
    """Every option of a restoration. ``inputs``: image files or folders (with ``observed`` also ``.pt``/``.npy``
    measurements); ``outdir``: the output folder. ``sigma_y`` is the noise std on the [0, 1] image scale;
    ``size`` and ``max_pixels`` are in pixels (side length, and H·W); ``bits`` the output PNG depth (8 or 16);
    ``shard=(rank, world_size)`` restores only that rank's contiguous share of the sorted inputs; ``denoiser``
    (an object with the denoiser interface) skips building one from prior/checkpoint/backend. The meaning of
    each option is documented on :func:`~ddpg.api.restore`."""

    inputs: tuple[str | Path, ...]
    outdir: Path = option(flags=("-o", "--outdir"), help="Output folder.")
    task: str | None = option(None, served=True, help="{tasks} (default sr4, or the preset's / observation's task).")
    preset: str | None = option(None, served=True, help="Paper preset, e.g. ddpg/celeba_hq/sr4/0.05 "
                                                        "(`ddpg presets list`).")
    prior: str | None = option(None, help="Prior name or YAML config, e.g. face64 (bundled, 64-px faces); `ddpg models "
                                          "list` names them all. No default: name the prior your images fit (a "
                                          "preset, checkpoint or engine names its own).")
    checkpoint: str | None = option(None, help="Weights file (with --prior, or alone: the prior is recognised).")
    method: str | None = option(None, served=True, help="ddpg | idpg | ddnm | ddrm | diffpir | dps | dpps (default "
                                "ddpg). Without --sigma-y/--steps/--preset each takes its paper preset; for sr4 with "
                                "the gaussian prior: {method_defaults}. Other tasks and priors: `ddpg presets list`.")
    sigma_y: float | None = option(None, flags=("--sigma-y",), served=True, help="Measurement noise std on the "
                                   f"[0, 1] scale (default: preset's, or {DEFAULT_SIGMA_Y}).")
    steps: int | None = option(None, served=True, help="Sampling steps (default: the preset's, 100).")
    seed: int = option(0, served=True, help="Base seed: image i (in sorted input order) uses seed + i.")
    batch_size: int = option(1, help="Images per sampler call (results do not depend on it).")
    device: str = option("cpu", help="cpu | cuda | cuda:N")
    threads: int | str = threads_option()
    observed: bool = option(False, served=True, help="Inputs are measurements (a real low-res or blurred photo, or "
                                                     "`ddpg degrade` output), not clean images.")
    backend: str = option("torch", help="torch | onnxruntime | tensorrt | openvino (CPU)")
    engine: str | None = option(None, help="ONNX model, TensorRT plan or OpenVINO IR (.xml) for --backend "
                                           "onnxruntime/tensorrt/openvino (tensorrt, openvino: an .onnx is converted "
                                           "once into the engine cache).")
    skip_existing: bool = option(False, help="Skip inputs whose outputs exist (resume).")
    resize: bool = option(False, help="Centre-crop and resize clean inputs to --size (default: the prior's size) as "
                                      "the papers; else native size.")
    size: int | None = option(None, help="Side length for --resize.")
    mask: str | None = option(None, served=True, help="inpaint: mask file (white = kept), 'box' (default) or "
                                                      "'random[:R]'.")
    kernel: str | None = option(None, help="Blur kernel (.npy or image) instead of the Gaussian / the seeded motion "
                                           "kernel (10·i).")
    bits: int = option(8, served=True, help="Output PNG bit depth: 8 or 16.")
    class_label: int | None = option(None, help="Class for class-conditional priors (imagenet256_cond).")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, help="Refuse input images with more pixels than this (read from "
                                                      "the header, before decoding; 2^25 is e.g. 8192×4096).")
    hyper: Mapping[str, object] | None = option(None, flags=("--hyper",), served=True, kind=list[str],
                                                help="Set a method hyper-parameter, KEY=VALUE (repeatable).")
    operator: Mapping[str, object] | None = option(None, flags=("--operator",), served=True, kind=list[str],
                                                   help="Build the task's operator with KEY=VALUE (repeatable) instead "
                                                        "of the preset's, e.g. --operator sigma=3.0.")
    select_candidates: bool = option(False, help="ddpg: pick the injected noise among N_t candidates by measurement "
                                                 "fit (DPPS's selection).")
    precision: str = option("fp32", help="torch backend: UNet torso in fp32 | fp16 | bf16 (guidance stays fp32).")
    compile: bool = option(False, help="torch backend: torch.compile the UNet.")
    cuda_graph: bool = option(False, help="On CUDA: capture each whole {graph_methods} step (UNet + guidance + "
                                          "noise) in one CUDA graph; with onnxruntime, the engine call (fixed-batch "
                                          "export).")
    tile: str = option("auto", help="UNet tiles: auto (tile an image larger than the prior's size by the measured "
                                    "ratio, or one that would not fit untiled) | off | SIZE (tile side, px). The "
                                    "method's guidance always runs on the whole image.", parse=check_tile)
    tile_overlap: int | None = option(None, help="Least overlap of neighbouring tiles in pixels (default: a quarter "
                                                 "of the tile side).")
    tile_batch: int | None = option(None, help="Tiles per UNet call (default: 16 with a PyTorch prior, an engine's "
                                               "largest batch). More keeps a GPU busier and needs more memory; "
                                               "the result does not depend on it.")
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
        object.__setattr__(self, "threads", check_threads(self.threads))
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
        object.__setattr__(self, "tile", str(check_tile(self.tile)))
        if self.tile_overlap is not None:
            check_int("tile_overlap", self.tile_overlap, 0)
            if self.tile.isdigit() and self.tile_overlap >= int(self.tile):
                raise ParameterError("tile_overlap", self.tile_overlap, f"must be smaller than the tile ({self.tile})")
        if self.tile_batch is not None:
            check_int("tile_batch", self.tile_batch, 1)
        # torch, which reading the fields needs not
        from ddpg.api.denoisers import check_device, check_engine_source, check_speed_options

        check_device(self.device)
        check_speed_options(self.backend, self.device, self.precision, self.compile, self.cuda_graph)
        check_engine_source(self.backend, self.prior, self.checkpoint)
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
