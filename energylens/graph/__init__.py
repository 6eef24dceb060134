"""The einsum graph: ops over named dimensions, fusion groups, tensor roles, models."""

from energylens.graph.einsum import LEGEND, EinsumSpec, parse_einsum
from energylens.graph.model import Model
from energylens.graph.ops import Op, Role, Tensor, einsum, elementwise, gather

__all__ = ["LEGEND", "EinsumSpec", "Model", "Op", "Role", "Tensor", "einsum", "elementwise", "gather", "parse_einsum"]
