"""An element-wise formula evaluated once per distinct combination of its arguments on the leading axes.

In a sweep, a decode attention GEMM's batch is ``b g / tp`` (sequences times KV heads per rank): over TP
degrees and batches (powers of two) most of those products repeat, while its other size, the context,
varies along its own trailing axis. :func:`distinct_call` splits the arguments into those that vary along the
last axis (with the axes they vary on) and the others; when the two sets of axes are disjoint and the
others' values repeat (at most half of their combinations distinct), the formula runs on the distinct
combinations times the trailing axes, and each configuration's row is copied back. Every element gets the
same floating-point operations on the same values, so the result is bit for bit that of ``fn(*args)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

MIN_ELEMENTS = 1 << 14  # below this many results, the bookkeeping costs more than the formula


def distinct_call(fn: Callable[..., np.ndarray], args: Sequence) -> np.ndarray:
    """``fn(*args)`` (element-wise over broadcasting arrays), computed per distinct leading combination."""
    arrs = [np.asarray(a, dtype=float) for a in args]
    shape = np.broadcast_shapes(*(a.shape for a in arrs))
    nd = len(shape)
    if nd == 0 or shape[-1] == 1 or int(np.prod(shape)) < MIN_ELEMENTS:
        return fn(*arrs)
    arrs = [a.reshape((1,) * (nd - a.ndim) + a.shape) for a in arrs]
    vary = [{i for i, n in enumerate(a.shape) if n > 1} for a in arrs]
    tail_axes = set().union(*(v for v in vary if nd - 1 in v))
    lead_axes = set().union(*(v for v in vary if nd - 1 not in v))
    if not lead_axes or lead_axes & tail_axes:
        return fn(*arrs)
    lead = [j for j, v in enumerate(vary) if v and nd - 1 not in v]
    lead_shape = tuple(shape[i] if i in lead_axes else 1 for i in range(nd))
    rows = np.stack([np.broadcast_to(arrs[j], lead_shape).reshape(-1) for j in lead], axis=1)
    uniq, inv = np.unique(rows, axis=0, return_inverse=True)
    if 2 * len(uniq) > len(rows):
        return fn(*arrs)
    compact = list(arrs)
    for c, j in enumerate(lead):
        compact[j] = uniq[:, c].reshape((-1,) + (1,) * nd)
    for j in set(range(len(arrs))) - set(lead):
        compact[j] = arrs[j].reshape((1,) + arrs[j].shape)
    r = np.asarray(fn(*compact), dtype=float)  # [distinct, trailing axes (lead axes 1)]
    r = np.broadcast_to(r, (len(uniq),) + tuple(shape[i] if i in tail_axes else 1 for i in range(nd)))
    x = r[inv.reshape(lead_shape)]  # lead_shape + trailing shape
    perm = [k for i in range(nd) for k in (i, nd + i)]  # interleave: each axis is lead or trailing, not both
    return x.transpose(perm).reshape(shape)
