"""Hashed word uni+bigram features as in DSIR (Xie et al. 2023), their divergences and importance weights.

Featurization matches ``data_selection.hashed_ngram_dsir.get_ngram_counts`` (data-selection 1.0.3, ``n=2``)
up to the hash function: the text is lower-cased, split by NLTK's ``WordPunctTokenizer`` regex
``\\w+|[^\\w\\s]+`` (compiled, as the installed NLTK does, with the ``regex`` engine, whose ``\\w`` also covers
combining marks), and every token and every adjacent token pair is one feature. The reference hashes
``"w1 w2"`` with sha256 per occurrence; here each distinct token gets one ``xxh64`` (seed 0) and bigram
hashes are combined from the two token hashes in numpy (a splitmix64 mix of ``h1 * K + h2``), so the
whole dataset is hashed with a handful of vectorized passes. Bucket = hash mod ``num_buckets``.
Everything is stable across processes and machines; Python's ``hash()`` is never used.

Importance weight of a benchmark example x (DSIR's log-importance with the roles of the paper's target and
raw data set to corpus and benchmark): ``log_weight(x) = sum_f count_x(f) * (ln P_corpus(f) - ln P_bench(f))``
over x's hashed features f, where P are the eps-smoothed bucket distributions of :mod:`.tokens`; higher means
the example looks more like the corpus. ``log_weight_per_feature`` divides by x's number of features
(NaN for an example with no tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import regex
import xxhash

from simassets.core.measures.registry import MeasureSpec, register
from simassets.core.measures.tokens import (
    DEFAULT_CI, DEFAULT_EPS, DEFAULT_ESTIMATOR, DEFAULT_LAMBDA, DocCounts, divergence_measures, smoothed_distribution,
)

TOKEN_PATTERN = r"\w+|[^\w\s]+"
_WORDPUNCT = regex.compile(TOKEN_PATTERN, regex.UNICODE | regex.MULTILINE | regex.DOTALL)
DEFAULT_BUCKETS = 10_000
HASH_SEED = 0
_K = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def wordpunct_tokens(text: str) -> list[str]:
    """Lower-cased WordPunct tokens of ``text`` (the reference's ``wpt.tokenize(line.lower())``)."""
    return _WORDPUNCT.findall(text.lower())


def feature_strings(text: str) -> list[str]:
    """The reference's feature multiset before hashing: tokens, then ``"w1 w2"`` for each adjacent pair."""
    toks = wordpunct_tokens(text)
    return toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]


class _TokenHashCache(dict):
    """token -> xxh64(token, seed 0); each distinct token is hashed once."""

    def __missing__(self, token: str) -> int:
        value = xxhash.xxh64_intdigest(token.encode("utf-8"), seed=HASH_SEED)
        self[token] = value
        return value


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer, vectorized over uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def combine_hashes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Order-sensitive hash of a sequence extended by one token: mix64(a * K + b)."""
    return _mix64(np.asarray(a, dtype=np.uint64) * _K + np.asarray(b, dtype=np.uint64))


def feature_hash(tokens: Sequence[str]) -> int:
    """Hash of one feature given as its tokens (scalar reference of the vectorized path)."""
    h = np.array([xxhash.xxh64_intdigest(tokens[0].encode("utf-8"), seed=HASH_SEED)], dtype=np.uint64)
    for tok in tokens[1:]:
        h = combine_hashes(h, np.array([xxhash.xxh64_intdigest(tok.encode("utf-8"), seed=HASH_SEED)], np.uint64))
    return int(h[0])


def hash_token_lists(token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenated token hashes (uint64) of all lists and the list index (int64) of every token."""
    cache = _TokenHashCache()
    lens = np.fromiter(map(len, token_lists), dtype=np.int64, count=len(token_lists))
    hashes = np.fromiter(map(cache.__getitem__, chain.from_iterable(token_lists)), dtype=np.uint64,
                         count=int(lens.sum()))
    return hashes, np.repeat(np.arange(len(token_lists), dtype=np.int64), lens)


