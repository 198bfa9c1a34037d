"""A restore request's body, multipart or JSON, read as it streams: its bytes are counted as they arrive and
the request is refused (413) as soon as they pass the server's limit, whatever ``Content-Length`` said or
with none (chunked), so no more than the limit is ever held in memory or written to disk. Uploaded files are
written into the request's folder under names of the server's choosing (``image.png``, ``mask.npy``, …); the
client's file name is checked (printable, at most 255 characters, a known suffix) and kept for messages.
No request field names a file on the server's disk: masks and kernels come only as uploads."""

from __future__ import annotations

import base64
import binascii
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from ddpg.io import IMAGE_SUFFIXES

from .jobs import FIELDS, FieldError, TooLarge, Upload, load_json, shown

# the uploads a request may carry and the suffixes each takes (the first is taken for a name without one)
_IMAGES = (".png", *sorted(IMAGE_SUFFIXES - {".png"}))
UPLOAD_SUFFIXES = {"image": _IMAGES, "mask": (*_IMAGES, ".npy"), "kernel": (".npy", *_IMAGES)}
JSON_UPLOADS = {"mask_png": ("mask", "mask.png"), "kernel_npy": ("kernel", "kernel.npy")}  # base64 members
MAX_NAME = 255  # characters of a client's file name


def upload_path(workdir: Path, key: str, name: str) -> Path:
    """Where upload ``key`` with the client's file ``name`` is written; FieldError for a name that is not
    printable, is longer than 255 characters or has a suffix the upload does not take."""
    if len(name) > MAX_NAME or not name.isprintable():
        raise FieldError(key, f"file name {shown(name)}: expected at most {MAX_NAME} printable characters")
    suffixes = UPLOAD_SUFFIXES[key]
    suffix = Path(name).suffix.lower() or suffixes[0]
    if suffix not in suffixes:
        raise FieldError(key, f"{shown(name)}: the {key} is a {', '.join(sorted(suffixes))} file")
    return workdir / f"{key}{suffix}"


async def bounded_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive; TooLarge as soon as more than ``limit`` bytes came."""
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise TooLarge(f"the request body is over this server's limit of {limit:,} bytes")
        yield chunk


async def read_upload(request: Request, limit: int, workdir: Path) -> Upload:
    """The settings and files of a multipart or JSON request, its files written into ``workdir``."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLarge(f"the request body of {int(length):,} bytes is over this server's limit of {limit:,} bytes")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = await read_multipart(request, limit, workdir)
    else:
        upload = await read_json(request, limit, workdir)
    if "image" not in upload.files:
        raise FieldError("image", "missing: send the image as a file field or base64")
    return upload


async def read_multipart(request: Request, limit: int, workdir: Path) -> Upload:
    """A multipart request: its files are held in memory while the body streams (it is at most ``limit``
    bytes), then each is written once into ``workdir``."""
    parser = MultiPartParser(request.headers, bounded_stream(request, limit), max_files=len(UPLOAD_SUFFIXES),
                             max_fields=len(FIELDS), max_part_size=limit)
    parser.spool_max_size = limit  # no spooling to a temporary file of its own
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise FieldError("body", f"malformed multipart/form-data ({exc.message})") from None
    upload = Upload()
    try:
        for key, value in form.multi_items():
            if not isinstance(value, UploadFile):
                upload.raw[key] = value
                continue
            if key not in UPLOAD_SUFFIXES:
                raise FieldError(key, "unknown file field; send image, mask or kernel")
            upload.names[key] = value.filename or f"{key}{UPLOAD_SUFFIXES[key][0]}"
            upload.files[key] = upload_path(workdir, key, upload.names[key])
            await run_in_threadpool(_write, value, upload.files[key])
    finally:
        await form.close()
    return upload


def _write(upload: UploadFile, path: Path) -> None:
    with path.open("wb") as out:
        shutil.copyfileobj(upload.file, out)


async def read_json(request: Request, limit: int, workdir: Path) -> Upload:
    """A JSON request: ``image`` (with ``filename``), ``mask_png`` and ``kernel_npy`` in base64 beside the
    settings."""
    body = bytearray()
    async for chunk in bounded_stream(request, limit):
        body += chunk
    raw = load_json(bytes(body), "body")
    del body
    if not isinstance(raw, dict):
        raise FieldError("body", "expected multipart/form-data or a JSON object")
    filename = raw.pop("filename", None) or "image.png"
    if not isinstance(filename, str):
        raise FieldError("filename", f"expected a string, got {shown(filename)}")
    upload = Upload(raw)
    for member, (key, name) in {"image": ("image", filename), **JSON_UPLOADS}.items():
        if member in raw:
            try:
                data = base64.b64decode(raw.pop(member), validate=True)
            except (binascii.Error, TypeError, ValueError):
                raise FieldError(member, "expected base64 data") from None
            upload.names[key], upload.files[key] = name, upload_path(workdir, key, name)
            await run_in_threadpool(upload.files[key].write_bytes, data)
    return upload
