"""One trainer for both directions: descent (fine-tuning) and ascent (unlearning) on packed causal-LM data.

* **Packing.** Texts are tokenized without special tokens, each followed by EOS, concatenated in a
  seeded order (the smallest ``seeded_hash64(seed, sha256(text))`` first, so the order does not
  depend on the input order) and cut into blocks of ``seq_len`` tokens; the incomplete tail is
  dropped. Blocks have no padding, so every token of a block is a target except the first.
* **Loss.** The mean next-token cross-entropy (nats) over every predicted token of the batch.
  Descent (``direction=+1``) minimizes it, ascent (``direction=-1``) maximizes it.
* **Batches.** ``batch_size`` blocks per optimizer step (the effective batch), drawn epoch by epoch
  from a permutation seeded by ``(seed, epoch)``; each step is split into micro-batches of
  ``micro_batch_size`` blocks whose gradients are accumulated (each scaled by its share of the
  batch), so the update is that of the whole batch on any device: only memory decides the micro size.
* **Updates.** AdamW (one optimizer per direction, so ascent and descent keep separate moments),
  gradient-norm clipping; full-parameter, or LoRA adapters (``peft``) with ``lora`` set, merged back
  into the weights by :meth:`Trainer.finished_model`.
* **Seeds.** ``torch.manual_seed(seed)`` before the adapters are created and before training;
  batches come from numpy generators seeded by ``(seed, epoch)``. On one device and thread count the
  same inputs give the same losses bit for bit.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from simassets.core.hashing import seeded_hash64, sha256_text

DIRECTIONS = (1, -1)  # +1 descent (learn), -1 ascent (unlearn)


@dataclass(frozen=True)
class LoraSpec:
    """LoRA adapters (``peft.LoraConfig``): rank, alpha, dropout and the modules they wrap."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"


@dataclass(frozen=True)
class TrainConfig:
    """What one optimizer step is: learning rate, block length, effective batch, device, adapters."""

    lr: float = 5e-5
    seq_len: int = 128
    batch_size: int = 8  # blocks per optimizer step, the same on every device
    micro_batch_size: int = 0  # blocks per forward/backward; 0 = the batch on CUDA, at most 4 on CPU
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 0
    lora: LoraSpec | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be positive, got {self.lr}")
        if self.seq_len < 2:
            raise ValueError(f"TrainConfig.seq_len must be at least 2, got {self.seq_len}")
        if self.batch_size < 1 or self.micro_batch_size < 0:
            raise ValueError(f"TrainConfig.batch_size must be >= 1 and micro_batch_size >= 0, got "
                             f"{self.batch_size} and {self.micro_batch_size}")
        if self.micro_batch_size and self.batch_size % self.micro_batch_size:
            raise ValueError(f"TrainConfig.micro_batch_size {self.micro_batch_size} must divide batch_size {self.batch_size}")

    @property
    def micro(self) -> int:
        """Blocks per forward/backward pass (a divisor of ``batch_size``)."""
        if self.micro_batch_size:
            return self.micro_batch_size
        cap = self.batch_size if self.device.startswith("cuda") else 4
        return max(d for d in range(1, min(cap, self.batch_size) + 1) if self.batch_size % d == 0)

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def as_dict(self) -> dict[str, Any]:
        """Everything that changes the updates (the device and micro-batch size do not, up to rounding)."""
        d = asdict(self)
        d.pop("device")
        d.pop("micro_batch_size")
        return d


# ------------------------------------------------------------------ data


def seeded_order(texts: Sequence[str], seed: int) -> list[int]:
    """Indices of ``texts`` ordered by ``seeded_hash64(seed, sha256(text))`` (ties by index)."""
    return sorted(range(len(texts)), key=lambda i: (seeded_hash64(seed, sha256_text(texts[i])), i))


def pack_texts(tokenizer: Any, texts: Sequence[str], seq_len: int, seed: int | None = 0,
               max_blocks: int | None = None, what: str = "texts") -> Any:
    """``(n_blocks, seq_len)`` long tensor: the texts + EOS each, in seeded order (``seed=None``: the
    given order), cut into blocks; at most ``max_blocks`` blocks. Empty texts are skipped.

    Raises ``ValueError`` naming ``what`` when the texts hold fewer than ``seq_len`` tokens.
    """
    import torch

    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(f"{what}: the tokenizer has no EOS token to separate packed texts")
    stream: list[int] = []
    limit = None if max_blocks is None else max_blocks * seq_len
    for i in (range(len(texts)) if seed is None else seeded_order(texts, seed)):
        if not isinstance(texts[i], str):
            raise TypeError(f"{what}[{i}]: expected str, got {type(texts[i]).__name__}")
        if texts[i].strip():
            stream += list(tokenizer(texts[i], add_special_tokens=False)["input_ids"]) + [int(eos)]
        if limit is not None and len(stream) >= limit:
            break
    n = len(stream) // seq_len if max_blocks is None else min(len(stream) // seq_len, max_blocks)
    if n == 0:
        raise ValueError(f"{what}: {len(texts)} texts hold {len(stream)} tokens, fewer than one block of {seq_len}")
    return torch.tensor(stream[: n * seq_len], dtype=torch.long).view(n, seq_len)


