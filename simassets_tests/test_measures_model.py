"""Perplexity measures: batched, padded scoring against a hand-rolled loop, and the aggregations."""

from __future__ import annotations

import math

import pytest

from simassets.core.measures.model import (
    TokenNLL,
    _bos_prefix,
    aggregate_perplexity,
    perplexity_from_loglik,
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
