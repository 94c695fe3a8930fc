"""Evaluation speed and parity: float32 vs bfloat16 for a registered model, through the asset path.

Prints, in one run: forward tokens/s for both dtypes on the same texts, the lm-eval path's examples/s on
one benchmark for both, the ratio, and how many answers bfloat16 changes (the parity check that must
hold before bfloat16 is used for model passes).

    .venv/bin/python benchmarks/evaluation.py [--model smollm2-135m-instruct] [--benchmark arc_easy] [--limit 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from simassets.core import paths
from simassets.core.catalog import load_catalog
from simassets.core.evaluation import evaluate_benchmark, make_lm
from simassets.core.models import clear_model_cache, load_causal_lm, load_registry


def forward_tokens_per_second(loaded, texts: list[str], batch_size: int = 8) -> float:
    import torch

    from simassets.core.measures.model import sequence_nll

    sequence_nll(loaded.model, loaded.tokenizer, texts[:batch_size], max_length=512, batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    with torch.inference_mode():
        res = sequence_nll(loaded.model, loaded.tokenizer, texts, max_length=512, batch_size=batch_size)
    return sum(r.n_tokens + 1 for r in res) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--benchmark", default="arc_easy")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    spec = load_registry()[args.model]
    bench = load_catalog().benchmarks[args.benchmark]
    results = {}
    for dtype in ("float32", "bfloat16"):
        clear_model_cache()
        loaded = load_causal_lm(dataclasses.replace(spec, dtype=dtype))
        from simassets.core.tasks import render_examples

        texts = [e.input_text + e.target_text for e in render_examples(bench, paths.data_root(), args.limit, args.seed)]
        tps = forward_tokens_per_second(loaded, texts)
        lm = make_lm(loaded.model, loaded.tokenizer, batch_size=8, max_length=2048)
        start = time.perf_counter()
        res = evaluate_benchmark(lm, bench, paths.data_root(), args.limit, args.seed)
        secs = time.perf_counter() - start
        results[dtype] = (tps, secs, res)
        print(f"{dtype:9s} forward {tps:8.0f} tok/s   lm-eval {args.benchmark} x{res.score.n}: {secs:6.1f}s "
              f"({res.score.n / secs:.2f} ex/s)  acc {res.score.acc:.3f}  acc_norm {res.score.acc_norm}")
    (t32, s32, r32), (t16, s16, r16) = results["float32"], results["bfloat16"]
    changed = sum(a.chosen != b.chosen for a, b in zip(r32.examples, r16.examples))
    print(f"\nbfloat16 / float32: forward {t16 / t32:.2f}x, lm-eval path {s32 / s16:.2f}x; "
          f"answers changed by bfloat16: {changed}/{len(r32.examples)}; "
          f"acc {r32.score.acc:.3f} -> {r16.score.acc:.3f}")


if __name__ == "__main__":
    main()
