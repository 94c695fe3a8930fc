"""Log-likelihood scoring that runs each shared prefix once: lm-eval's answers from fewer forward tokens.

lm-eval scores each answer choice of a multiple-choice document with its own copy of the context. Here the
requests are grouped by a common token prefix (the whole context for ``mc`` tasks, the part before the blank
for ``schema`` tasks); each prefix runs through the model once, its key/value cache is copied to every request
of the group, and only the rest of each request (its continuation, or the rest of its context) runs on top of
it. Requests that share nothing (``lm`` tasks) are scored as lm-eval scores them, in batches sorted by length
under a token budget. Log-probabilities are computed only at the positions that are scored (the output head
runs on those hidden states alone, in chunks), so Gemma's 262k-entry vocabulary never makes full-sequence
logits the memory peak.

The inputs are exactly lm-eval's: ``(context_enc, continuation_enc)`` token lists from its own ``_encode_pair``,
cut to ``(context + continuation)[-(max_length + 1):]`` as lm-eval cuts them (a context longer than the
window loses tokens on the left). The result per request is lm-eval's ``(sum of log-probs, is_greedy)``, and,
where asked, the context's own NLL (tokens after the first) read off the same passes.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_SHARED_TOKENS = 4  # a prefix shorter than this is not worth a pass of its own
HEAD_CHUNK = 256  # positions per output-head matmul (bounds the logits held at once: 256 x vocab floats)
# tokens (padding included) per forward pass: on CPU small passes are faster per token (SmolLM2, 2 threads: 1,260
# tok/s at 512 tokens a pass, 910 at 8,192 -- the activations stay in cache; end to end 384-640 were best, 8,192
# was 1.5x slower); a GPU wants far larger ones
DEFAULT_TOKEN_BUDGET = {"cpu": 512, "cuda": 16384}


@dataclass(frozen=True)
class Scored:
    loglik: float  # sum of the continuation's log-probabilities
    greedy: bool  # every continuation token is the argmax of its distribution
    context_nll: tuple[float, int] | None = None  # (NLL of context tokens 2..n, n - 1); None if cut or not asked


@dataclass
class _Item:
    index: int
    x: list[int]  # (context + continuation) cut to the window; the model is fed x[:-1]
    n_cont: int
    n_ctx: int  # context tokens left in x
    ctx_whole: bool  # the context was not cut

    @property
    def fed(self) -> list[int]:
        return self.x[:-1]

    def scored_positions(self) -> range:
        """Positions whose logits predict the continuation (position t predicts x[t + 1])."""
        return range(len(self.x) - self.n_cont - 1, len(self.x) - 1)

    def context_positions(self) -> range:
        return range(0, self.n_ctx - 1)


@dataclass
class _Group:
    prefix: list[int]
    members: list[int] = field(default_factory=list)
    shared: int = 0  # prefix tokens run once (positions < shared come from the prefix pass)


@dataclass
class ScoringStats:
    """Tokens the model ran (padding excluded), and what plain lm-eval scoring would have run."""

    forwarded: int = 0
    padded: int = 0
    plain: int = 0
    passes: int = 0


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_requests(items: list[_Item]) -> list[_Group]:
    """Requests sorted by their token sequences; neighbours sharing a long prefix join one group."""
    groups: list[_Group] = []
    for i in sorted(range(len(items)), key=lambda k: items[k].fed):
        fed = items[i].fed
        if groups:
            g = groups[-1]
            shared = _lcp(g.prefix, fed)
            if shared >= MIN_SHARED_TOKENS and 2 * shared >= len(fed):
                g.members.append(i)
                g.prefix = g.prefix[:shared]
                continue
        groups.append(_Group(prefix=list(fed), members=[i]))
    for g in groups:
        if len(g.members) == 1:
            g.shared = len(g.prefix)  # nothing to share: one plain pass
        else:  # every continuation token must be predicted after the prefix's last position at the earliest
            g.shared = min(len(g.prefix), min(len(items[i].x) - items[i].n_cont for i in g.members))
    return groups


def _batches(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Indices in descending length, cut so that rows x longest row stays within ``budget`` tokens."""
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    out: list[list[int]] = []
    for k in order:
        if out and (len(out[-1]) + 1) * lengths[out[-1][0]] <= budget:
            out[-1].append(k)
        else:
            out.append([k])
    return out


