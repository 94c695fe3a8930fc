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

from simassets.core.measures.registry import MeasureSpec, register


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


def perplexity_interval(nll_sums: Sequence[float], n_tokens: Sequence[int], n_boot: int, seed: int,
                        level: float = 0.95) -> tuple[float | None, float | None]:
    """BCa bootstrap interval of the token-weighted perplexity ``exp(sum nll / sum n)``, resampling the examples
    (or documents) with their token counts (``scipy.stats.bootstrap``, paired). ``(None, None)`` with fewer than 2
    scored units or when every unit has the same per-token NLL (no sampling spread to show)."""
    import numpy as np
    from scipy import stats

    pairs = [(float(s), int(n)) for s, n in zip(nll_sums, n_tokens) if int(n) > 0]
    if len(pairs) < 2 or n_boot < 1:
        return None, None
    nll, n = (np.array(v, dtype=np.float64) for v in zip(*pairs))
    if np.ptp(nll / n) == 0:
        return None, None

    def statistic(a, b, axis=-1):
        return np.exp(a.sum(axis=axis) / b.sum(axis=axis))

    for method in ("BCa", "percentile"):  # BCa degenerates on a near-constant sample: percentile then
        ci = stats.bootstrap((nll, n), statistic, paired=True, vectorized=True, n_resamples=n_boot,
                             confidence_level=level, method=method,
                             random_state=np.random.default_rng(seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
        if np.isfinite(low) and np.isfinite(high):
            break
    return low, high


# ------------------------------------------------------------------ registered measures
# corpus perplexity: documents scored per corpus and the tokens kept of each (a seeded prefix of the sample)
# full: 100 documents, not 200 -- half the passes (1.98x measured, benchmarks/corpus_perplexity.py); the values
# moved by -5.0 % (C4) and +0.7 % (Brown), inside the 200-document bootstrap intervals, which widen 1.2-1.4x
CORPUS_PPL = {"quick": (20, 256), "full": (100, 1024)}  # quick: ~5k tokens per corpus, ~1/4 of its model passes
register(MeasureSpec(
    name="input_perplexity", range=(1.0, math.inf), family="model", levels=("example", "dataset"), direction=-1, needs_model=True,
    description="Perplexity of the rendered benchmark input under the model: its tokens as lm-eval encodes the context, each after the first predicted from its prefix, read from the evaluation's own forward pass (no extra pass); the dataset value is token-weighted.",
    formula="exp(sum_i nll_i / sum_i n_i) over input tokens 2..n", params={"source": "example_results.input_nll", "bos": "only where lm-eval adds it (e.g. Gemma)", "interval": "95% BCa bootstrap over examples"},
))
register(MeasureSpec(
    name="target_perplexity", range=(1.0, math.inf), family="model", levels=("example", "dataset"), direction=-1, needs_model=True,
    description="Perplexity of the gold continuation given the input, from the evaluation's own log-likelihoods (no extra forward pass); token-weighted at dataset level.",
    formula="exp(-sum_i loglik_gold_i / sum_i n_gold_i)", params={"source": "example_results.gold_loglik", "interval": "95% BCa bootstrap over examples"},
))
register(MeasureSpec(
    name="corpus_perplexity", range=(1.0, math.inf), family="model", levels=("dataset",), direction=-1, needs_model=True,
    description="How in-distribution a corpus sample is for a model: token-weighted perplexity of (a seeded prefix of) its documents, each truncated.",
    formula="exp(sum_d nll_d / sum_d n_d)", params={**{p: f"{d} docs x {t} tokens" for p, (d, t) in CORPUS_PPL.items()}, "interval": "95% BCa bootstrap over documents"},
))


# ------------------------------------------------------------------ the family's assets
N_BOOT = {"quick": 200, "full": 1000}
PPL_CI_METHOD = "95% BCa bootstrap over examples (scipy.stats.bootstrap, paired nll and token counts)"


def perplexity_rows(bench, results, n_boot: int = 0, seed: int = 0):
    """Input and target perplexity per example and per benchmark, both from the evaluation's stored
    log-likelihoods (``example_results``): no forward pass of its own. Input perplexity covers the input's
    tokens after the first (lm-eval's encoding of the context); target perplexity the gold continuation. The
    benchmark rows carry a BCa interval over examples (:func:`perplexity_interval`) when ``n_boot`` > 0."""
    import numpy as np
    import pandas as pd

    merged = bench[["example_id"]].merge(
        results[["example_id", "gold_loglik", "gold_n_tokens", "input_nll", "input_n_tokens"]], on="example_id")
    n_in = merged["input_n_tokens"].fillna(0).astype(int).to_numpy()
    s_in = merged["input_nll"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        input_ppl = np.where(n_in > 0, np.exp(s_in / np.maximum(n_in, 1)), np.nan)
        target_ppl = np.exp(-merged["gold_loglik"].to_numpy() / merged["gold_n_tokens"].to_numpy())
    ids = merged["example_id"].to_numpy()
    examples = pd.concat([
        pd.DataFrame({"example_id": ids, "measure": "input_perplexity", "value": input_ppl,
                      "evidence": [f"{n} tokens" for n in n_in]}),
        pd.DataFrame({"example_id": ids, "measure": "target_perplexity", "value": target_ppl,
                      "evidence": [f"{n} tokens" for n in merged["gold_n_tokens"]]}),
    ], ignore_index=True)
    has_input = n_in > 0
    agg_in = aggregate_perplexity(s_in[has_input].tolist(), n_in[has_input].tolist()) if has_input.any() else None
    agg_t = aggregate_perplexity((-merged["gold_loglik"]).tolist(), merged["gold_n_tokens"].tolist())
    ci_in = perplexity_interval(s_in[has_input], n_in[has_input], n_boot, seed) if agg_in else (None, None)
    ci_t = perplexity_interval(-merged["gold_loglik"].to_numpy(), merged["gold_n_tokens"].to_numpy(), n_boot, seed)
    dataset = pd.DataFrame(  # no input row when no example has an input token to score
        ([{"measure": "input_perplexity", "value": agg_in.token_weighted, "ci_low": ci_in[0], "ci_high": ci_in[1],
           "n": agg_in.n_examples}] if agg_in else [])
        + [{"measure": "target_perplexity", "value": agg_t.token_weighted, "ci_low": ci_t[0], "ci_high": ci_t[1],
            "n": agg_t.n_examples}])
    return examples, dataset


def _corpus_token_ids(model_id: str, corpus_fp: str, texts: tuple[str, ...], tokenizer) -> list:
    """Token ids of a corpus sample under a model's tokenizer, once per (model, corpus content) per process."""
    from simassets.core.measures.tokens import encode_texts

    key = (model_id, corpus_fp)
    if key not in _TOKEN_IDS:
        if len(_TOKEN_IDS) >= 64:
            _TOKEN_IDS.pop(next(iter(_TOKEN_IDS)))
        _TOKEN_IDS[key] = encode_texts(list(texts), tokenizer)
    return _TOKEN_IDS[key]


_TOKEN_IDS: dict[tuple[str, str], list] = {}


def _model_similarity_inputs(scope, keys) -> dict:
    from simassets.core.models import model_fingerprint
    from simassets.core.schema import BENCHMARK_SCORES, CORPUS_DOCUMENTS

    return {"n_boot": N_BOOT[scope.profile], "seed": scope.seed, "kl": scope.catalog.kl_options("unigram_kl"),
            "corpora": {c: scope.upstream(CORPUS_DOCUMENTS, {"corpus": c}) for c in scope.values("corpus")},
            "model": model_fingerprint(scope.models[keys["model"]]),
            "results": scope.upstream(BENCHMARK_SCORES, keys)}


def _model_similarity(call):
    """Input and target perplexity from the evaluation's forward pass, and unigram KL/JS against every corpus
    sample under the model's tokenizer."""
    import json

    import pandas as pd

    from simassets.core.computation import Output, table_md
    from simassets.core.hashing import canonical_json
    from simassets.core.measures.tokens import encode_texts, unigram_measures
    from simassets.core.models import load_causal_lm
    from simassets.core.schema import (BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS, DATASET_SIMILARITY, EXAMPLE_RESULTS,
                                       EXAMPLE_SIMILARITY)

    model_id, bench_name, scope = call.keys["model"], call.keys["benchmark"], call.scope
    loaded = load_causal_lm(scope.models[model_id])
    bench = call.read(BENCHMARK_EXAMPLES, benchmark=bench_name)
    results = call.read(EXAMPLE_RESULTS, model=model_id, benchmark=bench_name)
    if "input_nll" not in results or results["input_nll"].isna().all():
        raise ValueError(f"example_results[{model_id}, {bench_name}] has no input NLL (stored by an older version): "
                         "re-materialize benchmark_evaluation for this partition")
    ex, ds = perplexity_rows(bench, results, N_BOOT[call.profile], scope.seed)
    eval_params = json.loads(results["params"].iloc[0])
    ppl_params = canonical_json({"model": model_id, "model_fingerprint": loaded.fingerprint,
                                 "max_length": eval_params.get("max_length"), "dtype": eval_params.get("dtype"),
                                 "dataset_level": "token-weighted exp(sum nll / sum tokens)",
                                 "ci_method": PPL_CI_METHOD, "n_boot": N_BOOT[call.profile], "seed": scope.seed,
                                 "input_source": "example_results.input_nll (the evaluation's forward pass)",
                                 "target_source": "example_results.gold_loglik (no extra forward pass)"})
    ex, ds = ex.assign(corpus="", params=ppl_params), ds.assign(corpus="", params=ppl_params)
    bench_ids = encode_texts((bench["input_text"] + bench["target_text"]).tolist(), loaded.tokenizer)
    uni_rows = []
    for corpus in scope.values("corpus"):
        docs = call.read(CORPUS_DOCUMENTS, corpus=corpus)
        corpus_ids = _corpus_token_ids(model_id, call.inputs["corpora"][corpus], tuple(docs["text"]), loaded.tokenizer)
        u = unigram_measures(bench_ids, corpus_ids, vocab_size=len(loaded.tokenizer), n_boot=N_BOOT[call.profile],
                             seed=scope.seed, **call.inputs["kl"])
        params = canonical_json({k: u[k] for k in ("eps", "n_boot", "seed", "ci", "log_base", "dim", "kl_estimator")}
                                | {"tokenizer": model_id, "ci_method": "basic bootstrap over corpus documents"})
        uni_rows += [{"corpus": corpus, "measure": "unigram_kl", "value": u["kl"], "ci_low": u["kl_basic_ci_low"],
                      "ci_high": u["kl_basic_ci_high"], "n": len(bench), "params": params},
                     {"corpus": corpus, "measure": "unigram_js", "value": u["js"], "n": len(bench), "params": params}]
    dataset = pd.concat([ds, pd.DataFrame(uni_rows)], ignore_index=True).reindex(
        columns=["corpus", "measure", "value", "ci_low", "ci_high", "n", "warning", "params"])
    return Output({EXAMPLE_SIMILARITY: ex, DATASET_SIMILARITY: dataset}, metadata={
        "examples": len(bench), "forward_passes_added": int(eval_params.get("input_nll_extra_passes") or 0),
        "input_tokens": int(results["input_n_tokens"].fillna(0).sum()),
        "dataset_measures": table_md(dataset[["corpus", "measure", "value", "ci_low", "ci_high"]])})


def _corpus_perplexity_inputs(scope, keys) -> dict:
    from simassets.core.models import model_fingerprint
    from simassets.core.schema import CORPUS_DOCUMENTS

    return {"setup": CORPUS_PPL[scope.profile], "model": model_fingerprint(scope.models[keys["model"]]),
            "corpus": scope.upstream(CORPUS_DOCUMENTS, {"corpus": keys["corpus"]})}


def _corpus_perplexity(call):
    """Token-weighted perplexity of a seeded prefix of the corpus sample, each document truncated."""
    import pandas as pd

    from simassets.core.computation import Output
    from simassets.core.hashing import canonical_json
    from simassets.core.models import load_causal_lm
    from simassets.core.schema import CORPUS_DOCUMENTS, DATASET_SIMILARITY

    n_docs, max_length = CORPUS_PPL[call.profile]
    docs = call.read(CORPUS_DOCUMENTS, corpus=call.keys["corpus"]).head(n_docs)
    loaded = load_causal_lm(call.scope.models[call.keys["model"]])
    nll = sequence_nll(loaded.model, loaded.tokenizer, docs["text"].tolist(), max_length=max_length,
                       batch_size=call.scope.spec.eval_batch_size)
    agg = aggregate_perplexity([r.nll_sum for r in nll], [r.n_tokens for r in nll])
    n_boot, seed = N_BOOT[call.profile], call.scope.seed
    low, high = perplexity_interval([r.nll_sum for r in nll], [r.n_tokens for r in nll], n_boot, seed)
    params = canonical_json({"model": call.keys["model"], "model_fingerprint": loaded.fingerprint, "docs": len(docs),
                             "max_length": max_length, "truncated_docs": sum(r.truncated for r in nll),
                             "mean_of_document_perplexities": agg.mean_of_examples,
                             "ci_method": PPL_CI_METHOD.replace("examples", "documents"), "n_boot": n_boot,
                             "seed": seed})
    row = pd.DataFrame([{"benchmark": "", "measure": "corpus_perplexity", "value": agg.token_weighted,
                         "ci_low": low, "ci_high": high, "n": len(docs), "warning": None, "params": params}])
    return Output({DATASET_SIMILARITY: row},
                  metadata={"perplexity": agg.token_weighted, "docs": len(docs), "tokens": agg.n_tokens})


def _families():
    from simassets.core.computation import Computation, Upstream
    from simassets.core.measures.registry import register_family
    from simassets.core.schema import DATASET_SIMILARITY, EXAMPLE_SIMILARITY

    similarity = register_family(Computation(
        name="model_similarity", group="similarity", partitioning="model_x_benchmark",
        description="Per model and benchmark: input perplexity (rendered input) and target perplexity (gold "
                    "continuation), both read from the evaluation's own forward pass, per example and "
                    "token-weighted per benchmark; and unigram KL (with bootstrap CI) and JS of the benchmark "
                    "against every corpus sample under the model's tokenizer.",
        writes=(EXAMPLE_SIMILARITY, DATASET_SIMILARITY), inputs=_model_similarity_inputs, compute=_model_similarity,
        upstream=(Upstream("benchmark_evaluation"), Upstream("corpus_documents", "all")), kinds=("pytorch", "parquet"),
        pool="model", code_version="3", retries=2,  # 3: BCa intervals on the benchmark-level perplexities
        storage_keys=lambda keys: {**keys, "asset": "model_similarity"}))
    perplexity = register_family(Computation(
        name="corpus_perplexity", group="similarity", partitioning="model_x_corpus",
        description="How in-distribution a corpus sample is for a model: token-weighted perplexity of (a seeded "
                    "prefix of) the sample's documents, each truncated to a fixed number of tokens.",
        writes=(DATASET_SIMILARITY,), inputs=_corpus_perplexity_inputs, compute=_corpus_perplexity,
        upstream=(Upstream("corpus_documents"),), kinds=("pytorch", "parquet"), pool="model", code_version="3",
        retries=2, storage_keys=lambda keys: {**keys, "asset": "corpus_perplexity"}))
    return similarity, perplexity


FAMILIES = _families()
