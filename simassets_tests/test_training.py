"""The shared trainer: packing, seeded batches, descent/ascent, gradient accumulation, determinism, LoRA."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from simassets.core.training import (BatchStream, LoraSpec, TrainConfig, Trainer, fresh_copy, mean_loss,  # noqa: E402
                                     pack_texts, seeded_order)

A = "alpha beta gamma delta river stone cloud tiger apple green quiet seven morning paper window silver".split()
B = "one two three four five six eight nine ten eleven twelve thirteen fourteen fifteen sixteen twenty".split()


def cyclic(words: list[str], start: int, n: int = 60) -> str:
    """A text the tiny model can learn: the vocabulary in a fixed cyclic order."""
    return " ".join(words[(start + i) % len(words)] for i in range(n))


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_pack_texts_seeded_order_eos_and_tail(tiny):
    _, tok = tiny
    texts = ["one two three", "four five", "six seven eight nine"]
    blocks = pack_texts(tok, texts, seq_len=4, seed=3)
    stream = []
    for i in seeded_order(texts, 3):
        stream += tok(texts[i], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert blocks.shape == (len(stream) // 4, 4)
    assert blocks.flatten().tolist() == stream[: blocks.numel()]  # the tail shorter than a block is dropped
    # the order depends on the texts and the seed, not on the input order
    assert pack_texts(tok, texts[::-1], 4, seed=3).tolist() == blocks.tolist()
    assert pack_texts(tok, texts, 4, seed=None).flatten().tolist()[:3] == tok("one two three", add_special_tokens=False)["input_ids"]
    assert pack_texts(tok, texts, 4, seed=3, max_blocks=1).shape == (1, 4)
    with pytest.raises(ValueError, match="retain corpora.*fewer than one block"):
        pack_texts(tok, ["hi"], 64, what="retain corpora")


def test_batch_stream_is_seeded_epoch_permutations():
    s = BatchStream(5, 2, seed=1)
    drawn = np.concatenate([s.next() for _ in range(5)])  # 10 indices = two epochs
    assert sorted(drawn[:5].tolist()) == list(range(5)) and sorted(drawn[5:].tolist()) == list(range(5))
    again = BatchStream(5, 2, seed=1)
    assert np.concatenate([again.next() for _ in range(5)]).tolist() == drawn.tolist()
    other = BatchStream(5, 2, seed=2)
    assert np.concatenate([other.next() for _ in range(5)]).tolist() != drawn.tolist()


def _train(model, tok, texts, steps, cfg):
    blocks = pack_texts(tok, texts, cfg.seq_len, seed=cfg.seed)
    trainer = Trainer(fresh_copy(model), cfg)
    stream = BatchStream(blocks.shape[0], cfg.batch_size, cfg.seed)
    losses = [trainer.step(blocks[stream.next()]) for _ in range(steps)]
    return trainer, blocks, losses


def test_descent_lowers_the_loss_on_its_own_data_and_leaves_the_base_model_alone(tiny):
    model, tok = tiny
    before_weights = model.get_input_embeddings().weight.detach().clone()
    cfg = TrainConfig(lr=1e-2, seq_len=32, batch_size=4, seed=0)
    texts = [cyclic(A, i) for i in range(4)]
    blocks = pack_texts(tok, texts, 32, seed=0)
    base = mean_loss(model, blocks)
    trainer, _, losses = _train(model, tok, texts, 15, cfg)
    after = trainer.loss(blocks)
    assert after < base - 2.0, (base, after)  # a random model: ~ln(50257) = 10.8 nats; it learns the cycle
    assert losses[-1] < losses[0]
    assert trainer.stats.steps == {1: 15, -1: 0} and trainer.stats.tokens == 15 * 4 * 32
    assert torch.equal(model.get_input_embeddings().weight, before_weights)  # training worked on a copy


def test_ascent_raises_the_loss(tiny):
    model, tok = tiny
    cfg = TrainConfig(lr=1e-2, seq_len=32, batch_size=4, seed=0)
    blocks = pack_texts(tok, [cyclic(A, i) for i in range(4)], 32, seed=0)
    trainer = Trainer(fresh_copy(model), cfg)
    base = trainer.loss(blocks)
    for _ in range(3):
        trainer.step(blocks[:4], direction=-1)
    assert trainer.loss(blocks) > base + 0.5
    with pytest.raises(ValueError, match="direction"):
        trainer.step(blocks[:4], direction=0)


def test_gradient_accumulation_gives_the_same_update_as_one_batch(tiny):
    model, tok = tiny
    blocks = pack_texts(tok, [cyclic(A, i) for i in range(4)], 32, seed=0)[:4]
    weights = []
    for micro in (4, 1, 2):
        t = Trainer(fresh_copy(model), TrainConfig(lr=1e-3, seq_len=32, batch_size=4, micro_batch_size=micro, seed=0))
        t.step(blocks)
        weights.append(t.model.get_input_embeddings().weight.detach())
    assert torch.allclose(weights[0], weights[1], atol=1e-6) and torch.allclose(weights[0], weights[2], atol=1e-6)
    assert TrainConfig(batch_size=8).micro == 4 and TrainConfig(batch_size=8, device="cuda").micro == 8
    assert TrainConfig(batch_size=6).micro == 3
    with pytest.raises(ValueError, match="must divide"):
        TrainConfig(batch_size=6, micro_batch_size=4)


def test_training_is_deterministic_for_a_seed(tiny):
    model, tok = tiny
    texts = [cyclic(A, i) for i in range(3)] + [cyclic(B, i) for i in range(3)]
    runs = [_train(model, tok, texts, 4, TrainConfig(lr=5e-3, seq_len=32, batch_size=4, seed=s))[2] for s in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_lora_trains_only_adapters_and_merges_back(tiny):
    model, tok = tiny
    cfg = TrainConfig(lr=5e-2, seq_len=32, batch_size=4, seed=0, lora=LoraSpec(r=4, alpha=8))
    texts = [cyclic(A, i) for i in range(4)]
    trainer, blocks, _ = _train(model, tok, texts, 8, cfg)
    n_all = sum(p.numel() for p in model.parameters())
    assert 0 < trainer.trainable_parameters < n_all / 10
    adapted = trainer.loss(blocks)
    merged = trainer.finished_model()
    assert type(merged).__name__ == type(model).__name__ and not merged.training
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert mean_loss(merged, blocks) == pytest.approx(adapted, abs=1e-4)  # merging keeps the adapted function
    assert adapted < mean_loss(model, blocks) - 0.1
