"""Operators with an explicit SVD (DDRM/DDNM convention, :class:`~.base.DecomposableOperator`), applied
without dense (HW)×(HW) matrices.

Flat spectral layout (``Vt``/``V``, ``Ut``/``U``): coefficients of the M non-trivial singular directions
come first, channel-major, paired with ``singulars()`` (length M); the remaining (null-space) coefficients
follow. Zero singular values inside the first M (truncation) are allowed.

The layout is a fixed permutation of the flat (3·H·W) coefficients, so ``Vt``/``V``/``Ut``/``U`` gather with
int64 index tensors built once per device (``index_select``): no boolean-mask indexing, mask copies or
``int(mask.sum())``, each of which synchronizes the host with a CUDA device on every DDRM/DDNM step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ddpg.errors import OperatorError

from .base import DecomposableOperator, DeviceCache, EqualSingulars, Operator, SpectralBasis, per_sample


def svd_1d(mat: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(U (m×m), s (m,), V (N×N)) of an m×N matrix, m ≤ N; singular values below ``threshold`` set to 0.
    The first m columns of V pair with s."""
    U, s, Vt = np.linalg.svd(np.asarray(mat, dtype=np.float64), full_matrices=True)
    return U, np.where(s < threshold, 0.0, s), Vt.T


class SpectralOrder:
    """The flat layout of ``Vt``/``V`` for coefficients (B, 3, H, W) split by a (H, W) boolean ``head`` mask:
    the head positions of channels 0, 1, 2 (row-major within each), then the other positions of channels 0, 1,
    2. ``gather``/``scatter`` use int64 permutations built once per device (no host synchronization)."""

    def __init__(self, head: torch.Tensor):
        self.hw = tuple(head.shape)
        head = head.flatten().bool().cpu()
        n = head.numel()
        kept, rest = head.nonzero().flatten(), (~head).nonzero().flatten()
        channels = torch.arange(3)[:, None] * n
        self.n_head = 3 * kept.numel()
        self.size = 3 * n
        order = torch.cat([(channels + kept).flatten(), (channels + rest).flatten()])
        self._perm = DeviceCache(lambda dev, dt: order.to(dev))
        self._inverse = DeviceCache(lambda dev, dt: torch.argsort(order).to(dev))

    def permutation(self, device: torch.device) -> torch.Tensor:
        """The int64 gather permutation (3·H·W,) on ``device``, built once per device."""
        return self._perm.get(device, torch.int64)

    def gather(self, c: torch.Tensor, *, head_only: bool = False) -> torch.Tensor:
        """(B, 3·H·W) — or (B, n_head) with ``head_only`` — from coefficients (B, 3, H, W)."""
        perm = self.permutation(c.device)
        return c.reshape(c.shape[0], -1).index_select(1, perm[: self.n_head] if head_only else perm)

    def scatter(self, v: torch.Tensor) -> torch.Tensor:
        """Coefficients (B, 3, H, W) from the flat layout (B, 3·H·W)."""
        if v.shape[-1] != self.size:
            raise OperatorError(f"expected {self.size} spectral coefficients per image, got {v.shape[-1]}")
        return v.index_select(1, self._inverse.get(v.device, torch.int64)).reshape(v.shape[0], 3, *self.hw)


