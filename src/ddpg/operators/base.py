"""The operator interface every sampler uses."""

from __future__ import annotations

import torch

from ddpg.errors import OperatorError


class Operator:
    """A linear degradation H on images (B, 3, H, W) in the [-1, 1] scale.

    ``A(x)`` gives the image-shaped measurement (``meas_shape``), ``At(y)`` the adjoint, ``pinv_eta(r, η)`` =
    Hᵀ(HHᵀ + ηI)⁻¹ r and ``pinv(r)`` the exact pseudo-inverse (zero on zero singular values). Operators hold
    no batch state; precomputed spectra and matrices live per device and dtype.
    """

    name: str = "operator"
    has_svd: bool = False

    def __init__(self, img_size: int | tuple[int, int]):
        H, W = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if H < 1 or W < 1:
            raise OperatorError(f"image size must be positive, got {(H, W)}")
        self.img_size = (int(H), int(W))
        self.device = torch.device("cpu")
        self.params: dict = {}

    def to(self, device: torch.device | str) -> Operator:
        self.device = torch.device(device)
        return self

    def meas_shape(self, batch: int) -> tuple[int, ...]:
        H, W = self.img_size
        return (batch, 3, H, W)

    def check_image(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[-2:]) != self.img_size:
            raise OperatorError(f"{self.name}: expected images (B, C, {self.img_size[0]}, {self.img_size[1]}), "
                                f"got {tuple(x.shape)}")

    def check_measurement(self, y: torch.Tensor) -> None:
        expected = self.meas_shape(y.shape[0] if y.ndim else 1)
        if tuple(y.shape) != expected:
            raise OperatorError(f"{self.name}: measurement must have shape {expected}, got {tuple(y.shape)}")

    @staticmethod
    def check_eta(eta: float) -> None:
        if not eta > 0:
            raise OperatorError(f"eta must be > 0, got {eta}")

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def At(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv_eta(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        raise NotImplementedError

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, size={self.img_size}, {self.params})"


class DeviceCache:
    """Tensors derived from an operator's definition, computed once per (device, dtype)."""

    def __init__(self, build):
        self._build = build
        self._store: dict = {}

    def get(self, device: torch.device, dtype: torch.dtype):
        key = (str(device), dtype)
        if key not in self._store:
            self._store[key] = self._build(device, dtype)
        return self._store[key]
