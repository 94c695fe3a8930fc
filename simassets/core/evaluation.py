"""Accuracy of a model on a benchmark through lm-eval, with per-example log-likelihoods.

:func:`evaluate_benchmark` runs lm-eval's ``evaluate`` (the function ``simple_evaluate`` wraps) on
exactly the doc subset of :func:`simassets.core.tasks.render_examples`, with ``log_samples`` on, and
checks that every logged request equals the rendered text. It calls ``evaluate`` directly and does
itself what ``simple_evaluate`` would add around it (seeds, shot count, few-shot seed): the wrapper
also builds lm-eval's full task index (~5 s) and collects environment info (~2.5 s) on every call.
Standard errors are the closed-form ones lm-eval uses for means (its bootstrap is skipped).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from importlib.metadata import version
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simassets.core import tasks as T
from simassets.core.catalog import BenchmarkSpec
from simassets.core.hashing import fingerprint


class EvaluationError(RuntimeError):
    """lm-eval scored something other than what was rendered, or returned an unexpected shape."""


@dataclass(frozen=True)
class BenchmarkScore:
    n: int
    acc: float
    acc_stderr: float
    acc_norm: float | None
    acc_norm_stderr: float | None
    primary_metric: str  # spec.metric, or "acc" where acc_norm is undefined
    random_baseline: float  # mean of 1/len(choices) for multiple choice; 0 for loglikelihood tasks
    normalized_score: float  # 100 * (primary - random_baseline) / (1 - random_baseline)
    perplexity: float | None = None  # lm-eval's perplexity of the gold continuations (loglikelihood tasks)


@dataclass(frozen=True)
class ExampleResult:
    """One doc: correctness, the gold continuation's log-likelihood and token count, all choices.

    For loglikelihood (``lm``) tasks ``correct`` is the greedy match, ``chosen`` is 0 when the greedy
    continuation is the gold one and -1 otherwise, and ``choice_logliks`` is ``(gold_loglik,)``.
    """

    example_id: int
    correct: bool
    correct_norm: bool | None
    gold_loglik: float
    gold_n_tokens: int
    chosen: int
    chosen_loglik: float
    choice_logliks: tuple[float, ...]
    input_text: str
    target_text: str
    input_nll: float = float("nan")  # NLL of the input's tokens after the first (lm-eval's encoding), nats
    input_n_tokens: int = 0  # tokens in input_nll (0: no context, or a one-token context)


@dataclass(frozen=True)
class EvalResult:
    score: BenchmarkScore
    examples: list[ExampleResult]
    params: dict[str, Any]
    seconds: float


class InputNLLCapture:
    """The NLL of every context lm-eval scores, kept so that an example's *input* NLL comes from the evaluation's
    own forward pass (no second pass for input perplexity).

    The prefix-tree scorer (:mod:`simassets.core.scoring`) records each whole context's NLL directly. Plain
    scoring rows are ``(context_enc + continuation_enc)[:-1]``, right-padded, run without an attention mask; the
    logits at position t depend only on tokens <= t, so a context's token NLLs are read off any row that starts
    with the context's encoding.
    """

    def __init__(self) -> None:
        self.rows: list[tuple[tuple[int, ...], Any]] = []  # (token ids, cumulative NLL of tokens 1..)
        self.contexts: dict[tuple[int, ...], tuple[float, int]] = {}

    def record(self, context_enc: Sequence[int], nll: float, n: int) -> None:
        self.contexts[tuple(context_enc)] = (nll, n)

    def add(self, inps, logits) -> None:
        import torch

        with torch.no_grad():
            lf = logits[:, :-1].float()
            nll = torch.logsumexp(lf, dim=-1) - lf.gather(-1, inps[:, 1:, None]).squeeze(-1)
            cum = nll.double().cumsum(dim=1).cpu().numpy()
        self.rows += [(tuple(r), c) for r, c in zip(inps.tolist(), cum)]

    def context_nll(self, context_enc: list[int]) -> tuple[float, int] | None:
        """(sum of NLL, tokens scored) over ``context_enc[1:]``, each token given its prefix; None when the
        context was never scored whole (it was truncated from the left)."""
        n, key = len(context_enc), tuple(context_enc)
        if key in self.contexts:
            return self.contexts[key]
        for row, cum in self.rows:
            if len(row) >= n and row[:n] == key:
                return (float(cum[n - 2]) if n >= 2 else 0.0), n - 1
        return None


MODEL_NAME = "simassets-hf"  # the lm-eval model name of the prefix-tree scorer (`lm_eval --model simassets-hf`)
_SCORING_LM: type | None = None


def scoring_lm_class() -> type:
    """lm-eval's ``HFLM`` with the log-likelihood path of :mod:`simassets.core.scoring` (each distinct prefix run
    once), registered with lm-eval as ``simassets-hf``: results, greedy flags and logged samples are lm-eval's own.
    Built on first use (importing lm-eval is slow)."""
    global _SCORING_LM
    if _SCORING_LM is None:
        from lm_eval.api.registry import register_model
        from lm_eval.models.huggingface import HFLM

        from simassets.core.scoring import DEFAULT_ROW_TOKENS, DEFAULT_TOKEN_BUDGET, score

        @register_model(MODEL_NAME)
        class PrefixTreeHFLM(HFLM):
            """``HFLM`` whose log-likelihoods run each distinct prefix once (``token_budget``: tokens per pass,
            ``row_tokens``: tokens per packed row)."""

            input_capture: InputNLLCapture | None = None

            def __init__(self, *args, token_budget: int | None = None, row_tokens: int | None = None, **kwargs):
                super().__init__(*args, **kwargs)
                kind = self.device.type if self.device.type in DEFAULT_TOKEN_BUDGET else "cpu"
                self.token_budget = int(token_budget or DEFAULT_TOKEN_BUDGET[kind])
                self.row_tokens = int(row_tokens or DEFAULT_ROW_TOKENS[kind])
                self.scoring_stats = None

            def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
                if self.backend != "causal":
                    return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
                from simassets.core.scoring import ScoringStats

                capture = self.input_capture
                self.scoring_stats = stats = ScoringStats()
                pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
                scored = score(self.model, [(ctx, cont) for _, ctx, cont in requests], self.max_length,
                               token_budget=self.token_budget, context_nll=capture is not None, pad_id=pad, stats=stats,
                               row_tokens=self.row_tokens)
                out = []
                for (req_str, ctx, _), s in zip(requests, scored, strict=True):
                    if capture is not None and s.context_nll is not None:
                        capture.record(ctx, *s.context_nll)
                    answer = (s.loglik, s.greedy)
                    if req_str is not None:
                        self.cache_hook.add_partial("loglikelihood", req_str, answer)
                    out.append(answer)
                return out

        _SCORING_LM = PrefixTreeHFLM
    return _SCORING_LM


def make_lm(model, tokenizer, batch_size: int = 8, max_length: int = 2048, token_budget: int | None = None):
    """Wrap an already-loaded transformers causal LM (and its tokenizer) as the prefix-tree lm-eval model, which
    also records the input NLL of every example it scores (see :class:`InputNLLCapture`). Passes are cut by a
    token budget (``scoring.DEFAULT_TOKEN_BUDGET`` for the model's device), not by ``batch_size``, which only
    lm-eval's own code paths (generation) use."""
    return scoring_lm_class()(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                              token_budget=token_budget)


def context_encoding(lm, context: str, continuation: str) -> list[int]:
    """The context tokens lm-eval conditions on for ``(context, continuation)`` (its own encoding rules:
    trailing whitespace moves to the continuation; BOS only where lm-eval adds it); [] for no context."""
    return list(lm._encode_pair(context, continuation)[0]) if context else []


def continuation_n_tokens(lm, context: str, continuation: str) -> int:
    """How many tokens of ``continuation`` lm-eval scores after ``context`` (its own encoding rules)."""
    if context == "":
        enc = lm.tok_encode(continuation, add_special_tokens=False)
        n = len(enc) if lm.prefix_token_id != enc[0] else len(enc) - 1
    else:
        n = len(lm._encode_pair(context, continuation)[1])
    return min(n, lm.max_length)


def _stderr(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _check_logged(spec: BenchmarkSpec, ex: T.RenderedExample, args: list[tuple[str, str]], task) -> None:
    if task.OUTPUT_TYPE == "loglikelihood":
        expected = [(ex.input_text, ex.target_text)]
    elif task.multiple_input:
        expected = [(c, ex.target_text) for c in ex.choices]
    else:
        expected = [(ex.input_text, c) for c in ex.choices]
    if [tuple(a[:2]) for a in args] != expected:
        raise EvaluationError(f"benchmark {spec.name!r} doc {ex.example_id}: lm-eval scored {args!r}, "
                              f"but the rendered example is {expected!r}")


def _example(lm, task, ex: T.RenderedExample, sample: dict) -> ExampleResult:
    resps = [tuple(r) for r in sample["filtered_resps"]]
    lls = tuple(float(ll) for ll, _ in resps)
    args = [tuple(a[:2]) for a in sample["arguments"]]
    if task.OUTPUT_TYPE == "loglikelihood":
        correct = bool(resps[0][1])
        chosen, norm = (0 if correct else -1), None
        if correct != bool(sample["acc"]):
            raise EvaluationError(f"doc {ex.example_id}: greedy flag disagrees with lm-eval's acc")
    else:
        chosen = max(range(len(lls)), key=lambda i: (lls[i], -i))  # numpy argmax: first maximum
        correct = bool(sample["acc"])
        norm = bool(sample["acc_norm"]) if "acc_norm" in sample else None
        if correct != (chosen == ex.gold):
            raise EvaluationError(f"doc {ex.example_id}: lm-eval's acc disagrees with argmax of {lls}")
    ctx, cont = args[ex.gold]
    return ExampleResult(
        example_id=ex.example_id, correct=correct, correct_norm=norm, gold_loglik=lls[ex.gold],
        gold_n_tokens=continuation_n_tokens(lm, ctx, cont), chosen=chosen,
        chosen_loglik=lls[max(chosen, 0)], choice_logliks=lls, input_text=ctx, target_text=cont,
    )


def _score(spec: BenchmarkSpec, metrics: dict, examples: list[ExampleResult],
           rendered: list[T.RenderedExample]) -> BenchmarkScore:
    n = len(examples)
    if "acc,none" not in metrics:
        raise EvaluationError(f"benchmark {spec.name!r}: the lm-eval task reports no 'acc' (got {sorted(metrics)})")
    acc = float(metrics["acc,none"])
    correct = [float(e.correct) for e in examples]
    if abs(acc - sum(correct) / n) > 1e-9:
        raise EvaluationError(f"benchmark {spec.name!r}: lm-eval acc {acc} != mean of per-example results")
    norms = [float(e.correct_norm) for e in examples] if "acc_norm,none" in metrics else None
    acc_norm = float(metrics["acc_norm,none"]) if norms is not None else None
    if norms is not None and abs(acc_norm - sum(norms) / n) > 1e-9:
        raise EvaluationError(f"benchmark {spec.name!r}: lm-eval acc_norm {acc_norm} != mean of per-example results")
    primary = "acc_norm" if spec.metric == "acc_norm" and acc_norm is not None else "acc"
    baseline = sum(1 / len(r.choices) for r in rendered) / n if rendered[0].choices else 0.0
    value = acc_norm if primary == "acc_norm" else acc
    return BenchmarkScore(
        n=n, acc=acc, acc_stderr=_stderr(correct), acc_norm=acc_norm,
        acc_norm_stderr=_stderr(norms) if norms is not None else None, primary_metric=primary,
        random_baseline=baseline, normalized_score=100.0 * (value - baseline) / (1.0 - baseline),
        perplexity=float(metrics["perplexity,none"]) if "perplexity,none" in metrics else None,
    )


def _with_input_nll(lm, examples: list[ExampleResult], capture: InputNLLCapture | None) -> tuple[list[ExampleResult], int]:
    """Fill each example's input NLL from the captured rows; contexts not found there (left-truncated
    rows, or an LM without a capture) are scored with one extra forward pass over their first
    ``max_length`` tokens. Returns the examples and the number of extra passes."""
    import dataclasses

    from simassets.core.measures.model import token_ids_nll

    if not examples or not hasattr(lm, "_encode_pair"):
        return examples, 0
    encs = [context_encoding(lm, e.input_text, e.target_text) for e in examples]
    found = [capture.context_nll(enc) if capture is not None and enc else None for enc in encs]
    missing = [i for i, (enc, f) in enumerate(zip(encs, found)) if f is None and len(enc) > 1]
    if missing:
        max_len = int(getattr(lm, "max_length", 2048))
        batch = lm.batch_size if isinstance(lm.batch_size, int) and lm.batch_size > 0 else 1
        scored = token_ids_nll(lm.model, [encs[i][:max_len] for i in missing], batch_size=batch)
        for i, r in zip(missing, scored):
            found[i] = (r.nll_sum, r.n_tokens)
    out = [dataclasses.replace(e, input_nll=f[0], input_n_tokens=f[1]) if f is not None and f[1] > 0 else e
           for e, f in zip(examples, found)]
    return out, len(missing)


class _DocIds(list):
    """The doc-id list given to lm-eval's ``samples``, with O(1) membership (lm-eval tests
    ``i in samples`` for every doc of the split)."""

    def __init__(self, ids: list[int]):
        super().__init__(ids)
        self._set = frozenset(ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._set


def evaluate_benchmark(lm, spec: BenchmarkSpec, data_root: Path, limit: int | None, seed: int,
                       num_fewshot: int = 0, input_nll: bool = True) -> EvalResult:
    """Evaluate ``lm`` (an lm-eval LM, e.g. from :func:`make_lm`) on the seeded doc subset; ``input_nll=False``
    leaves each example's input NLL out (NaN), for a plain evaluation."""
    import random

    import numpy as np
    from lm_eval.evaluator import evaluate
    from lm_eval.utils import set_torch_seed

    start = time.perf_counter()
    task = T.build_task(spec, Path(data_root))
    rendered = T.render_examples(spec, data_root, limit, seed, num_fewshot)
    ids = [r.example_id for r in rendered]
    T.prepare_task(task, num_fewshot, seed)  # the same shots again, for lm-eval's own requests
    random.seed(seed)
    np.random.seed(seed)
    set_torch_seed(seed)
    name = task.config.task
    all_docs = len(ids) == len(task.eval_docs)
    capture = InputNLLCapture() if input_nll and hasattr(lm, "input_capture") else None  # a plain HFLM has none
    if capture is not None:
        lm.input_capture = capture
    try:
        out = evaluate(lm=lm, task_dict={"tasks": {name: task}, "groups": {}, "group_map": {}},
                       samples=None if all_docs else {name: _DocIds(ids)}, bootstrap_iters=0, log_samples=True)
    finally:
        if capture is not None:
            lm.input_capture = None
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    if [s["doc_id"] for s in samples] != ids:
        raise EvaluationError(f"benchmark {spec.name!r}: lm-eval evaluated docs "
                              f"{[s['doc_id'] for s in samples][:10]}..., expected {ids[:10]}...")
    for ex, s in zip(rendered, samples, strict=True):
        _check_logged(spec, ex, s["arguments"], task)
    examples = [_example(lm, task, ex, s) for ex, s in zip(rendered, samples, strict=True)]
    examples, input_fallback = _with_input_nll(lm, examples, capture) if input_nll else (examples, 0)
    score = _score(spec, out["results"][name], examples, rendered)
    params = {
        "lm_eval_version": version("lm_eval"), "task": name, "output_type": task.OUTPUT_TYPE,
        "limit": limit, "seed": seed, "num_fewshot": num_fewshot, "n_docs_total": len(task.eval_docs),
        "doc_ids_hash": fingerprint(ids), "batch_size": getattr(lm, "batch_size", None),
        "max_length": getattr(lm, "max_length", None), "target_delimiter": task.config.target_delimiter,
        "config_source": (task.config.metadata or {}).get("config_source"),
        "model": getattr(getattr(getattr(lm, "model", None), "config", None), "_name_or_path", None),
        "input_nll": "lm-eval context tokens after the first, from the evaluation's forward pass",
        "input_nll_extra_passes": input_fallback,
    }
    return EvalResult(score=score, examples=examples, params=params, seconds=time.perf_counter() - start)
