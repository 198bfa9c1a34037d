"""The singular basis of an operator, for the samplers that work per singular value (DDRM, DDNM+).

The operator supplies it (:meth:`ddpg.operators.Operator.spectral`): the flat real coefficients of an SVD
operator's ``Vt``/``V`` (length N = 3·H·W; the first M pair with its singular values, the rest are
unmeasured, s = 0), or the orthonormal 2-D DFT of a circular FFT blur (complex (B, 3, H, W), s = |K̂|).
Operators without such a decomposition (blur + decimation by FFT) refuse, naming the method.
"""

from __future__ import annotations

import torch

from ddpg.operators.base import Operator


class SpectralView:
    """``coef(x)`` = Vᵀx, ``image(c)`` = V c, ``s`` (broadcasts against coefficients; 0 = unmeasured) and
    ``meas_coef(y)`` = Uᵀy in the same layout (0 where s = 0), on ``device``; ``method`` names the sampler in
    the refusal of an operator without a decomposition."""

    def __init__(self, operator: Operator, device: torch.device, method: str):
        self.operator = operator
        self.basis = operator.spectral(device, method)
        self.s = self.basis.s

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        return self.basis.coef(x)

    def image(self, c: torch.Tensor) -> torch.Tensor:
        return self.basis.image(c)

    def meas_coef(self, y: torch.Tensor) -> torch.Tensor:
        return self.basis.meas_coef(y)
