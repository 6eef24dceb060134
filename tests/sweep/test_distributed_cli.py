"""The same sweep on a local Dask cluster, and the ``sweep`` / ``disagg`` commands."""

from __future__ import annotations

import json

import numpy as np
import pytest

from energylens.cli import main
from energylens.sweep import SweepSpec, run_sweep

SPEC = SweepSpec(models=("llama3-8b", "qwen3-8b"), gpus=("h100-sxm",), tp=(1, 2, 4), dp=(1, 2),
                 batch=(1, 8, 32), prompt_len=(256, 1024), output_len=(8, 128))


def test_dask_local_cluster_equals_local_run():
    dd = pytest.importorskip("dask.distributed")
    from energylens.distributed import run_sweep_dask

    local = run_sweep(SPEC)
    with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            dd.Client(cluster) as client:
        seen = []
        remote = run_sweep_dask(SPEC, client=client, max_chunk_configs=50, progress=lambda d, n: seen.append(d))
    assert remote.meta["chunks"] > 2 and seen[-1] == remote.meta["chunks"]
    assert remote.names == local.names and len(remote) == len(local)
    for k in local.names:
        assert np.array_equal(remote[k], local[k]), k


def run(capsys, *args):
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_sweep_command_json_out_and_plot(capsys, tmp_path):
    csv = tmp_path / "t.csv"
    png = tmp_path / "f.png"
    rc, out, err = run(capsys, "sweep", "--model", "llama3-8b", "--tp", "1,2", "--batch", "1:16:x2",
                       "--prompt-len", "512", "--output-len", "64,128", "--max-tpot-s", "0.02", "--out", str(csv),
                       "--plot", str(png), "--json")
    assert rc == 0, err
    d = json.loads(out)
    assert d["grid_configs"] == 2 * 5 * 2 and d["valid_configs"] == 20
    assert 0 < d["feasible_configs"] <= 20 and d["front"]["rows"]
    assert all(r["tpot_s"] <= 0.02 for r in d["front"]["rows"])
    assert d["spread"]["decode"]["llama3-8b"]["spread"] > 1
    assert csv.read_text().count("\n") == d["feasible_configs"] + 1
    assert png.stat().st_size > 10_000


def test_sweep_command_spec_file_and_tables(capsys, tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("models: [llama3-8b]\ngpus: [h100-sxm]\ntp: [1, 2]\nbatch: [1, 8]\noutput_len: [32]\n")
    rc, out, _ = run(capsys, "sweep", "--spec", str(spec), "--pp", "1,2", "--top", "3")
    assert rc == 0 and "Pareto front" in out and "spread" in out


@pytest.mark.parametrize("args,needle", [
    (["sweep", "--tp", "1,x"], "tp"),
    (["sweep", "--front", "nope"], "front"),
    (["sweep", "--sp", "maybe"], "sp"),
    (["sweep", "--out", "t.xlsx", "--batch", "1"], ".csv or .parquet"),
    (["disagg", "--prefill", "tq=2"], "prefill"),
])
def test_bad_arguments_are_one_line_errors(capsys, args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, *args)
    assert rc == 2 and needle in err and "Traceback" not in err


def test_disagg_command(capsys):
    rc, out, _ = run(capsys, "disagg", "--model", "llama3-8b", "--colocated", "tp=1", "--prefill", "tp=1",
                     "--decode", "tp=1", "-c", "8,32", "--max-gpus", "4", "--json")
    assert rc == 0
    d = json.loads(out)
    assert len(d["energy_ratio"]) == 2 and d["disaggregated"]["num_gpus"][0] <= 4
    rc, out, _ = run(capsys, "disagg", "--model", "llama3-8b", "--colocated", "tp=1", "--prefill", "tp=1",
                     "--decode", "tp=1", "-c", "8", "--max-gpus", "4")
    assert rc == 0 and "co-located" in out and "KV transfer" in out
