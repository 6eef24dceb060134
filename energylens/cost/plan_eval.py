"""Evaluation of a compiled cost plan (:mod:`energylens.cost.plan`) at bound sizes.

Each distinct size product (a *signature*: ``b t``, ``b s``, ``f/tp`` ...) is computed once. Then:

* **all ops stacked** (``FlatTables``), when all products together span at most ``FLAT_MAX_ELEMENTS``
  values (one configuration, its decode points, small arrays): every quantity is one row of one array
  ``coef x product``, and the whole section is a fixed number of NumPy calls whatever its op count:
  FLOPs, GEMM efficiency per dtype, per-kernel sums (in op order), the attention formula over
  the attention kernels, the roofline and power cap over all kernels, collectives per kind;
* **ops stacked per shape** otherwise (sweeps): the same formulas, with ops grouped by the axes their
  sizes depend on, so a decode weight GEMM is computed over batch and TP only and attention over the
  context as well, never expanded to the whole grid.

Both give the same numbers (``tests/cost/test_cost_plan.py`` compares them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from energylens.cost import families as fam
from energylens.cost.collective_layouts import by_group_size
from energylens.cost.distinct import broadcast_shape, distinct_call
from energylens.cost.kernels import CollectiveRecord, KernelRecord, causal_fraction
from energylens.cost.roofline import KernelCost, gemm_efficiency, kernel_cost_from_terms
from energylens.cost.tiles import moe_tile_efficiency, tile_share

FLAT_MAX_ELEMENTS = 256  # values per quantity up to which all ops are stacked in one array (measured:
# above it, expanding every op to the common shape costs more than the per-shape grouping saves)


def evaluate_plan(plan, sizes: Mapping[str, np.ndarray], degrees: Mapping[str, np.ndarray],
                  axis_sizes: Mapping[str, np.ndarray], nodes: Mapping[str, np.ndarray] | None = None,
                  *, flat: bool | None = None) -> StepsCost:
    """Costs of ``plan`` (a ``StepsPlan``) at the sizes; ``flat`` forces (True) or forbids (False) stacking
    all ops in one array (default: by size, see the module docstring)."""
    vals = {key: key_value(key, sizes, degrees) for key in plan.keys}
    shape = broadcast_shape(*(np.shape(v) for v in vals.values()))
    if flat is None:
        flat = plan.flat.ok and math.prod(shape) <= FLAT_MAX_ELEMENTS
    products = _Products(vals)
    if flat:
        for sig in plan.flat.sigs[1:]:
            products[sig]  # noqa: B018 - every product, for the one stacked array
        return _evaluate_flat(plan, products, shape, axis_sizes, nodes)
    return _evaluate_grouped(plan, products, axis_sizes, nodes)


class _Products(dict):
    """Size products by key tuple, each computed on first use (a sweep keeps only those in use alive)."""

    def __init__(self, vals: dict) -> None:
        super().__init__()
        self.vals = vals

    def __missing__(self, sig: tuple) -> np.ndarray:
        p = self.vals[sig[0]]
        for k in sig[1:]:
            p = p * self.vals[k]
        self[sig] = p
        return p


def _evaluate_grouped(plan, products: dict, axis_sizes, nodes) -> StepsCost:
    def ev(m):
        if not m.keys:
            return m.coef
        p = products[m.keys]
        return m.coef * p if m.coef != 1.0 else p

    gpu = plan.gpu
    # --- every op's FLOPs and compute efficiency; GEMMs stacked per (dtype, shape)
    n_ops = sum(len(k.terms) for k in plan.kernels)
    flops: list = [0.0] * n_ops
    eff: list = [1.0] * n_ops
    charged: dict[int, np.ndarray] = {}  # fused-MoE and flash-attention ops: the tile FLOPs energy is charged on
    gemms: dict[tuple, list] = {}
    i = 0
    for kp in plan.kernels:
        for term in kp.terms:
            f = ev(term.flops)
            if term.causal is not None:
                t, s, s_all, w = (ev(x) for x in term.causal)
                if kp.attention is not None and term.family == "gemm":  # QK, PV: the keys their tiles run
                    a = kp.attention
                    charged[i] = f * tile_share(a.coeffs, a.window, t, ev(a.s), s, ev(a.r))
                f = f * causal_fraction(t, s_all, w)
            flops[i] = f
            if term.family == "vector":
                eff[i] = term.efficiency
            elif term.family == "gemm":
                m, n, k, b = (ev(x) for x in term.mnk)
                if term.merged_n is not None:
                    n = np.asarray(0.0)
                    for x in term.merged_n:
                        n = n + ev(x)
                args = (m, n, k, b)
                key = (term.dtype, np.broadcast_shapes(*(np.shape(a) for a in args)))
                gemms.setdefault(key, []).append((i, args))
            elif term.family == "moe":
                eff[i], charged[i] = moe_tile_efficiency(gpu, term, f, ev)
            i += 1
    for (dtype, shape), members in gemms.items():
        if len(members) == 1 or _large(shape):  # big arrays: no stacked copies (their calls cost little)
            for ix, args in members:  # sweeps: once per distinct batch x context (cost.distinct)
                eff[ix] = distinct_call(lambda *a, dt=dtype: gemm_efficiency(gpu, dt, *a), args)
            continue
        rows = gemm_efficiency(gpu, dtype, *(_stack([a[j] for _, a in members], len(shape)) for j in range(4)))
        for r, (ix, _) in enumerate(members):
            eff[ix] = rows[r]
    # --- kernels: compute time and energy summed over their ops, HBM bytes, attention formula
    compute_s, e_compute, flops_k, bytes_k, att = [], [], [], [], []
    i = 0
    for kp in plan.kernels:
        cs = np.asarray(0.0)
        ec = np.asarray(0.0)
        ft = np.asarray(0.0)
        for term in kp.terms:
            f = flops[i]
            cs = cs + f / (term.peak_flops * eff[i])
            ec = ec + charged.get(i, f) * term.energy_per_flop_j
            ft = ft + f
            i += 1
        by = np.asarray(0.0)
        for x in kp.bytes:
            by = by + ev(x)
        compute_s.append(cs)
        e_compute.append(ec)
        flops_k.append(ft)
        bytes_k.append(by)
        a = kp.attention
        att.append(None if a is None else fam.attention_latency_s(
            a.coeffs, ev(a.b), ev(a.t), ev(a.s), ev(a.g) * ev(a.r), ev(a.g), ev(a.k), a.kv_bytes, a.window))
    del flops, eff, gemms, charged  # per-op arrays: only the kernels' sums go on (a sweep's peak memory)
    # --- roofline and power, kernels stacked per (shape, family formula or not)
    groups: dict[tuple, list[int]] = {}
    for j in range(len(plan.kernels)):
        arrs = (compute_s[j], bytes_k[j], e_compute[j]) + (() if att[j] is None else (att[j],))
        groups.setdefault((np.broadcast_shapes(*(np.shape(x) for x in arrs)), att[j] is not None),
                          []).append(j)
    costs = []
    for (shape, has_att), members in groups.items():
        for idx in ([[j] for j in members] if _large(shape) else [members]):
            col = (len(idx),) + (1,) * len(shape)
            mem = np.array([plan.kernels[j].memory_efficiency for j in idx]).reshape(col)
            ovh = np.array([plan.kernels[j].overhead_s for j in idx]).reshape(col)
            mes = np.array([plan.kernels[j].memory_energy_scale for j in idx]).reshape(col)
            n = len(shape)
            kc = kernel_cost_from_terms(gpu, _stack([compute_s[j] for j in idx], n),
                                        _stack([bytes_k[j] for j in idx], n), _stack([e_compute[j] for j in idx], n),
                                        memory_efficiency=mem, overhead_s=ovh, memory_energy_scale=mes,
                                        latency_s=_stack([att[j] for j in idx], n) if has_att else None)
            if kc.latency_s.shape[0] != len(idx):  # every input was shared: one row per kernel all the same
                kc = _rows(kc, len(idx))
            costs.append((idx, kc))
    # --- collectives, stacked per (kind, axis)
    by_kind: dict[tuple, list[int]] = {}
    msgs = [ev(c.message) for c in plan.collectives]
    for j, c in enumerate(plan.collectives):
        by_kind.setdefault((c.step.kind, c.step.axis, np.shape(msgs[j])), []).append(j)
    return StepsCost(plan, flops_k, bytes_k, costs, msgs, _collectives(plan, msgs, by_kind, axis_sizes, nodes))


def _collectives(plan, msgs, by_kind: dict, axis_sizes, nodes) -> list:
    """Collective costs, one call per (kind, axis, message shape) over the collectives stacked."""
    from energylens.cost.collectives import collective_cost

    colls = []
    for (kind, axis, _), idx in by_kind.items():
        group = np.asarray(axis_sizes[axis], dtype=float)
        n_nodes = (nodes or {}).get(axis, 1)
        if len(idx) == 1:
            cc = by_group_size(collective_cost, kind, msgs[idx[0]], group, plan.gpu, n_nodes)
        elif group.ndim == 0 and np.ndim(n_nodes) == 0:  # one layout: the messages stacked, any shape
            stacked = msgs[idx] if isinstance(msgs, np.ndarray) else np.stack(
                [np.broadcast_to(msgs[j], np.broadcast_shapes(*(np.shape(msgs[i]) for i in idx))) for j in idx])
            cc = collective_cost(kind, stacked, group, plan.gpu, nodes=n_nodes)
        else:  # messages stacked; group sizes and nodes keep their own (small) shapes
            nd = len(np.broadcast_shapes(*(np.shape(msgs[j]) for j in idx), group.shape, np.shape(n_nodes)))

            def lead(x, nd=nd):
                x = np.asarray(x, dtype=float)
                return x.reshape((1,) * (nd + 1 - x.ndim) + x.shape)

            cc = by_group_size(collective_cost, kind, _stack([msgs[j] for j in idx], nd), lead(group), plan.gpu,
                                lead(n_nodes))
            if np.shape(cc.latency_s)[0] != len(idx):  # one message shared by all: a row each
                cc = type(cc)(*(np.broadcast_to(x, (len(idx),) + np.shape(x)[1:]) for x in (
                    cc.latency_s, cc.energy_j_per_gpu, cc.power_w)))
        colls.append((idx, group, cc))
    return colls


@dataclass(frozen=True)
class FlatTables:
    """Index tables of a compiled plan for the all-ops-stacked evaluation: every size quantity is
    ``coef[q] x product[sig[q]]``; ops, byte terms and kernels are rows in program order."""

    ok: bool  # False: a kernel without ops or byte terms (the stacked sums need both)
    sigs: tuple  # distinct key tuples (size products)
    coef: np.ndarray  # [quantity]
    sig: np.ndarray  # [quantity] -> index into sigs
    op_flops: np.ndarray  # [op] -> quantity
    op_peak: np.ndarray  # [op] peak FLOP/s at the op's dtype
    op_epf: np.ndarray  # [op] J per FLOP
    op_eff: np.ndarray  # [op] vector efficiency (1 for GEMMs, filled in, and for ops without FLOPs)
    causal: tuple  # (ops, t, counted keys s (window applied), all keys s, window) quantities
    gemm: tuple  # per dtype: (dtype, ops, m, n members, n segments (None: no fused N), k, batch)
    moe: tuple  # (op index, OpPlan) of fused-MoE grouped GEMMs
    op_segments: Segments  # ops -> kernels
    byte_q: np.ndarray  # byte-term quantities in kernel order
    byte_segments: Segments  # byte terms -> kernels
    memory_efficiency: np.ndarray  # [kernel]
    overhead_s: np.ndarray  # [kernel]
    memory_energy_scale: np.ndarray  # [kernel] J per HBM byte over the profile's
    plain: np.ndarray  # kernels without a family latency formula
    attention: tuple  # per attention dtype: (kernels, coeffs, b, t, s, g, r, k quantities, kv bytes, window)
    tiles: tuple  # per attention dtype: (causal einsums of flash-attention kernels, coeffs, t, s, op's s, r quantities,
    #               window): the tile FLOPs their energy is charged on (_tile_share)
    coll_q: np.ndarray  # [collective] message quantity


def flat_tables(kernels: tuple, collectives: tuple) -> FlatTables:
    """The index tables of ``kernels`` (``KernelPlan``) and ``collectives`` (``CollectivePlan``)."""
    sigs: dict[tuple, int] = {(): 0}
    coef: list[float] = []
    sig: list[int] = []

    def q(m) -> int:
        sig.append(sigs.setdefault(m.keys, len(sigs)))
        coef.append(m.coef)
        return len(coef) - 1

    op_flops, peak, epf, eff, causal, moe, op_starts, byte_q, byte_starts = [], [], [], [], [], [], [], [], []
    gemm: dict[str, list] = {}
    att: dict[str, list] = {}
    tiles: dict[object, list] = {}
    i = 0
    for j, kp in enumerate(kernels):
        op_starts.append(i)
        for term in kp.terms:
            op_flops.append(q(term.flops))
            peak.append(term.peak_flops)
            epf.append(term.energy_per_flop_j)
            eff.append(term.efficiency if term.family == "vector" else 1.0)
            if term.causal is not None:
                causal.append((i, *(q(x) for x in term.causal)))
                a = kp.attention
                if a is not None and term.family == "gemm":  # QK, PV of a flash kernel: the keys their tiles run
                    e = tiles.setdefault(a.coeffs, [[], a.coeffs, [], [], [], [], []])
                    e[0].append(i)
                    for slot, x in zip(range(2, 6), (term.causal[0], a.s, term.causal[1], a.r), strict=True):
                        e[slot].append(q(x))
                    e[6].append(a.window)
            if term.family == "gemm":
                m, n, k, b = term.mnk
                g = gemm.setdefault(term.dtype, [[], [], [], [], [], [], False])
                g[0].append(i)
                g[1].append(q(m))
                g[3].append(len(g[2]))
                g[2].extend(q(x) for x in (term.merged_n or (n,)))
                g[6] = g[6] or term.merged_n is not None
                g[4].append(q(k))
                g[5].append(q(b))
            elif term.family == "moe":
                moe.append((i, term))
                for x in (*term.mnk, *(term.merged_n or ())):
                    q(x)  # the per-op MoE formula reads these products
            i += 1
        byte_starts.append(len(byte_q))
        byte_q.extend(q(x) for x in kp.bytes)
        a = kp.attention
        if a is not None:
            e = att.setdefault(a.coeffs, [[], a.coeffs, [], [], [], [], [], [], [], []])
            e[0].append(j)
            for slot, x in zip(range(2, 8), (a.b, a.t, a.s, a.g, a.r, a.k), strict=True):
                e[slot].append(q(x))
            e[8].append(a.kv_bytes)
            e[9].append(a.window)
    ok = all(kp.terms and kp.bytes for kp in kernels)
    coll_q = [q(c.message) for c in collectives]
    ix = np.asarray
    return FlatTables(
        ok, tuple(sigs), ix(coef, dtype=float), ix(sig, dtype=np.intp), ix(op_flops, dtype=np.intp),
        ix(peak, dtype=float), ix(epf, dtype=float), ix(eff, dtype=float),
        tuple(ix(c, dtype=np.intp) for c in zip(*causal, strict=True)) if causal else (),
        tuple((dt, ix(g[0]), ix(g[1]), ix(g[2]), Segments.of(g[3], len(g[2])) if g[6] else None, ix(g[4]),
               ix(g[5]))
              for dt, g in gemm.items()),
        tuple(moe), Segments.of(op_starts, i), ix(byte_q, dtype=np.intp), Segments.of(byte_starts, len(byte_q)),
        ix([k.memory_efficiency for k in kernels], dtype=float), ix([k.overhead_s for k in kernels], dtype=float),
        ix([k.memory_energy_scale for k in kernels], dtype=float),
        ix([j for j, k in enumerate(kernels) if k.attention is None], dtype=np.intp),
        tuple((ix(e[0]), e[1], *(ix(x) for x in e[2:8]), ix(e[8], dtype=float), ix(e[9], dtype=float))
              for e in att.values()),
        tuple((ix(e[0]), e[1], *(ix(x) for x in e[2:6]), ix(e[6], dtype=float)) for e in tiles.values()),
        ix(coll_q, dtype=np.intp))


def _evaluate_flat(plan, products: dict, shape: tuple, axis_sizes, nodes) -> StepsCost:
    ft = plan.flat
    gpu = plan.gpu
    nd = len(shape)
    col = (-1,) + (1,) * nd
    sa = np.empty((len(ft.sigs),) + shape)
    sa[0] = 1.0
    for j, sig in enumerate(ft.sigs[1:], 1):
        sa[j] = products[sig]
    qv = ft.coef.reshape(col) * sa[ft.sig]  # every size quantity of the section, one row each
    flops = qv[ft.op_flops]
    tile_flops = [flops[ops] * tile_share(c, w.reshape(col), qv[t], qv[s], qv[so], qv[r])
                  for ops, c, t, s, so, r, w in ft.tiles]  # before the causal share: the op's full FLOPs
    if ft.causal:
        ops, t, _, s_all, w = ft.causal
        flops[ops] = flops[ops] * causal_fraction(qv[t], qv[s_all], qv[w])
    eff = ft.op_eff.reshape(col) * np.ones(shape)
    for dtype, ops, m, n, n_starts, k, b in ft.gemm:
        nn = qv[n] if n_starts is None else n_starts.sums(qv[n])
        eff[ops] = gemm_efficiency(gpu, dtype, qv[m], nn, qv[k], qv[b])
    per_op = np.empty((len(flops), 3) + shape)
    per_op[:, 1] = flops * ft.op_epf.reshape(col)
    if ft.moe:
        def ev(m):
            return m.coef * products[m.keys] if m.keys else m.coef

        for i, term in ft.moe:
            eff[i], padded = moe_tile_efficiency(gpu, term, flops[i], ev)
            per_op[i, 1] = padded * ft.op_epf[i]  # energy on the padded-tile FLOPs the MMA units run
    for (ops, *_), tf in zip(ft.tiles, tile_flops, strict=True):
        per_op[ops, 1] = tf * ft.op_epf[ops].reshape(col)  # flash attention: on the FLOPs its tiles run
    per_op[:, 0], per_op[:, 2] = flops / (ft.op_peak.reshape(col) * eff), flops
    compute_s, e_compute, flops_k = ft.op_segments.sums(per_op).swapaxes(0, 1)
    bytes_k = ft.byte_segments.sums(qv[ft.byte_q])
    mem = ft.memory_efficiency.reshape(col)
    ovh = ft.overhead_s.reshape(col)
    mes = ft.memory_energy_scale.reshape(col)
    costs = []
    n_k = len(plan.kernels)
    if len(ft.plain) == n_k:
        costs.append((range(n_k), kernel_cost_from_terms(gpu, compute_s, bytes_k, e_compute, memory_efficiency=mem,
                                                          overhead_s=ovh, memory_energy_scale=mes)))
    else:  # the attention kernels' family latency and the plain kernels' roofline in one call
        lat = np.zeros((n_k,) + shape)
        formula = np.ones(n_k, dtype=bool)
        formula[ft.plain] = False
        for ks, coeffs, b, t, s, g, r, k, kv, win in ft.attention:
            lat[ks] = fam.attention_latency_s(coeffs, qv[b], qv[t], qv[s], qv[g] * qv[r], qv[g], qv[k],
                                              kv.reshape(col), win.reshape(col))
        costs.append((range(n_k), kernel_cost_from_terms(gpu, compute_s, bytes_k, e_compute, memory_efficiency=mem,
                                                          overhead_s=ovh, latency_s=lat, memory_energy_scale=mes,
                                                          formula=formula.reshape(col))))
    msgs = qv[ft.coll_q]
    by_kind: dict[tuple, list[int]] = {}
    for j, c in enumerate(plan.collectives):
        by_kind.setdefault((c.step.kind, c.step.axis, shape), []).append(j)
    return StepsCost(plan, flops_k, bytes_k, costs, msgs, _collectives(plan, msgs, by_kind, axis_sizes, nodes))


@dataclass(frozen=True)
class Segments:
    """Consecutive rows summed per segment in row order (``((a + b) + c)``, as adding one by one does; NumPy's
    own reductions add in other orders), with the schedule fixed when the plan is compiled."""

    first: np.ndarray  # first row of each segment
    steps: tuple  # (segments still going, their k-th row) for k = 1, 2, ...

    @classmethod
    def of(cls, starts, total: int) -> Segments:
        starts = np.asarray(starts, dtype=np.intp)
        lengths = np.diff(np.append(starts, total))
        steps = tuple((np.flatnonzero(lengths > k), starts[lengths > k] + k) for k in range(1, int(lengths.max(
            initial=1))))
        return cls(starts, steps)

    def sums(self, x: np.ndarray) -> np.ndarray:
        out = x[self.first]
        for seg, row in self.steps:
            out[seg] = out[seg] + x[row]
        return out


LARGE_ELEMENTS = 1 << 16  # above this many values per op, ops are costed one call each (no stacked copies)


def _large(shape: tuple) -> bool:
    return int(np.prod(shape)) > LARGE_ELEMENTS


def _stack(xs: list, ndim: int) -> np.ndarray:
    """``xs`` stacked on a new leading axis, each over the axes it has (padded to ``ndim``), not expanded to
    the others' axes; one shared array (or a single one) stays one row, a view (broadcast over the stack)."""
    first = xs[0]
    if all(x is first for x in xs):
        a = np.asarray(first, dtype=float)
        return a.reshape((1,) * (ndim + 1 - a.ndim) + a.shape)
    shape = np.broadcast_shapes(*(np.shape(x) for x in xs))
    out = np.empty((len(xs),) + (1,) * (ndim - len(shape)) + shape)
    for i, x in enumerate(xs):  # (assignment broadcasts each row: np.broadcast_to views cost more than the copy)
        out[i] = x
    return out