class _Head:
    """Log-probabilities and argmax at selected positions, the output head run on those hidden states only."""

    def __init__(self, model: Any):
        self.head = model.get_output_embeddings()
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(cfg, "final_logit_softcapping", None)

    def __call__(self, hidden: Any, targets: Any) -> tuple[Any, Any]:
        """``hidden``: (k, H) states; ``targets``: (k,) token ids -> (log p(target), argmax) per state."""
        import torch

        logps, argmax = [], []
        for s in range(0, hidden.shape[0], HEAD_CHUNK):
            logits = self.head(hidden[s:s + HEAD_CHUNK]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            lse = torch.logsumexp(logits, dim=-1)
            logps.append(logits.gather(-1, targets[s:s + HEAD_CHUNK, None]).squeeze(-1) - lse)
            argmax.append(logits.argmax(dim=-1))
        return torch.cat(logps), torch.cat(argmax)


def _decoder(model: Any) -> Any:
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def _subcache(cache: Any, rows: Any) -> Any:
    """The cache rows ``rows`` (repeats allowed) as a new cache; the original is left as it is."""
    sub = copy.copy(cache)
    sub.layers = [copy.copy(layer) for layer in cache.layers]
    sub.batch_select_indices(rows)
    return sub


def score(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int,
          token_budget: int | None = None, context_nll: bool = False, pad_id: int = 0,
          stats: ScoringStats | None = None) -> list[Scored]:
    """lm-eval's ``(loglik, is_greedy)`` for every ``(context_enc, continuation_enc)``, each shared prefix run once."""
    import torch
    from transformers import DynamicCache

    stats = stats if stats is not None else ScoringStats()
    items = []
    for i, (ctx, cont) in enumerate(requests):
        if not cont or len(cont) > max_length:
            raise ValueError(f"request {i}: continuation of {len(cont)} tokens (1 to max_length={max_length})")
        x = (list(ctx) + list(cont))[-(max_length + 1):]
        items.append(_Item(i, x, len(cont), len(x) - len(cont), len(x) - len(cont) == len(ctx)))
        stats.plain += len(x) - 1
    groups = group_requests(items)
    device = next(model.parameters()).device
    token_budget = token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, DEFAULT_TOKEN_BUDGET["cpu"])
    head, decoder = _Head(model), _decoder(model)
    logp: dict[tuple[int, int], float] = {}  # (item, position) -> log p(x[position + 1])
    hit: dict[tuple[int, int], bool] = {}

    def wanted(it: _Item, lo: int, hi: int) -> list[int]:
        """Positions in [lo, hi) whose log-prob the item needs."""
        pos = set(it.scored_positions())
        if context_nll and it.ctx_whole:
            pos |= set(it.context_positions())
        return sorted(t for t in pos if lo <= t < hi)

    def collect(hidden: Any, rows: dict[tuple[int, int], list[tuple[int, int]]]) -> None:
        """``rows``: (index into the flattened (B*T, H) states, target token) -> the (item, position) pairs that
        need that log-prob (members of a group share their prefix's positions: each is computed once)."""
        if not rows:
            return
        keys = list(rows)
        idx = torch.tensor([k[0] for k in keys], device=device)
        targets = torch.tensor([k[1] for k in keys], device=device)
        lp, am = head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, idx), targets)
        for key, v, a in zip(keys, lp.tolist(), am.tolist()):
            for it_pos in rows[key]:
                logp[it_pos] = v
                hit[it_pos] = a == key[1]

    with torch.no_grad():
        for batch in _batches([g.shared for g in groups], token_budget):
            gs = [groups[k] for k in batch]
            width = max(g.shared for g in gs)
            ids = torch.full((len(gs), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(gs), width), dtype=torch.long)
            for r, g in enumerate(gs):  # left padding: every prefix ends at the last column
                ids[r, width - g.shared:] = torch.tensor(g.prefix[:g.shared])
                mask[r, width - g.shared:] = 1
            pos_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            need_suffix = any(len(items[i].fed) > g.shared for g in gs for i in g.members)
            cache = DynamicCache(config=model.config) if need_suffix else None
            out = decoder(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos_ids.to(device),
                          past_key_values=cache, use_cache=need_suffix)
            stats.passes += 1
            stats.forwarded += sum(g.shared for g in gs)
            stats.padded += len(gs) * width
            rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
            for r, g in enumerate(gs):
                offset = r * width + (width - g.shared)  # flattened index of the prefix's position 0
                for i in g.members:
                    for t in wanted(items[i], 0, g.shared):
                        rows.setdefault((offset + t, items[i].x[t + 1]), []).append((i, t))
            collect(out.last_hidden_state, rows)
            if not need_suffix:
                continue
            # the rest of each request on top of its group's prefix cache
            members = [(r, i) for r, g in enumerate(gs) for i in g.members if len(items[i].fed) > g.shared]
            lengths = [len(items[i].fed) - gs[r].shared for r, i in members]
            for sub in _batches(lengths, max(token_budget // 2, 1)):
                rows_ = [members[k] for k in sub]
                slen = max(lengths[k] for k in sub)
                s_ids = torch.full((len(rows_), slen), pad_id, dtype=torch.long)
                s_mask = torch.zeros((len(rows_), slen), dtype=torch.long)
                s_pos = torch.zeros((len(rows_), slen), dtype=torch.long)
                for j, (r, i) in enumerate(rows_):
                    rest = items[i].fed[gs[r].shared:]
                    s_ids[j, :len(rest)] = torch.tensor(rest)
                    s_mask[j, :len(rest)] = 1
                    s_pos[j] = gs[r].shared + torch.arange(slen)
                select = torch.tensor([r for r, _ in rows_], device=device)
                sub_cache = _subcache(cache, select)
                full_mask = torch.cat([mask.to(device).index_select(0, select), s_mask.to(device)], dim=1)
                s_out = decoder(input_ids=s_ids.to(device), attention_mask=full_mask, position_ids=s_pos.to(device),
                                past_key_values=sub_cache, use_cache=True,
                                cache_position=torch.arange(width, width + slen, device=device))
                stats.passes += 1
                stats.forwarded += sum(lengths[k] for k in sub)
                stats.padded += len(rows_) * slen
                s_rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
                for j, (r, i) in enumerate(rows_):
                    p = gs[r].shared
                    for t in wanted(items[i], p, len(items[i].fed)):
                        s_rows.setdefault((j * slen + (t - p), items[i].x[t + 1]), []).append((i, t))
                collect(s_out.last_hidden_state, s_rows)
                del sub_cache
    out_: list[Scored] = []
    for it in items:
        scored = list(it.scored_positions())
        nll = None
        if context_nll and it.ctx_whole and it.n_ctx >= 2:
            nll = (-sum(logp[(it.index, t)] for t in it.context_positions()), it.n_ctx - 1)
        # summed as lm-eval sums them (a float32 tensor), so long continuations round the same way
        loglik = float(torch.tensor([logp[(it.index, t)] for t in scored], dtype=torch.float32).sum())
        out_.append(Scored(loglik, all(hit[(it.index, t)] for t in scored), nll))
    return out_