class BatchStream:
    """Endless seeded batches of block indices: epoch ``e`` is a permutation seeded by ``(seed, e)``."""

    def __init__(self, n_blocks: int, batch_size: int, seed: int):
        if n_blocks < 1:
            raise ValueError("BatchStream needs at least one block")
        self.n, self.batch_size, self.seed = n_blocks, batch_size, seed
        self.epoch, self._queue = 0, np.empty(0, dtype=np.int64)

    def next(self) -> np.ndarray:
        while self._queue.size < self.batch_size:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            self._queue = np.concatenate([self._queue, perm])
            self.epoch += 1
        out, self._queue = self._queue[: self.batch_size], self._queue[self.batch_size:]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        while True:
            yield self.next()


# ------------------------------------------------------------------ loss


def _token_ce(model: Any, blocks: Any) -> Any:
    """Mean next-token cross-entropy (float32) of a batch of full blocks."""
    import torch.nn.functional as F

    logits = model(input_ids=blocks).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1))


def mean_loss(model: Any, blocks: Any, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats per token) of ``blocks`` under ``model``, without gradients."""
    import torch

    if blocks.shape[0] == 0:
        raise ValueError("mean_loss needs at least one block")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        with torch.inference_mode():
            for s in range(0, blocks.shape[0], batch_size):
                chunk = blocks[s : s + batch_size].to(device)
                total += float(_token_ce(model, chunk)) * chunk.shape[0]
    finally:
        model.train(was_training)
    return total / blocks.shape[0]


# ------------------------------------------------------------------ trainer


def fresh_copy(model: Any) -> Any:
    """A deep copy of a loaded model that training may change (the process-wide cached model stays intact)."""
    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(True)
    return copied


@dataclass
class StepStats:
    steps: dict[int, int] = field(default_factory=lambda: {1: 0, -1: 0})
    tokens: int = 0
    seconds: float = 0.0


class Trainer:
    """Owns a model (pass :func:`fresh_copy`) and takes optimizer steps on batches of blocks."""

    def __init__(self, model: Any, cfg: TrainConfig):
        import torch

        torch.manual_seed(cfg.seed)
        if cfg.lora is not None:
            from peft import LoraConfig, get_peft_model

            target = cfg.lora.target_modules
            model = get_peft_model(model, LoraConfig(
                r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=target if isinstance(target, str) else list(target), bias="none"))
        self.cfg = cfg
        self.model = model.to(cfg.device)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.stats = StepStats()
        self._opt: dict[int, Any] = {}

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    def _optimizer(self, direction: int) -> Any:
        import torch

        if direction not in self._opt:
            self._opt[direction] = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return self._opt[direction]

    def step(self, batch: Any, direction: int = 1) -> float:
        """One optimizer step on ``batch`` (``batch_size`` blocks); returns its mean loss before the update."""
        import torch

        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be +1 (descent) or -1 (ascent), got {direction}")
        if batch.shape != (self.cfg.batch_size, self.cfg.seq_len):
            raise ValueError(f"batch has shape {tuple(batch.shape)}, expected ({self.cfg.batch_size}, {self.cfg.seq_len})")
        start = time.perf_counter()
        opt = self._optimizer(direction)
        opt.zero_grad(set_to_none=True)
        micro, total = self.cfg.micro, 0.0
        for s in range(0, batch.shape[0], micro):
            chunk = batch[s : s + micro].to(self.cfg.device)
            loss = _token_ce(self.model, chunk)
            (loss * (direction * chunk.shape[0] / batch.shape[0])).backward()
            total += float(loss.detach()) * chunk.shape[0]
        if self.cfg.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.stats.steps[direction] += 1
        self.stats.tokens += batch.numel()
        self.stats.seconds += time.perf_counter() - start
        return total / batch.shape[0]

    def loss(self, blocks: Any, batch_size: int = 8) -> float:
        return mean_loss(self.model, blocks, batch_size)

    def finished_model(self) -> Any:
        """The trained model as a plain transformers model in eval mode (LoRA adapters merged)."""
        model = self.model.merge_and_unload() if self.cfg.lora is not None else self.model
        model.eval()
        return model
