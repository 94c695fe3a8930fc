"""Scaling of the headless study: 1 vs N worker processes, and adding a model vs re-running everything.

Run: ``.venv/bin/python benchmarks/scaling.py [--workers 2] [--docs 20] [--examples 10] [--keep DIR]``.

The quick profile with SmolLM2 spends ~25-30 min in evaluation alone on 2 threads, so by default this
measures a documented subset that exercises every asset: 2 corpora (C4, PubMed), 6 gauntlet/mirror
benchmarks (ARC-Easy, PIQA, COPA, BoolQ, LAMBADA, XCOPA-et), ``--docs`` documents and ``--examples``
examples, tiny random Llama models (the real tokenizer; every step does the real work, only the model
is small), one study with light statistics. Each ``simassets run`` is a fresh process, as from the shell.

Figures printed:
* wall time of a full study from an empty warehouse with 1 worker and with ``--workers`` (speed-up);
* adding a second model to the materialized study vs running the two-model study from scratch (ratio),
  with the run records of the addition (which asset partitions were recomputed: the new model's
  partitions and the study assets only).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

BENCHMARKS = """
[benchmarks.arc_easy]
kind = "gauntlet"
path = "benchmarks/gauntlet/arc_easy.jsonl"
format = "mc"
category = "world_knowledge"

[benchmarks.piqa]
kind = "gauntlet"
path = "benchmarks/gauntlet/piqa.jsonl"
format = "mc"
category = "commonsense_reasoning"

[benchmarks.copa]
kind = "gauntlet"
path = "benchmarks/gauntlet/copa.jsonl"
format = "mc"
category = "commonsense_reasoning"

[benchmarks.boolq]
kind = "gauntlet"
path = "benchmarks/gauntlet/boolq.jsonl"
format = "mc"
category = "reading_comprehension"

[benchmarks.lambada_openai]
kind = "gauntlet"
path = "benchmarks/gauntlet/lambada_openai.jsonl"
format = "lm"
category = "language_understanding"

[benchmarks.xcopa_et]
kind = "hf_mirror"
path = "benchmarks/hf/cambridgeltl__xcopa/et"
lm_eval_task = "xcopa_et"
split = "validation"
category = "multilingual"
language = "et"

[studies.all]
description = "every benchmark against every corpus"
methods = ["spearman"]
n_boot = 100
n_perm = 100
"""


def catalog(docs: int, examples: int) -> str:
    return f"""
[profiles.quick]
corpus_sample_size = {docs}
benchmark_limit = {examples}
max_length = 512
seed = 7

[profiles.full]
corpus_sample_size = {docs}
benchmark_limit = {examples}

[corpora.c4_en]
source = {{ path = "corpora/c4_en.jsonl" }}

[corpora.pubmed_abstracts]
source = {{ path = "corpora/pubmed_abstracts.jsonl" }}
""" + BENCHMARKS


def model_entry(model_id: str, path: Path) -> str:
    return f'\n[[models]]\nid = "{model_id}"\nkind = "local"\npath = "{path}"\n'


def simassets(env: dict[str, str], *args: str) -> float:
    """Run ``simassets ARGS`` in a fresh process; its wall time (fails loudly on a failed run)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "simassets.cli", *args], env=env, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if proc.returncode != 0 or ", 0 failed" not in proc.stdout and args[0] == "run":
        raise SystemExit(f"simassets {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return took


def study_dir(root: Path, name: str, text: str, models: list[tuple[str, Path]]) -> dict[str, str]:
    """A catalog folder + empty warehouse home; the environment that points ``simassets`` at them."""
    d = root / name
    (d / "catalog").mkdir(parents=True)
    (d / "catalog" / "catalog.toml").write_text(text)
    (d / "catalog" / "models.toml").write_text("".join(model_entry(m, p) for m, p in models))
    return {**os.environ, "SIMASSETS_CATALOG_DIR": str(d / "catalog"), "SIMASSETS_HOME": str(d / "home"),
            "DAGSTER_HOME": str(d / "home" / "dagster_home")}


def recomputed_since(env: dict[str, str], since: float) -> list[tuple[str, str]]:
    """(asset, partition) of every non-skipped materialization in runs created after ``since``."""

    import dagster as dg

    os.environ.update({k: env[k] for k in ("SIMASSETS_HOME", "DAGSTER_HOME")})
    from simassets import runner

    instance = runner.get_instance()
    out = []
    for record in instance.get_run_records():  # (RunsFilter(created_after=...) fails type checks in 1.13.27)
        if record.create_timestamp.timestamp() < since:
            continue
        for rec in instance.get_records_for_run(record.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
            mat = rec.event_log_entry.asset_materialization
            if "skipped" not in mat.metadata:
                out.append((mat.asset_key.path[-1], mat.partition or ""))
    return sorted(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--docs", type=int, default=20)
    p.add_argument("--examples", type=int, default=10)
    p.add_argument("--keep", help="keep the study folders here instead of a temporary folder")
    args = p.parse_args()
    from simassets.core.testing import make_tiny_causal_lm

    root = Path(args.keep or tempfile.mkdtemp(prefix="simassets-scaling-"))
    root.mkdir(parents=True, exist_ok=True)
    text = catalog(args.docs, args.examples)
    model_a = make_tiny_causal_lm(root / "models" / "tiny-a", seed=0, hidden_size=64, layers=4)
    model_b = make_tiny_causal_lm(root / "models" / "tiny-b", seed=1, hidden_size=64, layers=4)
    print(f"study: 2 corpora x 6 benchmarks, {args.docs} docs, {args.examples} examples, tiny Llama models; "
          f"{os.cpu_count()} CPUs; folders under {root}")

    serial_env = study_dir(root, "serial", text, [("tiny-a", model_a)])
    t1 = simassets(serial_env, "run", "--workers", "1")
    print(f"full study, 1 worker:            {t1:7.1f} s")
    tn = simassets(study_dir(root, "parallel", text, [("tiny-a", model_a)]), "run", "--workers", str(args.workers))
    print(f"full study, {args.workers} workers:           {tn:7.1f} s   speed-up {t1 / tn:.2f}x")

    since = time.time()
    simassets(serial_env, "models", "add", "tiny-b", "--path", str(model_b))
    t_add = simassets(serial_env, "run", "--workers", "1")
    t_all = simassets(study_dir(root, "both", text, [("tiny-a", model_a), ("tiny-b", model_b)]), "run", "--workers", "1")
    print(f"add a model to the study:        {t_add:7.1f} s")
    print(f"re-run the two-model study:      {t_all:7.1f} s   adding costs {t_add / t_all:.2f} of re-running everything")
    recomputed = recomputed_since(serial_env, since)
    other = [(a, k) for a, k in recomputed if "tiny-b" not in k.split("|") and not a.startswith(
        ("correlations", "measure_agreement", "per_example_analysis"))]
    print(f"recomputed by the addition: {len(recomputed)} asset partitions, "
          f"{len(recomputed) - len(other)} of them tiny-b's or the study's; others: {other or 'none'}")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
