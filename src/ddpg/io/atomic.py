"""Atomic writes and a folder's housekeeping: temporary files renamed into place, the folder's lock, and the
temporaries of killed writers.

Every writer goes through :func:`atomic_write`: a temporary file in the destination folder, flushed to the disk,
then ``os.replace`` and the folder flushed — an interrupted or failed write never leaves a half-written file under
the final name, and a written one survives a power cut. Temporary names carry the writer's pid, so a later run can
remove those of a killed one (:func:`remove_stale_temporaries`).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("ddpg")

TEMPORARY_NAME = re.compile(r"\..+\.ddpg-(?P<pid>\d+)-[a-z0-9_]+\.part")  # temporary_beside's names
LOCK_NAME = ".ddpg.lock"


def _umask() -> int:
    """The process umask, read without changing it where the system says it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_beside(path: Path) -> Path:
    """An empty temporary file next to ``path`` (a hidden ``.name.ddpg-PID-xxxx.part``, PID this process's),
    its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.ddpg-{os.getpid()}-", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries (after renames), to the disk. A file system that cannot flush
    a folder (EINVAL) is left as it is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL or not stat.S_ISDIR(os.fstat(fd).st_mode):
            raise
    finally:
        os.close(fd)


def publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary file, its data on the disk first, over ``path``, with the mode a new file
    gets under the umask (a temporary file is created 0600)."""
    os.chmod(tmp, 0o666 & ~_umask())
    fsync_path(tmp)
    os.replace(tmp, path)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it over ``path`` (flushed to the
    disk before and after). On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is left as it was."""
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)
    return path


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files (``.name.ddpg-PID-xxxx.part``) that killed writers left in ``folder``: those
    named as :func:`atomic_write` names them, of a process that no longer runs. Call it holding the folder's
    lock (:func:`folder_lock`). Returns the files removed."""
    removed = []
    with os.scandir(folder) as entries:
        for entry in entries:
            found = TEMPORARY_NAME.fullmatch(entry.name)
            if found and entry.is_file(follow_symlinks=False) and not _running(int(found["pid"])):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    if removed:
        log.info("%s: removed %d temporary files of an earlier run that was killed", folder, len(removed))
    return removed


def _running(pid: int) -> bool:
    """Whether a process ``pid`` runs (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


class FolderBusy(OSError):
    """Another process holds the folder's lock (:func:`folder_lock`); ``holder`` is its pid, if it said."""

    def __init__(self, folder: Path, holder: str):
        self.folder, self.holder = folder, holder
        super().__init__(errno.EWOULDBLOCK, f"{folder}: locked by another process", str(folder))


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock inside the block: an exclusive ``flock`` of the hidden file ``.ddpg.lock`` there
    (holding this pid), taken without waiting (:class:`FolderBusy` when another process holds it) and released,
    the file removed, on leaving. The folder must exist."""
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.path.samestat(os.fstat(fd), os.stat(path)):  # not removed by the holder before we locked it
                break
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise FolderBusy(folder, holder) from None
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
