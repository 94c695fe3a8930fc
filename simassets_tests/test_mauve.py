"""MAUVE on hand-made histograms and small random point clouds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simassets.core.measures.mauve import divergence_curve, mauve, mauve_floor, mauve_from_histograms

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 16))
Y = RNG.normal(size=(300, 16))  # same distribution, other draws


def blob(n: int, centre: float, seed: int) -> np.ndarray:
    pts = np.random.default_rng(seed).normal(scale=0.05, size=(n, 8))
    pts[:, 0] += centre
    return pts


def test_divergence_curve_hand_computed() -> None:
    # p = (.5, .5), q = (1, 0), w = .5: r = (.75, .25); KL(q||r) = log(4/3); KL(p||r) = .5 log(2/3) + .5 log 2
    curve = divergence_curve(np.array([0.5, 0.5]), np.array([1.0, 0.0]), np.array([0.5]), scaling=5.0)
    kl_q, kl_p = math.log(4 / 3), 0.5 * math.log(2 / 3) + 0.5 * math.log(2)
    np.testing.assert_allclose(curve, [[1, 0], [math.exp(-5 * kl_q), math.exp(-5 * kl_p)], [0, 1]], rtol=1e-12)


def test_floor_is_the_disjoint_support_score() -> None:
    # disjoint supports: KL(q||r) = -log(1-w), KL(p||r) = -log w, so the curve is ((1-w)^c, w^c)
    w = np.linspace(1e-6, 1 - 1e-6, 25)
    curve = divergence_curve(np.array([1.0, 0.0]), np.array([0.0, 1.0]), w, scaling=5.0)
    np.testing.assert_allclose(curve[1:-1], np.stack([(1 - w) ** 5, w**5], axis=1), rtol=1e-9, atol=1e-300)
    floor = mauve_floor()
    assert floor == pytest.approx(0.004072, abs=1e-6)
    # the trapezoid slightly overestimates the continuous area 5 * B(6, 5) = 1/252
    assert 1 / 252 < floor < 1.05 / 252
    assert mauve_from_histograms(np.array([0.0, 0.3, 0.7]), np.array([1.0, 0.0, 0.0])) == pytest.approx(floor)


def test_histogram_mauve_identical_and_symmetric() -> None:
    p, q = np.array([0.7, 0.3]), np.array([0.3, 0.7])
    assert mauve_from_histograms(p, p) == pytest.approx(1.0)
    assert mauve_from_histograms(p, q) == pytest.approx(mauve_from_histograms(q, p))
    assert mauve_floor() < mauve_from_histograms(p, q) < 1.0


def test_identical_sets_score_one() -> None:
    res = mauve(X, X)
    assert res.score > 0.9 and res.score == pytest.approx(1.0) and not res.at_floor
    assert res.num_clusters == 20  # max(2, round(200 / 10))
    np.testing.assert_array_equal(res.p_hist, res.q_hist)


def test_far_apart_sets_are_at_the_floor() -> None:
    res = mauve(blob(60, +1.0, 1), blob(90, -1.0, 2))
    assert res.at_floor and res.score == pytest.approx(res.floor, abs=1e-12)
    assert res.num_clusters == 6  # max(2, round(min(60, 90) / 10))
    assert not np.any((res.p_hist > 0) & (res.q_hist > 0))  # no cluster is shared


def test_closer_distributions_score_higher() -> None:
    same, shifted = mauve(X, Y), mauve(X, Y + 0.5)
    assert same.score > 0.9
    assert shifted.score < same.score - 0.3 and not shifted.at_floor


def test_seeded_run_is_reproducible() -> None:
    a, b = mauve(X, Y + 0.3, seed=3), mauve(X, Y + 0.3, seed=3)
    assert a.score == b.score and a.mauve_star == b.mauve_star
    np.testing.assert_array_equal(a.p_hist, b.p_hist)
    assert a.params["seed"] == 3 and a.pca_dim < 16
    assert mauve(X, Y, pca_explained_variance=None, num_buckets=5).pca_dim == 16


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="benchmark features must be a non-empty"):
        mauve(np.zeros((0, 4)), X[:, :4])
    with pytest.raises(ValueError, match="dim 16 != corpus dim 4"):
        mauve(X, X[:, :4])
    with pytest.raises(ValueError, match="num_buckets"):
        mauve(X[:3], X[:4], num_buckets=8)
    with pytest.raises(ValueError, match="distributions"):
        mauve_from_histograms(np.array([0.5, 0.5]), np.array([1.0, 0.0, 0.0]))
