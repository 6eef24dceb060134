"""Fixtures for the measurement tests (helpers live in measure_synth.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # measure_synth, under any pytest import mode

from measure_synth import TRUTH, make_gpu, write_synthetic  # noqa: E402

from energylens.hardware.profile import GPU


@pytest.fixture
def base_gpu() -> GPU:
    return make_gpu()


@pytest.fixture
def true_gpu() -> GPU:
    return make_gpu(TRUTH)


@pytest.fixture
def synthetic_record(tmp_path: Path, true_gpu: GPU) -> Path:
    return write_synthetic(tmp_path / "h100" / "micro" / "micro-synthetic.json", true_gpu)
