"""energylens plan: SLO filtering, ranking, Pareto front, intervals, carbon/cost, CLI JSON and errors."""

import json

import numpy as np
import pytest

from energylens.carbon import Footprint
from energylens.cli import main
from energylens.errors import EnergyLensError, WorkloadError
from energylens.plan import ROW_KEYS, plan

SMALL = dict(max_gpus=2, input_len=512, output_len=128, concurrency=[1, 4, 16, 64])


@pytest.fixture(scope="module")
def small():
    return plan("llama3.1-8b", "h100-sxm,h200", max_ttft_s=0.5, max_tpot_s=0.012, **SMALL)


def test_every_row_meets_the_slos_and_is_ranked_by_energy(small):
    assert small.rows and small.meta["candidates"] > len(small.rows)  # some candidates miss the SLO
    for r in small.rows:
        assert r["ttft_s"] <= 0.5 and r["tpot_s"] <= 0.012
    e = [r["energy_per_output_token_j"] for r in small.rows]
    assert e == sorted(e)
    missed = [r for r in small.all_rows if r not in small.rows]
    assert missed and all(r["ttft_s"] > 0.5 or r["tpot_s"] > 0.012 for r in missed)


def test_throughput_objective_ranks_tokens_per_gpu_descending():
    res = plan("llama3.1-8b", "h100-sxm", objective="throughput", max_tpot_s=0.02, **SMALL)
    x = [r["output_tokens_per_s_per_gpu"] for r in res.rows]
    assert x == sorted(x, reverse=True)
    assert "most output tokens/s per GPU" in res.explanation[0]


def test_tighter_slo_keeps_a_subset_and_impossible_slo_explains(small):
    tight = plan("llama3.1-8b", "h100-sxm,h200", max_ttft_s=0.5, max_tpot_s=0.008, **SMALL)
    assert len(tight.rows) < len(small.rows)
    none = plan("llama3.1-8b", "h100-sxm", max_tpot_s=1e-4, **SMALL)
    assert none.rows == [] and none.explanation[0].startswith("No deployment meets")


def test_pareto_fronts_are_not_dominated_and_energy_trades_against_tpot(small):
    e, x, t = "energy_per_output_token_j", "output_tokens_per_s_per_gpu", "tpot_s"
    for front, a, b, sa, sb in ((small.front, e, t, 1, 1), (small.front_throughput, x, t, -1, 1),
                                (small.front_energy_throughput, e, x, 1, -1)):
        pts = [small.rows[k] for k in front]
        assert pts
        for f in pts:  # nothing is strictly better on both axes (sa/sb: +1 lower is better, -1 higher)
            assert not any(sa * r[a] < sa * f[a] and sb * r[b] < sb * f[b] for r in small.rows)
    assert all(small.rows[k]["pareto"] for k in small.front)
    lat = sorted((small.rows[k] for k in small.front), key=lambda r: r[t])
    assert len(lat) > 2 and lat[0][e] > lat[-1][e]  # the faster end of the front spends more energy per token
    assert small.rows[0] in lat  # the energy choice is on the energy-TPOT front
    assert "Pareto front of energy per token against TPOT" in " ".join(small.explanation)


def test_rows_carry_keys_intervals_and_the_explanation_names_the_choice(small):
    top = small.rows[0]
    assert set(ROW_KEYS) <= set(top)
    iv = top["interval"]["energy_per_output_token_j"]
    assert iv["low"] < top["energy_per_output_token_j"] < iv["high"] and iv["level"] == 0.8
    assert top["interval"]["tpot_s"]["low"] < top["tpot_s"] < top["interval"]["tpot_s"]["high"]
    for k in ("ttft_s", "ttft_p90_s", "tpot_p90_s", "output_tokens_per_s_per_gpu", "avg_power_w"):
        assert top["interval"][k]["low"] < top[k] < top["interval"][k]["high"], k
    assert "no measured TTFT" in top["interval"]["ttft_s"]["basis"]
    assert any(line.startswith("80 % intervals of the choice: TTFT") for line in small.explanation)
    assert top["gpu"] in small.explanation[0] and "Why this batch cap" in small.explanation[2]


