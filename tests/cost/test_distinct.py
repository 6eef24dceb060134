"""``cost.distinct.distinct_call``: a formula once per distinct leading combination, bit for bit ``fn(*args)``."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from energylens.cost import distinct, families
from energylens.cost.distinct import distinct_call, unique_rows
from energylens.cost.families import gemm_coeffs, gemm_math_s
from energylens.hardware import load_gpu


def _calls():
    seen = []

    def fn(*a):
        seen.append(np.broadcast_shapes(*(np.shape(x) for x in a)))
        return np.ceil(a[0] / 3.0) * a[1] + np.sqrt(a[2]) / np.maximum(a[0], 1.0)

    return fn, seen


def test_repeated_leading_values_are_costed_once_and_the_result_is_identical(monkeypatch):
    monkeypatch.setattr(distinct, "MIN_ELEMENTS", 1)
    tp = np.array([1.0, 2.0, 4.0, 8.0]).reshape(4, 1, 1)
    b = (2.0 ** np.arange(10)).reshape(1, 10, 1)
    batch = b * 8.0 / tp  # 13 distinct products over 40 (tp, b) pairs
    s = np.linspace(100.0, 9000.0, 37).reshape(1, 1, 37)
    fn, seen = _calls()
    got = distinct_call(fn, (batch, s, np.asarray(128.0)))
    want = fn(batch, s, np.asarray(128.0))
    assert got.shape == want.shape and np.array_equal(got, want)
    assert seen[0] == (13, 37)  # the distinct products times the contexts


def test_axes_in_any_order_and_fallbacks(monkeypatch):
    monkeypatch.setattr(distinct, "MIN_ELEMENTS", 1)
    rng = np.random.default_rng(1)
    lead = rng.integers(0, 3, size=(6, 1, 5, 1)).astype(float)  # lead axes 0 and 2, trailing axes 1 and 3
    tail = rng.random((1, 4, 1, 9))
    fn, seen = _calls()
    assert np.array_equal(distinct_call(fn, (lead, tail, tail)), fn(lead, tail, tail))
    assert seen[0] == (3, 36)  # the 3 distinct leading values times the 4 x 9 trailing ones
    for args in ((rng.random((6, 1, 5, 1)), tail, tail),  # no repeats: plain call
                 (rng.random((6, 4, 1, 1)), tail, tail),  # lead and trailing arguments share axis 1
                 (lead, lead, lead)):  # nothing varies along the last axis
        fn, seen = _calls()
        assert np.array_equal(distinct_call(fn, args), fn(*args))
        assert seen[0] == np.broadcast_shapes(*(np.shape(a) for a in args))


def test_repeated_trailing_values_are_costed_once(monkeypatch):
    monkeypatch.setattr(distinct, "MIN_ELEMENTS", 1)
    n_tp = np.array([4096.0, 2048.0, 1024.0]).reshape(3, 1, 1)  # N / tp
    tokens = (np.arange(40) % 7 + 1.0).reshape(1, 5, 8) * 16.0  # 7 distinct token counts over 40 positions
    fn, seen = _calls()
    assert np.array_equal(distinct_call(fn, (tokens, n_tp, np.asarray(8192.0))), fn(tokens, n_tp, np.asarray(8192.0)))
    assert seen[0] == (3, 7)


def test_gemm_formula_over_a_sweep_grid_is_unchanged():
    c = gemm_coeffs(load_gpu("h100-sxm"), "bf16")
    batch = ((2.0 ** np.arange(10)).reshape(1, 10, 1) * 8.0 / np.array([1.0, 2.0, 4.0, 8.0]).reshape(4, 1, 1))
    s = (128.0 + 32.0 * np.arange(600)).reshape(1, 1, 600)
    args = (np.asarray(8.0), s, np.asarray(128.0), batch)
    seen = []

    def formula(*a):
        seen.append(np.broadcast_shapes(*(np.shape(x) for x in a)))
        return gemm_math_s(c, *a)

    assert np.array_equal(distinct_call(formula, args), gemm_math_s(c, *args))
    assert seen[0] == (13, 600)  # it folded: 13 distinct batches of the 40 (TP, batch) pairs, 600 contexts


def test_decode_attention_over_a_sweep_grid_is_costed_per_distinct_work_units(monkeypatch):
    """Decode attention depends on (TP, batch) only through b g and h / g past its share: a sweep's 40 (TP, batch)
    pairs with KV heads 8 / tp give 13 distinct b g, each costed once over the contexts, every value bit for bit
    the one-configuration call's (fractional batches, fp8 KV and a window included)."""
    monkeypatch.setattr(distinct, "MIN_ELEMENTS", 1)
    c = families.attention_coeffs(load_gpu("h100-sxm"), "bf16")
    g = (8.0 / np.array([1.0, 2.0, 4.0, 8.0])).reshape(4, 1, 1)
    h = g * 8.0
    b = (2.0 ** np.arange(10)).reshape(1, 10, 1)
    s = (1.0 + 227.0 * np.arange(37)).reshape(1, 1, 37)  # 1 .. 8,173 tokens, across the split thresholds
    seen = []
    core = families._decode_call_s

    def spy(c_, bg, *rest):
        seen.append(np.broadcast_shapes(np.shape(bg), *(np.shape(x) for x in rest)))
        return core(c_, bg, *rest)

    monkeypatch.setattr(families, "_decode_call_s", spy)
    # 13 distinct b g; fractional batches: 7 (1 .. 64); b + 0.5: all 40 distinct, so one plain call
    for batch, kv, win, shape in ((b, 2.0, 0.0, (13, 37)), (b / 64.0, 1.0, 0.0, (7, 37)),
                                  (b + 0.5, 2.0, 1000.0, (4, 10, 37))):
        seen.clear()
        got = families.decode_attention_latency_s(c, batch, s, h, g, 128.0, kv, win)
        assert seen == [shape]
        for i, j, k in np.ndindex(got.shape):
            one = families.decode_attention_latency_s(c, batch[0, j, 0], s[0, 0, k], h[i, 0, 0], g[i, 0, 0], 128.0,
                                                      kv, win)
            assert got[i, j, k] == one


