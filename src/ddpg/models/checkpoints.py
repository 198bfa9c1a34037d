"""Checkpoint registry, cache, resumable download and safe loading of prior weights."""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ddpg.errors import CheckpointError, ConfigError

from .configs import PRIOR_NAMES, create_prior, meta_state_shapes, prior_config


@dataclass(frozen=True)
class CheckpointEntry:
    """Where a named prior's weights come from. ``size`` in bytes; None where not known."""

    name: str
    filename: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    manual: str | None = None  # where else the file can be had by hand (named in download errors)
    bundled: str | None = None  # package-relative path for weights shipped with ddpg
    notes: tuple[str, ...] = field(default_factory=tuple)


REGISTRY: dict[str, CheckpointEntry] = {
    "celeba_hq": CheckpointEntry(
        "celeba_hq", "celeba_hq.ckpt",
        urls=("https://image-editing-test-12345.s3-us-west-2.amazonaws.com/checkpoints/celeba_hq.ckpt",),
        manual="Google Drive file id 1wSoA5fm_d6JBZk4RZ1SzWLMgev4WqH21, from the DDPG README",
    ),
    "imagenet256_uncond": CheckpointEntry(
        "imagenet256_uncond", "256x256_diffusion_uncond.pt",
        urls=("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",),
    ),
    "imagenet256_cond": CheckpointEntry(
        "imagenet256_cond", "256x256_diffusion.pt",
        urls=("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion.pt",),
    ),
    "ffhq256": CheckpointEntry(
        "ffhq256", "ffhq_10m.pt",
        urls=("https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt",),
        manual="the DPS Google Drive folder 1jElnRoFv7b31fG0v6pTSQkelbSX3xGZh, file id "
               "1BGwhRWUoguF-D8wlZ65tf227gp3cDUDh",
    ),
    "face64": CheckpointEntry(
        "face64", "face64_ema_fp16.safetensors", size=17_935_006,
        sha256="3fb614c3bb8f0e58b89acf87aea12c06fb1a76dc3b12fd7665ca5044f48d850e",
        bundled="data/face64/face64_ema_fp16.safetensors",
        notes=("UTKFace is distributed for non-commercial research purposes only; these weights are derived "
               "from it and carry the same restriction.",
               "Stored as float16 safetensors (the fp32 EMA weights face64_ema.pt, sha256 2820e7ff…2c34, cast to "
               "fp16) and loaded upcast to the prior's dtype; restorations stay within 0.05 dB of the fp32 ones "
               "(benchmarks/results/face64_fp16_weights.md).",),
    ),
}


def cache_dir() -> Path:
    """``$DDPG_HOME`` if set, else the platform's user cache dir for ddpg (``platformdirs``, imported only here:
    nothing that runs without a checkpoint cache needs it)."""
    if os.environ.get("DDPG_HOME"):
        return Path(os.environ["DDPG_HOME"])
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("ddpg"))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: set[tuple[str, int, float]] = set()


def verify_file(path: Path, entry: CheckpointEntry) -> None:
    """Check size and sha256 where the registry knows them (each file hashed once per process)."""
    stat = path.stat()
    if entry.size is not None and stat.st_size != entry.size:
        raise CheckpointError(f"{path}: {stat.st_size} bytes, expected {entry.size} for {entry.name} "
                              "(truncated or a different file)")
    key = (str(path), stat.st_size, stat.st_mtime)
    if entry.sha256 and key not in _VERIFIED:
        actual = sha256_file(path)
        if actual != entry.sha256:
            raise CheckpointError(f"{path}: sha256 {actual} does not match {entry.name}'s {entry.sha256}")
        _VERIFIED.add(key)


