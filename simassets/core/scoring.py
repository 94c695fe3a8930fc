"""Log-likelihood scoring that runs every distinct token prefix once: lm-eval's answers from fewer forward tokens.

lm-eval scores each answer choice of a multiple-choice document with its own copy of the context, and each option
of a schema task with its own copy of the sentence's stem. Here all requests of a call form one prefix tree (a trie
over the token sequences the model is fed); each node of it -- one token in its context -- is run once. Nodes are
packed into rows of about ``row_tokens`` tokens, whole requests at a time (a request's ancestors that already ran
in an earlier row run again, so no key/value cache is kept between passes), and a 4-D attention mask lets each
token attend to its own ancestors only -- tree attention, as speculative decoding verifies a tree of drafts. The
positions are the tokens' depths, so every token sees exactly the context, and position, it has in lm-eval's own
row. Rows are batched by length under a token budget; packing leaves almost no padding.

Log-probabilities are computed only at the positions that are scored (the output head runs on those hidden states
alone, in chunks, with lm-eval's own ``log_softmax``), so Gemma's 262k-entry vocabulary never makes full-sequence
logits the memory peak.

The inputs are exactly lm-eval's: ``(context_enc, continuation_enc)`` token lists from its own ``_encode_pair``,
cut to ``(context + continuation)[-(max_length + 1):]`` as lm-eval cuts them (a context longer than the
window loses tokens on the left, so its cut windows share nothing). The result per request is lm-eval's ``(sum of
log-probs, is_greedy)``, and, where asked, the context's own NLL (tokens after the first) read off the same passes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

HEAD_CHUNK = 256  # positions per output-head matmul (bounds the logits held at once: 256 x vocab floats)
# tokens per packed row, and tokens (padding included) per forward pass. On CPU small passes are faster per
# token (SmolLM2, 2 threads: ~690 tok/s at 4 x 128 tokens, ~520 at 1 x 512 -- activations stay in cache, the
# attention over a row grows with its square); a GPU wants far larger ones.
DEFAULT_ROW_TOKENS = {"cpu": 256, "cuda": 1024}
DEFAULT_TOKEN_BUDGET = {"cpu": 512, "cuda": 32768}
LONG_ROWS = 4  # a document longer than a row may take a row this many times longer (or up to max_length)


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


def items_for(requests: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int) -> list[_Item]:
    """lm-eval's rows: each ``(context, continuation)`` cut to the last ``max_length + 1`` tokens."""
    items = []
    for i, (ctx, cont) in enumerate(requests):
        if not cont or len(cont) > max_length:
            raise ValueError(f"request {i}: continuation of {len(cont)} tokens (1 to max_length={max_length})")
        x = (list(ctx) + list(cont))[-(max_length + 1):]
        items.append(_Item(i, x, len(cont), len(x) - len(cont), len(x) - len(cont) == len(ctx)))
    return items


@dataclass
class Plan:
    """The prefix tree of the fed sequences and its packing into rows.

    ``token[n]``, ``parent[n]`` (-1 at a root) and ``depth[n]`` describe node ``n``; ``paths[i]`` lists the nodes
    of item ``i``'s fed sequence, one per position; each row lists nodes, every node after its parent."""

    token: list[int] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    depth: list[int] = field(default_factory=list)
    paths: list[list[int]] = field(default_factory=list)
    rows: list[list[int]] = field(default_factory=list)


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan(items: Sequence[_Item], row_tokens: int, long_row_tokens: int | None = None) -> Plan:
    """Every distinct prefix of the fed sequences becomes one node. Requests are taken in lexicographic order (so
    those sharing a prefix are neighbours) and cut into units -- runs that share at least half of the shorter
    sequence, e.g. the choices of one document, or the questions on one reading passage; a row takes whole units
    while they fit in ``row_tokens`` (a unit split across two rows would run its context twice). A unit longer than
    a row gets rows of its own of up to ``long_row_tokens`` tokens (default ``LONG_ROWS * row_tokens``), split by
    request beyond that (a longer request gets a row of its own)."""
    p = Plan()
    index: dict[tuple[int, int], int] = {}
    for it in items:
        path, parent = [], -1
        for t, tok in enumerate(it.fed):
            node = index.get((parent, tok))
            if node is None:
                node = index[(parent, tok)] = len(p.token)
                p.token.append(tok)
                p.parent.append(parent)
                p.depth.append(t)
            path.append(node)
            parent = node
        p.paths.append(path)
    units: list[list[int]] = []
    for i in sorted(range(len(items)), key=lambda k: items[k].fed):
        if units:
            first, fed = items[units[-1][0]].fed, items[i].fed
            shared = _lcp(first, fed)
            if shared >= 4 and 2 * shared >= min(len(first), len(fed)):
                units[-1].append(i)
                continue
        units.append([i])
    row: list[int] = []
    in_row: set[int] = set()

    def new_nodes(i: int) -> list[int]:
        path, k = p.paths[i], 0
        while k < len(path) and path[k] in in_row:  # the nodes already in the row are a prefix of the path
            k += 1
        return path[k:]

    for unit in units:
        size = len({n for i in unit for n in p.paths[i]} - in_row)
        if row and len(row) + size > row_tokens:
            p.rows.append(row)
            row, in_row = [], set()
        # a unit longer than a row (a long passage and its questions) gets rows of its own, up to long_row_tokens:
        # the attention over a long row costs less than running the passage once per choice
        limit = row_tokens if size <= row_tokens else (long_row_tokens or LONG_ROWS * row_tokens)
        for i in unit:
            new = new_nodes(i)
            if row and len(row) + len(new) > limit:
                p.rows.append(row)
                row, in_row = [], set()
                new = p.paths[i]
            row.extend(new)
            in_row.update(new)
        if limit > row_tokens:
            p.rows.append(row)
            row, in_row = [], set()
    if row:
        p.rows.append(row)
    return p


