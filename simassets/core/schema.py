"""Columns of every warehouse table (the README's table reference is generated from these)."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

PARAMS = ("params", pa.string(), "JSON of the parameters, versions and identifiers that produced the row")
CREATED = ("created_at", pa.timestamp("us", tz="UTC"), "when the row was computed")
PROFILE = ("profile", pa.string(), "study profile (quick | full) whose sizes produced the row")


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    columns: tuple[tuple[str, pa.DataType, str], ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(n, t) for n, t, _ in self.columns])


TABLES: dict[str, Table] = {
    t.name: t
    for t in [
        Table("corpus_documents", "the seeded sample of each corpus", (
            PROFILE,
            ("corpus", pa.string(), "catalog corpus name"),
            ("doc_id", pa.string(), "document id in its source (mixtures: component/id)"),
            ("component", pa.string(), "mixture component (or the corpus name)"),
            ("domain", pa.string(), "domain field of the source"),
            ("language", pa.string(), "language field of the source"),
            ("source", pa.string(), "source file or hub dataset"),
            ("text", pa.string(), "document text"),
            ("text_sha256", pa.string(), "sha256 of the text (cache key)"),
            ("n_chars", pa.int64(), "characters in the text"),
            PARAMS, CREATED,
        )),
        Table("benchmark_examples", "benchmark examples rendered exactly as lm-eval scores them", (
            PROFILE,
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("example_id", pa.int64(), "lm-eval doc_id (index in the evaluated split)"),
            ("input_text", pa.string(), "rendered input (context) as scored"),
            ("target_text", pa.string(), "gold continuation as scored (with its delimiter)"),
            ("choices", pa.list_(pa.string()), "scored continuations (mc) or contexts (schema)"),
            ("gold", pa.int64(), "index of the gold choice"),
            ("text_sha256", pa.string(), "sha256 of input_text + target_text (the similarity text)"),
            ("category", pa.string(), "capability category"),
            ("language", pa.string(), "language code"),
            PARAMS, CREATED,
        )),
        Table("corpus_embeddings", "sentence embeddings of corpus documents", (
            PROFILE,
            ("corpus", pa.string(), "catalog corpus name"),
            ("doc_id", pa.string(), "document id"),
            ("text_sha256", pa.string(), "sha256 of the embedded text"),
            ("embedding_model", pa.string(), "embedding model key"),
            ("embedding", pa.list_(pa.float32()), "L2-normalised embedding"),
            PARAMS, CREATED,
        )),
        Table("benchmark_embeddings", "sentence embeddings of benchmark examples (input + gold target)", (
            PROFILE,
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("example_id", pa.int64(), "lm-eval doc_id"),
            ("text_sha256", pa.string(), "sha256 of the embedded text"),
            ("embedding_model", pa.string(), "embedding model key"),
            ("embedding", pa.list_(pa.float32()), "L2-normalised embedding"),
            PARAMS, CREATED,
        )),
        Table("example_similarity", "per-example similarity of a benchmark example to a corpus sample", (
            PROFILE,
            ("corpus", pa.string(), "catalog corpus name"),
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("model", pa.string(), "model id for model-based measures, '' otherwise"),
            ("example_id", pa.int64(), "lm-eval doc_id"),
            ("measure", pa.string(), "measure name (see the measures view)"),
            ("value", pa.float64(), "measure value"),
            ("evidence", pa.string(), "e.g. nearest corpus document id or matched n-gram"),
            PARAMS, CREATED,
        )),
        Table("dataset_similarity", "dataset-level similarity of a benchmark to a corpus sample", (
            PROFILE,
            ("corpus", pa.string(), "catalog corpus name"),
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("model", pa.string(), "model id for model-based measures, '' otherwise"),
            ("measure", pa.string(), "measure name (see the measures view)"),
            ("value", pa.float64(), "measure value"),
            ("ci_low", pa.float64(), "lower end of the CI where the measure has one"),
            ("ci_high", pa.float64(), "upper end of the CI where the measure has one"),
            ("n", pa.int64(), "examples the value is computed over"),
            ("warning", pa.string(), "caveat, e.g. MAUVE at its floor"),
            PARAMS, CREATED,
        )),
        Table("benchmark_scores", "accuracy of a model on a benchmark (lm-eval)", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("category", pa.string(), "capability category"),
            ("language", pa.string(), "language code"),
            ("n", pa.int64(), "examples scored"),
            ("acc", pa.float64(), "accuracy"),
            ("acc_stderr", pa.float64(), "standard error of acc"),
            ("acc_norm", pa.float64(), "length-normalised accuracy (multiple choice)"),
            ("acc_norm_stderr", pa.float64(), "standard error of acc_norm"),
            ("primary_metric", pa.string(), "acc or acc_norm: the metric normalised_score uses"),
            ("random_baseline", pa.float64(), "chance accuracy r (mean 1/#choices)"),
            ("normalized_score", pa.float64(), "100 * (primary - r) / (1 - r)"),
            ("model_fingerprint", pa.string(), "sha256 identifying the weights"),
            PARAMS, CREATED,
        )),
        Table("example_results", "per-example lm-eval results", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("example_id", pa.int64(), "lm-eval doc_id"),
            ("correct", pa.bool_(), "correct under the benchmark's primary metric"),
            ("correct_norm", pa.bool_(), "correct under acc_norm (multiple choice)"),
            ("gold_loglik", pa.float64(), "log-likelihood of the gold continuation"),
            ("gold_n_tokens", pa.int64(), "tokens in the gold continuation"),
            ("chosen", pa.int64(), "index of the highest-likelihood choice"),
            ("chosen_loglik", pa.float64(), "its log-likelihood"),
            ("choice_logliks", pa.list_(pa.float64()), "log-likelihood of every choice"),
            PARAMS, CREATED,
        )),
        Table("correlations", "correlation between a dataset-level measure and a model's score across benchmarks", (
            PROFILE,
            ("study", pa.string(), "study name"),
            ("model", pa.string(), "model id"),
            ("corpus", pa.string(), "catalog corpus name"),
            ("measure", pa.string(), "measure name"),
            ("score", pa.string(), "score column explained (e.g. normalized_score)"),
            ("method", pa.string(), "spearman | pearson | kendall"),
            ("n", pa.int64(), "benchmarks in the correlation"),
            ("r", pa.float64(), "correlation coefficient (raw)"),
            ("p", pa.float64(), "analytic two-sided p-value"),
            ("p_adj", pa.float64(), "p-value corrected across the study's grid"),
            ("ci_low", pa.float64(), "bootstrap CI lower end"),
            ("ci_high", pa.float64(), "bootstrap CI upper end"),
            ("p_perm", pa.float64(), "two-sided permutation p-value (+1 correction)"),
            ("direction", pa.int64(), "+1 if higher = more similar, -1 if higher = less similar"),
            ("r_oriented", pa.float64(), "r * direction: positive means 'more similar => better'"),
            ("note", pa.string(), "caveats (small n, undefined correlation)"),
            PARAMS, CREATED,
        )),
        Table("measures", "the measure registry", (
            ("name", pa.string(), "measure name"),
            ("family", pa.string(), "embedding | token | model | compression | task2vec | overlap"),
            ("level", pa.string(), "example | dataset"),
            ("direction", pa.int64(), "+1 if higher = more similar, -1 if higher = less similar"),
            ("needs_model", pa.bool_(), "computed per model"),
            ("description", pa.string(), "what it measures"),
            ("formula", pa.string(), "how it is computed"),
            PARAMS,
        )),
        Table("measure_agreement", "do the similarity measures agree? correlation of each pair of oriented measures", (
            PROFILE,
            ("study", pa.string(), "study name"),
            ("model", pa.string(), "model whose model-specific measures are included, '' if none are"),
            ("corpus", pa.string(), "catalog corpus name, or '*' for (corpus, benchmark) pairs pooled over corpora"),
            ("method", pa.string(), "spearman | pearson | kendall"),
            ("measure_a", pa.string(), "measure name"),
            ("measure_b", pa.string(), "measure name"),
            ("n", pa.int64(), "(corpus, benchmark) pairs where both measures are present"),
            ("r", pa.float64(), "correlation of value_a * direction_a with value_b * direction_b (NaN if undefined)"),
            PARAMS, CREATED,
        )),
        Table("per_example_analysis", "are correctly answered examples more similar? per study, model, corpus, benchmark, measure", (
            PROFILE,
            ("study", pa.string(), "study name"),
            ("model", pa.string(), "model id whose correctness is explained"),
            ("corpus", pa.string(), "catalog corpus name"),
            ("benchmark", pa.string(), "catalog benchmark name"),
            ("measure", pa.string(), "example-level measure name"),
            ("direction", pa.int64(), "+1 if higher = more similar, -1 if higher = less similar"),
            ("n", pa.int64(), "examples with both a similarity and a result"),
            ("n_correct", pa.int64(), "correctly answered examples"),
            ("n_incorrect", pa.int64(), "incorrectly answered examples"),
            ("auroc", pa.float64(), "P(a correct example is more similar than an incorrect one), oriented; 0.5 = no separation"),
            ("mannwhitney_u", pa.float64(), "Mann-Whitney U of the correct group (oriented similarity)"),
            ("p", pa.float64(), "two-sided Mann-Whitney p-value"),
            ("p_adj", pa.float64(), "p corrected across the study's per-example grid"),
            ("mean_similarity_correct", pa.float64(), "mean measure value over correct examples"),
            ("mean_similarity_incorrect", pa.float64(), "mean measure value over incorrect examples"),
            ("acc_q1", pa.float64(), "accuracy in the least similar quartile"),
            ("acc_q2", pa.float64(), "accuracy in the second quartile"),
            ("acc_q3", pa.float64(), "accuracy in the third quartile"),
            ("acc_q4", pa.float64(), "accuracy in the most similar quartile"),
            ("quartiles", pa.string(), "JSON: per quartile n, accuracy, similarity_min, similarity_max"),
            ("note", pa.string(), "caveats (all correct/incorrect, dropped examples)"),
            PARAMS, CREATED,
        )),
    ]
}
