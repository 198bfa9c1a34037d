"""The bundled sample image (a 64×64 public-domain face, NASA astronaut portrait), for ``ddpg restore --sample``,
the export check and the bench."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SAMPLE_IMAGE = "data/samples/astronaut_face64.png"


def sample_path() -> Path:
    """The bundled 64×64 public-domain sample face (NASA astronaut portrait)."""
    return Path(str(resources.files("ddpg").joinpath(SAMPLE_IMAGE)))
