"""What the routes answer: JSON error bodies, the HTTP refusal of each failure, and a restoration's response."""

from __future__ import annotations

import base64
import logging
import re

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from ddpg.errors import DdpgError

from .jobs import FieldError, TooLarge, clipped
from .scheduler import QueueFull, ServeError

log = logging.getLogger("ddpg")

OUTCOME_OF_STATUS = {401: "unauthorized", 413: "too_large", 422: "invalid", 429: "queue_full", 503: "draining",
                     504: "deadline", 499: "disconnected"}


def error_body(message: str, field: str | None = None) -> dict:
    """``{"error": message, "field": field}``; a run of over 80 characters without a space in ``message`` (a
    value a client sent, quoted by the library) is clipped."""
    message = re.sub(r"\S{81,}", lambda run: clipped(run[0]), message)
    return {"error": message, **({"field": field} if field else {})}


def error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    """A JSON error (:func:`error_body`)."""
    return JSONResponse(error_body(message, field), status, headers=headers)


def refusal(exc: Exception) -> tuple[int, dict, dict | None]:
    """(status, body, headers) answering a request that failed with ``exc``: 422 a bad field, 413 too large,
    429 queue full (``Retry-After``), a ServeError's own status, 499 a client gone mid-upload, 500 anything else
    (logged once; the answer holds no traceback)."""
    if isinstance(exc, FieldError):
        return 422, error_body(exc.message, exc.field), None
    if isinstance(exc, TooLarge):
        return 413, error_body(str(exc), exc.field), None
    if isinstance(exc, QueueFull):
        return 429, error_body(str(exc)), {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, ServeError):
        return exc.status, error_body(str(exc)), None
    if isinstance(exc, ClientDisconnect):
        log.warning("ddpg serve: a client disconnected before its request was read")
        return 499, error_body("the client disconnected"), None
    log.error("ddpg serve: a restore request failed: %s", exc, exc_info=not isinstance(exc, DdpgError))
    return 500, error_body(f"restoration failed: {exc}" if isinstance(exc, DdpgError) else
                           f"the server failed on this request ({type(exc).__name__}); its log has the details"), None


def refused(exc: Exception) -> JSONResponse:
    """The JSON error answering ``exc`` (:func:`refusal`)."""
    status, body, headers = refusal(exc)
    return JSONResponse(body, status, headers=headers)


def restore_response(png: bytes, sidecar: dict, kind: str, seconds: dict[str, float],
                     observed: bytes | None = None) -> Response:
    """The restoration as a PNG (or JSON with the sidecar, and the observation PNG as ``observed`` when given),
    its metrics and ``seconds`` (``prepare``: reading the upload, decoding and degrading it; ``queue``: waiting
    for a place in the engine's batch; ``total``: the whole request) in ``X-DDPG-*`` headers."""
    metrics = sidecar.get("metrics", {})
    headers = {f"X-DDPG-{k.replace('_', '-').title()}": str(v) for k, v in metrics.items()}
    headers.update({"X-DDPG-Seed": str(sidecar["seed"]), "X-DDPG-Steps": str(sidecar["steps"]),
                    "X-DDPG-Method": sidecar["method"]})
    headers.update({f"X-DDPG-{name.title()}-S": f"{value:.4f}" for name, value in seconds.items()})
    if kind == "json":
        body = {"png": base64.b64encode(png).decode(), "sidecar": sidecar}
        if observed is not None:
            body["observed"] = base64.b64encode(observed).decode()
        return JSONResponse(body, headers=headers)
    return Response(png, media_type="image/png", headers=headers)
