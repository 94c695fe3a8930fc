"""The catalog: corpora, benchmarks and profiles declared in ``data/catalog.toml``.

Every entry is validated on load; a bad entry raises :class:`CatalogError` naming the file, the
entry and the field, so a typo never turns into a silently empty study.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from simassets.core import paths

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
CATEGORIES = (
    "world_knowledge",
    "commonsense_reasoning",
    "language_understanding",
    "reading_comprehension",
    "symbolic_problem_solving",
    "multilingual",
)
BENCHMARK_KINDS = ("gauntlet", "hf_mirror", "lm_eval")
GAUNTLET_FORMATS = ("mc", "schema", "lm")
PROFILE_NAMES = ("quick", "full")


class CatalogError(ValueError):
    """A catalog or registry file is malformed; the message names file, entry and field."""


@dataclass(frozen=True)
class SourceSpec:
    """Where documents come from: local JSON/JSONL/Parquet under the data root, or a hub dataset.

    Both are read with ``datasets.load_dataset(..., streaming=True)``.
    """

    path: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "train"
    text_field: str = "text"
    id_field: str | None = "id"
    domain_field: str = "domain"
    domains: tuple[str, ...] = ()
    max_scan: int | None = None

    @property
    def is_local(self) -> bool:
        return self.path is not None

    def describe(self) -> str:
        return self.path if self.path else f"hub:{self.hub_id}/{self.hub_config or ''}:{self.split}"


@dataclass(frozen=True)
class MixtureComponent:
    """One part of a mixture: another catalog corpus, or an inline source, with a weight."""

    name: str
    weight: float
    corpus: str | None = None
    source: SourceSpec | None = None


@dataclass(frozen=True)
class CorpusSpec:
    name: str
    description: str
    seed: int
    sample_size: int | None = None
    source: SourceSpec | None = None
    components: tuple[MixtureComponent, ...] = ()
    language: str = "en"
    domain: str = ""
    profiles: tuple[str, ...] = PROFILE_NAMES
    index_dir: str | None = None  # a prebuilt whole-corpus index (corpus_index) instead of building one

    @property
    def is_mixture(self) -> bool:
        return bool(self.components)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark is an lm-eval task: built-in (hub), a gauntlet file, or a hub-schema mirror."""

    name: str
    kind: Literal["gauntlet", "hf_mirror", "lm_eval"]
    category: str
    language: str
    description: str = ""
    path: str | None = None
    format: Literal["mc", "schema", "lm"] | None = None
    lm_eval_task: str | None = None
    split: str | None = None
    target_delimiter: str = " "
    metric: str = "acc"
    num_fewshot: int = 0
    profiles: tuple[str, ...] = PROFILE_NAMES


@dataclass(frozen=True)
class Profile:
    """Sizes for a study run: ``quick`` (the default) or ``full``."""

    name: str
    corpus_sample_size: int
    benchmark_limit: int | None
    eval_batch_size: int = 8
    max_length: int = 2048
    seed: int = 1234
    embedding_top_k: int = 10
    task2vec_probe: str | None = None  # the Task2Vec probe's model id; None: the smallest registered model


@dataclass(frozen=True)
class Catalog:
    corpora: dict[str, CorpusSpec]
    benchmarks: dict[str, BenchmarkSpec]
    profiles: dict[str, Profile]
    source_file: Path
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    measure_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # [measures.NAME]: estimator ...

    def kl_options(self, measure: str) -> dict[str, Any]:
        """The KL estimator of ``measure`` (``unigram_kl``, ``hashed_ngram_kl``): ``estimator`` and ``lam`` / ``eps``
        keyword arguments for :func:`simassets.core.measures.tokens.divergence_measures`."""
        from simassets.core.measures.tokens import DEFAULT_EPS, DEFAULT_ESTIMATOR, DEFAULT_LAMBDA

        opts = self.measure_options.get(measure, {})
        return {"estimator": opts.get("estimator", DEFAULT_ESTIMATOR), "lam": opts.get("lambda", DEFAULT_LAMBDA),
                "eps": opts.get("eps", DEFAULT_EPS)}

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise CatalogError(f"{self.source_file}: unknown profile {name!r}; known: {sorted(self.profiles)}")
        return self.profiles[name]

    def corpora_for(self, profile: str) -> list[CorpusSpec]:
        return [c for c in self.corpora.values() if profile in c.profiles]

    def benchmarks_for(self, profile: str) -> list[BenchmarkSpec]:
        return [b for b in self.benchmarks.values() if profile in b.profiles]

    def corpus_sample_size(self, corpus: str, profile: str) -> int:
        spec = self.corpora[corpus]
        return spec.sample_size if spec.sample_size is not None else self.profile(profile).corpus_sample_size


