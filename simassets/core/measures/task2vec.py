"""Task2Vec embeddings of text datasets, the diversity coefficient and the alignment coefficient.

A batch of texts is embedded as the **diagonal Fisher information** of a probe causal LM on that
batch (Achille et al. 2019, Task2Vec), as Miranda et al. ("Beyond Scale: the Diversity Coefficient
...", code: alycialee|brando90/beyond-scale-language-data-diversity) and Chawla et al. (alignment
coefficient) use it. What their code does, and what this module does:

* **Fisher estimator.** Theirs (``montecarlo_fisher_autoregressive``): for each loader mini-batch of
  8 sequences, sample a target token from the model's own predictive distribution (Task2Vec's
  Monte-Carlo Fisher, not the dataset's next token), take the gradient of the mean token
  cross-entropy, square it elementwise, and average the squares over mini-batches. Their code shifts
  logits and sampled targets as for a next-token loss, so position t's logits meet the target
  sampled from position t+1's distribution. Here each position's logits are paired with the target
  sampled from *those* logits -- the textbook Fisher E_{y~p(.|x)}[grad log p(y|x)^2]; the shifted
  pairing is not a Fisher of any distribution the model defines. ``fisher_batch_size`` sequences
  per backward pass, by default 1. Their
  task batch of 512 sequences averages 64 squared mini-batch gradients; a batch of 8 in one pass
  would average a single one, whose Monte-Carlo noise swamps the differences between datasets, so
  at this scale each sequence gets its own pass (8 squared gradients). ``fisher="empirical"``
  uses the actual next tokens instead (the "empirical Fisher"). Sampling is seeded per batch, and
  the probe runs in eval mode (theirs leaves GPT-2's dropout on).
* **Padding.** Theirs pads to ``max_length`` and passes ``ignore_index=50256`` to the loss on the
  *sampled* targets, which does not exclude pad positions. Here pad positions are excluded: targets
  are drawn only at positions whose next token is real, in an order that extra padding does not
  change, and the loss is the mean over those positions -- padding cannot move the embedding.
* **Parameters and reduction.** Theirs computes the Fisher of every parameter, then keeps every
  module's ``weight`` except the ``lm_head`` module's, reduced filter-wise (``grad2.reshape(rows,
  -1).mean(1)``, one value per output row). GPT-2 ties ``lm_head`` to the token embedding, so the
  shared matrix still appears (as ``wte``). ``parameters`` selects the weights:

  - ``"all"``: theirs -- every distinct ``*.weight`` (a tied embedding/head once; an untied output
    head left out). SmolLM2-135M: 239,808 values (49,152 embedding rows + 30 x 6,336 + 576), a
    full backward pass per ``fisher_batch_size`` sequences.
  - ``"last_block"``: the weights of the last decoder block and the final norm only (SmolLM2-135M:
    6,912 values); the backward pass stops at that block.
  - ``"lm_head"``: the output head matrix only, one value per vocabulary entry (49,152 for
    SmolLM2-135M); its gradient is taken through the head alone, with the hidden states fixed.

  The filter-wise mean keeps an embedding to at most a few hundred thousand floats (the raw diagonal
  over SmolLM2-135M would be 135M). The default is ``"all"``, as theirs: on SmolLM2-135M it costs
  about 3x ``"last_block"`` per batch (benchmarks/task2vec.py); both tell domains apart there, and
  on a tiny briefly-trained probe only ``"all"`` does reliably.
* **Head fitting.** Theirs first fine-tunes the head on the batch for a few epochs (AdamW, lr 5e-5,
  eps 1e-8, weight decay 1e-4, real next-token loss). ``head_finetune_epochs`` does this on the
  cached final hidden states (Task2Vec's "fit the classifier on cached features") and restores the
  head afterwards; the default 0 skips it (at lr 5e-5 a handful of steps barely moves a pretrained
  head, and each epoch costs another pass through the head).
* **Batches.** Theirs (``get_diversity_coefficient``) reshuffles the streamed dataset with the *same*
  seed before every batch (``dataset.shuffle(buffer_size, seed=seed)`` inside the batch loop), so
  successive batches are drawn from the same shuffle rather than independently; each text is
  truncated to its first ``max_seq_length`` (128) tokens -- one sequence per text, no chunking.
  Here batch ``b`` is the ``batch_size`` texts with the smallest stable hash under ``(seed, b)``, so
  batches are drawn independently (they may share texts) and do not depend on the input order; each
  text is truncated to its first ``seq_len`` tokens (the tokenizer's own special tokens, no extra
  BOS). Empty texts are dropped.
* **Distance.** Task2Vec's ``cosine``: ``d(a, b) = cosine_distance(a / (a + b), b / (a + b))``
  elementwise. Theirs adds 1e-8 to ``a + b``; here coordinates with ``a + b = 0`` are 0 in both
  vectors, which keeps ``d`` invariant to the scale of the Fisher. Fisher values are non-negative,
  so ``d`` lies in [0, 1].
* **Coefficients.** Diversity = mean distance over the pairs of distinct batches of one dataset;
  alignment = 1 - mean distance over all (batch of A, batch of B) pairs. Theirs reports mean +- the
  population standard deviation of the pair distances (``stats_of_distance_matrix``), a spread, not
  an interval for the mean. Here the 95% interval is ``mean +- t(0.975, n-1) * sd / sqrt(n)`` over the
  pair distances; the pairs share batches and are not independent, so even this is narrower than an
  honest interval would be.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simassets.core.hashing import fingerprint, seeded_hash64, sha256_text
from simassets.core.measures.model import pad_id_of, right_pad
from simassets.core.paths import atomic_write
from simassets.core.measures.registry import MeasureSpec, register

TASK2VEC_VERSION = 1  # part of every cache key: bump when the estimator changes
PARAMETER_SETS = ("all", "last_block", "lm_head")
FISHER_KINDS = ("montecarlo", "empirical")


@dataclass(frozen=True)
class Task2VecParams:
    batch_size: int = 8  # texts per batch ("task")
    seq_len: int = 128  # tokens kept per text (truncation)
    n_batches: int = 4  # batches embedded per dataset
    seed: int = 0
    parameters: str = "all"  # "all" | "last_block" | "lm_head" (see module docstring)
    fisher: str = "montecarlo"  # "montecarlo" (sampled targets) | "empirical" (real next tokens)
    fisher_batch_size: int = 1  # sequences per backward pass; the Fisher averages squared gradients over passes
    head_finetune_epochs: int = 0
    head_finetune_lr: float = 5e-5

    def __post_init__(self) -> None:
        if self.parameters not in PARAMETER_SETS:
            raise ValueError(f"Task2VecParams.parameters must be one of {PARAMETER_SETS}, got {self.parameters!r}")
        if self.fisher not in FISHER_KINDS:
            raise ValueError(f"Task2VecParams.fisher must be one of {FISHER_KINDS}, got {self.fisher!r}")
        for name in ("batch_size", "n_batches", "fisher_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Task2VecParams.{name} must be positive, got {getattr(self, name)}")
        if self.seq_len < 2:
            raise ValueError(f"Task2VecParams.seq_len must be at least 2, got {self.seq_len}")
        if self.head_finetune_epochs < 0:
            raise ValueError(f"Task2VecParams.head_finetune_epochs must be >= 0, got {self.head_finetune_epochs}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CoefficientResult:
    value: float
    ci_low: float  # 95% interval (see module docstring); NaN with a single pair
    ci_high: float
    n_pairs: int
    distances: tuple[float, ...]  # the pair distances the value averages


# ------------------------------------------------------------------ probe parameters


def _selected_weights(model: Any, which: str) -> list[Any]:
    """The weight tensors whose Fisher diagonal forms the embedding (see module docstring)."""
    import torch.nn as nn

    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embeddings: not a causal LM probe")
    if which == "lm_head":
        return [head.weight]
    named = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
    if which == "all":
        tied = head.weight is model.get_input_embeddings().weight
        return [p for _, p in named if tied or p is not head.weight]
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no list of decoder blocks found for parameters='last_block'")
    name, blocks = max(lists, key=lambda nm: len(nm[1]))
    last = f"{name}.{len(blocks) - 1}."
    norms = [n for n, m in model.named_modules()
             if "norm" in type(m).__name__.lower() and not n.startswith(name + ".")]
    return [p for n, p in named if n.startswith(last) or any(n == f"{nn_}.weight" for nn_ in norms)]


def embedding_size(model: Any, parameters: str) -> int:
    """Length of a Task2Vec embedding for ``model`` with the given parameter set."""
    return sum(int(p.shape[0]) for p in _selected_weights(model, parameters))


# ------------------------------------------------------------------ embeddings


def _generator(device: Any, params: Task2VecParams, batch_seed: int) -> Any:
    import torch

    gen = torch.Generator(device=device)
    gen.manual_seed(seeded_hash64(params.seed, f"task2vec-fisher/{batch_seed}") & (2**63 - 1))
    return gen


def _head_logits(model: Any, input_ids: Any, mask: Any, head_only: bool) -> Any:
    """Logits as ``head(last_hidden_state)`` (soft-capped where the config says so, as Gemma 2);
    with ``head_only`` the hidden states carry no gradient."""
    import torch

    with torch.set_grad_enabled(not head_only):
        hidden = model.base_model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    logits = model.get_output_embeddings()(hidden).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def _predicted(mask: Any) -> Any:
    """Positions whose next token is real (right padding): the only positions scored."""
    return (mask[:, :-1] * mask[:, 1:]).bool()


def _sample(logits: Any, gen: Any) -> Any:
    """One token per row from ``softmax(logits)`` by inverse CDF (much faster than multinomial on CPU)."""
    import torch

    cdf = torch.softmax(logits, dim=-1).cumsum_(dim=-1)
    u = torch.rand((logits.shape[0], 1), generator=gen, device=logits.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).clamp_(max=logits.shape[-1] - 1).view(-1)


def _finetune_head(model: Any, micro: list[tuple[Any, Any]], params: Task2VecParams) -> None:
    """Fit the output head on cached final hidden states (AdamW, real next-token loss)."""
    import torch
    import torch.nn.functional as F

    head = model.get_output_embeddings()
    with torch.no_grad():
        cache = [(model.base_model(input_ids=i, attention_mask=m).last_hidden_state, i, m) for i, m in micro]
    opt = torch.optim.AdamW([head.weight], lr=params.head_finetune_lr, eps=1e-8, weight_decay=1e-4)
    for _ in range(params.head_finetune_epochs):
        for hidden, ids, mask in cache:
            keep = _predicted(mask)
            if keep.any():
                opt.zero_grad()
                F.cross_entropy(head(hidden)[:, :-1].float()[keep], ids[:, 1:][keep]).backward()
                opt.step()
    head.weight.grad = None


def fisher_embedding(model: Any, input_ids: Any, attention_mask: Any, params: Task2VecParams,
                     batch_seed: int, exact_weight_gradients: bool = False) -> np.ndarray:
    """Filter-wise diagonal Fisher of the selected weights on one right-padded batch of token ids.

    With ``parameters="all"`` the rows of the linear layers and of a plain ``nn.Embedding`` (tied to the head or
    not) come from :class:`_RowFisher`, which forms no weight gradient; ``exact_weight_gradients`` forms every
    weight gradient with autograd instead (the reference that the tests and ``benchmarks/task2vec.py`` compare
    with). A model :class:`_RowFisher` cannot handle falls back to the reference."""
    if params.parameters == "all" and not exact_weight_gradients:
        try:
            return _fisher(model, input_ids, attention_mask, params, batch_seed, rows=True)
        except _Unsupported:
            pass
    return _fisher(model, input_ids, attention_mask, params, batch_seed, rows=False)


class _Unsupported(Exception):
    """The model has a selected weight whose Fisher rows :class:`_RowFisher` cannot form."""


def _fisher(model: Any, input_ids: Any, attention_mask: Any, params: Task2VecParams, batch_seed: int,
            rows: bool) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    weights = _selected_weights(model, params.parameters)
    position = {id(w): i for i, w in enumerate(weights)}
    head = model.get_output_embeddings()
    flags = [(p, p.requires_grad) for p in model.parameters()]
    saved_head = head.weight.detach().clone() if params.head_finetune_epochs else None
    was_training = model.training
    n = input_ids.shape[0]
    micro = [(input_ids[s : s + params.fisher_batch_size], attention_mask[s : s + params.fisher_batch_size])
             for s in range(0, n, params.fisher_batch_size)]
    gen = _generator(device, params, batch_seed)
    acc = [torch.zeros(int(w.shape[0]), dtype=torch.float32, device=device) for w in weights]
    row_fisher = None
    used = 0
    try:
        model.eval()  # no dropout: the embedding is a deterministic function of (batch, seed)
        for p, _ in flags:
            p.requires_grad_(False)
        if saved_head is not None:
            head.weight.requires_grad_(True)
            _finetune_head(model, micro, params)
            head.weight.requires_grad_(False)
        row_fisher = _RowFisher.attach(model, weights, position, acc) if rows else None
        by_autograd = row_fisher.autograd_weights if row_fisher else weights
        for w in by_autograd:
            w.requires_grad_(True)
        for ids, mask in micro:
            width = int(mask.sum(dim=1).max())  # drop the all-padding columns of this pass
            ids, mask = ids[:, :width], mask[:, :width]
            keep = _predicted(mask)
            if not keep.any():
                continue
            if row_fisher:
                row_fisher.start(ids)
            logits = _head_logits(model, ids, mask, head_only=params.parameters == "lm_head")[:, :-1][keep]
            if params.fisher == "montecarlo":
                targets = _sample(logits.detach(), gen)
            else:
                targets = ids[:, 1:][keep]
            inputs = [*by_autograd, row_fisher.embedded] if row_fisher else by_autograd
            # the row hooks add their layers' rows while autograd passes them
            grads = torch.autograd.grad(F.cross_entropy(logits, targets), inputs, allow_unused=True)
            for w, g in zip(by_autograd, grads):
                if g is not None:
                    acc[position[id(w)]] += g.float().pow(2).reshape(g.shape[0], -1).mean(dim=1)
            if row_fisher:
                row_fisher.finish()
            used += 1
    finally:
        if row_fisher:
            row_fisher.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        if saved_head is not None:
            with torch.no_grad():
                head.weight.copy_(saved_head)
        model.train(was_training)
    if used == 0:
        raise ValueError("Task2Vec batch has no predicted token (every text is shorter than 2 tokens)")
    return torch.cat(acc).div_(used).cpu().numpy()


def _square_row_sums(x: Any, d: Any) -> Any:
    """``sum_k (sum_t d[t, r] x[t, k])^2`` for every row ``r`` of a linear layer's weight gradient ``d^T x``.

    With T positions, K inputs and R outputs, forming ``d^T x`` costs T R K; the Gram form ``d_r^T (x x^T) d_r``
    costs T^2 (K + R) -- 2.3-3.3x fewer for SmolLM2's layers at 128 tokens. The cheaper form is taken."""
    t, k = x.shape
    r = d.shape[1]
    if t * (k + r) < r * k:
        return ((x @ x.T) @ d).mul_(d).sum(dim=0)
    return (d.T @ x).pow_(2).sum(dim=1)


