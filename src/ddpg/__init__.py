"""ddpg: diffusion-prior image restoration (DDPG/IDPG and peers), fast enough to deploy.

``ddpg.restore``, ``ddpg.degrade`` and ``ddpg.evaluate`` are the Python form of the command line.
"""

from ddpg.versions import __version__

__all__ = ["__version__", "degrade", "evaluate", "restore"]


def __getattr__(name: str):
    if name in ("degrade", "evaluate", "restore"):
        from ddpg import api

        return getattr(api, name)
    raise AttributeError(f"module 'ddpg' has no attribute {name!r}")
