"""The arithmetic of spec files: sizes as numbers or expressions, evaluated without eval()."""

import pytest

from energylens.errors import SpecError
from energylens.specs.expr import evaluate

NAMES = {"hidden_size": 4096, "num_heads": 32, "kv": 8, "d": 4096}


@pytest.mark.parametrize("text,expected", [
    ("hidden_size / num_heads", 128),
    ("num_heads / kv", 4),
    ("2 + 3 * 4", 14),
    ("(2 + 3) * 4", 20),
    ("4 * d", 16384),
    ("10 // 3", 3),
    ("10 % 4", 2),
    ("-2 + 5", 3),
    ("2 - -1", 3),
    (" 7 ", 7),
    (96, 96),
    ("1e3", 1000),
])
def test_expressions_evaluate(text, expected):
    assert evaluate(text, NAMES, "dims.k") == expected


def test_float_results_allowed_where_asked():
    assert evaluate("6 * 128 / 8", {}, "flops", integer=False) == 96.0
    assert evaluate("5 / 2", {}, "flops", integer=False) == 2.5
    assert evaluate("0", {}, "flops", integer=False, positive=False) == 0.0


@pytest.mark.parametrize("text,needle", [
    ("hidden_size / heads", "'heads' is not one"),
    ("hidden_size / 3", "whole number"),
    ("1 / 0", "division by zero"),
    ("__import__('os')", "unexpected"),
    ("2 +", "ends too early"),
    ("(2 + 3", "balanced parentheses"),
    ("2 3", "unexpected '3'"),
    ("num_heads - 32", "positive"),
    ("", "a number or an expression"),
    ("x" * 300, "at most 200 characters"),
])
def test_bad_expressions_name_the_field(text, needle):
    with pytest.raises(SpecError) as exc:
        evaluate(text, NAMES, "dims.k")
    assert exc.value.field == "dims.k" and needle in str(exc.value)


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, float("inf")])
def test_non_numbers_refused(value):
    with pytest.raises(SpecError, match="dims.k"):
        evaluate(value, NAMES, "dims.k")
