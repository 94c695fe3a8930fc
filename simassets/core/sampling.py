"""Seeded, stable corpus sampling through ``datasets.load_dataset`` (local files and hub alike).

A sample is the bottom-k of a seeded 64-bit hash of each document's id: the same documents every
run, independent of file order, and mostly the same documents when a source grows.  Mixtures take
a largest-remainder share of the sample size from each component.
"""

from __future__ import annotations

import fnmatch
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simassets.core import paths
from simassets.core.catalog import Catalog, CatalogError, CorpusSpec, SourceSpec
from simassets.core.hashing import seeded_hash64, sha256_file
from simassets.core.paths import data_root, resolve_data_path

MAX_DOC_CHARS = 1_000_000


class SourceError(ValueError):
    """A source file or row is unusable; the message names the file, row and field."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    domain: str
    language: str
    source: str
    component: str


@dataclass(frozen=True)
class CorpusSample:
    corpus: str
    documents: list[Document]
    n_scanned: int
    n_skipped: int
    params: dict[str, Any]


def _format_for(path: Path) -> str:
    suffixes = "".join(path.suffixes).lower()
    if ".parquet" in suffixes:
        return "parquet"
    if ".json" in suffixes:
        return "json"
    raise SourceError(f"{path}: unsupported file type (use .json, .jsonl or .parquet)")


def _parse_json_line(raw: bytes, lineno: int) -> dict[str, Any] | str | None:
    """One JSON-lines row, ``None`` for a blank line, or a string saying what is wrong with the line."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"line {lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
    if not line.strip():
        return None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"line {lineno}: malformed JSON ({exc.msg} at column {exc.colno})"
    return row if isinstance(row, dict) else f"line {lineno}: expected a JSON object, got {type(row).__name__}"


def _find_bad_json_line(path: Path) -> str:
    """Name the first line of a JSON-lines file that does not parse (for a clear error)."""
    rows = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            row = _parse_json_line(raw, lineno)
            if isinstance(row, str):
                return row
            rows += row is not None
    return "the file has no rows" if rows == 0 else "could not locate the bad line"


def _iter_json_lines(path: Path) -> Iterator[dict[str, Any] | SourceError]:
    """The rows of a ``.jsonl`` file line by line; an unusable line comes as a :class:`SourceError` naming it
    (``on_bad_row="skip"`` reads this way, so a few bad lines do not make the whole file unreadable)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            row = _parse_json_line(raw, lineno)
            if row is not None:
                yield SourceError(f"{path}: {row}") if isinstance(row, str) else row


def iter_rows(source: SourceSpec) -> Iterator[dict[str, Any]]:
    """Stream the rows of a source with ``datasets.load_dataset(..., streaming=True)``."""
    import datasets

    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    if source.is_local:
        assert source.path is not None
        path = paths.resolve_data_path(source.path)
        if not path.exists():
            raise SourceError(f"{path}: source file not found (data root {paths.data_root()})")
        builder, kwargs = _format_for(path), {"data_files": str(path), "split": "train"}
    else:
        builder, kwargs = source.hub_id, {"name": source.hub_config, "split": source.split}
        path = None
    try:
        stream = datasets.load_dataset(builder, streaming=True, **kwargs)
        yield from stream
    except SourceError:
        raise
    except Exception as exc:  # datasets wraps parse errors in several exception types
        where = f"{path}: {_find_bad_json_line(path)}" if path is not None and builder == "json" else source.describe()
        raise SourceError(f"{where}: cannot read source ({type(exc).__name__}: {exc})") from exc


def _document(row: dict[str, Any], index: int, source: SourceSpec, component: str) -> Document:
    where = f"{source.describe()}: row {index + 1}"
    text = row.get(source.text_field)
    if text is None:
        raise SourceError(f"{where}: missing field {source.text_field!r}")
    if not isinstance(text, str):
        raise SourceError(f"{where}: field {source.text_field!r} must be a string, got {type(text).__name__}")
    raw_id = row.get(source.id_field) if source.id_field else None
    doc_id = str(raw_id) if raw_id is not None else f"row{index}"
    return Document(
        doc_id=doc_id,
        text=text,
        domain=str(row.get(source.domain_field) or ""),
        language=str(row.get("language") or ""),
        source=source.describe(),
        component=component,
    )


def sample_source(
    source: SourceSpec, n: int, seed: int | str, component: str = "", on_bad_row: str = "fail"
) -> tuple[list[Document], int, int]:
    """Bottom-``n`` documents of ``source`` by seeded hash of their id; returns (docs, scanned, skipped).

    ``on_bad_row`` = ``"fail"`` raises on the first unusable row; ``"skip"`` drops it and counts it.
    Empty and over-long documents are unusable; duplicate ids are an error.
    """
    if on_bad_row not in ("fail", "skip"):
        raise ValueError(f"on_bad_row must be 'fail' or 'skip', got {on_bad_row!r}")
    heap: list[tuple[int, int, Document]] = []  # max-heap of the n smallest hashes via negation
    seen: dict[str, int] = {}
    scanned = skipped = 0
    path = paths.resolve_data_path(source.path) if source.is_local else None
    line_by_line = on_bad_row == "skip" and path is not None and path.suffix.lower() == ".jsonl" and path.is_file()
    rows = _iter_json_lines(path) if line_by_line else iter_rows(source)  # type: ignore[arg-type]
    for index, row in enumerate(rows):
        if source.max_scan is not None and index >= source.max_scan:
            break
        scanned += 1
        try:
            if isinstance(row, SourceError):
                raise row
            doc = _document(row, index, source, component)
            if not doc.text.strip():
                raise SourceError(f"{source.describe()}: row {index + 1}: field {source.text_field!r} is empty")
            if len(doc.text) > MAX_DOC_CHARS:
                raise SourceError(
                    f"{source.describe()}: row {index + 1}: field {source.text_field!r} has {len(doc.text):,} characters (limit {MAX_DOC_CHARS:,})"
                )
        except SourceError:
            if on_bad_row == "skip":
                skipped += 1
                continue
            raise
        if source.domains and not any(fnmatch.fnmatchcase(doc.domain, pat) for pat in source.domains):
            continue
        if doc.doc_id in seen:
            raise SourceError(
                f"{source.describe()}: row {index + 1}: duplicate id {doc.doc_id!r} (first seen in row {seen[doc.doc_id] + 1})"
            )
        seen[doc.doc_id] = index
        h = seeded_hash64(seed, doc.doc_id)
        if len(heap) < n:
            heapq.heappush(heap, (-h, index, doc))
        elif -heap[0][0] > h:
            heapq.heapreplace(heap, (-h, index, doc))
    if not seen:
        raise SourceError(f"{source.describe()}: no usable documents (empty source or domain filter {list(source.domains)})")
    docs = [d for _, _, d in sorted(heap, key=lambda t: (-t[0], t[1]))]
    return docs, scanned, skipped


def _shares(weights: list[float], n: int) -> list[int]:
    """Split ``n`` by weights with the largest-remainder method (deterministic ties by position)."""
    total = sum(weights)
    exact = [w / total * n for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[: n - sum(shares)]:
        shares[i] += 1
    return shares


def sample_corpus(catalog: Catalog, name: str, size: int, on_bad_row: str = "fail") -> CorpusSample:
    """Sample ``size`` documents of catalog corpus ``name`` (a source or a weighted mixture)."""
    if name not in catalog.corpora:
        raise CatalogError(f"{catalog.source_file}: unknown corpus {name!r}")
    spec: CorpusSpec = catalog.corpora[name]
    params: dict[str, Any] = {"seed": spec.seed, "sample_size": size, "method": "bottom-k seeded xxh64 of doc id"}
    if not spec.is_mixture:
        assert spec.source is not None
        docs, scanned, skipped = sample_source(spec.source, size, spec.seed, name, on_bad_row)
        params["source"] = spec.source.describe()
        if spec.source.domains:
            params["domains"] = list(spec.source.domains)
        return CorpusSample(name, docs, scanned, skipped, params)
    shares = _shares([c.weight for c in spec.components], size)
    all_docs: list[Document] = []
    scanned = skipped = 0
    comp_params = []
    for comp, share in zip(spec.components, shares):
        source = comp.source if comp.source is not None else catalog.corpora[comp.corpus].source  # type: ignore[index]
        assert source is not None
        docs, s, k = sample_source(source, share, f"{spec.seed}:{comp.name}", comp.name, on_bad_row)
        all_docs.extend(
            Document(f"{comp.name}/{d.doc_id}", d.text, d.domain, d.language, d.source, comp.name) for d in docs
        )
        scanned, skipped = scanned + s, skipped + k
        comp_params.append({"name": comp.name, "weight": comp.weight, "share": share, "got": len(docs), "source": source.describe()})
    params["components"] = comp_params
    return CorpusSample(name, all_docs, scanned, skipped, params)


def source_hashes(catalog: Catalog, corpus: str) -> dict[str, str]:
    """Content hashes of the local files a corpus reads (hub sources are identified by id)."""
    spec = catalog.corpora[corpus]
    sources = [spec.source] if spec.source else [c.source or catalog.corpora[c.corpus].source for c in spec.components]
    out = {}
    for s in sources:
        if s.is_local and not (path := resolve_data_path(str(s.path))).is_file():
            raise SourceError(f"[corpora.{corpus}] source file {path} not found (path {s.path!r} in "
                              f"{catalog.source_file}; data root {data_root()})")
        out[s.describe()] = sha256_file(str(resolve_data_path(str(s.path)))) if s.is_local else s.describe()
    return out
