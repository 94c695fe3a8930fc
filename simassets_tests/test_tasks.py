"""Benchmarks as lm-eval tasks: doc subsets, gauntlet formats, hub-schema mirrors with lm-eval's prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simassets.core import paths
from simassets.core.catalog import BenchmarkSpec
from simassets.core.hashing import seeded_hash64
from simassets.core.tasks import (
    TaskBuildError,
    build_task,
    builtin_task_config,
    gauntlet_delimiter,
    render_examples,
    select_doc_ids,
    task_config,
)

ROOT = paths.data_root()
GAUNTLET = ROOT / "benchmarks" / "gauntlet"


def gauntlet(name: str, fmt: str, **kw) -> BenchmarkSpec:
    return BenchmarkSpec(name=name, kind="gauntlet", category="language_understanding", language="en",
                         path=f"benchmarks/gauntlet/{name}.jsonl", format=fmt, **kw)


def mirror(name: str, path: str, split: str) -> BenchmarkSpec:
    return BenchmarkSpec(name=name, kind="hf_mirror", category="multilingual", language="xx",
                         path=path, lm_eval_task=name, split=split)


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (GAUNTLET / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------- select_doc_ids
def test_select_doc_ids_is_the_seeded_bottom_k_sorted():
    ids = select_doc_ids(50, 7, seed=3, key="bench")
    by_hash = sorted(range(50), key=lambda i: seeded_hash64(3, f"bench:{i}"))
    assert ids == sorted(by_hash[:7])
    assert ids == select_doc_ids(50, 7, seed=3, key="bench")  # stable
    assert select_doc_ids(50, 7, seed=4, key="bench") != ids  # seeded
    assert select_doc_ids(50, 7, seed=3, key="other") != ids  # per benchmark
    assert set(ids) <= set(select_doc_ids(50, 20, seed=3, key="bench"))  # nested in larger limits
    assert select_doc_ids(5, None, 3, "bench") == [0, 1, 2, 3, 4]
    assert select_doc_ids(5, 9, 3, "bench") == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        select_doc_ids(5, 0, 3, "bench")


# ---------------------------------------------------------------- gauntlet formats
def test_mc_renders_query_and_space_delimited_choices():
    spec = gauntlet("arc_easy", "mc")
    data = rows("arc_easy")
    examples = render_examples(spec, ROOT, limit=4, seed=11)
    assert [e.example_id for e in examples] == select_doc_ids(len(data), 4, 11, "arc_easy")
    for e in examples:
        row = data[e.example_id]
        assert e.input_text == row["query"]
        assert e.choices == tuple(" " + c for c in row["choices"])
        assert e.gold == row["gold"] and e.target_text == " " + row["choices"][row["gold"]]
    task = build_task(spec, ROOT)
    assert task.OUTPUT_TYPE == "multiple_choice" and not task.multiple_input
    assert set(task._metric_fn_list) == {"acc", "acc_norm"}
    assert build_task(spec, ROOT) is task  # cached per process


def test_schema_is_lm_eval_multiple_input_like_winogrande():
    spec = gauntlet("winogrande", "schema")
    data = rows("winogrande")
    examples = render_examples(spec, ROOT, limit=3, seed=5)
    for e in examples:
        row = data[e.example_id]
        assert e.choices == tuple(row["context_options"])
        assert e.gold == row["gold"] and e.input_text == row["context_options"][row["gold"]]
        assert e.target_text == " " + row["continuation"]
    task = build_task(spec, ROOT)
    assert task.multiple_input == 2 and set(task._metric_fn_list) == {"acc"}


def test_lm_puts_the_delimiter_in_the_target_like_lm_eval_lambada():
    spec = gauntlet("lambada_openai", "lm")
    data = rows("lambada_openai")
    (e,) = render_examples(spec, ROOT, limit=1, seed=2)
    row = data[e.example_id]
    assert e.input_text == row["context"] and not e.input_text.endswith(" ")
    assert e.target_text == " " + row["continuation"]
    assert e.choices == () and e.gold == 0
    task = build_task(spec, ROOT)
    assert task.OUTPUT_TYPE == "loglikelihood" and set(task._metric_fn_list) == {"perplexity", "acc"}


def test_no_double_space_where_the_text_already_has_one():
    # pubmed_qa contexts end in "Answer: ": the default " " delimiter is dropped.
    spec = gauntlet("pubmed_qa_labeled", "lm")
    (e,) = render_examples(spec, ROOT, limit=1, seed=2)
    assert e.input_text.endswith("Answer: ") and e.target_text == rows("pubmed_qa_labeled")[e.example_id]["continuation"]
    # hand cases: majority rule, and a non-whitespace delimiter is always kept
    lm_rows = [{"context": "a =", "continuation": " 1"}, {"context": "b =", "continuation": " 2"},
               {"context": "c =", "continuation": "3"}]
    assert gauntlet_delimiter(gauntlet("x", "lm"), lm_rows) == ""
    assert gauntlet_delimiter(gauntlet("x", "lm"), lm_rows[2:]) == " "
    assert gauntlet_delimiter(gauntlet("x", "lm", target_delimiter="\nA:"), lm_rows) == "\nA:"
    mc_rows = [{"query": "Q?\n", "choices": ["x", "y"], "gold": 0}]
    assert gauntlet_delimiter(gauntlet("x", "mc"), mc_rows) == ""


def test_fewshot_context_uses_other_docs_of_the_file():
    spec = gauntlet("winogrande", "schema")
    data = rows("winogrande")
    plain = render_examples(spec, ROOT, limit=3, seed=5)
    shots = render_examples(spec, ROOT, limit=3, seed=5, num_fewshot=2)
    assert shots == render_examples(spec, ROOT, limit=3, seed=5, num_fewshot=2)  # reproducible
    for p, s in zip(plain, shots, strict=True):
        assert s.input_text.endswith("\n\n" + p.input_text) and s.input_text.count("\n\n") >= 2
        shot_blocks = s.input_text.split("\n\n")[:2]
        known = {r["context_options"][r["gold"]] + " " + r["continuation"] for r in data}
        assert all(b in known for b in shot_blocks)
        row = data[s.example_id]
        assert row["context_options"][row["gold"]] + " " + row["continuation"] not in shot_blocks  # never itself


def test_bad_gauntlet_rows_name_file_line_and_field(tmp_path: Path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "Q", "choices": ["a", "b"], "gold": 0}\n{"query": "Q", "choices": ["a", "b"], "gold": 2}\n')
    spec = BenchmarkSpec(name="bad", kind="gauntlet", category="world_knowledge", language="en",
                         path=str(bad), format="mc")
    with pytest.raises(TaskBuildError, match=r"bad\.jsonl: line 2: field 'gold'"):
        task_config(spec, ROOT)
    bad.write_text('{"context": "a", "continuation": 3}\n')
    with pytest.raises(TaskBuildError, match=r"line 1: field 'continuation'"):
        task_config(BenchmarkSpec(**{**spec.__dict__, "format": "lm"}), ROOT)
    bad.write_text('{"context_options": ["a"], "continuation": "x", "gold": 0}\n')
    with pytest.raises(TaskBuildError, match=r"line 1: field 'context_options'"):
        task_config(BenchmarkSpec(**{**spec.__dict__, "format": "schema"}), ROOT)


# ---------------------------------------------------------------- hub-schema mirrors: lm-eval's own prompts
def test_xcopa_uses_lm_eval_connectors_on_the_local_split():
    spec = mirror("xcopa_et", "benchmarks/hf/cambridgeltl__xcopa/et", "validation")
    cfg = task_config(spec, ROOT)
    assert cfg["dataset_path"] == "json" and cfg["dataset_name"] is None and cfg["test_split"] == "validation"
    assert cfg["metadata"]["config_source"].endswith("xcopa/default_et.yaml")
    examples = render_examples(spec, ROOT, limit=None, seed=0)
    assert len(examples) == 100
    # doc 0: {"premise": "Mees keeras kraani lahti.", "choice1": "Tualett täitus veega.",
    #         "choice2": "Tilast voolas vett.", "question": "effect", "label": 1}
    # lm-eval xcopa: premise without its period + " " + connector ("effect" -> "seetõttu" in Estonian),
    # choices with a lower-cased first letter after the " " target delimiter.
    e = examples[0]
    assert e.input_text == "Mees keeras kraani lahti seetõttu"
    assert e.choices == (" tualett täitus veega.", " tilast voolas vett.")
    assert e.gold == 1 and e.target_text == " tilast voolas vett."
    cause = next(x for x in examples if "sest" in x.input_text)  # "cause" -> "sest"
    assert cause.input_text.endswith(" sest")


def test_mmlu_mirror_has_description_letters_and_dev_shots():
    spec = mirror("mmlu_high_school_biology", "benchmarks/hf/cais__mmlu/high_school_biology", "test")
    examples = render_examples(spec, ROOT, limit=None, seed=0)
    assert len(examples) == 310
    head = "The following are multiple choice questions (with answers) about high school biology.\n\n"
    q0 = ("In a population of giraffes, an environmental change occurs that favors individuals that are tallest. "
          "As a result, more of the taller individuals are able to obtain nutrients and survive to pass along their "
          "genetic information. This is an example of")
    assert examples[0].input_text == (head + q0 + "\nA. directional selection.\nB. stabilizing selection.\n"
                                      "C. sexual selection.\nD. disruptive selection.\nAnswer:")
    assert examples[0].choices == (" A", " B", " C", " D") and examples[0].gold == 0
    (one_shot,) = render_examples(spec, ROOT, limit=1, seed=0, num_fewshot=1)
    dev0 = ("Which of the following is not a way to form recombinant DNA?\nA. Translation\nB. Conjugation\n"
            "C. Specialized transduction\nD. Transformation\nAnswer: A\n\n")  # first dev item (first_n sampler)
    assert one_shot.input_text.startswith(head + dev0)


def test_sst2_mirror_prompt():
    spec = mirror("sst2", "benchmarks/hf/glue__sst2", "validation")
    e = render_examples(spec, ROOT, limit=None, seed=0)[0]
    assert e.input_text == ("it 's a charming and often affecting journey .\nQuestion: Is this sentence positive "
                            "or negative?\nAnswer:")
    assert e.choices == (" negative", " positive") and e.gold == 1
    with pytest.raises(TaskBuildError, match="split 'train'"):
        task_config(mirror("sst2", "benchmarks/hf/glue__sst2", "train"), ROOT)


def test_lm_eval_kind_takes_the_builtin_config_unchanged():
    spec = BenchmarkSpec(name="arc_hub", kind="lm_eval", category="world_knowledge", language="en",
                         lm_eval_task="arc_easy")
    cfg = task_config(spec, ROOT)
    assert cfg["dataset_path"] == "allenai/ai2_arc" and cfg["task"] == "arc_easy"
    assert cfg["doc_to_text"] == "Question: {{question}}\nAnswer:"
    assert builtin_task_config("xcopa_et")["dataset_path"] == "cambridgeltl/xcopa"
