"""The web page of ``ddpg serve`` (``GET /``) and its assets (``GET /static/NAME``), served from the package's
``static`` folder without a token (the page holds no secret; it sends the token a person types with its API
calls). Only the files the folder held when the app was built are served, each by its exact name with its
content type; any other name, a path included, is 404."""

from __future__ import annotations

from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from .responses import error

FOLDER = Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png",
                 ".ico": "image/x-icon", ".json": "application/json"}
PAGE = "index.html"


def static_files(folder: Path = FOLDER) -> dict[str, Path]:
    """{file name: path} of the files in ``folder`` with a known content type."""
    if not folder.is_dir():
        return {}
    return {p.name: p for p in folder.iterdir() if p.is_file() and p.suffix in CONTENT_TYPES}


FILES = static_files()


async def send_file(name: str) -> Response:
    path = FILES.get(name)
    if path is None:
        return error(404, f"no file {name[:80]!r} here")
    data = await run_in_threadpool(path.read_bytes)
    return Response(data, media_type=CONTENT_TYPES[path.suffix],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


async def index(request: Request) -> Response:
    """``GET /``: the page."""
    return await send_file(PAGE)


async def static_file(request: Request) -> Response:
    """``GET /static/NAME``: one of the page's assets."""
    return await send_file(request.path_params["name"])
