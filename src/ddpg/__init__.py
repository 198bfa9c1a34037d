"""ddpg: diffusion-prior image restoration (DDPG/IDPG and peers), fast enough to deploy.

``ddpg.restore``, ``ddpg.degrade`` and ``ddpg.evaluate`` are the Python form of the command line.
"""

__version__ = "0.1.0"
__all__ = ["degrade", "evaluate", "restore"]


def __getattr__(name: str):
    if name in __all__:
        from ddpg import api

        return getattr(api, name)
    raise AttributeError(f"module 'ddpg' has no attribute {name!r}")
