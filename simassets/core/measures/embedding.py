"""Embedding-family similarity (Yauney et al. 2023): nearest-neighbour and centroid cosines.

Inputs are L2-normalised embeddings (rows of unit length), so a dot product is a cosine. Per example:
the cosine to the nearest corpus document (``max_cosine``), the mean cosine to the ``k`` nearest
(``topk_cosine``) and the nearest document's row index. Per dataset: their means and the cosine of
the two mean vectors (``centroid_cosine``). The similarity matrix is built in row blocks of bounded
size, so large benchmarks and corpora never need the full (n, m) matrix in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BLOCK_ELEMENTS = 1 << 24  # similarity entries per block: 16M float32 = 64 MiB


@dataclass(frozen=True)
class Neighbours:
    """Per-example nearest-neighbour cosines of a benchmark against a corpus sample."""

    max_cosine: np.ndarray  # (n,) cosine to the nearest corpus document
    topk_cosine: np.ndarray  # (n,) mean cosine to the k nearest corpus documents
    nearest_index: np.ndarray  # (n,) row of the nearest corpus document (first one on ties)
    k: int  # effective k = min(requested k, corpus size)
    k_requested: int

    @property
    def mean_max_cosine(self) -> float:
        return float(self.max_cosine.mean())

    @property
    def mean_topk_cosine(self) -> float:
        return float(self.topk_cosine.mean())


def _check(name: str, x: np.ndarray, dim: int | None = None, atol: float = 1e-3) -> np.ndarray:
    """Validate a non-empty, finite, 2-D array of unit rows; return it as float32."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} embeddings must be 2-D (n, dim), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} embeddings are empty (shape {x.shape})")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} embeddings have dim {x.shape[1]}, expected {dim} (same model for both sides?)")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} embeddings contain NaN or inf")
    norms = np.linalg.norm(x, axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > atol)
    if bad.size:
        raise ValueError(f"{name} embeddings must be L2-normalised; row {bad[0]} has norm {norms[bad[0]]:.4f}")
    return x.astype(np.float32, copy=False)


def nearest_neighbours(bench: np.ndarray, corpus: np.ndarray, k: int, block_elements: int = BLOCK_ELEMENTS) -> Neighbours:
    """Max and mean top-``k`` cosine of each benchmark row to the corpus rows.

    ``k`` larger than the corpus is clipped to the corpus size (recorded as ``Neighbours.k``).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    b = _check("benchmark", bench)
    c = _check("corpus", corpus, dim=b.shape[1])
    n, m = b.shape[0], c.shape[0]
    k_eff = min(k, m)
    rows = max(1, block_elements // m)
    max_cos = np.empty(n, np.float32)
    topk = np.empty(n, np.float32)
    nearest = np.empty(n, np.int64)
    for start in range(0, n, rows):
        sims = np.clip(b[start:start + rows] @ c.T, -1.0, 1.0)
        stop = start + sims.shape[0]
        nearest[start:stop] = sims.argmax(axis=1)
        max_cos[start:stop] = sims[np.arange(sims.shape[0]), nearest[start:stop]]
        part = sims if k_eff == m else np.partition(sims, m - k_eff, axis=1)[:, m - k_eff:]
        topk[start:stop] = part.mean(axis=1, dtype=np.float64)
    return Neighbours(max_cos, topk, nearest, k_eff, k)


def centroid_cosine(bench: np.ndarray, corpus: np.ndarray) -> float:
    """Cosine similarity of the benchmark's mean embedding and the corpus's mean embedding."""
    b = _check("benchmark", bench)
    c = _check("corpus", corpus, dim=b.shape[1])
    mb, mc = b.mean(axis=0, dtype=np.float64), c.mean(axis=0, dtype=np.float64)
    nb, nc = np.linalg.norm(mb), np.linalg.norm(mc)
    if nb < 1e-12 or nc < 1e-12:
        raise ValueError("centroid_cosine: a mean embedding is the zero vector (cosine undefined)")
    return float(np.clip(mb @ mc / (nb * nc), -1.0, 1.0))


def dataset_measures(bench: np.ndarray, corpus: np.ndarray, k: int) -> dict[str, float | int]:
    """Dataset-level values of the embedding family: mean max cosine, mean top-k cosine, centroid cosine."""
    nb = nearest_neighbours(bench, corpus, k)
    return {"max_cosine": nb.mean_max_cosine, "topk_cosine": nb.mean_topk_cosine,
            "centroid_cosine": centroid_cosine(bench, corpus), "k": nb.k, "k_requested": nb.k_requested}
