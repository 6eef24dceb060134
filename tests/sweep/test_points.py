"""Decode points folded onto distinct contexts (``energylens.sweep.points``): the same sums as the points."""

from __future__ import annotations

import numpy as np
import pytest

import energylens
from energylens.sweep import SweepSpec, run_sweep
from energylens.sweep import points as pts
from energylens.workload import Workload, decode_sizes

LENGTHS = SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2), pp=(1, 2), dp=(1, 2), batch=(1, 4, 16),
                    prompt_len=tuple(range(128, 1025, 128)), output_len=(5, 16, 17) + tuple(range(64, 513, 64)))


def _sizes(prompts, outputs):
    p = np.asarray(prompts, dtype=float).reshape(-1, 1)
    o = np.asarray(outputs, dtype=float).reshape(1, -1)
    return decode_sizes(Workload(1, p, o), np.asarray(1.0))


def test_distinct_contexts_and_lookup_reproduce_every_point():
    sizes, w = _sizes(range(128, 2049, 128), range(64, 1025, 64))
    s = np.broadcast_to(sizes["s"], np.broadcast_shapes(sizes["s"].shape, np.shape(w)))
    folded, points = pts.fold_contexts(s, w)
    assert folded.size < s.size / 3  # the lattice repeats: far fewer distinct contexts than points
    assert np.array_equal(folded.reshape(-1)[points.rows.T.reshape(s.shape)], s)  # exact values, not rounded
    assert np.all(np.diff(folded.reshape(-1)) > 0)


def test_reduce_equals_weighted_sum_over_points():
    rng = np.random.default_rng(0)
    sizes, w = _sizes(range(100, 1100, 100), (40, 80, 160))
    s = np.broadcast_to(sizes["s"], np.broadcast_shapes(sizes["s"].shape, np.shape(w)))
    folded, points = pts.fold_contexts(s, w, max_share=1.0)
    f = rng.random((2, 3, folded.shape[-1]))  # any cost over (2 leading, 3 batch, contexts)
    x = f.reshape(2, 3, 1, 1, -1)
    want = np.sum(np.take(f, points.rows.T.reshape(s.shape), axis=-1).reshape(2, 3, *s.shape) * w, axis=-1)
    np.testing.assert_allclose(points.reduce_points(x, lead=1), want, rtol=1e-13)
    const = rng.random((3, 1, 1, 1))  # a kernel that does not read the context
    np.testing.assert_allclose(points.reduce_points(const), np.sum(const * w, axis=-1), rtol=1e-13)
    uneven = np.broadcast_to(w, s.shape) * (1.0 + np.arange(s.shape[-1]))  # weights that differ per point
    _, p2 = pts.fold_contexts(s, uneven, max_share=1.0)
    assert not p2.uniform
    want2 = np.sum(np.take(f, p2.rows.T.reshape(s.shape), axis=-1).reshape(2, 3, *s.shape) * uneven, axis=-1)
    np.testing.assert_allclose(p2.reduce_points(x, lead=1), want2, rtol=1e-13)
    with pytest.raises(ValueError):
        points.reduce_points(rng.random((3, 4, 1, folded.shape[-1])))  # varies along the prompt axis


def test_sparse_sum_matches_the_lookup_loop_bit_for_bit(monkeypatch):
    """Large arrays sum their points as one sparse product: the same additions in the same order."""
    rng = np.random.default_rng(1)
    sizes, w = _sizes(range(128, 2049, 128), range(64, 1025, 64))
    s = np.broadcast_to(sizes["s"], np.broadcast_shapes(sizes["s"].shape, np.shape(w)))
    folded, points = pts.fold_contexts(s, w)
    assert points.uniform
    x = rng.random((3, 5, 1, 1, folded.shape[-1])) * 10.0 ** rng.integers(-6, 6, (3, 5, 1, 1, 1))
    monkeypatch.setattr(pts, "SPARSE_MIN_ELEMENTS", 1 << 62)
    loop = points.reduce_points(x, lead=1)
    monkeypatch.setattr(pts, "SPARSE_MIN_ELEMENTS", 1)
    sparse = points.reduce_points(x, lead=1)
    assert sparse.shape == loop.shape == (3, 5) + s.shape[-3:-1]
    assert np.array_equal(sparse, loop)
    with pytest.raises(ValueError):
        points.reduce_points(x[..., :-1], lead=1)  # not over every folded context


def test_no_fold_where_contexts_do_not_repeat():
    sizes, w = _sizes((1000, 3001), (333,))
    s = np.broadcast_to(sizes["s"], np.broadcast_shapes(sizes["s"].shape, np.shape(w)))
    assert pts.fold_contexts(s, w) is None
    odd = s + 1e-3  # not on the 1/32 lattice: distinct values by sorting
    values, inv = pts._distinct(odd.reshape(odd.shape[-3:]))
    assert np.array_equal(values[inv], odd.reshape(odd.shape[-3:]))


def test_folded_sweep_equals_unfolded_sweep_and_predict(monkeypatch):
    folded = run_sweep(LENGTHS)
    monkeypatch.setattr(pts, "FOLD_MAX_SHARE", 0.0)  # never fold
    plain = run_sweep(LENGTHS)
    assert folded.names == plain.names and len(folded) == len(plain)
    for k in folded.names:
        if folded[k].dtype.kind == "f":
            np.testing.assert_allclose(folded[k], plain[k], rtol=1e-13, atol=1e-300, err_msg=k)
        else:
            assert np.array_equal(folded[k], plain[k]), k
    for i in np.linspace(0, len(folded) - 1, 25).astype(int):
        r = folded.row(int(i))
        p = energylens.predict(r["model"], r["gpu"], tp=r["tp"], pp=r["pp"], dp=r["dp"], batch=r["batch"],
                               prompt_len=r["prompt_len"], output_len=r["output_len"])
        b = p.decode.breakdown
        for want, got in ((p.decode.energy_j, r["decode_energy_j"]), (p.decode.latency_s, r["decode_latency_s"]),
                          (b.compute_j, r["decode_compute_j"]), (b.memory_j, r["decode_memory_j"]),
                          (b.static_j, r["decode_static_j"]), (b.communication_j, r["decode_communication_j"]),
                          (b.idle_wait_j, r["decode_idle_wait_j"])):
            assert got == pytest.approx(want, rel=1e-12, abs=1e-12), r
