"""Several outputs published together (:class:`StagedFiles`), and the undoing of a publication a crash
interrupted (:func:`recover_staged`)."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ddpg.errors import InputError
from ddpg.io.atomic import fsync_path, publish, temporary_beside
from ddpg.io.json_files import read_json, save_json

log = logging.getLogger("ddpg")

PENDING_SUFFIX = ".ddpg-pending"  # StagedFiles' record of a publication under way: .<last name>.ddpg-pending


class StagedFiles:
    """Several outputs that appear together: each is written to a temporary file first, and only when all
    are written are they renamed into place (in order, so the last one — a sidecar — marks completion).
    Leaving the block by an exception removes every temporary file and renames nothing. Before the first rename
    a hidden record (:func:`pending_record` of the last file) names every file of the last one's folder with
    its size and sha256, and is removed once all are renamed and flushed: after a crash between the renames,
    :func:`recover_staged` tells these files from anyone else's."""

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []

    def __enter__(self) -> StagedFiles:
        return self

    def add(self, path: str | Path, write: Callable[[Path], None]) -> None:
        """Write a file under a temporary name now, to be renamed to ``path`` when the block ends."""
        path = Path(path)
        tmp = temporary_beside(path)
        self._staged.append((tmp, path))
        write(tmp)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self._staged:
                self._commit()
        finally:
            for tmp, _ in self._staged:
                tmp.unlink(missing_ok=True)

    def _commit(self) -> None:
        last = self._staged[-1][1]
        record = pending_record(last)
        if len(self._staged) > 1:
            files = {path.name: _digest(tmp) for tmp, path in self._staged if path.parent == last.parent}
            save_json({"kind": "ddpg-pending", "files": files}, record)
        for tmp, path in self._staged:
            publish(tmp, path)
        for folder in dict.fromkeys(path.parent for _, path in self._staged):
            fsync_path(folder)
        record.unlink(missing_ok=True)


def pending_record(last: Path) -> Path:
    """The hidden record :class:`StagedFiles` keeps while it renames files whose last one is ``last``."""
    return last.with_name(f".{last.name}{PENDING_SUFFIX}")


def _digest(path: Path) -> dict:
    """{size, sha256} of a file."""
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha.update(chunk)
        return {"size": os.fstat(fh.fileno()).st_size, "sha256": sha.hexdigest()}


def _is_file_with(path: Path, digest: object) -> bool:
    """Whether ``path`` is a regular file (not a link) with the size and sha256 of ``digest``."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and isinstance(digest, dict) and info.st_size == digest.get("size") and \
        _digest(path)["sha256"] == digest.get("sha256")


def recover_staged(last: Path) -> None:
    """Undo a :class:`StagedFiles` publication that a crash interrupted (its record still there): when ``last``
    was renamed, every file was and only the record is removed; else the files renamed so far — those with the
    recorded size and sha256, never anyone else's file of the same name — are removed with the record. Call it
    holding the folder's lock (:func:`folder_lock`)."""
    record = pending_record(last)
    if not os.path.isfile(record):
        return
    try:
        files = read_json(record)
    except InputError as exc:
        log.warning("%s; left as it is", exc)
        return
    files = files.get("files") if isinstance(files, dict) else None
    if isinstance(files, dict) and not _is_file_with(last, files.get(last.name)):
        for name, digest in files.items():
            if isinstance(name, str) and name == Path(name).name and _is_file_with(last.parent / name, digest):
                (last.parent / name).unlink()
                log.info("%s: removed (written by a run that stopped before its outputs were complete)",
                         last.parent / name)
    record.unlink()
    fsync_path(last.parent)
