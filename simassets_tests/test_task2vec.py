"""Task2Vec: the distance, the Fisher embedding (against a direct computation, padding, determinism),
the coefficients, batch drawing, the cache, and the domain properties the coefficients exist for."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from simassets.core import paths
from simassets.core.measures import task2vec as t2v
from simassets.core.testing import make_tiny_causal_lm

FAST = t2v.Task2VecParams(seq_len=24, batch_size=4, fisher_batch_size=4, n_batches=3)


def _texts(rel: str, n: int, field: str = "text") -> list[str]:
    with open(paths.data_root() / rel, encoding="utf-8") as fh:
        return [json.loads(line)[field] for _, line in zip(range(n), fh)]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def c4() -> list[str]:
    return _texts("corpora/c4_en.jsonl", 12)


# ------------------------------------------------------------------ distance and coefficients


def test_distance_hand_values_and_properties():
    a, b = np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0])
    # a/(a+b) = [.5, 0, 1], b/(a+b) = [.5, 1, 0]: cosine = .25 / 1.25
    assert t2v.task2vec_distance(a, b) == pytest.approx(0.8)
    assert t2v.task2vec_distance(a, 3 * a) == pytest.approx(0.0, abs=1e-12)  # scale-free
    assert t2v.task2vec_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.exponential(size=50), rng.exponential(size=50) * rng.uniform(0.1, 10)
        d = t2v.task2vec_distance(x, y)
        assert 0.0 <= d <= 1.0 and d == pytest.approx(t2v.task2vec_distance(y, x), abs=1e-12)
        assert t2v.task2vec_distance(x, x) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="shapes"):
        t2v.task2vec_distance(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="non-negative"):
        t2v.task2vec_distance(np.array([1.0, -1.0]), np.ones(2))


def test_coefficients_on_hand_values():
    e = [np.array([1.0, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]), np.array([2.0, 0.0, 2.0])]
    d01, d02, d12 = 0.8, 0.0, t2v.task2vec_distance(e[1], e[2])
    div = t2v.diversity_coefficient(e)
    assert div.n_pairs == 3 and div.value == pytest.approx((d01 + d02 + d12) / 3)
    d = np.array([d01, d02, d12])
    half = 4.302652729911275 * d.std(ddof=1) / math.sqrt(3)  # t(0.975, df=2)
    assert (div.ci_low, div.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    al = t2v.alignment_coefficient(e[:1], e[1:])
    assert al.n_pairs == 2 and al.value == pytest.approx(1 - (d01 + d02) / 2)
    assert al.ci_low < al.value < al.ci_high
    single = t2v.alignment_coefficient(e[:1], e[1:2])
    assert single.value == pytest.approx(0.2) and math.isnan(single.ci_low)
    with pytest.raises(ValueError, match="at least 2"):
        t2v.diversity_coefficient(e[:1])


# ------------------------------------------------------------------ Fisher embeddings


def test_embedding_sizes(lm):
    model, _ = lm
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    per_block = sum(int(p.shape[0]) for n, p in model.model.layers[-1].named_parameters())
    assert t2v.embedding_size(model, "lm_head") == vocab
    assert t2v.embedding_size(model, "last_block") == per_block + hidden  # + final norm
    assert t2v.embedding_size(model, "all") == vocab + 2 * per_block + hidden  # tied head counted once


@pytest.mark.parametrize("which", ["lm_head", "last_block", "all"])
def test_empirical_fisher_equals_direct_gradient(lm, c4, which):
    """Empirical Fisher of one pass = squared gradient of the masked mean loss, averaged over each row."""
    import torch
    import torch.nn.functional as F

    model, tok = lm
    params = t2v.Task2VecParams(parameters=which, fisher="empirical", seq_len=16, fisher_batch_size=4)
    ids, mask = t2v.tokenize_batch(tok, [c4[0], "Short text here.", c4[1][:40], c4[2]], params.seq_len)
    assert mask.sum(1).min() < mask.shape[1]  # the batch really is padded
    got = t2v.fisher_embedding(model, ids, mask, params, batch_seed=0)
    weights = t2v._selected_weights(model, which)
    if which == "lm_head":  # the head's own gradient: hidden states fixed (the tied input path excluded)
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state.detach()
        logits = model.lm_head(hidden)[:, :-1]
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    keep = (mask[:, :-1] * mask[:, 1:]).bool()
    grads = torch.autograd.grad(F.cross_entropy(logits[keep], ids[:, 1:][keep]), weights)
    want = torch.cat([g.pow(2).reshape(g.shape[0], -1).mean(1) for g in grads]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-12 * want.max())
    assert all(p.requires_grad for p in model.parameters())  # flags restored


def test_padding_is_masked_and_seeds_are_deterministic(lm, c4):
    import torch

    model, tok = lm
    ids, mask = t2v.tokenize_batch(tok, c4[:4], FAST.seq_len)
    base = t2v.fisher_embedding(model, ids, mask, FAST, batch_seed=3)
    pad = torch.full((ids.shape[0], 5), tok.pad_token_id)
    padded = t2v.fisher_embedding(model, torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros_like(pad)], 1),
                                  FAST, batch_seed=3)
    np.testing.assert_allclose(padded, base, rtol=1e-4, atol=1e-6 * base.max())
    assert np.array_equal(base, t2v.fisher_embedding(model, ids, mask, FAST, batch_seed=3))
    other = t2v.fisher_embedding(model, ids, mask, FAST, batch_seed=4)  # other Monte-Carlo targets
    assert 0 < t2v.task2vec_distance(base, other) and t2v.task2vec_distance(base, base) == 0.0


@pytest.mark.parametrize("fisher,per_pass", [("montecarlo", 1), ("empirical", 1), ("montecarlo", 3)])
def test_fisher_rows_equal_the_autograd_weight_gradients(lm, c4, fisher, per_pass):
    """parameters=all forms the linear layers' and the tied embedding's rows from their inputs and output gradients;
    the autograd reference squares every weight gradient. Padded passes, one or several sequences each."""
    model, tok = lm
    params = t2v.Task2VecParams(parameters="all", fisher=fisher, seq_len=24, batch_size=4, fisher_batch_size=per_pass)
    ids, mask = t2v.tokenize_batch(tok, [c4[0], "Short text here.", c4[1][:60], c4[2]], params.seq_len)
    assert mask.sum(1).min() < mask.shape[1]
    got = t2v.fisher_embedding(model, ids, mask, params, batch_seed=5)
    want = t2v.fisher_embedding(model, ids, mask, params, batch_seed=5, exact_weight_gradients=True)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-9 * want.max())
    vocab = model.config.vocab_size  # the tied matrix comes first: its rows off the batch's tokens are the head's
    assert (got[:vocab] > 0).all() and not np.array_equal(got, want)  # really the other path, not a copy
    assert t2v.task2vec_distance(got, want) < 1e-9
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())  # the hooks are gone


def test_an_embedding_subclass_takes_the_autograd_path(lm, c4):
    """A scaled embedding (as Gemma's) is not a plain lookup: its rows go through autograd, the same numbers."""
    import torch.nn as nn

    model, tok = lm

    class Scaled(nn.Embedding):
        pass

    plain = model.get_input_embeddings()
    scaled = Scaled(plain.num_embeddings, plain.embedding_dim, padding_idx=plain.padding_idx)
    scaled.weight = plain.weight  # the same (tied) matrix
    params = t2v.Task2VecParams(parameters="all", seq_len=16, batch_size=2)
    ids, mask = t2v.tokenize_batch(tok, c4[:2], params.seq_len)
    model.set_input_embeddings(scaled)
    try:
        got = t2v.fisher_embedding(model, ids, mask, params, batch_seed=1)
        want = t2v.fisher_embedding(model, ids, mask, params, batch_seed=1, exact_weight_gradients=True)
    finally:
        model.set_input_embeddings(plain)
    assert np.array_equal(got, want)
    assert not any(m._forward_hooks for m in model.modules())


def test_head_finetune_restores_the_model(lm, c4):
    model, tok = lm
    head = model.get_output_embeddings().weight.detach().clone()
    plain = t2v.batch_embedding(model, tok, c4[:4], FAST, 0)
    tuned = t2v.batch_embedding(model, tok, c4[:4], t2v.Task2VecParams(**{**FAST.as_dict(), "head_finetune_epochs": 2,
                                                                         "head_finetune_lr": 1e-2}), 0)
    assert t2v.task2vec_distance(plain, tuned) > 0
    assert np.array_equal(model.get_output_embeddings().weight.detach().numpy(), head.numpy())
    assert all(p.requires_grad for p in model.parameters()) and not model.training


def test_draw_batch_is_seeded_and_order_free(c4):
    a = t2v.draw_batch(c4, 4, seed=0, index=1)
    assert a == t2v.draw_batch(list(reversed(c4)), 4, seed=0, index=1)
    assert len(set(a)) == 4 and set(a) <= set(c4)
    assert a != t2v.draw_batch(c4, 4, seed=0, index=2)
    with pytest.raises(ValueError, match="at least batch_size=20"):
        t2v.draw_batch(c4, 20, seed=0, index=0)


def test_cache_computes_once(lm, c4, tmp_path, monkeypatch):
    model, tok = lm
    cache = t2v.Task2VecCache(tmp_path)
    first = cache.embeddings(model, tok, c4, FAST, probe="tiny")
    assert len(first) == FAST.n_batches
    monkeypatch.setattr(t2v, "dataset_embeddings", lambda *a, **k: pytest.fail("recomputed a cached dataset"))
    again = cache.embeddings(None, None, list(reversed(c4)), FAST, probe="tiny")  # same content, other order
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert cache.load(t2v.texts_fingerprint(c4), "tiny", t2v.Task2VecParams(**{**FAST.as_dict(), "seed": 1})) is None
    assert cache.load(t2v.texts_fingerprint(c4), "other-probe", FAST) is None
    assert not list(tmp_path.rglob("*.tmp"))
    meta = json.loads(next(tmp_path.rglob("*.json")).read_text())
    assert meta["probe"] == "tiny" and meta["params"]["seq_len"] == FAST.seq_len


def test_weights_fingerprint_tracks_weights(lm):
    import torch

    model, _ = lm
    before = t2v.weights_fingerprint(model)
    assert before == t2v.weights_fingerprint(model)
    weight = model.model.norm.weight
    with torch.no_grad():
        weight[0] += 1.0
    try:
        assert t2v.weights_fingerprint(model) != before
    finally:
        with torch.no_grad():
            weight[0] -= 1.0
    assert t2v.weights_fingerprint(model) == before


def test_params_validation():
    with pytest.raises(ValueError, match="parameters"):
        t2v.Task2VecParams(parameters="everything")
    with pytest.raises(ValueError, match="fisher"):
        t2v.Task2VecParams(fisher="exact")


# ------------------------------------------------------------------ the properties the coefficients exist for


def _briefly_trained_probe(train: list[str], seed: int = 0, steps: int = 80):
    """A 512-token byte-level BPE tokenizer and a 2-layer Llama (hidden 64) trained ``steps`` AdamW steps.

    A random probe does not tell domains apart by diversity (every dataset scores ~0.25 with this
    set-up; alignment already ranks weakly), and the GPT-2-vocabulary tiny model is too slow to
    train here: 50k output logits per token.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(train, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<s>", "<unk>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="<s>",
                                  unk_token="<unk>")
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1, eos_token_id=1))
    ids, mask = t2v.tokenize_batch(tok, train, 64)
    opt, rng = torch.optim.AdamW(model.parameters(), lr=3e-3), random.Random(seed)
    for _ in range(steps):
        pick = torch.tensor(rng.sample(range(len(train)), 16))
        loss = model(input_ids=ids[pick], attention_mask=mask[pick],
                     labels=ids[pick].masked_fill(mask[pick] == 0, -100)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def test_mixture_is_more_diverse_and_a_dataset_aligns_best_with_itself():
    domains = {
        "pubmed": _texts("corpora/pubmed_abstracts.jsonl", 96),
        "c4": _texts("corpora/c4_en.jsonl", 96),
        "shakespeare": _texts("corpora/shakespeare.jsonl", 96),
        "code": _texts("benchmarks/gauntlet/bigbench_cs_algorithms.jsonl", 96, "context"),
    }
    model, tok = _briefly_trained_probe([t for texts in domains.values() for t in texts[48:]])  # disjoint halves
    held_out = {name: texts[:48] for name, texts in domains.items()}
    mixture = [t for texts in held_out.values() for t in texts[:12]]
    random.Random(0).shuffle(mixture)
    params = t2v.Task2VecParams(seq_len=64, n_batches=6)  # defaults otherwise: all weights, Monte-Carlo
    assert (params.parameters, params.fisher, params.fisher_batch_size) == ("all", "montecarlo", 1)
    embs = {name: t2v.dataset_embeddings(model, tok, held_out[name], params)
            for name in ("pubmed", "shakespeare", "code")}
    embs["mixture"] = t2v.dataset_embeddings(model, tok, mixture, params)
    div = {name: t2v.diversity_coefficient(e).value for name, e in embs.items()}
    assert div["mixture"] > 1.05 * max(div["pubmed"], div["shakespeare"], div["code"]), div
    other_draw = t2v.Task2VecParams(seq_len=64, n_batches=6, seed=10)  # other batches of the same texts
    pubmed_again = t2v.dataset_embeddings(model, tok, held_out["pubmed"], other_draw)
    self_align = t2v.alignment_coefficient(embs["pubmed"], pubmed_again)
    for other in ("shakespeare", "code"):
        cross = t2v.alignment_coefficient(embs["pubmed"], embs[other])
        assert self_align.value > cross.value + 0.05 and self_align.ci_low > cross.ci_high, (other, self_align, cross)
