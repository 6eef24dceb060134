"""Ops describe work (shapes, dtypes, FLOPs, bytes); the cost model turns them into time and energy.

Three kinds of op:

* ``einsum``: a contraction over named dimensions (``"btd,dgrk->btgrk"``);
* ``elementwise``: reads tensors, writes one, ``flops_per_element`` of the output; ``whole_dims``
  names dimensions it reduces over (RMSNorm over ``d``, softmax over ``s``), which a sharded layout
  must gather first;
* ``gather``: a table lookup (embedding): reads the rows it indexes, not the whole table.

Tensors carry a ``Role``: weights, activations, KV cache, token ids. A fusion group (``group``)
keeps intermediates on chip: only the group's external inputs and outputs cross HBM, and the group
is one kernel launch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from energylens.graph.einsum import EinsumSpec, parse_einsum


class Role(str, Enum):
    WEIGHT = "weight"
    ACTIVATION = "activation"
    KV_CACHE = "kv_cache"
    TOKENS = "tokens"


@dataclass(frozen=True)
class Tensor:
    """A named tensor over dimension letters. ``dtype`` None = the model's default for its role."""

    name: str
    dims: str
    role: Role = Role.ACTIVATION
    dtype: str | None = None
    shardable: bool = True  # False: replicated on every rank whatever the layout (e.g. router weights)


@dataclass(frozen=True)
class Op:
    name: str
    kind: str  # "einsum" | "elementwise" | "gather"
    inputs: tuple[Tensor, ...]
    output: Tensor
    spec: EinsumSpec | None = None
    flops_per_element: float = 0.0
    whole_dims: str = ""
    group: str | None = None
    causal: bool = False
    gather_dim: str = ""
    attrs: Mapping[str, object] = field(default_factory=dict)

    @property
    def dims(self) -> str:
        seen: list[str] = []
        for t in (*self.inputs, self.output):
            for c in t.dims:
                if c not in seen:
                    seen.append(c)
        return "".join(seen)

    @property
    def weights(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.inputs if t.role is Role.WEIGHT)


def einsum(
    name: str,
    text: str,
    inputs: tuple[str | Tensor, ...],
    output: str | Tensor,
    *,
    weight: int | None = None,
    roles: tuple[Role, ...] | None = None,
    group: str | None = None,
    causal: bool = False,
    legend: Mapping[str, str] | None = None,
) -> Op:
    """An einsum op. ``inputs``/``output`` are tensor names (dims come from the einsum string)
    or ``Tensor`` objects (whose dims must match). ``weight`` marks which input index is a weight."""
    spec = parse_einsum(text, legend, field=f"op {name!r} einsum")
    tensors: list[Tensor] = []
    if len(inputs) != len(spec.inputs):
        from energylens.errors import EinsumError

        raise EinsumError(f"op {name!r} inputs", list(inputs), f"{len(spec.inputs)} tensors for {text!r}")
    for i, (item, dims) in enumerate(zip(inputs, spec.inputs, strict=True)):
        role = roles[i] if roles else (Role.WEIGHT if weight == i else Role.ACTIVATION)
        tensors.append(_as_tensor(item, dims, role, name))
    out = _as_tensor(output, spec.output, Role.ACTIVATION, name)
    return Op(name, "einsum", tuple(tensors), out, spec=spec, group=group, causal=causal)


def elementwise(
    name: str,
    inputs: tuple[Tensor, ...],
    output: Tensor,
    *,
    flops_per_element: float,
    whole_dims: str = "",
    group: str | None = None,
    attrs: Mapping[str, object] | None = None,
) -> Op:
    """An element-wise or row-reduction op (norm, RoPE, activation, softmax, residual add)."""
    return Op(
        name, "elementwise", tuple(inputs), output, flops_per_element=float(flops_per_element),
        whole_dims=whole_dims, group=group, attrs=dict(attrs or {}),
    )


def gather(name: str, ids: Tensor, table: Tensor, output: Tensor, *, gather_dim: str) -> Op:
    """A row lookup: reads the indexed rows of ``table`` (one per id) and writes ``output``."""
    return Op(name, "gather", (ids, table), output, gather_dim=gather_dim)


def _as_tensor(item: str | Tensor, dims: str, role: Role, op_name: str) -> Tensor:
    if isinstance(item, Tensor):
        if item.dims != dims:
            from energylens.errors import DimensionError

            raise DimensionError(f"op {op_name!r} tensor {item.name!r} dims", item.dims, f"{dims!r} as in the einsum")
        return item
    return Tensor(str(item), dims, role)
