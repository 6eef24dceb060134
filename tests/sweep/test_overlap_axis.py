"""Overlap settings as a sweep axis: sequential rows unchanged, overlapped rows = predict_with_overlap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energylens.cli import main
from energylens.errors import EnergyLensError, SpecError
from energylens.overlap import OverlapPlan, predict_with_overlap
from energylens.sweep import SweepSpec, read_csv, run_sweep

OV = {"overlap_comm_sms": (0, 16, 32), "overlap_chunks": (1, 4)}
DENSE = dict(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2, 4), pp=(1, 2), dp=(1, 2), sp=(False, True),
             batch=(1, 4, 32), prompt_len=(256, 1024), output_len=(0, 5, 40))
MOE = dict(models=("qwen3-30b-a3b",), gpus=("h100-sxm",), tp=(1, 2), dp=(1, 2), ep=(1, 2, 4), batch=(4, 32),
           prompt_len=(256,), output_len=(7, 40))
SETTINGS = [(0, 1), (16, 1), (16, 4), (32, 1), (32, 4)]
BREAKDOWN = ("compute_j", "memory_j", "static_j", "communication_j", "idle_wait_j")


@pytest.fixture(scope="module")
def dense():
    return run_sweep(SweepSpec(**DENSE, **OV)), run_sweep(SweepSpec(**DENSE))


@pytest.fixture(scope="module")
def moe():
    return run_sweep(SweepSpec(**MOE, **OV)), run_sweep(SweepSpec(**MOE))


# ------------------------------------------------------------------ spec


def test_spec_defaults_settings_and_size():
    s = SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], tp=[1, 2])
    assert s.overlap_comm_sms == (0,) and s.overlap_chunks == (1,) and s.overlap_collective == "*"
    assert s.overlap_settings() == [(0, 1)] and s.size == 2
    s = SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], tp=[1, 2], **OV)
    assert s.overlap_settings() == SETTINGS
    assert s.size == 2 * (1 + 2 * 2)  # comm_sms 0 is one row, not one per chunk count
    s = SweepSpec(models=["x"], gpus=["y"], overlap_comm_sms=[16, 0], overlap_chunks=[2])
    assert s.overlap_settings() == [(16, 2), (0, 1)]  # spec order
    assert SweepSpec(models=["x"], gpus=["y"], overlap_comm_sms=[16]).overlap_settings() == [(16, 1)]


def test_spec_from_dict_ranges_and_round_trip():
    s = SweepSpec.from_dict({"models": ["llama3-8b"], "gpus": ["h100-sxm"],
                             "overlap_comm_sms": {"from": 0, "to": 32, "step": 16}, "overlap_chunks": "1,2,4",
                             "overlap_collective": "*:all_reduce"})
    assert s.overlap_comm_sms == (0, 16, 32) and s.overlap_chunks == (1, 2, 4)
    assert s.overlap_collective == "*:all_reduce"
    assert SweepSpec.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(("kw", "field"), [
    ({"overlap_comm_sms": [-1]}, "overlap_comm_sms"),
    ({"overlap_comm_sms": [True]}, "overlap_comm_sms"),
    ({"overlap_comm_sms": []}, "overlap_comm_sms"),
    ({"overlap_comm_sms": [16, 16]}, "overlap_comm_sms"),
    ({"overlap_comm_sms": [2.5]}, "overlap_comm_sms"),
    ({"overlap_chunks": [0]}, "overlap_chunks"),
    ({"overlap_chunks": [65]}, "overlap_chunks"),
    ({"overlap_collective": " "}, "overlap_collective"),
    ({"overlap_collective": 3}, "overlap_collective"),
    ({"overlap_comm_sms": [0, 16], "serving": True}, "overlap_comm_sms"),
])
def test_spec_errors_name_the_field(kw, field):
    with pytest.raises(SpecError) as e:
        SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], **kw)
    assert e.value.field == field


def test_comm_sms_beyond_the_gpu_is_an_error_not_a_nan():
    with pytest.raises(EnergyLensError, match="comm_sms"):
        run_sweep(SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], tp=[2], overlap_comm_sms=[0, 132]))


# ------------------------------------------------------------------ engine


def _seq_rows_identical(ov, base):
    seq = ov.filter(ov["overlap_comm_sms"] == 0)
    assert seq.names == base.names and len(seq) == len(base)
    for k in base.names:
        assert np.array_equal(seq[k], base[k]), k  # bit for bit


def test_sequential_rows_identical_to_a_sweep_without_overlap(dense, moe):
    for ov, base in (dense, moe):
        _seq_rows_identical(ov, base)
        assert np.all(base["overlap_comm_sms"] == 0) and np.all(base["overlap_chunks"] == 1)
        for ph in ("prefill", "decode"):
            assert np.all(base[f"{ph}_overlap_saved_s"] == 0) and np.all(base[f"{ph}_overlap_saved_j"] == 0)


def test_row_count_and_order(dense):
    ov, base = dense
    n = len(SETTINGS)
    assert len(ov) == n * len(base)  # every valid configuration once per setting, setting innermost
    pairs = np.stack([ov["overlap_comm_sms"], ov["overlap_chunks"]], axis=1).reshape(len(base), n, 2)
    assert np.array_equal(pairs, np.broadcast_to(np.asarray(SETTINGS), pairs.shape))
    for k in ("tp", "pp", "dp", "sp", "batch", "prompt_len", "output_len"):
        assert np.array_equal(ov[k].reshape(len(base), n), np.repeat(base[k][:, None], n, axis=1)), k


def _check_against_overlap(table, i: int) -> None:
    r = table.row(i)
    plan = OverlapPlan("*", None, chunks=r["overlap_chunks"], comm_sms=r["overlap_comm_sms"])
    p = predict_with_overlap(r["model"], r["gpu"], plans=[plan], tp=r["tp"], pp=r["pp"], dp=r["dp"], ep=r["ep"],
                             sp=r["sp"], batch=r["batch"], prompt_len=r["prompt_len"], output_len=r["output_len"])
    for ph in ("prefill", "decode"):
        res = getattr(p, ph)
        assert r[f"{ph}_latency_s"] == pytest.approx(res.latency_s, rel=1e-12, abs=1e-15), (ph, r)
        assert r[f"{ph}_energy_j"] == pytest.approx(res.energy_j, rel=1e-12, abs=1e-12), (ph, r)
        assert r[f"{ph}_overlap_saved_s"] == pytest.approx(res.latency_saved_s, rel=1e-9, abs=1e-12)
        assert r[f"{ph}_overlap_saved_j"] == pytest.approx(res.energy_saved_j, rel=1e-9, abs=1e-9)


@settings(max_examples=8, deadline=None)
@given(st.data())
def test_overlapped_rows_equal_predict_with_overlap_dense(dense, data):
    ov = dense[0]
    rows = np.flatnonzero((ov["overlap_comm_sms"] > 0) & (ov["tp"] > 1))
    _check_against_overlap(ov, int(rows[data.draw(st.integers(0, len(rows) - 1))]))


@settings(max_examples=5, deadline=None)
@given(st.data())
def test_overlapped_rows_equal_predict_with_overlap_moe(moe, data):
    ov = moe[0]
    rows = np.flatnonzero((ov["overlap_comm_sms"] > 0) & (ov["ep"] > 1))
    _check_against_overlap(ov, int(rows[data.draw(st.integers(0, len(rows) - 1))]))


def test_degree_one_layout_rows_match_predict_with_overlap(dense):
    # tp = 1 rows share an evaluation with tp > 1 unless the engine splits them: a group-size-1
    # collective would then be paired with a GEMM that predict_with_overlap leaves alone
    ov = dense[0]
    for sp in (False, True):
        i = int(np.flatnonzero((ov["tp"] == 1) & (ov["sp"] == sp) & (ov["overlap_comm_sms"] == 16)
                               & (ov["overlap_chunks"] == 4) & (ov["batch"] == 4) & (ov["output_len"] == 40))[0])
        _check_against_overlap(ov, i)


def test_invariants(dense, moe):
    for ov, _ in (dense, moe):
        n = len(SETTINGS)
        for ph in ("prefill", "decode"):
            # the breakdown is sequential execution's; the overlap change closes the sum
            parts = sum(ov[f"{ph}_{c}"] for c in BREAKDOWN)
            np.testing.assert_allclose(parts - ov[f"{ph}_overlap_saved_j"], ov[f"{ph}_energy_j"], rtol=1e-9,
                                       atol=1e-9)
            seq_t = ov[f"{ph}_latency_s"].reshape(-1, n)[:, :1]
            np.testing.assert_allclose(seq_t - ov[f"{ph}_latency_s"].reshape(-1, n),
                                       ov[f"{ph}_overlap_saved_s"].reshape(-1, n), rtol=1e-9, atol=1e-15)
            has = (ov["output_len"] > 0) | (ph == "prefill")
            assert np.all(ov[f"{ph}_latency_s"][has] > 0) and np.all(ov[f"{ph}_latency_s"][~has] == 0)
        # one GPU per replica stage without tp/ep: no collective to overlap, nothing changes
        alone = (ov["tp"] == 1) & (ov["ep"] == 1)
        for k in ("prefill_latency_s", "decode_energy_j"):
            v = ov[k].reshape(-1, n)[alone.reshape(-1, n)[:, 0]]
            assert np.all(v == v[:, :1]), k
        # prefill of a tensor-parallel model does change with overlap
        tpd = (ov["tp"] > 1).reshape(-1, n)[:, 0]
        assert np.any(ov["prefill_overlap_saved_s"].reshape(-1, n)[tpd][:, 1:] != 0)
        for k in ov.names:
            if ov[k].dtype.kind == "f":
                assert np.all(np.isfinite(ov[k])), k
        # tokens per second and per-token energies follow the overlapped totals
        np.testing.assert_allclose(ov["ttft_s"], ov["prefill_latency_s"])
        np.testing.assert_allclose(ov["request_energy_j"], ov["prefill_energy_j"] + ov["decode_energy_j"])


def test_a_collective_pattern_that_matches_nothing_changes_nothing():
    kw = dict(models=("llama3-8b",), gpus=("h100-sxm",), tp=(2, 4), batch=(8,), prompt_len=(512,),
              output_len=(16,))
    t = run_sweep(SweepSpec(**kw, overlap_comm_sms=(0, 16), overlap_chunks=(2,), overlap_collective="nothing*"))
    for k in ("prefill_latency_s", "prefill_energy_j", "decode_latency_s", "decode_energy_j"):
        assert np.array_equal(t[k][0::2], t[k][1::2]), k
    ar = run_sweep(SweepSpec(**kw, overlap_comm_sms=(16,), overlap_chunks=(2,), overlap_collective="*:all_reduce"))
    assert np.any(ar["prefill_overlap_saved_s"] != 0)


def test_chunked_run_equals_one_run():
    spec = SweepSpec(**{**DENSE, "pp": (1,), "output_len": (5, 40)}, **OV)
    one = run_sweep(spec)
    small = run_sweep(spec, max_chunk_configs=150)
    assert small.meta["chunks"] > 4
    assert small.names == one.names and len(small) == len(one)
    for k in one.names:
        assert np.array_equal(small[k], one[k]), k


def test_pareto_ties_keep_sequential_rows():
    # tp = 1: overlap changes nothing, so every overlapped row ties with its sequential row
    t = run_sweep(SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1,), batch=(1, 8, 64),
                            prompt_len=(512,), output_len=(64,), overlap_comm_sms=(16, 0), overlap_chunks=(2,)))
    for front in ("prefill-latency", "decode-latency", "request-throughput"):
        f = t.pareto(front)
        assert len(f) and np.all(f["overlap_comm_sms"] == 0), front


def test_csv_round_trip_keeps_overlap_columns(dense, tmp_path):
    ov = dense[0].filter(np.arange(40))
    back = read_csv(ov.write(tmp_path / "ov.csv"))
    assert back["overlap_comm_sms"].tolist() == ov["overlap_comm_sms"].tolist()
    assert back["overlap_chunks"].tolist() == ov["overlap_chunks"].tolist()


# ------------------------------------------------------------------ CLI and plots


def test_sweep_command_overlap_flags(capsys, tmp_path):
    csv = tmp_path / "t.csv"
    rc = main(["sweep", "-m", "llama3-8b", "-g", "h100-sxm", "--tp", "1,2", "--sp", "on", "--batch", "1,8",
               "--prompt-len", "512", "--output-len", "32", "--overlap-comm-sms", "0,16,24", "--overlap-chunks", "1,2",
               "--front", "prefill-latency", "--json", "--all", "-o", str(csv)])
    out = capsys.readouterr().out
    assert rc in (0, None)
    summary = json.loads(out)
    assert summary["grid_configs"] == 2 * 2 * 5 and summary["valid_configs"] == 20
    assert {"overlap_comm_sms", "overlap_chunks"} <= set(summary["front"]["rows"][0])
    t = read_csv(csv)
    assert sorted(set(zip(t["overlap_comm_sms"].tolist(), t["overlap_chunks"].tolist(), strict=True))) == [
        (0, 1), (16, 1), (16, 2), (24, 1), (24, 2)]


def test_sweep_command_table_and_bad_flag(capsys):
    rc = main(["sweep", "-m", "llama3-8b", "-g", "h100-sxm", "--tp", "2", "--batch", "8", "--prompt-len", "512",
               "--output-len", "32", "--overlap-comm-sms", "0,16", "--overlap-chunks", "4", "--front",
               "prefill-latency"])
    out = capsys.readouterr().out
    assert rc in (0, None) and "overlap" in out
    rc = main(["sweep", "-m", "llama3-8b", "-g", "h100-sxm", "--overlap-chunks", "0"])
    res = capsys.readouterr()
    assert rc not in (0, None) and "overlap_chunks" in res.out + res.err


def test_figure_with_overlap_rows(dense, tmp_path):
    pytest.importorskip("matplotlib")
    from energylens.sweep.plots import plot_breakdown, sweep_figure

    ov = dense[0].filter((dense[0]["pp"] == 1) & (dense[0]["dp"] == 1))
    sweep_figure(ov, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 0
    import matplotlib.pyplot as plt

    rows = ov.filter((ov["overlap_comm_sms"] > 0) & (ov["tp"] == 4) & (ov["output_len"] > 0))
    ax = plot_breakdown(ov, "decode", rows=rows.filter(np.arange(3)))
    tops = [p.get_y() + p.get_height() for p in ax.patches]
    assert max(tops) == pytest.approx(100.0)  # shares of the sequential energy still stack to 100 %
    plt.close("all")
