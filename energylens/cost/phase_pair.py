"""Prefill and decode of one configuration in one evaluation of the compiled plan.

A single prediction costs two phases of the same program: prefill (``t = s = prompt``, one point) and
decode (``t = 1`` over the decode sample points). Every formula of the plan is element-wise over sizes, so
the two phases are one array of points, ``decode points..., prefill point``, evaluated once
(:func:`energylens.cost.phase.evaluate_phase` with ``phase_rows``): half the NumPy calls of two
evaluations, the same numbers. The totals get a trailing phase axis (one weight row per phase); each
phase's ``PhaseArrays`` is then a view of them, its per-kernel records views of the same stacked cost
arrays (the prefill point, or the decode points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from energylens.cost.kernels import CollectiveRecord, KernelRecord
from energylens.cost.phase import PhaseArrays, evaluate_phase
from energylens.cost.roofline import KernelCost
from energylens.graph.model import Model, is_moe
from energylens.hardware.profile import GPU
from energylens.parallel.layout import Layout
from energylens.program import Program


def evaluate_phases(model: Model, gpu: GPU, layout: Layout, program: Program, prefill: tuple, decode: tuple, *,
                    routing=None) -> tuple[PhaseArrays, PhaseArrays]:
    """(prefill, decode) ``PhaseArrays`` from ``prefill = (sizes, weights)`` of one configuration (sizes of
    shape ``()``) and ``decode = (sizes, weights)`` (a trailing axis of decode points), as two calls of
    ``evaluate_phase`` give them. Arrays of configurations or layouts: one evaluation per phase."""
    (p_sizes, p_w), (d_sizes, d_w) = prefill, decode
    moe_kw = {"routing": routing} if is_moe(model) else {}
    if not _one_configuration(layout, p_sizes, p_w, d_sizes, d_w):
        return (evaluate_phase(model, gpu, layout, program, p_sizes, p_w, decode=False, **moe_kw),
                evaluate_phase(model, gpu, layout, program, d_sizes, d_w, decode=True, **moe_kw))
    n = np.shape(d_w)[-1]
    sizes = {}
    for k in d_sizes:  # decode points, then the prefill point (decode sums keep their order of addition)
        d, p = np.asarray(d_sizes[k], dtype=float), np.asarray(p_sizes[k], dtype=float)
        same = d.shape == (1,) and float(d[0]) == float(p)  # the batch: one value for both phases
        if not same:
            x = np.empty(n + 1)
            x[:n], x[n] = d, p
            d = x
        sizes[k] = d
    rows = np.zeros((2, n + 1))
    rows[0, n] = 1.0
    rows[1, :n] = d_w
    binder = _PerPhase(model, routing, n) if moe_kw else None
    both = evaluate_phase(model, gpu, layout, program, sizes, rows, decode=True, phase_rows=np.array([False, True]),
                          moe_binder=binder, **moe_kw)
    bindings = binder.bindings if binder is not None else (None, None)
    sums = _StackedSums(both, rows)
    return (_phase(both, 0, None, bindings[0], sums), _phase(both, 1, np.asarray(d_w, dtype=float), bindings[1], sums))


def _one_configuration(layout: Layout, p_sizes: dict, p_w, d_sizes: dict, d_w) -> bool:
    if any(np.ndim(getattr(layout, a)) for a in ("tp", "pp", "dp", "ep")) or np.ndim(p_w) or np.ndim(d_w) != 1:
        return False
    if set(p_sizes) != set(d_sizes) or any(np.ndim(v) for v in p_sizes.values()):
        return False
    return all(np.ndim(v) == 1 and np.shape(v)[0] in (1, np.shape(d_w)[0]) for v in d_sizes.values())


class _PerPhase:
    """MoE routing bound on each phase's points on its own (as one evaluation per phase binds it), then the
    size overrides stacked like the sizes; ``bindings``: (prefill, decode)."""

    def __init__(self, model: Model, routing, n: int) -> None:
        self.model, self.routing, self.n, self.bindings = model, routing, n, (None, None)

    def __call__(self, b, t, tp, ep):
        from energylens.moe.binding import bind_moe

        pre, dec = (bind_moe(self.model, self.routing, *(_points(x, which) for x in (b, t, tp, ep)))
                    for which in (0, 1))
        self.bindings = (pre, dec)

        def stack(a: dict, d: dict) -> dict:
            return {k: np.append(np.broadcast_to(np.asarray(d[k], dtype=float), (self.n,)),
                                 np.asarray(a[k], dtype=float)) for k in d}

        return replace(dec, busiest=stack(pre.busiest, dec.busiest), mean=stack(pre.mean, dec.mean))


def _points(x, which: int):
    """The prefill point (``which`` 0, the last point) or the decode points (1) of a stacked array."""
    if isinstance(x, (float, int, bool)) or np.ndim(x) == 0:
        return x
    x = np.asarray(x)
    if x.shape[-1] == 1:  # the same at every point
        return x[..., 0] if which == 0 else x
    return x[..., -1] if which == 0 else x[..., :-1]


def _kernel(r: KernelRecord, which: int) -> KernelRecord:
    c = r.cost
    cost = KernelCost(*(_points(getattr(c, f), which) for f in ("latency_s", "energy_j", "compute_s", "memory_s",
                                                                  "compute_energy_j", "memory_energy_j",
                                                                  "static_energy_j", "power_capped")),
                      clock_fraction=_points(c.clock_fraction, which), dynamic_scale=_points(c.dynamic_scale, which))
    return replace(r, flops=_points(r.flops, which), bytes=_points(r.bytes, which), cost=cost)


def _collective(r: CollectiveRecord | None, which: int) -> CollectiveRecord | None:
    if r is None:
        return None
    return CollectiveRecord(r.name, r.kind, r.axis, r.count, r.group_size, _points(r.message_bytes, which),
                            _points(r.latency_s, which), _points(r.energy_j_per_gpu, which), r.reason)


# the per-kernel fields the per-op rows sum over each phase's points (``energylens.assemble``)
ROW_FIELDS = ("latency_s", "compute_s", "memory_s", "flops", "bytes", "energy_j", "compute_energy_j",
              "memory_energy_j", "static_energy_j")


class _StackedSums:
    """Each kernel's fields summed over each phase's points, one call per field for all kernels and both phases
    (the per-op rows of ``energylens.assemble``): ``column(which)`` is one phase's ``kernel_sums``."""

    def __init__(self, both: PhaseArrays, rows: np.ndarray) -> None:
        self.both, self.rows, self.done = both, rows, {}

    def column(self, which: int):
        return lambda field, energy: self.get(field, energy)[:, which]

    def collective_column(self, which: int):
        def sums():
            if "collectives" not in self.done:
                x = self.both.kernel_table.collective_fields()
                x = self._points(x) if x.shape[1] else np.zeros((3, 0, self.rows.shape[-1]))
                self.done["collectives"] = (np.sum(x[:, :, None, :] * self.rows, axis=-1), x[2, :, 0], x[2, :, -1])
            total, first_decode, prefill = self.done["collectives"]
            return self.both.kernel_table.collective_meta(), total[..., which], (prefill, first_decode)[which]

        return sums

    def get(self, field: str, energy: bool) -> np.ndarray:
        key = (field, bool(energy and self.both.moe is not None))
        if key not in self.done:  # every field of the rows at once (the same sums, one NumPy call)
            names = ROW_FIELDS if field in ROW_FIELDS else (field,)
            x = self._points(self.both.kernel_table.fields(names + ("power_capped",), key[1]))
            for name, v in zip(names, np.sum(x[:-1, :, None, :] * self.rows, axis=-1), strict=True):
                self.done[(name, key[1])] = v
            capped = x[-1]  # whether any of the phase's points is capped
            self.done[("power_capped", key[1])] = np.stack([capped[:, -1] > 0, np.any(capped[:, :-1] > 0, axis=1)],
                                                           axis=1)
        return self.done[key]

    def _points(self, x: np.ndarray) -> np.ndarray:
        """``[field, kernel, point]``: the stacked points of every kernel (a field that does not vary over them
        repeated)."""
        return np.broadcast_to(x.reshape(x.shape[:2] + (-1,)), x.shape[:2] + (self.rows.shape[-1],))


