"""Whole-corpus contamination on hand-built corpora: longest match, counts, coverage and the evidence document,
checked against values worked out by hand; the gain with its bootstrap CI; the index cache; the PubMedQA positive
and word-shuffled negative controls against the whole PubMed file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from simassets.core.corpus_index import (CorpusIndex, IndexError_, build_index, contamination_gain, index_text,
                                         shuffled_words)
from simassets.core.measures.contamination import contamination_rows, gain_rows
from simassets.core.measures.overlap import normalize_words
from simassets.core.paths import data_root

DOCS = [("d1", "The cat sat on the mat."), ("d2", "A dog ran far away, said the cat."), ("d3", "the cat ran")]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> CorpusIndex:
    folder = tmp_path_factory.mktemp("index") / "idx"
    info = build_index(DOCS, folder)
    assert (info.n_docs, info.n_words) == (3, 17)
    assert info.text_bytes == sum(len(index_text(t)) for _, t in DOCS)
    return CorpusIndex(folder)


def test_longest_match_counts_and_evidence(index):
    # the cat ran far away: "the cat ran" (d3, 3 words) and "ran far away" (d2, 3 words) are the longest
    m = index.example("The cat ran far away!", (2, 3, 4))
    assert m.match_lengths.tolist() == [3, 2, 3, 2, 1]
    assert (m.longest, m.evidence, m.evidence_doc_id, m.longest_count) == (3, "the cat ran", "d3", 1)
    assert m.coverage == {2: 1.0, 3: 1.0, 4: 0.0}
    # a 5-word match inside d1; "today" is in no document
    m = index.example("cat sat on the mat today", (2, 5, 6))
    assert m.match_lengths.tolist() == [5, 4, 3, 2, 1, 0]
    assert (m.longest, m.evidence_doc_id, m.longest_count) == (5, "d1", 1)
    assert m.coverage == {2: pytest.approx(5 / 6), 5: pytest.approx(5 / 6), 6: 0.0}
    # whole words only: "ca" is a prefix of "cat" and "catsat" no word at all
    assert index.example("the ca").match_lengths.tolist() == [1, 0]
    assert index.example("catsat").longest == 0
    # counts are over the whole corpus: "the" 4 times, "the cat" 3 times (d1 has "the mat" too)
    assert index.count(["the"]) == 4 and index.count(["the", "cat"]) == 3 and index.count(["cat", "sat", "on"]) == 1
    assert index.doc_with(["dog"]) == "d2" and index.doc_with(["zebra"]) is None
    empty = index.example("")
    assert (empty.n_words, empty.longest, empty.evidence_doc_id) == (0, 0, None)


def test_has_match_agrees_with_the_matching_statistics(index):
    """The negative control's shortcut (one lookup per n-word window) answers max(L) >= n exactly, for every n;
    an engine with infini-gram's page prefetching, and one that asks every lookup anew (no memo), return the same
    lengths; the memo answers the repeated sequences and starts over at its limit."""
    prefetching = CorpusIndex(index.folder, prefetch=True, memo=False)
    fresh = CorpusIndex(index.folder)
    fresh.MEMO_LIMIT = 5
    texts = ["The cat ran far away!", "cat sat on the mat today", "a dog ran far away said the cat ran", "", "zebra",
             "the cat ran far away"]
    for text in texts:
        words = text.lower().replace("!", "").split()
        lengths = index.match_lengths(words)
        assert prefetching.match_lengths(words).tolist() == lengths.tolist()
        assert fresh.match_lengths(words).tolist() == lengths.tolist() and len(fresh._memo) <= 5
        for n in range(1, 10):
            assert index.has_match(words, n) == (lengths.max(initial=0) >= n), (text, n)
    assert prefetching._memo is None and len(index._memo) > 5  # the shared index kept every sequence it was asked
    memo, words = CorpusIndex(index.folder), "the cat ran far away".split()
    lengths = memo.match_lengths(words)
    assert lengths.tolist() == [3, 2, 3, 2, 1]
    calls = []
    memo._find = lambda words: calls.append(words) or {"cnt": 0}  # asked again: every answer comes from the memo
    assert memo.match_lengths(words).tolist() == lengths.tolist() and not calls


def test_has_match_probes_answer_exactly_with_fewer_lookups(tmp_path):
    """has_match's probe spans never change an answer: on texts spliced from corpus runs and random words, for every
    window length and probe length it equals max(matching statistics) >= n; on word-shuffled text it asks far fewer
    lookups than there are windows."""
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(12)]
    docs = [(f"d{i}", " ".join(rng.choice(vocab, size=int(rng.integers(5, 60))))) for i in range(40)]
    build_index(docs, tmp_path / "idx")
    corpus_words = " ".join(t for _, t in docs).split()
    texts = []
    for _ in range(60):  # runs copied from the corpus (matches of every length) between random words (zz in none)
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            start, run = int(rng.integers(0, len(corpus_words) - 30)), int(rng.integers(0, 30))
            parts += corpus_words[start:start + run] + list(rng.choice(vocab + ["zz"], size=int(rng.integers(0, 4))))
        texts.append(parts)
    texts += [["zz"], ["zz", "zz", "w1"], []]
    reference = CorpusIndex(tmp_path / "idx")
    lengths = [reference.match_lengths(words) for words in texts]
    assert {int(L.max(initial=0)) for L in lengths} >= {0, 3, 10, 20}
    for probe in (1, 2, 4, 6):
        probing = CorpusIndex(tmp_path / "idx")
        probing.PROBE = probe
        for words, L in zip(texts, lengths):
            for n in range(1, 16):
                assert probing.has_match(words, n) == (L.max(initial=0) >= n), (probe, n, words)
    # word-shuffled English against an index of English: the 4-word probes fail, the windows are never asked
    text = ("the committee met on tuesday to decide whether the new road should pass north of the river or south of "
            "the old mill and after a long debate the members agreed to ask the town for more time ") * 3
    english = CorpusIndex(build_index([("e", text)], tmp_path / "english") and tmp_path / "english", memo=False)
    asked = []
    find = english._find
    english._find = lambda words: asked.append(words) or find(words)
    shuffled = shuffled_words(text, 7)
    assert not english.has_match(shuffled, 13) and english.has_match(normalize_words(text), 13)
    windows = len(shuffled) - 13 + 1
    assert len(asked) < windows / 4, (len(asked), windows)


def test_rows_per_example_and_per_benchmark(index):
    texts = ["The cat sat on the mat", "a dog ran far away said the cat ran", "nothing in the corpus at all"]
    ex, ds = contamination_rows(texts, np.array([10, 11, 12]), index, seed=1)
    longest = ex[ex["measure"] == "longest_match"].set_index("example_id")
    assert longest["value"].tolist() == [6, 8, 1]  # d2 whole (8 words); then "ran" after its last word
    assert longest.loc[10, "evidence"] == "d1: the cat sat on the mat"
    frac = ds.set_index("measure")["value"]
    assert frac["contaminated_fraction_8"] == pytest.approx(1 / 3) and frac["longest_match"] == pytest.approx(5)
    assert frac["contaminated_fraction_13"] == 0
    cov8 = ex[ex["measure"] == "match_coverage_8"]["value"].tolist()
    assert cov8 == [0.0, pytest.approx(8 / 9), 0.0]
    params = json.loads(ds["params"].iloc[0])
    assert params["corpus_docs"] == 3 and "shuffled_control_fraction_13" in params


def test_gain_and_its_interval():
    g = contamination_gain([1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0], n_boot=2000, seed=0)
    assert (g["n_contaminated"], g["n_clean"]) == (3, 3)
    assert g["gain"] == pytest.approx(2 / 3 - 1 / 3) and g["ci_low"] < g["gain"] < g["ci_high"]
    assert np.isnan(contamination_gain([1, 0], [0, 0])["gain"])
    rows = gain_rows(pd.Series([1.0, 0.0, 1.0]), pd.Series([20, 0, 9]), n_boot=100, seed=0)
    by = {r["measure"]: r for r in rows}
    assert by["contamination_gain_8"]["value"] == pytest.approx(1.0) and by["contamination_gain_8"]["warning"]
    assert np.isnan(by["contamination_gain_25"]["value"])


def test_a_damaged_or_foreign_index_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(IndexError_, match="not a simassets corpus index"):
        CorpusIndex(tmp_path / "junk")
    with pytest.raises(IndexError_, match="no documents"):
        build_index([], tmp_path / "none")
    assert not (tmp_path / "none").exists() and not list(tmp_path.glob(".none.*"))


PUBMED = data_root() / "corpora" / "pubmed_abstracts.jsonl"
PUBMED_QA = data_root() / "benchmarks" / "gauntlet" / "pubmed_qa_labeled.jsonl"


@pytest.mark.skipif(not (PUBMED.is_file() and PUBMED_QA.is_file()), reason="shared data not present")
def test_pubmed_controls_against_the_whole_file(tmp_path):
    """Positive control: PubMedQA items are PubMed abstracts, so >= 90 % match >= 13 words in the whole PubMed
    file; negative control: the same items with their words shuffled stay <= 2 %."""
    docs = [(str(r.get("id", i)), r["text"]) for i, r in enumerate(map(json.loads, PUBMED.open()))]
    index = CorpusIndex(tmp_path / "pubmed") if build_index(docs, tmp_path / "pubmed") else None
    items = [json.loads(line) for line in PUBMED_QA.open()][:60]
    texts = [" ".join(str(v) for k, v in it.items() if isinstance(v, str)) for it in items]
    hits = np.mean([index.example(t, (13,)).longest >= 13 for t in texts])
    shuffled = np.mean([index.match_lengths(shuffled_words(t, i)).max(initial=0) >= 13 for i, t in enumerate(texts)])
    assert hits >= 0.9 and shuffled <= 0.02, (hits, shuffled)
