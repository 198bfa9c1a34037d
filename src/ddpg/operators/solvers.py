"""Conjugate gradients, batched per sample: the generic ``pinv_eta`` and ``pinv`` of an operator that defines
only A and Aᵀ (:class:`~.base.Operator`)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ddpg.errors import OperatorError


def per_sample_dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """⟨u_b, v_b⟩ for each sample b of u, v (B, …): (B,)."""
    return (u * v).flatten(1).sum(1)


def _as_sample_scale(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) values shaped (B, 1, …) to scale the samples of ``like``."""
    return s.view(-1, *(1,) * (like.ndim - 1))


def _unconverged(rs: torch.Tensor, target: torch.Tensor, what: str) -> torch.Tensor:
    """The (B,) mask of samples whose squared residual ``rs`` is above ``target``; OperatorError when a
    residual is not finite (a NaN or ∞ in the right-hand side or in the operator's output)."""
    if not bool(torch.isfinite(rs).all()):
        raise OperatorError(f"{what}: conjugate gradients met a non-finite residual (the right-hand side or the "
                            f"operator's output is not finite)")
    return rs > target


def conjugate_gradients(apply: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, tol: float,
                        max_iter: int, what: str) -> torch.Tensor:
    """x with apply(x) = b for each sample of b (B, …), ``apply`` a symmetric positive semi-definite linear map
    acting on each sample alone. From x = 0 the iterates stay in the range of ``apply``: for a singular map and
    b in its range the limit is the minimum-norm solution. A sample stops (its x, r and p frozen) once
    ‖b − apply(x)‖ ≤ tol·‖b‖ (the recursive residual), so a batch equals its single solves. OperatorError
    naming ``what`` when a sample has not stopped after ``max_iter`` iterations, or a residual is not finite.
    Works in b's dtype; one host read of the residuals per iteration (not capturable in a CUDA graph)."""
    x = torch.zeros_like(b)
    r = p = b
    rs = b_norm2 = per_sample_dot(b, b)
    target = tol**2 * b_norm2
    for _ in range(max_iter):
        active = _unconverged(rs, target, what)
        if not bool(active.any()):
            return x
        Ap = apply(p)
        pAp = per_sample_dot(p, Ap)
        alpha = torch.where(active & (pAp > 0), rs / pAp, 0)
        x = x + _as_sample_scale(alpha, x) * p
        r = r - _as_sample_scale(alpha, r) * Ap
        rs_next = torch.where(active, per_sample_dot(r, r), rs)
        beta = torch.where(active, rs_next / rs, 0)
        p = torch.where(_as_sample_scale(active, p), r + _as_sample_scale(beta, p) * p, p)
        rs = rs_next
    if bool(_unconverged(rs, target, what).any()):
        worst = float((rs / b_norm2.clamp_min(torch.finfo(rs.dtype).tiny)).max().sqrt())
        raise OperatorError(f"{what}: conjugate gradients did not reach the relative residual {tol:g} in "
                            f"{max_iter} iterations (worst sample: {worst:.3g}); raise the operator's cg_max_iter "
                            f"or cg_tol, or give it a closed form")
    return x
