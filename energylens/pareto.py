"""Non-dominated (Pareto-optimal) sets, vectorised.

A point ``a`` *dominates* ``b`` when it is at least as good in every objective and strictly better
in one. ``pareto_mask`` marks the points no other point dominates. Points that are equal in every
objective do not dominate each other, so duplicates of a Pareto-optimal point are all kept.

* two objectives: sort once (lexicographically), then a running minimum: O(n log n);
* more objectives: repeated filtering by the current best point, O(n x front size) NumPy work.

Objectives are minimised by default; ``minimize`` may be one bool for all columns or one per
column (``False`` = maximise that column, e.g. throughput).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from energylens.errors import DimensionError


def _oriented(objectives, minimize: bool | Sequence[bool]) -> np.ndarray:
    """The objectives as a float [n, m] array in which smaller is better in every column."""
    obj = np.asarray(objectives, dtype=float)
    if obj.ndim == 1:
        obj = obj[:, None]
    if obj.ndim != 2:
        raise DimensionError("objectives", f"array of shape {obj.shape}", "a 2-D array [n points, m objectives]")
    if obj.shape[1] == 0 and obj.shape[0] > 0:
        raise DimensionError("objectives", f"array of shape {obj.shape}", "at least one objective column")
    if np.any(np.isnan(obj)):
        row = int(np.argwhere(np.isnan(obj))[0, 0])
        raise DimensionError(f"objectives[{row}]", obj[row].tolist(), "numbers (NaN cannot be ranked)")
    if isinstance(minimize, (bool, np.bool_)):
        sign = np.full(obj.shape[1], 1.0 if minimize else -1.0)
    else:
        flags = list(minimize)
        if len(flags) != obj.shape[1]:
            raise DimensionError("minimize", flags, f"one bool, or one bool per objective ({obj.shape[1]})")
        sign = np.where(np.asarray(flags, dtype=bool), 1.0, -1.0)
    return obj * sign


def _mask_2d(obj: np.ndarray) -> np.ndarray:
    x, y = obj[:, 0], obj[:, 1]
    order = np.lexsort((y, x))  # by x, then y
    xs, ys = x[order], y[order]
    n = len(xs)
    # best y among points with strictly smaller x: running minimum up to the start of each x-run
    new_run = np.ones(n, dtype=bool)
    new_run[1:] = xs[1:] != xs[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0))
    cummin = np.minimum.accumulate(ys)
    before = cummin[np.maximum(run_start - 1, 0)]  # min y over x' < x (when there is such a point)
    # a point with smaller x and no worse y, or one with the same x and a better y
    dominated = ((run_start > 0) & (before <= ys)) | (ys[run_start] < ys)
    mask = np.empty(n, dtype=bool)
    mask[order] = ~dominated
    return mask


def _mask_nd(obj: np.ndarray) -> np.ndarray:
    n = obj.shape[0]
    order = np.lexsort(obj.T[::-1])  # lexicographic: a point can only be dominated by earlier ones
    pts = obj[order]
    alive = np.arange(n)
    i = 0
    while i < len(alive):
        p = pts[alive[i]]
        rest = pts[alive]
        # keep points better than p somewhere, or equal to p everywhere (p itself, duplicates)
        keep = np.any(rest < p, axis=1) | np.all(rest == p, axis=1)
        alive = alive[keep]
        i = int(np.count_nonzero(keep[:i])) + 1
    mask = np.zeros(n, dtype=bool)
    mask[order[alive]] = True
    return mask


def pareto_mask(objectives, minimize: bool | Sequence[bool] = True) -> np.ndarray:
    """Boolean mask [n] of the non-dominated rows of ``objectives`` [n, m].

    ``minimize``: True (all minimised), False (all maximised) or one bool per column. Infinite
    values are ranked like any number; NaN raises ``DimensionError``. An empty input gives an
    empty mask; a single objective keeps every point equal to the minimum.
    """
    obj = _oriented(objectives, minimize)
    n, m = obj.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if m == 1:
        return obj[:, 0] == obj[:, 0].min()
    if m == 2:
        return _mask_2d(obj)
    return _mask_nd(obj)


def pareto_mask_grouped(groups, objectives, minimize: bool | Sequence[bool] = True) -> np.ndarray:
    """``pareto_mask`` of two objectives within each group (``groups``: integer ids, one per row), for
    all groups in one pass: sort by (group, x, y), then a running minimum of y that restarts at each
    group (earlier groups get larger keys, so the running minimum of integer keys never crosses into
    the next group)."""
    obj = _oriented(objectives, minimize)
    n, m = obj.shape
    if m != 2:
        raise DimensionError("objectives", f"array of shape {obj.shape}", "two objective columns")
    g = np.asarray(groups, dtype=np.int64).reshape(-1)
    if g.shape[0] != n:
        raise DimensionError("groups", f"array of shape {g.shape}", f"one group id per row ({n})")
    if n == 0:
        return np.zeros(0, dtype=bool)
    padded = _padded_groups(g)
    if padded is not None:  # groups as the rows of a 2-D array (+inf where a group has fewer points)
        order, row, col, shape = padded
        x, y = np.full(shape, np.inf), np.full(shape, np.inf)
        x[row, col], y[row, col] = obj[order, 0], obj[order, 1]
        mask = np.empty(n, dtype=bool)
        mask[order] = pareto_mask_rows(x, y)[row, col]
        return mask
    order = np.lexsort((obj[:, 1], obj[:, 0], g))
    gs, xs, ys = g[order], obj[order, 0], obj[order, 1]
    pos = np.arange(n)
    new_grp = np.ones(n, dtype=bool)
    new_grp[1:] = gs[1:] != gs[:-1]
    new_run = new_grp.copy()
    new_run[1:] |= xs[1:] != xs[:-1]
    run_start = np.maximum.accumulate(np.where(new_run, pos, 0))
    grp_start = np.maximum.accumulate(np.where(new_grp, pos, 0))
    by_y = np.argsort(ys, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[by_y] = pos
    grp_no = np.cumsum(new_grp)  # 1, 2, ... in sorted order
    key = (grp_no[-1] - grp_no) * n + rank
    best = ys[by_y[np.minimum.accumulate(key) % n]]  # min y so far within the group
    before = best[np.maximum(run_start - 1, 0)]
    dominated = ((run_start > grp_start) & (before <= ys)) | (ys[run_start] < ys)
    mask = np.empty(n, dtype=bool)
    mask[order] = ~dominated
    return mask


PAD_MAX_SHARE = 4  # groups go to 2-D rows while rows x the largest group are at most this many times the points


def _padded_groups(g: np.ndarray) -> tuple | None:
    """Points by group (a stable radix sort of the ids), each group one row, its points in columns: (order of the
    points, their row and column, the array's shape), or None where the ids are not small non-negative integers
    or the groups differ so much in size that the padded array would be large."""
    lo, hi = int(g.min()), int(g.max())
    if lo < 0 or hi >= 1 << 16:
        return None
    counts = np.bincount(g)
    width = int(counts.max())
    if len(counts) * width > PAD_MAX_SHARE * len(g) + 1024:
        return None
    order = np.argsort(g.astype(np.uint16), kind="stable")  # (a radix sort for 16-bit keys)
    row = g[order]
    col = np.arange(len(g)) - (np.cumsum(counts) - counts)[row]
    return order, row, col, (len(counts), width)


def pareto_mask_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``pareto_mask_grouped`` of two minimised objectives where each row of the 2-D arrays ``x``, ``y`` is one
    group (groups of equal size: a sweep chunk's workloads, each over the same layouts): each row sorted by x on
    its own, no sort across groups. Values must not be NaN."""
    g, m = x.shape
    if m == 0:
        return np.zeros((g, 0), dtype=bool)
    order = np.argsort(x, axis=1)  # each row by x (points of equal x in any order: a run)
    xs, ys = np.take_along_axis(x, order, 1), np.take_along_axis(y, order, 1)
    new_run = np.ones((g, m), dtype=bool)
    new_run[:, 1:] = xs[:, 1:] != xs[:, :-1]
    flat = new_run.reshape(-1)
    starts = np.flatnonzero(flat)
    run_min = np.minimum.reduceat(ys.reshape(-1), starts)[np.cumsum(flat) - 1].reshape(g, m)  # best y of its run
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(m), 0), axis=1)
    before = np.take_along_axis(np.minimum.accumulate(ys, axis=1), np.maximum(run_start - 1, 0), 1)  # x' < x
    # a point with smaller x and no worse y, or one with the same x and a better y
    dominated = ((run_start > 0) & (before <= ys)) | (run_min < ys)
    mask = np.empty((g, m), dtype=bool)
    np.put_along_axis(mask, order, ~dominated, 1)
    return mask


def pareto_front(objectives, minimize: bool | Sequence[bool] = True) -> np.ndarray:
    """Indices of the non-dominated rows, sorted by the first objective (then the others)."""
    obj = _oriented(objectives, minimize)
    idx = np.flatnonzero(pareto_mask(obj, True))
    if idx.size == 0:
        return idx
    keys = obj[idx].T[::-1]
    return idx[np.lexsort(keys)]


def dominates(a, b, minimize: bool | Sequence[bool] = True) -> bool:
    """True when point ``a`` dominates point ``b`` (no worse everywhere, strictly better somewhere)."""
    pts = _oriented(np.vstack([np.asarray(a, dtype=float), np.asarray(b, dtype=float)]), minimize)
    return bool(np.all(pts[0] <= pts[1]) and np.any(pts[0] < pts[1]))
