"""Lazy sweep columns (``SweepTable`` sources): a column computed at some rows, or after the table was split into
chunks and joined, equals the whole column computed at once, bit for bit; reading a front computes only the
columns it reads."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from energylens.sweep import Constraints, SweepSpec, SweepTable, run_sweep

SPECS = {
    "dense": SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2, 4), pp=(1, 2), dp=(1, 2),
                       batch=(1, 3, 8, 64), prompt_len=(128, 2048), output_len=(0, 5, 300),
                       constraints=Constraints(max_ttft_s=0.5, max_tpot_s=0.02, max_gpus=4, min_gpus=2)),
    "serving": SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2), pp=(1, 2), dp=(1, 2),
                         batch=(1, 8, 64), prompt_len=(128, 2048), output_len=(0, 16, 300), serving=True),
    "moe": SweepSpec(models=("qwen3-30b-a3b",), gpus=("h100-sxm",), tp=(1, 2), dp=(1, 2), ep=(1, 2),
                     batch=(4, 32), prompt_len=(256,), output_len=(7, 40)),  # two activity blocks, merged lazily
}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and (a.tolist() == b.tolist())


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rows_computed_alone_equal_the_whole_column(name):
    spec = SPECS[name]
    whole = run_sweep(spec).columns  # every column computed at once
    rng = np.random.default_rng(7)
    lazy = run_sweep(spec)
    rows = rng.permutation(len(lazy))[: max(3, len(lazy) // 5)]
    part = lazy.filter(rows)  # only those rows computed
    assert part.names == list(whole)
    for k, v in whole.items():
        assert _same(part[k], v[rows]), k
    i = int(rows[0])
    assert lazy.row(i) == {k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in whole.items()}
    # chunks joined lazily (assemble re-orders them) equal the one-chunk table
    chunked = run_sweep(spec, max_chunk_configs=max(1, spec.size // 7))
    assert chunked.names == list(whole)
    for k, v in whole.items():
        assert _same(chunked.take(k, rows), v[rows]), k
        assert _same(chunked[k], v), k


def test_a_front_computes_only_what_it_reads():
    t = run_sweep(SPECS["dense"])
    front = t.pareto("decode-latency", by=("prompt_len",))
    computed = {k for k, v in t._data.items() if isinstance(v, np.ndarray)}
    assert "feasible" in computed and "tpot_s" in computed
    assert "request_tokens_per_s_high" not in computed and "prefill_tokens_per_s" not in computed
    assert len(front) and front.names == t.names
    whole = run_sweep(SPECS["dense"])
    np.testing.assert_array_equal(whole.pareto("decode-latency", by=("prompt_len",), index=True),
                                  t.pareto("decode-latency", by=("prompt_len",), index=True))


def test_pickled_table_carries_every_column():
    t = run_sweep(SPECS["serving"])
    back = pickle.loads(pickle.dumps(t))
    assert back.names == t.names and len(back) == len(t)
    assert all(isinstance(v, np.ndarray) for v in back._data.values())
    for k in t.names:
        assert _same(back[k], t[k]), k


def test_lazy_table_needs_its_length_and_checks_values():
    with pytest.raises(ValueError, match="length"):
        SweepTable({"a": lambda rows, get: np.zeros(2)})
    bad = SweepTable({"a": lambda rows, get: np.array([1.0, np.nan])}, length=2)
    with pytest.raises(FloatingPointError, match="'a'"):
        bad["a"]


@pytest.mark.parametrize("name", ["dense", "serving"])
def test_fronts_by_workload_on_the_grid_equal_the_general_search(name):
    """A chunk's fronts grouped by workload columns sort each workload on its own (``SweepTable.grid``); the rows
    and their order equal the general grouped search's."""
    from energylens.sweep.runner import evaluate_chunk, plan_chunks
    from energylens.sweep.table import FRONTS

    spec = SPECS[name]
    t = evaluate_chunk(plan_chunks(spec)[0])
    assert t.grid is not None
    checked = 0
    for front in FRONTS:
        if front.startswith("serving") and not spec.serving:
            continue
        for by in (None, ("prompt_len",), ("output_len",), ("model", "prompt_len", "output_len"), ("tp",)):
            for feasible_only in (True, False):
                grid = t.pareto(front, by=by, index=True, feasible_only=feasible_only)
                saved, t.grid = t.grid, None
                general = t.pareto(front, by=by, index=True, feasible_only=feasible_only)
                t.grid = saved
                np.testing.assert_array_equal(grid, general)
                checked += len(grid) > 0
    assert checked > 20
