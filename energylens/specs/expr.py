"""A tiny arithmetic language for sizes in spec files: ``hidden_size / num_attention_heads``.

Grammar (no ``eval``; a recursive-descent parser over a handful of tokens)::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/' | '//' | '%') unary)*
    unary  := '-' unary | atom
    atom   := NUMBER | NAME | '(' expr ')'

``NAME`` is a config key or a dimension letter already defined (letters, digits, ``_`` and ``.``);
``/`` must divide exactly when the result has to be an integer (``evaluate(..., integer=True)``),
``//`` rounds down. Every mistake raises ``SpecError`` naming the field, the text and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from energylens.errors import SpecError

MAX_EXPR_CHARS = 200
_TOKEN = re.compile(r"\s*(?:(\d+\.\d*|\.\d+|\d+(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_.]*)|(//|[-+*/%()]))")


def _tokens(text: str, field: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SpecError(field, text, f"an arithmetic expression of numbers, config names and + - * / // % ( ); "
                                         f"unexpected {text[pos:].strip()[:10]!r}")
        num, name, op = m.groups()
        out.append(("num", num) if num else ("name", name) if name else ("op", op))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str, names: Mapping[str, float], field: str) -> None:
        self.text, self.names, self.field = text, names, field
        self.toks = _tokens(text, field)
        self.i = 0

    def fail(self, what: str):
        raise SpecError(self.field, self.text, what)

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            self.fail("a complete expression (it ends too early)")
        self.i += 1
        return tok

    def parse(self) -> float:
        if not self.toks:
            self.fail("a number or an expression")
        value = self.expr()
        if self.peek() is not None:
            self.fail(f"a complete expression; unexpected {self.peek()[1]!r}")
        return value

    def expr(self) -> float:
        value = self.term()
        while (tok := self.peek()) and tok[1] in ("+", "-"):
            self.take()
            rhs = self.term()
            value = value + rhs if tok[1] == "+" else value - rhs
        return value

    def term(self) -> float:
        value = self.unary()
        while (tok := self.peek()) and tok[1] in ("*", "/", "//", "%"):
            self.take()
            rhs = self.unary()
            if tok[1] != "*" and rhs == 0:
                self.fail("no division by zero")
            if tok[1] == "*":
                value = value * rhs
            elif tok[1] == "/":
                value = value / rhs
            elif tok[1] == "//":
                value = float(math.floor(value / rhs))
            else:
                value = math.fmod(value, rhs)
        return value

    def unary(self) -> float:
        tok = self.peek()
        if tok == ("op", "-"):
            self.take()
            return -self.unary()
        return self.atom()

    def atom(self) -> float:
        kind, text = self.take()
        if kind == "num":
            return float(text)
        if kind == "name":
            if text not in self.names:
                known = ", ".join(sorted(self.names)) or "none defined"
                self.fail(f"names defined in config or dims ({known}); {text!r} is not one")
            return float(self.names[text])
        if text == "(":
            value = self.expr()
            if self.peek() != ("op", ")"):
                self.fail("balanced parentheses")
            self.take()
            return value
        self.fail(f"a number, a name or '('; got {text!r}")
        raise AssertionError  # unreachable


def evaluate(value: object, names: Mapping[str, float], field: str, *, integer: bool = True,
             positive: bool = True) -> int | float:
    """A number given as such, or the value of an expression string over ``names``."""
    if isinstance(value, bool):
        raise SpecError(field, value, "a number or an arithmetic expression, not true/false")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        if len(value) > MAX_EXPR_CHARS:
            raise SpecError(field, value[:40] + "...", f"an expression of at most {MAX_EXPR_CHARS} characters")
        result = _Parser(value, names, field).parse()
    else:
        raise SpecError(field, value, "a number or an arithmetic expression such as 'hidden_size / num_heads'")
    if not math.isfinite(result):
        raise SpecError(field, value, "a finite number")
    if positive and not result > 0:
        raise SpecError(field, value, f"a positive number (it evaluates to {result:g})")
    if integer:
        if result != int(result):
            raise SpecError(field, value, f"a whole number (it evaluates to {result:g}; use // to round down)")
        return int(result)
    return result
