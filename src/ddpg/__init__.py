"""ddpg: diffusion-prior image restoration (DDPG/IDPG and peers), fast enough to deploy."""

__version__ = "0.1.0"
