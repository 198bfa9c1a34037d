"""The singular basis of an operator, for the samplers that work per singular value (DDRM, DDNM+).

For SVD operators (``has_svd``) the coefficients are the flat real vectors of the operator's ``Vt``/``V``
(length N = 3·H·W; the first M pair with ``singulars()``, the rest are unmeasured, s = 0). A circular FFT blur
is diagonal in the orthonormal 2-D DFT: A = F* diag(K̂) F, so V = F*, the singular values are |K̂| and U = F*
diag(K̂/|K̂|). Its coefficients are complex (B,3,H,W) and Hermitian-symmetric for real images; every sampler
rule multiplies them by real factors that depend only on |K̂| (symmetric in frequency), so images stay real.
Blur + decimation (FFT SR) is not diagonal in any cheap basis and is refused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddpg.errors import OperatorError
from ddpg.operators.base import Operator
from ddpg.operators.fft import FFTBlur, nonzero_threshold


class SpectralView:
    """``coef(x)`` = Vᵀx, ``image(c)`` = V c, ``s`` (broadcasts against coefficients; 0 = unmeasured) and
    ``meas_coef(y)`` = Uᵀy in the same layout (0 where s = 0)."""

    def __init__(self, operator: Operator, device: torch.device, method: str):
        self.operator = operator
        if getattr(operator, "has_svd", False):
            s = operator.singulars().to(device, torch.float32)
            n = 3 * operator.img_size[0] * operator.img_size[1]
            self.s = F.pad(s, (0, n - s.numel()))
            self.kind = "svd"
        elif isinstance(operator, FFTBlur):
            K = operator.spectrum(device, torch.float32, full=True)
            mag = K.abs()
            keep = mag**2 > nonzero_threshold(mag**2, operator.img_size)
            self.s = torch.where(keep, mag, 0)
            self.phase_conj = torch.where(keep, K.conj() / torch.where(keep, mag, 1), 0)
            self.kind = "fft"
        else:
            raise OperatorError(f"{method} needs an operator with an SVD (U, V, singular values) or a circular "
                                f"FFT blur; {operator.name} ({type(operator).__name__}) has neither — use "
                                f"impl='svd' for this task")

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "svd":
            return self.operator.Vt(x)
        return torch.fft.fft2(x, norm="ortho")

    def image(self, c: torch.Tensor) -> torch.Tensor:
        if self.kind == "svd":
            return self.operator.V(c)
        return torch.fft.ifft2(c, norm="ortho").real

    def meas_coef(self, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "svd":
            u = self.operator.Ut(y)
            return F.pad(u, (0, self.s.numel() - u.shape[1]))
        return self.phase_conj * torch.fft.fft2(y, norm="ortho")
