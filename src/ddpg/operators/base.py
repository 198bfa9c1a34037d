"""The operator interface every sampler uses — with generic A⁺ and Aᵀ(AAᵀ+ηI)⁻¹ by conjugate gradients for an
operator that defines only A and Aᵀ — and the decomposable operators whose A, Aᵀ, A⁺ and Aᵀ(AAᵀ+ηI)⁻¹ follow
from their SVD (after DeepInverse's ``DecomposablePhysics``)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F

from ddpg.errors import OperatorError

from .solvers import conjugate_gradients


class Operator:
    """A linear degradation H on images (B, 3, H, W) in the [-1, 1] scale.

    ``A(x)`` gives the image-shaped measurement (``meas_shape``), ``At(y)`` the adjoint, ``pinv_eta(r, η)`` =
    Hᵀ(HHᵀ + ηI)⁻¹ r and ``pinv(r)`` the pseudo-inverse (zero on zero singular values). A subclass defines A
    and Aᵀ; the two inverses then come from conjugate gradients (to the relative residual ``cg_tol`` in at most
    ``cg_max_iter`` iterations, in ``solve_dtype`` or the input's wider dtype), and the project's operators
    override them with their exact closed forms. Operators hold no batch state; precomputed spectra and
    matrices live per device and dtype.

    Per-image parameters (a motion kernel, a random mask) may differ between the images of a batch: operators
    with equal :meth:`batch_key` stack into one (:func:`stack_operators`) that holds ``samples`` of them and
    gives sample i exactly what operator i gives alone. An operator with ``samples`` None applies to any batch.
    """

    name: str = "operator"
    samples: int | None = None  # per-sample kernels/masks held (a stacked operator); None: one for every batch
    has_svd: bool = False
    solve_dtype: torch.dtype = torch.float32  # the least precision of the conjugate-gradient solves
    cg_tol: float = 1e-5  # relative residual ‖b − M u‖/‖b‖ at which a conjugate-gradient solve stops
    cg_max_iter: int = 1000

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
    def check_eta(eta: float | torch.Tensor) -> None:
        """OperatorError unless a Python-number η is > 0. A tensor η (0-d, or one value per sample) is not
        read: it comes from a method's table, validated when its params were built, and reading it would be
        a host sync that a CUDA graph cannot capture."""
        if not isinstance(eta, torch.Tensor) and not eta > 0:
            raise OperatorError(f"eta must be > 0, got {eta}")

    def A(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def At(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pinv_eta(self, r: torch.Tensor, eta: float | torch.Tensor) -> torch.Tensor:
        """Aᵀ(AAᵀ + ηI)⁻¹ r for measurements r, (B, 3, H, W): the generic form, Aᵀu with u from conjugate
        gradients on (AAᵀ + ηI)u = r (positive definite for η > 0); η a number or a 0-d or (B, 1, 1, 1) tensor."""
        self.check_eta(eta)
        self.check_measurement(r)
        dtype = torch.promote_types(r.dtype, self.solve_dtype)
        eta = eta.to(dtype) if isinstance(eta, torch.Tensor) else eta
        u = conjugate_gradients(lambda v: self.A(self.At(v)) + eta * v, r.to(dtype), self.cg_tol, self.cg_max_iter,
                                f"{self.name}: pinv_eta")
        return self.At(u).to(r.dtype)

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        """A⁺r for measurements r, (B, 3, H, W): the generic form, conjugate gradients on the normal equations
        AᵀA x = Aᵀr from x = 0, whose iterates stay in the row space of A, so the limit is the minimum-norm
        least-squares solution A⁺r for any r (no η bias)."""
        self.check_measurement(r)
        b = self.At(r.to(torch.promote_types(r.dtype, self.solve_dtype)))
        x = conjugate_gradients(lambda v: self.At(self.A(v)), b, self.cg_tol, self.cg_max_iter, f"{self.name}: pinv")
        return x.to(r.dtype)

    def spectral(self, device: torch.device, method: str = "this method") -> SpectralBasis:
        """The singular basis of A on ``device`` (float32), for samplers that work per singular value;
        OperatorError naming ``method`` when the operator has no cheap decomposition."""
        raise OperatorError(f"{method} needs an operator with an SVD (U, V, singular values) or a circular FFT "
                            f"blur; {self.name} ({type(self).__name__}) has no such decomposition — use "
                            f"impl='svd' for this task")

    def paste_known(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, 3, H, W) with what a noiseless measurement y fixes exactly put back in place (DiffPIR's result):
        x itself here; an operator that observes pixels directly (a mask) pastes y there."""
        return x

    def batch_key(self) -> Hashable:
        """Operators with equal keys stack into one batched operator (:func:`stack_operators`); by default only
        the operator itself has its key."""
        return self

    @classmethod
    def stack(cls, operators: list[Operator]) -> Operator:
        """One operator whose sample i is ``operators[i]`` (equal :meth:`batch_key`); the classes with
        per-image parameters define it."""
        raise OperatorError(f"{cls.__name__} operators do not stack")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, size={self.img_size}, {self.params})"


