"""Prefix-tree scoring: lm-eval's own answers and log-likelihoods from fewer forward tokens.

Checked against a plain forward pass per request (what lm-eval's ``HFLM`` computes) on random token requests shaped
like the three task formats -- multiple choice (one context, several continuations), schema (several contexts
sharing a prefix, one continuation), language modelling (nothing shared) -- with contexts cut from the left by the
window; and end to end against lm-eval's plain ``HFLM`` on real benchmarks of each format.
"""

from __future__ import annotations

import random

import pytest

from simassets.core import paths
from simassets.core.scoring import ScoringStats, items_for, plan, score

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()


def _plain(model, ctx, cont, max_length):
    """lm-eval's computation for one request: the window cut from the left, log-softmax of a full forward pass."""
    import torch

    x = (list(ctx) + list(cont))[-(max_length + 1):]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([x[:-1]])).logits[0].float(), dim=-1)
    positions = range(len(x) - len(cont) - 1, len(x) - 1)
    loglik = sum(float(logprobs[t, x[t + 1]]) for t in positions)
    greedy = all(int(logprobs[t].argmax()) == x[t + 1] for t in positions)
    ctx_nll = -sum(float(logprobs[t, x[t + 1]]) for t in range(len(ctx) - 1)) if len(x) - len(cont) == len(ctx) else None
    return loglik, greedy, ctx_nll


def _requests(vocab: int, seed: int = 0):
    rng = random.Random(seed)
    tok = lambda n: [rng.randrange(vocab) for _ in range(n)]  # noqa: E731
    mc_ctx = tok(30)
    mc = [(mc_ctx, tok(rng.randint(1, 6))) for _ in range(4)]
    mc.append((mc_ctx, mc[0][1][:1]))  # one-token continuation: scored from the prefix pass alone
    stem, rest = tok(20), tok(6)
    schema = [(stem + tok(rng.randint(1, 4)), rest) for _ in range(3)]
    lm = [(tok(rng.randint(5, 25)), tok(rng.randint(1, 4))) for _ in range(4)]
    long_ctx = tok(90)  # longer than the window: cut from the left, differently for each continuation length
    cut = [(long_ctx, tok(3)), (long_ctx, tok(5)), (long_ctx, tok(1))]
    return mc + schema + lm + cut


# many small passes with rows that split documents (contexts run twice), or everything in one pass and one row
@pytest.mark.parametrize("budget,row_tokens", [(64, 24), (100_000, 100_000), (1024, 64)])
def test_prefix_tree_scoring_equals_one_plain_pass_per_request(model, budget, row_tokens):
    reqs = _requests(model.config.vocab_size)
    stats = ScoringStats()
    scored = score(model, reqs, max_length=48, token_budget=budget, context_nll=True, stats=stats,
                   row_tokens=row_tokens)
    for (ctx, cont), s in zip(reqs, scored, strict=True):
        loglik, greedy, ctx_nll = _plain(model, ctx, cont, 48)
        assert s.loglik == pytest.approx(loglik, abs=1e-4) and s.greedy == greedy
        if ctx_nll is None or len(ctx) < 2:
            assert s.context_nll is None
        else:
            assert s.context_nll[0] == pytest.approx(ctx_nll, abs=1e-4) and s.context_nll[1] == len(ctx) - 1
    assert stats.distinct <= stats.forwarded <= stats.padded
    if row_tokens >= 64:  # (24-token rows hold one request each: nothing is shared)
        assert stats.forwarded < stats.plain  # the shared prefixes ran once
    if row_tokens >= 100_000:
        assert stats.forwarded == stats.distinct  # one row: every distinct prefix exactly once


def test_passes_run_side_by_side_give_the_same_numbers_as_one_after_another(model):
    """On CPU the passes run on one single-threaded worker per core; every number must equal the serial run's,
    and torch's thread count is restored."""
    import torch

    reqs = _requests(model.config.vocab_size, seed=5) * 3
    serial = score(model, reqs, max_length=48, token_budget=64, context_nll=True, threads=1)
    torch.set_num_threads(2)
    side = score(model, reqs, max_length=48, token_budget=64, context_nll=True, threads=3)
    assert torch.get_num_threads() == 2
    assert side == serial


