"""Token-distribution measures: KL and JS divergence between a benchmark's and a corpus's feature counts.

The features are either a model tokenizer's unigram ids (this module) or hashed word n-grams
(:mod:`.hashed_ngrams`); both arrive as :class:`DocCounts`, a sparse per-document count table, so the
divergences and the bootstrap are shared.

Conventions (all logarithms are **natural**, values in nats). KL(P || Q) = sum_i P_i ln(P_i / Q_i), P the
benchmark's distribution, Q the corpus's; the corpus sample has not seen every type the benchmark uses, so Q
must be smoothed, and *how* decides whether the value depends on the sample size. ``estimator``:

* ``interpolated`` (the default): P = p / sum(p), the benchmark's own frequencies; Q = (1 - lambda) q / sum(q)
  + lambda / V, the corpus frequencies interpolated with the uniform distribution over the V types
  (Jelinek-Mercer smoothing, lambda = 0.01). An unseen type gets lambda / V whatever the sample size, so the
  value converges as the sample grows: it estimates KL(P || (1 - lambda) Q_true + lambda U).
* ``yauney``: Yauney et al.'s code (``process-*.py``): both sides normalised, 1e-8 added to every entry,
  normalised again; KL = sum(rel_entr(P, Q)).
* ``additive``: this project's earlier estimator: ``eps`` (1e-3) added to every *count* of both vectors before
  normalising. An unseen type gets eps / N, which shrinks as the sample grows, so the value drifts with N
  (not monotonically: seen types improve while unseen ones are penalised more); kept to compare.
* ``js_divergence(p, q)`` = (KL(P || M) + KL(Q || M)) / 2 with M = (P + Q) / 2, in nats: symmetric,
  0 for identical distributions and at most ln 2. No smoothing is needed (M > 0 wherever P or Q is);
  an optional ``eps`` is applied as for KL.
* The bootstrap resamples the corpus *documents* with replacement (seeded numpy ``default_rng``), recomputes
  KL(benchmark || resampled corpus) ``n_boot`` times and reports the percentile interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import math

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from simassets.core.measures.registry import MeasureSpec, register

DEFAULT_EPS = 1e-3  # the additive estimator's pseudo-count (and the importance weights')
DEFAULT_LAMBDA = 0.01  # the interpolated estimator's weight on the uniform distribution
YAUNEY_EPS = 1e-8
ESTIMATORS = ("interpolated", "yauney", "additive")
DEFAULT_ESTIMATOR = "interpolated"
DEFAULT_N_BOOT = 1000
DEFAULT_CI = 0.95


@dataclass(frozen=True)
class DocCounts:
    """Sparse per-document feature counts: ``count[k]`` occurrences of ``feature[k]`` in document ``doc[k]``."""

    doc: np.ndarray  # int64, one entry per distinct (doc, feature) pair
    feature: np.ndarray  # int64 in [0, dim)
    count: np.ndarray  # int64 > 0
    n_docs: int
    dim: int

    @classmethod
    def from_occurrences(cls, doc: np.ndarray, feature: np.ndarray, n_docs: int, dim: int) -> DocCounts:
        """Aggregate one (doc, feature) entry per occurrence into distinct pairs with counts."""
        key = np.asarray(doc, dtype=np.int64) * dim + np.asarray(feature, dtype=np.int64)
        uniq, cnt = np.unique(key, return_counts=True)
        return cls(uniq // dim, uniq % dim, cnt.astype(np.int64), int(n_docs), int(dim))

    def totals(self, doc_weights: np.ndarray | None = None) -> np.ndarray:
        """Pooled counts over documents, each document counted ``doc_weights[d]`` times (default once)."""
        w = self.count if doc_weights is None else self.count * doc_weights[self.doc]
        return np.bincount(self.feature, weights=w, minlength=self.dim)

    def per_doc(self, values: np.ndarray) -> np.ndarray:
        """sum over each document's features of count * values[feature] (e.g. a log-ratio per bucket)."""
        return np.bincount(self.doc, weights=self.count * values[self.feature], minlength=self.n_docs)

    def n_features(self) -> np.ndarray:
        """Number of feature occurrences in each document."""
        return np.bincount(self.doc, weights=self.count, minlength=self.n_docs).astype(np.int64)


