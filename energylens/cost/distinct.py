"""An element-wise formula evaluated once per distinct combination of its arguments.

In a sweep, a decode attention GEMM's batch is ``b g / tp`` (sequences times KV heads per rank): over TP
degrees and batches (powers of two) most of those products repeat, while its other size, the context,
varies along its own trailing axis; a serving sweep's token-wise GEMMs see ``b + x`` tokens over batches,
prompt and output lengths (about one value in five distinct on the serving benchmark grid) and ``N / tp``
over TP degrees. :func:`distinct_call` splits the arguments into those that vary along the last axis (with
the axes they vary on) and the others; when the two sets of axes are disjoint and the distinct combinations
of each group multiply to at most half the elements, the formula runs on those combinations only and each
configuration's value is gathered back. Every element gets the same floating-point operations on the same
values, so the result is bit for bit that of ``fn(*args)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

MIN_ELEMENTS = 1 << 14  # below this many results, the bookkeeping costs more than the formula


def distinct_call(fn: Callable[..., np.ndarray], args: Sequence) -> np.ndarray:
    """``fn(*args)`` (element-wise over broadcasting arrays), computed per distinct combination of the leading
    arguments times per distinct combination of the trailing ones."""
    arrs = [np.asarray(a, dtype=float) for a in args]
    shape = broadcast_shape(*(a.shape for a in arrs))
    nd = len(shape)
    if nd == 0 or shape[-1] == 1 or math.prod(shape) < MIN_ELEMENTS:
        return fn(*arrs)
    arrs = [a.reshape((1,) * (nd - a.ndim) + a.shape) for a in arrs]
    vary = [{i for i, n in enumerate(a.shape) if n > 1} for a in arrs]
    tail = [j for j, v in enumerate(vary) if nd - 1 in v]
    lead = [j for j, v in enumerate(vary) if v and nd - 1 not in v]
    tail_axes = set().union(*(vary[j] for j in tail))
    lead_axes = set().union(*(vary[j] for j in lead))
    if not lead_axes or lead_axes & tail_axes:
        return fn(*arrs)
    (lu, li, ls), (tu, ti, ts) = (distinct_rows(arrs, members, axes, shape)
                                  for members, axes in ((lead, lead_axes), (tail, tail_axes)))
    if 2 * len(lu) * len(tu) > len(li) * len(ti):
        return fn(*arrs)
    compact = [a.reshape(1, 1) if not vary[j] else a for j, a in enumerate(arrs)]  # constants: one value
    for c, j in enumerate(lead):
        compact[j] = lu[:, c].reshape(-1, 1)
    for c, j in enumerate(tail):
        compact[j] = tu[:, c].reshape(1, -1)
    r = np.broadcast_to(np.asarray(fn(*compact), dtype=float), (len(lu), len(tu)))
    if len(tu) == len(ti) and np.array_equal(ti, np.arange(len(ti))):  # trailing values distinct, in order
        x = r.take(li, axis=0).reshape(ls + ts)  # (one gather of whole rows: a tenth of the 2-D index's cost)
    else:
        x = r[li[:, None], ti[None, :]].reshape(ls + ts)  # leading positions, then trailing positions
    return interleave(x, ls, ts)


def broadcast_shape(*shapes: tuple) -> tuple:
    """``np.broadcast_shapes`` of ``shapes``, without its overhead for shapes of at most one axis (a single
    configuration's points)."""
    n, axis = 1, False
    for sh in shapes:
        if len(sh) > 1:
            return np.broadcast_shapes(*shapes)
        if sh:
            axis = True
            if sh[0] != 1:
                if n not in (1, sh[0]):
                    return np.broadcast_shapes(*shapes)  # raises: they do not broadcast
                n = sh[0]
    return (n,) if axis else ()


def interleave(x: np.ndarray, first: tuple, second: tuple) -> np.ndarray:
    """``x`` of shape ``first + second`` (two groups of the same axes, each axis of size 1 in at least one
    group) as one array of the combined shape: each axis takes its size from the group it varies in."""
    nd = len(first)
    perm = [k for i in range(nd) for k in (i, nd + i)]
    return x.transpose(perm).reshape(tuple(a * b for a, b in zip(first, second, strict=True)))


def distinct_rows(arrs: list, members: list[int], axes: set, shape: tuple) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The distinct value combinations of ``members`` over their ``axes`` (rows), each position's row, and the
    group's shape (1 off its axes). One argument strictly increasing along one axis (a sweep's distinct
    contexts) is distinct already: no sort."""
    gshape = tuple(shape[i] if i in axes else 1 for i in range(len(shape)))
    rows = np.empty((math.prod(gshape), len(members)))
    cols = rows.reshape(gshape + (len(members),))  # a view: each column filled by a broadcasting assignment
    for c, j in enumerate(members):
        cols[..., c] = arrs[j]
    if len(members) == 1 and len(axes) == 1 and bool(np.all(rows[1:, 0] > rows[:-1, 0])):
        return rows, np.arange(len(rows)), gshape
    uniq, inv = unique_rows(rows)
    return uniq, inv, gshape


def unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of a 2-D float array (bit patterns compared, as ``np.unique(rows, axis=0)``) and each
    row's position among them, ordered by first appearance. The columns' bit patterns are mixed into one
    integer per row and those sorted (one 1-D sort instead of ``np.unique``'s sort of rows as byte strings,
    about ten times slower); where two different rows share a mixed value, each column is coded by its own
    sort and the codes combined exactly."""
    n, k = rows.shape
    bits = np.ascontiguousarray(rows, dtype=float).view(np.int64)
    mixed = bits[:, 0].copy()
    for c in range(1, k):
        mixed *= _MIX  # wraps modulo 2^64: a hash, checked below
        mixed ^= bits[:, c]
    first, inv = _groups(mixed)
    if not np.array_equal(bits[first][inv], bits):  # a collision: exact codes, column by column
        code = np.zeros(n, dtype=np.int64)
        span = 1
        for c in range(k):
            u, ci = np.unique(bits[:, c], return_inverse=True)
            if span * len(u) >= 1 << 62:  # the combined code would overflow: number the combinations so far
                u0, code = np.unique(code, return_inverse=True)
                span = len(u0)
            code = code * len(u) + ci.reshape(-1)
            span *= len(u)
        first, inv = _groups(code)
    return rows[first], inv


def _groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Groups of equal values of an integer array, numbered in order of first appearance: each group's first
    position and each element's group."""
    order = np.argsort(key)
    ks = key[order]
    starts = np.flatnonzero(np.concatenate(([True], ks[1:] != ks[:-1])))
    first = np.minimum.reduceat(order, starts)  # each group's earliest position (the sort need not be stable)
    by_first = np.argsort(first)
    rank = np.empty(len(first), dtype=np.intp)
    rank[by_first] = np.arange(len(first))
    gid = np.cumsum(np.concatenate(([False], ks[1:] != ks[:-1])))  # sorted position -> group (in value order)
    inv = np.empty(len(key), dtype=np.intp)
    inv[order] = rank[gid]
    return first[by_first], inv


_MIX = np.int64(0x5851F42D4C957F2D)  # an odd 64-bit multiplier (a linear congruential generator's)
