"""Word coverage (1 - OOV rate) by hand."""

from __future__ import annotations

import math

import pytest

from simassets.core.measures.coverage import vocabulary, word_coverage
from simassets.core.measures.registry import FAMILIES, MEASURES


def test_word_coverage_by_hand():
    vocab = vocabulary(["The cat sat on the mat.", "A dog, barking!"])
    assert vocab == {"the", "cat", "sat", "on", "mat", "a", "dog", "barking"}
    res = word_coverage(["The cat barked.", "Dogs sat", "?!"], vocab)
    # "the cat barked": 2 of 3 words seen; "dogs sat": 1 of 2; "?!": no words at all
    assert res["per_example"][:2].tolist() == pytest.approx([2 / 3, 1 / 2]) and math.isnan(res["per_example"][2])
    assert res["dataset"] == pytest.approx(3 / 5) and res["tokens"] == 5  # token-weighted over all examples
    assert res["evidence"] == ["unseen: barked", "unseen: dogs", None]


def test_word_coverage_is_registered_with_its_asset():
    spec = MEASURES["word_coverage"]
    assert spec.range == (0.0, 1.0) and spec.direction == 1 and spec.levels == ("example", "dataset")
    family = FAMILIES["word_coverage"]
    assert family.partitioning == "corpus_x_benchmark" and family.writes_measures
