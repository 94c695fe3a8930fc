"""Whole-corpus contamination: the measures read off each corpus's suffix-array index (:mod:`..corpus_index`),
the ``corpus_index`` computation that builds it, and the ``contamination_gain`` family (per model: accuracy on
contaminated minus clean examples, the ConTAM curve).

Per example and corpus (written by ``text_similarity``): ``longest_match`` (words of the longest span of the
example found anywhere in the corpus's source files, evidence = one document holding it and the span) and
``match_coverage_n`` (share of the example's words inside a match of >= n words). Per benchmark and corpus:
``contaminated_fraction_n`` (share of examples whose longest match has >= n words), the mean coverage, and the
negative control (the same examples with their words shuffled by a seeded shuffle: its contaminated fraction at
13 words is recorded in the params and warned about above 2 %).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simassets.core.computation import Call, Computation, Output, Scope, Upstream, table_md
from simassets.core.hashing import canonical_json, fingerprint
from simassets.core.measures.registry import MeasureSpec, register, register_family
from simassets.core.schema import DATASET_SIMILARITY

NS = (8, 13, 25, 50)
CONTROL_N, CONTROL_MAX = 13, 0.02  # the shuffled negative control must stay at or below 2 % at 13 words
MIN_SIDE = 5  # a gain with fewer examples on either side is reported with a warning
N_BOOT = {"quick": 1000, "full": 2000}
_OPEN: OrderedDict[str, Any] = OrderedDict()  # index folder -> CorpusIndex (engines stay open in a process)

register(MeasureSpec(
    name="longest_match", range=(0.0, math.inf), family="overlap", levels=("example", "dataset"), direction=1,
    description="Words of the longest span of a benchmark example (input + gold continuation, normalized words) "
                "found anywhere in the corpus's whole source (suffix-array index); the dataset value is the mean "
                "over examples. Evidence: one document holding the span.",
    formula="max_w L[w], L[w] = words of the longest corpus match starting at word w",
    params={"unit": "normalized word", "index": "infini-gram suffix array over every document of the source"}))
for _n in NS:
    register(MeasureSpec(
        name=f"match_coverage_{_n}", range=(0.0, 1.0), family="overlap", levels=("example", "dataset"), direction=1,
        description=f"Share of an example's words inside a span of >= {_n} words found in the whole corpus; the "
                    "dataset value is the mean over examples.",
        formula=f"|{{w : w in [s, s + L[s]) for some s with L[s] >= {_n}}}| / |words|", params={"n": _n}))
    register(MeasureSpec(
        name=f"contaminated_fraction_{_n}", range=(0.0, 1.0), family="overlap", levels=("dataset",), direction=1,
        description=f"Share of benchmark examples whose longest match in the whole corpus has >= {_n} words "
                    "(ConTAM's longest-match criterion).",
        formula=f"mean_x 1[longest_match(x) >= {_n}]", params={"n": _n}))
    register(MeasureSpec(
        name=f"contamination_gain_{_n}", range=(-1.0, 1.0), family="overlap", levels=("dataset",), direction=1,
        needs_model=True,
        description=f"Estimated performance gain from contamination: the model's accuracy on examples whose longest "
                    f"match in the corpus has >= {_n} words minus its accuracy on the others, with a bootstrap CI "
                    "(each side resampled); undefined when a side is empty.",
        formula=f"acc(longest >= {_n}) - acc(longest < {_n})", params={"n": _n, "ci": "95% percentile bootstrap"}))


# --------------------------------------------------------------------------- the index of a corpus
def _sources(scope: Scope, corpus: str) -> list:
    spec = scope.catalog.corpora[corpus]
    if spec.source is not None:
        return [(corpus, spec.source)]
    return [(c.name, c.source or scope.catalog.corpora[c.corpus].source) for c in spec.components]


def index_inputs(scope: Scope, keys) -> dict:
    from simassets.core.corpus_index import FORMAT_VERSION
    from simassets.core.sampling import source_hashes  # the same content hashes the sample is keyed by

    spec = scope.catalog.corpora[keys["corpus"]]
    if spec.index_dir:
        return {"index_dir": spec.index_dir, "format": FORMAT_VERSION}
    return {"sources": source_hashes(scope.catalog, keys["corpus"]), "format": FORMAT_VERSION,
            "reading": [[name, src.describe(), src.text_field, src.id_field, list(src.domains), src.max_scan]
                        for name, src in _sources(scope, keys["corpus"])]}


def _documents(scope: Scope, corpus: str):
    """Every document of the corpus's source files (a mixture: the union of its components, ids prefixed)."""
    from simassets.core.sampling import sample_source

    mixture = scope.catalog.corpora[corpus].is_mixture
    for name, source in _sources(scope, corpus):
        docs, _, _ = sample_source(source, 10**12, 0, name, scope.on_bad_row)  # n >= every row: the whole source
        for d in docs:
            yield (f"{name}/{d.doc_id}" if mixture else d.doc_id), d.text


