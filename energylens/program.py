"""Per-rank programs: the model's ops sharded by a layout, with derived collectives.

``build_program`` is pure and cached per (model, which axes are parallel, sequence parallelism, whether
expert groups lie inside the tensor-parallel group):
the sizes and shard degrees are bound later, so one program serves a whole sweep.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.graph.model import Block, Model
from energylens.parallel.layout import Layout, model_axes
from energylens.parallel.sharding import Deriver, Step, TensorState, derive_block


@dataclass(frozen=True)
class Program:
    pre: tuple[Step, ...]
    blocks: tuple[tuple[Block, tuple[Step, ...]], ...]
    post: tuple[Step, ...]
    residual_state: TensorState  # sharding of the residual stream between layers (pipeline messages)


def active_axes(model: Model, layout: Layout) -> dict[str, str]:
    """dim -> axis for axes whose degree exceeds 1 somewhere (inactive axes derive no collectives)."""
    out = {}
    for dim, axis in model_axes(model, layout).items():
        if dim in model.dims and np.any(layout.axis_size(axis) > 1):
            out[dim] = axis
    return out


def local_experts_mask(model: Model, layout: Layout) -> np.ndarray:
    """True where the tokens are the same on every rank of an expert-parallel group: the group lies
    inside one replica's tensor-parallel group (``ep > 1`` divides ``tp``; ``dp`` does not enter it)
    and sequence parallelism does not split the tokens over ``tp``. The dispatch is then local and the
    combine one all-reduce over ``tp`` (``parallel.sharding``), as vLLM runs expert parallelism with
    data-parallel size 1; elsewhere the tokens differ across the group and travel by all-to-all."""
    axis = model_axes(model, layout).get("e")
    tp = np.asarray(layout.tp)
    if "e" not in model.dims or not axis or layout.sp:
        return np.zeros(np.shape(tp), dtype=bool)
    ep = layout.axis_size(axis)
    return (ep > 1) & (tp % ep == 0)


def local_experts(model: Model, layout: Layout) -> bool:
    """``local_experts_mask`` of a layout whose configurations all agree (a scalar layout, or a group
    of layouts with one program); ValueError where they differ (evaluate them in separate groups)."""
    mask = local_experts_mask(model, layout)
    if mask.size and np.any(mask) != np.all(mask):
        raise ValueError("layout arrays mix expert groups inside and across the tp group; they need "
                         "separate programs (group them by program.local_experts_mask)")
    return bool(np.all(mask)) if mask.size else False


_CACHE: dict[tuple, tuple[Model, Program]] = {}


def build_program(model: Model, layout: Layout, *, local: bool | None = None) -> Program:
    """The program of ``layout``; ``local`` overrides ``local_experts(model, layout)`` (a sweep block
    whose placeholder entries for invalid configurations would disagree with its valid ones)."""
    axes = active_axes(model, layout)
    sp = bool(layout.sp and "tp" in axes.values())
    local = local_experts(model, layout) if local is None else bool(local)
    key = (id(model), tuple(sorted(axes.items())), sp, local)
    if key in _CACHE and _CACHE[key][0] is model:
        return _CACHE[key][1]
    d = Deriver(axes, sp, local_experts=local)
    pre = d.derive(model.pre)
    state = d.state.get("x", TensorState())
    blocks = []
    for block in model.blocks:
        steps, state = derive_block(block.ops, axes, sp=sp, input_name=block.input, output_name=block.output,
                                    input_state=state, local_experts=local)
        blocks.append((block, tuple(steps)))
    d2 = Deriver(axes, sp, {"x": state}, local)
    post = d2.derive(model.post)
    prog = Program(tuple(pre), tuple(blocks), tuple(post), state)
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (model, prog)
    return prog
