"""validate --data reads the AIConfigurator silicon column format (closed-loop TTFT/TPOT)."""

import csv
import json

import pytest

from energylens.cli import main
from energylens.hardware import load_gpu
from energylens.models import load_model
from energylens.parallel.layout import Layout
from energylens.serving_load import serve_closed_loop_arrays
from energylens.validate_silicon import is_silicon_csv, run_assumption, validate_silicon_csv

HEADER = ["id", "model_path", "system", "precision", "mode", "isl", "osl", "gemm_quant_mode", "batch_size", "tp_size",
          "pp_size", "attention_dp_size", "moe_tp_size", "moe_ep_size", "silicon_ttft_ms", "silicon_tpot_ms"]
ROWS = [  # synthetic measurements (the format, not real data)
    ["a", "openai/gpt-oss-120b", "h200_sxm", "fp4", "agg", 1024, 1024, "nvfp4", 16, 2, 1, 1, 2, 1, 100.0, 10.0],
    ["b", "openai/gpt-oss-120b", "h200_sxm", "fp4", "agg", 8192, 1024, "nvfp4", 4, 2, 1, 1, 2, 1, 300.0, 8.0],
    ["c", "Qwen/Qwen3-32B", "h100_sxm", "", "agg", 1024, 128, "", 8, 2, 1, "", 1, 1, 150.0, 18.0],
    ["d", "Qwen/Qwen3-32B", "h100_sxm", "fp8", "disagg", 4000, 1000, "fp8", "", "", "", "", "", "", 500.0, 20.0],
    ["e", "openai/gpt-oss-120b", "b300_sxm", "fp4", "agg", 1024, 1024, "nvfp4", 4, 1, 1, 1, 1, 1, 50.0, 5.0],
    ["f", "example/unknown-model", "h100_sxm", "fp8", "agg", 1024, 1024, "fp8", 4, 1, 1, 1, 1, 1, 50.0, 5.0],
    ["g", "openai/gpt-oss-120b", "h100_sxm", "fp4", "agg", 1024, -5, "nvfp4", 4, 1, 1, 1, 1, 1, 50.0, 5.0],
    ["h", "Qwen/Qwen3-32B", "h100_sxm", "int4", "agg", 1024, 1024, "int4_wo", 4, 1, 1, 1, 1, 1, 50.0, 5.0],
]


@pytest.fixture()
def silicon_csv(tmp_path):
    p = tmp_path / "silicon.csv"
    with p.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        w.writerows(ROWS)
    return p


def test_rows_predicted_or_skipped_with_a_reason(silicon_csv):
    assert is_silicon_csv(silicon_csv)
    v = validate_silicon_csv(silicon_csv)
    status = {r.row["id"]: r for r in v.rows}
    # h: Qwen3-32B at int4 runs its published int4 variant (resolved offline, w4a16)
    assert [k for k, r in status.items() if r.status == "ok"] == ["a", "b", "c", "h"]
    assert "disaggregated" in status["d"].reason
    assert "b300_sxm" in status["e"].reason
    assert "unknown model" in status["f"].reason
    assert "osl" in status["g"].reason
    # the prediction is the closed-loop model of the row's deployment (16 clients starting together), a run
    # of the assumed requests_per_client x 16 requests
    rpc, spread = run_assumption()["requests_per_client"], run_assumption()["arrangement"] == "staggered"
    assert v.run["requests_per_client"] == rpc and "recalled" in v.run["source"]
    assert v.run["arrangement"] == run_assumption()["arrangement"]
    ref = serve_closed_loop_arrays(load_model("gpt-oss-120b"), load_gpu("h200"), Layout(tp=2), 16.0, 1024.0, 1024.0,
                                   num_requests=16.0 * rpc, staggered=spread)
    assert status["a"].predicted["ttft_s"] == pytest.approx(float(ref.ttft_s))
    assert status["a"].predicted["tpot_s"] == pytest.approx(float(ref.tpot_s))
    assert status["a"].error("tpot_s") == pytest.approx(float(ref.tpot_s) / 0.010 - 1)
    steady = validate_silicon_csv(silicon_csv, requests_per_client=float("inf"), staggered=False)
    assert steady.run["arrangement"] == "synchronised" and steady.run["steady_state"]
    ref = serve_closed_loop_arrays(load_model("gpt-oss-120b"), load_gpu("h200"), Layout(tp=2), 16.0, 1024.0, 1024.0)
    assert {r.row["id"]: r for r in steady.rows}["a"].predicted["ttft_s"] == pytest.approx(float(ref.ttft_s))
    one = validate_silicon_csv(silicon_csv, num_requests=1)  # fewer requests than clients: one wave of them
    ref = serve_closed_loop_arrays(load_model("gpt-oss-120b"), load_gpu("h200"), Layout(tp=2), 16.0, 1024.0, 1024.0,
                                   num_requests=16.0, staggered=spread)
    assert {r.row["id"]: r for r in one.rows}["a"].predicted["ttft_s"] == pytest.approx(float(ref.ttft_s))


