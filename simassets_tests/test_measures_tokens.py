"""Token-distribution and hashed-n-gram measures: hand-computed divergences, bootstrap, stable hashing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from simassets.core.measures import hashed_ngrams as hn
from simassets.core.measures import tokens as tokens_module
from simassets.core.measures.tokens import (
    bootstrap_kl, js_divergence, kl_divergence, token_doc_counts, unigram_measures,
)
from simassets.core.paths import data_root

# "Hello, world!" -> hello , world ! | hello , / , world / world ! ; bucket ids of xxh64+splitmix64 mod 10,000
HELLO_FEATURES = ["hello", ",", "world", "!", "hello ,", ", world", "world !"]
HELLO_BUCKETS = [4659, 1893, 1471, 3096, 854, 5569, 9107]


def test_kl_hand_computed():
    # KL([.5,.5] || [.25,.75]) = .5 ln 2 + .5 ln(2/3) = .5 ln(4/3)
    assert kl_divergence(np.array([2, 2]), np.array([1, 3]), eps=0) == pytest.approx(0.5 * math.log(4 / 3))
    # eps is added to every bucket of both: [1,0]+1 -> [2/3,1/3], [0,1]+1 -> [1/3,2/3]; KL = ln(2)/3
    assert kl_divergence(np.array([1, 0]), np.array([0, 1]), eps=1.0) == pytest.approx(math.log(2) / 3)
    assert kl_divergence(np.array([1, 0]), np.array([0, 1]), eps=0) == math.inf
    assert kl_divergence(np.array([3, 5, 0]), np.array([3, 5, 0]), eps=1e-3) == pytest.approx(0, abs=1e-12)


def test_js_hand_computed_symmetric_bounded():
    p, q = np.array([2, 2]), np.array([1, 3])
    m = [0.375, 0.625]
    hand = 0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])) + \
        0.5 * (0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1]))
    assert js_divergence(p, q) == pytest.approx(hand)
    assert js_divergence(q, p) == pytest.approx(js_divergence(p, q))
    assert js_divergence(np.array([1, 0]), np.array([0, 1])) == pytest.approx(math.log(2))  # disjoint: ln 2
    assert js_divergence(np.array([4, 1, 7]), np.array([4, 1, 7])) == pytest.approx(0, abs=1e-12)
    rng = np.random.default_rng(1)
    for _ in range(20):
        a, b = rng.integers(0, 5, 8), rng.integers(0, 5, 8)
        if a.sum() and b.sum():
            assert 0 <= js_divergence(a, b) <= math.log(2) + 1e-12


def test_bad_counts_raise():
    with pytest.raises(ValueError, match="equal length"):
        kl_divergence(np.array([1, 2]), np.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"token_ids\[1\]"):
        token_doc_counts([np.array([0, 1]), np.array([5])], vocab_size=5)


def _docs(rng, probs, n_docs, length):
    return [rng.choice(len(probs), size=length, p=probs) for _ in range(n_docs)]


def test_unigram_measures_bootstrap_ci():
    rng = np.random.default_rng(0)
    corpus = _docs(rng, np.full(10, 0.1), 300, 50)
    bench = _docs(rng, np.array([0.3, 0.2] + [0.0625] * 8), 40, 50)
    out = unigram_measures(bench, corpus, vocab_size=12, eps=1e-3, n_boot=200, seed=7)
    counts_b = np.bincount(np.concatenate(bench), minlength=12)
    counts_c = np.bincount(np.concatenate(corpus), minlength=12)
    assert out["kl_estimator"] == {"estimator": "interpolated", "lambda": 0.01}
    assert out["kl"] == pytest.approx(kl_divergence(counts_b, counts_c, estimator="interpolated"))
    assert out["js"] == pytest.approx(js_divergence(counts_b, counts_c))
    assert out["kl_ci_low"] < out["kl"] < out["kl_ci_high"]
    assert out["kl_ci_high"] - out["kl_ci_low"] < 0.1
    assert (out["eps"], out["n_boot"], out["seed"], out["dim"]) == (1e-3, 200, 7, 12)
    again = unigram_measures(bench, corpus, vocab_size=12, eps=1e-3, n_boot=200, seed=7)
    assert (again["kl_ci_low"], again["kl_ci_high"]) == (out["kl_ci_low"], out["kl_ci_high"])
    additive = unigram_measures(bench, corpus, vocab_size=12, eps=1e-3, n_boot=0, estimator="additive")
    assert additive["kl"] == pytest.approx(kl_divergence(counts_b, counts_c, 1e-3))
    assert additive["kl_estimator"] == {"estimator": "additive", "eps": 1e-3}
    c = token_doc_counts(corpus, 12)
    assert np.array_equal(bootstrap_kl(counts_b, c, n_boot=5, seed=3), bootstrap_kl(counts_b, c, n_boot=5, seed=3))
    assert not np.array_equal(bootstrap_kl(counts_b, c, n_boot=5, seed=3), bootstrap_kl(counts_b, c, n_boot=5, seed=4))


def test_unigram_kl_real_tokenizer_orders_corpora():
    from simassets.core.measures.tokens import encode_texts
    from simassets.core.testing import gpt2_tokenizer

    root = data_root()
    tok = gpt2_tokenizer()
    read = lambda p, k, n: [json.loads(line)[k] for line in open(root / p, encoding="utf-8")][:n]  # noqa: E731
    bench = encode_texts(read("benchmarks/gauntlet/pubmed_qa_labeled.jsonl", "context", 30), tok)
    pubmed = encode_texts(read("corpora/pubmed_abstracts.jsonl", "text", 200), tok)
    c4 = encode_texts(read("corpora/c4_en.jsonl", "text", 200), tok)
    near = unigram_measures(bench, pubmed, len(tok), n_boot=0)
    far = unigram_measures(bench, c4, len(tok), n_boot=0)
    assert near["kl"] < far["kl"] and near["js"] < far["js"]
    assert math.isnan(near["kl_ci_low"])


def test_interpolated_and_yauney_estimators_hand_computed():
    p, q = np.array([3, 1, 0, 0]), np.array([0, 2, 5, 1])
    # interpolated: P = p / 4; Q = 0.99 q / 8 + 0.01 / 4
    P, Q = [0.75, 0.25, 0, 0], [0.99 * c / 8 + 0.0025 for c in (0, 2, 5, 1)]
    hand = sum(a * math.log(a / b) for a, b in zip(P, Q) if a > 0)
    assert kl_divergence(p, q, estimator="interpolated", lam=0.01) == pytest.approx(hand, rel=1e-12)
    # Yauney et al.'s smooth(normalize(x)): x / sum(x), + 1e-8 everywhere, / sum again; KL = sum rel_entr(P, Q)
    def smooth(x):
        x = [v / sum(x) + 1e-8 for v in x]
        return [v / sum(x) for v in x]

    P, Q = smooth([3, 1, 0, 0]), smooth([0, 2, 5, 1])
    hand = sum(a * math.log(a / b) for a, b in zip(P, Q))
    assert kl_divergence(p, q, estimator="yauney") == pytest.approx(hand, rel=1e-12)
    assert math.isfinite(kl_divergence(np.array([1, 0]), np.array([0, 1]), estimator="interpolated"))
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_divergence(p, q, estimator="laplace")
    with pytest.raises(ValueError, match="lambda"):
        kl_divergence(p, q, estimator="interpolated", lam=1.5)


def test_default_kl_settles_as_the_corpus_sample_grows():
    """Fixed benchmarks against nested C4 samples of 200, 500, 1,000 and 1,480 documents (GPT-2 tokenizer, the
    measures' text): the default estimator's successive changes shrink, and it moves less over the whole range
    than the additive pseudo-count (whose unseen-token probability eps / N shrinks with N) or Yauney's."""
    from simassets.core.testing import gpt2_tokenizer

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from kl_sample_size import kl_table

    table = kl_table(["arc_easy", "hellaswag", "xcopa_sw", "xcopa_it"], gpt2_tokenizer(), limit=30)
    uni = table[table["features"] == "unigram"]
    for b, g in uni.groupby("benchmark"):
        kl = {est: e.sort_values("docs")["kl"].to_numpy() for est, e in g.groupby("estimator")}
        steps = np.abs(np.diff(kl["interpolated"]))
        assert steps[2] < steps[1] < steps[0], (b, kl["interpolated"])
        drift = {est: abs(v[0] - v[-1]) for est, v in kl.items()}
        assert drift["interpolated"] < drift["additive"] and drift["interpolated"] < drift["yauney"], (b, drift)


def test_wordpunct_tokenizer_tricky_string():
    s = "Don't PANIC!!! e-mail: a.b@c.com, 3.14 ... naïve cafe\u0301 x_y —ok"
    expected = ["don", "'", "t", "panic", "!!!", "e", "-", "mail", ":", "a", ".", "b", "@", "c", ".", "com", ",",
                "3", ".", "14", "...", "naïve", "cafe\u0301", "x_y", "—", "ok"]
    assert hn.wordpunct_tokens(s) == expected
    nltk_tok = pytest.importorskip("nltk.tokenize")
    assert nltk_tok.WordPunctTokenizer().tokenize(s.lower()) == expected


def test_hashed_features_hard_coded_and_never_builtin_hash(monkeypatch):
    def no_hash(_obj):
        raise AssertionError("Python's hash() must not be used")

    for module in (hn, tokens_module):  # a module global shadows the builtin inside that module
        monkeypatch.setattr(module, "hash", no_hash, raising=False)
    assert hn.feature_strings("Hello, world!") == HELLO_FEATURES
    assert [hn.feature_hash(f.split(" ")) % 10_000 for f in HELLO_FEATURES] == HELLO_BUCKETS
    dc = hn.featurize(["Hello, world!", "", "world world"])
    assert dc.n_docs == 3 and dc.dim == 10_000
    assert sorted(dc.feature[dc.doc == 0].tolist()) == sorted(HELLO_BUCKETS)
    assert dc.n_features().tolist() == [7, 0, 3]  # "world world": 2 unigrams (one bucket, count 2) + 1 bigram
    assert sorted(dc.count[dc.doc == 2].tolist()) == [1, 2]


def test_hashed_features_same_in_another_process():
    code = ("from simassets.core.measures.hashed_ngrams import featurize; d = featurize(['Hello, world!']); "
            "print(sorted(d.feature.tolist()))")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == sorted(HELLO_BUCKETS)


def test_ngram_hashes_respect_document_boundaries():
    h, doc = hn.hash_token_lists([["a", "b"], ["c"], ["d", "e", "f"]])
    bi, bi_doc, start = hn.ngram_hashes(h, doc, 2)
    assert bi_doc.tolist() == [0, 2, 2] and start.tolist() == [0, 3, 4]
    assert int(bi[0]) == hn.feature_hash(["a", "b"]) and int(bi[2]) == hn.feature_hash(["e", "f"])


def test_importance_weight_sign_and_measures():
    corpus = ["the cat sat on the mat and the dog sat on the rug"] * 20 + ["a dog and a cat on a mat"] * 10
    bench = ["the dog sat on the mat", "quantum chromodynamics lattice gauge theory", ""]
    out = hn.hashed_ngram_measures(bench, corpus, n_boot=0)
    w, wf = out["log_weight"], out["log_weight_per_feature"]
    assert w[0] > w[1] and wf[0] > wf[1]
    assert wf[0] > 0 > wf[1]
    assert out["n_features"].tolist() == [11, 9, 0]
    assert w[2] == 0 and math.isnan(wf[2])
    assert wf[0] == pytest.approx(w[0] / 11)
    assert out["kl"] > 0 and 0 < out["js"] < math.log(2)
    same = hn.hashed_ngram_measures(corpus, corpus, n_boot=0)
    # the interpolated corpus side keeps lambda = 1% on the uniform: identical texts score at most -ln(0.99)
    assert 0 < same["kl"] <= -math.log(0.99) and same["js"] == pytest.approx(0, abs=1e-12)
    same = hn.hashed_ngram_measures(corpus, corpus, n_boot=0, estimator="additive")
    assert same["kl"] == pytest.approx(0, abs=1e-12)


def test_a_prefeaturized_corpus_gives_the_same_measures():
    """The asset layer hashes a corpus once and reuses it for every benchmark: same numbers as from texts."""
    from simassets.core.measures.overlap import build_indexes, overlap_measures

    corpus = ["the cat sat on the mat and the dog sat on the rug today"] * 5 + ["a dog and a cat on a mat"] * 3
    bench = ["the dog sat on the mat and the dog sat on the rug today", "lattice gauge theory"]
    a = hn.hashed_ngram_measures(bench, corpus, n_boot=30, seed=4)
    b = hn.hashed_ngram_measures(bench, hn.featurize(corpus), n_boot=30, seed=4)
    assert {k for k in a if not isinstance(a[k], np.ndarray) and a[k] != b[k]} == set()
    np.testing.assert_array_equal(a["log_weight"], b["log_weight"])
    with pytest.raises(ValueError, match="buckets"):
        hn.hashed_ngram_measures(bench, hn.featurize(corpus, num_buckets=64))
    ids = [f"d{i}" for i in range(len(corpus))]
    direct = overlap_measures(bench, corpus, ns=(8,), corpus_ids=ids)[8]
    indexed = overlap_measures(bench, build_indexes(corpus, (8, 13), ids), ns=(8,))[8]
    assert indexed["flagged"].tolist() == direct["flagged"].tolist() == [True, False]
    assert indexed["evidence_doc_id"] == direct["evidence_doc_id"] == ["d0", None]
    with pytest.raises(ValueError, match="no corpus index"):
        overlap_measures(bench, build_indexes(corpus, (13,)), ns=(8,))


def test_catalog_chooses_the_kl_estimator_per_measure(tmp_path):
    from simassets.core.catalog import CatalogError, load_catalog
    from simassets.core.paths import REPO_ROOT

    base = (REPO_ROOT / "data" / "catalog.toml").read_text(encoding="utf-8")
    cat = load_catalog(REPO_ROOT / "data" / "catalog.toml")
    assert cat.kl_options("unigram_kl") == {"estimator": "interpolated", "lam": 0.01, "eps": 1e-3}
    f = tmp_path / "catalog.toml"
    f.write_text(base + '\n[measures.unigram_kl]\nestimator = "yauney"\n[measures.hashed_ngram_kl]\nlambda = 0.05\n')
    cat = load_catalog(f)
    assert cat.kl_options("unigram_kl")["estimator"] == "yauney"
    assert cat.kl_options("hashed_ngram_kl") == {"estimator": "interpolated", "lam": 0.05, "eps": 1e-3}
    for bad, msg in (('[measures.unigram_kl]\nestimator = "laplace"\n', "estimator"),
                     ("[measures.unigram_kl]\nlambda = 2.0\n", "lambda"),
                     ("[measures.max_cosine]\nestimator = \"yauney\"\n", "has no options")):
        f.write_text(base + "\n" + bad)
        with pytest.raises(CatalogError, match=msg) as err:
            load_catalog(f)
        assert str(f) in str(err.value)


def test_bootstrap_kl_restricted_to_the_benchmark_types_equals_the_full_count_vectors():
    from simassets.core.measures.tokens import _resample_weights, bootstrap_kl_per_resample

    rng = np.random.default_rng(5)
    # 60 documents over 500 types, some empty; the benchmark uses 40 types, three of them absent from the corpus
    corpus = [rng.integers(0, 480, size=n) for n in rng.integers(0, 80, size=60)]
    c = token_doc_counts(corpus, 500)
    bench = np.bincount(np.concatenate([rng.integers(0, 37, size=300), [490, 495, 499]]), minlength=500)
    fast = bootstrap_kl(bench, c, n_boot=300, seed=11, estimator="interpolated", lam=0.05)
    ref = bootstrap_kl_per_resample(bench, c, _resample_weights(60, 300, 11), "interpolated", lam=0.05)
    assert fast.shape == (300,) and np.all(np.isfinite(fast)) and fast.std() > 0
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=0)
    # the other estimators take the full vectors, with the same resamples
    add = bootstrap_kl(bench, c, n_boot=50, seed=11, estimator="additive")
    assert np.array_equal(add, bootstrap_kl_per_resample(bench, c, _resample_weights(60, 50, 11), "additive"))
    with pytest.raises(ValueError, match="lambda"):
        bootstrap_kl(bench, c, n_boot=5, estimator="interpolated", lam=1.0)
    with pytest.raises(ValueError, match="benchmark counts sum to zero"):
        bootstrap_kl(np.zeros(500), c, n_boot=5, estimator="interpolated")
