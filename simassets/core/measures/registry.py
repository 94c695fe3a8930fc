"""The measure registry: every similarity notion with its family, level, direction and parameters.

``direction`` is +1 when a higher value means *more similar* (cosine, MAUVE, alignment) and -1 when a
higher value means *less similar* (KL, JS, perplexity, NCD). Correlations orient by it, so that
"more similar => better" has the same sign for every measure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Family = Literal["embedding", "token", "model", "compression", "task2vec", "overlap"]
Level = Literal["example", "dataset"]


@dataclass(frozen=True)
class MeasureSpec:
    name: str
    family: Family
    levels: tuple[Level, ...]
    direction: int
    description: str
    formula: str = ""
    needs_model: bool = False
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise ValueError(f"measure {self.name}: direction must be +1 or -1")


MEASURES: dict[str, MeasureSpec] = {}


def register(spec: MeasureSpec) -> MeasureSpec:
    if spec.name in MEASURES and MEASURES[spec.name] != spec:
        raise ValueError(f"measure {spec.name!r} registered twice with different specs")
    MEASURES[spec.name] = spec
    return spec


def get(name: str) -> MeasureSpec:
    try:
        return MEASURES[name]
    except KeyError:
        raise KeyError(f"unknown measure {name!r}; known: {sorted(MEASURES)}") from None


def direction(name: str) -> int:
    return get(name).direction


# ------------------------------------------------------------------ embedding family (foundation)
register(MeasureSpec(
    name="max_cosine", family="embedding", levels=("example", "dataset"), direction=1,
    description="Cosine similarity of an example's embedding to its nearest corpus document; the dataset value is the mean over examples.",
    formula="max_d cos(e_x, e_d)", params={"embedding_model": "all-MiniLM-L6-v2"},
))
register(MeasureSpec(
    name="topk_cosine", family="embedding", levels=("example", "dataset"), direction=1,
    description="Mean cosine similarity of an example's embedding to its k nearest corpus documents; the dataset value is the mean over examples.",
    formula="mean_{d in top-k(x)} cos(e_x, e_d)", params={"embedding_model": "all-MiniLM-L6-v2", "k": "profile.embedding_top_k"},
))
register(MeasureSpec(
    name="centroid_cosine", family="embedding", levels=("dataset",), direction=1,
    description="Cosine similarity between the mean embedding of the benchmark examples and the mean embedding of the corpus sample.",
    formula="cos(mean_x e_x, mean_d e_d)", params={"embedding_model": "all-MiniLM-L6-v2"},
))

# ------------------------------------------------------------------ token family
register(MeasureSpec(
    name="unigram_kl", family="token", levels=("dataset",), direction=-1, needs_model=True,
    description="KL divergence (nats) from the benchmark's unigram distribution to the corpus sample's under the model's tokenizer; percentile bootstrap CI over corpus-document resamples.",
    formula="sum_t P_b(t) ln(P_b(t)/P_c(t)),  P = (counts + eps) / sum(counts + eps)",
    params={"tokenizer": "model", "eps": 1e-3, "n_boot": 1000, "ci": 0.95, "log_base": "e"},
))
register(MeasureSpec(
    name="unigram_js", family="token", levels=("dataset",), direction=-1, needs_model=True,
    description="Jensen-Shannon divergence (nats, <= ln 2) between benchmark and corpus unigram distributions under the model's tokenizer.",
    formula="(KL(P_b||M) + KL(P_c||M)) / 2,  M = (P_b + P_c) / 2",
    params={"tokenizer": "model", "eps": 0.0, "log_base": "e"},
))
register(MeasureSpec(
    name="hashed_ngram_kl", family="token", levels=("dataset",), direction=-1,
    description="KL divergence (nats) between benchmark and corpus distributions of hashed lower-cased word-punctuation unigrams+bigrams (DSIR features, 10,000 buckets).",
    formula="sum_f P_b(f) ln(P_b(f)/P_c(f)),  f = xxh64/splitmix64(uni+bigram) mod 10000, P = (counts + eps)/sum",
    params={"num_buckets": 10000, "ngrams": 2, "tokenizer": r"lower + \w+|[^\w\s]+", "hash": "xxh64(seed=0)+splitmix64", "eps": 1e-3, "log_base": "e"},
))
register(MeasureSpec(
    name="hashed_ngram_js", family="token", levels=("dataset",), direction=-1,
    description="Jensen-Shannon divergence (nats, <= ln 2) between hashed uni+bigram distributions of benchmark and corpus.",
    formula="(KL(P_b||M) + KL(P_c||M)) / 2,  M = (P_b + P_c) / 2",
    params={"num_buckets": 10000, "ngrams": 2, "hash": "xxh64(seed=0)+splitmix64", "eps": 0.0, "log_base": "e"},
))
register(MeasureSpec(
    name="importance_log_weight", family="token", levels=("example",), direction=1,
    description="DSIR-style log importance weight of an example: log-likelihood ratio of its hashed uni+bigram features under the corpus vs the benchmark distribution (higher = more corpus-like).",
    formula="sum_f count_x(f) (ln P_c(f) - ln P_b(f))",
    params={"num_buckets": 10000, "ngrams": 2, "eps": 1e-3},
))
register(MeasureSpec(
    name="importance_log_weight_per_feature", family="token", levels=("example",), direction=1,
    description="importance_log_weight divided by the example's number of hashed features (length-normalised).",
    formula="sum_f count_x(f) (ln P_c(f) - ln P_b(f)) / sum_f count_x(f)",
    params={"num_buckets": 10000, "ngrams": 2, "eps": 1e-3},
))
# ------------------------------------------------------------------ compression family
register(MeasureSpec(
    name="gzip_alignment", family="compression", levels=("example", "dataset"), direction=1,
    description="1 - mean gzip normalized compression distance between benchmark examples and seeded random corpus documents (example: 1 - its mean NCD over m docs).",
    formula="1 - mean_(x,d) [C(d+' '+x) - min(C(x),C(d))] / max(C(x),C(d)),  C = len(gzip(utf8, level 9, mtime=0))",
    params={"compresslevel": 9, "separator": " ", "order": "doc first (its deflate state is reused)", "n_pairs": 1000},
))
# ------------------------------------------------------------------ overlap family
for _n in (13, 8):
    register(MeasureSpec(
        name=f"ngram_overlap_{_n}", family="overlap", levels=("example", "dataset"), direction=1,
        description=f"Fraction of an example's word {_n}-grams (normalized text) found in the corpus sample; the dataset value is the mean over examples.",
        formula=f"|{{{_n}-grams of x in corpus}}| / |{{{_n}-grams of x}}| (0 if x has < {_n} words)",
        params={"n": _n, "normalization": "lower-case; delete [^\\w\\s]+; split on whitespace"},
    ))
    register(MeasureSpec(
        name=f"contaminated_fraction_{_n}", family="overlap", levels=("dataset",), direction=1,
        description=f"Share of benchmark examples sharing at least one word {_n}-gram with the corpus sample (short examples count as clean).",
        formula=f"mean_x 1[x shares a {_n}-gram with the corpus]",
        params={"n": _n, "normalization": "lower-case; delete [^\\w\\s]+; split on whitespace"},
    ))
register(MeasureSpec(
    name="mauve", family="embedding", levels=("dataset",), direction=1,
    description="MAUVE (Pillutla et al. 2021) between benchmark and corpus-sample embeddings: joint PCA + k-means quantisation, area under the divergence curve; ~0.004 (at_floor) means fully separated clusters.",
    formula="AUC of (exp(-c KL(Q||R_l)), exp(-c KL(P||R_l))), R_l = l P + (1-l) Q, c=5",
    params={"embedding_model": "all-MiniLM-L6-v2", "num_buckets": "auto=max(2, round(min(n_bench, n_corpus)/10))",
            "pca_explained_variance": 0.9, "kmeans_num_redo": 5, "kmeans_max_iter": 500, "seed": 25,
            "scaling": 5.0, "discretization": 25},
))
# ------------------------------------------------------------------ model family
register(MeasureSpec(
    name="input_perplexity", family="model", levels=("example", "dataset"), direction=-1, needs_model=True,
    description="Perplexity of the rendered benchmark input under the model: its tokens as lm-eval encodes the context, each after the first predicted from its prefix, read from the evaluation's own forward pass (no extra pass); the dataset value is token-weighted.",
    formula="exp(sum_i nll_i / sum_i n_i) over input tokens 2..n", params={"source": "example_results.input_nll", "bos": "only where lm-eval adds it (e.g. Gemma)"},
))
register(MeasureSpec(
    name="target_perplexity", family="model", levels=("example", "dataset"), direction=-1, needs_model=True,
    description="Perplexity of the gold continuation given the input, from the evaluation's own log-likelihoods (no extra forward pass); token-weighted at dataset level.",
    formula="exp(-sum_i loglik_gold_i / sum_i n_gold_i)", params={"source": "example_results.gold_loglik"},
))
register(MeasureSpec(
    name="corpus_perplexity", family="model", levels=("dataset",), direction=-1, needs_model=True,
    description="How in-distribution a corpus sample is for a model: token-weighted perplexity of (a seeded prefix of) its documents, each truncated.",
    formula="exp(sum_d nll_d / sum_d n_d)", params={"quick": "20 docs x 256 tokens", "full": "200 docs x 1024 tokens"},
))
# ------------------------------------------------------------------ task2vec family
register(MeasureSpec(
    name="task2vec_alignment", family="task2vec", levels=("dataset",), direction=1, needs_model=True,
    description="Alignment coefficient (Chawla et al.): 1 - expected Task2Vec distance between a corpus batch and a benchmark batch, where a batch's embedding is the diagonal Monte-Carlo Fisher information of a probe LM; 95% interval over batch pairs.",
    formula="1 - E_{b in corpus, b' in bench} d(F_b, F_b'),  d(a, b) = cos_dist(a/(a+b), b/(a+b))",
    params={"probe": "profile task2vec_probe (default: smallest registered model)", "quick": "last_block, 3 batches x 4 texts x 64 tokens",
            "full": "all weights, 4 batches x 8 texts x 128 tokens", "fisher": "montecarlo"},
))
