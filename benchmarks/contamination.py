"""Whole-corpus contamination (suffix-array index) against the previous sample-based n-gram counting, one run.

Prints, on the same inputs: index build throughput (MB/s of source file) per default corpus; per-query latency
of the longest-match lookup (median, p99); the wall time of the whole per-example contamination pass (every
benchmark text against every default corpus) with the index and with the previous code (13/8-gram hash sets over
a 200-document sample, :mod:`simassets.core.measures.overlap`), with the ratio; and an index over every corpus
file of the shared data: build time and size relative to the text.

    .venv/bin/python benchmarks/contamination.py [--per-benchmark 30]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from simassets.core.corpus_index import CorpusIndex, build_index, shuffled_words
from simassets.core.measures.contamination import CONTROL_N, NS
from simassets.core.measures.overlap import build_indexes, overlap_measures
from simassets.core.paths import data_root

CORPORA = ("c4_en", "wikitext2", "pubmed_abstracts", "brown")  # the quick profile's source files


def docs_of(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    return [(str(r.get("id", i)), r["text"]) for i, r in enumerate(rows)]


def bench_texts(per_benchmark: int) -> list[str]:
    out = []
    for f in sorted((data_root() / "benchmarks" / "gauntlet").glob("*.jsonl")):
        for line in list(f.open(encoding="utf-8"))[:per_benchmark]:
            row = json.loads(line)
            out.append(" ".join(str(v) for v in row.values() if isinstance(v, str)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-benchmark", type=int, default=30, help="examples per benchmark file (quick: 30)")
    ap.add_argument("--sample", type=int, default=200, help="documents in the previous code's corpus sample")
    args = ap.parse_args()
    texts = bench_texts(args.per_benchmark)
    tmp = Path(tempfile.mkdtemp(prefix="contamination-bench-"))
    try:
        print(f"{len(texts)} benchmark texts; corpora {', '.join(CORPORA)}\n")
        print(f"{'corpus':18s} {'docs':>6s} {'MB':>7s} {'build s':>8s} {'MB/s':>7s} {'index/text':>10s}")
        indexes, corpora = {}, {}
        for name in CORPORA:
            path = data_root() / "corpora" / f"{name}.jsonl"
            corpora[name] = docs_of(path)
            t = time.perf_counter()
            info = build_index(corpora[name], tmp / name)
            dt = time.perf_counter() - t
            mb = path.stat().st_size / 2**20
            indexes[name] = CorpusIndex(tmp / name)
            ratio = info.index_bytes / info.text_bytes
            print(f"{name:18s} {info.n_docs:6d} {mb:7.2f} {dt:8.2f} {mb / dt:7.2f} {ratio:10.2f}")

        for index in indexes.values():
            index.match_lengths(["the"])  # the suffix arrays loaded before anything is timed
        lat = []
        for name, index in indexes.items():
            for text in texts:
                t = time.perf_counter()
                index.example(text, NS)
                lat.append(time.perf_counter() - t)
        lat_ms = np.array(lat) * 1e3
        print(f"\nlongest-match search per example and corpus, one at a time: median {np.median(lat_ms):.2f} ms, "
              f"p99 {np.percentile(lat_ms, 99):.2f} ms over {len(lat)} queries")
        t_new = time.perf_counter()
        for index in indexes.values():
            index.examples(texts, NS)  # as text_similarity asks them: a benchmark's texts together
        t_new = time.perf_counter() - t_new

        # the longest match from every word: the suffix search against infini-gram's find lookups (matching
        # statistics) and its byte-level creativity, same texts and index
        from simassets.core.corpus_index import index_text
        from simassets.core.measures.overlap import normalize_words

        some = [texts[i] for i in np.random.default_rng(1).choice(len(texts), size=min(200, len(texts)), replace=False)]
        brown = indexes["brown"]
        words = [normalize_words(x) for x in some]
        t = time.perf_counter()
        ours = brown.match_lengths_of(words)
        t_sx = time.perf_counter() - t
        t = time.perf_counter()
        looked = [brown.lookup_match_lengths(w) for w in words]
        t_ms = time.perf_counter() - t
        t = time.perf_counter()
        for x in some:
            brown.engine.creativity(list(index_text(x).encode()))
        t_cr = time.perf_counter() - t
        same = all((a == b).all() for a, b in zip(ours, looked))
        print(f"longest match from every word, {len(some)} texts vs brown ({sum(len(o) for o in ours)} words): "
              f"suffix search in memory {t_sx:.2f} s, matching statistics over find {t_ms:.2f} s "
              f"({t_ms / t_sx:.1f}x), infini-gram creativity (every byte) {t_cr:.2f} s ({t_cr / t_sx:.1f}x); "
              f"lengths identical: {same}")

        prefetching = CorpusIndex(tmp / "brown", prefetch=True)  # infini-gram's default engine settings
        t = time.perf_counter()
        same = all((prefetching.lookup_match_lengths(w) == o).all() for w, o in zip(words, ours))
        t_pf = time.perf_counter() - t
        print(f"the lookups with infini-gram's page prefetching (its default) {t_pf:.2f} s against {t_ms:.2f} s "
              f"without: {t_pf / t_ms:.1f}x, lengths identical: {same}")
        shuffled = [shuffled_words(x, i) for i, x in enumerate(some)]
        t = time.perf_counter()
        windows = [any(int(brown._find([x.encode() for x in w[i:i + CONTROL_N]])["cnt"]) > 0
                       for i in range(len(w) - CONTROL_N + 1)) for w in shuffled]
        t_windows = time.perf_counter() - t
        t = time.perf_counter()
        searched = [lengths.max(initial=0) >= CONTROL_N for lengths in brown.match_lengths_of(shuffled)]
        t_search = time.perf_counter() - t
        print(f"negative control ({CONTROL_N}-word match in word-shuffled texts): one find per {CONTROL_N}-word window "
              f"{t_windows:.2f} s, the suffix search's longest matches {t_search:.2f} s: {t_windows / t_search:.1f}x, "
              f"answers identical: {windows == searched}")

        t_old = time.perf_counter()
        rng = np.random.default_rng(0)
        for name, docs in corpora.items():
            pick = rng.choice(len(docs), size=min(args.sample, len(docs)), replace=False)
            sample = [docs[i][1] for i in sorted(pick)]
            overlap_measures(texts, build_indexes(sample, (13, 8)), ns=(13, 8))
        t_old = time.perf_counter() - t_old
        print(f"per-example contamination pass, {len(texts)} texts x {len(CORPORA)} corpora:\n"
              f"  whole-corpus index (longest match, coverage at {NS}): {t_new:.2f} s\n"
              f"  previous: 13/8-gram sets over a {args.sample}-document sample: {t_old:.2f} s\n"
              f"  ratio index / previous: {t_new / t_old:.2f}x (the index answers over the whole corpus, "
              f"{sum(len(d) for d in corpora.values())} documents instead of {args.sample * len(CORPORA)})")

        everything = [(f"{f.stem}/{i}", t) for f in sorted((data_root() / "corpora").glob("*.jsonl"))
                      for i, t in docs_of(f)]
        total_mb = sum(f.stat().st_size for f in (data_root() / "corpora").glob("*.jsonl")) / 2**20
        t = time.perf_counter()
        info = build_index(everything, tmp / "all")
        dt = time.perf_counter() - t
        print(f"\nindex over every corpus file of the shared data: {info.n_docs} documents, {total_mb:.1f} MB of "
              f"files, {info.text_bytes / 2**20:.1f} MB normalized text, {info.n_words:,} words: built in {dt:.1f} s "
              f"({total_mb / dt:.2f} MB/s); index {info.index_bytes / 2**20:.1f} MB = "
              f"{info.index_bytes / info.text_bytes:.2f}x the text")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
