"""Similarity of each benchmark to each corpus sample: per example and per dataset."""


import dagster as dg
import numpy as np
import pandas as pd

from simassets.core.hashing import canonical_json
from simassets.defs.checks import finite_in_range_check, finite_in_range_spec
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md, upstream_fingerprint
from simassets.defs.embeddings import benchmark_embeddings, corpus_embeddings
from simassets.defs.partitions import corpus_benchmark_partitions, keys_of
from simassets.defs.resources import StudyResource

CODE_VERSION = "2"
COSINE_RANGE = (-1.0, 1.0)
RANGES = {"max_cosine": COSINE_RANGE, "topk_cosine": COSINE_RANGE, "centroid_cosine": COSINE_RANGE, "mauve": (0.0, 1.0)}


def _matrix(df: pd.DataFrame) -> np.ndarray:
    return np.vstack(df["embedding"].to_numpy()).astype(np.float32)


def embedding_similarity_freshness(study: StudyResource, partition_key: str) -> Freshness:
    keys = keys_of(corpus_benchmark_partitions, partition_key)
    profile, wh = study.profile_name, study.warehouse()
    fp = partition_fingerprint(
        "embedding_similarity", CODE_VERSION, k=study.profile_spec().embedding_top_k,
        corpus=upstream_fingerprint(wh, "corpus_embeddings", profile, {"corpus": keys["corpus"]}),
        benchmark=upstream_fingerprint(wh, "benchmark_embeddings", profile, {"benchmark": keys["benchmark"]}),
    )
    return Freshness(("example_similarity", "dataset_similarity"), {**keys, "asset": "embedding_similarity"}, fp)


@dg.asset(
    partitions_def=corpus_benchmark_partitions,
    deps=[corpus_embeddings, benchmark_embeddings],
    group_name="similarity",
    kinds={"numpy", "parquet"},
    code_version=CODE_VERSION,
    check_specs=[finite_in_range_spec("embedding_similarity")],
)
def embedding_similarity(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """Embedding similarity of a benchmark to a corpus sample: per example the max and mean top-k cosine to the corpus documents; per dataset their means and the centroid cosine."""
    from simassets.core.measures.embedding import centroid_cosine, nearest_neighbours
    from simassets.core.measures.mauve import mauve

    fresh = embedding_similarity_freshness(study, context.partition_key)
    out_keys, fp = fresh.keys, fresh.fingerprint
    corpus, bench = out_keys["corpus"], out_keys["benchmark"]
    profile, wh, prof = study.profile_name, study.warehouse(), study.profile_spec()
    if fresh.fresh(wh, profile):
        stored = wh.read_partition("example_similarity", profile, out_keys)
        res = skipped(context, wh, "dataset_similarity", profile, out_keys, fp)
        return dg.MaterializeResult(metadata=res.metadata, data_version=res.data_version, check_results=[
            finite_in_range_check("embedding_similarity", stored[["measure", "value"]], RANGES)])
    cemb = wh.read_partition("corpus_embeddings", profile, {"corpus": corpus})
    bemb = wh.read_partition("benchmark_embeddings", profile, {"benchmark": bench})
    nb = nearest_neighbours(_matrix(bemb), _matrix(cemb), prof.embedding_top_k)
    model_key = str(bemb["embedding_model"].iloc[0])
    params = canonical_json({"embedding_model": model_key, "k": int(nb.k), "corpus_docs": len(cemb)})
    doc_ids = cemb["doc_id"].to_numpy()
    n = len(bemb)
    examples = pd.DataFrame({
        "corpus": corpus, "benchmark": bench, "model": "",
        "example_id": np.tile(bemb["example_id"].to_numpy(), 2),
        "measure": ["max_cosine"] * n + ["topk_cosine"] * n,
        "value": np.concatenate([nb.max_cosine, nb.topk_cosine]).astype(float),
        "evidence": list(doc_ids[nb.nearest_index]) + [None] * n,
        "params": params,
    })
    mv = mauve(_matrix(bemb), _matrix(cemb))
    floor_warning = (f"MAUVE at its floor ({mv.floor:.4f}): benchmark and corpus fall in fully separated clusters"
                     if mv.at_floor else None)
    dataset = pd.DataFrame({
        "corpus": corpus, "benchmark": bench, "model": "",
        "measure": ["max_cosine", "topk_cosine", "centroid_cosine", "mauve"],
        "value": [float(nb.max_cosine.mean()), float(nb.topk_cosine.mean()),
                  float(centroid_cosine(_matrix(bemb), _matrix(cemb))), float(mv.score)],
        "ci_low": None, "ci_high": None, "n": n, "warning": [None, None, None, floor_warning],
        "params": [params] * 3 + [canonical_json({**mv.params, "num_clusters": int(mv.num_clusters),
                                                   "embedding_model": model_key})],
    })
    wh.write_partition("example_similarity", profile, out_keys, examples, fp)
    wh.write_partition("dataset_similarity", profile, out_keys, dataset, fp)
    return dg.MaterializeResult(
        metadata={"examples": n, "corpus_docs": len(cemb), "k": int(nb.k), "mauve": float(mv.score),
                  "mauve_clusters": int(mv.num_clusters), "mauve_at_floor": bool(mv.at_floor),
                  "dataset_measures": table_md(dataset[["measure", "value"]]), "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
        check_results=[finite_in_range_check("embedding_similarity", pd.concat([examples[["measure", "value"]],
                                                                                  dataset[["measure", "value"]]]), RANGES)],
    )
