"""Atomic writes and staged outputs: a write that fails after some bytes are on disk leaves the old file as it
was (so an in-place write would be caught), temporary files sit next to their target, and staged files are
renamed in the order they were added, the sidecar last, only after every one was written."""

import errno
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from ddpg.io import StagedFiles, atomic_write, save_image

ORIGINAL = b"the user's file, which must survive"


def fail_after_some_bytes(path: Path) -> None:
    with open(path, "wb") as f:
        f.write(b"NEW CONTENT, half")
        f.flush()
        os.fsync(f.fileno())
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_failing_midway_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(ORIGINAL)
    written_to = []

    def write(tmp: Path) -> None:
        written_to.append(tmp)
        fail_after_some_bytes(tmp)

    with pytest.raises(OSError, match="No space"):
        atomic_write(target, write)
    assert target.read_bytes() == ORIGINAL
    assert written_to[0] != target and written_to[0].parent == target.parent  # same folder: rename is atomic
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # the partial temporary file is gone


def test_an_image_save_failing_midway_leaves_the_old_image_intact(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    save_image(torch.zeros(3, 4, 4), target)
    before = target.read_bytes()

    def full_disk(self, fp, *args, **kwargs):
        fail_after_some_bytes(Path(fp))

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_image(torch.ones(3, 4, 4), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_an_interrupted_write_leaves_nothing(tmp_path):
    def interrupted(tmp: Path) -> None:
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.txt", interrupted)
    assert list(tmp_path.iterdir()) == []


def test_a_successful_write_replaces_the_file(tmp_path):
    target = tmp_path / "new" / "sub" / "out.bin"  # missing folders are made
    assert atomic_write(target, lambda tmp: tmp.write_bytes(b"new")) == target
    assert target.read_bytes() == b"new" and list(target.parent.iterdir()) == [target]


def recording_replace(monkeypatch, fail_on: str | None = None) -> list[str]:
    """Record the destination names of os.replace; raise for ``fail_on`` (a crash midway through renaming)."""
    done: list[str] = []
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == fail_on:
            raise OSError(errno.EIO, "simulated crash")
        real(src, dst)
        done.append(Path(dst).name)

    monkeypatch.setattr(os, "replace", replace)
    return done


def test_staged_files_are_renamed_in_order_with_the_sidecar_last(tmp_path, monkeypatch):
    order = recording_replace(monkeypatch)
    with StagedFiles() as files:
        files.add(tmp_path / "a_observed.png", lambda t: t.write_bytes(b"o"))
        files.add(tmp_path / "a_restored.png", lambda t: t.write_bytes(b"r"))
        files.add(tmp_path / "a.json", lambda t: t.write_text('{"outputs": ["a_observed.png", "a_restored.png"]}'))
        assert order == [] and sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
    # the hidden record of what is being published comes first (crash recovery); the files in order
    assert order == [".a.json.ddpg-pending", "a_observed.png", "a_restored.png", "a.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a_observed.png", "a_restored.png"]


def test_staged_files_make_missing_folders(tmp_path):
    with StagedFiles() as files:
        files.add(tmp_path / "new" / "sub" / "a.txt", lambda t: t.write_text("a"))
    assert (tmp_path / "new" / "sub" / "a.txt").read_text() == "a"


def test_a_crash_while_renaming_never_leaves_a_sidecar_for_missing_outputs(tmp_path, monkeypatch):
    recording_replace(monkeypatch, fail_on="a_restored.png")
    with pytest.raises(OSError, match="simulated crash"):
        with StagedFiles() as files:
            files.add(tmp_path / "a_observed.png", lambda t: t.write_bytes(b"o"))
            files.add(tmp_path / "a_restored.png", lambda t: t.write_bytes(b"r"))
            files.add(tmp_path / "a.json", lambda t: t.write_text("{}"))
    assert not (tmp_path / "a.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]  # temporaries removed


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    target = tmp_path / "a.txt"
    target.write_bytes(ORIGINAL)
    with pytest.raises(OSError):
        with StagedFiles() as files:
            files.add(target, lambda t: t.write_text("a"))
            files.add(tmp_path / "b.txt", fail_after_some_bytes)
    assert target.read_bytes() == ORIGINAL and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with pytest.raises(KeyError):
        with StagedFiles() as files:
            files.add(tmp_path / "c.txt", lambda t: t.write_text("c"))
            raise KeyError("the caller failed after staging")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    with StagedFiles() as files:
        files.add(target, lambda t: t.write_text("a"))
        files.add(tmp_path / "b.txt", lambda t: t.write_text("b"))
        assert target.read_bytes() == ORIGINAL  # nothing visible before the block ends
    assert target.read_text() == "a" and (tmp_path / "b.txt").read_text() == "b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts open descriptors in /proc/self/fd")
def test_writes_leave_no_descriptor_open(tmp_path):
    before = len(list(Path("/proc/self/fd").iterdir()))
    for i in range(20):
        atomic_write(tmp_path / f"{i}.bin", lambda tmp: tmp.write_bytes(b"x"))
        with StagedFiles() as files:
            files.add(tmp_path / f"{i}.a", lambda tmp: tmp.write_bytes(b"a"))
    assert len(list(Path("/proc/self/fd").iterdir())) == before


# ------------------------------------------------------------- fsync, and a crash at any point completed by a rerun


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fsync'd descriptors by /proc/self/fd")
def test_each_file_is_flushed_before_its_rename_and_the_folder_after_the_renames(tmp_path, monkeypatch):
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with StagedFiles() as files:
        files.add(tmp_path / "a.png", lambda t: save_image(torch.zeros(3, 4, 4), t))
        files.add(tmp_path / "a.json", lambda t: t.write_text("{}"))
    renames = [i for i, (kind, _) in enumerate(events) if kind == "replace"]
    for i in renames:
        assert ("fsync", events[i][1]) in events[:i], events  # the temporary file's data is on disk first
    assert ("fsync", str(tmp_path)) in events[renames[-1]:]  # the renames themselves, after the last one


def crash_after(monkeypatch, calls: int) -> None:
    """os.replace fails from its ``calls + 1``-th call on: a crash at that point of the writes."""
    real, count = os.replace, [0]

    def replace(src, dst):
        count[0] += 1
        if count[0] > calls:
            raise OSError(errno.EIO, "simulated crash")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def test_a_crash_at_any_point_of_an_images_writes_is_completed_by_a_rerun(tmp_path, monkeypatch):
    from ddpg import api

    image = tmp_path / "in" / "img0.png"
    image.parent.mkdir()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(image)
    calls = recording_replace(monkeypatch)
    api.restore([image], tmp_path / "count", prior="gaussian", steps=2)
    monkeypatch.undo()
    expected = ["img0.json", "img0_observed.png", "img0_restored.png"]
    for crash in range(len(calls)):
        for skip in (False, True):
            out = tmp_path / f"out{crash}{skip}"
            crash_after(monkeypatch, crash)
            assert api.restore([image], out, prior="gaussian", steps=2).exit_code == 1
            monkeypatch.undo()
            report = api.restore([image], out, prior="gaussian", steps=2, skip_existing=skip)
            assert report.done == [str(out / "img0_restored.png")], (crash, skip, report)
            assert sorted(p.name for p in out.iterdir()) == expected, (crash, skip)
    # a user's file put where the crashed run had renamed its own is theirs: never replaced
    out = tmp_path / "user"
    crash_after(monkeypatch, calls.index("img0_observed.png") + 1)
    api.restore([image], out, prior="gaussian", steps=2)
    monkeypatch.undo()
    (out / "img0_observed.png").write_bytes(ORIGINAL)
    report = api.restore([image], out, prior="gaussian", steps=2, skip_existing=True)
    assert f"{out / 'img0_observed.png'} exists and no restoration sidecar names it" in report.failed[0][1]
    assert (out / "img0_observed.png").read_bytes() == ORIGINAL
