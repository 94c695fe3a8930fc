"""Training interventions: equal token budgets, loss on the training data, determinism, the overlap guard,
held-out splits, the probe choice and the alignment-vs-loss statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from simassets.core import finetune as F  # noqa: E402
from simassets.core.training import TrainConfig  # noqa: E402
from simassets_tests.test_training import A, B, cyclic, tiny  # noqa: E402,F401  (fixtures)

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module

CFG = F.FinetuneConfig(train=TrainConfig(lr=1e-2, seq_len=32, batch_size=4, seed=0), token_budget=300, eval_points=1)


def test_equal_budgets_and_the_loss_falls_on_the_training_data(tiny):
    model, tok = tiny
    own = F.Target("heldout:a", tuple(cyclic(A, i, 40) for i in range(8, 10)))
    other = F.Target("heldout:b", tuple(cyclic(B, i, 40) for i in range(8, 10)))
    small = [cyclic(A, i) for i in range(2)]  # 2 texts: repeated epoch after epoch to fill the budget
    large = [cyclic(B, i) for i in range(8)]
    runs = [F.finetune(model, tok, texts, [own, other], CFG) for texts in (small, large)]
    assert CFG.steps == 3 and CFG.tokens == 3 * 4 * 32
    assert [r.tokens for r in runs] == [CFG.tokens] * 2 and [r.steps for r in runs] == [3, 3]
    assert [s for s, _ in runs[0].target_curves["heldout:a"]] == CFG.eval_steps() == [0, 2, 3]
    assert runs[0].blocks < runs[1].blocks
    # each run lowers the loss of the target drawn from its own data more than the other target's
    gain = {(i, t): r.before(t) - r.after(t) for i, r in enumerate(runs) for t in ("heldout:a", "heldout:b")}
    assert gain[(0, "heldout:a")] > 1.0 and gain[(0, "heldout:a")] > gain[(0, "heldout:b")]
    assert gain[(1, "heldout:b")] > 1.0 and gain[(1, "heldout:b")] > gain[(1, "heldout:a")]
    assert runs[0].before("heldout:a") == pytest.approx(F.target_loss(model, tok, own)[0])
    assert runs[0].tokens_per_second > 0 and len(runs[0].train_curve) == 3


def test_finetune_is_deterministic_and_reuses_given_before_losses(tiny):
    model, tok = tiny
    target = F.Target("heldout:a", (cyclic(A, 9, 40),))
    texts = [cyclic(A, i) for i in range(3)]
    a = F.finetune(model, tok, texts, [target], CFG)
    b = F.finetune(model, tok, texts, [target], CFG, before={"heldout:a": 123.0})
    assert a.train_curve == b.train_curve and a.target_curves["heldout:a"][1:] == b.target_curves["heldout:a"][1:]
    assert b.before("heldout:a") == 123.0
    c = F.finetune(model, tok, texts, [target], F.FinetuneConfig(train=TrainConfig(lr=1e-2, seq_len=32, batch_size=4, seed=1),
                                                                 token_budget=300, eval_points=1))
    assert c.train_curve != a.train_curve


def test_overlap_guard_refuses_a_contaminated_corpus():
    examples = tuple(" ".join(f"word{i}x{j}" for j in range(20)) for i in range(10))  # no 13-gram shared
    target = F.Target("benchmark:planets", examples)
    clean = ["The river runs past the old mill and the bakery on the corner of the market square every day."] * 3
    assert F.overlap_guard(target, "clean", clean).contaminated_fraction == 0.0
    leaked = clean + [examples[3]]  # one benchmark example verbatim in the corpus: 10 % of the target
    with pytest.raises(F.ContaminationError, match=r"'leaky' overlaps target 'benchmark:planets': 10\.0%"):
        F.overlap_guard(target, "leaky", leaked)
    verdict = F.overlap_guard(target, "leaky", leaked, positive_control=True)
    assert verdict.contaminated and verdict.contaminated_fraction == pytest.approx(0.1)
    assert "document 3" in verdict.evidence
    assert not F.overlap_guard(target, "leaky", leaked, threshold=0.2).contaminated


def test_heldout_split_is_seeded_and_disjoint():
    texts = [f"document number {i}" for i in range(20)]
    kept, held = F.heldout_split(texts, 0.25, seed=4)
    assert len(held) == 5 and len(kept) == 15 and not set(kept) & set(held)
    assert F.heldout_split(texts[::-1], 0.25, seed=4)[1] == sorted(held, key=lambda t: texts[::-1].index(t))
    assert F.heldout_split(texts, 0.25, seed=5)[1] != held
    with pytest.raises(ValueError, match="fraction"):
        F.heldout_split(texts, 1.0, seed=0)


def test_smallest_registered_model_is_the_probe(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from simassets.core.models import ModelSpec
    from simassets.core.testing import make_tiny_causal_lm

    big = make_tiny_causal_lm(tmp_path / "big", hidden_size=64)
    specs = [ModelSpec(id="big", kind="local", path=str(big)), ModelSpec(id="small", kind="local", path=str(tiny_model_dir))]
    n_small = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    assert F.parameter_count(specs[1]) == n_small
    assert F.smallest_model(specs).id == "small"



def test_the_task2vec_probe_is_pinned_by_the_profile_and_falls_back_to_the_smallest(tiny_study, tmp_path, tiny_model_dir):
    """One probe for every Task2Vec measure: the profile's ``task2vec_probe`` wins over a smaller model; without
    it the smallest registered model; a pinned id that is not registered is refused naming both files."""
    from simassets.core import paths
    from simassets.core.catalog import CatalogError
    from simassets.core.measures.task2vec import probe_spec
    from simassets.core.testing import make_tiny_causal_lm
    from simassets.defs.resources import StudyResource

    scope = lambda: StudyResource().scope("quick")  # noqa: E731 -- a fresh scope reads the files again

    big = make_tiny_causal_lm(tmp_path / "big", hidden_size=64)
    cat_dir = paths.catalog_dir()
    (cat_dir / "models.toml").write_text(
        f'[[models]]\nid = "big"\nkind = "local"\npath = "{big}"\n\n'
        f'[[models]]\nid = "tiny-llama"\nkind = "local"\npath = "{tiny_model_dir}"\n')
    assert probe_spec(scope()).id == "tiny-llama"  # no pin: the fewest parameters
    catalog = (cat_dir / "catalog.toml").read_text()
    pinned = catalog.replace("embedding_top_k = 5\n", 'embedding_top_k = 5\ntask2vec_probe = "big"\n', 1)
    assert pinned != catalog
    (cat_dir / "catalog.toml").write_text(pinned)
    assert scope().spec.task2vec_probe == "big"
    assert probe_spec(scope()).id == "big"  # pinned: a smaller registered model does not take over
    (cat_dir / "catalog.toml").write_text(pinned.replace('"big"', '"gone"'))
    with pytest.raises(CatalogError, match=r"catalog\.toml.*task2vec_probe = 'gone' is not in the model registry .*models\.toml"):
        probe_spec(scope())


def test_alignment_loss_table_by_hand():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    rows = pd.DataFrame({"model": "m", "corpus": list("abcde") + ["ctrl"], "target": "t",
                         "positive_control": [False] * 5 + [True],
                         "task2vec_alignment": np.r_[x, 0.9], "gzip_alignment": np.r_[x[::-1], 0.9],
                         "loss_after": np.r_[5.0 - 2.0 * x, 0.1], "delta_loss": np.r_[-x, -3.0]})
    out = F.alignment_loss_table(rows, n_boot=0).set_index(["subset", "target", "measure", "loss", "method"])
    clean = out.loc[("clean", "t", "task2vec_alignment", "loss_after", "pearson")]
    assert clean["n"] == 5 and clean["r"] == pytest.approx(-1.0) and clean["r2"] == pytest.approx(1.0)
    assert clean["slope"] == pytest.approx(-2.0) and clean["intercept"] == pytest.approx(5.0)
    assert out.loc[("clean", "t", "gzip_alignment", "delta_loss", "spearman"), "r"] == pytest.approx(1.0)
    assert out.loc[("all", "*", "task2vec_alignment", "loss_after", "pearson"), "n"] == 6  # the control joins 'all'
