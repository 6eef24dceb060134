"""The vectorised sweep engine: equal to scalar ``predict`` row by row, invariants, hand counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens
from energylens.errors import EnergyLensError
from energylens.pareto import pareto_mask
from energylens.sweep import SweepSpec, run_sweep
from energylens.sweep.runner import plan_chunks

DENSE = SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2, 3, 4, 8), pp=(1, 2), dp=(1, 2, 4),
                  batch=(1, 2, 3, 8, 64), prompt_len=(128, 2048), output_len=(0, 5, 16, 17, 300))
MOE = SweepSpec(models=("qwen3-30b-a3b",), gpus=("h100-sxm",), tp=(1, 2, 4), dp=(1, 2), ep=(1, 2, 4),
                batch=(1, 4, 32), prompt_len=(256,), output_len=(7, 200))


@pytest.fixture(scope="module")
def dense():
    return run_sweep(DENSE)


@pytest.fixture(scope="module")
def moe():
    return run_sweep(MOE)


def _check_against_predict(table, i: int) -> None:
    r = table.row(i)
    p = energylens.predict(r["model"], r["gpu"], tp=r["tp"], pp=r["pp"], dp=r["dp"], ep=r["ep"], batch=r["batch"],
                           prompt_len=r["prompt_len"], output_len=r["output_len"])
    pairs = [(p.prefill.energy_j, r["prefill_energy_j"]), (p.prefill.latency_s, r["prefill_latency_s"]),
             (p.decode.energy_j, r["decode_energy_j"]), (p.decode.latency_s, r["decode_latency_s"]),
             (p.memory.required_bytes, r["required_bytes"])]
    for ph in ("prefill", "decode"):
        b = getattr(p, ph).breakdown
        pairs += [(b.compute_j, r[f"{ph}_compute_j"]), (b.memory_j, r[f"{ph}_memory_j"]),
                  (b.static_j, r[f"{ph}_static_j"]), (b.communication_j, r[f"{ph}_communication_j"]),
                  (b.idle_wait_j, r[f"{ph}_idle_wait_j"])]
    for want, got in pairs:
        assert got == pytest.approx(want, rel=1e-12, abs=1e-12), r
    assert r["fits"] == p.memory.fits


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_vectorised_equals_scalar_predict_dense(dense, data):
    _check_against_predict(dense, data.draw(st.integers(0, len(dense) - 1)))


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_vectorised_equals_scalar_predict_moe(moe, data):
    _check_against_predict(moe, data.draw(st.integers(0, len(moe) - 1)))


def test_moe_rows_with_and_without_expert_parallelism_match_predict(moe):
    # ep = 1 and ep > 1 derive different kernels (the all-to-all splits the dispatch fusion group)
    for ep in (1, 2):
        i = int(np.flatnonzero((moe["ep"] == ep) & (moe["tp"] == 2) & (moe["output_len"] == 200))[0])
        _check_against_predict(moe, i)


def test_moe_rows_of_every_expert_class_match_predict(moe):
    # one program per class: ep = 1, expert group inside the tp group (local dispatch, one all-reduce),
    # expert group across replicas (all-to-all); the grid mixes them, so it is evaluated in blocks
    for tp, dp, ep in ((2, 1, 2), (4, 2, 2), (4, 1, 4), (1, 2, 2), (2, 2, 4), (4, 2, 1)):
        i = int(np.flatnonzero((moe["tp"] == tp) & (moe["dp"] == dp) & (moe["ep"] == ep)
                               & (moe["output_len"] == 200) & (moe["batch"] == 32))[0])
        _check_against_predict(moe, i)


def test_hand_count_of_valid_rows(dense):
    # llama3-8b: 32 heads, 8 kv heads, f 14336, 32 layers -> tp 3 is invalid; batch must be a multiple of dp
    pairs = sum(1 for dp in DENSE.dp for b in DENSE.batch if b % dp == 0)  # (dp, batch) pairs that divide
    assert pairs == 5 + 3 + 2  # dp1: all 5; dp2: 2, 8, 64; dp4: 8, 64
    assert len(dense) == 4 * 2 * pairs * 2 * 5
    assert 3 not in set(dense["tp"].tolist())
    assert np.all(dense["batch"] % dense["dp"] == 0)
    assert np.array_equal(dense["num_gpus"], dense["tp"] * dense["pp"] * dense["dp"])


def test_no_nan_and_energy_is_the_sum_of_its_parts(dense):
    for k in dense.names:
        if dense[k].dtype.kind == "f":
            assert np.all(np.isfinite(dense[k])), k
    for ph in ("prefill", "decode"):
        parts = sum(dense[f"{ph}_{c}"] for c in ("compute_j", "memory_j", "static_j", "communication_j",
                                                 "idle_wait_j"))
        np.testing.assert_allclose(parts, dense[f"{ph}_energy_j"], rtol=1e-12)
        assert np.all(dense[f"{ph}_compute_j"] >= 0) and np.all(dense[f"{ph}_idle_wait_j"] >= 0)


def test_derived_columns(dense):
    t = dense
    has = t["output_len"] > 0
    np.testing.assert_allclose(t["tpot_s"][has], t["decode_latency_s"][has] / t["output_len"][has])
    assert np.all(t["decode_energy_j"][~has] == 0) and np.all(t["tpot_s"][~has] == 0)
    np.testing.assert_allclose(t["prefill_energy_per_token_j"], t["prefill_energy_j"] / (t["batch"] * t["prompt_len"]))
    np.testing.assert_allclose(t["request_energy_j"], t["prefill_energy_j"] + t["decode_energy_j"])


def test_monotonic_in_prompt_and_batch(dense):
    t = dense.filter((dense["tp"] == 2) & (dense["pp"] == 1) & (dense["dp"] == 1) & (dense["output_len"] == 300))
    for b in (1, 8):
        s = t.filter(t["batch"] == b).sort("prompt_len")
        assert np.all(np.diff(s["prefill_latency_s"]) > 0) and np.all(np.diff(s["decode_energy_j"]) > 0)
    s = t.filter(t["prompt_len"] == 2048).sort("batch")
    assert np.all(np.diff(s["decode_energy_j"]) > 0)  # more sequences cost more in total ...
    assert np.all(np.diff(s["decode_energy_per_token_j"]) < 0)  # ... and less per token (weights shared)


def test_chunking_does_not_change_the_table(dense):
    assert len(plan_chunks(DENSE, 100)) > 4
    small = run_sweep(DENSE, max_chunk_configs=100)
    for k in dense.names:
        assert np.array_equal(small[k], dense[k]), k


def test_constraints_flags():
    spec = SweepSpec(models=("llama3.1-8b",), gpus=("h100-sxm",), tp=(1, 2, 4), batch=(1, 256), prompt_len=(8192,),
                     output_len=(512,))
    from energylens.sweep.spec import Constraints

    c = Constraints(max_ttft_s=0.5, max_tpot_s=0.02, max_gpus=2)
    t = run_sweep(spec.with_overrides(constraints=c))
    assert np.array_equal(t["meets_slo"], (t["ttft_s"] <= 0.5) & (t["tpot_s"] <= 0.02))
    assert np.array_equal(t["within_budget"], t["num_gpus"] <= 2)
    assert np.array_equal(t["feasible"], t["meets_slo"] & t["within_budget"] & t["fits"])
    assert len(t.feasible()) == int(t["feasible"].sum())


def test_pareto_front_is_non_dominated(dense):
    t = dense.feasible()
    t = t.filter(t["output_len"] > 0)
    f = dense.pareto("decode-latency")
    assert len(f) >= 2 and np.all(np.diff(f["tpot_s"]) >= 0)
    obj = np.column_stack([t["tpot_s"], t["decode_energy_per_token_j"]])
    on = pareto_mask(obj)
    assert set(map(tuple, np.column_stack([f["tpot_s"], f["decode_energy_per_token_j"]]))) == set(map(tuple, obj[on]))
    per = dense.pareto("decode-latency", by=("prompt_len", "output_len"))
    assert len(per) >= len(f)
    thr = dense.pareto("decode-throughput")  # maximise tokens/s: the front's throughput rises with J/token
    assert np.all(np.diff(thr["decode_tokens_per_s"]) <= 0) or np.all(np.diff(thr["decode_energy_per_token_j"]) >= 0)


def test_spread_is_max_over_min(dense):
    s = dense.spread("decode_energy_per_token_j")["llama3-8b"]
    f = dense.feasible()
    v = f["decode_energy_per_token_j"][f["decode_energy_per_token_j"] > 0]
    assert s["spread"] == pytest.approx(v.max() / v.min()) and s["rows"] == v.size


def test_dense_model_ignores_ep_and_groups_that_cannot_run_are_skipped():
    spec = SweepSpec(models=("llama3-8b", "Qwen/Qwen3.5-27B"), gpus=("h100-sxm", "a100-sxm-80gb"), dtypes=("fp8",),
                     ep=(1, 4), output_len=(32,))
    t = run_sweep(spec)  # fp8 weights on A100: dequantised (weight-only) GEMMs, so both GPUs run
    assert set(t["gpu"].tolist()) == {"h100-sxm", "a100-sxm-80gb"} and set(t["ep"].tolist()) == {1}
    assert len(t.meta["skipped"]) == 2 and all("linear attention" in s for s in t.meta["skipped"])
    with pytest.raises(EnergyLensError):
        run_sweep(spec.with_overrides(models=("Qwen/Qwen3.5-27B",)))


def test_serving_columns_match_serving_module():
    from energylens.serving import serve_arrays

    spec = SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2), batch=(8, 64), prompt_len=(1024,),
                     output_len=(0, 256), serving=True)
    t = run_sweep(spec)
    m, g = energylens.load_model("llama3-8b"), energylens.load_gpu("h100-sxm")
    i = int(np.flatnonzero((t["tp"] == 2) & (t["batch"] == 64) & (t["output_len"] == 256))[0])
    ref = serve_arrays(m, g, energylens.Layout(tp=2), 64.0, 1024.0, 256.0)
    assert t["serve_energy_per_output_token_j"][i] == pytest.approx(float(ref.energy_per_output_token_j))
    assert t["serve_itl_s"][i] == pytest.approx(float(ref.decode_step_latency_s))
    assert np.all(t["serve_energy_per_output_token_j"][t["output_len"] == 0] == 0)
