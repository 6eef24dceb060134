"""The serving-fit core (energylens/calibration/serving_fit.py): recovery, held-out checks, documents."""

import pytest

from energylens.calibration.serving_fit import ServingFit, run
from energylens.serving import ServingCoefficients
from energylens.validate import METRICS

TRUE = ServingCoefficients(8e-4, 4e-5, 0.35)
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
    fit = ServingFit(rows)
    fit.predict(TRUE)
    for r in fit.ok:
        rows[r.index].update({"median_itl_ms": str(r.predicted["decode_step_latency_s"] * 1e3),
                              "avg_power_watts": str(r.predicted["avg_power_w"]),
                              "energy_per_token_joules": str(r.predicted["energy_per_output_token_j"])})
    return rows


def test_fit_recovers_known_coefficients_and_held_out_checks_are_exact():
    rows = _rows()
    out = run(rows, data_name="synthetic")
    fit = out["fit"]
    assert len(fit.ok) == len(rows)
    table = fit.fit(fit.fittable)
    assert table.pooled.active_power_fraction == pytest.approx(0.35, rel=1e-3)
    for c in (table.pooled, *table.platforms.values()):
        assert c.iteration_overhead_s == pytest.approx(8e-4, rel=1e-3)
        assert c.per_sequence_overhead_s == pytest.approx(4e-5, rel=1e-3)
    for m in METRICS:  # data made by the model form: every held-out check is (nearly) exact
        assert out["lomo"]["mape"][m] < 1e-3
        assert all(v[m] < 1e-3 for v in out["lofo"].values())
    assert set(out["lofo"]) == {"dense", "moe"} and set(out["lopo"]) == {"h100-sxm", "b200"}
    doc = out["coefficient_doc"]
    assert {"value", "unit", "meaning", "fitted_on", "method"} <= set(doc["coefficients"]["per_sequence_overhead_s"])
    assert set(out["interval_doc"]["cells"]) == {"*/*"}


def test_input_len_override_moves_the_rows():
    rows = _rows()[:3]
    a, b = ServingFit(rows), ServingFit(rows, {"lm-arena-chat": 2000.0})
    assert a.ok[0].input_len == 400.0 and b.ok[0].input_len == 2000.0
