"""Inception pool features of image files, computed once and cached on disk.

The cache holds one ``<sha256 of the file's bytes>.npy`` (2048 float32) per image under
``<cache>/<weights id>/``: renaming or copying an image reuses its features, editing it or changing the
weights does not. Every write is atomic (a temporary file, then a rename).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ddpg.io import atomic_write, load_image

BATCH = 16


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class FeatureExtractor:
    """``features(paths)`` → (N, 2048) float64 for image files, through the cache ``cache_dir`` (None: no cache).

    ``network`` maps (B, 3, H, W) in [0, 1] to (B, D) features; ``weights_id`` names its weights (the file's
    sha256) so that features of other weights never mix."""

    def __init__(self, network: torch.nn.Module, weights_id: str, cache_dir: str | Path | None,
                 device: str = "cpu") -> None:
        self.network = network
        self.weights_id = weights_id
        self.folder = Path(cache_dir) / weights_id[:32] if cache_dir is not None else None
        self.device = device
        self.computed = 0  # images run through the network (not found in the cache)

    def _cached(self, digest: str) -> np.ndarray | None:
        if self.folder is None:
            return None
        path = self.folder / f"{digest}.npy"
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):  # a damaged entry is computed again
            return None

    def _store(self, digest: str, feature: np.ndarray) -> None:
        if self.folder is not None:
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as fh:  # a file object: np.save would add ".npy" to a path
                    np.save(fh, feature, allow_pickle=False)

            atomic_write(self.folder / f"{digest}.npy", write)

    def features(self, paths: Sequence[str | Path]) -> np.ndarray:
        """(N, D) float64 features of ``paths`` in order (images read as :func:`ddpg.io.load_image`)."""
        digests = [file_digest(Path(p)) for p in paths]
        out: list[np.ndarray | None] = [self._cached(d) for d in digests]
        todo = [i for i, f in enumerate(out) if f is None]
        by_size: dict[tuple, list[tuple[int, torch.Tensor]]] = {}
        for i in todo:
            img = load_image(paths[i])
            by_size.setdefault(tuple(img.shape), []).append((i, img))
        with torch.no_grad():
            for group in by_size.values():
                for start in range(0, len(group), BATCH):
                    chunk = group[start:start + BATCH]
                    batch = torch.stack([img for _, img in chunk]).to(self.device)
                    feats = self.network(batch).float().cpu().numpy()
                    for (i, _), feature in zip(chunk, feats.astype(np.float32), strict=True):
                        out[i] = feature  # float32 as cached, so a cached run gives the same numbers
                        self._store(digests[i], feature)
                        self.computed += 1
        return np.stack([np.asarray(f, dtype=np.float64) for f in out]) if out else np.zeros((0, 0))
