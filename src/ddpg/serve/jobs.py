"""A restore request as ``ddpg restore`` would run it: settings checked field by field, the upload loaded,
padded and degraded by the same code as ``ddpg restore`` (a :class:`~ddpg.api.RestorePlan` and
:func:`~ddpg.api.prepare_input`), and the result written by the same :func:`~ddpg.api.write_outputs` (PNG and
sidecar), so a served restoration equals its ``ddpg restore`` twin of one input with the same seed."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddpg import io
from ddpg.api.denoisers import engine_batch_profile, prior_record, size_multiple
from ddpg.api.request import RestoreRequest
from ddpg.api.restoration import InputJob, RestorePlan, not_finite, prepare_input, sidecar_record, write_outputs
from ddpg.api.settings import CLI_TASKS, Settings, apply_hyper, apply_operator, named_mask, parse_mask, resolve_settings
from ddpg.api.tiling import engine_tile_side, tile_policy, tiled_denoiser
from ddpg.errors import DdpgError, ImageTooLarge, InputError, ParameterError
from ddpg.models.denoiser import native_image_size
from ddpg.runtime.samplers import get_sampler, methods_where
from ddpg.schema import option_fields, value_type
from ddpg.versions import versions

from .scheduler import Sample, start_sample

# the methods whose default params the scheduler batches, step by step with per-sample rows (a listing)
SERVED_METHODS = methods_where(lambda capabilities: capabilities.fixed_shape_steps)
RESPONSES = ("png", "json")
# the request's fields and their types: RestoreRequest's served options (named as the api's parameters, which its
# errors name; mask and kernel files are uploads, never paths), then the response's own
FIELDS = {**{f.name: value_type(RestoreRequest, f.name) for f, doc in option_fields(RestoreRequest) if doc.served},
          "response": str, "deadline_s": float}
MASK_UPLOADS = ("expected box, random or random:R; a mask image is uploaded as the `mask` file (multipart) or "
                "as `mask_png` (base64 in JSON), never named by a path")
MAX_OPERATORS = 32  # operators kept for reuse (one per task, size and mask or kernel); the oldest dropped


class FieldError(DdpgError):
    """A request field that is missing or invalid (HTTP 422)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class TooLarge(DdpgError):
    """An upload over the pixel or byte limit (HTTP 413); ``field`` the upload, None for the whole body."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


def clipped(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters and its length, if longer: what a message quotes of a client's value."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def shown(value: object) -> str:
    """``repr(value)``, clipped."""
    return clipped(repr(value))


def plain_value(value: object) -> bool:
    """Whether a hyper-parameter value is one the command line can give: a word, true/false or a number a
    float can hold (a JSON integer may have thousands of digits)."""
    if isinstance(value, (bool, str)):
        return True
    try:
        return isinstance(value, (int, float)) and isinstance(float(value), float)
    except OverflowError:
        return False


def load_json(text: bytes | str, name: str) -> object:
    """``text`` parsed as JSON; FieldError naming ``name`` for anything that cannot be read: malformed,
    nested too deep, or an integer of more digits than Python converts."""
    try:
        return json.loads(text)
    except RecursionError:
        raise FieldError(name, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, Python's integer digit limit
        raise FieldError(name, f"not readable JSON ({str(exc).split(';')[0]})") from None


@dataclass
class Upload:
    """A request as read: its settings as sent, its files in the request's folder and the client's names."""

    raw: dict = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # "image"/"mask"/"kernel" -> its file
    names: dict[str, str] = field(default_factory=dict)  # the same keys -> the client's file name


@dataclass
class Prepared:
    """A request ready for the scheduler, and what its response needs."""

    job: InputJob
    plan: RestorePlan
    sample: Sample
    workdir: Path
    response: str
    filename: str


def parse_fields(raw: dict) -> dict:
    """Request settings (JSON values or multipart strings) converted to their types; FieldError names the
    first bad one. Unknown fields are refused, so a typo does not silently fall back to a default."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise FieldError(unknown[0], f"unknown field; known: {', '.join(sorted(FIELDS))}")
    out = {name: convert(name, value) for name, value in raw.items() if value is not None and value != ""}
    if out.get("seed", 0) < 0:
        raise FieldError("seed", f"must be >= 0, got {out['seed']}")
    if out.get("bits", 8) not in (8, 16):
        raise FieldError("bits", f"must be 8 or 16, got {out['bits']}")
    if out.get("response", "png") not in RESPONSES:
        raise FieldError("response", f"must be png or json, got {shown(out['response'])}")
    if not out.get("deadline_s", 1) > 0:
        raise FieldError("deadline_s", f"must be > 0, got {out['deadline_s']}")
    try:
        if named_mask(out.get("mask")) is None:  # never a path: the server does not read files a client names
            raise FieldError("mask", MASK_UPLOADS)
    except ParameterError as exc:
        raise FieldError("mask", str(exc)) from None
    for name in (name for name, kind in FIELDS.items() if kind is dict):  # hyper, operator: as the CLI's KEY=VALUE
        bad = next((k for k, v in out.get(name, {}).items() if not plain_value(v)), None)
        if bad is not None:
            raise FieldError(name, f"{shown(bad)}: expected a number, true/false or a word")
    return out


