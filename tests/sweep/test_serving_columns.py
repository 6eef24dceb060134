"""``sweep --serving``: the serve_* columns, costed over the whole grid at once (layouts included), equal the
per-configuration serving path (``serve_arrays`` on each row's own scalar layout, and ``serve``); carbon and
cost columns; the kernel split behind the speed is exact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energylens
from energylens.carbon import Footprint
from energylens.cost.subprogram import split_kernels
from energylens.parallel.layout import Layout
from energylens.program import build_program
from energylens.serving import _attention_ops, serve, serve_arrays
from energylens.sweep import SweepSpec, run_sweep

DENSE = SweepSpec(models=("llama3-8b",), gpus=("h100-sxm",), tp=(1, 2, 4, 8), pp=(1, 2), dp=(1, 2, 4),
                  batch=(1, 2, 8, 64, 256), prompt_len=(128, 2048), output_len=(0, 16, 300), serving=True)
MOE = SweepSpec(models=("qwen3-30b-a3b",), gpus=("b200",), tp=(1, 2, 4), dp=(1, 2), ep=(1, 2, 4),
                batch=(2, 16, 128), prompt_len=(256, 1500), output_len=(7, 200), serving=True)
COLS = {"serve_energy_per_output_token_j": "energy_per_output_token_j", "serve_itl_s": "decode_step_latency_s",
        "serve_output_tokens_per_s": "output_tokens_per_s", "serve_avg_power_w": "avg_power_w"}


@pytest.fixture(scope="module")
def tables():
    return {"dense": run_sweep(DENSE), "moe": run_sweep(MOE)}


def _check_row(table, i: int) -> None:
    r = table.row(i)
    m, g = energylens.load_model(r["model"]), energylens.load_gpu(r["gpu"])
    if r["output_len"] == 0:
        assert all(r[c] == 0.0 for c in COLS)
        return
    lay = Layout(tp=r["tp"], pp=r["pp"], dp=r["dp"], ep=r["ep"])
    ref = serve_arrays(m, g, lay, float(r["batch"]), float(r["prompt_len"]), float(r["output_len"]))
    for col, name in COLS.items():
        assert r[col] == pytest.approx(float(np.asarray(getattr(ref, name)).reshape(-1)[0]), rel=1e-9, abs=0.0), col


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_rows_equal_the_per_configuration_serving_path(tables, data):
    kind = data.draw(st.sampled_from(["dense", "moe"]))
    t = tables[kind]
    _check_row(t, data.draw(st.integers(0, len(t) - 1)))


def test_every_layout_is_costed_in_one_call(tables, monkeypatch):
    """No loop over layouts: one serve_arrays call per block of the grid."""
    import energylens.serving as sv

    calls = []
    orig = sv.serve_arrays

    def count(*a, **k):
        calls.append(a[2])
        return orig(*a, **k)

    monkeypatch.setattr(sv, "serve_arrays", count)
    t = run_sweep(DENSE)
    assert len(calls) <= 2 and len(np.unique(t["tp"] * 100 + t["pp"] * 10 + t["dp"])) > 12
    np.testing.assert_array_equal(t["serve_itl_s"], tables["dense"]["serve_itl_s"])


def test_a_row_equals_serve(tables):
    t = tables["dense"]
    i = int(np.flatnonzero((t["tp"] == 2) & (t["pp"] == 1) & (t["dp"] == 2) & (t["batch"] == 64)
                           & (t["prompt_len"] == 2048) & (t["output_len"] == 300))[0])
    r = serve("llama3-8b", "h100-sxm", tp=2, dp=2, batch=64, input_len=2048, output_len=300)
    assert t["serve_energy_per_output_token_j"][i] == pytest.approx(r.energy_per_output_token_j, rel=1e-9)
    assert t["serve_itl_s"][i] == pytest.approx(r.decode_step_latency_s, rel=1e-9)
    assert t["serve_itl_s_low"][i] == pytest.approx(r.interval["decode_step_latency_s"]["low"], rel=1e-9)


def test_carbon_and_cost_columns():
    spec = dataclasses.replace(DENSE, tp=(2,), pp=(1,), dp=(1,), carbon_intensity_g_per_kwh=400.0, pue=1.2,
                               usd_per_gpu_hour=3.0)
    t = run_sweep(spec)
    e, x = t["serve_energy_per_output_token_j"], t["serve_output_tokens_per_s"] / t["num_gpus"]
    on = t["output_len"] > 0
    # by hand: J x PUE / 3.6e6 J/kWh x g/kWh; USD/GPU-hour / 3600 / (tokens/s per GPU)
    np.testing.assert_allclose(t["serve_gco2e_per_output_token"][on], e[on] * 1.2 / 3.6e6 * 400.0, rtol=1e-12)
    np.testing.assert_allclose(t["serve_usd_per_million_tokens"][on], 3.0 / 3600.0 / x[on] * 1e6, rtol=1e-12)
    assert np.all(t["serve_usd_per_output_token"][~on] == 0.0)
    assert "serve_gco2e_per_output_token" not in run_sweep(dataclasses.replace(spec, carbon_intensity_g_per_kwh=None,
                                                                               usd_per_gpu_hour=None)).columns
    ref = Footprint(400.0, 1.2, 3.0).per_token(e[on], x[on])
    np.testing.assert_allclose(t["serve_gco2e_per_million_tokens"][on], ref["gco2e_per_million_tokens"], rtol=1e-12)


@pytest.mark.parametrize("bad", [dict(pue=0.5), dict(carbon_intensity_g_per_kwh=-1.0), dict(usd_per_gpu_hour="x")])
def test_bad_footprint_fields_are_refused(bad):
    from energylens.errors import EnergyLensError

    with pytest.raises(EnergyLensError):
        dataclasses.replace(DENSE, **bad)


@pytest.mark.parametrize("name", ["llama3-70b", "qwen3-235b-a22b", "openai/gpt-oss-120b"])
def test_kernel_split_costs_kernels_as_the_whole_program(name):
    from energylens.cost.phase import evaluate_phase

    m, g = energylens.load_model(name), energylens.load_gpu("h100-sxm")
    lay = Layout(tp=4, pp=2)
    prog = build_program(m, lay)
    att, rest = split_kernels(prog, _attention_ops(m))
    assert att is not prog and rest is not prog
    sizes = {"b": np.array([3.0, 40.0]), "t": np.array([1.0, 9.5]), "s": np.array([700.0, 3000.0])}
    whole = evaluate_phase(m, g, lay, prog, sizes, np.asarray(1.0), decode=False, microbatches=1)
    by_name = {n + str(k): r for k, (n, r) in enumerate(whole.kernels)}
    names = [r.name for _, r in whole.kernels]
    for part in (att, rest):
        pa = evaluate_phase(m, g, lay, part, sizes, np.asarray(1.0), decode=False, microbatches=1)
        for _, r in pa.kernels:
            ref = [w for w in by_name.values() if w.name == r.name and w.ops == r.ops]
            assert ref and r.name in names
            np.testing.assert_array_equal(r.cost.latency_s, ref[0].cost.latency_s)
            np.testing.assert_array_equal(r.cost.energy_j, ref[0].cost.energy_j)
    assert len(evaluate_phase(m, g, lay, rest, sizes, np.asarray(1.0), decode=False).collectives) == len(whole.collectives)


def test_kernel_split_falls_back_when_fusion_would_change():
    """Dropping an attention kernel between two ops of one fusion group would fuse them: keep the whole."""
    from energylens.parallel.sharding import OpStep
    from energylens.program import Program

    m = energylens.load_model("llama3-8b")
    prog = build_program(m, Layout())
    att = _attention_ops(m)
    block, steps = prog.blocks[0]
    ops = [st for st in steps if isinstance(st, OpStep)]
    a = next(st for st in ops if st.op.name not in att)
    x = next(st for st in ops if st.op.name in att)
    b = next(st for st in ops if st.op.name not in att and st is not a)
    fused = tuple(dataclasses.replace(st, op=dataclasses.replace(st.op, group="g")) for st in (a, b))
    odd = Program((), ((block, (fused[0], x, fused[1])),), (), prog.residual_state)
    att_p, rest_p = split_kernels(odd, att)
    assert rest_p is odd and att_p is not odd


def test_cli_sweep_serving_writes_carbon_and_cost_columns(tmp_path):
    from energylens.cli import main
    from energylens.sweep import read_csv

    out = tmp_path / "s.csv"
    rc = main(["sweep", "--model", "llama3-8b", "--tp", "1,2", "--batch", "8,64", "--serving", "--carbon-intensity",
               "400", "--pue", "1.2", "--usd-per-gpu-hour", "3", "--out", str(out), "--json"])
    assert rc in (0, None)
    t = read_csv(out)
    assert np.all(t["serve_gco2e_per_million_tokens"] > 0) and np.all(t["serve_usd_per_million_tokens"] > 0)
    assert main(["sweep", "--model", "llama3-8b", "--serving", "--pue", "0.9"]) == 2


def test_rows_carry_intervals_on_ttft_tpot_energy_and_throughput(tables):
    t = tables["dense"]
    on = t["output_len"] > 0
    for col in ("serve_itl_s", "serve_energy_per_output_token_j", "serve_output_tokens_per_s", "ttft_s",
                "request_tokens_per_s", "energy_per_output_token_j"):
        lo, hi = t[f"{col}_low"][on], t[f"{col}_high"][on]
        assert np.all(lo <= hi) and np.all(lo > 0), col
    r = serve("llama3-8b", "h100-sxm", tp=2, batch=64, input_len=2048, output_len=300)
    i = int(np.flatnonzero((t["tp"] == 2) & (t["pp"] == 1) & (t["dp"] == 1) & (t["batch"] == 64)
                           & (t["prompt_len"] == 2048) & (t["output_len"] == 300))[0])
    iv = r.interval["decode_step_latency_s"]
    # tokens/s = batch / iteration: its interval is the inverse of the latency one
    assert t["serve_output_tokens_per_s_high"][i] == pytest.approx(r.output_tokens_per_s * r.decode_step_latency_s
                                                                   / iv["low"], rel=1e-9)


def test_collective_cost_of_broadcast_group_sizes_equals_the_expanded_arrays():
    """collective_cost finds its (group, nodes, SMs) combinations on the broadcast views' own data."""
    from energylens.cost.collectives import collective_cost

    g = energylens.load_gpu("h100-sxm")
    msg = np.linspace(1e3, 5e8, 4 * 3 * 50).reshape(4, 3, 50)
    group = np.broadcast_to(np.array([1.0, 2.0, 4.0, 8.0]).reshape(4, 1, 1), msg.shape)
    nodes = np.broadcast_to(np.array([1.0, 1.0, 2.0]).reshape(1, 3, 1), msg.shape)  # the last axis: zero strides
    views = collective_cost("all_reduce", msg, group, g, nodes=nodes)
    dense = collective_cost("all_reduce", msg, np.array(group), g, nodes=np.array(nodes))
    np.testing.assert_array_equal(views.latency_s, dense.latency_s)
    np.testing.assert_array_equal(views.energy_j_per_gpu, dense.energy_j_per_gpu)
    assert np.all(views.latency_s[0] == 0) and np.all(views.latency_s[1:] > 0)
