"""Parse and check einsum strings over named dimensions (``"btd,dgrk->btgrk"``).

Each letter is a named dimension; ``LEGEND`` says what the built-in letters mean. A model may
declare more letters (with their meaning) in its own legend.
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from energylens.errors import DimensionError, EinsumError

LEGEND: dict[str, str] = {
    "b": "batch (sequences)",
    "t": "query tokens per sequence in this step",
    "s": "key/value tokens per sequence (context incl. this step)",
    "d": "hidden size (d_model)",
    "g": "key/value heads (GQA groups)",
    "r": "query heads per key/value head",
    "k": "head dimension",
    "f": "feed-forward (intermediate) size",
    "e": "experts",
    "c": "tokens routed to one expert (per-expert batch)",
    "v": "vocabulary",
    "x": "routed-expert slots per token (top-k)",
}


@dataclass(frozen=True)
class EinsumSpec:
    """A parsed einsum: operand dimension strings, output, contracted and batch dimensions."""

    text: str
    inputs: tuple[str, ...]
    output: str

    @property
    def dims(self) -> str:
        seen: list[str] = []
        for operand in (*self.inputs, self.output):
            for c in operand:
                if c not in seen:
                    seen.append(c)
        return "".join(seen)

    @property
    def contracted(self) -> str:
        """Dimensions summed over: in an input but not in the output."""
        return "".join(c for c in self.dims if c not in self.output)

    def flops(self, sizes: Mapping[str, object]):
        """2 x product of all dimension sizes (one multiply and one add per term).

        An einsum without contraction (a pure product) costs 1 x product instead.
        """
        total = 1
        for c in self.dims:
            total = total * sizes[c]
        return (2 if self.contracted else 1) * total

    def gemm_mnk(self, sizes: Mapping[str, object]):
        """(M, N, K, batch) of the matrix product, for shape-aware efficiency.

        batch: in both inputs and the output; M: first input and output only; N: second input and
        output only; K: contracted. Single-input einsums return (out, 1, contracted, 1).
        """
        if len(self.inputs) == 1:
            out = math.prod([sizes[c] for c in self.output]) if self.output else 1
            k = math.prod([sizes[c] for c in self.contracted]) if self.contracted else 1
            return out, 1, k, 1
        a, b_ = self.inputs[0], self.inputs[1]

        def prod(letters: str):
            p = 1
            for c in letters:
                p = p * sizes[c]
            return p

        batch = "".join(c for c in self.output if c in a and c in b_)
        m = "".join(c for c in self.output if c in a and c not in b_)
        n = "".join(c for c in self.output if c in b_ and c not in a)
        k = self.contracted
        return prod(m), prod(n), prod(k), prod(batch)


def parse_einsum(text: str, legend: Mapping[str, str] | None = None, *, field: str = "einsum") -> EinsumSpec:
    """Parse ``"ab,bc->ac"``; letters must be in ``legend`` (default ``LEGEND``)."""
    known = LEGEND if legend is None else legend
    if not isinstance(text, str) or "->" not in text:
        raise EinsumError(field, text, "an einsum like 'btd,dgrk->btgrk' with exactly one '->'")
    lhs, _, rhs = text.replace(" ", "").partition("->")
    if "->" in rhs:
        raise EinsumError(field, text, "exactly one '->'")
    operands = lhs.split(",")
    if not lhs or any(not op for op in operands):
        raise EinsumError(field, text, "one or more non-empty comma-separated input operands before '->'")
    if len(operands) > 2:
        raise EinsumError(field, text, "at most two input operands (split longer chains into several ops)")
    for operand in (*operands, rhs):
        for c in operand:
            if c not in string.ascii_lowercase:
                raise EinsumError(field, text, f"dimension names are single lowercase letters; got {c!r}")
            if c not in known:
                raise DimensionError(
                    f"{field} dimension", c, "known dimension letters are "
                    + ", ".join(f"{k}={v}" for k, v in sorted(known.items()))
                )
        if len(set(operand)) != len(operand):
            raise EinsumError(field, text, f"operand {operand!r} repeats a dimension (traces are not supported)")
    inputs_letters = set("".join(operands))
    missing = [c for c in rhs if c not in inputs_letters]
    if missing:
        raise EinsumError(field, text, f"output dimensions {''.join(missing)!r} appear in no input")
    return EinsumSpec(text.replace(" ", ""), tuple(operands), rhs)


def bind_shapes(spec: EinsumSpec, shapes: Sequence[Sequence[int]], *, field: str = "shapes") -> dict[str, int]:
    """Check concrete operand shapes against the einsum and return the dimension sizes."""
    if len(shapes) != len(spec.inputs):
        raise EinsumError(field, list(shapes), f"{len(spec.inputs)} shapes for {spec.text!r}")
    sizes: dict[str, int] = {}
    for operand, shape in zip(spec.inputs, shapes, strict=True):
        if len(shape) != len(operand):
            raise DimensionError(field, list(shape), f"rank {len(operand)} for operand {operand!r} of {spec.text!r}")
        for c, n in zip(operand, shape, strict=True):
            if int(n) <= 0:
                raise DimensionError(f"{field}[{c}]", n, "a positive size")
            if c in sizes and sizes[c] != int(n):
                raise DimensionError(
                    f"{field}[{c}]", int(n), f"the same size as elsewhere in {spec.text!r} ({sizes[c]})"
                )
            sizes[c] = int(n)
    return sizes
