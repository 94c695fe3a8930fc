"""Sentence embeddings of corpus documents and benchmark examples (content-hash cached)."""


import dagster as dg
import numpy as np
import pandas as pd

from simassets.core.hashing import canonical_json, sha256_text
from simassets.defs.common import Freshness, partition_fingerprint, skipped, upstream_fingerprint
from simassets.defs.corpora import corpus_documents
from simassets.defs.benchmarks import benchmark_examples
from simassets.defs.partitions import benchmark_partitions, corpus_partitions
from simassets.defs.resources import StudyResource

CODE_VERSION = "1"


def _embedder(study: StudyResource):
    from simassets.core.embeddings import get_embedder

    return get_embedder(cache_root=study.cache_dir / "embeddings")


def _freshness(study: StudyResource, table: str, upstream: str, keys: dict[str, str]) -> Freshness:
    wh, profile = study.warehouse(), study.profile_name
    fp = partition_fingerprint(table, CODE_VERSION, upstream=upstream_fingerprint(wh, upstream, profile, keys),
                               embedder=_embedder(study).model_key)
    return Freshness((table,), keys, fp)


def corpus_embeddings_freshness(study: StudyResource, partition_key: str) -> Freshness:
    return _freshness(study, "corpus_embeddings", "corpus_documents", {"corpus": partition_key})


def benchmark_embeddings_freshness(study: StudyResource, partition_key: str) -> Freshness:
    return _freshness(study, "benchmark_embeddings", "benchmark_examples", {"benchmark": partition_key})


def _embed_partition(context: dg.AssetExecutionContext, study: StudyResource, *, table: str, upstream: str,
                     keys: dict[str, str], id_col: str, texts_of) -> dg.MaterializeResult:
    profile, wh, embedder = study.profile_name, study.warehouse(), _embedder(study)
    fresh = _freshness(study, table, upstream, keys)
    fp = fresh.fingerprint
    if fresh.fresh(wh, profile):
        return skipped(context, wh, table, profile, keys, fp)
    src = wh.read_partition(upstream, profile, keys)
    texts = texts_of(src)
    vectors = embedder.embed(texts)
    stats = embedder.last_stats
    rows = pd.DataFrame({
        **{k: v for k, v in keys.items()},
        id_col: src[id_col].to_numpy(),
        "text_sha256": [sha256_text(t) for t in texts],
        "embedding_model": embedder.model_key,
        "embedding": list(vectors.astype(np.float32)),
        "params": canonical_json(embedder.params()),
    })
    wh.write_partition(table, profile, keys, rows, fp)
    context.log.info(f"{table} {keys}: {stats.hits} cached, {stats.misses} embedded in {stats.seconds:.1f}s")
    return dg.MaterializeResult(
        metadata={"rows": len(rows), "dim": int(vectors.shape[1]), "cache_hits": stats.hits,
                  "embedded": stats.misses, "seconds": round(stats.seconds, 2),
                  "embedding_model": embedder.model_key, "fingerprint": fp[:16]},
        data_version=dg.DataVersion(fp),
    )


@dg.asset(partitions_def=corpus_partitions, deps=[corpus_documents], group_name="embeddings",
          kinds={"pytorch", "parquet"}, code_version=CODE_VERSION, pool="cpu_heavy")
def corpus_embeddings(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """all-MiniLM-L6-v2 embeddings of a corpus sample; no text is embedded twice (cache by text sha256 and model)."""
    return _embed_partition(context, study, table="corpus_embeddings", upstream="corpus_documents",
                            keys={"corpus": context.partition_key}, id_col="doc_id",
                            texts_of=lambda df: df["text"].tolist())


def benchmark_text(df: pd.DataFrame) -> list[str]:
    """The text a benchmark example is compared by: the rendered input followed by the gold continuation."""
    return (df["input_text"] + df["target_text"]).tolist()


@dg.asset(partitions_def=benchmark_partitions, deps=[benchmark_examples], group_name="embeddings",
          kinds={"pytorch", "parquet"}, code_version=CODE_VERSION, pool="cpu_heavy")
def benchmark_embeddings(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """all-MiniLM-L6-v2 embeddings of a benchmark's examples (rendered input + gold continuation, as scored)."""
    return _embed_partition(context, study, table="benchmark_embeddings", upstream="benchmark_examples",
                            keys={"benchmark": context.partition_key}, id_col="example_id",
                            texts_of=benchmark_text)