def ngram_hashes(hashes: np.ndarray, doc: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of all n-grams that lie inside one document, their document, and their start position."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    m = hashes.size - n + 1
    if m <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    acc = hashes[:m]
    for j in range(1, n):
        acc = combine_hashes(acc, hashes[j:j + m])
    start = np.flatnonzero(doc[:m] == doc[n - 1:])
    return acc[start], doc[start], start


def featurize(texts: Sequence[str], num_buckets: int = DEFAULT_BUCKETS) -> DocCounts:
    """Hashed unigram + bigram counts of every text (one row per text)."""
    hashes, doc = hash_token_lists([wordpunct_tokens(t) for t in texts])
    bi_hashes, bi_doc, _ = ngram_hashes(hashes, doc, 2)
    feats = (np.concatenate([hashes, bi_hashes]) % np.uint64(num_buckets)).astype(np.int64)
    return DocCounts.from_occurrences(np.concatenate([doc, bi_doc]), feats, len(texts), num_buckets)


def importance_log_weights(bench: DocCounts, corpus: DocCounts, eps: float = DEFAULT_EPS) -> dict[str, np.ndarray]:
    """Per benchmark example: sum of count * (ln P_corpus - ln P_bench) over its hashed features, total and
    per feature (NaN where the example has no features), and its number of features."""
    log_ratio = (np.log(smoothed_distribution(corpus.totals(), eps, "corpus"))
                 - np.log(smoothed_distribution(bench.totals(), eps, "benchmark")))
    total, n = bench.per_doc(log_ratio), bench.n_features()
    with np.errstate(invalid="ignore", divide="ignore"):
        per_feature = np.where(n > 0, total / n, np.nan)
    return {"log_weight": total, "log_weight_per_feature": per_feature, "n_features": n}


def hashed_ngram_measures(bench_texts: Sequence[str], corpus_texts: Sequence[str] | DocCounts,
                          num_buckets: int = DEFAULT_BUCKETS, eps: float = DEFAULT_EPS, n_boot: int = 0,
                          seed: int = 0, ci: float = DEFAULT_CI, estimator: str = DEFAULT_ESTIMATOR,
                          lam: float = DEFAULT_LAMBDA) -> dict[str, Any]:
    """Hashed uni+bigram KL(bench || corpus) (bootstrap CI if ``n_boot`` > 0), JS, and per-example weights.

    ``corpus_texts`` may be given already featurized (``featurize(texts, num_buckets)``), so a corpus
    compared with many benchmarks is hashed once.
    """
    bench = featurize(bench_texts, num_buckets)
    corpus = corpus_texts if isinstance(corpus_texts, DocCounts) else featurize(corpus_texts, num_buckets)
    if corpus.dim != num_buckets:
        raise ValueError(f"the featurized corpus has {corpus.dim} buckets, expected {num_buckets}")
    out = divergence_measures(bench, corpus, eps, n_boot, seed, ci, estimator, lam)
    out.update(importance_log_weights(bench, corpus, eps))  # DSIR's weights: the additive estimator, as DSIR
    out.update(num_buckets=num_buckets, ngrams=2, tokenizer="wordpunct-lower",
               hash=f"xxh64(seed={HASH_SEED})+splitmix64")
    return out


# ------------------------------------------------------------------ registered measures
register(MeasureSpec(
    name="hashed_ngram_kl", range=(0.0, math.inf), family="token", levels=("dataset",), direction=-1,
    description="KL divergence (nats) between benchmark and corpus distributions of hashed lower-cased word-punctuation unigrams+bigrams (DSIR features, 10,000 buckets), the corpus side interpolated with the uniform distribution (estimator selectable as for unigram_kl).",
    formula="sum_f P_b(f) ln(P_b(f)/Q(f)),  f = xxh64/splitmix64(uni+bigram) mod 10000, Q = (1 - lambda) P_c + lambda / 10000",
    params={"num_buckets": 10000, "ngrams": 2, "tokenizer": r"lower + \w+|[^\w\s]+", "hash": "xxh64(seed=0)+splitmix64", "estimator": "interpolated", "lambda": DEFAULT_LAMBDA, "log_base": "e"},
))
register(MeasureSpec(
    name="hashed_ngram_js", range=(0.0, math.log(2)), family="token", levels=("dataset",), direction=-1,
    description="Jensen-Shannon divergence (nats, <= ln 2) between hashed uni+bigram distributions of benchmark and corpus.",
    formula="(KL(P_b||M) + KL(P_c||M)) / 2,  M = (P_b + P_c) / 2",
    params={"num_buckets": 10000, "ngrams": 2, "hash": "xxh64(seed=0)+splitmix64", "eps": 0.0, "log_base": "e"},
))
register(MeasureSpec(
    name="importance_log_weight", family="token", levels=("example",), direction=1,
    description="DSIR-style log importance weight of an example: log-likelihood ratio of its hashed uni+bigram features under the corpus vs the benchmark distribution (higher = more corpus-like).",
    formula="sum_f count_x(f) (ln P_c(f) - ln P_b(f))",
    params={"num_buckets": 10000, "ngrams": 2, "eps": 1e-3},
))
register(MeasureSpec(
    name="importance_log_weight_per_feature", family="token", levels=("example",), direction=1,
    description="importance_log_weight divided by the example's number of hashed features (length-normalised).",
    formula="sum_f count_x(f) (ln P_c(f) - ln P_b(f)) / sum_f count_x(f)",
    params={"num_buckets": 10000, "ngrams": 2, "eps": 1e-3},
))
