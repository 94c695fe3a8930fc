"""Word coverage: how much of a benchmark's vocabulary the corpus sample has seen (1 - the out-of-vocabulary rate).

Per example, the share of its word tokens whose type occurs anywhere in the corpus sample; per dataset, the same
share over all of the benchmark's word tokens (token-weighted, so long examples count by their length). Words are
normalised as the n-gram overlap measures normalise them (lower-case, punctuation deleted, split on whitespace),
so coverage is the unigram end of the ``ngram_overlap_n`` family. It separates languages and domains sharply
(an English corpus covers little of Thai or Tamil XCOPA) and, unlike KL, needs no smoothing: an unseen word
simply counts as uncovered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from simassets.core.computation import Call, Computation, Output, Scope, Upstream, table_md
from simassets.core.hashing import canonical_json
from simassets.core.measures.overlap import normalize_words
from simassets.core.measures.registry import MeasureSpec, register, register_family
from simassets.core.schema import BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS, DATASET_SIMILARITY, EXAMPLE_SIMILARITY
from simassets.core.tasks import benchmark_text

_VOCABULARIES: dict[str, frozenset[str]] = {}  # corpus content fingerprint -> word types (this process, LRU of 8)


def vocabulary(texts: Sequence[str]) -> frozenset[str]:
    """The normalised word types of a corpus sample."""
    return frozenset(w for t in texts for w in normalize_words(t))


def word_coverage(bench_texts: Sequence[str], corpus_vocabulary: frozenset[str]) -> dict:
    """Per example: covered word tokens / word tokens (NaN for an example without words); overall: the same
    ratio over all tokens; and a few uncovered words of each example as evidence."""
    per_example, covered_total, tokens_total, evidence = [], 0, 0, []
    for text in bench_texts:
        words = normalize_words(text)
        hit = [w in corpus_vocabulary for w in words]
        covered, n = sum(hit), len(words)
        per_example.append(covered / n if n else float("nan"))
        covered_total, tokens_total = covered_total + covered, tokens_total + n
        unseen = list(dict.fromkeys(w for w, h in zip(words, hit) if not h))[:5]
        evidence.append(f"unseen: {' '.join(unseen)}" if unseen else None)
    return {"per_example": np.array(per_example, dtype=float), "evidence": evidence,
            "dataset": covered_total / tokens_total if tokens_total else float("nan"), "tokens": tokens_total}


# ------------------------------------------------------------------ registered measure and its asset
register(MeasureSpec(
    name="word_coverage", range=(0.0, 1.0), family="token", levels=("example", "dataset"), direction=1,
    description="Share of the benchmark's word tokens whose (normalised) word type occurs in the corpus sample: "
                "1 - the out-of-vocabulary rate; per dataset token-weighted over all examples.",
    formula="sum_x |{w in x : w in V_corpus}| / sum_x |x|,  words: lower-case, [^\\w\\s]+ deleted, split on whitespace",
    params={"normalization": "lower-case; delete [^\\w\\s]+; split on whitespace", "dataset_level": "token-weighted"},
))


def _inputs(scope: Scope, keys) -> dict:
    return {"corpus": scope.upstream(CORPUS_DOCUMENTS, {"corpus": keys["corpus"]}),
            "benchmark": scope.upstream(BENCHMARK_EXAMPLES, {"benchmark": keys["benchmark"]})}


def _compute(call: Call) -> Output:
    bench = call.read(BENCHMARK_EXAMPLES, benchmark=call.keys["benchmark"])
    fp = call.inputs["corpus"]
    if fp not in _VOCABULARIES:  # a corpus meets every benchmark: its vocabulary is built once per process
        if len(_VOCABULARIES) >= 8:
            _VOCABULARIES.pop(next(iter(_VOCABULARIES)))
        _VOCABULARIES[fp] = vocabulary(call.read(CORPUS_DOCUMENTS, corpus=call.keys["corpus"])["text"].tolist())
    res = word_coverage(benchmark_text(bench), _VOCABULARIES[fp])
    params = canonical_json({"normalization": "lower-case; delete [^\\w\\s]+; split on whitespace",
                             "corpus_types": len(_VOCABULARIES[fp])})
    examples = pd.DataFrame({"model": "", "example_id": bench["example_id"].to_numpy(), "measure": "word_coverage",
                             "value": res["per_example"], "evidence": res["evidence"], "params": params})
    dataset = pd.DataFrame([{"model": "", "measure": "word_coverage", "value": res["dataset"], "ci_low": None,
                             "ci_high": None, "n": len(bench), "warning": None, "params": params}])
    return Output({EXAMPLE_SIMILARITY: examples, DATASET_SIMILARITY: dataset},
                  metadata={"word_coverage": res["dataset"], "word_tokens": res["tokens"],
                            "least_covered": table_md(examples.nsmallest(5, "value")[["example_id", "value", "evidence"]])})


FAMILY = register_family(Computation(
    name="word_coverage", group="similarity", partitioning="corpus_x_benchmark",
    description="Word coverage of a benchmark by a corpus sample: the share of its word tokens the sample has seen "
                "(1 - OOV rate), per example (with unseen words as evidence) and token-weighted per benchmark.",
    writes=(EXAMPLE_SIMILARITY, DATASET_SIMILARITY), inputs=_inputs, compute=_compute,
    upstream=(Upstream("corpus_documents"), Upstream("benchmark_examples")),
    storage_keys=lambda keys: {**keys, "asset": "word_coverage"}))
