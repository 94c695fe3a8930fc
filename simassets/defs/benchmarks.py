"""Benchmark examples: each benchmark's examples rendered exactly as lm-eval scores them."""


import dataclasses
from importlib.metadata import version

import dagster as dg
import pandas as pd

from simassets.core.catalog import BenchmarkSpec
from simassets.core.hashing import canonical_json, sha256_file, sha256_text
from simassets.core.paths import resolve_data_path
from simassets.defs.checks import non_empty_check, non_empty_spec
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md
from simassets.defs.partitions import benchmark_partitions
from simassets.defs.resources import StudyResource

CODE_VERSION = "1"


def benchmark_files_hash(spec: BenchmarkSpec) -> dict[str, str]:
    """sha256 of the local files behind a benchmark (a file, or every JSONL file of a mirror folder)."""
    if spec.path is None:
        return {"lm_eval_task": spec.lm_eval_task or ""}
    path = resolve_data_path(spec.path)
    files = [path] if path.is_file() else sorted(path.glob("*.json*")) + sorted(path.glob("*.parquet"))
    return {f.name: sha256_file(str(f)) for f in files}


def examples_fingerprint(spec: BenchmarkSpec, limit: int | None, seed: int) -> str:
    return partition_fingerprint(
        "benchmark_examples", CODE_VERSION, spec=dataclasses.asdict(spec), limit=limit, seed=seed,
        files=benchmark_files_hash(spec), lm_eval=version("lm_eval"),
    )


def benchmark_examples_freshness(study: StudyResource, partition_key: str) -> Freshness:
    cat = study.catalog()
    if partition_key not in cat.benchmarks:
        raise dg.Failure(f"benchmark {partition_key!r} is not in the catalog {cat.source_file}")
    prof = study.profile_spec()
    fp = examples_fingerprint(cat.benchmarks[partition_key], prof.benchmark_limit, prof.seed)
    return Freshness(("benchmark_examples",), {"benchmark": partition_key}, fp)


@dg.asset(
    partitions_def=benchmark_partitions,
    group_name="inputs",
    kinds={"python", "parquet"},
    code_version=CODE_VERSION,
    check_specs=[non_empty_spec("benchmark_examples")],
)
def benchmark_examples(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """One benchmark's examples (a seeded, stable subset) with the input and gold continuation exactly as lm-eval renders and scores them."""
    from simassets.core.tasks import render_examples

    name, profile, cat, wh = context.partition_key, study.profile_name, study.catalog(), study.warehouse()
    fresh = benchmark_examples_freshness(study, name)
    spec, prof, keys, fp = cat.benchmarks[name], study.profile_spec(), fresh.keys, fresh.fingerprint
    if fresh.fresh(wh, profile):
        stored = wh.stored("benchmark_examples", profile, keys)
        result = skipped(context, wh, "benchmark_examples", profile, keys, fp)
        return dg.MaterializeResult(metadata=result.metadata, data_version=result.data_version,
                                    check_results=[non_empty_check("benchmark_examples", stored.rows if stored else 0)])
    examples = render_examples(spec, study.data_root_path, prof.benchmark_limit, prof.seed, spec.num_fewshot)
    params = canonical_json({"limit": prof.benchmark_limit, "seed": prof.seed, "num_fewshot": spec.num_fewshot,
                             "kind": spec.kind, "format": spec.format, "lm_eval_task": spec.lm_eval_task,
                             "split": spec.split, "lm_eval": version("lm_eval")})
    rows = pd.DataFrame(
        {
            "benchmark": name,
            "example_id": [e.example_id for e in examples],
            "input_text": [e.input_text for e in examples],
            "target_text": [e.target_text for e in examples],
            "choices": [list(e.choices) for e in examples],
            "gold": [e.gold for e in examples],
            "text_sha256": [sha256_text(e.input_text + e.target_text) for e in examples],
            "category": spec.category,
            "language": spec.language,
            "params": params,
        }
    )
    if not rows.empty:
        wh.write_partition("benchmark_examples", profile, keys, rows, fp)
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows),
            "category": spec.category,
            "language": spec.language,
            "mean_input_chars": float(rows["input_text"].str.len().mean()) if len(rows) else 0.0,
            "preview": table_md(rows[["example_id", "input_text", "target_text"]].assign(
                input_text=lambda d: d["input_text"].str.slice(0, 80)), max_rows=5),
            "fingerprint": fp[:16],
        },
        data_version=dg.DataVersion(fp),
        check_results=[non_empty_check("benchmark_examples", len(rows))],
    )
