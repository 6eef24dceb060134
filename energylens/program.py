"""Per-rank programs: the model's ops sharded by a layout, with derived collectives.

``build_program`` is pure and cached per (model, which axes are parallel, sequence parallelism):
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


_CACHE: dict[tuple, tuple[Model, Program]] = {}


def build_program(model: Model, layout: Layout) -> Program:
    axes = active_axes(model, layout)
    sp = bool(layout.sp and "tp" in axes.values())
    key = (id(model), tuple(sorted(axes.items())), sp)
    if key in _CACHE and _CACHE[key][0] is model:
        return _CACHE[key][1]
    d = Deriver(axes, sp)
    pre = d.derive(model.pre)
    state = d.state.get("x", TensorState())
    blocks = []
    for block in model.blocks:
        steps, state = derive_block(block.ops, axes, sp=sp, input_name=block.input, output_name=block.output,
                                    input_state=state)
        blocks.append((block, tuple(steps)))
    d2 = Deriver(axes, sp, {"x": state})
    post = d2.derive(model.post)
    prog = Program(tuple(pre), tuple(blocks), tuple(post), state)
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (model, prog)
    return prog
