"""The plan's vectorised search: layouts of one program costed together and power limits sharing their clock
levels give the rows of the per-layout, per-limit closed loop, bit for bit."""

import numpy as np
import pytest

import energylens
from energylens.parallel.layout import Layout
from energylens.pipeline import prepare
from energylens.plan import plan
from energylens.serving_load import serve_closed_loop_arrays

FIGS = ("ttft_s", "ttft_p90_s", "tpot_s", "tpot_p90_s", "energy_per_output_token_j", "output_tokens_per_s_per_gpu",
        "avg_power_w")


def _one(model, gpu, row, i, o, power_limit_w=None):
    m, g = prepare(model, gpu, None, power_limit_w=power_limit_w)
    arr = serve_closed_loop_arrays(m, g, Layout(tp=row["tp"], pp=row["pp"], dp=row["dp"], ep=row["ep"]),
                                   row["concurrency"], i, o, staggered=True)
    return {k: float(np.asarray(getattr(arr, k)).reshape(-1)[0]) for k in FIGS}


@pytest.mark.parametrize("model,gpu,max_gpus", [("llama3.1-8b", "h100-sxm", 8), ("qwen3-30b-a3b", "b200", 8)])
def test_rows_equal_the_closed_loop_of_each_layout(model, gpu, max_gpus):
    res = plan(model, gpu, max_gpus=max_gpus, input_len=700, output_len=300, concurrency=[1, 6, 48, 300])
    layouts = {(r["tp"], r["pp"], r["dp"], r["ep"]) for r in res.all_rows}
    assert len(layouts) >= 4  # several layouts per vectorised call
    for r in res.all_rows[:: max(1, len(res.all_rows) // 12)]:
        ref = _one(model, gpu, r, 700.0, 300.0)
        for k in FIGS:
            assert r[k] == pytest.approx(ref[k], rel=1e-12, abs=0.0), (k, r)


def test_power_limits_share_clock_levels_and_equal_separate_runs():
    m, g = prepare("llama3.1-8b", "h100-sxm", None, power_limit_w=300.0)
    lay = Layout(tp=2)
    both = serve_closed_loop_arrays(m, g, lay, np.array([4.0, 64.0]), 512.0, 512.0, staggered=True,
                                    limits_w=[300.0, 450.0])
    for limit, got in zip((300.0, 450.0), both, strict=True):
        _, gl = prepare("llama3.1-8b", "h100-sxm", None, power_limit_w=limit)
        ref = serve_closed_loop_arrays(m, gl, lay, np.array([4.0, 64.0]), 512.0, 512.0, staggered=True)
        for k in FIGS:
            np.testing.assert_array_equal(getattr(got, k), getattr(ref, k))
    assert np.all(both[0].avg_power_w / both[0].num_gpus <= 300.0 * (1 + 1e-9))


def test_plan_power_limit_rows_equal_a_single_limit_plan():
    kw = dict(max_gpus=2, input_len=512, output_len=512, concurrency=[8, 64])
    many = plan("llama3.1-8b", "h100-sxm", power_limits=(None, 300.0, 450.0), **kw)
    one = plan("llama3.1-8b", "h100-sxm", power_limits=(450.0,), **kw)
    pick = [r for r in many.all_rows if r["power_limit_w"] == 450.0]
    assert len(pick) == len(one.all_rows) > 0
    for a, b in zip(pick, one.all_rows, strict=True):
        assert all(a[k] == b[k] for k in FIGS)
    assert {r["power_limit_w"] for r in many.all_rows} == {700.0, 300.0, 450.0}


def test_unused_gpu_profile_is_untouched():
    assert energylens.load_gpu("h100-sxm").operating is None
