"""Part of a program: the kernels that contain (or do not contain) given ops, costed exactly as in the whole.

A serving iteration (``energylens.serving.iteration_cost``) takes the attention kernels from one
evaluation and every other kernel and the collectives from another; costing each evaluation on only the
kernels it keeps halves the work of a serving sweep. A kernel's cost depends on its own fusion group
(which ops form one kernel) and on whether each tensor it produces is written to memory (read by an op
outside the kernel, or by none); :func:`split_kernels` keeps a part only where both are unchanged, and
otherwise returns the whole program for that part (never a different answer).
"""

from __future__ import annotations

from energylens.cost.kernels import kernel_groups
from energylens.graph.ops import Role
from energylens.parallel.sharding import CollectiveStep, OpStep
from energylens.program import Program

_CACHE: dict[tuple, tuple[Program, Program, Program]] = {}


def _consumers(steps) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for st in steps:
        if isinstance(st, OpStep):
            for t in st.op.inputs:
                out.setdefault(t.name, set()).add(st.op.name)
    return out


def _written(kernel, consumers) -> tuple[bool, ...]:
    """Whether each tensor the kernel produces is written to memory (``cost.kernels._kernel``'s rule)."""
    names = {st.op.name for st in kernel}
    return tuple(bool(consumers.get(st.op.output.name, set()) - names) or not consumers.get(st.op.output.name)
                 or st.op.output.role is not Role.ACTIVATION for st in kernel)


def _part(steps, ops: frozenset[str], keep: bool) -> tuple | None:
    """The steps of the kernels that contain an op of ``ops`` (``keep``) or none of them, plus the
    collectives (``keep=False``); ``None`` where a kept kernel would be costed differently."""
    items = kernel_groups(steps)
    chosen = [it for it in items if (not isinstance(it, CollectiveStep) and any(st.op.name in ops for st in it) == keep)
              or (isinstance(it, CollectiveStep) and not keep)]
    out = tuple(st for it in chosen for st in ([it] if isinstance(it, CollectiveStep) else it))
    regrouped = kernel_groups(out)
    key = [tuple(st.op.name for st in it) if not isinstance(it, CollectiveStep) else it.name for it in regrouped]
    if key != [tuple(st.op.name for st in it) if not isinstance(it, CollectiveStep) else it.name for it in chosen]:
        return None
    full_c, part_c = _consumers(steps), _consumers(out)
    for it in chosen:
        if not isinstance(it, CollectiveStep) and _written(it, full_c) != _written(it, part_c):
            return None
    return out


def split_kernels(program: Program, ops: frozenset[str]) -> tuple[Program, Program]:
    """(the kernels containing an op of ``ops``, the other kernels and every collective) of ``program``;
    either is ``program`` itself where keeping only part would change a kernel's cost."""
    key = (id(program), ops)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is program:
        return hit[1], hit[2]
    parts = []
    for keep in (True, False):
        secs = [_part(program.pre, ops, keep), *(_part(s, ops, keep) for _, s in program.blocks),
                _part(program.post, ops, keep)]
        if any(s is None for s in secs):
            parts.append(program)
            continue
        blocks = tuple((b, s) for (b, _), s in zip(program.blocks, secs[1:-1], strict=True))
        parts.append(Program(secs[0], blocks, secs[-1], program.residual_state))
    if len(_CACHE) > 256:
        _CACHE.clear()
    _CACHE[key] = (program, parts[0], parts[1])
    return parts[0], parts[1]
