"""Unlearning by gradient ascent with a retain bound and the shuffled-text stopping rule; attribution maths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from simassets.core import unlearning as U  # noqa: E402
from simassets.core.training import BatchStream, TrainConfig, Trainer, fresh_copy, pack_texts  # noqa: E402
from simassets_tests.test_training import A, B, cyclic, tiny  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module

TARGET = [cyclic(A, i) for i in range(4)]
RETAIN = [cyclic(B, i) for i in range(4)]


def _learned(tiny, texts: list[str], steps: int = 40):
    model, tok = tiny
    cfg = TrainConfig(lr=1e-2, seq_len=32, batch_size=4, seed=0)
    blocks = pack_texts(tok, texts, 32, seed=0)
    trainer, stream = Trainer(fresh_copy(model), cfg), BatchStream(blocks.shape[0], 4, 0)
    for _ in range(steps):
        trainer.step(blocks[stream.next()])
    return trainer.finished_model(), tok


@pytest.fixture(scope="module")
def knowing(tiny):
    """The tiny model after learning both the target and the retain texts (so it knows the target's order)."""
    return _learned(tiny, TARGET + RETAIN)


def _cfg(lr: float, max_steps: int, **kw) -> U.UnlearnConfig:
    return U.UnlearnConfig(train=TrainConfig(lr=lr, seq_len=32, batch_size=4, seed=0), max_steps=max_steps,
                           eval_blocks=4, retain_tolerance=0.05, max_retain_steps=3, **kw)


def test_shuffle_chunks_permutes_chunks_of_5_to_15_words():
    words = [f"w{i}" for i in range(200)]
    out = U.shuffle_chunks(" ".join(words), seed=1).split()
    assert sorted(out) == sorted(words) and out != words
    idx = [int(w[1:]) for w in out]
    runs, start = [], 0  # maximal runs of consecutive words: a chunk, or chunks that stayed neighbours
    for k in range(1, len(idx) + 1):
        if k == len(idx) or idx[k] != idx[k - 1] + 1:
            runs.append(idx[start:k])
            start = k
    inner = [r for r in runs if r[-1] != 199]  # the last chunk of the text may be cut short
    assert all(5 <= len(r) for r in inner)
    assert U.shuffle_chunks(" ".join(words), seed=1).split() == out
    assert U.shuffle_chunks(" ".join(words), seed=2).split() != out
    # line breaks and spacing travel with their words; a short text is never returned unchanged
    text = "First line of text\nsecond  line here.\n\nThird paragraph with a few more words in it"
    shuffled = U.shuffle_chunks(text, seed=0)
    assert shuffled != text and sorted(shuffled.split()) == sorted(text.split())
    assert shuffled.count("\n") == text.count("\n") and "  " in shuffled


def test_shuffled_rule_fires_once_the_target_is_unlearned(knowing):
    model, tok = knowing
    res = U.unlearn(model, tok, TARGET, RETAIN, _cfg(lr=1e-2, max_steps=15))
    c = pd.DataFrame(res.curve)
    assert c.loc[0, "target_loss"] < c.loc[0, "shuffled_loss"] - 0.3  # the model knows the text's order
    assert res.stop_rule == U.STOP_SHUFFLED and 1 <= res.ascent_steps < 15
    assert c["target_loss"].iloc[-1] > c["shuffled_loss"].iloc[-1]
    assert (c["target_loss"].iloc[:-1] <= c["shuffled_loss"].iloc[:-1]).all()  # it stopped at the first crossing
    assert len(c) == res.ascent_steps + 1 and c["retain_steps"].sum() == res.retain_steps


def test_target_loss_rises_and_retain_stays_within_its_bound(knowing):
    model, tok = knowing
    res = U.unlearn(model, tok, TARGET, RETAIN, _cfg(lr=3e-3, max_steps=3))
    c = pd.DataFrame(res.curve)
    assert res.stop_rule in (U.STOP_BUDGET, U.STOP_SHUFFLED)
    assert c["target_loss"].iloc[-1] > c["target_loss"].iloc[0] + 0.5
    assert res.retain_bound == pytest.approx(c.loc[0, "retain_loss"] * 1.05)
    assert (c["retain_loss"] <= res.retain_bound + 1e-9).all()
    # the unlearned model is a plain model whose own target loss matches the curve's last point
    target = pack_texts(tok, [TARGET[i] for i in U.seeded_order(TARGET, 0)], 32, seed=None)[:4]
    from simassets.core.training import mean_loss
    assert mean_loss(res.model, target) == pytest.approx(c["target_loss"].iloc[-1], rel=1e-5)


def test_retain_rule(knowing):
    model, tok = knowing
    res = U.unlearn(model, tok, TARGET, RETAIN, U.UnlearnConfig(
        train=TrainConfig(lr=5e-2, seq_len=32, batch_size=4, seed=0), max_steps=5, eval_blocks=4,
        retain_tolerance=0.0, max_retain_steps=0))
    assert res.stop_rule == U.STOP_RETAIN and res.curve[-1]["retain_loss"] > res.retain_bound


def test_start_rule_when_the_model_prefers_the_shuffled_text(tiny):
    # a model trained on the shuffled versions knows them better than the originals: nothing to unlearn
    model, tok = _learned(tiny, [U.shuffle_chunks(t, 0) for t in TARGET] + RETAIN, steps=30)
    res = U.unlearn(model, tok, TARGET, RETAIN, _cfg(lr=1e-2, max_steps=5))
    assert res.curve[0]["target_loss"] > res.curve[0]["shuffled_loss"]
    assert res.stop_rule == U.STOP_AT_START and res.ascent_steps == 0 and len(res.curve) == 1


def test_unlearning_is_deterministic_for_a_seed(knowing):
    model, tok = knowing
    a = U.unlearn(model, tok, TARGET, RETAIN, _cfg(lr=3e-3, max_steps=2))
    b = U.unlearn(model, tok, TARGET, RETAIN, _cfg(lr=3e-3, max_steps=2))
    strip = lambda r: [{k: v for k, v in p.items() if k != "seconds"} for p in r.curve]  # noqa: E731
    assert strip(a) == strip(b) and a.stop_rule == b.stop_rule
    assert torch.equal(a.model.get_input_embeddings().weight, b.model.get_input_embeddings().weight)


def test_retain_drops_target_documents(knowing):
    model, tok = knowing
    res = U.unlearn(model, tok, TARGET, RETAIN + TARGET, _cfg(lr=3e-3, max_steps=0))
    only = U.unlearn(model, tok, TARGET, RETAIN, _cfg(lr=3e-3, max_steps=0))
    assert res.retain_blocks == only.retain_blocks and res.curve[0]["retain_loss"] == only.curve[0]["retain_loss"]
    assert res.stop_rule == U.STOP_BUDGET and res.ascent_steps == 0


# ------------------------------------------------------------------ attribution maths


def test_benchmark_delta_by_hand():
    d = U.benchmark_delta([1, 1, 0, 0], [1, 0, 0, 0], random_baseline=0.5)
    assert d["base_score"] == pytest.approx(0.0) and d["unlearned_score"] == pytest.approx(-50.0)
    assert d["delta"] == pytest.approx(-50.0)
    # paired differences (0, -1, 0, 0): sd = 0.5, se = 0.25, times 100 / (1 - 0.5)
    assert d["delta_stderr"] == pytest.approx(50.0)
    assert d["base_stderr"] == pytest.approx(200 * np.sqrt(1 / 3) / 2)
    with pytest.raises(ValueError, match="paired"):
        U.benchmark_delta([1, 0], [1], 0.0)


def test_category_deltas_and_high_impact():
    rows = pd.DataFrame({"benchmark": ["a", "b", "c"], "category": ["wk", "wk", "mu"], "n": [10, 10, 10],
                         "base_acc": [.5, .5, .5], "unlearned_acc": [.4, .2, .5], "base_score": [10., 20., 0.],
                         "base_stderr": [3., 4., 1.], "unlearned_score": [0., 0., 0.], "unlearned_stderr": [3., 4., 1.],
                         "delta": [-10., -20., 0.], "delta_stderr": [3., 4., 1.]})
    cat = U.category_deltas(rows).set_index("category")
    assert cat.loc["wk", "delta"] == -15.0 and cat.loc["wk", "delta_stderr"] == pytest.approx(2.5)  # sqrt(9+16)/2
    assert cat.loc["wk", "n"] == 20 and cat.loc["wk", "n_benchmarks"] == 2
    impact = pd.DataFrame({"corpus": ["x", "y", "z"], "category": ["wk"] * 3, "delta": [-15., -6., -8.],
                           "delta_stderr": [2.5, 4., 1.]})
    hi = U.high_impact(impact).set_index("corpus")
    assert hi["rank"].to_dict() == {"x": 1, "z": 2, "y": 3}
    assert hi["high_impact"].to_dict() == {"x": True, "z": True, "y": False}  # y: -6 is within 2 se


def test_relationships_thresholds():
    a = np.array([1., 2., 3., 4.])
    impact = pd.DataFrame({"a": a, "b": 2 * a, "c": -a, "d": [1., -1., -1., 1.], "e": [0., 0., 0., 0.]})
    rel = U.corpus_relationships(impact).set_index(["corpus_a", "corpus_b"])["relation"].to_dict()
    assert rel[("a", "b")] == "correlated" and rel[("a", "c")] == "complementary"
    assert rel[("a", "d")] == "orthogonal" and rel[("a", "e")] == "undefined"
    assert [U.relation_of(r) for r in (0.4, 0.3, -0.25, -0.4, 0.2)] == ["correlated", "weak", "weak", "complementary", "orthogonal"]


def test_attribution_vs_similarity_orientation():
    attr = pd.DataFrame({"model": "m", "corpus": ["c1"] * 5 + ["c2"] * 5, "benchmark": [f"b{i}" for i in range(5)] * 2,
                         "delta": [-1., -2., -3., -4., -5., 0., -1., -1., -2., -3.]})
    sim = attr.rename(columns={"delta": "value"}).assign(value=lambda d: -d["value"] / 10, model="", measure="max_cosine")
    out = U.attribution_similarity_table(attr, sim, methods=("spearman",), n_boot=0)
    pooled = out[out["scope"] == "*"].iloc[0]
    assert pooled["measure"] == "max_cosine" and pooled["n"] == 10 and pooled["r"] == pytest.approx(1.0)
    assert pooled["r_oriented"] == pytest.approx(1.0)  # more similar => larger drop
    assert set(out["scope"]) == {"*", "c1", "c2"}