class _Sliced(Sequence):
    """(section, record) pairs of one phase, sliced from the stacked records on first use."""

    def __init__(self, records, which: int, one) -> None:
        self._records, self._which, self._one, self._items = records, which, one, None

    def _all(self) -> list:
        if self._items is None:
            self._items = [(s, self._one(r, self._which)) for s, r in self._records]
        return self._items

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._records)


def _phase(both: PhaseArrays, which: int, weights, moe, sums: _StackedSums) -> PhaseArrays:
    def total(x):
        return None if x is None else x[..., which]

    if weights is None:
        def reduce(x) -> np.ndarray:
            return np.asarray(x, dtype=float)
    else:
        def reduce(x) -> np.ndarray:
            return np.sum(np.asarray(x, dtype=float) * weights, axis=-1)

    kernels = _Sliced(both.kernels, which, _kernel)
    return PhaseArrays(
        total(both.latency_s), total(both.energy_j), total(both.compute_j), total(both.memory_j),
        total(both.static_j), total(both.communication_j), total(both.idle_wait_j), total(both.kernel_time_s),
        total(both.collective_time_s), total(both.p2p_time_s), kernels,
        _Sliced(both.collectives, which, _collective), _collective(both.p2p, which), reduce,
        {k: total(v) for k, v in both.layer_time_s.items()}, {k: total(v) for k, v in both.layer_energy_j.items()},
        {k: total(v) for k, v in both.section_time_s.items()}, {k: total(v) for k, v in both.section_energy_j.items()},
        kernels_energy=kernels if both.moe is None else _Sliced(both.kernels_energy or [], which, _kernel),
        moe_idle_wait_j=total(both.moe_idle_wait_j), moe=moe, microbatches=total(np.asarray(both.microbatches)),
        kernel_table=both.kernel_table, kernel_sums=sums.column(which), collective_sums=sums.collective_column(which),
    )
