"""``validate``: every row predicted or skipped with a reason, MAPE and coverage by hand, the CLI."""

import csv
import json
import math
import time

import numpy as np
import pytest

from energylens.cli import main
from energylens.errors import SpecError
from energylens.intervals import interval_for
from energylens.validate import (
    METRICS,
    REQUIRED_COLUMNS,
    load_assumptions,
    read_rows,
    shipped_dev_csv,
    validate_csv,
)

ROW = {
    "model_id": "Qwen/Qwen3-8B", "task": "lm-arena-chat", "gpu_model": "H100", "num_gpus": "1",
    "tensor_parallel": "1", "expert_parallel": "1", "data_parallel": "1", "weight_precision": "bfloat16",
    "architecture": "Dense Transformer", "max_num_seqs": "64", "avg_batch_size": "63.9", "avg_output_len": "645",
    "median_itl_ms": "13.95", "avg_power_watts": "514", "energy_per_token_joules": "0.1192",
}


def write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(ROW))
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


@pytest.fixture(scope="module")
def dev():
    t0 = time.perf_counter()
    v = validate_csv(shipped_dev_csv())
    return v, time.perf_counter() - t0


def test_every_shipped_row_is_predicted_or_skipped_with_a_reason(dev):
    v, seconds = dev
    assert len(v.rows) == 287 == len(read_rows(shipped_dev_csv()))
    assert len(v.ok) + len(v.skipped) == 287
    assert sorted(r.index for r in v.rows) == list(range(287))
    assert all(r.reason for r in v.skipped)
    assert len(v.ok) >= 115  # all dense Qwen3 and Gemma 3 rows at least
    assert seconds < 60


def test_mape_and_coverage_match_hand_computation(dev):
    v, _ = dev
    raw = read_rows(shipped_dev_csv())
    for m, (col, factor) in METRICS.items():
        errs = [abs(r.predicted[m] / (float(raw[r.index][col]) * factor) - 1) for r in v.ok]
        assert v.mape()[m] == pytest.approx(np.mean(errs))
        cov = [r.interval[m]["low"] <= r.measured[m] <= r.interval[m]["high"] for r in v.ok if m in r.interval]
        assert v.coverage()[m] == pytest.approx(np.mean(cov))
    tables = v.tables()
    assert sum(d["n"] for d in tables["GPU"].values()) == len(v.ok)
    assert tables["overall"]["all"]["mape"] == v.mape()


def test_measured_columns_are_read_in_si_units(dev):
    v, _ = dev
    rows = read_rows(shipped_dev_csv())
    r = v.ok[0]
    raw = rows[r.index]
    assert r.measured["decode_step_latency_s"] == pytest.approx(float(raw["median_itl_ms"]) / 1e3)
    assert r.measured["avg_power_w"] == pytest.approx(float(raw["avg_power_watts"]))


def test_skipped_rows_name_their_reason(tmp_path):
    rows = [
        ROW,
        {**ROW, "model_id": "acme/NoSuchModel-7B"},
        {**ROW, "tensor_parallel": "3", "num_gpus": "3"},
        {**ROW, "task": "poetry"},
        {**ROW, "avg_power_watts": "nan"},
        {**ROW, "gpu_model": "TPU-v5"},
        {**ROW, "weight_precision": "int3"},
    ]
    v = validate_csv(write_csv(tmp_path / "x.csv", rows))
    assert [r.status for r in v.rows] == ["ok"] + ["skipped"] * 6
    reasons = [r.reason for r in v.rows[1:]]
    assert "unknown model" in reasons[0]
    assert "layout" in reasons[1] and "tp" in reasons[1]
    assert "poetry" in reasons[2] and "assumption" in reasons[2]
    assert "avg_power_watts" in reasons[3]
    assert "GPU" in reasons[4]
    assert "int3" in reasons[5]


