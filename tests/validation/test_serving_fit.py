"""The serving-fit core (energylens/calibration/serving_fit.py): recovery, held-out checks, documents."""

import pytest

from energylens.calibration.serving_fit import ServingFit, noise_floor, run
from energylens.serving import ServingCoefficients
from energylens.validate import METRICS

# active fraction 0.2: far enough under the limit that no synthetic row's iteration is capped (at 0.35 the B200 MoE
# rows reach 960-980 W of 1000 W once fused-MoE padded tiles are charged, and a capped row cannot see the fraction)
TRUE = ServingCoefficients(8e-4, 4e-5, 0.2, routing_skew=0.8)
SKEWS = (0.0, 0.4, 0.8, 1.2)  # a short routing-skew grid holding the true value
MODELS = ("Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "Qwen/Qwen3-30B-A3B", "openai/gpt-oss-20b")


def _rows():
    """Synthetic measurements: the model's own predictions under known coefficients, two GPUs."""
    rows = []
    for mid in MODELS:
        for gpu in ("H100", "B200"):
            for batch in (8, 64, 256):
                rows.append({"model_id": mid, "task": "lm-arena-chat", "gpu_model": gpu, "num_gpus": "1",
                             "tensor_parallel": "1", "expert_parallel": "1", "data_parallel": "1",
                             "weight_precision": "bfloat16" if "gpt-oss" not in mid else "mxfp4",
                             "max_num_seqs": str(batch), "avg_batch_size": str(batch), "avg_output_len": "600",
                             "median_itl_ms": "1", "avg_power_watts": "1", "energy_per_token_joules": "1"})
    fit = ServingFit(rows, skews=SKEWS)
    fit.predict(TRUE)
    for r in fit.ok:
        rows[r.index].update({"median_itl_ms": str(r.predicted["decode_step_latency_s"] * 1e3),
                              "avg_power_watts": str(r.predicted["avg_power_w"]),
                              "energy_per_token_joules": str(r.predicted["energy_per_output_token_j"])})
    return rows


def test_fit_recovers_known_coefficients_and_held_out_checks_are_exact():
    rows = _rows()
    out = run(rows, data_name="synthetic", skews=SKEWS)
    fit = out["fit"]
    assert len(fit.ok) == len(rows)
    profile = {}
    table = fit.fit(fit.fittable, profile)
    assert table.pooled.active_power_fraction == pytest.approx(0.2, rel=1e-3)
    # the routing skew is recovered from the MoE rows (the loss is least at the true exponent)
    assert table.pooled.routing_skew == 0.8 and all(c.routing_skew == 0.8 for c in table.platforms.values())
    assert set(profile) == set(SKEWS) and min(profile, key=profile.get) == 0.8
    assert out["skew_profile"] == {0.0: pytest.approx(0.0, abs=1e-3)}  # the FIT half (8B, 14B) is dense
    # fitted on dense rows only (leave-family-out, MoE held out) the skew cannot be seen: uniform
    dense = fit.fit([r for r in fit.fittable if r.family == "dense"])
    assert dense.pooled.routing_skew == 0.0
    for c in (table.pooled, *table.platforms.values()):
        assert c.iteration_overhead_s == pytest.approx(8e-4, rel=1e-3)
        assert c.per_sequence_overhead_s == pytest.approx(4e-5, rel=1e-3)
    for m in METRICS:  # data made by the model form: every held-out check is (nearly) exact
        assert out["lomo"]["mape"][m] < 1e-3
        assert out["lofo"]["dense"][m] < 1e-3  # MoE rows fitted on dense ones cannot see the skew (below)
    assert out["lofo"]["moe"]["decode_step_latency_s"] > 1e-3  # uniform routing where the data is skewed
    assert set(out["lofo"]) == {"dense", "moe"} and set(out["lopo"]) == {"h100-sxm", "b200"}
    doc = out["coefficient_doc"]
    for name in ("per_sequence_overhead_s", "routing_skew"):
        assert {"value", "unit", "meaning", "fitted_on", "method"} <= set(doc["coefficients"][name])
    assert doc["coefficients"]["routing_skew"]["value"] == 0.0  # FIT half dense: no MoE row to see it
    assert set(out["interval_doc"]["cells"]) == {"*/*"}
    # no row fails the GPU-pacing screen here: the GPU-paced LOMO figures are the LOMO figures
    assert out["lomo_gpu_paced"]["all"]["n"] == len(rows) and set(out["lomo_gpu_paced"]) == {"all", "h100-sxm", "b200"}
    assert {m: out["lomo_gpu_paced"]["all"][m] for m in METRICS} == out["lomo"]["mape"]


def test_gpu_paced_lomo_leaves_out_only_the_screened_rows():
    rows = _rows()
    i = next(k for k, r in enumerate(rows) if r["gpu_model"] == "B200" and r["max_num_seqs"] == "64"
             and r["model_id"] == "Qwen/Qwen3-8B")
    rows[i]["median_itl_ms"] = str(float(rows[i]["median_itl_ms"]) * 10)  # slower than the H100 run: host-paced
    out = run(rows, data_name="synthetic", skews=(0.8,), floor=True)
    assert [r.index for r in out["screened"]] == [i]
    # the per-(model, GPU) floor: every row scored, fitted on the paced rows only, at the fitted routing skew
    fit = out["fit"]
    assert {r.index for r in out["floor"]} == {r.index for r in fit.ok}
    fitted_rows, skews = set(), set()
    residuals = fit.residuals

    def spy(coeffs, rows):
        fitted_rows.update(r.index for r in rows)
        skews.add(coeffs.routing_skew)
        return residuals(coeffs, rows)

    fit.residuals = spy
    noise_floor(fit, 0.8)
    assert fitted_rows == {r.index for r in fit.ok} - {i} and skews == {0.8}
    paced = out["lomo_gpu_paced"]
    assert paced["all"]["n"] == len(rows) - 1 and paced["b200"]["n"] == len(rows) // 2 - 1
    lomo_rows = out["lomo"]["rows"]
    bad = next(r for r in lomo_rows if r.index == i)
    m = "decode_step_latency_s"
    n = len(lomo_rows)
    # the screened row's error is the only difference between the two means
    assert paced["all"][m] * (n - 1) == pytest.approx(out["lomo"]["mape"][m] * n
                                                       - abs(bad.predicted[m] / bad.measured[m] - 1))
    assert out["coefficient_doc"]["mape_percent"]["leave_one_model_out_gpu_paced_rows"]["all"][m] == \
        pytest.approx(100 * paced["all"][m], abs=0.01)


def test_input_len_override_moves_the_rows():
    rows = _rows()[:3]
    a, b = ServingFit(rows), ServingFit(rows, {"lm-arena-chat": 2000.0})
    assert a.ok[0].input_len == 400.0 and b.ok[0].input_len == 2000.0


def test_bias_balanced_router_is_costed_uniform_at_every_skew():
    """The skew profile re-costs the MoE rows at each skew, except a router that balances expert load with a
    learned bias (DeepSeek-V3 ``noaux_tc``): its rows keep the uniform costing, so the skew is fitted on the
    other MoE models only; validation costs it uniform whatever skew the coefficients carry."""
    from energylens.validate import validate_rows

    def row(mid, gpu, n, prec):
        return {"model_id": mid, "task": "gpqa", "gpu_model": gpu, "num_gpus": str(n), "tensor_parallel": "1",
                "expert_parallel": str(n), "data_parallel": "1", "weight_precision": prec, "max_num_seqs": "32",
                "avg_batch_size": "32", "avg_output_len": "2000", "median_itl_ms": "20", "avg_power_watts": "5000",
                "energy_per_token_joules": "3"}
    rows = [row("deepseek-ai/DeepSeek-V3.1", "B200", 8, "fp8"), row("openai/gpt-oss-20b", "B200", 1, "mxfp4")]
    fit = ServingFit(rows, skews=(0.0, 1.0))
    ds, oss = (next(k for k in fit.groups if k[0] == mid) for mid in ("deepseek-ai/DeepSeek-V3.1", "openai/gpt-oss-20b"))
    assert fit.parts_at(1.0)[ds] is fit.parts_at(0.0)[ds]  # not re-costed
    assert fit.parts_at(1.0)[oss].mean.time_s < fit.parts_at(0.0)[oss].mean.time_s  # skewed: fewer experts read
    skewed = ServingCoefficients(routing_skew=1.0)
    a = validate_rows(rows, coefficients=skewed).ok
    b = validate_rows(rows, coefficients=ServingCoefficients()).ok
    assert a[0].predicted == b[0].predicted  # DeepSeek: uniform either way
    assert a[1].predicted["decode_step_latency_s"] < b[1].predicted["decode_step_latency_s"]  # gpt-oss follows the skew
