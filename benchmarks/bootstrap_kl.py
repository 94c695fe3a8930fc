"""The corpus bootstrap of the KL measures: the support-restricted path against one full count vector per resample.

For real corpora (documents as the profiles sample them: the first ``--docs`` of a seeded order) and real benchmarks
(``--limit`` examples each, input + gold target), in one run, prints for hashed uni+bigram features and for a model
tokenizer's unigrams: the seconds of :func:`bootstrap_kl_per_resample` (the previous code) and of
:func:`bootstrap_kl` (what the measures use now), their ratio, and the largest difference over every resample.
The quick profile resamples 200 times over 200 documents (1,000 for PubMed), the full one 1,000 times over 1,000.

    .venv/bin/python benchmarks/bootstrap_kl.py [--docs 200] [--n-boot 200] [--limit 30] [--tokenizer gpt2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kl_sample_size import benchmark_texts, tokenizer  # noqa: E402

from simassets.core.measures import hashed_ngrams as hn  # noqa: E402
from simassets.core.measures.tokens import (  # noqa: E402
    _resample_weights, bootstrap_kl, bootstrap_kl_per_resample, encode_texts, token_doc_counts,
)
from simassets.core.paths import data_root  # noqa: E402

CORPORA = ("brown", "c4_en", "pubmed_abstracts")
BENCHMARKS = ("arc_easy", "hellaswag", "piqa", "mmlu_high_school_biology", "xcopa_sw", "boolq")


def corpus_texts(name: str, docs: int, seed: int = 0) -> list[str]:
    texts = [json.loads(line)["text"] for line in open(data_root() / "corpora" / f"{name}.jsonl", encoding="utf-8")]
    return [texts[i] for i in np.random.default_rng(seed).permutation(len(texts))[:docs]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--tokenizer", default="gpt2", help="gpt2 (offline copy) or a registered model id")
    ap.add_argument("--corpora", nargs="+", default=list(CORPORA))
    ap.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    args = ap.parse_args()
    tok = tokenizer(args.tokenizer)
    bench = {b: benchmark_texts(b, args.limit) for b in args.benchmarks}
    print(f"{args.docs} documents per corpus, {args.n_boot} resamples, {args.limit} examples per benchmark")
    print(f"{'features':9s} {'corpus':17s} {'pairs':>5s} {'before s':>9s} {'now s':>7s} {'ratio':>7s} "
          f"{'max |diff|':>11s}")
    totals = [0.0, 0.0]
    for c in args.corpora:
        texts = corpus_texts(c, args.docs)
        ids = encode_texts(texts, tok)
        for feats, corpus in (("hashed", hn.featurize(texts)), ("unigram", token_doc_counts(ids, len(tok)))):
            before = now = 0.0
            diff = 0.0
            for b, btexts in bench.items():
                counts = (hn.featurize(btexts) if feats == "hashed"
                          else token_doc_counts(encode_texts(btexts, tok), len(tok))).totals()
                t = time.perf_counter()
                ref = bootstrap_kl_per_resample(counts, corpus, _resample_weights(corpus.n_docs, args.n_boot, 0),
                                                "interpolated")
                t1 = time.perf_counter()
                new = bootstrap_kl(counts, corpus, n_boot=args.n_boot, seed=0, estimator="interpolated")
                t2 = time.perf_counter()
                before, now = before + t1 - t, now + t2 - t1
                diff = max(diff, float(np.max(np.abs(ref - new))))
            totals[0], totals[1] = totals[0] + before, totals[1] + now
            print(f"{feats:9s} {c:17s} {len(bench):5d} {before:9.2f} {now:7.2f} {before / now:6.1f}x {diff:11.1e}")
    print(f"{'all':27s} {'':5s} {totals[0]:9.2f} {totals[1]:7.2f} {totals[0] / totals[1]:6.1f}x")


if __name__ == "__main__":
    main()
