"""Throughput of hashed uni+bigram featurization: data-selection 1.0.3 (reference) vs simassets.

Run: ``.venv/bin/python benchmarks/ngrams.py [--corpus PATH] [--repeats N]``. Needs ``data-selection==1.0.3``.

Prints MB/s (UTF-8 MB = 1e6 bytes) for the reference ``get_ngram_counts`` (one dense 10,000-bucket vector
per text, as DSIR's featurizer) and for :func:`simassets.core.measures.hashed_ngrams.featurize` (per-text
sparse counts), and their ratio. Then checks that both count the same features: on every document the
multiset of feature strings before hashing (NLTK tokens + nltk.ngrams bigrams vs ours) is identical, and
on the first documents the reference bucket counts equal sha256-bucketing of our feature strings and our
vectorized bucket counts equal the scalar :func:`feature_hash` of the reference's features.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from data_selection.hashed_ngram_dsir import get_ngram_counts, hash_buckets, wpt
from nltk import ngrams as nltk_ngrams

from simassets.core.measures.hashed_ngrams import DEFAULT_BUCKETS, feature_hash, feature_strings, featurize
from simassets.core.paths import data_root


def best_seconds(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def reference_features(text: str) -> list[str]:
    words = wpt.tokenize(text.lower())
    return words + [" ".join(ng) for ng in nltk_ngrams(words, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=data_root() / "corpora" / "c4_en.jsonl")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-docs", type=int, default=50, help="documents for the bucket-level checks")
    args = ap.parse_args()
    with open(args.corpus, encoding="utf-8") as fh:
        texts = [json.loads(line)["text"] for line in fh]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    print(f"corpus {args.corpus.name}: {len(texts)} docs, {mb:.2f} MB, {DEFAULT_BUCKETS} buckets, uni+bigrams")

    t_ref = best_seconds(lambda: [get_ngram_counts(t, n=2, num_buckets=DEFAULT_BUCKETS) for t in texts], args.repeats)
    t_ours = best_seconds(lambda: featurize(texts, DEFAULT_BUCKETS), args.repeats)
    print(f"reference data-selection 1.0.3: {mb / t_ref:7.2f} MB/s ({t_ref:.3f} s, best of {args.repeats})")
    print(f"simassets featurize:            {mb / t_ours:7.2f} MB/s ({t_ours:.3f} s, best of {args.repeats})")
    print(f"speed-up: {t_ref / t_ours:.1f}x")

    mismatched = [i for i, t in enumerate(texts) if Counter(reference_features(t)) != Counter(feature_strings(t))]
    print(f"feature multisets identical on {len(texts) - len(mismatched)}/{len(texts)} docs"
          + (f"; differing docs: {mismatched[:10]}" if mismatched else ""))

    ours = featurize(texts[:args.check_docs], DEFAULT_BUCKETS)
    ok_ref = ok_ours = 0
    for i, t in enumerate(texts[:args.check_docs]):
        ref_counts = get_ngram_counts(t, n=2, num_buckets=DEFAULT_BUCKETS)
        sha_of_ours = np.bincount([hash_buckets(f, DEFAULT_BUCKETS) for f in feature_strings(t)],
                                  minlength=DEFAULT_BUCKETS)
        ok_ref += np.array_equal(ref_counts, sha_of_ours)
        row = np.zeros(DEFAULT_BUCKETS, np.int64)
        sel = ours.doc == i
        row[ours.feature[sel]] = ours.count[sel]
        scalar = np.bincount([feature_hash(f.split(" ")) % DEFAULT_BUCKETS for f in reference_features(t)],
                             minlength=DEFAULT_BUCKETS)
        ok_ours += np.array_equal(row, scalar)
    print(f"reference counts == sha256 buckets of our features: {ok_ref}/{args.check_docs} docs")
    print(f"our vectorized counts == scalar feature_hash of reference features: {ok_ours}/{args.check_docs} docs")


if __name__ == "__main__":
    main()
