"""Partitions: corpora, benchmarks and models are dynamic, synced from the catalog and registry.

Dynamic partitions keep the code location independent of the catalog file: the sync sensor and
``simassets run`` add what the catalog/registry declare and remove what they no longer do.
"""

import dagster as dg

corpus_partitions = dg.DynamicPartitionsDefinition(name="corpus")
benchmark_partitions = dg.DynamicPartitionsDefinition(name="benchmark")
model_partitions = dg.DynamicPartitionsDefinition(name="model")

corpus_benchmark_partitions = dg.MultiPartitionsDefinition(
    {"corpus": corpus_partitions, "benchmark": benchmark_partitions}
)
model_benchmark_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "benchmark": benchmark_partitions}
)


def keys_of(partitions_def: dg.PartitionsDefinition, partition_key: str) -> dict[str, str]:
    """Dimension name -> value for a partition key (works in real runs and under test contexts)."""
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        return dict(partitions_def.get_partition_key_from_str(partition_key).keys_by_dimension)
    assert isinstance(partitions_def, dg.DynamicPartitionsDefinition) and partitions_def.name
    return {partitions_def.name: partition_key}
model_corpus_partitions = dg.MultiPartitionsDefinition(
    {"model": model_partitions, "corpus": corpus_partitions}
)
