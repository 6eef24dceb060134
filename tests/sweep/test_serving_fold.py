"""``serving_fold``: a serving sweep's token-wise and prefill-attention costs evaluated once per distinct
argument combination equal the unfolded evaluation bit for bit (dense, MoE, power-limited GPU)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import energylens.serving_fold as sf
from energylens.parallel.layout import Layout
from energylens.sweep import SweepSpec, run_sweep

SERVE = ("serve_energy_per_output_token_j", "serve_itl_s", "serve_output_tokens_per_s", "serve_avg_power_w")
DENSE = SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2, 4), pp=(1, 2, 4), dp=(1, 2),
                  batch=(1, 2, 4, 8, 64, 256), prompt_len=(128, 512, 2048, 4096), output_len=(16, 64, 256, 1024),
                  serving=True)
MOE = SweepSpec(models=("qwen3-30b-a3b",), gpus=("b200",), tp=(1, 2), ep=(1, 2, 4), batch=(2, 4, 16, 128),
                prompt_len=(256, 1024, 1500), output_len=(7, 64, 200, 512), serving=True)


def _serve_columns(spec, monkeypatch, min_points):
    monkeypatch.setattr(sf, "MIN_POINTS", min_points)
    calls = []
    orig = sf.distinct_rows

    def counted(*a):
        r = orig(*a)
        calls.append((len(r[0]), int(np.prod(r[2]))))
        return r

    monkeypatch.setattr(sf, "distinct_rows", counted)
    t = run_sweep(spec)
    return {c: t[c] for c in SERVE}, calls


@pytest.mark.parametrize("spec", [DENSE, MOE, dataclasses.replace(DENSE, power_limit_w=(450.0,))],
                         ids=["dense", "moe", "power-limit"])
def test_folded_equals_unfolded(spec, monkeypatch):
    folded, calls = _serve_columns(spec, monkeypatch, 1)
    assert any(2 * k <= n for k, n in calls)  # some evaluation did fold (the median prefill load repeats)
    plain, none = _serve_columns(spec, monkeypatch, 10**12)
    assert not none
    for c in SERVE:
        assert np.array_equal(folded[c], plain[c]), c


def test_fold_call_gathers_every_position():
    """A layout degree varying on a folded axis is folded with the arguments; one on another axis is kept."""
    rng = np.random.default_rng(0)
    lay = Layout(tp=np.array([1, 2, 4]).reshape(3, 1, 1, 1), pp=np.array([1, 2]).reshape(1, 2, 1, 1))
    b = rng.choice([1.0, 2.0, 4.0], size=(1, 2, 5, 1))
    x = rng.choice([0.0, 3.0, 7.0], size=(1, 2, 5, 40))
    seen = []

    def fn(layout, bb, xx):
        seen.append(np.shape(xx))
        tp, pp = (np.asarray(v, dtype=float) for v in (layout.tp, layout.pp))
        return tp * (bb + xx) / pp, bb * pp, None, np.asarray(2.0)

    want = fn(lay, b, x)
    old = sf.MIN_POINTS
    try:
        sf.MIN_POINTS = 1
        got = sf.fold_call(fn, lay, (b, x))
    finally:
        sf.MIN_POINTS = old
    assert seen[-1][-1] < 400 and seen[-1][:-1] == (1, 1, 1)  # evaluated on the distinct combinations only
    assert got[2] is None
    for w, g in zip(want[:2] + want[3:], got[:2] + got[3:], strict=True):
        assert np.array_equal(np.broadcast_to(g, np.broadcast_shapes(np.shape(w), np.shape(g))),
                              np.broadcast_to(w, np.broadcast_shapes(np.shape(w), np.shape(g))))
