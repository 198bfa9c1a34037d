"""The OpenVINO IR cache: ``--backend openvino --engine model.onnx`` converts a float32 ONNX export into an IR
once and reuses it, keyed like TensorRT plans (:mod:`ddpg.export.engine_cache`) by everything the IR depends on:
the sha256 of the ONNX file (and its external data), the OpenVINO version and the IR's precision. An IR is reused
only when its sidecar's key equals the requested one and the ``.xml``/``.bin`` still have the sha256 the sidecar
recorded; otherwise it is converted again (written atomically, sidecar last)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

from ddpg.io import read_json
from ddpg.models.checkpoints import sha256_file

from .engine_cache import default_cache_dir, hash_onnx

IR_KEY_VERSION = 1


def ir_key(onnx_path: str | Path, precision: str, openvino_version: str) -> dict:
    """What a cached IR is converted from and with (JSON-able)."""
    return {"key_version": IR_KEY_VERSION, "onnx_sha256": hash_onnx(onnx_path)[0],
            "openvino_version": openvino_version, "precision": precision}


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cached_ir_path(cache_dir: str | Path, onnx_path: str | Path, key: dict) -> Path:
    """``<cache_dir>/openvino/<onnx stem>-<precision>-<key digest[:16]>.xml``."""
    return Path(cache_dir) / "openvino" / f"{Path(onnx_path).stem}-{key['precision']}-{key_digest(key)[:16]}.xml"


def ir_cache_status(xml: Path, key: dict) -> tuple[bool, str]:
    """(whether the IR at ``xml`` was converted for exactly ``key`` and is intact, why not)."""
    sidecar = xml.with_name(xml.name + ".json")
    if not xml.is_file() or not sidecar.is_file():
        return False, "no IR yet"
    try:
        data = read_json(sidecar)
    except Exception as exc:  # InputError for a damaged sidecar: convert again
        return False, f"stale IR: {exc}"
    if data.get("key") != key:
        return False, "stale IR: converted for another configuration"
    for entry in data.get("files", {}).values():
        if sha256_file(xml.with_name(entry["name"])) != entry["sha256"]:
            return False, f"stale IR: {entry['name']} does not match the sha256 in its sidecar"
    return True, "cached IR matches"


def openvino_ir(onnx_path: str | Path, *, precision: str = "fp32", cache_dir: str | Path | None = None,
                log: Callable[[str], None] | None = None) -> Path:
    """The IR for ``onnx_path`` (a float32 ``ddpg export`` ONNX) at ``precision`` (fp32 | bf16) in the cache
    (default :func:`~ddpg.export.engine_cache.default_cache_dir`), converted when missing or stale."""
    from ddpg.runtime.backends.openvino import openvino_module

    from .openvino_export import ir_from_onnx

    key = ir_key(onnx_path, precision, openvino_module().__version__)
    xml = cached_ir_path(cache_dir or default_cache_dir(), onnx_path, key)
    hit, reason = ir_cache_status(xml, key)
    if not hit:
        (log or (lambda message: None))(f"{onnx_path}: converting to an OpenVINO IR ({reason}) at {xml}")
        ir_from_onnx(onnx_path, xml, precision=precision, sidecar_extra={"key": key})
    return xml
