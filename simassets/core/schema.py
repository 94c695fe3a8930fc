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
        Table("corpus_indexes", "the whole-corpus suffix-array index of each corpus (infini-gram, normalized words)", (
            PROFILE,
            ("corpus", pa.string(), "catalog corpus name"),
            ("index_dir", pa.string(), "folder of the index (a content-hash cache entry, or the catalog's index_dir)"),
            ("built", pa.bool_(), "built by this run (false: reused from the cache or brought by the user)"),
            ("n_docs", pa.int64(), "documents indexed (every document of the source files)"),
            ("n_words", pa.int64(), "normalized words indexed"),
            ("text_bytes", pa.int64(), "bytes of indexed (normalized) text"),
            ("index_bytes", pa.int64(), "bytes of the index folder"),
            ("build_seconds", pa.float64(), "seconds the build took (when it was built)"),
            ("sources", pa.string(), "JSON: source file -> sha256 (or hub id)"),
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
            ("acc_ci_low", pa.float64(), "Wilson 95% interval of acc, lower end"),
            ("acc_ci_high", pa.float64(), "Wilson 95% interval of acc, upper end"),
            ("acc_norm_ci_low", pa.float64(), "Wilson 95% interval of acc_norm, lower end"),
            ("acc_norm_ci_high", pa.float64(), "Wilson 95% interval of acc_norm, upper end"),
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
            ("input_nll", pa.float64(), "NLL (nats) of the input's tokens after the first, from the evaluation's forward pass"),
            ("input_n_tokens", pa.int64(), "tokens in input_nll"),
            PARAMS, CREATED,
        )),
        Table("dataset_diversity", "Task2Vec diversity coefficient of each corpus sample and benchmark", (
            PROFILE,
            ("dataset_kind", pa.string(), "corpus | benchmark"),
            ("dataset", pa.string(), "catalog corpus or benchmark name"),
            ("probe", pa.string(), "probe model id"),
            ("value", pa.float64(), "expected Task2Vec distance between two batches of the dataset"),
            ("ci_low", pa.float64(), "95% interval over batch pairs"),
            ("ci_high", pa.float64(), "95% interval over batch pairs"),
            ("n_pairs", pa.int64(), "batch pairs averaged"),
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
            ("p", pa.float64(), "two-sided p-value, P(|r*| >= |r|); NaN below n = 5 (see note)"),
            ("p_method", pa.string(), "exact | kendall-exact | monte-carlo-R | asymptotic: how p was computed"),
            ("p_asymptotic", pa.float64(), "scipy's asymptotic p (what the papers report)"),
            ("p_adj", pa.float64(), "p corrected across the study's grid"),
            ("ci_low", pa.float64(), "95% bootstrap CI lower end, benchmarks resampled"),
            ("ci_high", pa.float64(), "95% bootstrap CI upper end, benchmarks resampled"),
            ("ci2_low", pa.float64(), "two-level CI lower end: benchmarks and their examples resampled, "
             "for the correlation with the true (noise-free) scores"),
            ("ci2_high", pa.float64(), "two-level CI upper end (see ci2_low)"),
            ("reliability", pa.float64(), "share of the scores' variance that is not sampling error "
             "(<= 0: the scores differ no more than their noise); r / sqrt(reliability) estimates the true r"),
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
        Table("unlearning_runs", "one unlearning run per (model, corpus): stopping rule, steps, loss curves, costs", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("corpus", pa.string(), "the unlearned corpus"),
            ("stop_rule", pa.string(), "shuffled_reference | step_budget | retain_unrecoverable | unknown_at_start"),
            ("ascent_steps", pa.int64(), "gradient-ascent steps on the corpus"),
            ("retain_steps", pa.int64(), "descent steps on retain data (repairs)"),
            ("max_steps", pa.int64(), "the ascent step budget"),
            ("base_target_loss", pa.float64(), "corpus loss (nats/token) of the base model"),
            ("base_shuffled_loss", pa.float64(), "loss of the chunk-shuffled corpus text under the base model"),
            ("base_retain_loss", pa.float64(), "retain loss of the base model"),
            ("retain_bound", pa.float64(), "base_retain_loss * (1 + retain_tolerance)"),
            ("final_target_loss", pa.float64(), "corpus loss after unlearning"),
            ("final_shuffled_loss", pa.float64(), "shuffled-text loss after unlearning"),
            ("final_retain_loss", pa.float64(), "retain loss after unlearning"),
            ("curve_step", pa.list_(pa.int64()), "ascent step of each curve point (0 = base)"),
            ("curve_target", pa.list_(pa.float64()), "corpus loss per curve point"),
            ("curve_shuffled", pa.list_(pa.float64()), "shuffled-text loss per curve point"),
            ("curve_retain", pa.list_(pa.float64()), "retain loss per curve point"),
            ("curve_retain_steps", pa.list_(pa.int64()), "repair steps taken after each ascent step"),
            ("tokens", pa.int64(), "tokens trained on (ascent + repair)"),
            ("seconds_per_step", pa.float64(), "optimizer seconds per step"),
            ("unlearn_seconds", pa.float64(), "seconds of the unlearning run (training + loss measurements)"),
            ("eval_seconds", pa.float64(), "seconds re-evaluating the unlearned model"),
            ("eval_limit", pa.int64(), "examples per benchmark re-evaluated (a subset of the base evaluation's)"),
            ("n_benchmarks", pa.int64(), "benchmarks re-evaluated"),
            ("weights_path", pa.string(), "where the unlearned weights were kept ('' = not kept)"),
            ("model_fingerprint", pa.string(), "sha256 identifying the base weights"),
            PARAMS, CREATED,
        )),
        Table("attribution", "score change when a corpus is unlearned, per benchmark and per capability category", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("corpus", pa.string(), "the unlearned corpus"),
            ("level", pa.string(), "benchmark | category"),
            ("benchmark", pa.string(), "catalog benchmark name ('' for category rows)"),
            ("category", pa.string(), "capability category"),
            ("n", pa.int64(), "examples scored by both models"),
            ("n_benchmarks", pa.int64(), "benchmarks in the row (1 for benchmark rows)"),
            ("base_acc", pa.float64(), "base model accuracy (primary metric) on these examples"),
            ("unlearned_acc", pa.float64(), "unlearned model accuracy on the same examples"),
            ("base_score", pa.float64(), "base normalised score 100 (acc - r) / (1 - r)"),
            ("base_stderr", pa.float64(), "its standard error"),
            ("unlearned_score", pa.float64(), "unlearned normalised score"),
            ("unlearned_stderr", pa.float64(), "its standard error"),
            ("delta", pa.float64(), "unlearned - base (normalised points; < 0 = the benchmark falls)"),
            ("delta_stderr", pa.float64(), "paired standard error of delta"),
            PARAMS, CREATED,
        )),
        Table("corpus_relationships", "pairs of corpora by the correlation of their impact vectors (delta per benchmark)", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("corpus_a", pa.string(), "catalog corpus name"),
            ("corpus_b", pa.string(), "catalog corpus name"),
            ("method", pa.string(), "correlation method"),
            ("n", pa.int64(), "benchmarks in both impact vectors"),
            ("r", pa.float64(), "correlation of the impact vectors"),
            ("p", pa.float64(), "two-sided p-value, P(|r*| >= |r|); NaN below n = 5 (see note)"),
            ("p_method", pa.string(), "exact | kendall-exact | monte-carlo-R: how p was computed"),
            ("relation", pa.string(), "correlated (r >= 0.4) | complementary (r <= -0.4) | orthogonal (|r| <= 0.2) | weak | undefined"),
            ("note", pa.string(), "caveats"),
            PARAMS, CREATED,
        )),
        Table("high_impact_corpora", "per capability category, corpora ranked by the drop their unlearning causes", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("category", pa.string(), "capability category"),
            ("corpus", pa.string(), "catalog corpus name"),
            ("delta", pa.float64(), "category delta (normalised points)"),
            ("delta_stderr", pa.float64(), "its standard error"),
            ("rank", pa.int64(), "1 = the largest drop"),
            ("high_impact", pa.bool_(), "delta <= -5 points and the drop exceeds 2 standard errors"),
            PARAMS, CREATED,
        )),
        Table("attribution_similarity", "does a corpus's similarity to a benchmark predict the benchmark's drop when it is unlearned?", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("scope", pa.string(), "'*' = all (corpus, benchmark) pairs, else one corpus across benchmarks"),
            ("measure", pa.string(), "similarity measure"),
            ("score", pa.string(), "drop = -delta (normalised points)"),
            ("method", pa.string(), "spearman | pearson"),
            ("n", pa.int64(), "pairs in the correlation"),
            ("r", pa.float64(), "correlation coefficient (raw)"),
            ("p", pa.float64(), "two-sided p-value, P(|r*| >= |r|); NaN below n = 5 (see note)"),
            ("p_method", pa.string(), "exact | kendall-exact | monte-carlo-R | asymptotic: how p was computed"),
            ("p_asymptotic", pa.float64(), "scipy's asymptotic p"),
            ("p_adj", pa.float64(), "p corrected (Benjamini-Yekutieli) across the model's grid of the scope"),
            ("ci_low", pa.float64(), "bootstrap CI lower end"),
            ("ci_high", pa.float64(), "bootstrap CI upper end"),
            ("ci2_low", pa.float64(), "two-level CI lower end (NaN: the drop has no example-level resampling)"),
            ("ci2_high", pa.float64(), "two-level CI upper end (NaN: the drop has no example-level resampling)"),
            ("reliability", pa.float64(), "score reliability (NaN: the drop has no example-level resampling)"),
            ("direction", pa.int64(), "+1 if higher = more similar, -1 if higher = less similar"),
            ("r_oriented", pa.float64(), "r * direction: positive means 'more similar => larger drop'"),
            ("note", pa.string(), "caveats"),
            PARAMS, CREATED,
        )),
        Table("finetune_runs", "one fine-tuning run per (model, training corpus) at a fixed token budget", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("corpus", pa.string(), "training corpus"),
            ("status", pa.string(), "trained | refused (every target overlaps the corpus)"),
            ("targets", pa.list_(pa.string()), "the targets of the experiment"),
            ("refused_targets", pa.list_(pa.string()), "targets the overlap guard refused for this corpus"),
            ("steps", pa.int64(), "optimizer steps"),
            ("tokens", pa.int64(), "tokens trained on (the same for every corpus)"),
            ("blocks", pa.int64(), "distinct training blocks of the corpus"),
            ("epochs", pa.float64(), "passes over the corpus blocks"),
            ("train_seconds", pa.float64(), "optimizer seconds"),
            ("seconds", pa.float64(), "seconds of the whole run (training + target losses)"),
            ("tokens_per_second", pa.float64(), "training tokens per optimizer second"),
            ("trainable_parameters", pa.int64(), "parameters updated (all, or the LoRA adapters)"),
            ("train_loss", pa.list_(pa.float64()), "training-batch loss per step"),
            ("model_fingerprint", pa.string(), "sha256 identifying the base weights"),
            PARAMS, CREATED,
        )),
        Table("finetune_eval", "target loss before and after fine-tuning on a corpus, with the corpus-target alignment", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("corpus", pa.string(), "training corpus"),
            ("target", pa.string(), "benchmark:NAME | heldout:CORPUS"),
            ("status", pa.string(), "evaluated | refused (overlap guard)"),
            ("positive_control", pa.bool_(), "the pair is a declared positive control (overlap allowed)"),
            ("contaminated_fraction_13", pa.float64(), "share of target texts with a 13-gram in the training corpus"),
            ("loss_before", pa.float64(), "target cross-entropy (nats/token) of the base model"),
            ("loss_after", pa.float64(), "target cross-entropy after fine-tuning"),
            ("delta_loss", pa.float64(), "loss_after - loss_before"),
            ("ppl_before", pa.float64(), "exp(loss_before)"),
            ("ppl_after", pa.float64(), "exp(loss_after)"),
            ("n_tokens", pa.int64(), "target tokens scored"),
            ("curve_steps", pa.list_(pa.int64()), "steps at which the target loss was measured"),
            ("curve_loss", pa.list_(pa.float64()), "target loss at those steps"),
            ("task2vec_alignment", pa.float64(), "Task2Vec alignment coefficient of corpus and target (probe model)"),
            ("task2vec_ci_low", pa.float64(), "its 95% interval, lower end"),
            ("task2vec_ci_high", pa.float64(), "its 95% interval, upper end"),
            ("gzip_alignment", pa.float64(), "1 - mean gzip NCD over seeded (target text, corpus doc) pairs"),
            ("probe", pa.string(), "Task2Vec probe model id"),
            ("note", pa.string(), "why a pair was refused, caveats"),
            PARAMS, CREATED,
        )),
        Table("alignment_vs_loss", "does corpus-target alignment predict the target's loss after training on the corpus?", (
            PROFILE,
            ("model", pa.string(), "model id"),
            ("subset", pa.string(), "clean (positive controls left out) | all"),
            ("target", pa.string(), "one target across training corpora, or '*' pooled"),
            ("measure", pa.string(), "task2vec_alignment | gzip_alignment"),
            ("loss", pa.string(), "loss_after | delta_loss"),
            ("method", pa.string(), "pearson | spearman"),
            ("n", pa.int64(), "(corpus, target) pairs"),
            ("r", pa.float64(), "correlation coefficient"),
            ("r2", pa.float64(), "r squared"),
            ("p", pa.float64(), "two-sided p-value, P(|r*| >= |r|); NaN below n = 5 (see note)"),
            ("p_method", pa.string(), "exact | kendall-exact | monte-carlo-R: how p was computed"),
            ("ci_low", pa.float64(), "bootstrap CI lower end"),
            ("ci_high", pa.float64(), "bootstrap CI upper end"),
            ("slope", pa.float64(), "least-squares slope of loss on alignment"),
            ("intercept", pa.float64(), "least-squares intercept"),
            ("note", pa.string(), "caveats (small n, undefined correlation)"),
            PARAMS, CREATED,
        )),
    ]
}