def token_doc_counts(token_ids: Sequence[np.ndarray], vocab_size: int) -> DocCounts:
    """Unigram counts per document from token-id arrays (one per document), checked against ``vocab_size``."""
    arrays = [np.asarray(ids).reshape(-1) for ids in token_ids]
    for i, ids in enumerate(arrays):
        if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"token_ids[{i}]: ids must be integers in [0, {vocab_size}), "
                             f"got dtype {ids.dtype} range [{ids.min()}, {ids.max()}]")
    lens = np.fromiter((a.size for a in arrays), dtype=np.int64, count=len(arrays))
    flat = np.concatenate(arrays).astype(np.int64) if arrays else np.zeros(0, np.int64)
    return DocCounts.from_occurrences(np.repeat(np.arange(len(arrays)), lens), flat, len(arrays), vocab_size)


def encode_texts(texts: Sequence[str], tokenizer: Any) -> list[np.ndarray]:
    """Token ids of each text with a Hugging Face tokenizer (no special tokens added)."""
    return [np.asarray(ids, dtype=np.int64) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def _check_counts(p: np.ndarray, q: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"count vectors must be 1-d of equal length, got {p.shape} and {q.shape}")
    if eps < 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("counts and eps must be non-negative")
    return p + eps, q + eps


def _normalise(c: np.ndarray, name: str) -> np.ndarray:
    return c / _total(c, name)


def _total(c: np.ndarray, name: str) -> float:
    s = c.sum()
    if s <= 0:
        raise ValueError(f"{name} counts sum to zero (no features and eps=0)")
    return s


def smoothed_distribution(counts: np.ndarray, eps: float = DEFAULT_EPS, name: str = "counts") -> np.ndarray:
    """(counts + eps) / sum(counts + eps): the eps-smoothed distribution used by every measure here."""
    return _normalise(np.asarray(counts, dtype=np.float64) + eps, name)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for normalised vectors (scipy's ``rel_entr``: 0 ln 0 = 0, inf where p > 0 = q)."""
    return float(np.sum(rel_entr(p, q)))


def _check_lambda(lam: float) -> None:
    if not 0 < lam < 1:
        raise ValueError(f"lambda must be in (0, 1), got {lam}")


def estimated_pair(p_counts: np.ndarray, q_counts: np.ndarray, estimator: str = DEFAULT_ESTIMATOR,
                   eps: float = DEFAULT_EPS, lam: float = DEFAULT_LAMBDA) -> tuple[np.ndarray, np.ndarray]:
    """(P, Q): the benchmark's and the corpus's distributions under ``estimator`` (see the module docstring)."""
    if estimator == "interpolated":
        _check_lambda(lam)
        p, q = _check_counts(p_counts, q_counts, 0.0)
        return _normalise(p, "benchmark"), (1 - lam) * _normalise(q, "corpus") + lam / q.size
    if estimator == "yauney":
        p, q = _check_counts(p_counts, q_counts, 0.0)
        return (_normalise(_normalise(p, "benchmark") + YAUNEY_EPS, "benchmark"),
                _normalise(_normalise(q, "corpus") + YAUNEY_EPS, "corpus"))
    if estimator == "additive":
        p, q = _check_counts(p_counts, q_counts, eps)
        return _normalise(p, "benchmark"), _normalise(q, "corpus")
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {ESTIMATORS}")


def estimator_params(estimator: str = DEFAULT_ESTIMATOR, eps: float = DEFAULT_EPS, lam: float = DEFAULT_LAMBDA) -> dict:
    """What a row records about its KL estimator."""
    if estimator == "interpolated":
        return {"estimator": estimator, "lambda": lam}
    if estimator == "yauney":
        return {"estimator": estimator, "eps_on_probabilities": YAUNEY_EPS}
    return {"estimator": estimator, "eps": eps}


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, eps: float = DEFAULT_EPS,
                  estimator: str = "additive", lam: float = DEFAULT_LAMBDA) -> float:
    """KL(P || Q) in nats with P, Q from ``estimated_pair`` (default here: the additive estimator, ``eps``
    added to every bucket of both count vectors, as the importance weights use it)."""
    return _kl(*estimated_pair(p_counts, q_counts, estimator, eps, lam))


def js_divergence(p_counts: np.ndarray, q_counts: np.ndarray, eps: float = 0.0) -> float:
    """Jensen-Shannon divergence in nats (natural log): symmetric, in [0, ln 2] (scipy's ``jensenshannon`` is
    its square root)."""
    p, q = _check_counts(p_counts, q_counts, eps)
    return float(jensenshannon(_normalise(p, "p"), _normalise(q, "q")) ** 2)


def _resample_weights(n_docs: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_docs): how often each corpus document is drawn in each resample (seeded, one draw per row)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n_boot, n_docs), dtype=np.int64)
    for b in range(n_boot):  # one call per resample, as before: a single (n_boot, n_docs) call draws other numbers
        out[b] = np.bincount(rng.integers(0, n_docs, n_docs), minlength=n_docs)
    return out


