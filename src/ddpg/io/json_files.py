"""JSON files: written as strict JSON (no NaN), atomically; read from a user's folder within bounds (size,
nesting)."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

from ddpg.errors import InputError
from ddpg.io.atomic import atomic_write

MAX_JSON_BYTES = 1 << 20  # a sidecar is a few kB: a larger JSON file in a user's folder is not read
MAX_JSON_DEPTH = 64  # a sidecar nests 4 levels deep

_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')  # strings (skipped whole) and brackets
_NESTING = {b"[": 1, b"{": 1, b"]": -1, b"}": -1}


def _finite_or_none(value):
    """``value`` with every NaN or infinite float (at any depth) replaced by None: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def strict_json(data: dict) -> str:
    """``data`` as strict JSON text, as :func:`save_json` writes it: a NaN or infinite float is null (``NaN`` is
    not JSON), other objects their ``str``."""
    return json.dumps(_finite_or_none(data), indent=2, default=str, allow_nan=False) + "\n"


def save_json(data: dict, path: str | Path) -> Path:
    """``data`` as :func:`strict_json`, written atomically."""
    text = strict_json(data)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path: str | Path, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH) -> object:
    """The value of a JSON file in a user's folder (a sidecar, metadata), read within bounds: InputError naming
    the file when it is not a regular file, is larger than ``max_bytes`` (then it is not read), nests deeper
    than ``max_depth``, or is not JSON."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO named x.json does not block
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(f"{path}: not read: not a regular file")
            data = fh.read(max_bytes + 1) if info.st_size <= max_bytes else b""
    except OSError as exc:
        raise InputError(f"{path}: not read ({exc.strerror or exc})") from exc
    if info.st_size > max_bytes or len(data) > max_bytes:
        raise InputError(f"{path}: not read: {max(info.st_size, len(data)):,} bytes is more than a ddpg JSON file "
                         f"can be ({max_bytes:,})")
    depth = 0
    for token in _JSON_TOKENS.finditer(data):
        depth += _NESTING.get(token.group(), 0)
        if depth > max_depth:
            raise InputError(f"{path}: not read: nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
