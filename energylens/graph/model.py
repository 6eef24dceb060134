"""A model: pre-ops (embedding), blocks of decoder layers written once and repeated, post-ops (head).

Fixed dimension sizes (``d``, ``g``, ``r``, ``k``, ``f``, ``v``, ``e``...) live in ``dims``; the
workload binds ``b`` (batch), ``t`` (query tokens per sequence this step) and ``s`` (key/value tokens).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from energylens.errors import DimensionError, SpecError
from energylens.graph.einsum import LEGEND
from energylens.graph.ops import Op, Role, Tensor
from energylens.graph.precision import DTYPE_BYTES, Precision, WeightFormat, plain_precision

WORKLOAD_DIMS = ("b", "t", "s")
MESH_AXES = ("tp", "ep")  # axes a model dimension may be sharded over (pp splits layers, dp the batch)
OP_ATTRS: dict[str, str] = {  # op size attributes the cost engine and the sharding rules read
    "tokens": "'last': the op runs on the last token of each sequence only (LM head, sampler)",
    "window": "a positive integer: sliding-window attention, s -> min(s, window)",
    "causal": "true/false: causal attention (a fused kernel skips the masked half)",
    "route": "'dispatch' or 'combine': token routing to experts (all-to-all under expert parallelism)",
    "moe": "'expert' or 'shared': expert-side op whose partial sums the combine reduces once",
}


@dataclass(frozen=True)
class Block:
    """One decoder-layer template repeated ``count`` times. ``input``/``output`` name the residual."""

    name: str
    ops: tuple[Op, ...]
    count: int
    input: str = "x"
    output: str = "x_next"
    layers: tuple[int, ...] = ()  # indices of the model's layers this block stands for; () = the first ``count``


@dataclass(frozen=True)
class Model:
    name: str
    dims: Mapping[str, int]
    pre: tuple[Op, ...]
    blocks: tuple[Block, ...]
    post: tuple[Op, ...]
    weight_dtype: str = "bf16"
    act_dtype: str = "bf16"
    kv_dtype: str = "bf16"
    legend: Mapping[str, str] = field(default_factory=lambda: dict(LEGEND))
    hf_id: str = ""
    family: str = ""
    info: Mapping[str, object] = field(default_factory=dict)
    # dim -> mesh axis ("tp", "ep") or None (replicated), overriding the Megatron default of
    # ``energylens.parallel.layout.DEFAULT_AXES`` for this model
    sharding: Mapping[str, str | None] = field(default_factory=dict)
    # default overlap rules of this model (``energylens.overlap.rules.OverlapPlan``); an execution's
    # own plans replace them
    overlap: tuple = ()
    precision: Precision | None = None  # per-tensor weight formats; None = ``weight_dtype`` for every weight

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpecError("model name", self.name, "a non-empty string")
        for letter, axis in dict(self.sharding).items():
            if letter not in self.dims:
                raise DimensionError("model sharding", letter, "a model dimension: " + ", ".join(sorted(self.dims)))
            if axis is not None and axis not in MESH_AXES:
                raise SpecError(f"model sharding[{letter}]", axis, "one of " + ", ".join(MESH_AXES) + " or none")
        for letter, size in self.dims.items():
            if letter not in self.legend:
                raise DimensionError("model dims", letter, "a letter of the legend: " + ", ".join(sorted(self.legend)))
            if letter in WORKLOAD_DIMS:
                raise DimensionError("model dims", letter, "b, t and s are bound by the workload, not the model")
            if not isinstance(size, int) or size <= 0:
                raise DimensionError(f"model dims[{letter}]", size, "a positive integer")
        for op in self.all_ops():
            for c in op.dims:
                if c not in self.dims and c not in WORKLOAD_DIMS:
                    raise DimensionError(
                        f"op {op.name!r} dimension", c, "a model dimension (" + ", ".join(sorted(self.dims)) + ") or b, t, s"
                    )
        if not self.blocks or any(b.count <= 0 for b in self.blocks):
            raise SpecError("model blocks", [b.count for b in self.blocks], "at least one block with a positive count")
        if self.precision is None:
            object.__setattr__(self, "precision", plain_precision(self.weight_dtype, self.act_dtype, self.kv_dtype,
                                                                  self.weight_names()))

    @property
    def n_layers(self) -> int:
        return sum(b.count for b in self.blocks)

    def all_ops(self) -> tuple[Op, ...]:
        ops: list[Op] = list(self.pre)
        for b in self.blocks:
            ops.extend(b.ops)
        ops.extend(self.post)
        return tuple(ops)

    def weight_names(self) -> list[str]:
        """Names of every weight tensor, in graph order (a name shared by ops, e.g. tied embeddings, once)."""
        return list(dict.fromkeys(t.name for op in self.all_ops() for t in op.inputs if t.role is Role.WEIGHT))

    def weight_format(self, name: str) -> WeightFormat:
        return self.precision.format_of(name)

    def dtype_of(self, tensor: Tensor) -> str:
        if tensor.dtype:
            return tensor.dtype
        if tensor.role is Role.WEIGHT:
            return self.weight_format(tensor.name).storage
        if tensor.role is Role.KV_CACHE:
            return self.kv_dtype
        if tensor.role is Role.TOKENS:
            return "int32"
        return self.act_dtype

    def element_bytes(self, tensor: Tensor) -> float:
        """Bytes per element in HBM; quantised weights include their scales and zero points."""
        if tensor.role is Role.WEIGHT and not tensor.dtype:
            return self.weight_format(tensor.name).bytes_per_element
        return DTYPE_BYTES.get(self.dtype_of(tensor), 4.0)

    def weight_elements(self, ops: tuple[Op, ...]) -> int:
        seen: dict[str, int] = {}
        for op in ops:
            for w in op.weights:
                n = 1
                for c in w.dims:
                    n *= self.dims[c]
                seen[w.name] = n
        return sum(seen.values())

    def param_count(self) -> int:
        """Total parameters (embedding and head included; tied embeddings counted once)."""
        total = self.weight_elements(self.pre) + self.weight_elements(self.post)
        if self.info.get("tied_embeddings"):
            total -= self.dims["v"] * self.dims["d"]
        for b in self.blocks:
            total += b.count * self.weight_elements(b.ops)
        return total

    def with_precision(self, precision: Precision) -> Model:
        """This model with other tensor formats; ``weight_dtype`` becomes the format of the bulk of the weights."""
        from dataclasses import replace

        return replace(self, precision=precision, weight_dtype=precision.headline(self.weight_names()),
                       act_dtype=precision.activation, kv_dtype=precision.kv_cache)

    def with_dtypes(self, weight_dtype: str | None = None, kv_dtype: str | None = None,
                    act_dtype: str | None = None) -> Model:
        """``--weight-dtype`` (attention, MLP and expert weights; bf16/fp16 convert all weights),
        ``--kv-cache-dtype`` and ``--activation-dtype`` applied to this model's precision."""
        if weight_dtype is None and kv_dtype is None and act_dtype is None:
            return self
        return self.with_precision(self.precision.override(self.weight_names(), weight=weight_dtype,
                                                           kv_cache=kv_dtype, activation=act_dtype,
                                                           k=int(self.dims.get("d", 0))))


def is_moe(model: Model) -> bool:
    """A mixture-of-experts model: routed experts (``e``) and tokens per expert (``c``)."""
    return isinstance(model.info.get("moe"), dict) and "e" in model.dims and "c" in model.dims
