"""Streamed sweeps: files, running fronts, spreads and top-k equal the in-memory table; big grids refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from energylens.cli import main
from energylens.errors import SpecError
from energylens.sweep import SweepSpec, read_csv, run_sweep
from energylens.sweep.guard import DEFAULT_MAX_TABLE_BYTES, estimated_bytes
from energylens.sweep.runner import plan_chunks
from energylens.sweep.stream import stream_sweep
from energylens.sweep.table import SweepTable

SPEC = SweepSpec(models=("llama3-8b", "qwen3-8b"), gpus=("h100-sxm",), tp=(1, 2, 4), pp=(1, 2), dp=(1, 2),
                 batch=(1, 4, 32), prompt_len=(256, 2048), output_len=(8, 200))
FRONTS = [("decode-latency", ("model", "gpu", "prompt_len", "output_len")), ("request-throughput", None)]
SPREADS = [("decode_energy_per_token_j", "model"), ("prefill_energy_per_token_j", ("model", "prompt_len"))]
BIG = SweepSpec(models=("llama3-70b",), gpus=("h100-sxm",), tp=(1, 2, 4, 8, 16, 32, 64, 128), pp=(1, 2, 4, 8),
                dp=(1, 2, 4, 8, 16, 32, 64), batch=tuple(2**i for i in range(13)),
                prompt_len=tuple(range(128, 65537, 128)), output_len=tuple(range(64, 4097, 64)))  # issue 19: 95 M


@pytest.fixture(scope="module")
def table():
    return run_sweep(SPEC)


def assert_same(a: SweepTable, b: SweepTable):
    assert a.names == b.names and len(a) == len(b)
    for k in a.names:
        assert np.array_equal(a[k], b[k]), k


def test_chunks_concatenate_in_canonical_order(table):
    chunks = plan_chunks(SPEC, 40)
    assert len(chunks) > 8
    from energylens.sweep.runner import evaluate_chunk

    assert_same(SweepTable.concat([evaluate_chunk(c) for c in chunks]), table)


@pytest.mark.parametrize("batch_rows", [None, 1])  # chunk fronts merged at the end / after every chunk
def test_stream_summary_equals_the_table(table, tmp_path, monkeypatch, batch_rows):
    if batch_rows is not None:
        monkeypatch.setattr("energylens.sweep.stream.FRONT_BATCH_ROWS", batch_rows)
    res = stream_sweep(SPEC, out=tmp_path / "t.csv", fronts=FRONTS, spreads=SPREADS, top_k=5,
                       max_chunk_configs=40)
    assert res.meta["chunks"] > 8
    assert res.summary.valid_configs == len(table)
    assert res.summary.feasible_configs == int(table["feasible"].sum())
    for name, by in FRONTS:
        assert_same(res.summary.front(name, by), table.pareto(name, by=by))
    for column, by in SPREADS:
        want = table.spread(column, by=by, rows=False)
        got = res.summary.spread(column, by)
        assert got == want and list(got) == list(want)
    f = table.feasible()
    f = f.filter(f["energy_per_output_token_j"] > 0)
    assert_same(res.summary.top, f.filter(np.argsort(f["energy_per_output_token_j"], kind="stable")[:5]))
    back = read_csv(tmp_path / "t.csv")
    feas = table.feasible()
    assert len(back) == len(feas)
    for k in ("tp", "pp", "dp", "batch", "prompt_len", "output_len"):
        assert np.array_equal(back[k], feas[k]), k
    assert np.array_equal(back["decode_energy_j"], feas["decode_energy_j"])  # floats round-trip exactly


def test_grouped_front_equals_one_front_per_group(table):
    by = ("model", "prompt_len", "output_len")
    got = table.pareto("decode-throughput", by=by)
    keys = sorted(set(zip(*(table[c].tolist() for c in by), strict=True)))
    parts = []
    for key in keys:
        sel = np.ones(len(table), dtype=bool)
        for c, v in zip(by, key, strict=True):
            sel &= table[c] == v
        parts.append(table.filter(sel).pareto("decode-throughput"))
    assert_same(got, SweepTable.concat([p for p in parts if len(p)]))


def test_parquet_row_groups(table, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    res = stream_sweep(SPEC, out=tmp_path / "t.parquet", write_all=True, max_chunk_configs=100)
    f = pq.ParquetFile(tmp_path / "t.parquet")
    assert f.metadata.num_row_groups == res.meta["chunks"] > 1
    back = f.read()
    assert back.num_rows == len(table)
    assert np.array_equal(back.column("decode_energy_j").to_numpy(), table["decode_energy_j"])
    assert back.column("model").to_pylist() == table["model"].tolist()


def test_big_grids_are_refused_up_front():
    assert BIG.size == 95_420_416 and estimated_bytes(BIG) > DEFAULT_MAX_TABLE_BYTES
    with pytest.raises(SpecError, match="--pareto-only"):
        run_sweep(BIG)
    with pytest.raises(SpecError, match="--out"):
        stream_sweep(BIG, keep_table=True)


def test_cli_refuses_big_grid_and_streams_pareto_only(capsys, tmp_path):
    rc = main(["sweep", "-m", "llama3-70b", "--tp", "1:128:x2", "--pp", "1,2,4,8", "--dp", "1:64:x2", "--batch",
               "1:4096:x2", "--prompt-len", "128:65536:128", "--output-len", "64:4096:64"])
    err = capsys.readouterr().err
    assert rc == 2 and "--pareto-only" in err and "Traceback" not in err
    front_csv = tmp_path / "front.csv"
    rc = main(["sweep", "-m", "llama3-8b", "--tp", "1,2", "--batch", "1:16:x2", "--prompt-len", "512,1024",
               "--output-len", "64", "--pareto-only", "--out", str(front_csv), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out)
    want = run_sweep(SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2), batch=(1, 2, 4, 8, 16),
                               prompt_len=(512, 1024), output_len=(64,)))
    fr = want.pareto("decode-latency", by=("model", "gpu", "prompt_len", "output_len"))
    assert d["front"]["size"] == len(fr) == len(read_csv(front_csv))
    assert d["valid_configs"] == len(want) and d["lowest_energy_per_output_token"]
    rc = main(["sweep", "-m", "llama3-8b", "--tp", "1,2", "--batch", "1:16:x2", "--output-len", "64",
               "--out", str(tmp_path / "all.csv"), "--all", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(read_csv(tmp_path / "all.csv")) == d["valid_configs"] == 10


def test_dask_stream_writes_partitioned_parts(table, tmp_path):
    dd = pytest.importorskip("dask.distributed")
    from energylens.distributed import stream_sweep_dask

    local = stream_sweep(SPEC, fronts=FRONTS, spreads=SPREADS, top_k=3, max_chunk_configs=100)
    with dd.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            dd.Client(cluster) as client:
        res = stream_sweep_dask(SPEC, out=tmp_path / "grid.csv", fronts=FRONTS, spreads=SPREADS, top_k=3,
                                client=client, max_chunk_configs=100)
    parts = sorted((tmp_path / "grid.csv").glob("part-*.csv"))
    assert len(parts) > 1
    back = SweepTable.concat([read_csv(p) for p in parts])
    assert np.array_equal(back["decode_latency_s"], table.feasible()["decode_latency_s"])
    for name, by in FRONTS:
        assert_same(res.summary.front(name, by), local.summary.front(name, by))
    assert res.summary.spread(*SPREADS[1]) == local.summary.spread(*SPREADS[1])
    assert_same(res.summary.top, local.summary.top)
