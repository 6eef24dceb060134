"""A collective's cost over a grid of layouts (a sweep's TP or pipeline degrees), one call per group size.

``collective_cost`` with arrays of group sizes and node counts sorts every element by its (group size, nodes,
SMs); over a sweep's grid the group sizes take a few values along one or two layout axes, so calling the
one-layout path once per value (or distinct combination) and placing each result gives the same numbers
(element-wise formulas) for a fraction of the work.
"""

from __future__ import annotations

import numpy as np


def by_group_size(collective_cost, kind: str, msg, group, gpu, nodes):
    """``collective_cost`` over layouts whose group size and node count vary along one axis (a sweep's TP or
    pipeline degrees): one call per position along it, each with one group size and node count (the one-layout
    path: the same formulas element by element, the same numbers, without sorting every element by layout)."""
    if np.ndim(group) == 0 and np.ndim(nodes) == 0:  # one layout (a single prediction): nothing to split
        return collective_cost(kind, msg, group, gpu, nodes=nodes)
    msg, group, nodes = (np.asarray(x, dtype=float) for x in (msg, group, nodes))
    shape = np.broadcast_shapes(msg.shape, group.shape, nodes.shape)
    nd = len(shape)
    msg, group, nodes = (x.reshape((1,) * (nd - x.ndim) + x.shape) for x in (msg, group, nodes))
    axes = {i for x in (group, nodes) for i, n in enumerate(x.shape) if n > 1}
    if len(axes) > 1:
        return _by_combination(collective_cost, kind, msg, group, gpu, nodes, shape)
    if not axes:
        return collective_cost(kind, msg, group, gpu, nodes=nodes)
    ax = axes.pop()
    out = [np.empty(shape) for _ in range(3)]
    for i in range(shape[ax]):
        def at(x, i=i):
            return x[(slice(None),) * ax + ((slice(i, i + 1),) if x.shape[ax] > 1 else (slice(0, 1),))]
        cc = collective_cost(kind, at(msg), float(at(group).flat[0]), gpu, nodes=float(at(nodes).flat[0]))
        for o, v in zip(out, (cc.latency_s, cc.energy_j_per_gpu, cc.power_w), strict=True):
            at(o)[...] = v
    return type(cc)(*out)


def _by_combination(collective_cost, kind: str, msg, group, gpu, nodes, shape: tuple):
    """``collective_cost`` where the group size and node count vary along several axes (a sweep's pipeline
    hops over TP x PP degrees): one call per distinct (group size, nodes) over every message, each element then
    taken from its own combination's call (element-wise formulas: the same numbers)."""
    small = np.broadcast_arrays(group, nodes)  # over the layout axes only: a few dozen layouts at most
    pairs = list(zip(small[0].reshape(-1).tolist(), small[1].reshape(-1).tolist(), strict=True))
    combos = list(dict.fromkeys(pairs))
    number = {c: i for i, c in enumerate(combos)}
    which = np.array([number[c] for c in pairs]).reshape(small[0].shape)
    out = [np.empty(shape) for _ in range(3)]
    for c, (gc, nc) in enumerate(combos):
        cc = collective_cost(kind, msg, float(gc), gpu, nodes=float(nc))
        where = which == c
        for o, v in zip(out, (cc.latency_s, cc.energy_j_per_gpu, cc.power_w), strict=True):
            np.copyto(o, v, where=where)
    return type(cc)(*out)
