"""Bad input: every kind gives a clear error naming the file, row and field, and nothing stored is lost.

Corpus rows (malformed JSON, missing/wrongly typed fields, non-UTF-8, a 10 MB document, duplicate ids,
an empty file), benchmark files, model sources (missing path, pickle-only, unsupported GGUF), model ids
with partition-key separators, and SQL injection through names. Where a few bad rows of many are usable
the policy is explicit: ``on_bad_row = fail | skip`` (``SIMASSETS_ON_BAD_ROW`` / ``StudyResource``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from simassets import cli, runner
from simassets.core import paths
from simassets.core.catalog import BenchmarkSpec, CatalogError, SourceSpec, load_catalog
from simassets.core.models import ModelRegistryError, load_registry
from simassets.core.sampling import MAX_DOC_CHARS, SourceError, sample_source
from simassets.core.tasks import TaskBuildError, task_config
from simassets.core.warehouse import Warehouse, partition_filename
from simassets.defs.resources import StudyResource
from simassets_tests.conftest import add_partitions, materialize

GOOD = [{"id": f"d{i:02d}", "text": f"document {i} about rivers, towns and the weather in spring"} for i in range(30)]
BAD_ROW = 12  # 1-based line of the bad row inside a file of GOOD rows


def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _with_bad_line(path: Path, bad: bytes) -> Path:
    rows = [json.dumps(r).encode() for r in GOOD]
    return _write(path, rows[: BAD_ROW - 1] + [bad] + rows[BAD_ROW - 1:])


CORPUS_CASES = {  # name -> (bad line, what the error must say besides the file and the line number)
    "malformed_json": (b'{"id": "x", "text": "unterminated', "malformed JSON"),
    "missing_field": (b'{"id": "x", "body": "no text field"}', "missing field 'text'"),
    "wrong_type": (b'{"id": "x", "text": 12345}', "field 'text' must be a string, got int"),
    "non_utf8": (b'{"id": "x", "text": "caf\xe9 au lait"}', "not valid UTF-8"),
    "not_an_object": (b'["a", "list"]', "expected a JSON object, got list"),
    "ten_megabytes": (json.dumps({"id": "x", "text": "a" * 10_000_000}).encode(),
                      f"field 'text' has 10,000,000 characters (limit {MAX_DOC_CHARS:,})"),
    "empty_text": (b'{"id": "x", "text": "   "}', "field 'text' is empty"),
}


@pytest.mark.parametrize("case", sorted(CORPUS_CASES))
def test_corpus_bad_row_fails_clearly_or_is_skipped_and_counted(case, tmp_path):
    bad, says = CORPUS_CASES[case]
    path = _with_bad_line(tmp_path / f"{case}.jsonl", bad)
    source = SourceSpec(path=str(path))
    with pytest.raises(SourceError) as exc:
        sample_source(source, 10, seed=3, on_bad_row="fail")
    msg = str(exc.value)
    assert str(path) in msg and (f"line {BAD_ROW}" in msg or f"row {BAD_ROW}" in msg) and says in msg, msg

    docs, scanned, skipped = sample_source(source, 10, seed=3, on_bad_row="skip")
    clean, clean_scanned, _ = sample_source(SourceSpec(path=str(_with_bad_line(tmp_path / "clean.jsonl", b""))), 10,
                                            seed=3, on_bad_row="fail")
    assert (scanned, skipped) == (len(GOOD) + 1, 1) and clean_scanned == len(GOOD)
    assert [d.doc_id for d in docs] == [d.doc_id for d in clean]  # the bad row costs nothing else


def test_skip_mode_reads_a_clean_file_exactly_like_the_datasets_reader():
    source = SourceSpec(path="corpora/c4_en.jsonl")
    fail_docs, n1, k1 = sample_source(source, 25, seed=11, on_bad_row="fail")
    skip_docs, n2, k2 = sample_source(source, 25, seed=11, on_bad_row="skip")
    assert (n1, k1) == (n2, k2) and k1 == 0 and n1 > 25
    assert [(d.doc_id, d.text, d.domain) for d in fail_docs] == [(d.doc_id, d.text, d.domain) for d in skip_docs]


def test_duplicate_ids_empty_files_and_unknown_policy(tmp_path):
    rows = [json.dumps(r).encode() for r in GOOD]
    dup = _write(tmp_path / "dup.jsonl", rows + [rows[4]])
    for policy in ("fail", "skip"):  # a duplicate id is an error under either policy: which copy is right?
        with pytest.raises(SourceError, match=rf"dup.jsonl: row {len(GOOD) + 1}: duplicate id 'd04' \(first seen in row 5\)"):
            sample_source(SourceSpec(path=str(dup)), 5, seed=1, on_bad_row=policy)
    empty = _write(tmp_path / "empty.jsonl", [])
    with pytest.raises(SourceError, match="empty.jsonl: the file has no rows"):
        sample_source(SourceSpec(path=str(empty)), 5, seed=1, on_bad_row="fail")
    with pytest.raises(SourceError, match="empty.jsonl: no usable documents"):
        sample_source(SourceSpec(path=str(empty)), 5, seed=1, on_bad_row="skip")
    with pytest.raises(ValueError, match="on_bad_row must be 'fail' or 'skip'"):
        sample_source(SourceSpec(path=str(dup)), 5, seed=1, on_bad_row="ignore")
    with pytest.raises(ValueError, match="SIMASSETS_ON_BAD_ROW must be 'fail' or 'skip', got 'sometimes'"):
        _ = StudyResource(on_bad_row="sometimes").bad_row_policy


# ---------------------------------------------------------------- through the asset: nothing stored is lost


def _materialize(selection: list[str], partition_key: str, instance) -> dg.ExecuteInProcessResult:
    return materialize(selection, partition_key, instance)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures, "expected a step failure"
    return runner.error_text(failures[0].event_specific_data.error)  # type: ignore[union-attr]


def test_corpus_asset_keeps_stored_rows_and_skip_policy_is_recorded(tiny_study, tmp_path, monkeypatch):
    source = tmp_path / "c4.jsonl"
    shutil.copy(paths.data_root() / "corpora" / "c4_en.jsonl", source)
    cat_file = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "catalog.toml"
    cat_file.write_text(cat_file.read_text().replace('"corpora/c4_en.jsonl"', json.dumps(str(source))))
    wh, keys = Warehouse(), {"corpus": "c4_en"}
    with dg.instance_for_test() as instance:
        add_partitions(instance, corpus=["c4_en"])
        assert _materialize(["corpus_documents"], "c4_en", instance).success
        before, fp_before = wh.read_partition("corpus_documents", "quick", keys), wh.fingerprint("corpus_documents", "quick", keys)

        with open(source, "ab") as fh:  # the source grows a malformed last line
            fh.write(b'{"id": "late", "text": "cut off\n')
        n_lines = sum(1 for _ in open(source, "rb"))
        result = _materialize(["corpus_documents"], "c4_en", instance)
        assert not result.success
        assert f"{source}: line {n_lines}: malformed JSON" in _failure(result)
        after = wh.read_partition("corpus_documents", "quick", keys)
        assert wh.fingerprint("corpus_documents", "quick", keys) == fp_before
        pd.testing.assert_frame_equal(before, after)

        monkeypatch.setenv("SIMASSETS_ON_BAD_ROW", "skip")
        result = _materialize(["corpus_documents"], "c4_en", instance)
        assert result.success
        mat = result.asset_materializations_for_node("quick__corpus_documents")[0]
        assert mat.metadata["skipped_bad_rows"].value == 1
        stored = wh.stored("corpus_documents", "quick", keys)
        assert stored.info["n_skipped"] == 1 and stored.info["on_bad_row"] == "skip"
        assert stored.fingerprint != fp_before  # the policy is part of the fingerprint when it is not the default
        # the sample is the same documents: the bad line had no usable document in it
        assert sorted(wh.read_partition("corpus_documents", "quick", keys)["doc_id"]) == sorted(before["doc_id"])


def _bad_models(tmp_path: Path, tiny_model_dir: Path) -> dict[str, tuple[str, str]]:
    """id -> (registry entry body, what the error must say)."""
    from simassets_tests.test_models import write_tiny_gguf

    pickle_dir = tmp_path / "pickle_only"
    pickle_dir.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, pickle_dir / f.name)
    (pickle_dir / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    odd = tmp_path / "odd.gguf"
    write_tiny_gguf(odd, arch="rwkv6")
    return {
        "gone": (f'kind = "local"\npath = "{tmp_path / "nowhere"}"', f"field 'path' '{tmp_path / 'nowhere'}' does not exist"),
        "pickled": (f'kind = "local"\npath = "{pickle_dir}"', "has only pickle checkpoints (pytorch_model.bin)"),
        "odd-arch": (f'kind = "local"\npath = "{odd}"', "general.architecture = 'rwkv6'"),
    }


def test_bad_models_fail_fast_with_clear_errors_and_keep_stored_rows(tiny_study, tmp_path, tiny_model_dir):
    bad = _bad_models(tmp_path, tiny_model_dir)
    registry = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "models.toml"
    registry.write_text(registry.read_text() + "".join(f'\n[[models]]\nid = "{i}"\n{body}\n' for i, (body, _) in bad.items()))
    wh = Warehouse()
    with dg.instance_for_test() as instance:
        add_partitions(instance, benchmark=["arc_easy"], model=list(bad))
        assert _materialize(["benchmark_examples"], "arc_easy", instance).success
        for model_id, (_, says) in bad.items():
            keys = {"model": model_id, "benchmark": "arc_easy"}
            old = pd.DataFrame([{"model": model_id, "benchmark": "arc_easy", "category": "world_knowledge", "language": "en",
                                 "n": 10, "acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.5, "acc_norm_stderr": 0.1,
                                 "primary_metric": "acc", "random_baseline": 0.25, "normalized_score": 33.3,
                                 "acc_ci_low": 0.24, "acc_ci_high": 0.76, "acc_norm_ci_low": 0.24,
                                 "acc_norm_ci_high": 0.76, "model_fingerprint": "earlier-weights", "params": "{}"}])
            wh.write_partition("benchmark_scores", "quick", keys, old, "fp-of-an-earlier-run")  # results of a good past
            result = _materialize(["benchmark_evaluation"], str(dg.MultiPartitionKey(keys)), instance)
            assert not result.success
            msg = _failure(result)
            assert f"model {model_id!r}" in msg or model_id in msg, msg
            assert says in msg, msg
            # deterministic bad input is not retried (the evaluation retry policy is for transient faults)
            assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
            assert wh.fingerprint("benchmark_scores", "quick", keys) == "fp-of-an-earlier-run"
            assert wh.read_partition("benchmark_scores", "quick", keys)["acc"].tolist() == [0.5]


GAUNTLET_CASES = {  # name -> (bad line, what the error says)
    "malformed_json": (b'{"query": "Q", "choices": ["a", "b"], "gold": 0', "not valid JSON"),
    "missing_field": (b'{"query": "Q", "gold": 0}', "missing field 'choices' (format 'mc')"),
    "wrong_type": (b'{"query": "Q", "choices": "a or b", "gold": 0}', "field 'choices' must be a list of >= 2 strings"),
    "gold_out_of_range": (b'{"query": "Q", "choices": ["a", "b"], "gold": 5}', "field 'gold' must be an index into 2 options, got 5"),
    "non_utf8": (b'{"query": "Caf\xe9?", "choices": ["a", "b"], "gold": 0}', "not valid UTF-8"),
}


@pytest.mark.parametrize("case", sorted(GAUNTLET_CASES))
def test_benchmark_file_errors_name_file_line_and_field(case, tmp_path):
    bad, says = GAUNTLET_CASES[case]
    good = [json.dumps({"query": f"Q{i}?", "choices": ["yes", "no"], "gold": i % 2}).encode() for i in range(6)]
    path = _write(tmp_path / f"{case}.jsonl", good[:3] + [bad] + good[3:])
    spec = BenchmarkSpec(name="b", kind="gauntlet", category="world_knowledge", language="en", path=str(path), format="mc")
    with pytest.raises(TaskBuildError) as exc:
        task_config(spec, tmp_path)
    assert f"{path}: line 4" in str(exc.value) and says in str(exc.value), str(exc.value)


def test_empty_benchmark_and_empty_catalog_sections(tmp_path):
    spec = BenchmarkSpec(name="b", kind="gauntlet", category="world_knowledge", language="en",
                         path=str(_write(tmp_path / "empty.jsonl", [])), format="mc")
    with pytest.raises(TaskBuildError, match="empty.jsonl: no rows"):
        task_config(spec, tmp_path)
    (tmp_path / "catalog.toml").write_text('[profiles.quick]\ncorpus_sample_size = 5\n')
    with pytest.raises(CatalogError, match=r"catalog.toml: no \[corpora.\*\] entries"):
        load_catalog(tmp_path / "catalog.toml")


# ---------------------------------------------------------------- names: partition keys and SQL


@pytest.mark.parametrize("bad_id", ["a|b", "a,b", "org/model", "my model", 'q"uote', "it's", "x'; drop view benchmark_scores; --"])
def test_model_ids_that_would_break_partition_keys_or_sql_are_refused(bad_id, tiny_study, tiny_model_dir, capsys):
    registry = Path(os.environ["SIMASSETS_CATALOG_DIR"]) / "models.toml"
    before = registry.read_text()
    assert cli.main(["models", "add", bad_id, "--path", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert f"invalid model id {bad_id!r}" in err and "try '" in err
    assert registry.read_text() == before
    # the same id typed into the file by hand: the registry names the file, the entry and the field
    registry.write_text(before + f"\n[[models]]\nid = {json.dumps(bad_id)}\nkind = \"local\"\npath = \"{tiny_model_dir}\"\n")
    with pytest.raises(ModelRegistryError, match=r"models.toml: models\[1\].*invalid model id"):
        load_registry()
    assert cli.main(["run", "--profile", "quick"]) == 2  # refused before any partition is added
    assert "invalid model id" in capsys.readouterr().err


def test_sql_injection_through_names_has_no_effect(tiny_study, tmp_path):
    catalog_dir = Path(os.environ["SIMASSETS_CATALOG_DIR"])
    text = (catalog_dir / "catalog.toml").read_text()
    (tmp_path / "catalog.toml").write_text(text.replace("[benchmarks.arc_easy]", "[benchmarks.\"arc'; drop view x; --\"]"))
    with pytest.raises(CatalogError, match="name must match"):
        load_catalog(tmp_path / "catalog.toml")
    # partition values never leave their folder and never reach SQL unquoted
    for value in ("../../etc/passwd", "a'b", 'a"b', "x; drop table t"):
        name = partition_filename({"model": value, "benchmark": "b"})
        assert "/" not in name and "'" not in name and '"' not in name and ";" not in name
    wh = Warehouse()
    keys = {"model": "m1", "benchmark": "b1"}
    row = pd.DataFrame([{"model": "m1", "benchmark": "b1", "category": "c", "language": "en", "n": 1, "acc": 1.0,
                         "acc_stderr": 0.0, "acc_norm": 1.0, "acc_norm_stderr": 0.0, "primary_metric": "acc",
                         "random_baseline": 0.5, "normalized_score": 100.0, "acc_ci_low": 0.21, "acc_ci_high": 1.0,
                         "acc_norm_ci_low": 0.21, "acc_norm_ci_high": 1.0, "model_fingerprint": "f", "params": "{}"}])
    wh.write_partition("benchmark_scores", "quick", keys, row, "fp")
    evil = "m1' or '1'='1"
    assert wh.query("select * from benchmark_scores where model = ?", [evil]).empty  # a value, not SQL
    assert len(wh.query("select * from benchmark_scores where model = ?", ["m1"])) == 1


def test_a_home_folder_with_quotes_in_its_name_still_works(tmp_path):
    wh = Warehouse(tmp_path / "it's a \"home\"")
    row = pd.DataFrame([{"name": "m", "family": "embedding", "level": "dataset", "direction": 1, "needs_model": False,
                         "description": "d", "formula": "f", "params": "{}"}])
    wh.write_partition("measures", None, {}, row, "fp")
    assert wh.ensure_views() == "views created"
    con = wh.connect_readonly()
    try:
        assert con.execute("select name from measures").fetchall() == [("m",)]
    finally:
        con.close()
