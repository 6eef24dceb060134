"""pareto_mask against a brute-force definition (hypothesis), plus hand-checked fronts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from energylens.errors import DimensionError
from energylens.pareto import dominates, pareto_front, pareto_mask, pareto_mask_grouped, pareto_mask_rows


def brute_mask(obj: np.ndarray) -> np.ndarray:
    """O(n^2) definition: a row is kept unless another row is <= everywhere and < somewhere."""
    le = np.all(obj[:, None, :] <= obj[None, :, :], axis=2)  # [j, i]: j no worse than i
    lt = np.any(obj[:, None, :] < obj[None, :, :], axis=2)
    return ~np.any(le & lt, axis=0)


def small_ints(m: int):
    # few distinct values -> many ties and duplicates, the hard cases
    return hnp.arrays(float, st.tuples(st.integers(0, 40), st.just(m)), elements=st.integers(0, 5).map(float))


@settings(max_examples=120, deadline=None)
@given(small_ints(2))
def test_two_objectives_match_bruteforce(obj):
    assert np.array_equal(pareto_mask(obj), brute_mask(obj))


@settings(max_examples=80, deadline=None)
@given(st.integers(3, 4).flatmap(small_ints))
def test_many_objectives_match_bruteforce(obj):
    assert np.array_equal(pareto_mask(obj), brute_mask(obj))


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(float, st.tuples(st.integers(1, 60), st.integers(2, 3)),
                  elements=st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)))
def test_front_is_nondominated_and_covers(obj):
    mask = pareto_mask(obj)
    front = obj[mask]
    assert mask.any()
    # no front point dominates another front point
    assert brute_mask(front).all()
    # every excluded point is dominated by some front point
    for p in obj[~mask]:
        assert any(dominates(q, p) for q in front)
    # the best point of each objective (ties broken by the others) is on the front
    for j in range(obj.shape[1]):
        keys = [obj[:, c] for c in reversed(range(obj.shape[1])) if c != j] + [obj[:, j]]
        assert mask[np.lexsort(keys)[0]]


@settings(max_examples=100, deadline=None)
@given(small_ints(2), st.lists(st.booleans(), min_size=2, max_size=2))
def test_maximize_is_minimize_of_negated(obj, flags):
    sign = np.where(flags, 1.0, -1.0)
    assert np.array_equal(pareto_mask(obj, minimize=flags), pareto_mask(obj * sign))


def test_hand_counted_front():
    # latency, energy
    pts = np.array([[1.0, 9.0], [2.0, 5.0], [2.0, 6.0], [3.0, 5.0], [4.0, 1.0], [4.0, 1.0], [5.0, 0.5], [6.0, 0.5]])
    assert pareto_mask(pts).tolist() == [True, True, False, False, True, True, True, False]
    assert pareto_front(pts).tolist() == [0, 1, 4, 5, 6]
    assert pareto_mask(pts, minimize=False).tolist() == [True, False, True, True, True, True, False, True]


def test_edge_cases():
    assert pareto_mask(np.zeros((0, 2))).shape == (0,)
    assert pareto_mask(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [False, True, True, False]
    assert pareto_mask(np.array([[np.inf, 0.0], [0.0, np.inf], [1.0, 1.0]])).all()
    with pytest.raises(DimensionError):
        pareto_mask(np.array([[1.0, np.nan]]))
    with pytest.raises(DimensionError):
        pareto_mask(np.zeros((2, 2)), minimize=[True])
    with pytest.raises(DimensionError):
        pareto_mask(np.zeros((2, 2, 2)))


def test_two_objectives_on_a_million_points():
    """Correct on a large input (its speed is a benchmark figure, not a timed test)."""
    rng = np.random.default_rng(0)
    obj = rng.random((1_000_000, 2))
    mask = pareto_mask(obj)
    front = obj[mask]
    # along the front sorted by the first objective, the second strictly decreases
    front = front[np.argsort(front[:, 0])]
    assert np.all(np.diff(front[:, 1]) < 0)


@settings(max_examples=120, deadline=None)
@given(small_ints(2), st.lists(st.booleans(), min_size=2, max_size=2), st.data())
def test_grouped_mask_is_the_mask_of_each_group(obj, minimize, data):
    groups = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=len(obj), max_size=len(obj))), dtype=int)
    got = pareto_mask_grouped(groups, obj, minimize)
    for g in np.unique(groups):
        sel = groups == g
        assert np.array_equal(got[sel], pareto_mask(obj[sel], minimize))


def test_grouped_mask_errors():
    with pytest.raises(DimensionError, match="groups"):
        pareto_mask_grouped([0, 1], np.zeros((3, 2)))
    with pytest.raises(DimensionError, match="two objective"):
        pareto_mask_grouped([0], np.zeros((1, 3)))
    assert pareto_mask_grouped([], np.zeros((0, 2))).shape == (0,)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 15), st.integers(1, 5), st.integers(0, 2**31))
def test_row_wise_mask_equals_the_grouped_one(groups, members, values, seed):
    """``pareto_mask_rows`` (one group per row, ties and repeats included) marks the rows ``pareto_mask_grouped``
    marks over the same groups."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, values, (groups, members)).astype(float)
    y = rng.integers(0, values, (groups, members)).astype(float)
    y[rng.random((groups, members)) < 0.2] = np.inf  # rows left out of a front are set to +inf
    got = pareto_mask_rows(x, y)
    want = pareto_mask_grouped(np.repeat(np.arange(groups), members), np.column_stack([x.ravel(), y.ravel()]))
    np.testing.assert_array_equal(got.ravel(), want)