_CHUNK = 256  # resamples per sparse product: 256 x 10,000 types x 8 bytes = 20 MB per array


def _bootstrap_interpolated(bench_counts: np.ndarray, corpus: DocCounts, weights: np.ndarray,
                            lam: float) -> np.ndarray:
    """KL under the interpolated estimator for every row of ``weights`` at once. P is unsmoothed there, so only
    the benchmark's own types enter the sum: the corpus counts are resampled on those columns alone, as one
    sparse product per chunk of resamples (chunks bound the memory: resamples x types floats). Every P and Q entry
    is computed as :func:`estimated_pair` computes it (the counts are exact integers in float64); only the order of
    the final sum differs, by ~1e-14 relative."""
    from scipy import sparse

    _check_lambda(lam)
    p, _ = _check_counts(bench_counts, np.zeros(corpus.dim), 0.0)
    support = np.flatnonzero(p)
    big_p = p[support] / _total(p, "benchmark")
    column = np.full(corpus.dim, -1, dtype=np.int64)
    column[support] = np.arange(support.size)
    keep = column[corpus.feature] >= 0
    counts = sparse.csr_matrix((corpus.count[keep].astype(np.float64),
                                (corpus.doc[keep], column[corpus.feature[keep]])), shape=(corpus.n_docs, support.size))
    per_doc = corpus.n_features().astype(np.float64)
    out = np.empty(weights.shape[0])
    for start in range(0, weights.shape[0], _CHUNK):
        w = weights[start:start + _CHUNK].astype(np.float64)
        q = np.asarray((counts.T @ w.T).T)  # (resamples, |support|) resampled counts on the benchmark's types
        total = w @ per_doc  # each resample's total count over all types
        if (total <= 0).any():
            raise ValueError("corpus counts sum to zero (no features and eps=0)")
        big_q = (1 - lam) * (q / total[:, None]) + lam / corpus.dim
        out[start:start + _CHUNK] = rel_entr(big_p, big_q).sum(axis=1)
    return out


