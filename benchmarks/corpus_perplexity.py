"""Corpus perplexity with fewer documents: what it saves and what it does to the values, in one run.

``corpus_perplexity`` scores a seeded prefix of each corpus sample (``CORPUS_PPL`` in
:mod:`simassets.core.measures.model`). This scores the first ``--fewer`` documents, then the rest up to
``--docs``, and prints per corpus: the seconds of each (so the saving is a ratio measured side by side), the
token-weighted perplexity with all documents and with the prefix, their relative difference, and each one's 95 %
bootstrap interval over documents (the sampling error the smaller prefix buys). Where the warehouse holds the
stored value for ``--docs`` documents, it is printed beside the recomputed one as a check.

    .venv/bin/python benchmarks/corpus_perplexity.py --home /path/to/full/home --profile full \\
        [--corpora c4_en brown] [--docs 200] [--fewer 100] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from simassets.core import paths
from simassets.core.computation import Scope
from simassets.core.measures.model import CORPUS_PPL, aggregate_perplexity, sequence_nll
from simassets.core.models import load_causal_lm
from simassets.core.schema import CORPUS_DOCUMENTS


def token_weighted(nll: np.ndarray, n: np.ndarray) -> float:
    """The asset's own aggregate (:func:`aggregate_perplexity`), so the figures are the stored measure's."""
    return aggregate_perplexity(nll.tolist(), n.astype(int).tolist()).token_weighted


def bootstrap_ci(nll: np.ndarray, n: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of the token-weighted perplexity, documents resampled with replacement."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(nll), size=(n_boot, len(nll)))
    boots = np.exp(nll[idx].sum(axis=1) / n[idx].sum(axis=1))
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, default=paths.home(), help="a warehouse home holding the profile's corpora")
    ap.add_argument("--profile", default="full")
    ap.add_argument("--corpora", nargs="+", default=["c4_en", "brown"])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--docs", type=int, default=None, help="documents now (default: the profile's setting)")
    ap.add_argument("--fewer", type=int, default=None, help="documents in the cheaper setting (default: half)")
    ap.add_argument("--boot", type=int, default=2000)
    args = ap.parse_args()
    home = args.home.resolve()
    scope = Scope(profile=args.profile, home=home, data_root=paths.data_root(), catalog_dir=home)
    docs_now, max_length = CORPUS_PPL[args.profile]
    docs_now = args.docs or docs_now
    fewer = args.fewer or docs_now // 2
    loaded = load_causal_lm(scope.models[args.model])
    batch = scope.spec.eval_batch_size
    print(f"{args.model}, profile {args.profile}: {docs_now} documents against the first {fewer}, each truncated to "
          f"{max_length} tokens, batch {batch}; intervals: {args.boot} bootstrap resamples of the documents\n")
    head = (f"{'corpus':18s} {'s (' + str(fewer) + ')':>9s} {'s (all)':>8s} {'ratio':>6s} {'ppl all':>9s} "
            f"{'ppl ' + str(fewer):>9s} {'diff %':>7s} {'95% CI all':>17s} {'95% CI ' + str(fewer):>17s} "
            f"{'stored':>9s}")
    print(head)
    for corpus in args.corpora:
        texts = scope.read(CORPUS_DOCUMENTS, {"corpus": corpus})["text"].head(docs_now).tolist()
        t = time.perf_counter()
        first = sequence_nll(loaded.model, loaded.tokenizer, texts[:fewer], max_length=max_length, batch_size=batch)
        t_first = time.perf_counter() - t
        t = time.perf_counter()
        rest = sequence_nll(loaded.model, loaded.tokenizer, texts[fewer:], max_length=max_length, batch_size=batch)
        t_all = t_first + time.perf_counter() - t
        rows = [r for r in first + rest if r.n_tokens]
        nll = np.array([r.nll_sum for r in rows])
        n = np.array([r.n_tokens for r in rows], dtype=float)
        k = sum(1 for r in first if r.n_tokens)
        ppl_all, ppl_few = token_weighted(nll, n), token_weighted(nll[:k], n[:k])
        ci_all, ci_few = bootstrap_ci(nll, n, args.boot, 0), bootstrap_ci(nll[:k], n[:k], args.boot, 0)
        try:
            stored = scope.warehouse.query(
                "select value, params from dataset_similarity where profile = ? and measure = 'corpus_perplexity' "
                "and corpus = ?", [args.profile, corpus])
            stored_value = next((f"{v:.3f}" for v, p in zip(stored["value"], stored["params"])
                                 if json.loads(p).get("model") == args.model and json.loads(p).get("docs") == len(texts)
                                 and json.loads(p).get("max_length") == max_length), "-")
        except Exception:  # no warehouse views in this home
            stored_value = "-"
        print(f"{corpus:18s} {t_first:9.1f} {t_all:8.1f} {t_all / t_first:6.2f} {ppl_all:9.3f} {ppl_few:9.3f} "
              f"{100 * (ppl_few / ppl_all - 1):+7.2f} {ci_all[0]:8.2f}-{ci_all[1]:<8.2f} "
              f"{ci_few[0]:8.2f}-{ci_few[1]:<8.2f} {stored_value:>9s}")


if __name__ == "__main__":
    main()