def stack_operators(operators: Sequence[Operator]) -> Operator:
    """The operator of a batch whose image i has ``operators[i]``: that operator when all are one object (it
    broadcasts), else their class's :meth:`Operator.stack`, sample i bit for bit operator i. OperatorError when
    their :meth:`Operator.batch_key` differ (they cannot share a batch)."""
    first = operators[0]
    if all(op is first for op in operators):
        return first
    if any(op.batch_key() != first.batch_key() for op in operators):
        raise OperatorError(f"{first.name}: operators of different kinds or sizes cannot share a batch")
    return type(first).stack(list(operators))


def per_sample(t: torch.Tensor, factor: torch.Tensor, samples: int | None) -> torch.Tensor:
    """t · factor for a batch t (N, …). ``samples`` None: ``factor`` broadcasts as it is. Else ``factor`` holds one
    entry per operator sample, (samples, 1, …), and row n of t takes entry n mod samples: a batch of the samples
    (N = samples) or of k candidates for each, candidate-major (N = k·samples, row j·samples + i)."""
    if samples is None:
        return t * factor
    if t.shape[0] % samples:
        raise OperatorError(f"a batch of {t.shape[0]} images for an operator of {samples} samples")
    return (t.reshape(-1, samples, *t.shape[1:]) * factor).reshape(t.shape)


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


class SpectralBasis:
    """A = U diag(s) Vᵀ seen from its coefficients: ``coef(x)`` = Vᵀx, ``image(c)`` = V c, ``s`` (broadcasts
    against coefficients; 0 = unmeasured) and ``meas_coef(y)`` = Uᵀy in the same layout (0 where s = 0)."""

    s: torch.Tensor

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def meas_coef(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def reciprocal(s: torch.Tensor) -> torch.Tensor:
    """1/s where s > 0, else 0 (the pseudo-inverse of a diagonal)."""
    return torch.where(s > 0, 1 / torch.where(s > 0, s, 1), 0)


class DecomposableOperator(Operator):
    """An operator given by its SVD A = U diag(s) Vᵀ (DDRM/DDNM convention). Subclasses supply
    ``singulars(dtype)`` (the M singular values, (M,)), ``Vt(x)`` (images (B, 3, H, W) → (B, N) flat
    coefficients, N = 3·H·W, the first M paired with s), ``V`` its inverse, ``Ut(y)`` (measurements → (B, M))
    and ``U`` its inverse. A, Aᵀ and :meth:`apply_spectral` (hence A⁺ and ``pinv_eta``) follow from them;
    subclasses override A, Aᵀ and :meth:`apply_spectral` only with faster equal forms."""

    has_svd = True

    def singulars(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        raise NotImplementedError

    def Vt(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def V(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def Ut(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def U(self, c: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _s(self, like: torch.Tensor) -> torch.Tensor:
        return self.singulars(like.dtype).to(like.device)

    def A(self, x: torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        s = self._s(x)
        return self.U(s * self.Vt(x)[:, : s.numel()])

    def At(self, y: torch.Tensor) -> torch.Tensor:
        self.check_measurement(y)
        return self.apply_spectral(y, lambda s: s)

    def apply_spectral(self, r: torch.Tensor, gain) -> torch.Tensor:
        """V diag(gain(s)) Uᵀ r for measurements r; ``gain`` maps the singular values to the diagonal."""
        c = self.Ut(r) * gain(self._s(r))
        return self.V(F.pad(c, (0, 3 * self.img_size[0] * self.img_size[1] - c.shape[1])))

    def pinv_eta(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        self.check_eta(eta)
        self.check_measurement(r)
        return self.apply_spectral(r, lambda s: s / (s**2 + eta))

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        self.check_measurement(r)
        return self.apply_spectral(r, reciprocal)

    def spectral(self, device: torch.device, method: str = "this method") -> SpectralBasis:
        return SVDBasis(self, device)


class SVDBasis(SpectralBasis):
    """The flat real basis of a :class:`DecomposableOperator`: coefficients (B, N), N = 3·H·W."""

    def __init__(self, operator: DecomposableOperator, device: torch.device):
        self.operator = operator
        s = operator.singulars().to(device, torch.float32)
        self.s = F.pad(s, (0, 3 * operator.img_size[0] * operator.img_size[1] - s.numel()))

    def coef(self, x: torch.Tensor) -> torch.Tensor:
        return self.operator.Vt(x)

    def image(self, c: torch.Tensor) -> torch.Tensor:
        return self.operator.V(c)

    def meas_coef(self, y: torch.Tensor) -> torch.Tensor:
        u = self.operator.Ut(y)
        return F.pad(u, (0, self.s.numel() - u.shape[1]))


class EqualSingulars(DecomposableOperator):
    """A decomposable operator whose non-zero singular values all equal σ (``sigma2`` = σ²), so
    V diag(g(s)) Uᵀ = g(σ)/σ · Aᵀ: A⁺ = Aᵀ/σ² and ``pinv_eta`` = Aᵀ/(σ² + η), with no basis change."""

    sigma2: float = 1.0

    def pinv_eta(self, r: torch.Tensor, eta: float) -> torch.Tensor:
        self.check_eta(eta)
        return self.At(r) / (self.sigma2 + eta)

    def pinv(self, r: torch.Tensor) -> torch.Tensor:
        return self.At(r) / self.sigma2
