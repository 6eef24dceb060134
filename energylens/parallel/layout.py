"""A ``Layout`` maps named dimensions to mesh axes (tp, ep, pp, dp) and checks the split divides.

Megatron tensor parallelism: query heads, key/value heads, the FFN and the vocabulary are split
over ``tp`` (column-parallel QKV/gate/up, row-parallel output/down projections); experts over
``ep``; decoder layers over ``pp`` stages; the batch over ``dp`` replicas. When ``tp`` exceeds
the number of key/value heads (and is a multiple of it), each KV head is replicated on
``tp / kv_heads`` ranks, as vLLM and Megatron do, and the query heads of a group are split instead.

Fields may be NumPy integer arrays (a sweep over layouts); ``degrees`` then returns arrays and
``valid_mask`` says which configurations divide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from energylens.errors import LayoutError
from energylens.graph.model import Model

DEFAULT_AXES: dict[str, str] = {"g": "tp", "r": "tp", "f": "tp", "v": "tp", "e": "ep",
                                # MoE models (energylens.models.moe): dense-layer FFN width u, shared-expert width j
                                "u": "tp", "j": "tp"}


@dataclass(frozen=True)
class Layout:
    tp: int | np.ndarray = 1
    pp: int | np.ndarray = 1
    dp: int | np.ndarray = 1
    ep: int | np.ndarray = 1
    sp: bool = False  # sequence parallelism: reduce-scatter + all-gather instead of all-reduce
    gpus_per_node: int = 8
    axes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_AXES))

    def __post_init__(self) -> None:
        from energylens.checks import MAX_DEGREE, boolean, integer

        for name in ("tp", "pp", "dp", "ep"):
            v = getattr(self, name)
            if isinstance(v, np.ndarray):  # a sweep over layouts: integer arrays
                if v.dtype.kind not in "iu" or v.size == 0 or np.any(v < 1) or np.any(v > MAX_DEGREE):
                    raise LayoutError(name, v, f"positive integers up to {MAX_DEGREE} (1 = not parallel)")
            else:
                integer(name, v, low=1, high=MAX_DEGREE, error=LayoutError,
                        what=f"a positive integer up to {MAX_DEGREE} (1 = not parallel; not a float or bool)")
        boolean("sp", self.sp, error=LayoutError)
        integer("gpus_per_node", self.gpus_per_node, low=1, high=MAX_DEGREE, error=LayoutError)

    @property
    def num_gpus(self):
        return np.asarray(self.tp) * np.asarray(self.pp) * np.asarray(self.dp)

    def axis_size(self, axis: str):
        return np.asarray(getattr(self, axis))

    def to_dict(self) -> dict:
        def conv(v):
            return v.tolist() if isinstance(v, np.ndarray) else v

        return {"tp": conv(self.tp), "pp": conv(self.pp), "dp": conv(self.dp), "ep": conv(self.ep),
                "sp": self.sp, "gpus_per_node": self.gpus_per_node, "num_gpus": conv(self.num_gpus)}


def model_axes(model: Model, layout: Layout) -> dict[str, str]:
    """dim -> mesh axis for this model: the layout's map with the model's own ``sharding`` overrides
    applied (an override to ``None`` keeps that dimension whole on every rank)."""
    axes = {**layout.axes, **dict(model.sharding)}
    return {d: a for d, a in axes.items() if a is not None}


# dims whose divisibility ``validate`` checks with a specific message; others mapped to an axis get a
# generic check (the vocabulary is padded: a rank holds ceil(v / tp) rows)
_CHECKED_DIMS = ("g", "r", "f", "u", "j", "e", "v")


def degrees(model: Model, layout: Layout) -> dict[str, np.ndarray]:
    """Shard degree of each model dimension (1 = whole). ``t`` gets ``tp`` under sequence parallelism."""
    tp = np.asarray(layout.tp)
    axes = model_axes(model, layout)
    out: dict[str, np.ndarray] = {}
    for dim, axis in axes.items():
        if dim in model.dims:
            out[dim] = layout.axis_size(axis)
    if "g" in out and "r" in out and axes.get("g") == axes.get("r") == "tp":
        g = model.dims["g"]
        replicate = tp > g
        out["g"] = np.where(replicate, g, tp)
        out["r"] = np.where(replicate, tp // g, 1)
    if layout.sp:
        out["t"] = tp
    return out


def check_layout(model: Model, layout: Layout, *, strict: bool = True) -> np.ndarray:
    """True where the layout divides the model. With ``strict`` the first failure raises LayoutError."""
    ok = np.ones(np.broadcast(np.asarray(layout.tp), np.asarray(layout.pp), np.asarray(layout.dp),
                              np.asarray(layout.ep)).shape, dtype=bool)
    tp = np.asarray(layout.tp)

    def check(cond, field_name: str, value, allowed: str) -> None:
        nonlocal ok
        cond = np.asarray(cond)
        if strict and not np.all(cond):
            bad = np.asarray(value).item() if np.ndim(value) == 0 else np.asarray(value)[~np.broadcast_to(cond, np.shape(value))].tolist()
            raise LayoutError(field_name, bad, allowed)
        ok = ok & cond

    dims = model.dims
    axes = model_axes(model, layout)
    if "g" in dims and "r" in dims and axes.get("g") == axes.get("r") == "tp":
        heads = dims["g"] * dims["r"]
        g = dims["g"]
        check(heads % tp == 0, "tp", tp, f"a divisor of the {heads} attention heads (dimension g*r) of {model.name}")
        check((g % tp == 0) | (tp % g == 0), "tp", tp,
              f"a divisor or a multiple of the {g} key/value heads (dimension g) of {model.name}")
    if "f" in dims and axes.get("f") == "tp":
        check(dims["f"] % tp == 0, "tp", tp, f"a divisor of the FFN size f={dims['f']} of {model.name}")
    for letter in ("u", "j"):  # extra FFN widths of MoE models (dense layers, shared experts)
        if letter in dims and axes.get(letter) == "tp":
            check(dims[letter] % tp == 0, "tp", tp, f"a divisor of the FFN size {letter}={dims[letter]} of {model.name}")
    if "e" in dims:
        ep = np.asarray(layout.ep)
        check(dims["e"] % ep == 0, "ep", ep, f"a divisor of the {dims['e']} experts (dimension e) of {model.name}")
        check((tp * np.asarray(layout.dp)) % ep == 0, "ep", ep,
              "a divisor of tp*dp (expert-parallel ranks are the GPUs of one pipeline stage)")
    elif np.any(np.asarray(layout.ep) > 1):
        check(np.asarray(layout.ep) == 1, "ep", layout.ep, f"1: {model.name} has no experts")
    for letter, axis in sorted(axes.items()):  # dims a model's own sharding maps to an axis
        if letter in dims and letter not in _CHECKED_DIMS:
            deg = layout.axis_size(axis)
            check(dims[letter] % deg == 0, axis, deg,
                  f"a divisor of dimension {letter}={dims[letter]} of {model.name} (sharded over {axis})")
    gpn = int(layout.gpus_per_node)
    for axis in ("tp", "ep"):  # a group larger than a node spans whole nodes: its GPUs split evenly over them
        size = np.asarray(getattr(layout, axis))
        nodes = -(-size // gpn)
        even = (size <= 1) | (size % nodes == 0)
        if strict and not np.all(even):
            bad = int(size[~even].flat[0]) if size.ndim else int(size)
            raise LayoutError("gpus_per_node", gpn, f"a node size that splits {axis}={bad} evenly over its "
                              f"{-(-bad // gpn)} nodes (e.g. a divisor of {bad})")
        ok = ok & even
    pp = np.asarray(layout.pp)
    for block in model.blocks:
        check(block.count % pp == 0 if len(model.blocks) == 1 else model.n_layers % pp == 0, "pp", pp,
              f"a divisor of the {model.n_layers} decoder layers of {model.name}")
    return ok
