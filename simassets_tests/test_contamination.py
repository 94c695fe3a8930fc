"""Whole-corpus contamination on hand-built corpora: longest match, counts, coverage and the evidence document,
checked against values worked out by hand; the gain with its bootstrap CI; the index cache; the PubMedQA positive
and word-shuffled negative controls against the whole PubMed file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from simassets.core.corpus_index import (SEP, CorpusIndex, IndexError_, _Suffixes, build_index, contamination_gain,
                                         index_text, shuffled_words)
from simassets.core.measures.contamination import contamination_rows, gain_rows
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


def test_suffix_search_equals_the_lookups(index):
    """The in-memory suffix search gives the matching statistics that infini-gram's find lookups give, one text at
    a time or many together, with the engine's page prefetching on or off."""
    prefetching = CorpusIndex(index.folder, prefetch=True)
    texts = ["The cat ran far away!", "cat sat on the mat today", "a dog ran far away said the cat ran", "", "zebra",
             "the cat ran far away", "the ca", "mat"]
    words = [text.lower().replace("!", "").split() for text in texts]
    together = index.match_lengths_of(words)
    for w, lengths in zip(words, together):
        assert index.match_lengths(w).tolist() == lengths.tolist() == index.lookup_match_lengths(w).tolist()
        assert prefetching.lookup_match_lengths(w).tolist() == lengths.tolist()
    assert together[0].tolist() == [3, 2, 3, 2, 1] and index.match_lengths_of([]) == []


@pytest.mark.parametrize("cap", [256, 4])
def test_suffix_search_on_spliced_texts(tmp_path, cap):
    """On texts spliced from corpus runs of every length (up to 30 words) and random words, with words of several
    bytes (and a few in no document), the suffix search equals the lookups word for word; a cap of 4 bytes sends
    every query through the repeated, longer searches."""
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(12)] + ["ab", "abc", "b", "é", "zz9"]
    docs = [(f"d{i}", " ".join(rng.choice(vocab, size=int(rng.integers(5, 60))))) for i in range(40)]
    build_index(docs, tmp_path / "idx")
    corpus_words = " ".join(t for _, t in docs).split()
    texts = []
    for _ in range(60):
        parts = []
        for _ in range(int(rng.integers(1, 4))):
            start, run = int(rng.integers(0, len(corpus_words) - 30)), int(rng.integers(0, 30))
            gap = rng.choice(vocab + ["zz", "a"], size=int(rng.integers(0, 4)))  # zz, a: in no document
            parts += corpus_words[start:start + run] + list(gap)
        texts.append(parts)
    texts += [["zz"], ["zz", "zz", "w1"], [], ["a"]]
    suffixes = _Suffixes(tmp_path / "idx")
    suffixes.CAP = cap
    got = suffixes.match_lengths(texts)
    expected = [CorpusIndex(tmp_path / "idx").lookup_match_lengths(words) for words in texts]
    assert {int(L.max(initial=0)) for L in expected} >= {0, 3, 10, 20}
    for words, a, b in zip(texts, got, expected):
        assert a.tolist() == b.tolist(), words


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8])
def test_suffix_array_pointers_of_every_width(tmp_path, width):
    """The suffix array is read whatever the pointer width (infini-gram picks the fewest bytes that hold the text's
    length; 4 and 8 are read without a copy) and searched the same way."""
    text = SEP + b" the cat sat on the mat " + SEP + b" the cat ran "
    order = sorted(range(len(text)), key=lambda i: text[i:])
    (tmp_path / "tokenized.0").write_bytes(text)
    (tmp_path / "table.0").write_bytes(b"".join(i.to_bytes(width, "little") for i in order))
    suffixes = _Suffixes(tmp_path)
    assert suffixes.sa.tolist() == order
    got = suffixes.match_lengths([["the", "cat", "ran"], ["cat", "sat", "on", "the", "mat", "today"]])
    assert [lengths.tolist() for lengths in got] == [[3, 2, 1], [5, 4, 3, 2, 1, 0]]


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


def test_an_undefined_gain_with_its_warning_passes_the_range_check_and_an_unexplained_nan_does_not():
    """A gain with no contaminated example is NaN and says why: the check passes it; a bare NaN fails."""
    import pandas as pd

    from simassets.core.computation import MEASURE_RANGES
    from simassets.core.measures import contamination
    from simassets.core.schema import DATASET_SIMILARITY
    from simassets.defs.factory import _check_outcome

    rows = contamination.gain_rows(pd.Series([1.0, 0.0, 1.0]), pd.Series([0.0, 2.0, 5.0]), n_boot=50, seed=0)
    frame = pd.DataFrame(rows)
    assert frame["value"].isna().all() and frame["warning"].str.startswith("0 contaminated vs 3 clean").all()
    # (the computation is only read by the non-empty check)
    assert _check_outcome(MEASURE_RANGES, {DATASET_SIMILARITY: frame}, None) is None
    frame.loc[0, "warning"] = None
    assert _check_outcome(MEASURE_RANGES, {DATASET_SIMILARITY: frame}, None) == {"nan_dataset_values": 1}
