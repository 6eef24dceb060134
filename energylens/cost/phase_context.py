"""What a phase evaluation needs of (model, GPU, layout, program) before any size, built once per layout.

``phase_context`` keeps, for a layout of plain integers, per (model, GPU and program objects, every layout
field): the model's dims as arrays, the layout's shard degrees, axis sizes and node counts, the program's
sections and their compiled plans (``cost.plan.compile_sections`` per set of variable sizes), and the
workload-free part of the memory check (``MemoryStatic``: the weights on the most loaded GPU). A single
``predict`` then only binds its sizes. The cache holds at most ``MAX_CONTEXTS`` entries (emptied when full)
and keys on object identity with the objects held, so a different model, GPU or program never shares one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from energylens.cost.plan import compile_memory, compile_sections
from energylens.cost.plan_eval import key_value
from energylens.graph.model import Model
from energylens.hardware.profile import GPU
from energylens.parallel.layout import Layout, degrees
from energylens.parallel.sharding import OpStep
from energylens.program import Program

MAX_CONTEXTS = 256


def axis_sizes(layout: Layout) -> dict[str, np.ndarray]:
    return {a: np.asarray(getattr(layout, a), dtype=float) for a in ("tp", "pp", "dp", "ep")}


def axis_nodes(layout: Layout) -> dict[str, np.ndarray]:
    gpn = float(layout.gpus_per_node)
    tp = np.asarray(layout.tp, dtype=float)
    return {"tp": np.ceil(tp / gpn), "ep": np.ceil(np.asarray(layout.ep, dtype=float) / gpn)}


def monomial_total(monos, vals: dict) -> np.ndarray:
    """Sum of the monomials ``coef x prod(vals[key])`` (floats or arrays, as ``vals`` holds them)."""
    out = np.asarray(0.0)
    for m in monos:
        p = m.coef
        for k in m.keys:
            p = p * vals[k]
        out = out + p
    return out


@dataclass
class PhaseContext:
    """What a phase evaluation needs of (model, GPU, layout, program) before any size: the model's dims, the
    layout's degrees, axis sizes and nodes (with the decode-point axis where the layout is an array), the
    sections and their compiled plans (per set of variable sizes)."""

    model: Model
    gpu: GPU
    program: Program
    dims: dict
    axes: dict
    degs_pt: dict
    axes_pt: dict
    nodes_pt: dict
    pipelined: bool  # any pipeline degree above 1 (else one micro-batch)
    sections: list
    has_c: list  # per section: MoE token-count sizes (``c``) in its ops
    no_c: list
    plans: dict

    def memory(self, workload: tuple) -> tuple:
        """The memory plan (``compile_memory``) and its ``MemoryStatic`` for the sizes ``workload``."""
        hit = self.plans.get(("memory", workload))
        if hit is None:
            plan = compile_memory(self.gpu, self.model, self.program, frozenset(workload))
            hit = self.plans[("memory", workload)] = (plan, MemoryStatic(self.model, plan, self.degs_pt, self.dims,
                                                                          self.axes["pp"], workload))
        return hit

    def compiled(self, variable: frozenset) -> tuple:
        hit = self.plans.get(variable)
        if hit is None:
            hit = self.plans[variable] = compile_sections(self.gpu, self.model,
                                                          [steps for _, steps, _, _ in self.sections], variable)
        return hit


CONTEXTS: dict[tuple, PhaseContext] = {}


def phase_context(model: Model, gpu: GPU, layout: Layout, program: Program, decode: bool) -> PhaseContext:
    """The ``PhaseContext`` of an evaluation; for a layout of plain integers kept per (model, GPU, program objects,
    every layout field): the same numbers, built once."""
    f = (layout.tp, layout.pp, layout.dp, layout.ep, layout.gpus_per_node)
    key = None
    if all(type(v) is int for v in f) and type(layout.sp) is bool and isinstance(layout.axes, dict):
        key = (id(model), id(gpu), id(program), decode, *f, layout.sp, tuple(layout.axes.items()))
        hit = CONTEXTS.get(key)
        if hit is not None and hit.model is model and hit.gpu is gpu and hit.program is program:
            return hit
    axes = axis_sizes(layout)

    def per_point(v):  # decode: layout arrays gain the trailing decode-point axis of the sizes
        v = np.asarray(v)
        return v[..., None] if decode and v.ndim else v

    sections = [("pre", program.pre, 1, "")] + [
        (b.name, steps, b.count, f"{b.name}.") for b, steps in program.blocks
    ] + [("post", program.post, 1, "")]
    ctx = PhaseContext(model, gpu, program, {k: np.asarray(float(v)) for k, v in model.dims.items()}, axes,
                       {k: per_point(v) for k, v in degrees(model, layout).items()},
                       {k: per_point(v) for k, v in axes.items()},
                       {k: per_point(v) for k, v in axis_nodes(layout).items()}, bool(np.any(axes["pp"] > 1)),
                       sections, [any(isinstance(st, OpStep) and "c" in st.op.dims for st in steps)
                                  for _, steps, _, _ in sections], [False] * len(sections), {})
    if key is not None:
        for d in (ctx.dims, ctx.axes, ctx.degs_pt, ctx.axes_pt, ctx.nodes_pt):
            for v in d.values():
                if isinstance(v, np.ndarray):
                    v.setflags(write=False)  # shared by every evaluation of this layout
        if len(CONTEXTS) >= MAX_CONTEXTS:
            CONTEXTS.clear()
        CONTEXTS[key] = ctx
    return ctx


class MemoryStatic:
    """The workload-free part of ``memory_per_gpu`` for one (model, GPU, layout, program): the values of the
    size keys that do not depend on the workload, and the weights on the most loaded GPU (which do not)."""

    def __init__(self, model: Model, plan, degs: dict, dims: dict, pp, workload: tuple) -> None:
        self.model, self.plan = model, plan
        self.arrays = {key: key_value(key, dims, degs) for key in plan.keys if key[0] not in workload}
        self.one = np.ndim(pp) == 0 and all(np.ndim(v) == 0 for v in self.arrays.values())
        self.floats = {k: float(v) for k, v in self.arrays.items()} if self.one else {}
        self.pp = float(pp) if self.one else None
        self.weights_bytes = None
        if self.one:
            vals = self.floats
            self.weights_bytes = self.weights(np.asarray(pp, dtype=float), lambda monos: monomial_total(monos, vals))

    def weights(self, pp, total) -> np.ndarray:
        plan = self.plan
        weights = np.asarray(0.0)
        for count, w_terms, _, _ in plan.blocks:
            weights = weights + total(w_terms) * count / pp
        pre_w, post_w = total(plan.pre_weights), total(plan.post_weights)
        if self.model.info.get("tied_embeddings"):
            edge = np.where(pp > 1, np.maximum(pre_w, post_w), pre_w)
        else:
            edge = np.where(pp > 1, np.maximum(pre_w, post_w), pre_w + post_w)
        return weights + edge
