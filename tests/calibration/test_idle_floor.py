"""B200's idle power is the floor of its kernel power tables (clocks up under a process), and the same
statistic on H200 lands within 10 % above H200's measured context-held idle (the check that makes it usable)."""

import pytest

from energylens.calibration.power import IDLE_FROM_TABLES, table_floor_power_w
from energylens.calibration.report import idle_quantities
from energylens.errors import SpecError
from energylens.hardware.profile import load_gpu


def test_b200_idle_is_its_power_table_floor():
    floor_w, paths = table_floor_power_w("b200")
    assert load_gpu("b200").idle_power_w == pytest.approx(floor_w, rel=1e-6)
    assert len(paths) == 4 and all("power_b200" in p for p in paths)
    q = idle_quantities("b200")["idle_power"]
    assert q.kind == "measured" and "power_b200" in q.source
    assert idle_quantities("h200") == {} and "b200" in IDLE_FROM_TABLES


def test_the_floor_statistic_checks_against_h200_measured_idle():
    floor_w, _ = table_floor_power_w("h200")
    idle_w = load_gpu("h200").idle_power_w
    assert idle_w <= floor_w <= 1.10 * idle_w


def test_no_table_is_an_error():
    with pytest.raises(SpecError, match="gpu"):
        table_floor_power_w("a100-sxm-80gb")
