"""gzip NCD / alignment and n-gram overlap (contamination), including the PubMedQA positive control."""

from __future__ import annotations

import json
import random
import string

import numpy as np
import pytest

from simassets.core.measures.compression import GzipSizer, gzip_alignment, ncd
from simassets.core.measures.overlap import NgramIndex, ngram_overlap, normalize_words, overlap_measures
from simassets.core.paths import data_root

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def _random_text(seed: int, n_chars: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(n_chars))


def _sentence(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n_words))


def test_ncd_identical_vs_unrelated():
    text = "The mitochondria is the powerhouse of the cell; it produces ATP through respiration. " * 6
    assert ncd(text, text) < 0.1
    a, b = _random_text(1, 2000), _random_text(2, 2000)
    assert ncd(a, b) > 0.95
    sizer = GzipSizer()
    assert sizer(a) == sizer.size(a) and a in sizer._cache  # C(x) is cached per text


def test_gzip_alignment_pairs_reproducible_and_ordered():
    corpus = [_sentence(i, 60) for i in range(30)]
    near = [c[:200] for c in corpus[:5]]
    far = [_random_text(100 + i, 200) for i in range(5)]
    out = gzip_alignment(near, corpus, n_pairs=12, seed=3)
    assert out["docs_per_example"] == 3 and out["n_pairs"] == 15  # ceil(12 / 5) docs per example
    assert out["gzip_alignment"] == pytest.approx(1 - out["per_example_ncd"].mean())
    again = gzip_alignment(near, corpus, n_pairs=12, seed=3)
    assert np.array_equal(again["per_example_ncd"], out["per_example_ncd"])
    assert (out["compresslevel"], out["separator"]) == (9, " ")
    assert out["gzip_alignment"] > gzip_alignment(far, corpus, n_pairs=12, seed=3)["gzip_alignment"]
    with pytest.raises(ValueError, match="needs examples"):
        gzip_alignment([], corpus)


def test_gzip_alignment_fast_path_equals_gzip_of_the_concatenation():
    """The copied-deflate-state sizes are byte-for-byte gzip.compress(doc + " " + example)."""
    import gzip

    corpus = [_sentence(i, 40 + 13 * i) for i in range(7)] + ["", "ünïcode ✓ " * 50]
    bench = [_sentence(50 + i, 15) for i in range(4)] + [corpus[2][:120], "x"]

    def c(s: str) -> int:
        return len(gzip.compress(s.encode("utf-8"), compresslevel=9, mtime=0))

    def ref(doc: str, x: str) -> float:  # the module docstring's definition, written out
        return (c(doc + " " + x) - min(c(doc), c(x))) / max(c(doc), c(x))

    out = gzip_alignment(bench, corpus, n_pairs=len(bench) * len(corpus), seed=0)
    assert out["docs_per_example"] == len(corpus)  # each example is paired with every document once
    expected = np.array([np.mean([ref(d, x) for d in corpus]) for x in bench])
    np.testing.assert_allclose(out["per_example_ncd"], expected, rtol=0, atol=1e-15)
    assert out["per_example_ncd"][4] < out["per_example_ncd"][:4].min()  # the copied passage is the closest
    assert ncd(corpus[3], bench[0]) == pytest.approx(ref(corpus[3], bench[0]))


def test_normalize_words():
    words = normalize_words("  Hello,\tWORLD!!  don't\n\nU.S. cell-death ")
    assert words == ["hello", "world", "dont", "us", "celldeath"]


def test_overlap_copied_example_flagged_with_evidence():
    corpus = [_sentence(10 + i, 80) for i in range(6)]
    copied = " ".join(corpus[4].split()[20:40])  # 20 words of doc-4
    corpus[5] = corpus[5] + " " + copied  # also in a later doc: evidence names the first one
    partial = " ".join(corpus[2].split()[:15]) + " " + " ".join(["zzz"] * 5)  # 20 words, first 15 shared
    unrelated = "Completely different words about photosynthesis in green plants and their leaves today"
    short = "too short for thirteen words"
    ids = [f"doc-{i}" for i in range(6)]
    out = ngram_overlap([copied.upper() + "!", unrelated, short, partial], NgramIndex.build(corpus, 13, ids))
    assert out["flagged"].tolist() == [True, False, False, True]
    assert out["evidence_doc_id"] == ["doc-4", None, None, "doc-2"]
    assert out["evidence_ngram"][0] == " ".join(corpus[4].split()[20:33])
    assert out["evidence_ngram"][1] is None
    assert out["n_ngrams"].tolist() == [8, 0, 0, 8] and out["n_short"] == 2
    assert out["overlap_fraction"].tolist() == [1.0, 0.0, 0.0, pytest.approx(3 / 8)]
    assert out["contaminated_fraction"] == 0.5


def test_overlap_empty_corpus_and_default_ids():
    res = overlap_measures(["one two three four five six seven eight nine"], [], ns=(8,))
    assert res[8]["flagged"].tolist() == [False] and res[8]["n_ngrams"].tolist() == [2]
    res = overlap_measures(["a b c d e f g h"], ["x a b c d e f g h y"], ns=(8, 13))
    assert res[8]["evidence_doc_id"] == ["0"] and res[13]["n_short"] == 1
    with pytest.raises(ValueError, match="doc_ids"):
        NgramIndex.build(["a"], 8, ["x", "y"])


def _read(rel: str, n: int) -> list[dict]:
    path = data_root() / rel
    if not path.exists():
        pytest.skip(f"data file {path} not present")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh)]


def test_positive_control_pubmed_qa_against_pubmed_abstracts():
    docs = _read("corpora/pubmed_abstracts.jsonl", 1000)
    pubmed_qa = [r["context"] for r in _read("benchmarks/gauntlet/pubmed_qa_labeled.jsonl", 50)]
    arc = [r["query"] + " " + r["choices"][r["gold"]] for r in _read("benchmarks/gauntlet/arc_easy.jsonl", 50)]
    corpus, ids = [d["text"] for d in docs], [d["id"] for d in docs]
    pos = overlap_measures(pubmed_qa, corpus, corpus_ids=ids)
    assert pos[13]["contaminated_fraction"] >= 0.9 and pos[8]["contaminated_fraction"] >= 0.9
    assert pos[13]["evidence_doc_id"][0] == "pubmed-0000"
    assert all(e is None or len(e.split()) == 13 for e in pos[13]["evidence_ngram"])
    neg = overlap_measures(arc, corpus, corpus_ids=ids)
    assert neg[13]["contaminated_fraction"] <= 0.04
