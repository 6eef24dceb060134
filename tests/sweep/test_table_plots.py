"""Columnar table I/O and the Matplotlib figures."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from energylens.errors import EnergyLensError, SpecError
from energylens.sweep import SweepSpec, SweepTable, read_csv, run_sweep


@pytest.fixture(scope="module")
def table():
    return run_sweep(SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2), pp=(1, 2), dp=(1, 2),
                               batch=(1, 4, 16), prompt_len=(512, 2048), output_len=(64, 256)))


def test_csv_round_trip(table, tmp_path):
    p = table.write(tmp_path / "t.csv")
    back = read_csv(p)
    assert back.names == table.names and len(back) == len(table)
    for k in table.names:
        if table[k].dtype.kind == "f":
            np.testing.assert_array_equal(back[k], table[k])  # shortest round-trip repr: exact
        else:
            assert back[k].tolist() == table[k].tolist(), k


def test_records_filter_sort(table):
    rec = table.to_records()
    assert rec.shape == (len(table),) and rec["tp"].tolist() == table["tp"].tolist()
    s = table.sort("decode_energy_j", descending=True)
    assert np.all(np.diff(s["decode_energy_j"]) <= 0)
    assert len(table.filter(table["tp"] == 2)) == len(table) // 2
    assert "SweepTable(" in repr(table)
    with pytest.raises(SpecError, match="column"):
        table["nope"]
    with pytest.raises(ValueError):
        SweepTable({"a": np.zeros(2), "b": np.zeros(3)})


def test_parquet_without_pyarrow_is_a_clear_error(table, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed (importing it raises)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(EnergyLensError, match="pyarrow"):
        table.write(tmp_path / "t.parquet")
    from energylens.sweep.stream import open_sink

    with pytest.raises(EnergyLensError, match="pyarrow"):
        open_sink(tmp_path / "s.parquet")


def test_unknown_suffix(table, tmp_path):
    with pytest.raises(SpecError, match=".csv or .parquet"):
        table.write(tmp_path / "t.xlsx")


def test_figure_is_written(table, tmp_path):
    from energylens.sweep.plots import plot_breakdown, plot_pareto, sweep_figure

    out = tmp_path / "fig.png"
    sweep_figure(table, out, title="test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    ax = plot_pareto(table, "prefill-throughput")
    assert ax.get_xscale() == "log"
    with pytest.raises(SpecError):
        plot_pareto(table, "nope")
    with pytest.raises(SpecError):
        plot_breakdown(table, "training")
    with pytest.raises(SpecError, match="png"):
        sweep_figure(table, tmp_path / "fig.txt")