class _RowFisher:
    """The filter-wise Fisher rows of the linear layers and the input embedding, without their weight gradients.

    A linear layer's gradient is ``d^T x`` (d: the gradient at its output, x: its input, one row per position of
    the pass); only the mean of its squares per output row is kept, and :func:`_square_row_sums` gets that from
    ``d`` and ``x`` directly. The embedding matrix (every vocabulary row, through the tied head; the rows of the
    pass's tokens, through the input) is handled the same way. Forward hooks keep each layer's input and hook its
    output's gradient; autograd then forms no weight gradient for these layers (the input gradients it needs
    anyway are all that is computed). The other selected weights (norms, a weight shared by two modules) keep
    autograd; a model with an embedding subclass, or a linear layer called twice in one pass, goes to the
    reference path. On SmolLM2-135M this is 1.5x faster per batch; rows agree with the autograd path to a few 1e-6
    (relative)."""

    def __init__(self, model: Any, position: dict[int, int], acc: list) -> None:
        self.acc, self.position = acc, position  # id(weight) -> its index in ``acc``
        self.handles: list = []
        self.calls: dict[int, int] = {}
        self.emb, self.head = model.get_input_embeddings(), model.get_output_embeddings()
        self.tied = self.head.weight is self.emb.weight
        self.embedded = None
        self.state: dict[str, Any] = {}

    @classmethod
    def attach(cls, model: Any, weights: list, position: dict[int, int], acc: list) -> _RowFisher:
        import torch.nn as nn

        self = cls(model, position, acc)
        if type(self.emb) is not nn.Embedding or id(self.emb.weight) not in self.position:
            raise _Unsupported(f"input embedding {type(self.emb).__name__}")  # e.g. Gemma's scaled embedding
        owners = Counter(id(p) for module in model.modules() for p in module.parameters(recurse=False))
        linears = [m for m in model.modules() if isinstance(m, nn.Linear) and m is not self.head
                   and id(m.weight) in self.position and owners[id(m.weight)] == 1]
        handled = {id(m.weight) for m in linears} | {id(self.emb.weight)}
        self.autograd_weights = [w for w in weights if id(w) not in handled]
        for m in linears:
            self.handles.append(m.register_forward_hook(self._linear))
        self.handles.append(self.emb.register_forward_hook(self._embedding))
        if self.tied:
            self.handles.append(self.head.register_forward_hook(self._head))
        return self

    def start(self, ids: Any) -> None:
        self.ids, self.calls, self.state = ids, {}, {}

    def _linear(self, module: Any, inputs: tuple, out: Any) -> None:
        self.calls[id(module)] = self.calls.get(id(module), 0) + 1
        if self.calls[id(module)] > 1 or not out.requires_grad:
            raise _Unsupported(f"{type(module).__name__} called twice in one pass, or off the embedding's graph")
        x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float()
        index, k = self.position[id(module.weight)], x.shape[1]

        def add(grad: Any) -> None:
            self.acc[index] += _square_row_sums(x, grad.reshape(-1, grad.shape[-1]).float()).div_(k)

        out.register_hook(add)

    def _embedding(self, module: Any, inputs: tuple, out: Any) -> Any:
        out = out.detach().requires_grad_(True)  # the graph starts here: the embedding's gradient is formed below
        self.embedded = out
        out.register_hook(lambda g: self.state.__setitem__("d_embedded", g))
        return out

    def _head(self, module: Any, inputs: tuple, out: Any) -> None:
        self.state["hidden"] = inputs[0].detach()
        out.register_hook(lambda g: self.state.__setitem__("d_logits", g))

    def finish(self) -> None:
        """The embedding matrix's rows for this pass: the head's part over every row, the input's on its tokens."""
        import torch

        d_in = self.state["d_embedded"].reshape(-1, self.emb.weight.shape[1]).float()
        uniq, inv = torch.unique(self.ids.reshape(-1), return_inverse=True)
        from_input = torch.zeros(len(uniq), d_in.shape[1], dtype=d_in.dtype, device=d_in.device).index_add_(
            0, inv, d_in)
        k = d_in.shape[1]
        if self.tied:
            a = self.state["d_logits"].reshape(-1, self.state["d_logits"].shape[-1]).float()
            h = self.state["hidden"].reshape(-1, k).float()
            scored = a.abs().sum(dim=1) > 0  # positions the loss reads; the others add exact zeros
            a, h = a[scored], h[scored]
            rows = _square_row_sums(h, a)
            rows[uniq] = (a[:, uniq].T @ h + from_input).pow_(2).sum(dim=1)  # both parts, summed before squaring
        else:
            rows = torch.zeros(self.emb.weight.shape[0], dtype=d_in.dtype, device=d_in.device)
            rows[uniq] = from_input.pow(2).sum(dim=1)
        self.acc[self.position[id(self.emb.weight)]] += rows.div_(k)
        self.state = {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def tokenize_batch(tokenizer: Any, texts: Sequence[str], seq_len: int) -> tuple[Any, Any]:
    """Each text truncated to ``seq_len`` tokens by the tokenizer, right-padded into ``(input_ids, attention_mask)``."""
    seqs = []
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(text).__name__}")
        enc = tokenizer(text, add_special_tokens=True, truncation=True, max_length=seq_len)["input_ids"]
        seqs.append(list(enc) or [pad_id_of(tokenizer)])
    return right_pad(seqs, pad_id_of(tokenizer))