class SeparableSVD(DecomposableOperator):
    """Y_c = A_h X_c A_wᵀ per channel with 1-D matrices A_h (m_h×H), A_w (m_w×W); 2-D singular values
    s_i·t_j. 1-D singular values below ``threshold`` are set to 0 and the truncated A is the operator.

    For decimating operators ``scale`` is the factor and ``sample_offset`` the high-resolution (row, col)
    coordinate of the centre of low-resolution sample (0, 0) (sample r sits at scale·r + offset)."""

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
        head = torch.zeros(self.img_size, dtype=torch.bool)
        head[: self.m[0], : self.m[1]] = True
        self.order = SpectralOrder(head)  # the flat layout of Vt/V

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

    def matrices(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cached 1-D factors (Ah, Aw, Uh, Uw, Vh, Vw) and the (m_h, m_w) singular grid s2d, on x's device and
        dtype."""
        return self._mats.get(x.device, x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        M = self.matrices(x)
        return M["Ah"] @ x @ M["Aw"].T

    def At(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        M = self.matrices(y)
        return M["Ah"].T @ y @ M["Aw"]

    def apply_spectral(self, r: torch.Tensor, gain) -> torch.Tensor:
        """V diag(gain(s)) Uᵀ r with the 1-D factors; s as the (m_h, m_w) grid s_i·t_j."""
        M = self.matrices(r)
        coef = M["Uh"].T @ r @ M["Uw"] * gain(M["s2d"])
        return M["Vh"][:, : self.m[0]] @ coef @ M["Vw"][:, : self.m[1]].T

    def singulars(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return self._mats.get(self.device, dtype)["s2d"].flatten().repeat(3)

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        M = self.matrices(x)
        return self.order.gather(M["Vh"].T @ x @ M["Vw"])  # spectral coefficients (B, 3, H, W), reordered

    def V(self, v: torch.Tensor) -> torch.Tensor:
        M = self.matrices(v)
        return M["Vh"] @ self.order.scatter(v) @ M["Vw"].T

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        M = self.matrices(y)
        return (M["Uh"].T @ y @ M["Uw"]).reshape(y.shape[0], -1)

    def U(self, c: torch.Tensor) -> torch.Tensor:
        M = self.matrices(c)
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


class Identity(EqualSingulars):
    """Denoising: A = I (U = V = I, s = 1)."""

    name = "denoising"

    def A(self, x):
        self.check_image(x)
        return x

    def At(self, y):
        self.check_measurement(y)
        return y

    def singulars(self, dtype=torch.float32):
        return torch.ones(3 * self.img_size[0] * self.img_size[1], device=self.device, dtype=dtype)

    def Vt(self, x):
        return x.reshape(x.shape[0], -1)

    def V(self, v):
        return v.reshape(v.shape[0], 3, *self.img_size)

    Ut = Vt
    U = V


class Inpainting(EqualSingulars):
    """y = m ⊙ x with a mask m (H, W), 1 = kept; measurement (B, 3, H, W) with zeros in the holes. V = U: the
    kept pixels first (s = 1), then the holes. Masks of one size stack (:class:`StackedInpainting`)."""

    name = "inpainting"

    def __init__(self, mask: torch.Tensor, img_size: int | tuple[int, int]):
        super().__init__(img_size)
        mask = torch.as_tensor(mask)
        if tuple(mask.shape) != self.img_size:
            raise OperatorError(f"inpainting: mask has shape {tuple(mask.shape)}, the image is {self.img_size}")
        self.mask = mask.bool()
        self.params = {"kept": int(self.mask.sum())}
        self._m = DeviceCache(lambda dev, dt: self.mask.to(dev, dt))
        self._order: SpectralOrder | None = SpectralOrder(self.mask)

    @property
    def order(self) -> SpectralOrder:
        """The flat layout of Vt/V (one mask: the masks of a stack keep different numbers of pixels)."""
        if self._order is None:
            raise OperatorError("inpainting: a stack of masks has no flat SVD layout; its spectral() basis is the "
                                "pixel basis")
        return self._order

    def batch_key(self) -> tuple:
        """Masks of one image size and device stack."""
        return (Inpainting, self.img_size, str(self.device))

    @classmethod
    def stack(cls, operators: list[Operator]) -> Operator:
        return StackedInpainting(operators)

    def A(self, x):
        self.check_image(x)
        return per_sample(x, self._m.get(x.device, x.dtype), self.samples)

    def At(self, y):
        self.check_measurement(y)
        return per_sample(y, self._m.get(y.device, y.dtype), self.samples)

    def paste_known(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The kept pixels from y, the holes from x."""
        kept = self.At(torch.ones_like(y))
        return kept * y + (1 - kept) * x

    def spectral(self, device: torch.device, method: str = "this method") -> SpectralBasis:
        return MaskBasis(self._m.get(device, torch.float32))

    def singulars(self, dtype=torch.float32):
        return torch.ones(self.order.n_head, device=self.device, dtype=dtype)

    def Vt(self, x):
        return self.order.gather(x)

    def V(self, v):
        return self.order.scatter(v)

    def Ut(self, y):
        return self.order.gather(y, head_only=True)

    def U(self, c):
        return self.order.scatter(F.pad(c, (0, 3 * self.img_size[0] * self.img_size[1] - c.shape[1])))


class StackedInpainting(Inpainting):
    """The masks of a batch: sample i (of ``samples``) is masked by operator i's mask (``mask``: (samples, 1, H, W)),
    so A, Aᵀ, P_η, A⁺ and the pixel basis give sample i what operator i gives alone. No flat SVD layout."""

    def __init__(self, operators: list[Inpainting]):
        Operator.__init__(self, operators[0].img_size)
        self.device, self.samples = operators[0].device, len(operators)
        self.mask = torch.stack([op.mask for op in operators])[:, None]
        self.params = {"samples": len(operators)}
        self._m = DeviceCache(lambda dev, dt: self.mask.to(dev, dt))
        self._order = None

    def batch_key(self) -> Operator:
        return self


class MaskBasis(SpectralBasis):
    """A mask is diagonal in the pixel basis: V = U = I and s = m (1 kept, 0 missing), so the coefficients are the
    pixels (B, 3, H, W), ``s`` the mask (H, W) or one per sample (B, 1, H, W), and Uᵀy is y with zeros in the
    holes. The same per-pixel rules as the flat layout of :class:`Inpainting`, without its permutation."""

    def __init__(self, mask: torch.Tensor):
        self.s = mask

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def image(self, c: torch.Tensor) -> torch.Tensor:
        return c

    def meas_coef(self, y: torch.Tensor) -> torch.Tensor:
        return torch.where(self.s > 0, y, 0)


class Colorization(EqualSingulars):
    """y = w·x per pixel with w = (0.3333, 0.3334, 0.3333); measurement (B, 1, H, W). V: an orthonormal
    colour basis starting with w/‖w‖ (s = ‖w‖), U = I."""

    name = "colorization"
    weights = (0.3333, 0.3334, 0.3333)

    def __init__(self, img_size):
        super().__init__(img_size)
        w = np.array(self.weights)
        q, _ = np.linalg.qr(np.column_stack([w, np.eye(3)[:, :2]]))
        q[:, 0] *= np.sign(q[:, 0] @ w)  # first basis vector = w/‖w‖
        self._basis = DeviceCache(lambda dev, dt: torch.as_tensor(q, dtype=dt, device=dev))
        self._w = DeviceCache(lambda dev, dt: torch.as_tensor(w, dtype=dt, device=dev).view(1, 3, 1, 1))
        self.sigma2 = float(w @ w)

    def meas_shape(self, batch):
        return (batch, 1, *self.img_size)

    def A(self, x):
        self.check_image(x)
        return (x * self._w.get(x.device, x.dtype)).sum(1, keepdim=True)

    def At(self, y):
        self.check_measurement(y)
        return y * self._w.get(y.device, y.dtype)

    def singulars(self, dtype=torch.float32):
        return torch.full((self.img_size[0] * self.img_size[1],), self.sigma2**0.5, device=self.device, dtype=dtype)

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
