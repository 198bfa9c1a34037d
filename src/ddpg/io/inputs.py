"""Input files: what a list of files and folders holds for a restoration (images, or measurements in place
of the images of the same stem)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
MEASUREMENT_SUFFIXES = frozenset({".pt", ".npy"})


def collect_inputs(paths: Iterable[str | Path], suffixes: Iterable[str] = IMAGE_SUFFIXES
                   ) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files from files and folders (a folder: its files with ``suffixes``, sorted; not recursive; hidden files
    left out). When a folder holds a measurement and images of one stem (``a.pt`` and ``a.png``, as ``ddpg
    degrade`` writes), the measurement is taken (.pt before .npy); images of one stem (``a.png``, ``a.jpg``) are
    all returned, for the caller to tell apart. Returns (files, problems) with a reason per unusable path."""
    suffixes = {s.lower() for s in suffixes}
    rank = {".pt": 0, ".npy": 1}
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                entries = [q for q in p.iterdir() if q.suffix.lower() in suffixes and q.is_file()
                           and not q.name.startswith(".")]
            except OSError as exc:
                problems.append((p, f"cannot list folder ({exc.strerror or exc})"))
                continue
            by_stem: dict[str, list[Path]] = {}
            for q in sorted(entries, key=lambda q: (q.stem, rank.get(q.suffix.lower(), 2), q.name)):
                kept = by_stem.setdefault(q.stem, [])
                if not kept or (q.suffix.lower() not in rank and kept[0].suffix.lower() not in rank):
                    kept.append(q)
            if not by_stem:
                problems.append((p, f"folder holds no input files ({', '.join(sorted(suffixes))})"))
            files.extend(q for s in sorted(by_stem) for q in by_stem[s])
        elif p.is_file():
            files.append(p)
        elif p.exists():
            problems.append((p, "not a regular file or folder"))
        else:
            problems.append((p, "no such file or folder"))
    return files, problems
