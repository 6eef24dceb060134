"""The GPU-pacing screen: model-free, uses measured columns and datasheet numbers only; screened rows are
scored but never fitted on."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from energylens.validate import (
    SCREEN_BATCH_TOLERANCE,
    data_file,
    not_gpu_limited,
    prepare_rows,
    read_rows,
    shipped_dev_csv,
)

BASE = {
    "model_id": "Qwen/Qwen3-8B", "task": "gpqa", "num_gpus": "1", "tensor_parallel": "1", "expert_parallel": "1",
    "data_parallel": "1", "weight_precision": "bfloat16", "max_num_seqs": "16", "avg_batch_size": "16",
    "avg_output_len": "8000", "avg_power_watts": "400", "energy_per_token_joules": "0.5",
}


def run(gpu: str, itl_ms: float, batch: float = 16.0, **kw) -> dict:
    return {**BASE, "gpu_model": gpu, "median_itl_ms": str(itl_ms), "avg_batch_size": str(batch), **kw}


def test_faster_gpu_slower_run_is_flagged_and_only_it():
    rows = [run("H100", 12.0), run("B200", 37.0)]
    out = not_gpu_limited(rows)
    assert list(out) == [1]
    assert "B200" in out[1] and "H100" in out[1] and "37.0" in out[1] and "12.0" in out[1]


def test_faster_gpu_faster_run_is_not_flagged():
    assert not_gpu_limited([run("H100", 12.0), run("B200", 6.0)]) == {}


def test_equal_itl_is_not_flagged():
    assert not_gpu_limited([run("H100", 12.0), run("B200", 12.0)]) == {}


def test_same_gpu_is_never_compared():
    assert not_gpu_limited([run("H100", 12.0), run("H100", 40.0)]) == {}


@pytest.mark.parametrize("field,value", [("max_num_seqs", "32"), ("tensor_parallel", "2"), ("expert_parallel", "2"),
                                         ("data_parallel", "2"), ("task", "lm-arena-chat"),
                                         ("weight_precision", "fp8"), ("model_id", "Qwen/Qwen3-14B")])
def test_runs_of_different_configurations_are_not_compared(field, value):
    assert not_gpu_limited([run("H100", 12.0), run("B200", 37.0, **{field: value})]) == {}


def test_one_faster_gpu_against_two_slower_ones_at_tp2():
    # one B200 (8.0 TB/s, 2.25 PFLOP/s) has more than two H100s together (6.7 TB/s, 1.98 PFLOP/s) and no
    # all-reduce: a longer ITL there is not GPU-paced; the reason names both deployments
    two_h100 = run("H100", 16.7, num_gpus="2", tensor_parallel="2")
    out = not_gpu_limited([two_h100, run("B200", 44.1)])
    assert list(out) == [1] and "1 x B200 at TP 1 against 2 x H100 at TP 2" in out[1]
    assert not_gpu_limited([two_h100, run("B200", 12.0)]) == {}


@pytest.mark.parametrize("b200,h100", [
    ({"num_gpus": "1", "tensor_parallel": "1"}, {"num_gpus": "4", "tensor_parallel": "4"}),  # 4 H100s: 13.4 TB/s
    ({"num_gpus": "2", "tensor_parallel": "2"}, {"num_gpus": "1", "tensor_parallel": "1"}),  # more GPUs, more TP
    ({"num_gpus": "2", "tensor_parallel": "2"}, {"num_gpus": "2", "tensor_parallel": "1"}),  # more TP (all-reduce)
])
def test_deployments_not_at_least_as_fast_are_not_compared(b200, h100):
    assert not_gpu_limited([run("H100", 12.0, **h100), run("B200", 37.0, **b200)]) == {}


def test_larger_batch_on_the_faster_gpu_is_not_flagged():
    # the faster GPU (more memory) held more running requests: a longer ITL is then legitimate
    assert not_gpu_limited([run("H100", 12.0, 16.0), run("B200", 13.0, 16.0 * SCREEN_BATCH_TOLERANCE * 1.01)]) == {}
    assert list(not_gpu_limited([run("H100", 12.0, 16.0), run("B200", 13.0, 16.0 * SCREEN_BATCH_TOLERANCE)])) == [1]


def test_unknown_gpu_or_bad_numbers_are_ignored_not_raised():
    rows = [run("H100", 12.0), run("NOPE-GPU", 37.0), run("B200", float("nan")), {**run("B200", 30.0), "avg_batch_size": ""}]
    assert not_gpu_limited(rows) == {}


@settings(max_examples=40, deadline=None)
@given(a=st.floats(0.5, 500.0), b=st.floats(0.5, 500.0))
def test_at_most_one_of_a_pair_is_flagged_and_only_the_faster_gpu(a, b):
    out = not_gpu_limited([run("H100", a), run("B200", b)])
    assert set(out) <= {1}
    assert (1 in out) == (b > a)


def test_screen_marks_rows_in_prepare_rows_and_is_prediction_free():
    rows = [run("H100", 12.0), run("B200", 37.0)]
    results, _, _ = prepare_rows(rows)
    assert [bool(r.not_gpu_limited) for r in results] == [False, True]
    assert all(r.status == "ok" for r in results)  # screened rows are still predicted and scored


def test_shipped_fit_leaves_screened_rows_out_and_records_them():
    rows = read_rows(shipped_dev_csv())
    screened = not_gpu_limited(rows)
    doc = yaml.safe_load(data_file("serving_coefficients.yaml").read_text())
    recorded = {e["row"] for e in doc["not_gpu_paced"]["rows"]}
    results, _, _ = prepare_rows(rows)
    assert recorded == {i for i in screened if results[i].status == "ok"}
    assert recorded  # the shipped development data has such runs
    n_fit = len([r for r in results if r.status == "ok" and not r.not_gpu_limited
                 and r.row["model_id"] in doc["split"]["fit_models"]])
    assert f"({n_fit} supported rows" in doc["coefficients"]["iteration_overhead_s"]["fitted_on"]


def test_fit_tool_problem_excludes_screened_rows():
    from energylens.calibration.serving_fit import ServingFit

    prob = ServingFit([run("H100", 12.0), run("B200", 37.0), run("B200", 8.0, max_num_seqs="8")])
    assert len(prob.ok) == 3
    assert [r.index for r in prob.fittable] == [0, 2]


def test_fit_tool_fits_one_overhead_pair_per_platform_and_a_shared_fraction():
    from energylens.calibration import serving_fit

    rows = [run("H100", 12.0), run("H100", 20.0, max_num_seqs="8"), run("B200", 8.0, max_num_seqs="8"),
            run("B200", 9.0)]
    prob = serving_fit.ServingFit(rows)
    table = prob.fit(prob.fittable)
    assert set(table.platforms) == {r.gpu for r in prob.fittable}
    fractions = {c.active_power_fraction for c in table.platforms.values()} | {table.pooled.active_power_fraction}
    assert len(fractions) == 1 and 0.0 <= fractions.pop() <= 1.0
    for c in (table.pooled, *table.platforms.values()):
        assert c.iteration_overhead_s >= 0 and c.per_sequence_overhead_s >= 0
    flat = serving_fit.flat(table)
    assert set(flat) == {"pooled", *table.platforms}
