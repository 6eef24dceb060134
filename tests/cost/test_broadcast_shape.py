"""``cost.distinct.broadcast_shape``: ``np.broadcast_shapes`` with a fast path for shapes of at most one axis."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from energylens.cost.distinct import broadcast_shape

SHAPES = st.lists(st.lists(st.sampled_from([1, 2, 3, 17]), max_size=3).map(tuple), max_size=6)


@given(SHAPES)
def test_broadcast_shape_is_numpys(shapes):
    try:
        want = np.broadcast_shapes(*shapes)
    except ValueError:
        with pytest.raises(ValueError):
            broadcast_shape(*shapes)
        return
    assert broadcast_shape(*shapes) == want


def test_one_axis_shapes():
    assert broadcast_shape() == ()
    assert broadcast_shape((), ()) == ()
    assert broadcast_shape((), (1,)) == (1,)
    assert broadcast_shape((1,), (17,), ()) == (17,)
    with pytest.raises(ValueError):
        broadcast_shape((2,), (17,))
