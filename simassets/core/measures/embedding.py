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

from simassets.core.measures.registry import MeasureSpec, register

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


# ------------------------------------------------------------------ registered measures
register(MeasureSpec(
    name="max_cosine", range=(-1.0, 1.0), family="embedding", levels=("example", "dataset"), direction=1,
    description="Cosine similarity of an example's embedding to its nearest corpus document; the dataset value is the mean over examples.",
    formula="max_d cos(e_x, e_d)", params={"embedding_model": "all-MiniLM-L6-v2"},
))
register(MeasureSpec(
    name="topk_cosine", range=(-1.0, 1.0), family="embedding", levels=("example", "dataset"), direction=1,
    description="Mean cosine similarity of an example's embedding to its k nearest corpus documents; the dataset value is the mean over examples.",
    formula="mean_{d in top-k(x)} cos(e_x, e_d)", params={"embedding_model": "all-MiniLM-L6-v2", "k": "profile.embedding_top_k"},
))
register(MeasureSpec(
    name="centroid_cosine", range=(-1.0, 1.0), family="embedding", levels=("dataset",), direction=1,
    description="Cosine similarity between the mean embedding of the benchmark examples and the mean embedding of the corpus sample.",
    formula="cos(mean_x e_x, mean_d e_d)", params={"embedding_model": "all-MiniLM-L6-v2"},
))


# ------------------------------------------------------------------ the family's asset
def _matrix(df):
    return np.vstack(df["embedding"].to_numpy()).astype(np.float32)


def _inputs(scope, keys) -> dict:
    from simassets.core.schema import BENCHMARK_EMBEDDINGS, CORPUS_EMBEDDINGS

    return {"k": scope.spec.embedding_top_k,
            "corpus": scope.upstream(CORPUS_EMBEDDINGS, {"corpus": keys["corpus"]}),
            "benchmark": scope.upstream(BENCHMARK_EMBEDDINGS, {"benchmark": keys["benchmark"]})}


def _compute(call):
    """Per example the max and mean top-k cosine to the corpus documents (with the nearest one as evidence);
    per dataset their means, the centroid cosine and MAUVE."""
    import pandas as pd

    from simassets.core.computation import Output, table_md
    from simassets.core.hashing import canonical_json
    from simassets.core.measures.mauve import mauve
    from simassets.core.schema import (BENCHMARK_EMBEDDINGS, CORPUS_EMBEDDINGS, DATASET_SIMILARITY,
                                       EXAMPLE_SIMILARITY)

    cemb = call.read(CORPUS_EMBEDDINGS, corpus=call.keys["corpus"])
    bemb = call.read(BENCHMARK_EMBEDDINGS, benchmark=call.keys["benchmark"])
    nb = nearest_neighbours(_matrix(bemb), _matrix(cemb), call.inputs["k"])
    model_key = str(bemb["embedding_model"].iloc[0])
    params = canonical_json({"embedding_model": model_key, "k": int(nb.k), "corpus_docs": len(cemb)})
    doc_ids, n = cemb["doc_id"].to_numpy(), len(bemb)
    examples = pd.DataFrame({
        "model": "", "example_id": np.tile(bemb["example_id"].to_numpy(), 2),
        "measure": ["max_cosine"] * n + ["topk_cosine"] * n,
        "value": np.concatenate([nb.max_cosine, nb.topk_cosine]).astype(float),
        "evidence": list(doc_ids[nb.nearest_index]) + [None] * n, "params": params,
    })
    mv = mauve(_matrix(bemb), _matrix(cemb))
    floor_warning = (f"MAUVE at its floor ({mv.floor:.4f}): benchmark and corpus fall in fully separated clusters"
                     if mv.at_floor else None)
    dataset = pd.DataFrame({
        "model": "", "measure": ["max_cosine", "topk_cosine", "centroid_cosine", "mauve"],
        "value": [float(nb.max_cosine.mean()), float(nb.topk_cosine.mean()),
                  float(centroid_cosine(_matrix(bemb), _matrix(cemb))), float(mv.score)],
        "ci_low": None, "ci_high": None, "n": n, "warning": [None, None, None, floor_warning],
        "params": [params] * 3 + [canonical_json({**mv.params, "num_clusters": int(mv.num_clusters),
                                                   "embedding_model": model_key})],
    })
    return Output({EXAMPLE_SIMILARITY: examples, DATASET_SIMILARITY: dataset},
                  metadata={"examples": n, "corpus_docs": len(cemb), "k": int(nb.k), "mauve": float(mv.score),
                            "mauve_clusters": int(mv.num_clusters), "mauve_at_floor": bool(mv.at_floor),
                            "dataset_measures": table_md(dataset[["measure", "value"]])})


def _family():
    from simassets.core.computation import Computation, Upstream
    from simassets.core.measures.registry import register_family
    from simassets.core.schema import DATASET_SIMILARITY, EXAMPLE_SIMILARITY

    return register_family(Computation(
        name="embedding_similarity", group="similarity", partitioning="corpus_x_benchmark",
        description="Embedding similarity of a benchmark to a corpus sample: per example the max and mean top-k "
                    "cosine to the corpus documents; per dataset their means, the centroid cosine and MAUVE.",
        writes=(EXAMPLE_SIMILARITY, DATASET_SIMILARITY), inputs=_inputs, compute=_compute,
        upstream=(Upstream("corpus_embeddings"), Upstream("benchmark_embeddings")), kinds=("numpy", "parquet"),
        code_version="2", storage_keys=lambda keys: {**keys, "asset": "embedding_similarity"}))


FAMILY = _family()
