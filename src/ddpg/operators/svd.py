"""Operators with an explicit SVD (DDRM/DDNM convention), applied without dense (HW)×(HW) matrices.

Flat spectral layout (``Vt``/``V``, ``Ut``/``U``): coefficients of the M non-trivial singular directions
come first, channel-major, paired with ``singulars()`` (length M); the remaining (null-space) coefficients
follow. Zero singular values inside the first M (truncation) are allowed.
"""

from __future__ import annotations

import numpy as np
import torch

from ddpg.errors import OperatorError

from .base import DeviceCache, Operator


def svd_1d(mat: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U (m×m), s (m,), V (N×N)) of an m×N matrix, m ≤ N; singular values below ``threshold`` set to 0.
    The first m columns of V pair with s."""
    U, s, Vt = np.linalg.svd(np.asarray(mat, dtype=np.float64), full_matrices=True)
    return U, np.where(s < threshold, 0.0, s), Vt.T


class SeparableSVD(Operator):
    """Y_c = A_h X_c A_wᵀ per channel with 1-D matrices A_h (m_h×H), A_w (m_w×W); 2-D singular values
    s_i·t_j. 1-D singular values below ``threshold`` are set to 0 and the truncated A is the operator.

    For decimating operators ``scale`` is the factor and ``sample_offset`` the high-resolution (row, col)
    coordinate of the centre of low-resolution sample (0, 0) (sample r sits at scale·r + offset)."""

    has_svd = True

    def __init__(self, A_h: np.ndarray, A_w: np.ndarray, name: str, threshold: float = 0.0, *,
                 scale: int = 1, sample_offset: tuple[float, float] = (0.0, 0.0)):
        super().__init__((A_h.shape[1], A_w.shape[1]))
        if A_h.shape[0] > A_h.shape[1] or A_w.shape[0] > A_w.shape[1]:
            raise OperatorError(f"{name}: 1-D factors must not have more rows than columns, got "
                                f"{A_h.shape} and {A_w.shape}")
        self.name = name
        self.threshold = threshold
        self.scale = scale
        self.sample_offset = sample_offset
        h_factors = svd_1d(A_h, threshold)
        w_factors = h_factors if np.array_equal(A_h, A_w) else svd_1d(A_w, threshold)
        (self._Uh, self._sh, self._Vh), (self._Uw, self._sw, self._Vw) = h_factors, w_factors
        self.m = (len(self._sh), len(self._sw))
        self._mats = DeviceCache(self._build)

    def _build(self, device, dtype):
        def t(a):
            return torch.as_tensor(a, dtype=dtype, device=device)

        Ah = self._Uh * self._sh @ self._Vh[:, : self.m[0]].T
        Aw = self._Uw * self._sw @ self._Vw[:, : self.m[1]].T
        s2d = np.outer(self._sh, self._sw)
        return {"Ah": t(Ah), "Aw": t(Aw), "Uh": t(self._Uh), "Uw": t(self._Uw), "Vh": t(self._Vh),
                "Vw": t(self._Vw), "s2d": t(s2d)}

    def meas_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, 3, *self.m)

    def _get(self, x):
        return self._mats.get(x.device, x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        M = self._get(x)
        return M["Ah"] @ x @ M["Aw"].T

    def At(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        M = self._get(y)
        return M["Ah"].T @ y @ M["Aw"]

    def _spectral_apply(self, r: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
        M = self._get(r)
        coef = M["Uh"].T @ r @ M["Uw"] * factor
        return M["Vh"][:, : self.m[0]] @ coef @ M["Vw"][:, : self.m[1]].T

    def pinv_eta(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        self.check_eta(eta)
        self.check_measurement(r)
        s = self._get(r)["s2d"]
        return self._spectral_apply(r, s / (s**2 + eta))

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        self.check_measurement(r)
        s = self._get(r)["s2d"]
        return self._spectral_apply(r, torch.where(s > 0, 1 / torch.where(s > 0, s, 1), 0))

    # DDRM interface -----------------------------------------------------------------------------------
    def singulars(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        s = torch.as_tensor(np.outer(self._sh, self._sw), dtype=dtype, device=self.device)
        return s.flatten().repeat(3)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        M = self._get(x)
        c = M["Vh"].T @ x @ M["Vw"]  # (B, 3, H, W) spectral coefficients
        mh, mw = self.m
        head = c[..., :mh, :mw].reshape(x.shape[0], -1)
        mask = torch.ones(c.shape[-2:], dtype=torch.bool, device=x.device)
        mask[:mh, :mw] = False
        tail = c[..., mask].reshape(x.shape[0], -1)
        return torch.cat([head, tail], dim=1)

    def V(self, v: torch.Tensor) -> torch.Tensor:
        H, W = self.img_size
        mh, mw = self.m
        B = v.shape[0]
        n_head = 3 * mh * mw
        M = self._get(v)
        c = v.new_zeros(B, 3, H, W)
        c[..., :mh, :mw] = v[:, :n_head].reshape(B, 3, mh, mw)
        mask = torch.ones(H, W, dtype=torch.bool, device=v.device)
        mask[:mh, :mw] = False
        c[..., mask] = v[:, n_head:].reshape(B, 3, -1)
        return M["Vh"] @ c @ M["Vw"].T

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        M = self._get(y)
        return (M["Uh"].T @ y @ M["Uw"]).reshape(y.shape[0], -1)

    def U(self, c: torch.Tensor) -> torch.Tensor:
        M = self._get(c)
        return M["Uh"] @ c.reshape(c.shape[0], 3, *self.m) @ M["Uw"].T


def reflect_index(j: int, n: int) -> int:
    """Half-sample symmetric reflection (edge pixel repeated)."""
    while j < 0 or j >= n:
        j = -j - 1 if j < 0 else 2 * n - 1 - j
    return j


def bicubic_matrix(n: int, scale: int, taps: np.ndarray) -> np.ndarray:
    """(n/s)×n decimation matrix: row r anchored at i = s·r + s/2, columns i − len/2 … i + len/2 − 1 with
    weight taps[j − i + len/2], symmetric borders (reflected contributions accumulate)."""
    half = len(taps) // 2
    mat = np.zeros((n // scale, n))
    for r in range(n // scale):
        i = scale * r + scale // 2
        for j in range(i - half, i + half):
            mat[r, reflect_index(j, n)] += taps[j - i + half]
    return mat


def avgpool_matrix(n: int, scale: int) -> np.ndarray:
    mat = np.zeros((n // scale, n))
    for r in range(n // scale):
        mat[r, r * scale:(r + 1) * scale] = 1.0 / scale
    return mat


def toeplitz_zero_boundary(n: int, taps: np.ndarray) -> np.ndarray:
    """n×n convolution matrix with zero boundary using all k taps: row i covers i − k//2 … i + ⌈k/2⌉ − 1."""
    k = len(taps)
    mat = np.zeros((n, n))
    for i in range(n):
        for j in range(i - k // 2, i + (k + 1) // 2):
            if 0 <= j < n:
                mat[i, j] = taps[j - i + k // 2]
    return mat


def check_divisible(name: str, size: tuple[int, int], scale: int) -> None:
    if scale < 1 or size[0] % scale or size[1] % scale:
        raise OperatorError(f"{name}: scale {scale} must divide the image size {size}")


class Identity(Operator):
    """Denoising: A = I."""

    name = "denoising"
    has_svd = True

    def A(self, x):
        self.check_image(x)
        return x

    def At(self, y):
        self.check_measurement(y)
        return y

    def pinv_eta(self, r, eta):
        self.check_eta(eta)
        self.check_measurement(r)
        return r / (1 + eta)

    def pinv(self, r):
        self.check_measurement(r)
        return r

    def singulars(self, dtype=torch.float32):
        return torch.ones(3 * self.img_size[0] * self.img_size[1], device=self.device, dtype=dtype)

    def Vt(self, x):
        return x.reshape(x.shape[0], -1)

    def V(self, v):
        return v.reshape(v.shape[0], 3, *self.img_size)

    Ut = Vt
    U = V


class Inpainting(Operator):
    """y = m ⊙ x with a mask m (H, W), 1 = kept; measurement (B, 3, H, W) with zeros in the holes."""

    name = "inpainting"
    has_svd = True

    def __init__(self, mask: torch.Tensor, img_size: int | tuple[int, int]):
        super().__init__(img_size)
        mask = torch.as_tensor(mask)
        if tuple(mask.shape) != self.img_size:
            raise OperatorError(f"inpainting: mask has shape {tuple(mask.shape)}, the image is {self.img_size}")
        self.mask = mask.bool()
        self.params = {"kept": int(self.mask.sum())}
        self._m = DeviceCache(lambda dev, dt: self.mask.to(dev, dt))

    def A(self, x):
        self.check_image(x)
        return x * self._m.get(x.device, x.dtype)

    def At(self, y):
        self.check_measurement(y)
        return y * self._m.get(y.device, y.dtype)

    def pinv_eta(self, r, eta):
        self.check_eta(eta)
        return self.At(r) / (1 + eta)

    def pinv(self, r):
        return self.At(r)

    def singulars(self, dtype=torch.float32):
        return torch.ones(3 * int(self.mask.sum()), device=self.device, dtype=dtype)

    def Vt(self, x):
        m = self.mask.to(x.device)
        return torch.cat([x[..., m].reshape(x.shape[0], -1), x[..., ~m].reshape(x.shape[0], -1)], dim=1)

    def V(self, v):
        m = self.mask.to(v.device)
        k = 3 * int(m.sum())
        out = v.new_zeros(v.shape[0], 3, *self.img_size)
        out[..., m] = v[:, :k].reshape(v.shape[0], 3, -1)
        out[..., ~m] = v[:, k:].reshape(v.shape[0], 3, -1)
        return out

    def Ut(self, y):
        return y[..., self.mask.to(y.device)].reshape(y.shape[0], -1)

    def U(self, c):
        out = c.new_zeros(c.shape[0], 3, *self.img_size)
        out[..., self.mask.to(c.device)] = c.reshape(c.shape[0], 3, -1)
        return out


class Colorization(Operator):
    """y = w·x per pixel with w = (0.3333, 0.3334, 0.3333); measurement (B, 1, H, W)."""

    name = "colorization"
    has_svd = True
    weights = (0.3333, 0.3334, 0.3333)

    def __init__(self, img_size):
        super().__init__(img_size)
        w = np.array(self.weights)
        q, _ = np.linalg.qr(np.column_stack([w, np.eye(3)[:, :2]]))
        q[:, 0] *= np.sign(q[:, 0] @ w)  # first basis vector = w/‖w‖
        self._basis = DeviceCache(lambda dev, dt: torch.as_tensor(q, dtype=dt, device=dev))
        self._w = DeviceCache(lambda dev, dt: torch.as_tensor(w, dtype=dt, device=dev).view(1, 3, 1, 1))
        self.norm2 = float(w @ w)

    def meas_shape(self, batch):
        return (batch, 1, *self.img_size)

    def A(self, x):
        self.check_image(x)
        return (x * self._w.get(x.device, x.dtype)).sum(1, keepdim=True)

    def At(self, y):
        self.check_measurement(y)
        return y * self._w.get(y.device, y.dtype)

    def pinv_eta(self, r, eta):
        self.check_eta(eta)
        return self.At(r) / (self.norm2 + eta)

    def pinv(self, r):
        return self.At(r) / self.norm2

    def singulars(self, dtype=torch.float32):
        return torch.full((self.img_size[0] * self.img_size[1],), self.norm2**0.5, device=self.device, dtype=dtype)

    def Vt(self, x):
        Q = self._basis.get(x.device, x.dtype)
        return torch.einsum("ck,bchw->bkhw", Q, x).reshape(x.shape[0], -1)

    def V(self, v):
        Q = self._basis.get(v.device, v.dtype)
        return torch.einsum("ck,bkhw->bchw", Q, v.reshape(v.shape[0], 3, *self.img_size))

    def Ut(self, y):
        return y.reshape(y.shape[0], -1)

    def U(self, c):
        return c.reshape(c.shape[0], 1, *self.img_size)