def batch_embedding(model: Any, tokenizer: Any, texts: Sequence[str], params: Task2VecParams,
                    batch_seed: int) -> np.ndarray:
    """Task2Vec embedding of one batch (all of ``texts``); ``batch_seed`` seeds the target sampling."""
    if not texts:
        raise ValueError("Task2Vec batch is empty")
    input_ids, mask = tokenize_batch(tokenizer, texts, params.seq_len)
    return fisher_embedding(model, input_ids, mask, params, batch_seed)


def _usable(texts: Sequence[str]) -> list[str]:
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}]: expected str, got {type(t).__name__}")
    return [t for t in texts if t.strip()]


def draw_batch(texts: Sequence[str], batch_size: int, seed: int, index: int) -> list[str]:
    """Batch ``index``: the ``batch_size`` texts with the smallest hash under ``(seed, index)``."""
    if len(texts) < batch_size:
        raise ValueError(f"need at least batch_size={batch_size} non-empty texts, got {len(texts)}")
    keyed = sorted((seeded_hash64(f"{seed}/{index}", h), h, t) for h, t in ((sha256_text(t), t) for t in texts))
    return [t for _, _, t in keyed[:batch_size]]


def dataset_embeddings(model: Any, tokenizer: Any, texts: Sequence[str], params: Task2VecParams) -> list[np.ndarray]:
    """Embeddings of ``params.n_batches`` batches drawn from ``texts`` (batch ``b`` under ``(seed, b)``)."""
    pool = _usable(texts)
    return [batch_embedding(model, tokenizer, draw_batch(pool, params.batch_size, params.seed, b), params, b)
            for b in range(params.n_batches)]


