"""The inputs: the seeded sample of each corpus, and each benchmark's examples rendered as lm-eval scores them."""

import dataclasses
from importlib.metadata import version

import dagster as dg
import pandas as pd

from simassets.core.catalog import BenchmarkSpec, Catalog
from simassets.core.computation import NON_EMPTY, Call, Computation, Output, Scope, table_md
from simassets.core.hashing import canonical_json, sha256_file, sha256_text
from simassets.core.paths import data_root, resolve_data_path
from simassets.core.sampling import SourceError, source_hashes
from simassets.core.measures.contamination import corpus_index_rows, index_inputs
from simassets.core.schema import BENCHMARK_EXAMPLES, CORPUS_DOCUMENTS, CORPUS_INDEXES
from simassets.defs.factory import build


# --------------------------------------------------------------------------- corpora
def _corpus_inputs(scope: Scope, keys) -> dict:
    cat, corpus = scope.catalog, keys["corpus"]
    policy = scope.on_bad_row  # part of the fingerprint only when it is not the default
    return {"spec": dataclasses.asdict(cat.corpora[corpus]), "size": cat.corpus_sample_size(corpus, scope.profile),
            "files": source_hashes(cat, corpus), **({"on_bad_row": policy} if policy != "fail" else {})}


def _corpus_documents(call: Call) -> Output:
    from simassets.core.sampling import sample_corpus

    corpus = call.keys["corpus"]
    sample = sample_corpus(call.scope.catalog, corpus, call.inputs["size"], on_bad_row=call.scope.on_bad_row)
    if sample.n_skipped:
        call.log(f"{corpus}: skipped {sample.n_skipped} unusable row(s) of {sample.n_scanned} (on_bad_row=skip)")
    docs = sample.documents
    rows = pd.DataFrame({
        "doc_id": [d.doc_id for d in docs], "component": [d.component for d in docs],
        "domain": [d.domain for d in docs], "language": [d.language for d in docs],
        "source": [d.source for d in docs], "text": [d.text for d in docs],
        "text_sha256": [sha256_text(d.text) for d in docs], "n_chars": [len(d.text) for d in docs],
        "params": canonical_json(sample.params),
    })
    by_component = rows.groupby("component").size().rename("docs").reset_index()
    return Output({CORPUS_DOCUMENTS: rows}, info={"n_scanned": sample.n_scanned, "n_skipped": sample.n_skipped,
                                                   "on_bad_row": call.scope.on_bad_row}, metadata={
        "scanned": sample.n_scanned, "skipped_bad_rows": sample.n_skipped, "mean_chars": float(rows["n_chars"].mean()),
        "components": table_md(by_component),
        "sampled_ids": ", ".join(rows["doc_id"].head(50)) + (" …" if len(rows) > 50 else "")})


CORPUS_DOCUMENTS_STEP = Computation(
    name="corpus_documents", group="inputs", partitioning="corpus", writes=(CORPUS_DOCUMENTS,),
    description="The seeded sample of one corpus (bottom-k by a stable hash of document ids), with the sampled "
                "ids recorded.",
    inputs=_corpus_inputs, compute=_corpus_documents, checks=(NON_EMPTY,))


# --------------------------------------------------------------------------- benchmarks
def benchmark_files_hash(spec: BenchmarkSpec) -> dict[str, str]:
    """sha256 of the local files behind a benchmark (a file, or every JSONL file of a mirror folder)."""
    if spec.path is None:
        return {"lm_eval_task": spec.lm_eval_task or ""}
    path = resolve_data_path(spec.path)
    if not path.exists():
        raise SourceError(f"[benchmarks.{spec.name}] path {path} not found (path {spec.path!r}; data root "
                          f"{data_root()})")
    files = [path] if path.is_file() else sorted(path.glob("*.json*")) + sorted(path.glob("*.parquet"))
    return {f.name: sha256_file(str(f)) for f in files}


def _benchmark_inputs(scope: Scope, keys) -> dict:
    spec = scope.catalog.benchmarks[keys["benchmark"]]
    return {"spec": dataclasses.asdict(spec), "limit": scope.spec.benchmark_limit, "seed": scope.seed,
            "files": benchmark_files_hash(spec), "lm_eval": version("lm_eval")}


def _benchmark_examples(call: Call) -> Output:
    from simassets.core.tasks import render_examples

    name, prof = call.keys["benchmark"], call.scope.spec
    spec = call.scope.catalog.benchmarks[name]
    examples = render_examples(spec, call.scope.data_root, prof.benchmark_limit, prof.seed, spec.num_fewshot)
    params = canonical_json({"limit": prof.benchmark_limit, "seed": prof.seed, "num_fewshot": spec.num_fewshot,
                             "kind": spec.kind, "format": spec.format, "lm_eval_task": spec.lm_eval_task,
                             "split": spec.split, "lm_eval": version("lm_eval")})
    rows = pd.DataFrame({
        "example_id": [e.example_id for e in examples], "input_text": [e.input_text for e in examples],
        "target_text": [e.target_text for e in examples], "choices": [list(e.choices) for e in examples],
        "gold": [e.gold for e in examples],
        "text_sha256": [sha256_text(e.input_text + e.target_text) for e in examples],
        "category": spec.category, "language": spec.language, "params": params,
    })
    preview = rows[["example_id", "input_text", "target_text"]].assign(input_text=lambda d: d["input_text"].str.slice(0, 80))
    return Output({BENCHMARK_EXAMPLES: rows}, metadata={
        "category": spec.category, "language": spec.language,
        "mean_input_chars": float(rows["input_text"].str.len().mean()) if len(rows) else 0.0,
        "preview": table_md(preview, max_rows=5)})


BENCHMARK_EXAMPLES_STEP = Computation(
    name="benchmark_examples", group="inputs", partitioning="benchmark", writes=(BENCHMARK_EXAMPLES,),
    description="One benchmark's examples (a seeded, stable subset) with the input and gold continuation exactly as "
                "lm-eval renders and scores them.",
    inputs=_benchmark_inputs, compute=_benchmark_examples, checks=(NON_EMPTY,))

CORPUS_INDEX_STEP = Computation(
    name="corpus_index", group="inputs", partitioning="corpus", writes=(CORPUS_INDEXES,),
    description="The whole-corpus suffix-array index of one corpus (infini-gram; normalized words, byte level): every "
                "document of its source files, cached by their content hash; or the catalog's prebuilt index_dir.",
    inputs=index_inputs, compute=corpus_index_rows, kinds=("infini-gram", "parquet"), code_version="1",
    checks=(NON_EMPTY,))

defs = dg.Definitions(assets=build(CORPUS_DOCUMENTS_STEP, CORPUS_INDEX_STEP, BENCHMARK_EXAMPLES_STEP))