def scoring_plan(items: Sequence[_Item], row_tokens: int, max_length: int) -> Plan:
    """The plan :func:`score` runs: a long unit may fill a row as long as the longest row lm-eval runs itself
    (``max_length``), so the questions on one reading passage share one run of it (AGIEval SAT-en in the full
    profile: 564k tokens forwarded at ``LONG_ROWS * row_tokens``, 66k at 2,048; 59.8k distinct)."""
    return plan(items, row_tokens, max(LONG_ROWS * row_tokens, max_length))


@dataclass
class ScoringStats:
    """Tokens the model ran (padding excluded), and what plain lm-eval scoring would have run."""

    forwarded: int = 0
    padded: int = 0
    plain: int = 0
    passes: int = 0
    distinct: int = 0  # nodes of the prefix tree: the fewest tokens any exact scorer must run


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


def passes_for(items: Sequence[_Item], max_length: int, row_tokens: int, token_budget: int,
               stats: ScoringStats) -> tuple[Plan, list[list[int]]]:
    """The plan :func:`score` runs for ``items`` and its passes (indices into ``plan.rows``), counted into
    ``stats``; ``benchmarks/evaluation.py --project`` counts a profile's tokens with it without running a pass."""
    p = scoring_plan(items, min(row_tokens, token_budget), max_length)
    passes = _batches([len(r) for r in p.rows], token_budget)
    stats.plain += sum(len(it.fed) for it in items)
    stats.distinct += len(p.token)
    stats.passes += len(passes)
    stats.forwarded += sum(len(p.rows[k]) for batch in passes for k in batch)
    stats.padded += sum(len(batch) * len(p.rows[batch[0]]) for batch in passes)
    return p, passes


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
            logits = self.head(hidden[s:s + HEAD_CHUNK])
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 up; a float64 model stays
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            # lm-eval's own log_softmax: (logit - logsumexp) rounds differently, 1e-3 over a 125-token answer
            logps.append(logits.log_softmax(dim=-1).gather(-1, targets[s:s + HEAD_CHUNK, None]).squeeze(-1))
            argmax.append(logits.argmax(dim=-1))
        return torch.cat(logps), torch.cat(argmax)


def _decoder(model: Any) -> Any:
    return model.get_decoder() if hasattr(model, "get_decoder") else model.model


