"""Tiny random models for tests: a real tokenizer (GPT-2 BPE from the data root) and a small config.

No weights are downloaded; the model is random but runs through exactly the code paths a real
model does (lm-eval scoring, perplexity, Fisher information, training).
"""

from __future__ import annotations

import json
from pathlib import Path

from simassets.core import paths


def gpt2_tokenizer(data_root: Path | None = None):
    """GPT-2 BPE tokenizer built from the vocab/merges shipped in the data root."""
    from transformers import GPT2TokenizerFast

    root = (data_root or paths.data_root()) / "tokenizers" / "gpt2"
    vocab = json.loads((root / "vocab.json").read_text(encoding="utf-8"))
    merges = [
        tuple(line.split())
        for line in (root / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
        if line.strip()
    ]
    # transformers 5.x: passing vocab_file/merges_file silently builds an empty tokenizer.
    tok = GPT2TokenizerFast(vocab=vocab, merges=merges)
    tok.pad_token = tok.eos_token
    return tok


def make_tiny_causal_lm(out_dir: str | Path, seed: int = 0, hidden_size: int = 32, layers: int = 2) -> Path:
    """Write a tiny random Llama-architecture causal LM with the GPT-2 tokenizer to ``out_dir``.

    The result is a local Hugging Face directory (safetensors + tokenizer) usable as a model spec of
    kind ``local``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = gpt2_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