@pytest.mark.parametrize("args", [["--requests-per-client", "0.5"], ["--requests-per-client", "nan"],
                                  ["--num-requests", "-3"], ["--num-requests", "inf"]])
def test_cli_refuses_bad_run_length(silicon_csv, capsys, args):
    assert main(["validate", "--data", str(silicon_csv), *args]) == 2
    err = capsys.readouterr().err
    assert "requests" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cli_json_rows(silicon_csv, capsys):
    assert main(["validate", "--data", str(silicon_csv), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["format"] == "aiconfigurator-silicon" and d["rows_total"] == len(ROWS)
    rows = {r["row"]: r for r in d["rows"]}
    assert sorted(rows) == list(range(len(ROWS)))
    assert rows[0]["predicted_ttft_s"] > 0 and rows[0]["predicted_tpot_s"] > 0
    assert rows[0]["measured_tpot_s"] == pytest.approx(0.010)
    assert rows[3]["status"] == "skipped" and rows[3]["reason"]
    assert d["tables"]["overall"]["all"]["n"] == 4
    assert main(["validate", "--data", str(silicon_csv), "--no-rows"]) == 0
    assert "TPOT" in capsys.readouterr().out


def test_memory_fraction_sensitivity(silicon_csv, capsys):
    """--gpu-memory-utilization (silicon data only) sets vLLM's memory fraction: more KV memory, the same
    prediction where memory does not limit; a bad value or ML.ENERGY data is refused (exit 2)."""
    base = {r.row["id"]: r for r in validate_silicon_csv(silicon_csv).ok}
    more = {r.row["id"]: r for r in validate_silicon_csv(silicon_csv, gpu_memory_utilization=0.95).ok}
    assert set(base) == set(more)
    for k in base:  # none of these rows is memory-limited at either fraction
        assert more[k].predicted["tpot_s"] == pytest.approx(base[k].predicted["tpot_s"])
    ref = serve_closed_loop_arrays(load_model("gpt-oss-120b"), load_gpu("h200"), Layout(tp=2), 16.0, 1024.0, 1024.0,
                                   gpu_memory_utilization=0.95, num_requests=16.0 * run_assumption()["requests_per_client"],
                                   staggered=run_assumption()["arrangement"] == "staggered")
    assert more["a"].predicted["ttft_s"] == pytest.approx(float(ref.ttft_s))
    assert main(["validate", "--data", str(silicon_csv), "--no-rows", "--gpu-memory-utilization", "0.95"]) == 0
    assert main(["validate", "--data", str(silicon_csv), "--gpu-memory-utilization", "1.5"]) == 2
    assert "gpu_memory_utilization" in capsys.readouterr().err
    assert main(["validate", "--gpu-memory-utilization", "0.95"]) == 2
    assert "silicon" in capsys.readouterr().err


def test_interval_coverage_tool_counts_rows_inside_the_plan_interval(silicon_csv, load_tool):
    """tools/silicon_interval_coverage.py: the fraction of rows whose measured TTFT/TPOT lie in the plan's range."""
    from energylens.intervals import factors

    mod = load_tool("silicon_interval_coverage")
    c = mod.coverage(silicon_csv)
    v = validate_silicon_csv(silicon_csv)
    inside = 0
    for r in v.ok:  # by hand, the same rule
        lo, hi, basis = factors(r.family, r.gpu, "decode_step_latency_s")
        assert lo < 1.0 < hi and "residual quantiles" in basis
        inside += lo * r.predicted["ttft_s"] <= r.measured["ttft_s"] <= hi * r.predicted["ttft_s"]
    assert c["rows"] == len(v.ok) == 4 and c["ttft_s"] == pytest.approx(inside / 4)
    assert factors("dense", "h100-sxm", "no_such_metric") is None
