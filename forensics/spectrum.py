"""The few singular directions of a large matrix, without its full SVD (Halko, Martinsson and Tropp,
2011: a randomised range finder with power iterations), and what they say about a weight change."""

from __future__ import annotations

import numpy as np


def top_singular(d: np.ndarray, k: int, *, seed: int = 0, power: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` left singular vectors (columns) and singular values of ``d``.

    >>> rng = np.random.default_rng(1)
    >>> u = rng.standard_normal(50); u /= np.linalg.norm(u)
    >>> m = 3.0 * np.outer(u, rng.standard_normal(80)) + 1e-3 * rng.standard_normal((50, 80))
    >>> vecs, vals = top_singular(m.astype(np.float32), 4)
    >>> bool(abs(vecs[:, 0] @ u) > 0.999), vals.shape
    (True, (4,))
    """
    m, n = d.shape
    k = max(1, min(k, m, n))
    p = min(n, m, k + 10)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(d @ rng.standard_normal((n, p)).astype(d.dtype))
    for _ in range(power):
        z, _ = np.linalg.qr(d.T @ q)
        q, _ = np.linalg.qr(d @ z)
    ub, s, _ = np.linalg.svd((q.T @ d).astype(np.float64), full_matrices=False)
    return (q @ ub[:, :k].astype(d.dtype)), s[:k]


def energy_shares(values: np.ndarray, total: float) -> list[float]:
    """The share of ``total`` (the squared Frobenius norm) held by the top 1, 2, ... singular values."""
    if total <= 0:
        return [0.0] * len(values)
    return [float(x) for x in np.minimum(1.0, np.cumsum(np.asarray(values, dtype=np.float64) ** 2) / total)]


def rank_for(shares: list[float], share: float = 0.9) -> int | None:
    """The fewest directions holding ``share`` of the energy, or None past the ones computed.

    >>> rank_for([0.5, 0.95, 1.0]), rank_for([0.1, 0.2])
    (2, None)
    """
    return next((i + 1 for i, s in enumerate(shares) if s >= share), None)


def writes_along(u: np.ndarray, matrix: np.ndarray) -> float:
    """How much ``matrix`` (rows: residual-stream coordinates) writes into the span of ``u``'s columns."""
    return float(np.linalg.norm(u.T @ matrix))


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """How far two subspaces (orthonormal columns) agree: 1 the same, 0 orthogonal (the root mean
    squared cosine of their principal angles; for single directions, ``|cos|``)."""
    r = min(a.shape[1], b.shape[1])
    return float(np.linalg.norm(a.T @ b) / np.sqrt(r)) if r else 0.0


def shared_subspace(bases: list[np.ndarray], rank: int) -> np.ndarray:
    """The ``rank`` directions the given subspaces have most in common (the top left singular
    vectors of their columns side by side)."""
    u, _, _ = np.linalg.svd(np.concatenate(bases, axis=1).astype(np.float64), full_matrices=False)
    return u[:, :rank]
