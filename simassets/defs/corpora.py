"""Corpus samples: the seeded, stable sample of each catalog corpus."""


import dataclasses

import dagster as dg
import pandas as pd

from simassets.core.hashing import canonical_json, sha256_file, sha256_text
from simassets.core.paths import resolve_data_path
from simassets.core.sampling import sample_corpus
from simassets.defs.common import Freshness, partition_fingerprint, skipped, table_md
from simassets.defs.partitions import corpus_partitions
from simassets.defs.resources import StudyResource

CODE_VERSION = "1"


def _source_hashes(catalog, corpus: str) -> dict[str, str]:
    """Content hashes of the local files a corpus reads (hub sources are identified by id)."""
    spec = catalog.corpora[corpus]
    sources = [spec.source] if spec.source else [
        c.source or catalog.corpora[c.corpus].source for c in spec.components
    ]
    return {s.describe(): sha256_file(str(resolve_data_path(s.path))) if s.is_local else s.describe() for s in sources}


def corpus_documents_freshness(study: StudyResource, partition_key: str) -> Freshness:
    cat, corpus = study.catalog(), partition_key
    if corpus not in cat.corpora:
        raise dg.Failure(f"corpus {corpus!r} is not in the catalog {cat.source_file}")
    size = cat.corpus_sample_size(corpus, study.profile_name)
    policy = study.bad_row_policy  # part of the fingerprint only when it is not the default
    fp = partition_fingerprint("corpus_documents", CODE_VERSION, spec=dataclasses.asdict(cat.corpora[corpus]),
                               size=size, files=_source_hashes(cat, corpus),
                               **({"on_bad_row": policy} if policy != "fail" else {}))
    return Freshness(("corpus_documents",), {"corpus": corpus}, fp)


@dg.asset(
    partitions_def=corpus_partitions,
    group_name="inputs",
    kinds={"python", "parquet"},
    code_version=CODE_VERSION,
)
def corpus_documents(context: dg.AssetExecutionContext, study: StudyResource) -> dg.MaterializeResult:
    """The seeded sample of one corpus (bottom-k by a stable hash of document ids), with the sampled ids recorded."""
    corpus, profile, cat, wh = context.partition_key, study.profile_name, study.catalog(), study.warehouse()
    fresh = corpus_documents_freshness(study, corpus)
    keys, fp, size = fresh.keys, fresh.fingerprint, cat.corpus_sample_size(corpus, profile)
    if fresh.fresh(wh, profile):
        return skipped(context, wh, "corpus_documents", profile, keys, fp)
    sample = sample_corpus(cat, corpus, size, on_bad_row=study.bad_row_policy)
    if sample.n_skipped:
        context.log.warning(f"{corpus}: skipped {sample.n_skipped} unusable row(s) of {sample.n_scanned} (on_bad_row=skip)")
    rows = pd.DataFrame(
        {
            "corpus": corpus,
            "doc_id": [d.doc_id for d in sample.documents],
            "component": [d.component for d in sample.documents],
            "domain": [d.domain for d in sample.documents],
            "language": [d.language for d in sample.documents],
            "source": [d.source for d in sample.documents],
            "text": [d.text for d in sample.documents],
            "text_sha256": [sha256_text(d.text) for d in sample.documents],
            "n_chars": [len(d.text) for d in sample.documents],
            "params": canonical_json(sample.params),
        }
    )
    wh.write_partition("corpus_documents", profile, keys, rows, fp, {"n_scanned": sample.n_scanned, "n_skipped": sample.n_skipped,
                                                                     "on_bad_row": study.bad_row_policy})
    by_component = rows.groupby("component").size().rename("docs").reset_index()
    return dg.MaterializeResult(
        metadata={
            "rows": len(rows),
            "scanned": sample.n_scanned,
            "skipped_bad_rows": sample.n_skipped,
            "mean_chars": float(rows["n_chars"].mean()),
            "components": table_md(by_component),
            "sampled_ids": dg.MetadataValue.text(", ".join(rows["doc_id"].head(50)) + (" …" if len(rows) > 50 else "")),
            "fingerprint": fp[:16],
        },
        data_version=dg.DataVersion(fp),
    )