def entry_for(name: str) -> CheckpointEntry:
    if name not in REGISTRY:
        raise ConfigError(f"no checkpoint registered for prior {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def local_path(entry: CheckpointEntry) -> Path:
    """Where the weights of ``entry`` live (bundled file or the cache)."""
    if entry.bundled:
        return Path(str(resources.files("ddpg").joinpath(entry.bundled)))
    return cache_dir() / entry.filename


def download(entry: CheckpointEntry, dest: Path | None = None, *, quiet: bool = False) -> Path:
    """Download ``entry`` to ``dest`` (default: the cache), resuming a ``.part`` file with HTTP Range,
    verifying size and sha256, then renaming into place. A mismatching file is removed."""
    dest = dest or cache_dir() / entry.filename
    if dest.exists():
        return dest
    by_hand = (f"get {entry.filename} by hand" + (f" ({entry.manual})" if entry.manual else "")
               + f" and pass --checkpoint PATH, or put it at {dest}")
    if not entry.urls:
        raise CheckpointError(f"{entry.name}: no download URL; {by_hand}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    for url in entry.urls:
        try:
            _fetch(url, part, quiet=quiet)
            break
        except (urllib.error.URLError, OSError) as exc:
            errors.append(f"{url}: {exc}")
    else:
        kept = f"the partial file {part} is kept for resuming (run again), or " if part.exists() else ""
        raise CheckpointError(f"{entry.name}: download failed ({'; '.join(errors)}); {kept}{by_hand}")
    try:
        verify_file(part, entry)
        check_manifest(part, entry)
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    record_sha256(part, dest)
    os.replace(part, dest)
    return dest


def state_manifest(name: str) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of a named prior's state dict (what its strict load needs)."""
    return meta_state_shapes(name)


def check_manifest(path: Path, entry: CheckpointEntry) -> None:
    """Refuse a file whose state dict does not hold exactly the keys and shapes of ``entry``'s prior (for
    entries of a known prior; other entries are not checked)."""
    if entry.name not in PRIOR_NAMES:
        return
    shapes = {k: tuple(v.shape) for k, v in read_state_dict(path).items()}
    problems = shape_mismatch(state_manifest(entry.name), shapes)
    if problems:
        raise CheckpointError(f"{path}: not the {entry.name} prior's weights: {', '.join(problems)}")


def sha256_record(path: Path) -> Path:
    """Where the sha256 of a downloaded file is kept: ``<file>.sha256`` beside it in the cache."""
    return path.with_name(path.name + ".sha256")


def record_sha256(source: Path, dest: Path) -> None:
    """Write the sha256 of ``source`` (soon renamed to ``dest``) to ``dest``'s record, atomically."""
    record = sha256_record(dest)
    tmp = record.with_name(record.name + ".part")
    tmp.write_text(f"{sha256_file(source)}  {dest.name}\n")
    os.replace(tmp, record)


def verify_recorded(path: Path, entry: CheckpointEntry) -> None:
    """Check a cached file against the sha256 recorded when it was downloaded (each file hashed once per
    process). A file placed in the cache by hand has no record: it is checked against the prior's manifest and
    its sha256 recorded then."""
    record = sha256_record(path)
    if not record.exists():
        check_manifest(path, entry)
        record_sha256(path, path)
        return
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key in _VERIFIED:
        return
    expected = record.read_text().split()[0] if record.read_text().split() else ""
    actual = sha256_file(path)
    if actual != expected:
        raise CheckpointError(f"{path}: sha256 {actual} differs from the one recorded when it was downloaded "
                              f"({expected or 'empty record'} in {record}); the file changed: delete both to "
                              "download it again")
    _VERIFIED.add(key)


def _fetch(url: str, part: Path, *, quiet: bool) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        # 416 on a resume: the .part file may already hold the whole file (``Content-Range: bytes */total``)
        if have and exc.code == 416 and exc.headers.get("Content-Range", "") == f"bytes */{have}":
            return
        raise
    with response:
        if have and response.status != 206:  # server ignored the range: start again
            have = 0
        total = response.length + have if response.length is not None else None
        columns = (BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=Console(file=sys.stderr), disable=quiet) as progress:
            task = progress.add_task(part.name, total=total, completed=have)
            with open(part, "ab" if have else "wb") as fh:
                while block := response.read(1 << 20):
                    fh.write(block)
                    progress.advance(task, len(block))
    received = part.stat().st_size
    if total is not None and received < total:
        raise OSError(f"connection closed after {received} of {total} bytes")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, in their stored dtype (no pickle involved)."""
    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read safetensors file (truncated or corrupt?): {exc}") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a plain tensor state dict: ``.safetensors`` files with safetensors, anything else with
    ``torch.load(weights_only=True)`` (unwrapping ``state_dict``/``model``/``ema`` containers). ``module.``
    prefixes are stripped. Tensors keep their stored dtype (the bundled face64 weights are float16):
    ``load_weights`` upcasts them to the prior's dtype."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.suffix == ".safetensors":
        return _strip_module(_read_safetensors(path), path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unsafe or damaged pickles
        raise CheckpointError(_load_failure(path, exc)) from exc
    for key in ("state_dict", "model", "ema"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    return _strip_module(obj, path)


def _strip_module(obj, path: Path) -> dict[str, torch.Tensor]:
    """``obj`` checked to be a non-empty dict of tensors, ``module.`` prefixes removed."""
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), got {type(obj).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _load_failure(path: Path, exc: Exception) -> str:
    """What a failed ``torch.load(weights_only=True)`` means, without torch's advice to load the file unsafely:
    a pickle that names code to run, bytes that are no checkpoint at all, or a damaged archive."""
    text = str(exc)
    detail = re.search(r"WeightsUnpickler error: (.+?)(?:\n\n|$)", text, re.S)
    reason = " ".join((detail.group(1) if detail else text.splitlines()[0] if text else type(exc).__name__).split())
    if "Unsupported global" in text:
        return f"{path}: not a plain tensor checkpoint: it names code to run, which safe loading refuses ({reason})"
    if detail:
        return f"{path}: not a checkpoint: neither a torch archive nor a tensor pickle (random or damaged bytes: " \
               f"{reason})"
    return f"{path}: cannot read checkpoint (truncated or corrupt?): {reason}"


def guess_prior(shapes: dict[str, tuple[int, ...]]) -> str | None:
    """The named prior whose parameter names and shapes equal ``shapes``, if any."""
    for name in PRIOR_NAMES:
        if name != "gaussian" and meta_state_shapes(name) == shapes:
            return name
    return None


def shape_mismatch(own: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]]) -> list[str]:
    """How the keys and shapes ``given`` differ from a model's ``own``: missing, unexpected and mis-shaped keys
    (each with a count and the first); empty when they fit (a class-conditional model's class count may differ)."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    misshaped = [k for k in own if k in given and given[k] != own[k]]
    if misshaped == ["label_emb.weight"]:
        misshaped = []
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
    if misshaped:
        k = misshaped[0]
        parts.append(f"{len(misshaped)} with other shapes (first: {k} {given[k]} vs {own[k]})")
    return parts


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names the first missing, unexpected and
    mis-shaped keys and which known prior the file matches instead. Stored tensors of another floating dtype
    (float16 safetensors) are copied into the model's own dtype."""
    parts = shape_mismatch({k: tuple(v.shape) for k, v in model.state_dict().items()},
                           {k: tuple(v.shape) for k, v in state.items()})
    if parts:
        guess = guess_prior({k: tuple(v.shape) for k, v in state.items()})
        hint = f"; the file looks like the {guess!r} prior" if guess else "; it matches no known prior"
        name = getattr(model, "config", {}).get("name", "this prior")
        raise CheckpointError(f"{source}: weights do not fit {name}: {', '.join(parts)}{hint}")
    model.load_state_dict(state, strict=True)


def resolve_checkpoint(name: str, *, quiet: bool = False) -> Path:
    """The local file of a named prior's weights: bundled, cached, or downloaded now."""
    entry = entry_for(name)
    path = local_path(entry)
    if path.exists():
        verify_file(path, entry)
        if not entry.bundled:
            verify_recorded(path, entry)
        return path
    return download(entry, path, quiet=quiet)


def load_prior(spec: str | Path | dict, checkpoint: str | Path | None = None, *,
               device: str | torch.device = "cpu", quiet: bool = False) -> nn.Module:
    """A prior with weights, in eval mode on ``device``. ``spec``: a prior name, YAML path or dict.
    Weights: ``checkpoint`` if given, else (named priors) the bundled file, the cache, or a download."""
    cfg = prior_config(spec)
    model = create_prior(cfg)
    if cfg["kind"] == "gaussian":
        return model.to(device)
    if checkpoint is None:
        if cfg.get("name") not in REGISTRY:
            raise CheckpointError("a prior given by config needs a checkpoint file (--checkpoint PATH)")
        checkpoint = resolve_checkpoint(cfg["name"], quiet=quiet)
    load_weights(model, read_state_dict(checkpoint), checkpoint)
    return model.to(device).eval()
