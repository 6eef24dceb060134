"""tools/serving_excess.py: the excess fits and the power test recover what synthetic rows were made with."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("serving_excess")


def _rows(per_request_w: float, vocab_s: float = 0.0) -> list[dict]:
    """Rows of two models on one GPU: excess = 0.5 ms + 40 us x B (+ vocab_s per request per 150k tokens);
    the per-request part draws per_request_w, the per-iteration part idle power, kernels 500 W."""
    rows = []
    for model, vocab, t0 in (("a", 150_000.0, 0.01), ("b", 300_000.0, 0.02)):
        for b in (8.0, 32.0, 128.0, 512.0):
            t = t0 + 2e-5 * b * (1.0 + (model == "b"))
            per_req = (40e-6 + vocab_s * vocab / 1.5e5) * b
            tau = t + 5e-4 + per_req
            rows.append({"model": model, "gpu": "g", "br": b, "vocab": vocab, "t": t, "tau": tau,
                         "active_s": t, "kernel_j": 400.0 * t, "idle_w": 100.0, "limit_w": 700.0,
                         "gpu_energy_j": 400.0 * t + 100.0 * t + 100.0 * 5e-4 + per_request_w * per_req})
    return rows


def test_constant_per_request_excess_is_recovered(tool):
    rows = _rows(per_request_w=600.0)
    c = tool.fit_excess(rows, "constant per request")["g"]
    np.testing.assert_allclose(c, [5e-4, 40e-6], rtol=1e-6)
    assert tool.fit_excess(rows, "both")["g"][2] == pytest.approx(0.0, abs=1e-8)  # no vocabulary term
    assert tool.lomo(rows, rows, "constant per request")["all"] < 1e-9
    assert tool.lomo(rows, rows, "batch x vocabulary")["all"] > 1e-3


def test_vocabulary_term_is_found_when_present(tool):
    rows = _rows(per_request_w=600.0, vocab_s=20e-6)
    assert tool.fit_excess(rows, "both")["g"][2] == pytest.approx(20e-6, rel=1e-3)


@pytest.mark.parametrize("watts", [100.0, 600.0])
def test_power_test_reads_the_power_of_the_per_request_time(tool, watts):
    # busy static power 100 W above idle (fraction 1/6 of the 600 W headroom) while kernels run
    d = tool.power_test(_rows(per_request_w=watts), 1.0 / 6.0)["g"]
    assert d["fixed_per_request_w"] == pytest.approx(watts, rel=1e-6)
    assert d["free_per_request_w"] == pytest.approx(watts, rel=1e-6)
