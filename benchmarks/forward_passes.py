"""How many model passes the measure suite adds on top of evaluation, read from a materialized study.

Evaluation scores one (context, continuation) request per answer choice. The model-based measures reuse
that forward pass for target perplexity (the gold log-likelihood) and input perplexity (the context
tokens' NLL, captured from the same logits): 0 extra passes, except for inputs lm-eval truncated (one
pass each, counted in the evaluation's params). They add one forward pass per scored corpus document
(corpus perplexity) and, for Task2Vec, one forward + backward pass per text of every probe batch.
Prints the counts and the ratio.

    .venv/bin/python benchmarks/forward_passes.py [--profile quick]
"""

from __future__ import annotations

import argparse
import json

from simassets.core.warehouse import Warehouse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="quick")
    args = ap.parse_args()
    wh, p = Warehouse(), [args.profile]
    evaluation = wh.query(
        "select r.model, sum(greatest(len(e.choices), 1)) requests from example_results r "
        "join benchmark_examples e using (profile, benchmark, example_id) where r.profile = ? group by 1", p)
    target = wh.query("select model, count(*) n from example_similarity where profile = ? and measure = 'target_perplexity' group by 1", p)
    inputs = wh.query("select model, sum(extra) extra from (select distinct model, benchmark, coalesce(try_cast("
                      "json_extract(params, '$.input_nll_extra_passes') as bigint), 0) extra from example_results "
                      "where profile = ?) group by model", p)
    n_inputs = wh.query("select model, count(*) n from example_similarity where profile = ? and measure = 'input_perplexity' group by 1", p)
    corpus = wh.query("select model, params from dataset_similarity where profile = ? and measure = 'corpus_perplexity'", p)
    t2v = wh.query("select params from dataset_diversity where profile = ?", p)
    t2v_passes = sum(json.loads(x)["batch_size"] * json.loads(x)["n_batches"] for x in t2v["params"])
    print(f"profile {args.profile}; Task2Vec (probe, shared by all models): {len(t2v)} datasets, "
          f"{t2v_passes} forward+backward passes")
    for _, row in evaluation.iterrows():
        m = row["model"]
        n_in = int(inputs.loc[inputs["model"] == m, "extra"].sum())
        n_in_reused = int(n_inputs.loc[n_inputs["model"] == m, "n"].sum()) - n_in
        n_target = int(target.loc[target["model"] == m, "n"].sum())
        n_corpus = sum(json.loads(x)["docs"] for x in corpus.loc[corpus["model"] == m, "params"])
        added = n_in + n_corpus
        print(f"{m}: evaluation {int(row['requests'])} scored requests; measure suite adds {added} forward passes "
              f"({n_in} input perplexity + {n_corpus} corpus perplexity) = {added / row['requests']:.2f}x evaluation; "
              f"target perplexity of {n_target} examples and input perplexity of {n_in_reused} reused the evaluation's "
              f"forward pass (0 passes)")


if __name__ == "__main__":
    main()