def convert(name: str, value: object) -> object:
    """The value of field ``name`` as its type (a multipart string or a JSON value); FieldError if it is not
    one."""
    kind = FIELDS[name]
    if kind is dict:
        value = load_json(value, name) if isinstance(value, str) else value
        if not isinstance(value, dict):
            raise FieldError(name, f"expected an object, got {shown(value)}")
        return value
    try:
        if kind is bool:
            text = str(value).lower()
            if text not in ("true", "false", "1", "0"):
                raise ValueError
            return text in ("true", "1")
        if kind is int and (isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        raise FieldError(name, f"expected {kind.__name__}, got {shown(value)}") from None


def field_of(exc: DdpgError, default: str) -> str:
    """The request field a library error is about (a ParameterError's parameter, or the name an "unknown NAME"
    message starts with), else ``default``."""
    if isinstance(exc, ParameterError):
        return exc.param if exc.param in (*FIELDS, "kernel") else default  # kernel: the uploaded file
    text = str(exc)
    return next((name for name in FIELDS if text.startswith((f"unknown {name}", f"{name} "))), default)


def refusal(exc: DdpgError, field: str, upload: Upload) -> FieldError | TooLarge:
    """The HTTP refusal of a library error about ``field`` (or about the mask or kernel file its message
    names): TooLarge (413) for an image, mask or kernel refused for its size, else FieldError (422); the
    message names the client's files, not the server's copies."""
    message = str(exc)
    field = next((key for key, path in upload.files.items() if key != "image" and str(path) in message), field)
    for key, path in upload.files.items():
        message = message.replace(str(path), upload.names[key])
    while exc is not None and not isinstance(exc, ImageTooLarge):
        exc = exc.__cause__ or exc.__context__
    return TooLarge(message, field) if exc is not None else FieldError(field, message)


def check_image(upload: Upload, max_pixels: int) -> None:
    """Refuse the uploaded image from its header, before it is decoded: TooLarge over ``max_pixels`` (or a
    bomb Pillow refuses), FieldError if it is no image."""
    try:
        with io.open_image(upload.files["image"], max_pixels):
            pass
    except InputError as exc:
        raise refusal(exc, "image", upload) from None


class Preparer:
    """Builds requests into samples for one denoiser (the server's prior on its device)."""

    def __init__(self, denoiser, prior: str, device: str, *, max_pixels: int, default_deadline_s: float | None):
        self.denoiser, self.prior, self.device = denoiser, prior, device
        self.max_pixels, self.default_deadline_s = max_pixels, default_deadline_s
        self.multiple = size_multiple(denoiser)
        # images larger than the prior: tiled as `ddpg restore --tile auto` tiles them (the tiles join the ticks)
        self.tiles = tile_policy("auto", None, native_image_size(denoiser), self.multiple,
                                 engine_tile_side(denoiser))
        self.tiled = tiled_denoiser(denoiser, self.tiles, engine_batch_profile(denoiser))
        self.prior_record = prior_record(prior, None, denoiser.backend, None, denoiser)
        self.versions = versions(device)
        self.operators: dict = {}  # shared by every request, so equal operators group in one guidance call

    def prepare(self, fields: dict, upload: Upload, workdir: Path, now: float) -> Prepared:
        """The upload (in ``workdir``) as a sample; FieldError/TooLarge for a bad request."""
        check_image(upload, self.max_pixels)
        settings = self._settings(fields)
        image, filename, kernel = upload.files["image"], upload.names["image"], upload.files.get("kernel")
        mask = str(upload.files["mask"]) if "mask" in upload.files else fields.get("mask")
        try:
            mask_spec = parse_mask(mask)
        except DdpgError as exc:
            raise refusal(exc, "mask", upload) from None
        try:
            served = {name: value for name, value in fields.items() if name in RestoreRequest.__dataclass_fields__}
            request = RestoreRequest(inputs=(image,), outdir=workdir, device=self.device, max_pixels=self.max_pixels,
                                     **{**served, "mask": mask, "kernel": None if kernel is None else str(kernel)})
            plan = RestorePlan(request=request, settings=settings, denoiser=self.denoiser,
                               record=sidecar_record(request, settings, self.prior_record, self.versions),
                               mask_spec=mask_spec, multiple=self.multiple, operators=self.operators,
                               tiles=self.tiles, tiled=self.tiled)
            job = prepare_input(plan, 0, image)
        except DdpgError as exc:
            raise refusal(exc, field_of(exc, "image"), upload) from None
        while len(self.operators) > MAX_OPERATORS:
            self.operators.pop(next(iter(self.operators)))
        params = job.restorer.params
        deadline_s = fields.get("deadline_s", self.default_deadline_s)
        deadline = None if deadline_s is None else now + deadline_s
        layout = self.tiled.layout(job.padded) if job.tiling["tiled"] else None
        sample = start_sample(self.denoiser, job.restorer.operator, job.y, job.restorer.spec.method, params,
                              settings.steps, job.seed, (job.group, params), deadline, layout)
        return Prepared(job, plan, sample, workdir, fields.get("response", "png"), filename)

    def _settings(self, fields: dict):
        try:
            settings = resolve_settings(fields.get("task"), fields.get("method"), fields.get("preset"), self.prior,
                                        fields.get("sigma_y"), fields.get("steps"))
        except DdpgError as exc:
            raise FieldError(field_of(exc, "preset"), str(exc)) from None
        check_served(settings, "method")  # with the preset's hyper-parameters
        try:
            settings = apply_hyper(settings, fields.get("hyper"), False)
        except DdpgError as exc:
            raise FieldError("hyper", str(exc)) from None
        try:
            settings = apply_operator(settings, fields.get("operator"))
        except DdpgError as exc:
            raise FieldError("operator", str(exc)) from None
        schedule = self.denoiser.schedule
        if settings.steps > len(schedule.betas):
            raise FieldError("steps", f"{settings.steps} exceeds the prior's {len(schedule.betas)} diffusion steps")
        check_served(settings, "hyper")
        return settings


def check_served(settings: Settings, field: str) -> None:
    """FieldError of ``field`` unless the scheduler can batch the steps of the settings' method with their params
    (its capabilities: fixed-shape steps); a σ_y or hyper-parameter the params refuse is a FieldError naming it."""
    spec = get_sampler(settings.method)
    try:
        capabilities = spec.capabilities(spec.build(settings.sigma_y, settings.hyper))
    except DdpgError as exc:
        raise FieldError("sigma_y" if "sigma_y" in str(exc) else "hyper", str(exc)) from None
    if not capabilities.fixed_shape_steps:
        raise FieldError(field, f"{settings.method}: `ddpg serve` batches steps of one shape (methods "
                         f"{', '.join(SERVED_METHODS)} with their defaults); {settings.method} with these settings "
                         f"{capabilities.why_not}: restore it by `ddpg restore`")


def served_defaults(prior: str) -> dict:
    """``{method: {task: {"sigma_y", "steps", "preset"}}}``: what a request naming only the method and task
    resolves to with ``prior``, for every served method and each task it serves (what a form offers)."""
    choices: dict = {}
    for method in SERVED_METHODS:
        for task in CLI_TASKS:
            try:
                settings = resolve_settings(task, method, None, prior, None, None)
                check_served(settings, "method")
            except DdpgError:
                continue
            choices.setdefault(method, {})[task] = {"sigma_y": settings.sigma_y, "steps": settings.steps,
                                                    "preset": settings.preset}
    return choices


def write_result(prepared: Prepared, out: torch.Tensor, timing: dict) -> tuple[bytes, dict]:
    """(restored PNG bytes, sidecar) written by ``ddpg restore``'s own writer into the request's folder; a
    restoration ``ddpg restore`` would not write (NaN or infinite values) is a FieldError of ``hyper``."""
    problem = not_finite(prepared.plan, prepared.job, out)
    if problem is not None:
        raise FieldError("hyper", problem.replace(str(prepared.job.path), prepared.filename))
    write_outputs(prepared.plan, prepared.job, out, timing)
    stem = prepared.job.stem
    sidecar = json.loads((prepared.workdir / f"{stem}.json").read_text())
    sidecar["input"] = prepared.filename
    for name in ("kernel", "mask"):  # uploaded files: their temporary paths mean nothing to the client
        if str(sidecar["operator"].get(name, "")).startswith(str(prepared.workdir)):
            sidecar["operator"][name] = f"uploaded {name}"
    return (prepared.workdir / f"{stem}_restored.png").read_bytes(), sidecar


def new_workdir(root: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="req-", dir=root))


def remove_workdir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
