"""A serving iteration's token-wise costs evaluated once per distinct argument combination.

In a serving sweep (:mod:`energylens.sweep.serving_cols`) the token-wise kernels and collectives of an
iteration (:func:`energylens.serving.iteration_cost`) see ``B / pp`` sequences carrying ``(B + x) / B``
tokens each, over the pipeline degree, the running batch, the prompt and the output length: on the
layout-heavy grid of ``benchmarks/bench_speed.py`` about one (pp, B, x) combination in three is
distinct at the mean prefill load and one in thirty at the median. :func:`fold_call` finds the distinct
combinations of the arguments (and of the layout degrees that vary on the same grid axes, such as ``pp``)
with :func:`energylens.cost.distinct` row search, evaluates the function on those only (on one trailing
axis; the other layout axes, such as ``tp``, stay as they are) and gathers each configuration's values
back. Every element gets the same floating-point operations on the same values as the unfolded
evaluation: the results are bit for bit those of ``fn(layout, *args)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from energylens.cost.distinct import distinct_rows, interleave

DEGREES = ("tp", "pp", "dp", "ep")
MIN_POINTS = 2048  # below this many argument combinations the bookkeeping costs more than it saves
MAX_SHARE = 0.5  # fold only when the distinct combinations are at most this share of them


def fold_call(fn: Callable[..., tuple], layout, args: Sequence) -> tuple:
    """``fn(layout, *args)`` (a tuple of arrays, or None, element-wise over the broadcast arguments and the
    layout's degrees), computed once per distinct combination of ``args`` and the layout degrees varying on
    the axes the arguments vary on."""
    arrs = [np.asarray(a, dtype=float) for a in args]
    degs = {n: np.asarray(getattr(layout, n)) for n in DEGREES if np.ndim(getattr(layout, n)) > 0}
    shape = np.broadcast_shapes(*(a.shape for a in arrs), *(d.shape for d in degs.values()))
    nd = len(shape)
    if nd == 0:
        return fn(layout, *args)

    def pad(a: np.ndarray) -> np.ndarray:
        return a.reshape((1,) * (nd - a.ndim) + a.shape)

    arrs = [pad(a) for a in arrs]
    degs = {n: pad(d) for n, d in degs.items()}
    axes = {i for a in arrs for i, n in enumerate(a.shape) if n > 1}
    folded = [n for n, d in degs.items() if any(d.shape[i] > 1 for i in axes)]
    points = int(np.prod([shape[i] for i in axes])) if axes else 1
    if nd - 1 not in axes or points < MIN_POINTS or any(
            degs[n].shape[i] > 1 for n in folded for i in range(nd) if i not in axes):
        return fn(layout, *args)
    if max(np.unique(a).size for a in arrs) > MAX_SHARE * points:  # one argument alone repeats too little
        return fn(layout, *args)
    members = arrs + [degs[n] for n in folded]
    uniq, inv, gshape = distinct_rows(members, list(range(len(members))), axes, shape)
    if len(uniq) > MAX_SHARE * points:
        return fn(layout, *args)
    lead = (1,) * (nd - 1)
    compact_args = [uniq[:, c].reshape(lead + (-1,)) for c in range(len(arrs))]
    compact_layout = replace(layout, **{n: uniq[:, len(arrs) + c].astype(degs[n].dtype).reshape(lead + (-1,))
                                        for c, n in enumerate(folded)})
    out = fn(compact_layout, *compact_args)
    return tuple(None if v is None else _gather(pad(np.asarray(v, dtype=float)), inv, gshape) for v in out)


def _gather(v: np.ndarray, inv: np.ndarray, gshape: tuple) -> np.ndarray:
    """``v`` (distinct combinations on its last axis, 1 on the other folded axes) at every position of the
    folded axes (``gshape``: their sizes, 1 elsewhere)."""
    if v.shape[-1] == 1:  # the same at every combination
        return v
    ls = v.shape[:-1] + (1,)
    return interleave(np.take(v, inv, axis=-1).reshape(ls + gshape), ls, gshape)
