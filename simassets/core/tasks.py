"""Every benchmark as an lm-eval task, and the example texts exactly as lm-eval scores them.

Three kinds of :class:`~simassets.core.catalog.BenchmarkSpec`:

* ``gauntlet``: a local JSONL file in one of three formats, turned into an lm-eval task config here
  (``mc`` = multiple choice, ``schema`` = lm-eval's multiple-input mode as in its WinoGrande task,
  ``lm`` = ``loglikelihood`` output with greedy-match ``acc`` and ``perplexity``).
* ``hf_mirror``: lm-eval's own config for ``spec.lm_eval_task`` (prompt, choices, metrics,
  ``!function`` utils) with only the dataset loading replaced by the local hub-schema JSONL files.
* ``lm_eval``: lm-eval's own config unchanged (reads the hub).

Built-in configs are found by reading the one YAML that declares the task (plus its includes), not
by indexing all of lm-eval's tasks (that costs seconds). Tasks are cached per process; a cached
task is mutable lm-eval state, so do not share one process's tasks across threads.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simassets.core.catalog import BenchmarkSpec
from simassets.core.hashing import seeded_hash64

GAUNTLET_SPLIT = "test"
_FIELDS = {"mc": ("query", "choices", "gold"), "schema": ("context_options", "continuation", "gold"),
           "lm": ("context", "continuation")}


class TaskBuildError(ValueError):
    """A benchmark cannot be turned into an lm-eval task; the message names the file/row/field."""


@dataclass(frozen=True)
class RenderedExample:
    """One evaluated document as lm-eval scores it.

    ``input_text`` is the full context (description and few-shot examples included); for ``schema``
    it is the gold context option. ``target_text`` is the gold continuation with the delimiter
    lm-eval puts before it. ``choices``: for multiple choice the scored continuations (with
    delimiter), for multiple-input tasks the scored contexts, for ``loglikelihood`` tasks ``()``.
    """

    example_id: int
    input_text: str
    target_text: str
    choices: tuple[str, ...]
    gold: int


# ---------------------------------------------------------------- doc subsets
def select_doc_ids(n_docs: int, limit: int | None, seed: int, key: str) -> list[int]:
    """A seeded, stable subset of ``range(n_docs)``, sorted: the ``limit`` smallest seeded hashes.

    ``None`` (or a limit >= n_docs) means all docs. The subset for a smaller limit is contained in
    the one for a larger limit, and does not depend on the other benchmarks.
    """
    if n_docs < 0:
        raise ValueError(f"n_docs must be >= 0, got {n_docs}")
    if limit is None or limit >= n_docs:
        return list(range(n_docs))
    if limit <= 0:
        raise ValueError(f"limit must be positive or None, got {limit}")
    ranked = sorted(range(n_docs), key=lambda i: (seeded_hash64(seed, f"{key}:{i}"), i))
    return sorted(ranked[:limit])


# ---------------------------------------------------------------- built-in lm-eval configs
def _lm_eval_tasks_dir() -> Path:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lm_eval is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "tasks"


@functools.lru_cache(maxsize=None)
def builtin_task_yaml(task_name: str) -> Path | None:
    """The one lm-eval YAML declaring ``task: <task_name>``, found by a text scan (~0.2 s); None if
    no single file declares it (then lm-eval's full index has to resolve it)."""
    pattern = re.compile(rf"^[\"']?task[\"']?\s*:\s*[\"']?{re.escape(task_name)}[\"']?\s*(#.*)?$", re.M)
    hits = [p for p in sorted(_lm_eval_tasks_dir().rglob("*.yaml"))
            if pattern.search(p.read_text(encoding="utf-8", errors="replace"))]
    return hits[0] if len(hits) == 1 else None


def builtin_task_config(task_name: str) -> dict[str, Any]:
    """lm-eval's own config for a built-in task (includes merged, ``!function`` resolved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    path = builtin_task_yaml(task_name)
    if path is not None:
        cfg = load_yaml(path, resolve_func=True)
        source = str(path)
    else:  # rare: generated or Python tasks; pay for lm-eval's full index once
        entry = _full_task_index().get(task_name)
        if entry is None or not (entry.yaml_path or entry.cfg):
            raise TaskBuildError(f"lm-eval has no task named {task_name!r}")
        cfg = load_yaml(entry.yaml_path, resolve_func=True) if entry.yaml_path else dict(entry.cfg)
        source = str(entry.yaml_path or "inline")
    if cfg.get("task") != task_name or "class" in cfg:
        raise TaskBuildError(f"lm-eval task {task_name!r} ({source}) is not a single YAML task")
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    cfg["metadata"] = {**(cfg.get("metadata") or {}), "config_source": source}
    return cfg


@functools.lru_cache(maxsize=1)
def _full_task_index() -> dict:
    from lm_eval.tasks import TaskManager

    return TaskManager().task_index


# ---------------------------------------------------------------- gauntlet files
def _check_row(row: Any, fmt: str, where: str) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise TaskBuildError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for key in _FIELDS[fmt]:
        if key not in row:
            raise TaskBuildError(f"{where}: missing field {key!r} (format {fmt!r})")
        value = row[key]
        if key in ("choices", "context_options"):
            if not isinstance(value, list) or len(value) < 2 or not all(isinstance(v, str) for v in value):
                raise TaskBuildError(f"{where}: field {key!r} must be a list of >= 2 strings")
        elif key == "gold":
            n = len(row["choices"] if fmt == "mc" else row["context_options"])
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < n:
                raise TaskBuildError(f"{where}: field 'gold' must be an index into {n} options, got {value!r}")
        elif not isinstance(value, str) or (key == "continuation" and not value):
            raise TaskBuildError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return row


def _read_gauntlet(file: Path, fmt: str) -> list[dict[str, Any]]:
    """Read and validate a gauntlet JSONL file; errors name the file, line and field."""
    if fmt not in _FIELDS:
        raise TaskBuildError(f"{file}: unknown gauntlet format {fmt!r}; known: {sorted(_FIELDS)}")
    try:
        lines = file.read_bytes().splitlines()
    except FileNotFoundError as exc:
        raise TaskBuildError(f"{file}: benchmark file not found") from exc
    rows = []
    for n, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskBuildError(f"{file}: line {n}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskBuildError(f"{file}: line {n}: not valid JSON: {exc}") from exc
            rows.append(_check_row(row, fmt, f"{file}: line {n}"))
    if not rows:
        raise TaskBuildError(f"{file}: no rows")
    return rows


def _junction_has_space(row: dict[str, Any], fmt: str) -> bool:
    """Does the row's text already carry whitespace where input meets continuation?"""
    if fmt == "mc":
        return row["query"][-1:].isspace() or all(c[:1].isspace() for c in row["choices"])
    inputs = row["context_options"] if fmt == "schema" else [row["context"]]
    return all(t[-1:].isspace() for t in inputs) or row["continuation"][:1].isspace()


def gauntlet_delimiter(spec: BenchmarkSpec, rows: list[dict[str, Any]]) -> str:
    """The text lm-eval puts between input and continuation for a gauntlet file.

    ``spec.target_delimiter``, except that a whitespace-only delimiter (the default ``" "``) is
    dropped when most rows already have whitespace at the junction (e.g. queries ending in
    ``"Answer: "`` or continuations starting with a space), which would otherwise double it.
    """
    delim = spec.target_delimiter
    if delim.strip() == "" and 2 * sum(_junction_has_space(r, spec.format) for r in rows) > len(rows):
        return ""
    return delim


def _mc_text(doc: dict) -> str:
    return doc["query"]


def _mc_choices(doc: dict) -> list[str]:
    return list(doc["choices"])


def _gold(doc: dict) -> int:
    return int(doc["gold"])


def _schema_options(doc: dict) -> list[str]:
    return list(doc["context_options"])


def _continuation(doc: dict, prefix: str = "") -> str:
    return prefix + doc["continuation"]


def _lm_text(doc: dict) -> str:
    return doc["context"]


_MEAN = {"aggregation": "mean", "higher_is_better": True}


def _gauntlet_config(spec: BenchmarkSpec, file: Path) -> dict[str, Any]:
    rows = _read_gauntlet(file, spec.format)
    delim = gauntlet_delimiter(spec, rows)
    cfg: dict[str, Any] = {
        "task": spec.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {GAUNTLET_SPLIT: str(file)}},
        "test_split": GAUNTLET_SPLIT,
        "fewshot_split": GAUNTLET_SPLIT,  # few-shot examples from the same file, never the doc itself
        "target_delimiter": delim,
        "metadata": {"version": 1.0, "simassets_format": spec.format, "config_source": str(file)},
    }
    if spec.format == "mc":
        cfg |= {"output_type": "multiple_choice", "doc_to_text": _mc_text, "doc_to_choice": _mc_choices,
                "doc_to_target": _gold,
                "metric_list": [{"metric": "acc", **_MEAN}, {"metric": "acc_norm", **_MEAN}]}
    elif spec.format == "schema":  # lm-eval multiple-input mode: doc_to_text returns the gold index
        cfg |= {"output_type": "multiple_choice", "doc_to_text": _gold, "doc_to_choice": _schema_options,
                "doc_to_target": _continuation, "metric_list": [{"metric": "acc", **_MEAN}]}
    else:  # loglikelihood requests carry no delimiter: put it in the target, as lm-eval's lambada does
        cfg |= {"output_type": "loglikelihood", "doc_to_text": _lm_text,
                "doc_to_target": functools.partial(_continuation, prefix=delim), "target_delimiter": "",
                "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                                {"metric": "acc", **_MEAN}]}
    return cfg


# ---------------------------------------------------------------- hub-schema mirrors
def _mirror_config(spec: BenchmarkSpec, folder: Path) -> dict[str, Any]:
    """lm-eval's config for ``spec.lm_eval_task`` reading the local split files of ``folder``."""
    files = {p.stem: str(p) for p in sorted(folder.glob("*.jsonl"))}
    if not files:
        raise TaskBuildError(f"{folder}: no <split>.jsonl files for benchmark {spec.name!r}")
    cfg = builtin_task_config(spec.lm_eval_task)
    split = spec.split or cfg.get("test_split") or cfg.get("validation_split")
    if split not in files:
        raise TaskBuildError(f"{folder}: benchmark {spec.name!r} evaluates split {split!r} but only "
                             f"{sorted(files)} exist")
    cfg |= {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": files},
            "test_split": split}
    for key in ("training_split", "validation_split", "fewshot_split"):
        if cfg.get(key) not in files:
            cfg[key] = None
    if not cfg.get("fewshot_split") and not cfg.get("training_split") and cfg.get("validation_split") in (None, split):
        cfg["fewshot_split"] = split  # lm-eval would draw shots from the evaluated split; exclude the doc itself
    cfg["metadata"] = {**cfg["metadata"], "simassets_data_files": files}
    return cfg


# ---------------------------------------------------------------- tasks
def task_config(spec: BenchmarkSpec, data_root: Path) -> dict[str, Any]:
    """The lm-eval task config for a benchmark (callables included; no data loaded)."""
    if spec.kind == "gauntlet":
        return _gauntlet_config(spec, _resolve(spec, data_root))
    if spec.kind == "hf_mirror":
        return _mirror_config(spec, _resolve(spec, data_root))
    if spec.kind == "lm_eval":
        return builtin_task_config(spec.lm_eval_task)
    raise TaskBuildError(f"benchmark {spec.name!r}: unknown kind {spec.kind!r}")


def _resolve(spec: BenchmarkSpec, data_root: Path) -> Path:
    if not spec.path:
        raise TaskBuildError(f"benchmark {spec.name!r} ({spec.kind}) has no 'path'")
    path = Path(spec.path).expanduser()
    return (path if path.is_absolute() else Path(data_root) / path).resolve()


def build_task(spec: BenchmarkSpec, data_root: Path):
    """The lm-eval ``ConfigurableTask`` for a benchmark, built once per process."""
    return _build_task(spec, Path(data_root).expanduser().resolve())


@functools.lru_cache(maxsize=None)
def _build_task(spec: BenchmarkSpec, data_root: Path):
    from lm_eval.api.task import ConfigurableTask

    class ListDocsTask(ConfigurableTask):
        """lm-eval's task with its evaluated docs held as a list (lm-eval allows ``list[dict]``):
        lm-eval walks all eval docs twice per call, ~0.2 ms a row from an Arrow dataset."""

        docs_list: list[dict] | None = None

        @property
        def eval_docs(self):
            return self.docs_list if self.docs_list is not None else super().eval_docs

    task = ListDocsTask(config=task_config(spec, data_root))
    task.docs_list = list(task.eval_docs)
    return task


def prepare_task(task, num_fewshot: int, seed: int) -> None:
    """Set the shot count and reset the few-shot sampler, so contexts are reproducible."""
    task.set_config(key="num_fewshot", value=num_fewshot)
    task.set_fewshot_seed(seed=seed)


def scored_requests(task, doc: dict, num_fewshot: int) -> list[tuple[str, str]]:
    """The ``(context, continuation)`` pairs lm-eval scores for one doc, built by the task itself."""
    ctx = task.fewshot_context(doc, num_fewshot=num_fewshot, system_instruction=None, apply_chat_template=False,
                               fewshot_as_multiturn=False, chat_template=None, gen_prefix=task.doc_to_prefix(doc))
    reqs = task.construct_requests(doc=doc, ctx=ctx, metadata=(task.config.task, 0, 1))
    return [tuple(r.args[:2]) for r in (reqs if isinstance(reqs, list) else [reqs])]


def gold_index(task, doc: dict) -> int:
    """The gold choice index as lm-eval's ``process_results`` computes it (0 for loglikelihood)."""
    if task.OUTPUT_TYPE != "multiple_choice":
        return 0
    gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(gold, str):
        choices = task.doc_to_choice(doc)
        gold = choices.index(gold) if gold in choices else -1
    if not isinstance(gold, int) or isinstance(gold, bool) or gold < 0:
        raise TaskBuildError(f"task {task.config.task}: unsupported gold {gold!r} for doc {doc}")
    return gold


def render_example(task, doc_id: int, doc: dict, num_fewshot: int) -> RenderedExample:
    if task.OUTPUT_TYPE not in ("multiple_choice", "loglikelihood"):
        raise TaskBuildError(f"task {task.config.task}: output type {task.OUTPUT_TYPE!r} is not scored by "
                             f"log-likelihood")
    args = scored_requests(task, doc, num_fewshot)
    gold = gold_index(task, doc)
    if task.OUTPUT_TYPE == "loglikelihood":
        (ctx, cont), = args
        return RenderedExample(doc_id, ctx, cont, (), 0)
    if task.multiple_input:
        contexts = tuple(a[0] for a in args)
        return RenderedExample(doc_id, contexts[gold], args[gold][1], contexts, gold)
    conts = tuple(a[1] for a in args)
    return RenderedExample(doc_id, args[gold][0], conts[gold], conts, gold)


def render_examples(spec: BenchmarkSpec, data_root: Path, limit: int | None, seed: int,
                    num_fewshot: int = 0) -> list[RenderedExample]:
    """The examples of the evaluated subset exactly as lm-eval scores them (same docs, same shots)."""
    task = build_task(spec, Path(data_root))
    docs = task.eval_docs
    ids = select_doc_ids(len(docs), limit, seed, key=spec.name)  # the subset evaluate_benchmark scores
    prepare_task(task, num_fewshot, seed)
    return [render_example(task, i, docs[i], num_fewshot) for i in ids]


def benchmark_text(df) -> list[str]:
    """The text a benchmark example is compared by: the rendered input followed by the gold continuation
    (``benchmark_examples`` rows), exactly what lm-eval scores."""
    return (df["input_text"] + df["target_text"]).tolist()
