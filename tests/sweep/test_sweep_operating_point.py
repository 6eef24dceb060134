"""Sweep axes power_limit_w / sm_clock_mhz and the interval columns on sweep rows."""

import numpy as np
import pytest

from energylens.cli import main
from energylens.errors import SpecError
from energylens.sweep import SweepSpec, run_sweep


@pytest.fixture(scope="module")
def table():
    return run_sweep(SweepSpec(models=["llama3-70b"], gpus=["h100-sxm"], tp=[4, 8], batch=[8, 64], prompt_len=[1024],
                               output_len=[256], power_limit_w=[None, 400.0], sm_clock_mhz=[None, 1410.0],
                               serving=True))


def test_operating_point_axes_are_rows(table):
    assert len(table) == 2 * 2 * 2 * 2
    assert set(np.unique(table["power_limit_w"])) == {400.0, 700.0}
    assert set(np.unique(table["sm_clock_mhz"])) == {0.0, 1410.0}  # 0 = free clocks
    free = (table["power_limit_w"] == 700.0) & (table["sm_clock_mhz"] == 0.0)
    capped = (table["power_limit_w"] == 400.0) & (table["sm_clock_mhz"] == 0.0)
    # the capped serving rows draw at most 400 W per GPU; where the cap binds (the free row draws more) they
    # spend less energy per token (decode-heavy), elsewhere the same
    assert np.all(table["serve_avg_power_w"][capped] / table["num_gpus"][capped] <= 400.0 * (1 + 1e-6))
    binds = table["serve_avg_power_w"][free] / table["num_gpus"][free] > 400.0
    e_cap, e_free = table["serve_energy_per_output_token_j"][capped], table["serve_energy_per_output_token_j"][free]
    assert np.any(binds) and np.all(e_cap[binds] < e_free[binds])
    np.testing.assert_allclose(e_cap[~binds], e_free[~binds], rtol=1e-9)


def test_rows_carry_the_serve_and_predict_intervals(table):
    for col in ("serve_energy_per_output_token_j", "serve_itl_s", "serve_avg_power_w"):
        assert np.all(table[f"{col}_low"] < table[col]) and np.all(table[col] < table[f"{col}_high"])
    for col in ("request_energy_j", "request_latency_s", "energy_per_output_token_j"):
        assert np.all(table[f"{col}_low"] <= table[f"{col}_high"])


@pytest.mark.parametrize("bad", [dict(power_limit_w=[-5.0]), dict(sm_clock_mhz=["fast"]),
                                 dict(power_limit_w=[400.0, 400.0])])
def test_bad_operating_axes_are_spec_errors(bad):
    with pytest.raises(SpecError):
        SweepSpec(models=["llama3-8b"], gpus=["h100-sxm"], **bad)


def test_cli_sweep_bad_power_limit_exits_2(capsys):
    rc = main(["sweep", "--model", "llama3-8b", "--power-limit", "lots"])
    assert rc == 2 and "power_limit_w" in capsys.readouterr().err
