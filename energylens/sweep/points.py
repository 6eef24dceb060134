"""Decode sample points of a sweep folded onto their distinct context lengths.

A decode phase is summed over sample points: step ``i`` of a request attends over ``s = prompt_len + i + 1``
keys (``workload.decode_sizes``: the exact steps up to ``DECODE_POINTS``, else a midpoint rule). Over a
grid of prompt lengths ``P`` and output lengths ``O`` that is ``P x O x DECODE_POINTS`` contexts, but they
repeat: with prompts on a step of 128 and outputs on a step of 64, ``p + o (2k + 1) / 32 + 1/2`` takes
14 % of those values on the length-heavy grid of ``benchmarks/bench_speed.py`` and 6.5 % on the 95 M grid. The sweep then
costs every kernel over the distinct contexts only (``s`` on one trailing axis of length ``S``) and a
:class:`FoldedPoints` in place of the point weights sums each configuration's points by looking its
contexts up: ``sum_k w[o, k] x[..., index[p, o, k]]``. A kernel that does not read ``s`` (a weight GEMM)
keeps a trailing axis of 1 and is multiplied by the summed weights. The sums are those of the unfolded
points, up to the order of floating-point additions (relative 1e-16).

``cost.phase.evaluate_phase`` and ``cost.plan_eval`` read the object through ``reduce_points`` and
``out_shape`` only (duck typing: the cost core does not import the sweep).
"""

from __future__ import annotations

import numpy as np

FOLD_MAX_SHARE = 0.75  # fold only when the distinct contexts are at most this share of the points (measured on
# the layout-heavy grid of benchmarks/bench_speed.py, 64 % distinct: folded 10-15 % faster than unfolded; with no
# repeats the lookups only add work)
SPARSE_MIN_ELEMENTS = 1 << 16  # values looked up from which the points are summed as one sparse product (measured
# on the length-heavy grid: 2.4 against 5.8 ms for its 160 rows of 4,575 contexts; smaller arrays keep the lookups,
# and sweeps that never reach it never import scipy.sparse)
ROW_BLOCK = 8  # rows looked up together (measured on the length-heavy and 95 M grids: 8 rows of the folded
# cost table stay in cache, about twice as fast as all rows at once)