def test_carbon_and_cost_arithmetic():
    fp = Footprint(carbon_intensity_g_per_kwh=400.0, pue=1.5, usd_per_gpu_hour=3.6)
    d = fp.per_token_floats(2.0, 1000.0)
    assert d["facility_energy_per_output_token_j"] == pytest.approx(3.0)
    assert d["gco2e_per_output_token"] == pytest.approx(3.0 / 3.6e6 * 400.0)
    assert d["gco2e_per_million_tokens"] == pytest.approx(3.0 / 3.6e6 * 400.0 * 1e6)
    assert d["usd_per_output_token"] == pytest.approx(1e-6) and d["usd_per_million_tokens"] == pytest.approx(1.0)
    assert Footprint().per_token_floats(1.0, 1.0)["gco2e_per_output_token"] is None
    for bad in (dict(pue=0.9), dict(carbon_intensity_g_per_kwh=-1.0), dict(usd_per_gpu_hour=float("nan"))):
        with pytest.raises(WorkloadError):
            Footprint(**bad)


def test_cost_and_carbon_objectives_rank_by_them():
    fp = Footprint(carbon_intensity_g_per_kwh=300.0, usd_per_gpu_hour=2.0)
    res = plan("llama3.1-8b", "h100-sxm,h200", objective="cost", footprint=fp, max_tpot_s=0.03, **SMALL)
    usd = [r["usd_per_million_tokens"] for r in res.rows]
    assert usd == sorted(usd)
    assert res.rows[0]["usd_per_million_tokens"] == pytest.approx(2.0 / 3600 / res.rows[0]["output_tokens_per_s_per_gpu"] * 1e6)
    res = plan("llama3.1-8b", "h100-sxm", objective="carbon", footprint=fp, **SMALL)
    g = [r["gco2e_per_million_tokens"] for r in res.rows]
    assert g == sorted(g)
    with pytest.raises(EnergyLensError, match="carbon"):
        plan("llama3.1-8b", "h100-sxm", objective="carbon", **SMALL)


def test_power_limit_axis_lowers_power_and_decode_heavy_energy():
    res = plan("llama3.1-8b", "h100-sxm", power_limits=(None, 300.0), max_gpus=1, input_len=256, output_len=1024,
               concurrency=[32])
    by_limit = {r["power_limit_w"]: r for r in res.rows}
    assert set(by_limit) == {700.0, 300.0}
    capped, free = by_limit[300.0], by_limit[700.0]
    assert capped["avg_power_w"] <= 300.0 * (1 + 1e-6) < free["avg_power_w"]
    assert capped["energy_per_output_token_j"] < free["energy_per_output_token_j"]
    assert capped["tpot_s"] < 1.1 * free["tpot_s"]


def test_acceptance_llama70b_on_three_gpu_types():
    res = plan("llama3.1-70b", "h100-sxm,h200,b200", max_gpus=8, input_len=1024, output_len=256, max_ttft_s=1.0,
               max_tpot_s=0.05, concurrency=[8, 32, 48, 64])
    top = res.rows[0]
    assert top["ttft_s"] <= 1.0 and top["tpot_s"] <= 0.05
    assert {r["gpu"] for r in res.rows} == {"h100-sxm", "h200", "b200"}
    assert np.isfinite(top["energy_per_output_token_j"])


def test_moe_searches_expert_parallel_layouts():
    res = plan("qwen3-235b-a22b", "b200", max_gpus=8, input_len=1024, output_len=256, max_tpot_s=0.05,
               concurrency=[64, 256])
    assert res.rows and any(r["ep"] > 1 for r in res.rows)
    assert res.rows[0]["tpot_s"] <= 0.05


def test_cli_plan_json_and_text(capsys, tmp_path):
    rc = main(["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "2", "--input-len", "512",
               "--output-len", "128", "--concurrency", "4,16", "--max-tpot-s", "0.05", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert rc == 0 and d["rows"] and set(ROW_KEYS) <= set(d["rows"][0]) and "interval" in d["rows"][0]
    png = tmp_path / "plan.png"
    rc = main(["plan", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--max-gpus", "2", "--input-len", "512",
               "--output-len", "128", "--concurrency", "4,16", "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and png.stat().st_size > 1000
    assert max(len(line) for line in out.splitlines() if not line.startswith("figure:")) <= 80 and "Choice" in out


@pytest.mark.parametrize("args", [["--objective", "joules"], ["--max-gpus", "0"], ["--max-tpot-s", "-1"],
                                  ["--objective", "carbon"], ["--gpu", "tpu9"], ["--input-len", "nan"],
                                  ["--power-limit", "abc"], ["--pue", "0.5"], ["--concurrency", "0"]])
def test_cli_plan_bad_input_exits_2(capsys, args):
    rc = main(["plan", "--model", "llama3.1-8b", "--max-gpus", "1", "--concurrency", "4", *args])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
