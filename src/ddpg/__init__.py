"""ddpg: diffusion-prior image restoration (DDPG/IDPG and peers), fast enough to deploy.

``ddpg.restore``, ``ddpg.degrade`` and ``ddpg.evaluate`` are the Python form of the command line.
"""

from ddpg.lazy import lazy_exports
from ddpg.versions import __version__

__all__ = ["__version__", "degrade", "evaluate", "restore"]
__getattr__, __dir__ = lazy_exports(__name__, {"degrade": "ddpg.api", "evaluate": "ddpg.api", "restore": "ddpg.api"})