# ------------------------------------------------------------------ distance and coefficients


def task2vec_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Task2Vec cosine distance between two Fisher embeddings, normalised by their sum; in [0, 1]."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"embeddings must be 1-D of equal length, got shapes {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("Fisher embeddings must be non-negative")
    total = a + b
    nz = total > 0
    ua, ub = np.zeros_like(a), np.zeros_like(b)
    ua[nz], ub[nz] = a[nz] / total[nz], b[nz] / total[nz]
    na, nb = np.linalg.norm(ua), np.linalg.norm(ub)
    if na == 0 or nb == 0:
        raise ValueError("an all-zero Fisher embedding has no direction")
    return float(np.clip(1.0 - ua @ ub / (na * nb), 0.0, 1.0))


def _summarise(distances: list[float], flip: bool) -> CoefficientResult:
    from scipy import stats

    d = np.asarray(distances, dtype=np.float64)
    mean = float(d.mean())
    if len(d) > 1:
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    else:
        half = float("nan")
    low, high = mean - half, mean + half
    if flip:
        mean, low, high = 1.0 - mean, 1.0 - high, 1.0 - low
    return CoefficientResult(value=mean, ci_low=low, ci_high=high, n_pairs=len(d), distances=tuple(distances))


def diversity_coefficient(embs: Sequence[np.ndarray]) -> CoefficientResult:
    """Expected Task2Vec distance between two distinct batches of one dataset."""
    if len(embs) < 2:
        raise ValueError(f"the diversity coefficient needs at least 2 batch embeddings, got {len(embs)}")
    return _summarise([task2vec_distance(embs[i], embs[j])
                       for i in range(len(embs)) for j in range(i + 1, len(embs))], flip=False)


def alignment_coefficient(embs_a: Sequence[np.ndarray], embs_b: Sequence[np.ndarray]) -> CoefficientResult:
    """1 - expected Task2Vec distance between a batch of A and a batch of B (all pairs)."""
    if not embs_a or not embs_b:
        raise ValueError("the alignment coefficient needs at least one batch embedding on each side")
    return _summarise([task2vec_distance(a, b) for a in embs_a for b in embs_b], flip=True)


# ------------------------------------------------------------------ cache


def texts_fingerprint(texts: Sequence[str]) -> str:
    """Content identity of a dataset for Task2Vec: the multiset of its non-empty texts (order-free)."""
    return fingerprint(sorted(sha256_text(t) for t in _usable(texts)))


def weights_fingerprint(model: Any) -> str:
    """sha256 over a model's config and weights, for callers without a model-spec fingerprint."""
    import hashlib

    import torch

    h = hashlib.sha256(model.config.to_json_string(use_diff=False).encode("utf-8"))
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Task2VecCache:
    """Batch embeddings on disk, one ``.npy`` (``n_batches x dim``) per (dataset, probe, params).

    The key is ``fingerprint`` of the dataset's content hash, the probe's fingerprint, the params and
    ``TASK2VEC_VERSION``; a ``.json`` beside each file records what the key stands for.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def key(self, dataset_hash: str, probe: str, params: Task2VecParams) -> str:
        return fingerprint({"version": TASK2VEC_VERSION, "dataset": dataset_hash, "probe": probe,
                            "params": params.as_dict()})

    def path(self, dataset_hash: str, probe: str, params: Task2VecParams) -> Path:
        key = self.key(dataset_hash, probe, params)
        return self.root / key[:2] / f"{key}.npy"

    def load(self, dataset_hash: str, probe: str, params: Task2VecParams) -> list[np.ndarray] | None:
        path = self.path(dataset_hash, probe, params)
        if not path.exists():
            return None
        arr = np.load(path)
        if arr.ndim != 2 or arr.shape[0] != params.n_batches:
            raise ValueError(f"{path}: expected {params.n_batches} embeddings, found array of shape {arr.shape}")
        return list(arr)

    def save(self, dataset_hash: str, probe: str, params: Task2VecParams, embs: Sequence[np.ndarray]) -> Path:
        path = self.path(dataset_hash, probe, params)
        meta = {"version": TASK2VEC_VERSION, "dataset": dataset_hash, "probe": probe, "params": params.as_dict()}
        atomic_write(path.with_suffix(".json"), lambda fh: fh.write(json.dumps(meta, indent=1).encode()))
        atomic_write(path, lambda fh: np.save(fh, np.stack([np.asarray(e, dtype=np.float32) for e in embs])))
        return path

    def embeddings(self, model: Any, tokenizer: Any, texts: Sequence[str], params: Task2VecParams,
                   probe: str) -> list[np.ndarray]:
        """Cached embeddings of ``texts`` under ``probe``, computed and stored on a miss.

        ``probe`` names the probe's weights and tokenizer, e.g. ``LoadedModel.fingerprint`` from
        :mod:`simassets.core.models` (or :func:`weights_fingerprint`).
        """
        dataset_hash = texts_fingerprint(texts)
        cached = self.load(dataset_hash, probe, params)
        if cached is not None:
            return cached
        embs = dataset_embeddings(model, tokenizer, texts, params)
        self.save(dataset_hash, probe, params, embs)
        return embs


# ------------------------------------------------------------------ registered measures
register(MeasureSpec(
    name="task2vec_alignment", range=(0.0, 1.0), family="task2vec", levels=("dataset",), direction=1, needs_model=True,
    description="Alignment coefficient (Chawla et al.): 1 - expected Task2Vec distance between a corpus batch and a benchmark batch, where a batch's embedding is the diagonal Monte-Carlo Fisher information of a probe LM; 95% interval over batch pairs.",
    formula="1 - E_{b in corpus, b' in bench} d(F_b, F_b'),  d(a, b) = cos_dist(a/(a+b), b/(a+b))",
    params={"probe": "profile task2vec_probe (default: smallest registered model)", "quick": "last_block, 3 batches x 4 texts x 64 tokens",
            "full": "all weights, 4 batches x 8 texts x 128 tokens", "fisher": "montecarlo"},
))


# ------------------------------------------------------------------ the probe, the profile's parameters, the family
def task2vec_params(profile: str, seed: int) -> Task2VecParams:
    """The profile's Task2Vec parameters (``quick``: the cheap probe settings, last block only, small batches)."""
    if profile == "quick":
        return Task2VecParams(batch_size=4, seq_len=64, n_batches=3, seed=seed, parameters="last_block")
    return Task2VecParams(batch_size=8, seq_len=128, n_batches=4, seed=seed, parameters="all")


def probe_spec(scope):
    """The Task2Vec probe of every Task2Vec measure (the assets and the training interventions): the profile's
    pinned ``task2vec_probe``, else the registered model of the profile with the fewest parameters.

    Pin it: with the fallback, registering a smaller model changes the probe and so every Task2Vec row."""
    from simassets.core.catalog import CatalogError
    from simassets.core.finetune import smallest_model
    from simassets.core.models import ModelRegistryError, models_for_profile

    registry, pinned = scope.models, scope.spec.task2vec_probe
    if pinned:
        if pinned not in registry:
            raise CatalogError(f"{scope.catalog.source_file}: [profiles.{scope.profile}] task2vec_probe = {pinned!r} is "
                               f"not in the model registry {scope.registry_file} (registered: {sorted(registry)})")
        return registry[pinned]
    specs = models_for_profile(registry, scope.profile) or list(registry.values())
    if not specs:
        raise ModelRegistryError(f"{scope.registry_file}: Task2Vec needs a probe model; register one with "
                                 "`simassets models add`")
    return smallest_model(specs)


def dataset_texts(scope, kind: str, name: str) -> list[str]:
    """The texts Task2Vec embeds for a corpus (its sampled documents) or a benchmark (input + gold target)."""
    from simassets.core.schema import BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS
    from simassets.core.tasks import benchmark_text

    if kind == "corpus":
        return scope.read(CORPUS_DOCUMENTS, {"corpus": name})["text"].tolist()
    return benchmark_text(scope.read(BENCHMARK_EXAMPLES, {"benchmark": name}))


def _diversity_keys(kind: str, name: str) -> dict[str, str]:
    return {"dataset_kind": kind, "dataset": name}


def _alignment_inputs(scope, keys) -> dict:
    from simassets.core.schema import DATASET_DIVERSITY

    return {kind: scope.upstream(DATASET_DIVERSITY, _diversity_keys(kind, keys[kind])) for kind in ("corpus", "benchmark")}


def _alignment(call):
    """1 - expected Task2Vec distance between a corpus batch and a benchmark batch, from the cached embeddings."""
    import pandas as pd

    from simassets.core.computation import Output
    from simassets.core.hashing import canonical_json
    from simassets.core.models import model_fingerprint
    from simassets.core.schema import DATASET_SIMILARITY

    scope = call.scope
    probe, params = probe_spec(scope), task2vec_params(call.profile, scope.seed)
    cache, probe_fp = Task2VecCache(scope.cache_dir / "task2vec"), model_fingerprint(probe)
    embs = {kind: cache.load(texts_fingerprint(dataset_texts(scope, kind, call.keys[kind])), probe_fp, params)
            for kind in ("corpus", "benchmark")}
    if any(e is None for e in embs.values()):
        raise ValueError(f"Task2Vec embeddings missing from {cache.root} for {dict(call.keys)}: materialize "
                         "corpus_task2vec and benchmark_task2vec first")
    res = alignment_coefficient(embs["corpus"], embs["benchmark"])
    row = pd.DataFrame([{"model": "", "measure": "task2vec_alignment", "value": res.value, "ci_low": res.ci_low,
                         "ci_high": res.ci_high, "n": res.n_pairs, "warning": None,
                         "params": canonical_json({**params.as_dict(), "probe": probe.id})}])
    return Output({DATASET_SIMILARITY: row}, metadata={
        "alignment_coefficient": res.value, "ci_low": res.ci_low, "ci_high": res.ci_high, "batch_pairs": res.n_pairs,
        "probe": probe.id})


def _family():
    from simassets.core.computation import Computation, Upstream
    from simassets.core.measures.registry import register_family
    from simassets.core.schema import DATASET_SIMILARITY

    return register_family(Computation(
        name="task2vec_alignment", group="task2vec", partitioning="corpus_x_benchmark",
        description="Alignment coefficient between a corpus sample and a benchmark: 1 - expected Task2Vec distance "
                    "between a corpus batch and a benchmark batch, with a 95% interval over batch pairs (from the "
                    "cached embeddings; no model pass).",
        writes=(DATASET_SIMILARITY,), inputs=_alignment_inputs, compute=_alignment,
        upstream=(Upstream("corpus_task2vec"), Upstream("benchmark_task2vec")), kinds=("numpy", "parquet"),
        storage_keys=lambda keys: {**keys, "asset": "task2vec_alignment"}))


FAMILY = _family()
