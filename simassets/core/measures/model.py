"""Model-based measures: perplexity of texts under a causal LM (input and corpus perplexity) and of
gold targets from stored evaluation log-likelihoods (target perplexity).

Conventions (all natural logarithms, nats):

* **Tokens scored.** A text is encoded with the tokenizer's own special-token handling. If the
  tokenizer has a BOS token but does not add it itself (GPT-2, SmolLM2), BOS is prepended so that
  every token of the text is predicted -- the same prefix lm-eval uses for rolling log-likelihoods.
  If the tokenizer adds BOS itself, that BOS is the context of the first text token. If it has no
  BOS at all, the first token has no prediction and is not scored. ``n_tokens`` is the number of
  *predicted* tokens; ``nll_sum`` is the sum of their negative log-probabilities.
* **Truncation.** Encodings longer than ``max_length`` (BOS included) keep their first
  ``max_length`` tokens and are flagged ``truncated``; no sliding window.
* **Aggregation.** Dataset-level perplexity is the *token-weighted* ``exp(sum nll / sum n)`` (the
  perplexity of the concatenated data, as corpus perplexity is usually reported);
  :func:`aggregate_perplexity` also returns the mean of per-example perplexities, which short,
  surprising examples dominate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenNLL:
    """Negative log-likelihood of one text: sum over predicted tokens (nats) and their count."""

    nll_sum: float
    n_tokens: int
    truncated: bool

    @property
    def perplexity(self) -> float:
        """``exp(nll_sum / n_tokens)``; NaN for a text with no predicted token."""
        return math.exp(self.nll_sum / self.n_tokens) if self.n_tokens > 0 else float("nan")


@dataclass(frozen=True)
class PerplexityAggregate:
    token_weighted: float  # exp(sum nll / sum n): the dataset-level value of every perplexity measure
    mean_of_examples: float  # mean over examples of exp(nll_i / n_i)
    n_examples: int
    n_tokens: int


def _bos_prefix(tokenizer: Any) -> list[int]:
    """``[bos]`` when the tokenizer has a BOS token it does not add by itself, else ``[]``."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    return [] if probe and probe[0] == bos else [int(bos)]


def encode_for_scoring(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], list[bool]]:
    """Token ids to score for each text (BOS rule above) and whether each was truncated."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    prefix = _bos_prefix(tokenizer)
    ids, truncated = [], []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(text).__name__}")
        seq = prefix + list(tokenizer(text, add_special_tokens=True)["input_ids"])
        truncated.append(len(seq) > max_length)
        ids.append(seq[:max_length])
    return ids, truncated


def right_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Right-padded ``input_ids`` and ``attention_mask`` (long tensors) for a list of id lists."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, : len(seq)] = 1
    return ids, mask


def pad_id_of(tokenizer: Any) -> int:
    """The id used for padding (its value never matters: padding is masked)."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def sequence_nll(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int = 1024,
                 batch_size: int = 8) -> list[TokenNLL]:
    """Per-text negative log-likelihood under ``model`` (a loaded transformers causal LM).

    Texts are encoded by the BOS rule above and scored by :func:`token_ids_nll`.
    """
    ids, truncated = encode_for_scoring(tokenizer, texts, max_length)
    return token_ids_nll(model, ids, pad_id_of(tokenizer), batch_size, truncated)


def token_ids_nll(model: Any, ids: Sequence[Sequence[int]], pad_id: int = 0, batch_size: int = 8,
                  truncated: Sequence[bool] | None = None) -> list[TokenNLL]:
    """NLL of each token-id sequence: every token after the first, predicted from its prefix.

    Sequences are sorted by length so each right-padded batch wastes little compute, and a batch holds
    at most ``batch_size`` rows and ``batch_size * 256`` tokens (long rows go in smaller batches: the
    logits of a batch are rows x length x vocabulary floats); padding is masked in attention and excluded
    from the loss; results come back in input order.
    """
    import torch
    import torch.nn.functional as F

    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    truncated = list(truncated) if truncated is not None else [False] * len(ids)
    # sequences with nothing to predict (empty, or one token) are not run through the model
    out: list[TokenNLL | None] = [None if len(s) > 1 else TokenNLL(0.0, 0, t) for s, t in zip(ids, truncated)]
    order = sorted((i for i in range(len(ids)) if out[i] is None), key=lambda i: (-len(ids[i]), i))
    device = next(model.parameters()).device
    token_budget = batch_size * 256
    was_training = model.training
    model.eval()  # no dropout
    try:
        with torch.inference_mode():
            start = 0
            while start < len(order):
                rows = max(1, min(batch_size, token_budget // len(ids[order[start]])))  # longest row first
                chunk = order[start : start + rows]
                start += rows
                input_ids, mask = right_pad([ids[i] for i in chunk], pad_id)
                input_ids, mask = input_ids.to(device), mask.to(device)
                logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
                targets = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
                nll = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
                sums = nll.double().sum(dim=1).cpu().tolist()
                counts = (targets != -100).sum(dim=1).cpu().tolist()
                for row, i in enumerate(chunk):
                    out[i] = TokenNLL(nll_sum=float(sums[row]), n_tokens=int(counts[row]), truncated=truncated[i])
    finally:
        model.train(was_training)
    return [r for r in out if r is not None]


def perplexity_from_loglik(loglik: float, n_tokens: int) -> float:
    """Perplexity ``exp(-loglik / n_tokens)`` from a summed log-likelihood (nats) over ``n_tokens``."""
    if n_tokens <= 0:
        raise ValueError(f"n_tokens must be positive, got {n_tokens}")
    if loglik > 0:
        raise ValueError(f"a log-likelihood cannot be positive, got {loglik}")
    return math.exp(-loglik / n_tokens)


def aggregate_perplexity(nll_sums: Sequence[float], n_tokens: Sequence[int]) -> PerplexityAggregate:
    """Token-weighted perplexity ``exp(sum nll / sum n)`` and the mean of per-example perplexities.

    Examples with no predicted token are left out of both. The dataset level of the perplexity
    measures uses ``token_weighted``.
    """
    if len(nll_sums) != len(n_tokens):
        raise ValueError(f"nll_sums has {len(nll_sums)} values but n_tokens has {len(n_tokens)}")
    pairs = [(float(s), int(n)) for s, n in zip(nll_sums, n_tokens) if int(n) > 0]
    if not pairs:
        raise ValueError("no example with a predicted token: perplexity is undefined")
    total_nll = math.fsum(s for s, _ in pairs)
    total_n = sum(n for _, n in pairs)
    return PerplexityAggregate(
        token_weighted=math.exp(total_nll / total_n),
        mean_of_examples=math.fsum(math.exp(s / n) for s, n in pairs) / len(pairs),
        n_examples=len(pairs),
        n_tokens=total_n,
    )