def test_missing_columns_raise(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("model_id,task\nQwen/Qwen3-8B,gpqa\n")
    with pytest.raises(SpecError) as exc:
        read_rows(p)
    assert "median_itl_ms" in str(exc.value)
    with pytest.raises(SpecError):
        read_rows(tmp_path / "missing.csv")


def test_interval_from_quantiles_by_hand():
    from energylens.models import load_model

    table = {"cells": {"dense/h100-sxm": {"avg_power_w": {"n": 10, "quantiles": {"0.1": -0.2, "0.9": 0.1}}}}}
    iv = interval_for(load_model("qwen3-8b"), "h100-sxm", {"avg_power_w": 500.0}, 0.8, table)
    assert iv["avg_power_w"]["low"] == pytest.approx(500 * math.exp(-0.1))
    assert iv["avg_power_w"]["high"] == pytest.approx(500 * math.exp(0.2))
    # too few rows in a cell: no interval from it (and no fallback cell here)
    table["cells"]["dense/h100-sxm"]["avg_power_w"]["n"] = 3
    assert interval_for(load_model("qwen3-8b"), "h100-sxm", {"avg_power_w": 500.0}, 0.8, table) == {}
    with pytest.raises(SpecError):
        interval_for(load_model("qwen3-8b"), "h100-sxm", {"avg_power_w": 500.0}, 0.7, table)


def test_assumption_table_covers_the_benchmark_tasks():
    table = load_assumptions()
    for task in ("lm-arena-chat", "gpqa", "sourcegraph-fim"):
        assert table[task]["input_len"] > 0 and table[task]["source"]


def test_shipped_coefficients_are_documented():
    import yaml

    from energylens.serving import COEFFICIENT_NAMES, data_file

    doc = yaml.safe_load(data_file("serving_coefficients.yaml").read_text())
    for name in COEFFICIENT_NAMES:
        entry = doc["coefficients"][name]
        assert {"value", "unit", "fitted_on", "method"} <= set(entry)
        assert entry["value"] >= 0
    assert set(doc["split"]["fit_models"]).isdisjoint(doc["split"]["test_models"])
    from energylens.serving import OVERHEAD_NAMES

    for gpu, entries in doc["platforms"].items():
        assert set(entries) == set(OVERHEAD_NAMES), gpu
        for entry in entries.values():
            assert {"value", "unit", "fitted_on", "method"} <= set(entry) and entry["value"] >= 0


def test_cli_validate_json(tmp_path, capsys):
    p = write_csv(tmp_path / "two.csv", [ROW, {**ROW, "model_id": "acme/Nope"}])
    assert main(["validate", "--data", str(p), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows_total"] == 2 and out["rows_skipped"] == 1
    first, second = out["rows"]
    for col in REQUIRED_COLUMNS[:11]:
        assert col in first
    assert first["status"] == "ok" and first["predicted_avg_power_w"] > 0
    assert second["status"] == "skipped" and second["reason"]


def test_cli_validate_tables_plot_markdown(tmp_path, capsys):
    p = write_csv(tmp_path / "one.csv", [ROW])
    png, md = tmp_path / "v.png", tmp_path / "v.md"
    assert main(["validate", "--data", str(p), "--plot", str(png), "--markdown", str(md)]) == 0
    out = capsys.readouterr().out
    assert "MAPE" in out and png.stat().st_size > 1000 and "| overall |" in md.read_text()


def test_cli_serve_json(capsys):
    assert main(["serve", "--model", "Qwen/Qwen3-14B", "--gpu", "b200", "--num-gpus", "1", "--batch", "32",
                 "--input-len", "100", "--output-len", "600", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("decode_step_latency_s", "avg_power_w", "energy_per_output_token_j", "interval"):
        assert k in out
    assert main(["serve", "--model", "qwen3-8b", "--task", "gpqa", "--output-len", "7000"]) == 0
    assert main(["serve", "--model", "qwen3-8b", "--task", "poetry"]) == 2
    assert main(["serve", "--model", "qwen3-8b", "--batch", "0"]) == 2