# Table names as constants: code names a table through these, never through a string literal.
CORPUS_DOCUMENTS = "corpus_documents"
BENCHMARK_EXAMPLES = "benchmark_examples"
CORPUS_INDEXES = "corpus_indexes"
CORPUS_EMBEDDINGS = "corpus_embeddings"
BENCHMARK_EMBEDDINGS = "benchmark_embeddings"
EXAMPLE_SIMILARITY = "example_similarity"
DATASET_SIMILARITY = "dataset_similarity"
BENCHMARK_SCORES = "benchmark_scores"
EXAMPLE_RESULTS = "example_results"
DATASET_DIVERSITY = "dataset_diversity"
CORRELATIONS = "correlations"
MEASURES = "measures"
MEASURE_AGREEMENT = "measure_agreement"
PER_EXAMPLE_ANALYSIS = "per_example_analysis"
UNLEARNING_RUNS = "unlearning_runs"
ATTRIBUTION = "attribution"
CORPUS_RELATIONSHIPS = "corpus_relationships"
HIGH_IMPACT_CORPORA = "high_impact_corpora"
ATTRIBUTION_SIMILARITY = "attribution_similarity"
FINETUNE_RUNS = "finetune_runs"
FINETUNE_EVAL = "finetune_eval"
ALIGNMENT_VS_LOSS = "alignment_vs_loss"
SIMILARITY_TABLES = (EXAMPLE_SIMILARITY, DATASET_SIMILARITY)  # the tables every measure family writes

assert set(TABLES) == {v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str)}, \
    "every table has a name constant"


def columns(table: str) -> list[str]:
    """The columns a computation provides for ``table`` (``profile`` and ``created_at`` are filled on write)."""
    return [c for c, _, _ in TABLES[table].columns if c not in ("profile", "created_at")]