def _rows(kc: KernelCost, n: int) -> KernelCost:
    def full(a):
        return a if isinstance(a, float) else np.broadcast_to(a, (n,) + np.shape(a)[1:])

    return KernelCost(*(full(getattr(kc, f)) for f in _FIELDS), clock_fraction=full(kc.clock_fraction),
                      dynamic_scale=full(kc.dynamic_scale))


def key_value(key: tuple, sizes: Mapping[str, np.ndarray], degrees: Mapping[str, np.ndarray]):
    name, window, dim = key
    x = np.asarray(1.0) if name == "#1" else np.asarray(sizes[name], dtype=float)
    if window:
        x = np.minimum(x, window)
    if dim:
        deg = np.asarray(degrees.get(dim, 1.0), dtype=float)
        x = np.ceil(x / deg) if dim == "v" else x / deg
    return x


_FIELDS = ("latency_s", "energy_j", "compute_s", "memory_s", "compute_energy_j", "memory_energy_j",
           "static_energy_j", "power_capped")


class StepsCost:
    """Costs of a compiled step list at bound sizes: stacked kernel costs, collective costs."""

    def __init__(self, plan, flops, bytes_, costs, msgs, colls) -> None:
        self.plan, self.flops, self.bytes, self.costs, self.msgs, self.colls = plan, flops, bytes_, costs, msgs, colls
        self._where = self._cwhere = None

    def total(self, attr: str) -> np.ndarray:
        """Sum over the kernels of one ``KernelCost`` field (``latency_s``, ``energy_j``, ...), added in kernel
        order (so it does not depend on how the kernels were stacked)."""
        rows: dict[int, np.ndarray] = {}
        for idx, kc in self.costs:
            x = getattr(kc, attr)
            for r, j in enumerate(idx):
                rows[j] = x[r]
        out = np.asarray(0.0)
        for j in sorted(rows):
            out = out + rows[j]
        return out

    def collective_total(self, attr: str) -> np.ndarray:
        """Sum over the collectives of ``latency_s`` or ``energy_j_per_gpu`` (per call)."""
        out = np.asarray(0.0)
        for idx, _, cc in self.colls:
            x = getattr(cc, attr)
            out = out + (np.sum(x, axis=0) if len(idx) > 1 else x)
        return out

    def section_totals(self, attrs: tuple[str, ...], section: np.ndarray, n: int, weights=None) -> dict:
        """Per-section sums of ``KernelCost`` fields over each section's kernels. With decode ``weights`` each
        kernel's field is first summed over the trailing decode-point axis (``sum(x * weights, -1)``). Kernels
        are added in the plan's ``sum_order`` (fixed at compile time, so the result does not depend on how
        they were stacked): {field: array ``[section, ...]`` when every kernel has the same shape, else a
        list per section}."""
        order = self.plan.sum_order
        if hasattr(weights, "reduce_points"):
            return self._folded_section_totals(attrs, section, n, weights)
        shapes = {np.shape(kc.latency_s)[1:] for _, kc in self.costs}
        sec = section[order].tolist()
        bounds = [0] + [i for i in range(1, len(sec)) if sec[i] != sec[i - 1]] + [len(sec)]
        if len(shapes) == 1 and sec and sec[0] == 0 and sec[-1] == n - 1 and len(bounds) == n + 1:
            shape = shapes.pop()
            x = np.empty((len(attrs), len(self.plan.kernels)) + shape)
            for idx, kc in self.costs:
                rows = slice(None) if isinstance(idx, range) and len(idx) == len(self.plan.kernels) else idx
                for a, attr in enumerate(attrs):
                    x[a, rows] = getattr(kc, attr)
            x = _points(x[:, order], weights, 2)
            sums = np.empty((len(attrs), n) + x.shape[2:])
            for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                sums[:, i] = x[:, lo:hi].cumsum(axis=1)[:, -1]  # kernel after kernel (``np.sum`` adds pairwise)
            return dict(zip(attrs, sums, strict=True))
        self._index()
        out = {attr: [np.asarray(0.0)] * n for attr in attrs}
        for j in order:
            kc, r = self._where[j]
            for attr in attrs:
                out[attr][section[j]] = out[attr][section[j]] + _points(getattr(kc, attr)[r], weights, 0)
        return out

    def _folded_section_totals(self, attrs: tuple[str, ...], section: np.ndarray, n: int, points) -> dict:
        """:meth:`section_totals` with decode points folded onto distinct contexts (``energylens.sweep.points``):
        each section's kernels are summed first (context-free ones, small arrays, first), then the section's
        fields go through one stacked ``reduce_points`` lookup. A kernel's energy is the sum of its compute,
        memory and static energy (``roofline.kernel_cost_from_terms``): with those asked for, the energy total is
        their sum, one lookup fewer."""
        self._index()
        parts = ("compute_energy_j", "memory_energy_j", "static_energy_j")
        derived = "energy_j" in attrs and all(p in attrs for p in parts)
        looked = [a for a in attrs if not (derived and a == "energy_j")]
        acc = [[np.asarray(0.0)] * len(looked) for _ in range(n)]
        for j in self.plan.sum_order:
            kc, r = self._where[j]
            a = acc[section[j]]
            for i, attr in enumerate(looked):
                a[i] = a[i] + getattr(kc, attr)[r]
        out: dict = {attr: [None] * n for attr in attrs}
        for sec, a in enumerate(acc):
            shape = np.broadcast_shapes(*(np.shape(x) for x in a))
            stacked = np.empty((len(a),) + shape)
            for i, x in enumerate(a):
                stacked[i] = x
            red = points.reduce_points(stacked, 1)
            for i, attr in enumerate(looked):
                out[attr][sec] = red[i]
            if derived:
                out["energy_j"][sec] = out[parts[0]][sec] + out[parts[1]][sec] + out[parts[2]][sec]
        return out

    def section_collective_totals(self, attr: str, section: np.ndarray, n: int, weights=None) -> list:
        """Per-section sums (program order) over the collectives of ``latency_s`` or ``energy_j_per_gpu``
        (each summed over decode points first, as in :meth:`section_totals`)."""
        self._index()
        out = [np.asarray(0.0)] * n
        rows: dict[int, np.ndarray] = {}  # small stacked groups: every row summed over the points in one call
        for j, sec in enumerate(section):
            idx, _, cc, r = self._cwhere[j]
            x = getattr(cc, attr)
            if len(idx) > 1 and np.size(x) <= LARGE_ELEMENTS:
                if id(cc) not in rows:
                    rows[id(cc)] = _points(x, weights, 1)
                out[sec] = out[sec] + rows[id(cc)][r]
                continue
            out[sec] = out[sec] + _points(x[r] if len(idx) > 1 else x, weights, 0)
        return out

    def _index(self) -> None:
        if self._where is None:
            self._where = {j: (kc, r) for idx, kc in self.costs for r, j in enumerate(idx)}
            self._cwhere = {j: (idx, group, cc, r) for idx, group, cc in self.colls for r, j in enumerate(idx)}

    def records(self, count: int = 1, prefix: str = "", kernels=None, collectives=None,
                ) -> tuple[list[KernelRecord], list[CollectiveRecord]]:
        """Per-kernel and per-collective records (views of the stacked arrays), in program order; ``kernels``
        and ``collectives``: the indices to return (default all)."""
        self._index()
        ks = []
        for j in (range(len(self.plan.kernels)) if kernels is None else kernels):
            kc, r = self._where[j]
            kp = self.plan.kernels[j]
            cost = KernelCost(*(getattr(kc, f)[r] for f in _FIELDS),
                              clock_fraction=_row(kc.clock_fraction, r), dynamic_scale=_row(kc.dynamic_scale, r))
            ks.append(KernelRecord(prefix + kp.name, kp.kind, kp.ops, count, self.flops[j], self.bytes[j], cost))
        cs = []
        for j in (range(len(self.plan.collectives)) if collectives is None else collectives):
            idx, group, cc, r = self._cwhere[j]
            st = self.plan.collectives[j].step
            lat, en = (cc.latency_s, cc.energy_j_per_gpu) if len(idx) == 1 else (cc.latency_s[r], cc.energy_j_per_gpu[r])
            cs.append(CollectiveRecord(prefix + st.name, st.kind, st.axis, count, group, np.asarray(self.msgs[j]),
                                       lat, en, st.reason))
        return ks, cs


def _points(x, weights, lead: int):
    """``x`` summed over the trailing decode-point axis with ``weights`` (None: as it is); ``lead`` leading
    axes of ``x`` are not configuration axes (the weights align with the axes after them)."""
    if weights is None:
        return x
    if hasattr(weights, "reduce_points"):  # points folded onto distinct contexts (energylens.sweep.points)
        return weights.reduce_points(x, lead)
    x = np.asarray(x, dtype=float)
    missing = np.ndim(weights) - (x.ndim - lead)
    if missing > 0:
        x = x.reshape(x.shape[:lead] + (1,) * missing + x.shape[lead:])
    return (x * weights).sum(axis=-1)


def _row(x, r):
    return x if isinstance(x, float) else x[r]


