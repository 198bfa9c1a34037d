"""Metrics of a set of images, on feature arrays (N, D) float (the Inception pool features of
:mod:`ddpg.metrics.features`); everything in float64 numpy.

- FID (Heusel et al. 2017): ‖μ₁ − μ₂‖² + Tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), Σ the unbiased (N − 1) covariances;
  Tr (Σ₁Σ₂)^½ = Σ √λᵢ(Σ₁^½ Σ₂ Σ₁^½), the eigenvalues of a symmetric PSD matrix (negative round-off clipped to 0).
- KID (Bińkowski et al. 2018): the unbiased MMD² with the cubic polynomial kernel k(x, y) = (xᵀy / D + 1)³;
  on the whole sets when both have at most ``subset_size`` rows, else the mean (and std) over ``subsets``
  seeded random subsets of ``subset_size`` rows each (the usual 100 × 1000).
- GMM-GIQA (Gu et al. 2020, cientgu/GIQA): the log-likelihood of each feature under a full-covariance
  Gaussian mixture (5 components as the official code) fitted on reference features, optionally after a PCA
  fitted on the same references. Fitting uses scikit-learn (the ``eval`` extra); the fitted model is
  plain arrays (:class:`GaussianMixtureModel`) scored here.
- KNN-GIQA: Σₖ 1/dₖ over the K nearest reference features, dₖ the L1 distance (the official code's
  ``pairwise_distance(p=1)`` without its 1e-6 offset; K = 1 by default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddpg.errors import ConfigError
from ddpg.versions import install_hint

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000
GIQA_COMPONENTS = 5


def _features(x: np.ndarray, what: str, min_rows: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise ConfigError(f"{what}: need a (N >= {min_rows}, D) feature array, got shape {x.shape}")
    return x


def _sqrt_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂)."""
    root = _sqrt_psd(sigma1)
    inner = np.linalg.eigvalsh(root @ sigma2 @ root)
    trace_sqrt = float(np.sqrt(np.clip(inner, 0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid(x: np.ndarray, y: np.ndarray) -> float:
    """FID between two feature sets (N₁, D) and (N₂, D). With fewer images than dimensions it works on the
    centred sets X̃, Ỹ instead of their covariances (the same value, exactly): Tr Σᵢ = ‖X̃‖²_F / (Nᵢ − 1) and
    Tr (Σ₁Σ₂)^½ = ‖X̃Ỹᵀ‖_* / √((N₁ − 1)(N₂ − 1)), the nuclear norm (sum of singular values)."""
    x, y = _features(x, "FID"), _features(y, "FID")
    if len(x) + len(y) >= 2 * x.shape[1]:
        return fid_from_stats(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    xc, yc = x - x.mean(0), y - y.mean(0)
    n1, n2 = len(x) - 1, len(y) - 1
    trace_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + (xc**2).sum() / n1 + (yc**2).sum() / n2 - 2 * trace_sqrt)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    n, m = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                 - 2 * kxy.mean())


def kid(x: np.ndarray, y: np.ndarray, *, subset_size: int = KID_SUBSET_SIZE, subsets: int = KID_SUBSETS,
        seed: int = 0) -> tuple[float, float]:
    """(KID, its std over subsets; 0 when computed on the whole sets) between (N₁, D) and (N₂, D)."""
    x, y = _features(x, "KID"), _features(y, "KID")
    if len(x) <= subset_size and len(y) <= subset_size:
        return _mmd2_unbiased(x, y), 0.0
    rng = np.random.default_rng(seed)
    size = min(subset_size, len(x), len(y))
    values = [_mmd2_unbiased(x[rng.choice(len(x), size, replace=False)], y[rng.choice(len(y), size, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


@dataclass(frozen=True)
class GaussianMixtureModel:
    """A fitted GMM-GIQA model as arrays: optional PCA (mean (D,), components (P, D)), then mixture weights (K,),
    means (K, P) and full covariances (K, P, P)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    pca_mean: np.ndarray | None = None
    pca_components: np.ndarray | None = None

    def project(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x if self.pca_components is None else (x - self.pca_mean) @ self.pca_components.T

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        """(N,) log-likelihoods log Σₖ wₖ N(x; μₖ, Σₖ) of features (N, D), after the PCA."""
        z = self.project(x)
        dim = z.shape[1]
        logs = []
        for w, mu, cov in zip(self.weights, self.means, self.covariances, strict=True):
            chol = np.linalg.cholesky(cov)
            sol = np.linalg.solve(chol, (z - mu).T)  # L⁻¹(z − μ): (P, N)
            maha = (sol**2).sum(0)
            logdet = 2 * np.log(np.diag(chol)).sum()
            logs.append(np.log(w) - 0.5 * (dim * np.log(2 * np.pi) + logdet + maha))
        stacked = np.stack(logs)  # (K, N)
        top = stacked.max(0)
        return top + np.log(np.exp(stacked - top).sum(0))

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"weights": self.weights, "means": self.means, "covariances": self.covariances}
        if self.pca_components is not None:
            arrays.update(pca_mean=self.pca_mean, pca_components=self.pca_components)
        return arrays


def giqa_min_references(components: int, pca: int | None, dim: int) -> int:
    """The fewest reference features a full-covariance fit of ``components`` in ``pca`` (or ``dim``) dimensions
    can take: each component's covariance needs more points than dimensions."""
    return components * ((pca or dim) + 1)


def fit_giqa_gmm(reference: np.ndarray, *, components: int = GIQA_COMPONENTS, pca: int | None = None,
                 seed: int = 0) -> GaussianMixtureModel:
    """Fit GMM-GIQA's mixture (scikit-learn, full covariances, k-means init with ``seed``) on reference
    features (N, D), after a PCA to ``pca`` dimensions when given. ConfigError when there are too few
    references (:func:`giqa_min_references`) or scikit-learn is missing."""
    ref = _features(reference, "GMM-GIQA references")
    need = giqa_min_references(components, pca, ref.shape[1])
    if len(ref) < need:
        raise ConfigError(f"GMM-GIQA: {len(ref)} reference images cannot fit {components} full-covariance "
                          f"components in {pca or ref.shape[1]} dimensions (needs >= {need}); use fewer "
                          "components or a smaller PCA")
    try:
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture
    except ImportError as exc:
        raise ConfigError(f"GMM-GIQA needs scikit-learn: {install_hint('eval')}") from exc
    pca_mean = pca_components = None
    z = ref
    if pca is not None:
        projection = PCA(n_components=pca, svd_solver="full").fit(ref)
        pca_mean, pca_components = projection.mean_, projection.components_
        z = (ref - pca_mean) @ pca_components.T
    gmm = GaussianMixture(n_components=components, covariance_type="full", random_state=seed).fit(z)
    return GaussianMixtureModel(gmm.weights_, gmm.means_, gmm.covariances_, pca_mean, pca_components)


def knn_giqa(x: np.ndarray, reference: np.ndarray, k: int = 1) -> np.ndarray:
    """(N,) KNN-GIQA scores Σₖ 1/dₖ of features (N, D) against references (M, D), L1 distances."""
    x, ref = _features(x, "KNN-GIQA", 1), _features(reference, "KNN-GIQA references", 1)
    if not 1 <= k <= len(ref):
        raise ConfigError(f"KNN-GIQA: K = {k} needs 1 <= K <= {len(ref)} (the reference images)")
    nearest = np.stack([np.sort(np.abs(ref - row).sum(1))[:k] for row in x])  # (N, K), one row at a time
    with np.errstate(divide="ignore"):
        return (1.0 / nearest).sum(1)