class _Fields:
    """Typed access to one table of a TOML file with errors that name file, entry and field."""

    def __init__(self, file: Path, entry: str, table: Any):
        if not isinstance(table, dict):
            raise CatalogError(f"{file}: [{entry}] must be a table, got {type(table).__name__}")
        self.file, self.entry, self.table = file, entry, table
        self.used: set[str] = set()

    def _err(self, key: str, msg: str) -> CatalogError:
        return CatalogError(f"{self.file}: [{self.entry}] field {key!r} {msg}")

    def get(self, key: str, typ: type | tuple[type, ...], default: Any = ..., choices: tuple | None = None,
            minimum: int | None = None) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                raise self._err(key, "is required")
            return default
        value = self.table[key]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise self._err(key, f"must be {names}, got {type(value).__name__} {value!r}")
        if choices is not None and value not in choices:
            raise self._err(key, f"must be one of {list(choices)}, got {value!r}")
        if minimum is not None and value < minimum:
            raise self._err(key, f"must be >= {minimum}, got {value!r}")
        return value

    def str_list(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.get(key, list, default=list(default))
        if not all(isinstance(v, str) for v in value):
            raise self._err(key, f"must be a list of strings, got {value!r}")
        return tuple(value)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise CatalogError(f"{self.file}: [{self.entry}] unknown field(s) {unknown}")


def _name(file: Path, section: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise CatalogError(
            f"{file}: [{section}.{name}] name must match {NAME_RE.pattern} (lower-case letters, digits, _ . -)"
        )
    return name


def _source(file: Path, entry: str, table: Any) -> SourceSpec:
    f = _Fields(file, entry, table)
    spec = SourceSpec(
        path=f.get("path", str, None),
        hub_id=f.get("hub_id", str, None),
        hub_config=f.get("hub_config", str, None),
        split=f.get("split", str, "train"),
        text_field=f.get("text_field", str, "text"),
        id_field=f.get("id_field", str, "id"),
        domain_field=f.get("domain_field", str, "domain"),
        domains=f.str_list("domains"),
        max_scan=f.get("max_scan", int, None, minimum=1),
    )
    f.finish()
    if (spec.path is None) == (spec.hub_id is None):
        raise CatalogError(f"{file}: [{entry}] needs exactly one of 'path' (local) or 'hub_id' (hub dataset)")
    return spec


def _profiles_field(f: _Fields) -> tuple[str, ...]:
    profiles = f.str_list("profiles", PROFILE_NAMES)
    bad = [p for p in profiles if p not in PROFILE_NAMES]
    if bad:
        raise f._err("profiles", f"has unknown profile(s) {bad}; known: {list(PROFILE_NAMES)}")
    return profiles


def _corpus(file: Path, name: str, table: Any) -> CorpusSpec:
    entry = f"corpora.{_name(file, 'corpora', name)}"
    f = _Fields(file, entry, table)
    source = _source(file, f"{entry}.source", f.get("source", dict)) if "source" in table else None
    comps: list[MixtureComponent] = []
    for i, comp in enumerate(f.get("components", list, [])):
        cf = _Fields(file, f"{entry}.components[{i}]", comp)
        weight = cf.get("weight", float)
        if not weight > 0:
            raise cf._err("weight", f"must be > 0, got {weight}")
        corpus_ref = cf.get("corpus", str, None)
        csource = _source(file, f"{entry}.components[{i}].source", cf.get("source", dict)) if "source" in comp else None
        if (corpus_ref is None) == (csource is None):
            raise CatalogError(f"{file}: [{entry}.components[{i}]] needs exactly one of 'corpus' or 'source'")
        comps.append(MixtureComponent(name=cf.get("name", str, corpus_ref or f"part{i}"), weight=weight,
                                      corpus=corpus_ref, source=csource))
        cf.finish()
    if (source is None) == (not comps):
        raise CatalogError(f"{file}: [{entry}] needs exactly one of 'source' or 'components' (a mixture)")
    sample_size = f.get("sample_size", int, None, minimum=1)
    spec = CorpusSpec(
        name=name,
        description=f.get("description", str, ""),
        seed=f.get("seed", int, 1234, minimum=0),
        sample_size=sample_size,
        source=source,
        components=tuple(comps),
        language=f.get("language", str, "en"),
        domain=f.get("domain", str, ""),
        profiles=_profiles_field(f),
        index_dir=f.get("index_dir", str, None),
    )
    f.finish()
    return spec


def _benchmark(file: Path, name: str, table: Any) -> BenchmarkSpec:
    entry = f"benchmarks.{_name(file, 'benchmarks', name)}"
    f = _Fields(file, entry, table)
    kind = f.get("kind", str, choices=BENCHMARK_KINDS)
    spec = BenchmarkSpec(
        name=name,
        kind=kind,
        category=f.get("category", str, choices=CATEGORIES),
        language=f.get("language", str, "en"),
        description=f.get("description", str, ""),
        path=f.get("path", str, None),
        format=f.get("format", str, None, choices=GAUNTLET_FORMATS),
        lm_eval_task=f.get("lm_eval_task", str, None),
        split=f.get("split", str, None),
        target_delimiter=f.get("target_delimiter", str, " "),
        metric=f.get("metric", str, "acc", choices=("acc", "acc_norm")),
        num_fewshot=f.get("num_fewshot", int, 0, minimum=0),
        profiles=_profiles_field(f),
    )
    f.finish()
    if kind == "gauntlet" and (spec.path is None or spec.format is None):
        raise CatalogError(f"{file}: [{entry}] a gauntlet benchmark needs 'path' and 'format'")
    if kind == "hf_mirror" and (spec.path is None or spec.lm_eval_task is None):
        raise CatalogError(f"{file}: [{entry}] a hf_mirror benchmark needs 'path' and 'lm_eval_task'")
    if kind == "lm_eval" and spec.lm_eval_task is None:
        raise CatalogError(f"{file}: [{entry}] an lm_eval benchmark needs 'lm_eval_task'")
    return spec


def _profile(file: Path, name: str, table: Any) -> Profile:
    if name not in PROFILE_NAMES:
        raise CatalogError(f"{file}: [profiles.{name}] unknown profile; known: {list(PROFILE_NAMES)}")
    f = _Fields(file, f"profiles.{name}", table)
    limit = f.get("benchmark_limit", int, 0, minimum=0)  # 0: every example
    prof = Profile(
        name=name,
        corpus_sample_size=f.get("corpus_sample_size", int, minimum=1),
        benchmark_limit=limit or None,
        eval_batch_size=f.get("eval_batch_size", int, 8, minimum=1),
        max_length=f.get("max_length", int, 2048, minimum=16),
        seed=f.get("seed", int, 1234, minimum=0),
        embedding_top_k=f.get("embedding_top_k", int, 10, minimum=1),
        task2vec_probe=f.get("task2vec_probe", str, "") or None,
    )
    f.finish()
    return prof


KL_MEASURES = ("unigram_kl", "hashed_ngram_kl")  # the measures whose estimator the catalog can choose


def _measure_options(file: Path, name: str, table: Any) -> dict[str, Any]:
    from simassets.core.measures.tokens import ESTIMATORS

    if name not in KL_MEASURES:
        raise CatalogError(f"{file}: [measures.{name}] has no options (measures with options: {list(KL_MEASURES)})")
    f = _Fields(file, f"measures.{name}", table)
    opts = {"estimator": f.get("estimator", str, "interpolated", choices=ESTIMATORS)}
    lam = f.get("lambda", float, None)
    if lam is not None:
        if not 0 < lam < 1:
            raise f._err("lambda", f"must be in (0, 1), got {lam}")
        opts["lambda"] = lam
    eps = f.get("eps", float, None)
    if eps is not None:
        if not eps > 0:
            raise f._err("eps", f"must be > 0, got {eps}")
        opts["eps"] = eps
    f.finish()
    return opts


def parse_catalog(raw: dict[str, Any], file: Path) -> Catalog:
    for key in raw:
        if key not in ("corpora", "benchmarks", "profiles", "studies", "measures"):
            raise CatalogError(f"{file}: unknown top-level table [{key}]")
    corpora = {n: _corpus(file, n, t) for n, t in raw.get("corpora", {}).items()}
    benchmarks = {n: _benchmark(file, n, t) for n, t in raw.get("benchmarks", {}).items()}
    profiles = {n: _profile(file, n, t) for n, t in raw.get("profiles", {}).items()}
    if not corpora:
        raise CatalogError(f"{file}: no [corpora.*] entries")
    if not benchmarks:
        raise CatalogError(f"{file}: no [benchmarks.*] entries")
    for p in PROFILE_NAMES:
        if p not in profiles:
            raise CatalogError(f"{file}: missing [profiles.{p}]")
    for c in corpora.values():
        for comp in c.components:
            if comp.corpus is not None:
                if comp.corpus not in corpora:
                    raise CatalogError(f"{file}: [corpora.{c.name}] component refers to unknown corpus {comp.corpus!r}")
                if corpora[comp.corpus].is_mixture:
                    raise CatalogError(f"{file}: [corpora.{c.name}] component {comp.corpus!r} is itself a mixture")
    options = {n: _measure_options(file, n, t) for n, t in raw.get("measures", {}).items()}
    return Catalog(corpora=corpora, benchmarks=benchmarks, profiles=profiles, source_file=file, raw=raw,
                   measure_options=options)


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate the catalog (default ``data/catalog.toml`` or ``$SIMASSETS_CATALOG_DIR``)."""
    file = Path(path) if path else paths.catalog_dir() / "catalog.toml"
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CatalogError(f"{file}: catalog file not found") from exc
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        raise CatalogError(f"{file}: not UTF-8 text (byte {exc.start}, line {line}: {exc.reason}); save it as UTF-8") \
            from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{file}: not valid TOML: {exc}") from exc
    return parse_catalog(raw, file)
