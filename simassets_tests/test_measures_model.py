"""Perplexity measures: batched, padded scoring against a hand-rolled loop, and the aggregations."""

from __future__ import annotations

import math

import pytest

from simassets.core.measures.model import (
    TokenNLL,
    _bos_prefix,
    aggregate_perplexity,
    perplexity_from_loglik,
    perplexity_interval,
    perplexity_rows,
    sequence_nll,
)
from simassets.core.testing import make_tiny_causal_lm

TEXTS = [
    "The cat sat on the mat.",
    "A",
    "Proteins fold into three-dimensional structures determined by their amino-acid sequence, "
    "and misfolding is implicated in several neurodegenerative diseases.",
    "To be, or not to be, that is the question:",
    "def f(x):\n    return x * 2  # double it",
]


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def _hand_nll(model, tokenizer, text: str) -> tuple[float, int]:
    """One text alone, no padding: BOS + text tokens, log_softmax, sum of -log p(next token)."""
    import torch

    ids = [tokenizer.bos_token_id] + tokenizer(text)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return -sum(float(logp[t, ids[t + 1]]) for t in range(len(ids) - 1)), len(ids) - 1


def test_sequence_nll_matches_single_text_loop_despite_padding(lm):
    model, tok = lm
    got = sequence_nll(model, tok, TEXTS, batch_size=3)  # lengths differ: every batch is padded
    assert len({r.n_tokens for r in got}) == len(TEXTS)
    for text, res in zip(TEXTS, got):
        nll, n = _hand_nll(model, tok, text)
        assert res.n_tokens == n == len(tok(text)["input_ids"])  # BOS prepended: every text token predicted
        assert res.nll_sum / n == pytest.approx(nll / n, abs=1e-5)
        assert not res.truncated
        assert res.perplexity == pytest.approx(math.exp(nll / n), rel=1e-4)
    # batch composition and order do not matter
    alone = [sequence_nll(model, tok, [t], batch_size=1)[0] for t in TEXTS]
    for a, b in zip(alone, got):
        assert a.n_tokens == b.n_tokens and a.nll_sum == pytest.approx(b.nll_sum, rel=1e-5)


def test_sequence_nll_truncates_and_flags(lm):
    model, tok = lm
    res = sequence_nll(model, tok, [TEXTS[2], TEXTS[0]], max_length=8)
    assert res[0].truncated and res[0].n_tokens == 7  # 8 positions incl. BOS -> 7 predictions
    assert not res[1].truncated and res[1].n_tokens == len(tok(TEXTS[0])["input_ids"])
    empty = sequence_nll(model, tok, ["", TEXTS[0]])
    assert (empty[0].n_tokens, empty[0].nll_sum) == (0, 0.0) and empty[1].n_tokens > 0
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        sequence_nll(model, tok, ["ok", None])


class _Tok:
    def __init__(self, bos, adds):
        self.bos_token_id, self.adds = bos, adds

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([self.bos_token_id] if self.adds else []) + [42]}


def test_bos_rule():
    assert _bos_prefix(_Tok(7, adds=False)) == [7]  # has BOS, does not add it: prepend
    assert _bos_prefix(_Tok(7, adds=True)) == []  # adds it itself: leave alone
    assert _bos_prefix(_Tok(None, adds=False)) == []  # no BOS: first token unpredicted


def test_perplexity_helpers_on_hand_values():
    assert perplexity_from_loglik(-3 * math.log(4), 3) == pytest.approx(4.0)
    assert perplexity_from_loglik(0.0, 5) == 1.0
    agg = aggregate_perplexity([2 * math.log(2), math.log(8), 0.0], [2, 1, 0])  # the 0-token row is ignored
    assert agg.token_weighted == pytest.approx(2 ** (5 / 3))  # exp((2 ln2 + ln8) / 3)
    assert agg.mean_of_examples == pytest.approx((2 + 8) / 2)
    assert (agg.n_examples, agg.n_tokens) == (2, 3)
    assert math.isnan(TokenNLL(0.0, 0, False).perplexity)
    with pytest.raises(ValueError, match="n_tokens"):
        perplexity_from_loglik(-1.0, 0)
    with pytest.raises(ValueError, match="positive"):
        perplexity_from_loglik(0.5, 2)
    with pytest.raises(ValueError, match="2 values"):
        aggregate_perplexity([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="undefined"):
        aggregate_perplexity([0.0], [0])


def test_perplexity_interval_brackets_covers_and_degenerates():
    """The BCa interval of the token-weighted perplexity: it holds the estimate, is seeded, narrows as the sample
    grows, covers the population value about 95 % of the time, and is absent where there is no spread."""
    import numpy as np

    rng = np.random.default_rng(0)
    n = rng.integers(20, 200, size=30)
    nll = n * rng.gamma(9.0, 1 / 3.0, size=30)  # per-token NLL around 3 nats, varying by example
    value = aggregate_perplexity(nll.tolist(), n.tolist()).token_weighted
    low, high = perplexity_interval(nll, n, 500, seed=1)
    assert low < value < high
    assert (low, high) == perplexity_interval(nll, n, 500, seed=1)
    assert (low, high) != perplexity_interval(nll, n, 500, seed=2)
    big = perplexity_interval(np.tile(nll, 4), np.tile(n, 4), 500, seed=1)
    assert 0.35 < (big[1] - big[0]) / (high - low) < 0.65  # about 1 / sqrt(4)

    truth = math.exp(3.0)  # E[nll] / E[n] with the per-token NLL independent of the length
    hits = 0
    for rep in range(300):
        n = rng.integers(20, 200, size=25)
        nll = n * rng.gamma(9.0, 1 / 3.0, size=25)
        lo, hi = perplexity_interval(nll, n, 300, seed=rep)
        hits += lo <= truth <= hi
    assert 0.88 <= hits / 300 <= 0.99

    assert perplexity_interval([3.0], [2], 200, 0) == (None, None)  # one unit: no spread to resample
    assert perplexity_interval([2.0, 4.0, 0.0], [1, 2, 0], 200, 0) == (None, None)  # equal per-token NLL
    assert perplexity_interval([2.0, 5.0], [1, 2], 0, 0) == (None, None)  # no resamples asked


def test_perplexity_rows_carry_intervals_when_asked():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    ids = [f"e{i}" for i in range(12)]
    results = pd.DataFrame({"example_id": ids, "gold_n_tokens": rng.integers(1, 6, 12),
                            "input_n_tokens": rng.integers(5, 40, 12)})
    results["gold_loglik"] = -results["gold_n_tokens"] * rng.uniform(0.5, 4, 12)
    results["input_nll"] = results["input_n_tokens"] * rng.uniform(1, 5, 12)
    bench = pd.DataFrame({"example_id": ids})
    _, plain = perplexity_rows(bench, results)
    assert plain[["ci_low", "ci_high"]].isna().all().all()
    _, ds = perplexity_rows(bench, results, n_boot=200, seed=0)
    assert list(ds["measure"]) == ["input_perplexity", "target_perplexity"]
    assert ((ds["ci_low"] < ds["value"]) & (ds["value"] < ds["ci_high"])).all()
    assert ds["value"].tolist() == plain["value"].tolist()  # the estimate itself does not move