class FoldedPoints:
    """Point weights of a decode evaluation whose ``s`` axis holds distinct contexts.

    ``index``: ``[P, O, K]`` positions of each point's context on the folded axis; ``weights``: point
    weights broadcasting with ``index`` (steps per point). Arrays reduced here have the grid's axes with
    ``P`` and ``O`` of length 1 and a trailing axis of length ``S`` (context-dependent) or 1."""

    def __init__(self, index: np.ndarray, weights: np.ndarray) -> None:
        w = np.asarray(weights, dtype=float)
        w = w.reshape(w.shape[-3:]) if w.ndim > 3 else w
        self.out_shape = index.shape[:-1]
        self.total = np.sum(w, axis=-1)  # steps of each (prompt, output) pair: broadcasts with [P, O]
        # one contiguous index row per point k (a strided index costs NumPy's take twice as much)
        self.rows = np.ascontiguousarray(np.moveaxis(index, -1, 0)).reshape(index.shape[-1], -1)
        full = np.broadcast_to(w, index.shape)
        self.uniform = bool(np.all(full == full[..., :1]))  # the midpoint rule: every point of a pair weighs alike
        self.w = [w[..., k] if w.shape[-1] > 1 else w[..., 0] for k in range(index.shape[-1])]
        self._lookup = self._scale = None  # the sparse lookup matrix, built on first use (``_sparse_sum``)

    def reduce_points(self, x, lead: int = 0) -> np.ndarray:
        """``x`` summed over the decode points; ``lead`` leading axes of ``x`` are not configuration axes."""
        x = np.asarray(x, dtype=float)
        nd = len(self.out_shape) + 1
        if x.ndim - lead < nd:  # configuration axes missing in front: pad after the leading ones
            x = x.reshape(x.shape[:lead] + (1,) * (nd - x.ndim + lead) + x.shape[lead:])
        if x.shape[-1] == 1:  # does not read the context: the same cost at every point
            return x[..., 0] * self.total
        if any(n != 1 for n in x.shape[-nd:-1]):
            raise ValueError("folded decode points need arrays constant along the prompt and output axes")
        front = x.shape[:-nd]
        x2 = x.reshape(-1, x.shape[-1])
        if self.uniform and x2.size >= SPARSE_MIN_ELEMENTS:
            return self._sparse_sum(x2).reshape(front + self.out_shape)
        out = np.empty((len(x2),) + self.out_shape)
        for r0 in range(0, len(x2), ROW_BLOCK):  # a few rows at a time: their lookups stay in cache
            xb = x2[r0:r0 + ROW_BLOCK]
            shape = (len(xb),) + self.out_shape
            acc = np.take(xb, self.rows[0], axis=1).reshape(shape)
            if not self.uniform:
                acc *= self.w[0]
            for k in range(1, len(self.rows)):
                g = np.take(xb, self.rows[k], axis=1).reshape(shape)
                acc += g if self.uniform else g * self.w[k]
            out[r0:r0 + ROW_BLOCK] = acc * self.w[0] if self.uniform else acc
        return out.reshape(front + self.out_shape)


    def _sparse_sum(self, x2: np.ndarray) -> np.ndarray:
        """``[row, S]`` -> ``[row, P O]``: each pair's points summed as one sparse product (a 0/1 matrix over the
        folded contexts, its entries in point order), then scaled by the pair's point weight: the additions and
        the product of the lookup loop above, in the same order (the same numbers, bit for bit), in one call."""
        if self._lookup is None:
            from scipy import sparse

            k, n = self.rows.shape
            cols = np.ascontiguousarray(self.rows.T).reshape(-1)  # [pair, point]
            self._lookup = sparse.csr_matrix((np.ones(n * k), cols, np.arange(0, n * k + 1, k)),
                                             shape=(n, int(cols.max()) + 1))
            self._scale = np.broadcast_to(self.w[0], self.out_shape).reshape(-1, 1)
        if x2.shape[1] != self._lookup.shape[1]:
            raise ValueError("folded decode points need arrays over every folded context")
        y = self._lookup @ np.ascontiguousarray(x2.T)  # [pair, row]
        y *= self._scale
        return np.ascontiguousarray(y.T)


def fold_contexts(s: np.ndarray, weights: np.ndarray, max_share: float | None = None,
                  ) -> tuple[np.ndarray, FoldedPoints] | None:
    """``s`` (``[..., P, O, K]`` decode contexts, leading axes of length 1) folded onto its distinct values:
    (the values on a trailing axis, shaped like ``s`` with every other axis 1; the points), or None where
    the distinct values exceed ``max_share`` of the points (folding would not pay)."""
    s = np.asarray(s, dtype=float)
    if s.ndim < 3 or any(n != 1 for n in s.shape[:-3]):
        return None
    flat = s.reshape(s.shape[-3:])
    values, inv = _distinct(flat)
    if len(values) > (FOLD_MAX_SHARE if max_share is None else max_share) * flat.size:
        return None
    folded = values.reshape((1,) * (s.ndim - 1) + (-1,))
    return folded, FoldedPoints(inv.reshape(flat.shape), weights)


def _distinct(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of ``s`` and each element's position among them. Contexts are integers plus
    multiples of 1/32 (``workload.decode_sizes``), so a table over ``32 s`` finds them in linear time; other
    values take a sort."""
    q = s * 32.0
    key = q.astype(np.int64)
    if key.size and np.array_equal(key, q):
        lo = int(key.min())
        span = int(key.max()) - lo + 1
        if span <= 8 * key.size + 1024:
            present = np.zeros(span, dtype=bool)
            rel = key - lo
            present[rel] = True
            pos = np.cumsum(present) - 1
            values = (np.flatnonzero(present) + lo) / 32.0
            return values, pos[rel]
    values, inv = np.unique(s, return_inverse=True)
    return values, inv.reshape(s.shape)
