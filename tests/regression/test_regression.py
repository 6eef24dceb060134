"""Every recorded figure of the regression set is reproduced to 1e-9 relative (see record.py)."""

from __future__ import annotations

import json
import math

import pytest

from tests.regression.record import FIXTURE, compute


def _walk(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: keys differ: {sorted(set(a) ^ set(b))}"
        for k in a:
            yield from _walk(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _walk(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        yield path, a, float(b)
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def current():
    return json.loads(json.dumps(compute()))


@pytest.mark.parametrize("section", ["predict", "serve", "overlap", "sweep"])
def test_regression_set_reproduced(current, section):
    recorded = json.loads(FIXTURE.read_text())
    bad = [(p, x, y) for p, x, y in _walk(recorded[section], current[section], section)
           if not math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-300)]
    assert not bad, f"{len(bad)} figures moved, first: {bad[:5]}"
