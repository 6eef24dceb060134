"""Regression tests for issue 18 (reliability): each reproducer of the issue, run in-process.

Every command goes through ``typer.testing.CliRunner`` on the app itself (errors must be one line and
exit code 2 there too, not only through ``energylens.cli.main``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import energylens
from energylens import checks
from energylens.cli import _load_commands, app, main
from energylens.errors import EnergyLensError, LayoutError, SpecError
from energylens.hardware.profile import load_gpu

_load_commands()
RUNNER = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
LLAMA8B = ROOT / "energylens/data/models/meta-llama__Meta-Llama-3-8B.json"


def cli(*args: str):
    res = RUNNER.invoke(app, list(args))
    return res.exit_code, res.stdout, res.stderr


def refused(*args: str, needle: str = "") -> str:
    rc, out, err = cli(*args)
    assert rc == 2, (rc, out[-400:], err[-400:])
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "is not valid" in lines[0], err
    assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ------------------------------------------------------------------------ uncaught tracebacks

def test_no_arguments_runs_predict_on_defaults():
    rc, out, _ = cli()
    assert rc == 0 and "Summary" in out
    assert main([]) == 0


def test_huge_integer_in_a_sweep_list():
    refused("sweep", "--tp", "9" * 300, needle="tp=")


def test_binary_csv_for_validate(tmp_path):
    junk = tmp_path / "junk.csv"
    junk.write_bytes(bytes(range(256)) * 8)
    refused("validate", "--data", str(junk), needle="UTF-8")


def test_validate_output_paths_checked_before_work():
    t0 = time.perf_counter()
    refused("validate", "--markdown", "/nonexistent/dir/v.md", needle="markdown")
    refused("validate", "--plot", "v.xyz", needle=".png")
    assert time.perf_counter() - t0 < 2.0  # refused before costing the rows


def test_overlong_gpu_name():
    refused("predict", "--gpu", "x" * 5000, needle="gpu=")
    refused("predict", "--model", "m" * 300 + ".json", needle="model")


def test_disagg_huge_budget():
    refused("disagg", "--max-gpus", "100000000", needle="max_gpus")
    refused("disagg", "--max-gpus", "1000000", needle="max_gpus")  # in range, but the pool search would be huge


def test_sweep_spec_with_thousands_of_nested_brackets(tmp_path):
    for field, depth in (("tp", 3000), ("models", 3000)):
        spec = tmp_path / f"{field}.yaml"
        body = {"models": ["llama3-8b"], "gpus": ["h100-sxm"]}
        text = yaml.safe_dump(body) + f"{field}: " + "[" * depth + "]" * depth + "\n"
        spec.write_text(text.replace(f"{field}: [llama3-8b]\n", "") if field == "models" else text)
        refused("sweep", "--spec", str(spec), needle=field)


def test_unreachable_dask_scheduler_fails_fast(monkeypatch):
    pytest.importorskip("dask.distributed")
    import energylens.distributed as dist

    monkeypatch.setattr(dist, "CONNECT_TIMEOUT_S", 0.5)
    t0 = time.perf_counter()
    refused("sweep", "--dask", "tcp://127.0.0.1:1", "--tp", "1", "--batch", "1", needle="dask")
    assert time.perf_counter() - t0 < 10.0


def test_config_json_with_infinity_and_huge_layers(tmp_path):
    cfg = json.loads(LLAMA8B.read_text())
    for key, value in (("num_key_value_heads", "Infinity"), ("num_hidden_layers", str(2**63)),
                       ("hidden_size", "1e400"), ("num_hidden_layers", "-3")):
        path = tmp_path / f"{key}.json"
        text = json.dumps({**cfg, key: 0}).replace(f'"{key}": 0', f'"{key}": {value}')
        path.write_text(text)
        with pytest.raises(SpecError, match=key):
            energylens.predict(str(path))
        refused("predict", "--model", str(path), needle=key)


@pytest.mark.parametrize("kw", [dict(pp=None), dict(dp={}), dict(tp="2"), dict(tp=True), dict(tp=2.0),
                                dict(sp="yes"), dict(gpus_per_node=1.5), dict(ep=[2]), dict(tp=-1),
                                dict(tp=10**12)])
def test_api_layout_arguments_of_the_wrong_type(kw):
    with pytest.raises(LayoutError):
        energylens.predict("llama3-8b", **kw)


def test_calibrate_on_records_with_zero_energies(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tests" / "measure"))
    from measure_synth import TRUTH, make_gpu, write_synthetic

    from energylens.calibration.records import calibrate

    rec = json.loads(write_synthetic(tmp_path / "rec.json", make_gpu(TRUTH)).read_text())
    for pt in rec["points"]:
        for k, v in list(pt.items()):
            if "energy" in k and isinstance(v, (int, float)):
                pt[k] = 0.0
    path = tmp_path / "zero.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(EnergyLensError, match="records"):
        calibrate([str(path)], make_gpu())


# ------------------------------------------------------------------------ NaN / inf with exit 0

def test_serve_overflowing_lengths_and_batches_are_refused():
    refused("serve", "--input-len", "1e300", needle="input_len")
    refused("serve", "--batch", "1e18", needle="batch")
    refused("serve", "--output-len", "nan", needle="output_len")


def _profile(tmp_path, **changes) -> str:
    data = load_gpu("h100-sxm").to_dict()
    for name, value in changes.items():
        data["quantities"][name]["value"] = value
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("changes, needle", [
    (dict(max_memory_efficiency=0), "max_memory_efficiency"),
    (dict(max_compute_efficiency_bf16=1.5), "max_compute_efficiency_bf16"),
    (dict(idle_power=900.0), "idle_power"),
    (dict(gemm_tile_m=100.5), "gemm_tile_m"),
    (dict(sm_count=0), "sm_count"),
    (dict(hbm_bandwidth=float("inf")), "hbm_bandwidth"),
])
def test_gpu_profile_sanity_checked_on_load(tmp_path, changes, needle):
    path = _profile(tmp_path, **changes)
    with pytest.raises(SpecError, match=needle):
        load_gpu(path)
    refused("predict", "--gpu", path, needle=needle)


def test_validate_json_without_predicted_rows_has_no_bare_nan(tmp_path):
    from energylens.validate import REQUIRED_COLUMNS

    row = {c: "1" for c in REQUIRED_COLUMNS}
    row.update(model_id="no/such-model", task="gpqa", gpu_model="H100")
    path = tmp_path / "skipped.csv"
    path.write_text(",".join(REQUIRED_COLUMNS) + "\n" + ",".join(row[c] for c in REQUIRED_COLUMNS) + "\n")
    rc, out, err = cli("validate", "--data", str(path), "--json")
    assert rc == 0, err
    data = json.loads(out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert data["rows_predicted"] == 0


# ------------------------------------------------------------------------ hangs / unbounded memory

@pytest.mark.parametrize("command", [("predict", "--model"), ("serve", "--model"), ("predict", "--gpu"),
                                     ("sweep", "--spec"), ("validate", "--data")])
def test_dev_zero_and_fifos_are_refused_without_reading(tmp_path, command):
    t0 = time.perf_counter()
    field = {"--model": "model", "--gpu": "gpu", "--spec": "spec", "--data": "data"}[command[1]]
    refused(*command, "/dev/zero", needle=field)
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    refused(*command, str(fifo))
    assert time.perf_counter() - t0 < 5.0


def test_oversized_files_are_refused(tmp_path):
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(checks.MAX_CONFIG_BYTES + 1)
    refused("predict", "--model", str(big), needle="at most")


def test_hundred_million_configuration_sweep_is_refused_up_front():
    from energylens.sweep import SweepSpec, run_sweep

    spec = SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], batch=list(range(1, 10_001)),
                     prompt_len=list(range(1, 10_001)))
    assert spec.size == 10**8
    t0 = time.perf_counter()
    with pytest.raises(SpecError, match="configurations"):
        run_sweep(spec)
    assert time.perf_counter() - t0 < 5.0
    refused("sweep", "--batch", "1:10000:1", "--prompt-len", "1:10000:1", "--tp", "1", needle="GB")


def test_sweep_size_budget_override(monkeypatch):
    from energylens.sweep import SweepSpec
    from energylens.sweep.guard import check_size

    spec = SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], batch=[1, 2, 4, 8])
    check_size(spec)
    monkeypatch.setenv("ENERGYLENS_SWEEP_MAX_BYTES", "1000")
    with pytest.raises(SpecError, match="at most 0 configurations"):
        check_size(spec)


# ------------------------------------------------------------------------ nonsense accepted

def test_serve_refuses_a_deployment_that_does_not_fit():
    line = refused("serve", "--model", "llama3.1-405b", "--batch", "256")
    assert "weights" in line and "GiB" in line


def test_serve_refuses_a_running_batch_chunked_prefill_cannot_sustain():
    # 8192-token budget, prompts of 2000 and outputs of 50 tokens: at most 8192 * 50 / 2050 = 199.8 requests
    line = refused("serve", "--tp", "4", "--batch", "256", "--input-len", "2000", "--output-len", "50",
                   needle="batch=256")
    assert "at most 199.8" in line
    rc, out, err = cli("serve", "--tp", "4", "--batch", "128", "--input-len", "2000", "--output-len", "50", "--json")
    assert rc == 0, err
    assert json.loads(out)["output_tokens_per_s"] > 0


def test_predict_top_must_be_non_negative():
    refused("predict", "--top", "-1", needle="top")


@pytest.mark.parametrize("pool", [",,,", "", "tp=2,tp=4", "tp=", "tp=1.5", "tp=99999999999"])
def test_disagg_pool_text_must_be_key_value(pool):
    refused("disagg", "--prefill", pool, needle="prefill")


def test_sweep_with_no_valid_configuration_says_why():
    rc, out, _ = cli("sweep", "--tp", "3", "--batch", "1")
    assert rc == 0 and "0 valid" in out and "tp=3" in out and "attention heads" in out
    rc, out, _ = cli("sweep", "--tp", "1", "--dp", "2", "--batch", "1", "--json")
    assert "dp=2" in " ".join(json.loads(out)["invalid_reasons"])


def test_error_values_print_as_plain_numbers():
    line = refused("predict", "--model", "llama3-70b", "--tp", "8", "--gpus-per-node", "3", needle="gpus_per_node=3 ")
    assert "3.0" not in line and "8.0" not in line
    line = refused("serve", "--batch", "1e7", needle="batch")
    assert "array(" not in line
    with pytest.raises(LayoutError) as exc:
        energylens.predict("llama3-8b", layout=energylens.Layout(tp=np.array([3, 5])))
    assert "array(" not in str(exc.value)


def test_checks_module_rules():
    assert checks.integer("tp", np.int64(4)) == 4
    for bad in (True, 2.0, "2", None, 0, 10**9):
        with pytest.raises(EnergyLensError):
            checks.integer("tp", bad, high=1024)
    assert checks.number("x", 2) == 2.0
    for bad in (float("nan"), float("inf"), -1.0, 0.0, True, "1"):
        with pytest.raises(EnergyLensError):
            checks.number("x", bad)
    assert checks.is_file("x" * 5000) is False and checks.is_file("a\x00b") is False
    with pytest.raises(EnergyLensError, match="NUL"):
        checks.text("model", "a\x00b")
    assert checks.json_safe({"a": float("nan"), "b": np.float64(1.5), "c": [np.int64(2)]}) == \
        {"a": None, "b": 1.5, "c": [2]}


@pytest.mark.parametrize("name", ["La\u00a5\U000f15b2/\u00ec", "org/" + "x" * 200, "a/b/c", "-x/y"])
def test_model_names_the_hub_would_refuse_are_our_error(name):
    """Found by the fuzz suite: a name with a slash went to huggingface_hub, whose HFValidationError escaped."""
    with pytest.raises(EnergyLensError):
        energylens.predict(name)