def corpus_index_rows(call: Call) -> Output:
    from simassets.core import paths
    from simassets.core.corpus_index import CorpusIndex, build_index
    from simassets.core.paths import resolve_data_path
    from simassets.core.schema import CORPUS_INDEXES

    corpus, scope = call.keys["corpus"], call.scope
    spec = scope.catalog.corpora[corpus]
    built = False
    if spec.index_dir:
        folder = resolve_data_path(spec.index_dir)
        info = CorpusIndex(folder).info  # validates it
    else:
        folder = paths.cache_dir() / "indexes" / fingerprint(call.inputs)[:32]
        try:
            info = CorpusIndex(folder).info
        except Exception:  # absent or unreadable cache entry: build it (whole source, content-addressed)
            info = build_index(_documents(scope, corpus), folder)
            built = True
    row = pd.DataFrame([{"corpus": corpus, "index_dir": str(folder), "built": built, "n_docs": info.n_docs,
                         "n_words": info.n_words, "text_bytes": info.text_bytes, "index_bytes": info.index_bytes,
                         "build_seconds": info.build_seconds if built else None,
                         "sources": json.dumps(call.inputs.get("sources") or {"index_dir": spec.index_dir}),
                         "params": canonical_json({"unit": info.unit, "format": info.format_version,
                                                   "engine": "infini-gram u8 suffix array"})}])
    return Output({CORPUS_INDEXES: row}, info={"files": [str(folder / "info.json"), str(folder / "table.0")]},
                  metadata={"documents": info.n_docs, "words": info.n_words,
                            "index_mb": round(info.index_bytes / 2**20, 2),
                            "index_to_text": round(info.index_bytes / max(info.text_bytes, 1), 2),
                            "built": built, "build_seconds": round(info.build_seconds, 2) if built else 0.0})


def open_index(folder: str):
    from simassets.core.corpus_index import CorpusIndex

    if folder not in _OPEN:
        _OPEN[folder] = CorpusIndex(folder)
        while len(_OPEN) > 8:
            _OPEN.popitem(last=False)
    _OPEN.move_to_end(folder)
    return _OPEN[folder]