def test_sliding_window_layers_keep_their_window_in_the_tree_mask():
    """Gemma 3 alternates sliding-window and global layers; the tree mask must drop the keys the window drops."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=6,
                           layer_types=["sliding_attention", "full_attention"], max_position_embeddings=128)
    model = Gemma3ForCausalLM(cfg).eval()
    rng = random.Random(1)
    ctx = [rng.randrange(97) for _ in range(20)]  # longer than the window
    reqs = [(ctx, [rng.randrange(97) for _ in range(rng.randint(1, 5))]) for _ in range(3)]
    for (c, k), s in zip(reqs, score(model, reqs, max_length=64, row_tokens=64), strict=True):
        loglik, greedy, _ = _plain(model, c, k, 64)
        assert s.loglik == pytest.approx(loglik, abs=1e-4) and s.greedy == greedy


def test_the_plan_runs_each_shared_prefix_once_and_never_shares_a_cut_window():
    ctx = list(range(100, 130))
    stem = list(range(200, 220))
    long_ctx = list(range(300, 360))  # cut from the left by the 48-token window, differently per continuation
    reqs = [(ctx, [1, 2]), (ctx, [3, 4]), (stem + [5], [9, 9]), (stem + [6, 7], [9, 9]), ([7, 7, 7], [1]),
            (long_ctx, [4, 4]), (long_ctx, [4])]
    items = items_for(reqs, max_length=48)
    p = plan(items, row_tokens=1000)
    assert len(p.rows) == 1
    paths = p.paths
    assert paths[0][:30] == paths[1][:30] and paths[0][30] != paths[1][30]  # the whole context, once
    assert paths[2][:20] == paths[3][:20] and paths[2][20] != paths[3][20]  # the schema stem before the options
    assert not set(paths[5]) & set(paths[6])  # the two windows start at different tokens: nothing in common
    fed = [tuple(it.fed) for it in items]
    assert len(p.token) == len({f[:t] for f in fed for t in range(1, len(f) + 1)})  # one node per distinct prefix
    for n, (par, d) in enumerate(zip(p.parent, p.depth)):
        assert (par == -1 and d == 0) or p.depth[par] == d - 1
    row = p.rows[0]
    assert all(p.parent[n] == -1 or row.index(p.parent[n]) < j for j, n in enumerate(row))  # parents first
    # rows of 40 tokens: each document's choices stay together (a unit), a 48-token window gets a row of its own
    small = plan(items, row_tokens=40)
    rows_of = lambda i: {r for r, row in enumerate(small.rows) for n in small.paths[i] if n in row}  # noqa: E731
    assert len(rows_of(0) & rows_of(1)) == 1 and any(len(r) == 48 for r in small.rows)


def test_questions_on_one_long_passage_share_one_run_of_it(model):
    """A reading passage longer than ``LONG_ROWS`` rows, asked about by several questions (AGIEval SAT-en: 4.7 per
    passage): the scorer's plan puts the passage and all its questions in one row up to ``max_length`` tokens, so
    the passage runs once, not once per request; the numbers still equal one plain pass per request."""
    from simassets.core.scoring import LONG_ROWS, scoring_plan

    rng = random.Random(3)
    tok = lambda n: [rng.randrange(model.config.vocab_size) for _ in range(n)]  # noqa: E731
    passages = [tok(70), tok(60)]
    questions = [tok(6), tok(5), tok(7)]
    reqs = [(passage + q, tok(rng.randint(1, 3))) for passage in passages for q in questions for _ in range(2)]
    items = items_for(reqs, max_length=128)
    row_tokens = 16
    short, long = plan(items, row_tokens), scoring_plan(items, row_tokens, max_length=128)
    assert LONG_ROWS * row_tokens < 70 + 6  # one request alone outgrows the default long row
    assert len(long.rows) == 2 and sum(map(len, long.rows)) == len(long.token)  # a row per passage, nothing twice
    assert sum(map(len, short.rows)) >= len(reqs) * 60  # the default long rows run a passage per request
    stats = ScoringStats()
    scored = score(model, reqs, max_length=128, token_budget=row_tokens, row_tokens=row_tokens, stats=stats)
    assert stats.forwarded == len(long.token)
    for (ctx, cont), s in zip(reqs, scored, strict=True):
        loglik, greedy, _ = _plain(model, ctx, cont, 128)
        assert s.loglik == pytest.approx(loglik, abs=1e-4) and s.greedy == greedy


def test_the_scorer_is_lm_evals_model_and_agrees_with_plain_hflm_on_every_format(tiny_model_dir):
    """End to end through lm-eval: ``simassets-hf`` (a registered ``HFLM`` subclass) chooses the same answer as
    plain ``HFLM`` for every example, every log-likelihood within 1e-4, with a window short enough that long
    contexts are cut from the left."""
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM

    from simassets.core.catalog import BenchmarkSpec
    from simassets.core.evaluation import MODEL_NAME, evaluate_benchmark, make_lm
    from simassets.core.testing import gpt2_tokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), gpt2_tokenizer()
    shared = make_lm(model, tok, batch_size=4, max_length=64)
    assert get_model(MODEL_NAME) is type(shared) and isinstance(shared, HFLM)
    plain = HFLM(pretrained=model, tokenizer=tok, batch_size=4, max_length=64)
    for name, fmt in (("arc_easy", "mc"), ("winogrande", "schema"), ("lambada_openai", "lm"), ("hellaswag", "mc")):
        spec = BenchmarkSpec(name=name, kind="gauntlet", category="language_understanding", language="en",
                             path=f"benchmarks/gauntlet/{name}.jsonl", format=fmt)
        a = evaluate_benchmark(shared, spec, paths.data_root(), limit=8, seed=3)
        b = evaluate_benchmark(plain, spec, paths.data_root(), limit=8, seed=3)
        assert [e.chosen for e in a.examples] == [e.chosen for e in b.examples], name
        assert [e.correct for e in a.examples] == [e.correct for e in b.examples], name
        for ea, eb in zip(a.examples, b.examples, strict=True):
            # 1e-4, or float32's own resolution for the random model's long sums (-520 nats: 1 ulp = 6e-5)
            assert ea.choice_logliks == pytest.approx(eb.choice_logliks, abs=1e-4, rel=1e-6), name
        assert (a.score.acc, a.score.acc_norm) == (b.score.acc, b.score.acc_norm)
        if name == "hellaswag":  # long contexts: some were cut by the 64-token window
            assert any(len(tok(e.input_text)["input_ids"]) > 64 for e in a.examples)
