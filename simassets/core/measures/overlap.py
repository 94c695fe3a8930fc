"""Word n-gram overlap between a set of texts and a small in-memory corpus: the fine-tuning guard's check that a
training set does not contain its target (whole-corpus contamination uses the suffix-array index instead:
:mod:`simassets.core.corpus_index`), and the sample-based baseline of ``benchmarks/contamination.py``.

Normalization (both sides): lower-case; delete every run of characters that are neither word characters
nor whitespace (``[^\\w\\s]+`` with the ``regex`` engine, so "don't" -> "dont", "U.S." -> "us", "cell-death"
-> "celldeath"); split on whitespace, which also collapses runs of whitespace. An n-gram is n consecutive
normalized words of one text.

The corpus index holds one stable 64-bit hash per distinct n-gram (xxh64 per word, combined in order by
:func:`.hashed_ngrams.combine_hashes`) and the first corpus document containing it, as sorted numpy
arrays (16 bytes per distinct n-gram, lookups by binary search). 64-bit collisions are negligible.

Per example: ``flagged`` = shares at least one n-gram with the corpus; ``overlap_fraction`` = shared
n-gram positions / the example's n-gram positions; evidence = the first shared n-gram (by position in the
example, normalized words) and the id of the first corpus document containing it. An example shorter
than n words has no n-grams: it is not flagged, its fraction is 0 and ``n_ngrams`` is 0 (counted in
``n_short``). Per dataset: ``contaminated_fraction`` = flagged examples / all examples (short ones included).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import regex

from simassets.core.measures.hashed_ngrams import hash_token_lists, ngram_hashes

_PUNCT = regex.compile(r"[^\w\s]+")
DEFAULT_NS = (13, 8)
NORMALIZATION = "lower-case; delete [^\\w\\s]+; split on whitespace"


def normalize_words(text: str) -> list[str]:
    """Lower-cased words of ``text`` with punctuation deleted and whitespace collapsed."""
    return _PUNCT.sub("", text.lower()).split()


@dataclass(frozen=True)
class NgramIndex:
    """Distinct corpus n-gram hashes (sorted) with the index of the first document containing each."""

    n: int
    hashes: np.ndarray  # uint64, sorted, distinct
    first_doc: np.ndarray  # int32
    doc_ids: tuple[str, ...]

    @classmethod
    def from_hashed_words(cls, hashes: np.ndarray, doc: np.ndarray, n: int, doc_ids: Sequence[str]) -> NgramIndex:
        ng, ng_doc, _ = ngram_hashes(hashes, doc, n)
        uniq, first = np.unique(ng, return_index=True)  # first occurrence = lowest doc index
        return cls(n, uniq, ng_doc[first].astype(np.int32), tuple(doc_ids))

    @classmethod
    def build(cls, corpus_texts: Sequence[str], n: int, doc_ids: Sequence[str] | None = None) -> NgramIndex:
        ids = _doc_ids(corpus_texts, doc_ids)
        hashes, doc = hash_token_lists([normalize_words(t) for t in corpus_texts])
        return cls.from_hashed_words(hashes, doc, n, ids)

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """Index of the first corpus document holding each query hash, or -1."""
        if self.hashes.size == 0:
            return np.full(query.shape, -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.hashes, query), self.hashes.size - 1)
        return np.where(self.hashes[pos] == query, self.first_doc[pos], -1).astype(np.int64)


def _doc_ids(corpus_texts: Sequence[str], doc_ids: Sequence[str] | None) -> list[str]:
    if doc_ids is None:
        return [str(i) for i in range(len(corpus_texts))]
    if len(doc_ids) != len(corpus_texts):
        raise ValueError(f"doc_ids has {len(doc_ids)} entries for {len(corpus_texts)} corpus texts")
    return [str(d) for d in doc_ids]


def ngram_overlap(bench_texts: Sequence[str], index: NgramIndex) -> dict[str, Any]:
    """Per-example n-gram contamination evidence against ``index`` and the dataset's contaminated fraction."""
    n, n_ex = index.n, len(bench_texts)
    words = [normalize_words(t) for t in bench_texts]
    hashes, doc = hash_token_lists(words)
    ng, ng_doc, start = ngram_hashes(hashes, doc, n)
    hit_doc = index.lookup(ng)
    hit = hit_doc >= 0
    n_ngrams = np.bincount(ng_doc, minlength=n_ex)
    n_shared = np.bincount(ng_doc[hit], minlength=n_ex)
    fraction = np.divide(n_shared, n_ngrams, out=np.zeros(n_ex), where=n_ngrams > 0)
    offsets = np.concatenate([[0], np.cumsum([len(w) for w in words])])
    evidence: list[str | None] = [None] * n_ex
    evidence_doc: list[str | None] = [None] * n_ex
    hit_idx = np.flatnonzero(hit)  # n-grams are in (example, position) order
    examples, first = np.unique(ng_doc[hit_idx], return_index=True)
    for e, k in zip(examples.tolist(), hit_idx[first].tolist()):
        p = int(start[k] - offsets[e])
        evidence[e] = " ".join(words[e][p:p + n])
        evidence_doc[e] = index.doc_ids[int(hit_doc[k])]
    flagged = n_shared > 0
    return {
        "n": n, "flagged": flagged, "overlap_fraction": fraction, "n_ngrams": n_ngrams, "n_shared": n_shared,
        "evidence_ngram": evidence, "evidence_doc_id": evidence_doc,
        "contaminated_fraction": float(flagged.mean()) if n_ex else float("nan"),
        "mean_overlap_fraction": float(fraction.mean()) if n_ex else float("nan"),
        "n_examples": n_ex, "n_short": int((n_ngrams == 0).sum()),
        "n_corpus_docs": len(index.doc_ids), "n_corpus_ngrams": int(index.hashes.size), "normalization": NORMALIZATION,
    }


def build_indexes(corpus_texts: Sequence[str], ns: Sequence[int] = DEFAULT_NS,
                  corpus_ids: Sequence[str] | None = None) -> dict[int, NgramIndex]:
    """One :class:`NgramIndex` per n in ``ns``, the corpus words normalized and hashed once."""
    ids = _doc_ids(corpus_texts, corpus_ids)
    hashes, doc = hash_token_lists([normalize_words(t) for t in corpus_texts])
    return {n: NgramIndex.from_hashed_words(hashes, doc, n, ids) for n in ns}


def overlap_measures(bench_texts: Sequence[str], corpus_texts: Sequence[str] | dict[int, NgramIndex],
                     ns: Sequence[int] = DEFAULT_NS, corpus_ids: Sequence[str] | None = None) -> dict[int, dict[str, Any]]:
    """:func:`ngram_overlap` for each n in ``ns``; the corpus as texts or as prebuilt :func:`build_indexes`."""
    indexes = corpus_texts if isinstance(corpus_texts, dict) else build_indexes(corpus_texts, ns, corpus_ids)
    missing = [n for n in ns if n not in indexes]
    if missing:
        raise ValueError(f"no corpus index for n = {missing}")
    return {n: ngram_overlap(bench_texts, indexes[n]) for n in ns}