# --------------------------------------------------------------------------- per example and per benchmark
def contamination_rows(texts: list[str], ids: np.ndarray, index, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-example (``longest_match``, ``match_coverage_n``) and dataset rows (``contaminated_fraction_n``, mean
    coverage, mean longest match) of a benchmark against one corpus index, with the shuffled negative control."""
    from simassets.core.corpus_index import shuffled_words

    matches = index.examples(texts, NS)
    longest = np.array([m.longest for m in matches], dtype=float)
    shuffled = index.match_lengths_of([shuffled_words(t, seed + i) for i, t in enumerate(texts)])
    control = np.array([lengths.max(initial=0) >= CONTROL_N for lengths in shuffled], dtype=bool)
    control_fraction = float(control.mean()) if len(texts) else float("nan")
    params = canonical_json({"unit": index.info.unit, "corpus_docs": index.info.n_docs,
                             "corpus_words": index.info.n_words, "thresholds": list(NS),
                             "shuffled_control_fraction_13": control_fraction, "control_seed": seed})
    evidence = [f"{m.evidence_doc_id}: {m.evidence[:300]}" if m.evidence_doc_id else None for m in matches]
    frames = [pd.DataFrame({"example_id": ids, "measure": "longest_match", "value": longest, "evidence": evidence,
                            "params": params})]
    frames += [pd.DataFrame({"example_id": ids, "measure": f"match_coverage_{n}",
                             "value": [m.coverage[n] for m in matches], "evidence": None, "params": params})
               for n in NS]
    short = int(sum(m.n_words < NS[0] for m in matches))
    warn = (f"negative control: {control_fraction:.1%} of word-shuffled examples match >= {CONTROL_N} words "
            f"(limit {CONTROL_MAX:.0%})") if control_fraction > CONTROL_MAX else None
    rows = [{"measure": "longest_match", "value": float(longest.mean()), "params": params}]
    for n in NS:
        rows += [{"measure": f"contaminated_fraction_{n}", "value": float((longest >= n).mean()), "params": params,
                  "warning": warn if n == CONTROL_N else (f"{short} examples shorter than {NS[0]} words" if short
                                                          and n == NS[0] else None)},
                 {"measure": f"match_coverage_{n}", "value": float(np.mean([m.coverage[n] for m in matches])),
                  "params": params}]
    return pd.concat(frames, ignore_index=True), pd.DataFrame(rows)


# --------------------------------------------------------------------------- per model: the gain
def _gain_inputs(scope: Scope, keys) -> dict:
    from simassets.core.schema import EXAMPLE_RESULTS, EXAMPLE_SIMILARITY

    b = keys["benchmark"]
    return {"seed": scope.seed, "n_boot": N_BOOT[scope.profile], "thresholds": list(NS),
            "results": scope.upstream(EXAMPLE_RESULTS, keys),
            "matches": {c: scope.upstream(EXAMPLE_SIMILARITY, {"corpus": c, "benchmark": b, "asset": "text_similarity"})
                        for c in scope.values("corpus")}}


def gain_rows(correct: pd.Series, longest: pd.Series, n_boot: int, seed: int) -> list[dict]:
    """One row per threshold: the gain with its CI, n on each side and a warning when a side is small."""
    from simassets.core.corpus_index import contamination_gain

    rows = []
    for n in NS:
        g = contamination_gain(correct.to_numpy(), longest.to_numpy() >= n, n_boot=n_boot, seed=seed + n)
        small = min(g["n_contaminated"], g["n_clean"])
        rows.append({"measure": f"contamination_gain_{n}", "value": g["gain"], "ci_low": g["ci_low"],
                     "ci_high": g["ci_high"], "n": g["n_contaminated"] + g["n_clean"],
                     "warning": (f"{g['n_contaminated']} contaminated vs {g['n_clean']} clean examples"
                                 if small < MIN_SIDE else None),
                     "params": canonical_json({"n": n, "n_contaminated": g["n_contaminated"], "n_clean": g["n_clean"],
                                               "acc_contaminated": g["acc_contaminated"],
                                               "acc_clean": g["acc_clean"], "n_boot": n_boot, "seed": seed + n})})
    return rows


def _gain(call: Call) -> Output:
    from simassets.core.schema import EXAMPLE_RESULTS, EXAMPLE_SIMILARITY

    model, bench = call.keys["model"], call.keys["benchmark"]
    results = call.read(EXAMPLE_RESULTS, model=model, benchmark=bench)[["example_id", "correct"]]
    rows = []
    for corpus in call.scope.values("corpus"):
        ex = call.read(EXAMPLE_SIMILARITY, corpus=corpus, benchmark=bench, asset="text_similarity")
        longest = ex[ex["measure"] == "longest_match"][["example_id", "value"]]
        merged = results.merge(longest, on="example_id")
        rows += [r | {"corpus": corpus} for r in gain_rows(merged["correct"].astype(float), merged["value"],
                                                           call.inputs["n_boot"], call.scope.seed)]
    dataset = pd.DataFrame(rows).reindex(columns=["corpus", "measure", "value", "ci_low", "ci_high", "n", "warning",
                                                  "params"])
    shown = dataset[dataset["measure"] == "contamination_gain_13"]
    return Output({DATASET_SIMILARITY: dataset}, metadata={
        "corpora": len(shown), "gain_13": table_md(shown[["corpus", "value", "ci_low", "ci_high", "n", "warning"]])})


GAIN_FAMILY = register_family(Computation(
    name="contamination_gain", group="similarity", partitioning="model_x_benchmark",
    description="Per model, benchmark and corpus: accuracy on contaminated minus clean examples (longest "
                "whole-corpus match >= 8, 13, 25, 50 words), with a bootstrap CI and n per side: does contamination "
                "change accuracy?",
    writes=(DATASET_SIMILARITY,), inputs=_gain_inputs, compute=_gain,
    upstream=(Upstream("benchmark_evaluation"), Upstream("text_similarity", "all")), kinds=("numpy", "parquet"),
    storage_keys=lambda keys: {**keys, "asset": "contamination_gain"}))


def index_folder(scope: Scope, corpus: str) -> str:
    """The index folder recorded by ``corpus_index`` for a corpus (read once per scope: a run's corpus x benchmark
    partitions share it)."""
    from simassets.core.schema import CORPUS_INDEXES

    key = ("index_dir", corpus)
    if key not in scope.memo:
        row = scope.warehouse.read_partition(CORPUS_INDEXES, scope.profile, {"corpus": corpus})
        folder = str(row["index_dir"].iloc[0])
        if not Path(folder, "info.json").exists():
            raise FileNotFoundError(f"corpus_index[{corpus}] recorded {folder}, which is gone: re-materialize "
                                    "corpus_index")
        scope.memo[key] = folder
    return scope.memo[key]
