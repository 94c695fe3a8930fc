"""How much the token KLs move with the corpus sample size alone, under each estimator.

For fixed benchmarks (``--limit`` examples each, the text the measures use: input + gold target) against nested
seeded C4 samples of 200, 500, 1,000 and 1,480 documents (the quick profile samples 200, the full one 1,000),
prints unigram KL under a model's tokenizer and hashed uni+bigram KL, per estimator (``interpolated``, the
default; ``yauney``; ``additive``, the earlier default), and the successive changes |KL(n_i+1) - KL(n_i)|.
An estimator whose value converges has shrinking changes; the README's table comes from this script.

    .venv/bin/python benchmarks/kl_sample_size.py [--tokenizer smollm2-135m-instruct|gpt2] [--limit 500]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd

from simassets.core.catalog import load_catalog
from simassets.core.measures import hashed_ngrams as hn
from simassets.core.measures.tokens import ESTIMATORS, encode_texts, kl_divergence, token_doc_counts
from simassets.core.paths import data_root
from simassets.core.tasks import render_examples

SIZES = (200, 500, 1000, 1480)
BENCHMARKS = ("arc_easy", "hellaswag", "xcopa_sw", "xcopa_zh")


def nested_c4(seed: int = 0) -> list[str]:
    """C4's 1,480 documents in one seeded order: its first n are the size-n sample, so the samples are nested."""
    docs = [json.loads(line)["text"] for line in open(data_root() / "corpora/c4_en.jsonl", encoding="utf-8")]
    return [docs[i] for i in np.random.default_rng(seed).permutation(len(docs))]


def benchmark_texts(name: str, limit: int) -> list[str]:
    ex = pd.DataFrame([e.__dict__ for e in render_examples(load_catalog().benchmarks[name], data_root(), limit, 0)])
    return (ex["input_text"] + ex["target_text"]).tolist()


def tokenizer(name: str):
    if name == "gpt2":
        from simassets.core.testing import gpt2_tokenizer

        return gpt2_tokenizer()
    from simassets.core.models import load_causal_lm, load_registry

    return load_causal_lm(load_registry()[name]).tokenizer


def kl_table(benchmarks, tok, limit: int, sizes=SIZES) -> pd.DataFrame:
    """One row per (benchmark, features, estimator, size): the KL of the benchmark against the nested C4 sample."""
    c4 = nested_c4()
    c4_ids = encode_texts(c4[: max(sizes)], tok)
    rows = []
    for b in benchmarks:
        texts = benchmark_texts(b, limit)
        bench = {"unigram": token_doc_counts(encode_texts(texts, tok), len(tok)).totals(),
                 "hashed": hn.featurize(texts).totals()}
        for n in sizes:
            corpus = {"unigram": token_doc_counts(c4_ids[:n], len(tok)).totals(), "hashed": hn.featurize(c4[:n]).totals()}
            for feats in bench:
                for est in ESTIMATORS:
                    rows.append({"benchmark": b, "features": feats, "estimator": est, "docs": n,
                                 "kl": kl_divergence(bench[feats], corpus[feats], estimator=est)})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", default="smollm2-135m-instruct")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--benchmarks", nargs="+", default=list(BENCHMARKS))
    args = ap.parse_args()
    table = kl_table(args.benchmarks, tokenizer(args.tokenizer), args.limit)
    for (feats, b), g in table.groupby(["features", "benchmark"], sort=False):
        print(f"\n{feats} KL, {b} ({args.limit} examples, tokenizer {args.tokenizer if feats == 'unigram' else '-'})")
        for est, e in g.groupby("estimator", sort=False):
            kl = e.sort_values("docs")["kl"].to_numpy()
            steps = np.abs(np.diff(kl))
            print(f"  {est:<12} " + "  ".join(f"{v:6.3f}" for v in kl) + "   changes "
                  + " > ".join(f"{s:.3f}" for s in steps) + ("   shrinking" if np.all(np.diff(steps) < 0) else ""))
    print("\nsizes:", ", ".join(map(str, SIZES)), "documents (nested)")


if __name__ == "__main__":
    main()
