"""tools/attention_power_floor.py: the nearest-neighbour floor predicts a held-out row by its neighbours' median
reading, within its own group (KV dtype) only."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tool(load_tool):
    return load_tool("attention_power_floor")


def test_knn_floor_hand_counted(tool):
    # one feature; train rows at x = 0, 1, 2, 10 (readings 100, 200, 300, 900) of group a and x = 1 (500) of group b;
    # the test row at x = 1.1 (group a, reading 250): its 3 nearest group-a rows are x = 1, 2, 0 -> median 200
    x = np.array([[0.0], [1.0], [2.0], [10.0], [1.0], [1.1]])
    group = np.array(["a", "a", "a", "a", "b", "a"])
    reading = np.array([100.0, 200.0, 300.0, 900.0, 500.0, 250.0])
    train = np.array([True, True, True, True, True, False])
    test = ~train
    got = tool.knn_floor(x, group, reading, train, test, 3)
    assert got == pytest.approx([abs(200.0 / 250.0 - 1.0)])
    # k = 1: the single nearest (x = 1, reading 200), never group b's x = 1 row (500)
    assert tool.knn_floor(x, group, reading, train, test, 1) == pytest.approx([0.2])
    # a test row whose group has no train row scores NaN (left out of the median)
    group2 = group.copy()
    group2[-1] = "c"
    assert np.isnan(tool.knn_floor(x, group2, reading, train, test, 3)[0])
