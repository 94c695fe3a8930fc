"""Shared fixtures: a tiny offline study (catalog, registry, tiny random model) in a temp warehouse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY_CATALOG = """
[profiles.quick]
corpus_sample_size = 20
benchmark_limit = 10
eval_batch_size = 8
max_length = 512
seed = 7
embedding_top_k = 5

[profiles.full]
corpus_sample_size = 30
benchmark_limit = 12

[corpora.c4_en]
description = "C4 web"
source = { path = "corpora/c4_en.jsonl" }

[corpora.pubmed_abstracts]
description = "PubMed"
source = { path = "corpora/pubmed_abstracts.jsonl" }

[benchmarks.arc_easy]
kind = "gauntlet"
path = "benchmarks/gauntlet/arc_easy.jsonl"
format = "mc"
category = "world_knowledge"

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
"""


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a test module: tiny models on a shared 2-core machine run several times faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from simassets.core.testing import make_tiny_causal_lm

    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture()
def tiny_study(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A temp catalog dir + warehouse home with the tiny catalog and one tiny local model."""
    catalog_dir = tmp_path / "catalog"
    catalog_dir.mkdir()
    (catalog_dir / "catalog.toml").write_text(TINY_CATALOG)
    (catalog_dir / "models.toml").write_text(
        f'[[models]]\nid = "tiny-llama"\nkind = "local"\npath = "{tiny_model_dir}"\nprofiles = ["quick", "full"]\n'
    )
    home = tmp_path / "home"
    monkeypatch.setenv("SIMASSETS_CATALOG_DIR", str(catalog_dir))
    monkeypatch.setenv("SIMASSETS_HOME", str(home))
    monkeypatch.setenv("SIMASSETS_PROFILE", "quick")
    return home


def materialize(names, partition_key=None, instance=None, profile: str = "quick", resources=None, tags=None,
                raise_on_error: bool = False):
    """Materialize assets of one profile (by name) in this process, as a run of the code location would."""
    import dagster as dg

    from simassets import runner
    from simassets.defs import factory
    from simassets.defs.resources import StudyResource

    return dg.materialize(list(runner.definitions().assets or ()), selection=[factory.asset_key(profile, n) for n in names], partition_key=partition_key,
                          instance=instance, resources=resources or {"study": StudyResource()}, tags=tags,
                          raise_on_error=raise_on_error, run_config=runner.QUIET)


def add_partitions(instance, profile: str = "quick", **keys) -> None:
    """Add dynamic partitions of a profile, e.g. ``add_partitions(instance, corpus=["c4_en"])``."""
    from simassets.defs import factory

    for dim, values in keys.items():
        have = instance.get_dynamic_partitions(factory.partitions_name(profile, dim))
        new = [v for v in values if v not in have]
        if new:
            instance.add_dynamic_partitions(factory.partitions_name(profile, dim), new)
