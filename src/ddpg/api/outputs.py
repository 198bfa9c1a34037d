"""Output folders, as every command that writes into a user's folder treats them: kept apart from the inputs,
one ddpg run at a time (a lock), and a file there replaced only when the sidecar of an earlier run of the same
command and settings names it — never a user's file, a link (even a dangling one), or other settings' outputs.
What a crash left half-published is undone (:func:`~ddpg.io.recover_staged`), what a killed run left under
temporary names removed (:func:`~ddpg.io.remove_stale_temporaries`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch.distributed as dist

from ddpg.errors import InputError, ParameterError
from ddpg.io import FolderBusy, folder_lock, read_json, recover_staged, remove_stale_temporaries


def check_apart(param: str, outdir: Path, inputs: Iterable[str | Path], files: Iterable[Path]) -> None:
    """Refuse (ParameterError naming ``param``) an output folder that is one of the input folders or holds an
    input file of the run: outputs would overwrite inputs, or be read back as inputs."""
    holders = {Path(p).resolve() for p in inputs if Path(p).is_dir()} | {Path(f).resolve().parent for f in files}
    if outdir.resolve() in holders:
        raise ParameterError(param, outdir, "holds inputs of this run: outputs would overwrite them or be read back "
                                            "as inputs; choose another output folder")


@contextmanager
def output_folder(outdir: Path, param: str = "outdir", shard: tuple[int, int] = (0, 1)) -> Iterator[None]:
    """Make ``outdir``, check that it can be written, and hold its lock (:func:`~ddpg.io.folder_lock`) inside the
    block, the temporary files of killed runs removed first; ParameterError naming ``param`` when it cannot be
    written or another ddpg run holds it. Ranks of one torchrun job (``shard`` = (rank, world size)): rank 0
    takes the lock and the others wait for its outcome (a collective), so all go on or all raise."""
    stack, refusal = ExitStack(), None
    if shard[0] == 0:
        try:
            outdir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=outdir):
                pass
            stack.enter_context(folder_lock(outdir))
        except FolderBusy as exc:
            holder = f" (pid {exc.holder})" if exc.holder else ""
            refusal = f"another ddpg run{holder} is writing into this folder; wait for it to finish or choose " \
                      "another output folder"
        except OSError as exc:
            refusal = f"cannot write there ({exc.strerror or exc})"
    if shard[1] > 1:
        verdict = [refusal]
        dist.broadcast_object_list(verdict, src=0)
        refusal = verdict[0]
    if refusal is not None:
        raise ParameterError(param, outdir, refusal)
    with stack:
        if shard[0] == 0:
            remove_stale_temporaries(outdir)
        yield


def read_sidecar(path: Path, kind: str) -> dict | None:
    """The record of a sidecar of ``kind`` (its ``"kind"`` entry) at ``path``; None when there is none, it is a
    link, or it is another JSON value. InputError (:func:`~ddpg.io.read_json`) when it cannot be read."""
    if not os.path.lexists(path) or os.path.islink(path):
        return None
    record = read_json(path)
    return record if isinstance(record, dict) and record.get("kind") == kind else None


def named_outputs(record: dict) -> set[str]:
    """The file names a sidecar's ``outputs`` mapping gives."""
    outputs = record.get("outputs")
    return {str(name) for name in outputs.values()} if isinstance(outputs, dict) else set()


def claim_outputs(folder: Path, names: Sequence[str], sidecar: str, kind: str, settings: Callable[[], dict] | None,
                  *, source: Path, verb: str, noun: str) -> bool:
    """Whether ``folder`` holds complete outputs of ``source`` (every file its sidecar of ``kind`` names) made
    with ``settings()`` (None: not compared). Raises InputError, naming the file, when writing ``names`` and
    ``sidecar`` there would replace what no ``noun`` of these settings wrote: a user's file, a link (even a
    dangling one), a sidecar that cannot be read, or the outputs of other settings (with the difference). What
    a crash left half-published there is undone first (:func:`~ddpg.io.recover_staged`). ``verb``: the
    message's "not restored"."""
    recover_staged(folder / sidecar)
    present = [n for n in (*names, sidecar) if os.path.lexists(folder / n)]
    if not present:
        return False
    keep = "it is never overwritten (choose another output folder)"
    try:
        record = read_sidecar(folder / sidecar, kind)
    except InputError as exc:
        raise InputError(f"{source}: not {verb}: {exc}; {keep}") from exc
    if record is None:
        raise InputError(f"{source}: not {verb}: {folder / present[0]} exists and no {noun} sidecar names it; {keep}")
    listed = named_outputs(record) | {sidecar}
    foreign = [n for n in present if n not in listed or os.path.islink(folder / n)]
    if foreign:
        raise InputError(f"{source}: not {verb}: {folder / foreign[0]} was not written by the {noun} in {sidecar}; "
                         f"{keep}")
    if settings is not None:
        wanted, held = settings(), record.get("settings")
        held = held if isinstance(held, dict) else {}
        if held != wanted:
            diff = [f"{k} {held.get(k)!r} there, {wanted[k]!r} now" for k in wanted if held.get(k) != wanted[k]]
            raise InputError(f"{source}: not {verb}: {folder / sidecar} holds a {noun} with other settings "
                             f"({'; '.join(diff)}); choose another output folder, or remove those outputs")
    return all(os.path.lexists(folder / n) for n in listed)