def _sliding_window(model: Any) -> int | None:
    """The window of the model's sliding-attention layers (Gemma 3 alternates them with global ones), or None."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(cfg, "sliding_window", None)
    return window if window and "sliding_attention" in (getattr(cfg, "layer_types", None) or ()) else None


def _tree_mask(p: Plan, rows: list[list[int]], width: int) -> tuple[Any, Any]:
    """(B, 1, width, width) boolean mask -- each token attends to its ancestors in its row and to itself --
    and the (B, width) depths as position ids. Padding attends to itself only."""
    import numpy as np
    import torch

    mask = np.zeros((len(rows), width, width), dtype=bool)
    pos = np.zeros((len(rows), width), dtype=np.int64)
    for r, row in enumerate(rows):
        at = {node: j for j, node in enumerate(row)}
        m = mask[r]
        for j, node in enumerate(row):
            parent = p.parent[node]
            if parent >= 0:
                m[j] = m[at[parent]]
            m[j, j] = True
            pos[r, j] = p.depth[node]
        for j in range(len(row), width):
            m[j, j] = True
    return torch.from_numpy(mask)[:, None], torch.from_numpy(pos)


def score(model: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int,
          token_budget: int | None = None, context_nll: bool = False, pad_id: int = 0,
          stats: ScoringStats | None = None, row_tokens: int | None = None,
          threads: int | None = None) -> list[Scored]:
    """lm-eval's ``(loglik, is_greedy)`` for every ``(context_enc, continuation_enc)``, each distinct prefix run
    once (per row). ``threads``: passes run at once, each single-threaded (default on CPU: torch's thread count;
    1 keeps torch's own threading)."""
    import torch

    stats = stats if stats is not None else ScoringStats()
    items = items_for(requests, max_length)
    device = next(model.parameters()).device
    token_budget = token_budget or DEFAULT_TOKEN_BUDGET.get(device.type, DEFAULT_TOKEN_BUDGET["cpu"])
    row_tokens = row_tokens or DEFAULT_ROW_TOKENS.get(device.type, DEFAULT_ROW_TOKENS["cpu"])
    p, passes = passes_for(items, max_length, row_tokens, token_budget, stats)
    # node -> target token -> the (item, position) pairs that need log p(target | node's prefix)
    wanted: dict[int, dict[int, list[tuple[int, int]]]] = {}
    for it in items:
        positions = set(it.scored_positions())
        if context_nll and it.ctx_whole:
            positions |= set(it.context_positions())
        path = p.paths[it.index]
        for t in positions:
            wanted.setdefault(path[t], {}).setdefault(it.x[t + 1], []).append((it.index, t))
    head, decoder, window = _Head(model), _decoder(model), _sliding_window(model)
    jobs = []  # (rows, width, [(flattened position, target, the (item, position) pairs it answers)])
    for batch in passes:
        rows = [p.rows[k] for k in batch]
        width = len(rows[0])
        reads = [(r * width + j, target, pairs) for r, row in enumerate(rows) for j, node in enumerate(row)
                 for target, pairs in wanted.pop(node, {}).items()]  # popped: a node run twice is read once
        jobs.append((rows, width, reads))

    def run(job: tuple[list[list[int]], int, list]) -> tuple[list[float], list[int]]:
        rows, width, reads = job
        with torch.no_grad():  # (thread-local: set in each worker)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, :len(row)] = torch.tensor([p.token[n] for n in row])
            mask, pos = _tree_mask(p, rows, width)
            attention: Any = mask.to(device)
            if window is not None:  # the sliding layers also drop keys more than `window` positions back
                near = (pos[:, :, None] - pos[:, None, :]) < window
                attention = {"full_attention": attention, "sliding_attention": (mask & near[:, None]).to(device)}
            out = decoder(input_ids=ids.to(device), attention_mask=attention, position_ids=pos.to(device),
                          use_cache=False)
            if not reads:
                return [], []
            hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])
            lp, am = head(hidden.index_select(0, torch.tensor([f for f, _, _ in reads], device=device)),
                          torch.tensor([t for _, t, _ in reads], device=device))
            return lp.tolist(), am.tolist()

    # On CPU, one pass per core, each single-threaded: these small matrix products lose to splitting each one
    # across threads (SmolLM2, 2 cores: 4 x 256 tokens at 540-600 tok/s on 2 threads, 640-735 as 2 x 1; whole
    # benchmarks 6-13 % faster)
    threads = min(threads or (torch.get_num_threads() if device.type == "cpu" else 1), len(jobs))
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(threads) as pool:
                results = list(pool.map(run, jobs))
        finally:
            torch.set_num_threads(before)
    else:
        results = [run(job) for job in jobs]
    sum_dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    logp: dict[tuple[int, int], float] = {}  # (item, position) -> log p(x[position + 1])
    hit: dict[tuple[int, int], bool] = {}
    for (_, _, reads), (lps, ams) in zip(jobs, results, strict=True):
        for (_, target, pairs), v, a in zip(reads, lps, ams, strict=True):
            for key in pairs:
                logp[key] = v
                hit[key] = a == target
    out_: list[Scored] = []
    for it in items:
        scored = list(it.scored_positions())
        nll = None
        if context_nll and it.ctx_whole and it.n_ctx >= 2:
            nll = (-sum(logp[(it.index, t)] for t in it.context_positions()), it.n_ctx - 1)
        # summed as lm-eval sums them (a tensor of the log-probabilities' dtype), so long continuations round alike
        loglik = float(torch.tensor([logp[(it.index, t)] for t in scored], dtype=sum_dtype).sum())
        out_.append(Scored(loglik, all(hit[(it.index, t)] for t in scored), nll))
    return out_