def bootstrap_kl(bench_counts: np.ndarray, corpus: DocCounts, eps: float = DEFAULT_EPS,
                 n_boot: int = DEFAULT_N_BOOT, seed: int = 0, estimator: str = "additive",
                 lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """KL(bench || corpus*) for ``n_boot`` corpora resampled by document with replacement (seeded).

    The interpolated estimator takes a restricted path (:func:`_bootstrap_interpolated`: 6-30x faster on real
    corpora, the same values to 1.2e-13, ``benchmarks/bootstrap_kl.py``); the smoothed-P estimators need every
    type, so each resample's full count vector is built."""
    if corpus.n_docs == 0:
        raise ValueError("bootstrap needs at least one corpus document")
    weights = _resample_weights(corpus.n_docs, n_boot, seed)
    if estimator == "interpolated":
        return _bootstrap_interpolated(bench_counts, corpus, weights, lam)
    return bootstrap_kl_per_resample(bench_counts, corpus, weights, estimator, eps, lam)


def bootstrap_kl_per_resample(bench_counts: np.ndarray, corpus: DocCounts, weights: np.ndarray, estimator: str,
                              eps: float = DEFAULT_EPS, lam: float = DEFAULT_LAMBDA) -> np.ndarray:
    """KL for each row of ``weights`` from the full resampled count vector (any estimator; the reference)."""
    return np.array([_kl(*estimated_pair(bench_counts, corpus.totals(w), estimator, eps, lam)) for w in weights])


def divergence_measures(bench: DocCounts, corpus: DocCounts, eps: float = DEFAULT_EPS,
                        n_boot: int = DEFAULT_N_BOOT, seed: int = 0, ci: float = DEFAULT_CI,
                        estimator: str = DEFAULT_ESTIMATOR, lam: float = DEFAULT_LAMBDA) -> dict[str, Any]:
    """KL(bench || corpus) under ``estimator`` with a bootstrap CI over corpus resamples, and JS, plus parameters.

    ``kl`` is the full-sample point estimate, ``kl_boot_mean`` the mean over resamples; with ``n_boot=0``
    the CI fields are NaN.
    """
    if bench.dim != corpus.dim:
        raise ValueError(f"benchmark and corpus feature spaces differ: {bench.dim} vs {corpus.dim}")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    p, q = bench.totals(), corpus.totals()
    boots = bootstrap_kl(p, corpus, eps, n_boot, seed, estimator, lam) if n_boot > 0 else np.full(1, np.nan)
    lo, hi = np.quantile(boots, [(1 - ci) / 2, (1 + ci) / 2]) if n_boot > 0 else (np.nan, np.nan)
    kl = kl_divergence(p, q, eps, estimator, lam)
    return {
        "kl": kl, "kl_ci_low": float(lo), "kl_ci_high": float(hi),
        # basic (pivotal) bootstrap interval 2*kl - q_hi .. 2*kl - q_lo: resampling a corpus duplicates
        # documents and drops rare types, which biases resampled KL upwards; the basic interval corrects
        # for that bias and so brackets the point estimate, where the percentile interval may not.
        "kl_basic_ci_low": float(2 * kl - hi), "kl_basic_ci_high": float(2 * kl - lo),
        "kl_boot_mean": float(boots.mean()), "js": js_divergence(p, q),
        "eps": eps, "n_boot": n_boot, "seed": seed, "ci": ci, "log_base": "e", "dim": bench.dim,
        "kl_estimator": estimator_params(estimator, eps, lam),
        "n_bench_docs": bench.n_docs, "n_corpus_docs": corpus.n_docs,
        "n_bench_features": int(p.sum()), "n_corpus_features": int(q.sum()),
    }


def unigram_measures(bench_token_ids: Sequence[np.ndarray], corpus_token_ids: Sequence[np.ndarray],
                     vocab_size: int, eps: float = DEFAULT_EPS, n_boot: int = DEFAULT_N_BOOT, seed: int = 0,
                     ci: float = DEFAULT_CI, estimator: str = DEFAULT_ESTIMATOR,
                     lam: float = DEFAULT_LAMBDA) -> dict[str, Any]:
    """Unigram KL(benchmark || corpus) with bootstrap CI and JS over a model tokenizer's vocabulary."""
    return divergence_measures(token_doc_counts(bench_token_ids, vocab_size),
                               token_doc_counts(corpus_token_ids, vocab_size), eps, n_boot, seed, ci, estimator, lam)


# ------------------------------------------------------------------ registered measures
register(MeasureSpec(
    name="unigram_kl", range=(0.0, math.inf), family="token", levels=("dataset",), direction=-1, needs_model=True,
    description="KL divergence (nats) from the benchmark's unigram distribution to the corpus sample's under the model's tokenizer, the corpus side interpolated with the uniform distribution so the value converges as the sample grows (catalog [measures.unigram_kl] estimator = yauney | additive for the others); basic bootstrap CI over corpus-document resamples.",
    formula="sum_t P_b(t) ln(P_b(t)/Q(t)),  P_b = counts_b / N_b,  Q = (1 - lambda) counts_c / N_c + lambda / V",
    params={"tokenizer": "model", "estimator": "interpolated", "lambda": DEFAULT_LAMBDA, "n_boot": 1000, "ci": 0.95,
            "log_base": "e"},
))
register(MeasureSpec(
    name="unigram_js", range=(0.0, math.log(2)), family="token", levels=("dataset",), direction=-1, needs_model=True,
    description="Jensen-Shannon divergence (nats, <= ln 2) between benchmark and corpus unigram distributions under the model's tokenizer.",
    formula="(KL(P_b||M) + KL(P_c||M)) / 2,  M = (P_b + P_c) / 2",
    params={"tokenizer": "model", "eps": 0.0, "log_base": "e"},
))