def test_distinct_trailing_values_out_of_order_are_gathered_in_place(monkeypatch):
    """Every trailing value distinct but decreasing: the sorted distinct values are not the positions' order."""
    monkeypatch.setattr(distinct, "MIN_ELEMENTS", 1)
    lead = np.array([1.0, 2.0, 1.0, 2.0]).reshape(4, 1)
    for tail in (np.linspace(900.0, 100.0, 9).reshape(1, 9), np.linspace(100.0, 900.0, 9).reshape(1, 9)):
        fn, seen = _calls()
        assert np.array_equal(distinct_call(fn, (lead, tail, np.asarray(2.0))), fn(lead, tail, np.asarray(2.0)))
        assert seen[0] == (2, 9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 400), st.integers(1, 4), st.integers(1, 6), st.integers(0, 2**31))
def test_unique_rows_equals_numpy_unique_by_rows(n, k, values, seed):
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, values, (n, k)) / 3.0
    uniq, inv = unique_rows(rows)
    np.testing.assert_array_equal(uniq[inv], rows)  # every row recovered
    ref = np.unique(rows, axis=0)
    assert len(uniq) == len(ref)
    np.testing.assert_array_equal(uniq[np.lexsort(uniq.T[::-1])], ref)
    first = [int(np.flatnonzero(inv == j)[0]) for j in range(len(uniq))]
    assert first == sorted(first)  # numbered in order of first appearance


def test_unique_rows_compares_bit_patterns():
    uniq, inv = unique_rows(np.array([[0.0, 1.0], [-0.0, 1.0], [0.0, 1.0]]))
    assert len(uniq) == 2 and inv.tolist() == [0, 1, 0]  # -0.0 and 0.0 kept apart, as np.unique(axis=0)
