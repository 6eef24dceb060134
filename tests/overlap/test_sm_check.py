"""The SM-split compute model against MuxServe's measured slowdowns (a check: nothing is fitted)."""

from __future__ import annotations

import numpy as np
import pytest

from energylens.overlap.sm_check import DEFAULT_CSV as CSV  # noqa: E402
from energylens.overlap.sm_check import run_check


@pytest.fixture(scope="module")
def check():
    return run_check(CSV, models=("llama-7b", "llama-65b"))


def test_rows_and_reference_point(check):
    assert len(check.phase) > 2000
    full = check.sm_percent == 100
    assert np.all(check.measured_slowdown[full] == 1.0) and np.allclose(check.predicted_slowdown[full], 1.0)


def test_prefill_slowdown_tracks_measurement(check):
    # guards the numbers reported in the overlap note (all four models: 8.6 % / 5.5 %)
    assert check.mape("prefill") < 0.12
    assert check.mape("prefill", min_percent=70) < 0.08


def test_slowdown_is_monotone_in_sm_share(check):
    for phase in ("prefill", "decode"):
        means = [np.mean(check.predicted_slowdown[(check.sm_percent == p) & (check.phase == phase)])
                 for p in range(30, 101, 10)]
        assert np.all(np.diff(means) <= 1e-12)


def test_decode_bandwidth_limit_is_a_known_gap(check):
    # the partition keeps full HBM bandwidth: below ~50 % of the SMs decode is measured slower than predicted
    sel = (check.phase == "decode") & (check.sm_percent == 30)
    assert np.mean(check.measured_slowdown[sel]) > np.mean(check.predicted_slowdown[sel])
