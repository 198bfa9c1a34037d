"""An operator that shows only A and Aᵀ (test helper): a task's operator wrapped so that its pinv_eta and pinv
are the base class's conjugate gradients, to compare with the operator's own closed forms."""

import torch

from ddpg.operators import Operator


class OnlyAAt(Operator):
    """``inner`` seen through its A, Aᵀ and measurement shape only (the base class's solver settings)."""

    def __init__(self, inner: Operator):
        super().__init__(inner.img_size)
        self.inner, self.name = inner, f"{inner.name} (A and At only)"

    def meas_shape(self, batch: int) -> tuple[int, ...]:
        return self.inner.meas_shape(batch)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.A(x)

    def At(self, y: torch.Tensor) -> torch.Tensor:
        return self.inner.At(y)
