"""lm-eval evaluation with a tiny random model: scores, per-example log-likelihoods, logged texts."""

from __future__ import annotations

import dataclasses

import pytest

from simassets.core import paths
from simassets.core.catalog import BenchmarkSpec
from simassets.core.evaluation import EvaluationError, _check_logged, evaluate_benchmark, make_lm
from simassets.core.tasks import build_task, render_examples

ROOT = paths.data_root()
SEED = 1234


def gauntlet(name: str, fmt: str) -> BenchmarkSpec:
    return BenchmarkSpec(name=name, kind="gauntlet", category="language_understanding", language="en",
                         path=f"benchmarks/gauntlet/{name}.jsonl", format=fmt)


ARC, WINO, LAMBADA = gauntlet("arc_easy", "mc"), gauntlet("winogrande", "schema"), gauntlet("lambada_openai", "lm")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from simassets.core.testing import gpt2_tokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = gpt2_tokenizer()
    return model, tokenizer, make_lm(model, tokenizer, batch_size=4, max_length=512)


@pytest.fixture(scope="module")
def results(tiny):
    lm = tiny[2]
    return {spec.format: (spec, evaluate_benchmark(lm, spec, ROOT, limit=5, seed=SEED)) for spec in (ARC, WINO, LAMBADA)}


def hand_loglik(model, tokenizer, context: str, continuation: str) -> tuple[float, int]:
    """log P(continuation | context) by a plain forward pass (trailing context spaces move to the
    continuation, as lm-eval's HFLM does)."""
    import torch

    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer(context + continuation)["input_ids"]
    n_ctx = len(tokenizer(context)["input_ids"])
    with torch.no_grad():
        logits = model(torch.tensor([whole[:-1]])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return float(sum(logprobs[i - 1, whole[i]] for i in range(n_ctx, len(whole)))), len(whole) - n_ctx


@pytest.mark.parametrize("fmt", ["mc", "schema", "lm"])
def test_scores_agree_with_per_example_results(results, fmt):
    spec, res = results[fmt]
    s, ex = res.score, res.examples
    assert s.n == 5 == len(ex)
    assert 0.0 <= s.acc <= 1.0
    assert s.acc == pytest.approx(sum(e.correct for e in ex) / 5)
    for e in ex:
        assert e.gold_loglik <= 0.0 and e.gold_n_tokens >= 1
        assert all(ll <= 0.0 for ll in e.choice_logliks)
    rendered = render_examples(spec, ROOT, limit=5, seed=SEED)
    assert [(r.example_id, r.input_text, r.target_text) for r in rendered] == \
        [(e.example_id, e.input_text, e.target_text) for e in ex]
    if fmt == "lm":
        assert s.random_baseline == 0.0 and s.normalized_score == pytest.approx(100 * s.acc)
        assert s.perplexity == pytest.approx(2.718281828459045 ** (-sum(e.gold_loglik for e in ex) / 5), rel=1e-6)
        return
    for r, e in zip(rendered, ex, strict=True):
        argmax = max(range(len(e.choice_logliks)), key=lambda i: (e.choice_logliks[i], -i))
        assert e.chosen == argmax and e.correct == (argmax == r.gold)
        assert e.gold_loglik == e.choice_logliks[r.gold] and e.chosen_loglik == e.choice_logliks[argmax]
        assert len(e.choice_logliks) == len(r.choices)
    r0 = 0.25 if fmt == "mc" else 0.5  # arc_easy: 4 choices; winogrande: 2 options
    assert s.random_baseline == pytest.approx(r0)
    assert s.normalized_score == pytest.approx(100 * (s.acc - r0) / (1 - r0))
    if fmt == "mc":
        assert s.acc_norm == pytest.approx(sum(e.correct_norm for e in ex) / 5)
        for e, r in zip(ex, rendered, strict=True):  # acc_norm: loglik per character of the choice (after its " ")
            per_char = [ll / len(c[1:]) for ll, c in zip(e.choice_logliks, r.choices, strict=True)]
            assert e.correct_norm == (max(range(len(per_char)), key=lambda i: (per_char[i], -i)) == r.gold)
    else:
        assert s.acc_norm is None and s.primary_metric == "acc"


def test_gold_loglik_matches_a_direct_forward_pass(tiny, results):
    model, tokenizer, _ = tiny
    for fmt in ("mc", "schema", "lm"):
        for e in results[fmt][1].examples[:2]:
            ll, n = hand_loglik(model, tokenizer, e.input_text, e.target_text)
            assert e.gold_loglik == pytest.approx(ll, abs=1e-4)
            assert e.gold_n_tokens == n


def test_input_nll_is_read_off_the_evaluation_pass_and_matches_a_direct_one(tiny, results):
    """Input perplexity needs no pass of its own: the context tokens' NLL (each token after the first given
    its prefix, GPT-2 adds no BOS) is taken from the rows lm-eval scored, and equals a plain forward pass."""
    import torch

    model, tokenizer, lm = tiny
    for fmt in ("mc", "schema", "lm"):
        res = results[fmt][1]
        assert res.params["input_nll_extra_passes"] == 0
        for e in res.examples:
            ctx = e.input_text.rstrip()  # lm-eval moves trailing spaces to the continuation
            ids = tokenizer(ctx)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
            expected = -float(sum(logprobs[i - 1, ids[i]] for i in range(1, len(ids))))
            assert e.input_n_tokens == len(ids) - 1
            assert e.input_nll == pytest.approx(expected, rel=1e-5)
    # an LM wrapper without the capture falls back to one pass per input, with the same numbers
    from lm_eval.models.huggingface import HFLM

    plain = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, max_length=512)
    spec, first = results["mc"]
    again = evaluate_benchmark(plain, spec, ROOT, limit=5, seed=SEED)
    assert again.params["input_nll_extra_passes"] == 5
    assert [e.input_nll for e in again.examples] == pytest.approx([e.input_nll for e in first.examples], rel=1e-5)
    assert [e.correct for e in again.examples] == [e.correct for e in first.examples]


def test_params_and_repeatability(tiny, results):
    spec, first = results["mc"]
    assert first.params["lm_eval_version"] == "0.4.13"
    assert first.params["limit"] == 5 and first.params["seed"] == SEED and first.params["num_fewshot"] == 0
    assert first.params["n_docs_total"] == 2376 and first.seconds > 0
    again = evaluate_benchmark(tiny[2], spec, ROOT, limit=5, seed=SEED)
    assert again.score == first.score and again.examples == first.examples
    assert again.params["doc_ids_hash"] == first.params["doc_ids_hash"]


def test_fewshot_contexts_are_logged_as_rendered(tiny):
    res = evaluate_benchmark(tiny[2], WINO, ROOT, limit=3, seed=SEED, num_fewshot=1)
    rendered = render_examples(WINO, ROOT, limit=3, seed=SEED, num_fewshot=1)
    assert [e.input_text for e in res.examples] == [r.input_text for r in rendered]
    assert all("\n\n" in e.input_text for e in res.examples)


def test_a_logged_context_that_differs_from_the_rendered_one_raises():
    task = build_task(ARC, ROOT)
    (r,) = render_examples(ARC, ROOT, limit=1, seed=SEED)
    logged = [(r.input_text, c) for c in r.choices]
    _check_logged(ARC, r, logged, task)  # identical: fine
    with pytest.raises(EvaluationError, match="doc"):
        _check_logged(ARC, dataclasses.replace(r, input_text=r.input_text + " "), logged, task)
