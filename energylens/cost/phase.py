"""Phase evaluation: a program's kernels and collectives costed on a GPU, reduced to per-phase totals.

This is the vectorised core shared by ``predict`` (one configuration, with per-op detail) and the
sweep engine (arrays over many configurations). Timeline of one data-parallel replica for one
batch: the pipeline stages run one after another (no micro-batching), each stage's ``tp`` ranks in
lockstep; collectives follow the op that needs them (no overlap unless an overlap plan says so).
A phase ends when the last stage ends; every GPU that is not busy meanwhile waits at idle power,
and that energy is reported as ``idle_wait_j``.

Mixture of experts (``energylens.moe.binding``): expert-parallel ranks differ. The routing gives the
busiest rank's tokens and experts hit, and the mean rank's. Kernels are costed twice: the busiest
rank's times set the phase latency; the mean rank's give energy, FLOPs and bytes per GPU; the gap
is spent waiting at idle power (``moe_idle_wait_j``, part of ``idle_wait_j``). Collectives are
costed once, with the busiest rank's messages: every rank stays in the all-to-all until it ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from energylens.cost.collective_layouts import by_group_size
from energylens.cost.distinct import broadcast_shape
from energylens.cost.kernels import ROUTED_EXPERTS_KEY, CollectiveRecord, KernelRecord
from energylens.cost.phase_context import axis_nodes, axis_sizes, monomial_total, phase_context  # noqa: F401 (re-exported)
from energylens.cost.plan_eval import key_value
from energylens.cost.power import idle_energy_j
from energylens.engines import VLLM
from energylens.graph.model import Model, is_moe
from energylens.hardware.profile import DTYPE_BYTES, GPU
from energylens.parallel.layout import Layout
from energylens.program import Program

# engine defaults are sourced data (energylens/data/engines/vllm.yaml)
RUNTIME_OVERHEAD_BYTES = VLLM.runtime_overhead_bytes
PREFILL_CHUNK_TOKENS = float(VLLM.max_batched_tokens)
USABLE_MEMORY_FRACTION = VLLM.gpu_memory_utilization


@dataclass
class PhaseArrays:
    """Per-phase totals (arrays over configurations) and the records they came from."""

    latency_s: np.ndarray
    energy_j: np.ndarray
    compute_j: np.ndarray
    memory_j: np.ndarray
    static_j: np.ndarray
    communication_j: np.ndarray
    idle_wait_j: np.ndarray
    kernel_time_s: np.ndarray
    collective_time_s: np.ndarray
    p2p_time_s: np.ndarray
    kernels: list[tuple[str, KernelRecord]]  # (section, record)
    collectives: list[tuple[str, CollectiveRecord]]
    p2p: CollectiveRecord | None
    reduce: object  # callable reducing per-call arrays over decode points
    layer_time_s: dict[str, np.ndarray]
    layer_energy_j: dict[str, np.ndarray]
    section_time_s: dict[str, np.ndarray]
    section_energy_j: dict[str, np.ndarray]
    # MoE (None / zero for dense models): ``kernels`` are the busiest expert-parallel rank's (they set
    # the pace); ``kernels_energy`` the same kernels on the mean rank (energy, FLOPs and bytes per
    # GPU); ``moe_idle_wait_j`` the part of ``idle_wait_j`` spent waiting for the busiest rank.
    kernels_energy: list[tuple[str, KernelRecord]] | None = None
    moe_idle_wait_j: np.ndarray | None = None
    moe: object = None  # energylens.moe.binding.MoEBinding
    microbatches: np.ndarray | float = 1.0  # pipeline micro-batches per replica (records are per micro-batch)
    # the kernels as a table (``KernelTable``: names, kinds, ops, counts; every field stacked [kernel, ...]);
    # None without records. ``kernel_sums``: ``(field, energy) -> array over kernels``, each kernel's field
    # summed over the phase's points, where the caller has them at once (``energylens.cost.phase_pair``: then
    # the table's fields hold every stacked phase's points); None: ``energylens.assemble.kernel_sums``
    kernel_table: object = None
    kernel_sums: object = None
    # ``() -> (meta, sums, first)``: the collectives' ``KernelTable.collective_meta``, their per-call latency, energy
    # per GPU and message bytes each summed over the phase's points (``[field, collective]``) and the message at
    # the phase's first point, where the caller has them at once (``energylens.cost.phase_pair``); None: records
    collective_sums: object = None
    # None: the energy totals are over every data-parallel replica; else (``evaluate_phase(per_replica=True)``)
    # they are one replica's, and ``replicas`` (the data-parallel degree, broadcasting with them) multiplies them
    replicas: object = None


def _stacked_field(cost, name: str, n: int) -> np.ndarray:
    if name in ("flops", "bytes"):
        v = getattr(cost, name)
        return np.asarray(v, dtype=float) if isinstance(v, np.ndarray) else np.stack(np.broadcast_arrays(*v))
    if len(cost.costs) == 1 and isinstance(cost.costs[0][0], range) and len(cost.costs[0][0]) == n:
        return getattr(cost.costs[0][1], name)  # every kernel in one stacked call, in plan order (a view)
    shape = np.broadcast_shapes(*(np.shape(getattr(kc, name))[1:] for _, kc in cost.costs))
    out = np.empty((n,) + shape)
    for idx, kc in cost.costs:
        v = getattr(kc, name)
        out[idx] = v if np.ndim(v) else np.broadcast_to(v, (len(idx),) + shape)
    return out


def record_field(r: KernelRecord, field: str):
    """``flops``, ``bytes`` or a ``KernelCost`` field of a kernel record."""
    return getattr(r, field) if field in ("flops", "bytes") else getattr(r.cost, field)


class _Lazy(Sequence):
    """A list built on first use (per-kernel records are views of the stacked cost arrays; totals do
    not need them)."""

    def __init__(self, owner: KernelTable, which: int) -> None:
        self._owner, self._which = owner, which

    def _items(self) -> list:
        return self._owner.collectives() if self._which == 2 else self._owner.built()[self._which]

    def __getitem__(self, i):
        return self._items()[i]

    def __len__(self) -> int:
        return len(self._items())


class KernelTable:
    """Records of the costed sections: (section, record) lists of kernels, mean-rank kernels, collectives; and
    the kernels as a table in the same order (``meta``; ``field``: one array over all kernels, no records)."""

    def __init__(self, sections, plan, k_sec, c_sec, cost, cost_e, has_c, memo: dict | None = None) -> None:
        self._args, self._built, self._colls = (sections, plan, k_sec, c_sec, cost, cost_e, has_c), None, None
        # the record order and names depend on the sections and plan alone: ``memo`` (``PhaseContext.plans``,
        # which holds the plan) keeps them for every evaluation of the plan
        self._memo = {} if memo is None else memo

    def _layout(self) -> tuple:
        key = ("table", id(self._args[1]))
        hit = self._memo.get(key)
        if hit is None:
            sections, plan, k_sec = self._args[:3]
            order = [np.flatnonzero(k_sec == i) for i in range(len(sections))]
            meta = [(sections[i][3] + plan.kernels[j].name, plan.kernels[j].kind, plan.kernels[j].ops,
                     sections[i][2]) for i, ks in enumerate(order) for j in ks]
            hit = self._memo[key] = (order, np.concatenate(order), meta)
        return hit

    def order(self) -> list[np.ndarray]:
        """Each section's kernels (indices into the plan), in record order."""
        return self._layout()[0]

    def meta(self) -> list[tuple[str, str, tuple, int]]:
        """(name, kind, ops, count) of every kernel, in record order."""
        return self._layout()[2]

    def field(self, name: str, energy: bool = False) -> np.ndarray:
        """``flops``, ``bytes`` or a ``KernelCost`` field of every kernel (``energy``: the mean-rank costs of MoE
        sections), ``[kernel, ...]`` in record order, from the stacked cost arrays."""
        return self.fields((name,), energy)[0]

    def fields(self, names: tuple[str, ...], energy: bool = False) -> np.ndarray:
        """Several of :meth:`field` stacked: ``[name, kernel, ...]`` (each broadcast to their common shape)."""
        sections, plan, k_sec, c_sec, cost, cost_e, has_c = self._args
        flat_order = self._layout()[1]
        n = len(plan.kernels)
        xs = [_stacked_field(cost, name, n) for name in names]
        if energy and cost_e is not cost:
            use = np.asarray(has_c, dtype=bool)[k_sec]
            for i, name in enumerate(names):
                xe = _stacked_field(cost_e, name, n)
                xs[i] = np.where(use.reshape(use.shape + (1,) * (xe.ndim - 1)), xe, xs[i])
        if len(xs) == 1:
            return xs[0][flat_order][None]
        shape = xs[0].shape
        if any(x.shape != shape for x in xs):
            shape = broadcast_shape(*(x.shape for x in xs))
        out = np.empty((len(xs),) + shape)
        for i, x in enumerate(xs):
            out[i] = x
        return out[:, flat_order]

    def built(self) -> tuple[list, list, list]:
        """(kernels, mean-rank kernels, collectives): (section, record) lists."""
        if self._built is None:
            sections, plan, k_sec, c_sec, cost, cost_e, has_c = self._args
            kernels, kernels_e = [], []
            for i, (name, _, count, prefix) in enumerate(sections):
                ks = self.order()[i]
                k = cost.records(count, prefix, ks, ())[0]
                k_e = cost_e.records(count, prefix, ks, ())[0] if has_c[i] else k
                kernels += [(name, r) for r in k]
                kernels_e += [(name, r) for r in k_e]
            self._built = (kernels, kernels_e, self.collectives())
        return self._built

    def collective_meta(self) -> list[tuple]:
        """(name, kind, axis, count, group size, reason) of every collective, in record order."""
        key = ("collectives", id(self._args[1]))
        hit = self._memo.get(key)
        if hit is None:
            sections, plan, _, c_sec, cost = self._args[:5]
            groups = {j: group for idx, group, _ in cost.colls for j in idx}
            hit = self._memo[key] = [
                (prefix + plan.collectives[j].step.name, plan.collectives[j].step.kind, plan.collectives[j].step.axis,
                 count, groups[j], plan.collectives[j].step.reason)
                for i, (_, _, count, prefix) in enumerate(sections) for j in np.flatnonzero(c_sec == i)]
        return hit

    def collective_fields(self) -> np.ndarray:
        """``[latency_s, energy_j_per_gpu, message_bytes]`` of every collective (per call), ``[field, collective,
        ...]`` in record order, from the stacked cost arrays."""
        sections, plan, _, c_sec, cost = self._args[:5]
        order = np.argsort(c_sec, kind="stable")
        msgs = cost.msgs if isinstance(cost.msgs, np.ndarray) else np.stack(np.broadcast_arrays(*cost.msgs))
        shape = np.broadcast_shapes(msgs.shape[1:], *(np.shape(cc.latency_s)[1 if len(idx) > 1 else 0:]
                                                      for idx, _, cc in cost.colls))
        out = np.empty((3, len(plan.collectives)) + shape)
        for idx, _, cc in cost.colls:
            rows = idx if len(idx) > 1 else idx[0]
            out[0, rows] = cc.latency_s
            out[1, rows] = cc.energy_j_per_gpu
        out[2] = msgs
        return out[:, order]

    def collectives(self) -> list:
        """(section, record) of every collective (built without the kernels' records)."""
        if self._colls is None:
            sections, c_sec, cost = self._args[0], self._args[3], self._args[4]
            self._colls = [(name, r) for i, (name, _, count, prefix) in enumerate(sections)
                           for r in cost.records(count, prefix, (), np.flatnonzero(c_sec == i))[1]]
        return self._colls


class _Spread(Mapping):
    """Per-section arrays over a phase's distinct batches, each spread back over the configurations when read."""

    def __init__(self, values: dict, spread) -> None:
        self._values, self._spread, self._done = values, spread, {}

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in self._done:
            self._done[key] = self._spread(self._values[key])
        return self._done[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True)
class _BatchClasses:
    """Distinct values of the batch size (on one axis) and where each configuration's value sits."""

    values: np.ndarray
    index: np.ndarray  # for each element of the batch array (its trailing decode axis dropped), its value
    axis: int

    def expand(self, x):
        """A total over the distinct values -> over the batch array's own axes."""
        if isinstance(x, float):
            return x
        x = np.asarray(x)
        nd = self.index.ndim
        if x.ndim < nd - self.axis or x.shape[x.ndim - nd + self.axis] == 1:
            return x  # does not depend on the batch
        x = x.reshape((1,) * (nd - x.ndim) + x.shape)
        ax, ix = self.axis, self.index
        if x.ndim == nd:
            # one gather of whole blocks along the class axis (``np.take``), its result's axes already in the grid's
            # order where the total varies, before the class axis, only on axes ahead of those the batch varies on
            # (the usual TP axis); ``take_along_axis`` builds an index over every axis, about 100x the time
            own = [i for i in range(ax) if x.shape[i] > 1]
            batch = [i for i in range(nd) if ix.shape[i] > 1]
            if not (set(own) & set(batch)) and (not own or max(own) < min(batch + [ax])):
                return np.take(x, ix, axis=ax).reshape(np.broadcast_shapes(x.shape[:ax] + (1,) + x.shape[ax + 1:],
                                                                           ix.shape))
        return np.take_along_axis(x, ix, axis=ax)


def _batch_classes(decode: bool, sizes: dict, *others: dict) -> _BatchClasses | None:
    """The batch's distinct values when it varies along several axes (pipeline degrees and batches) that no
    other size, degree or axis size varies along, and it has at most half as many values as elements."""
    b = np.asarray(sizes["b"], dtype=float)
    axes = [i for i, n in enumerate(b.shape) if n > 1]
    if len(axes) < 2 or b.size < 16:
        return None
    for d in (sizes, *others):
        for k, v in d.items():
            if k == "b":
                continue
            sh = np.shape(v)
            pad = b.ndim - len(sh)
            if pad < 0 or any(sh[i - pad] > 1 for i in axes if i >= pad):
                return None
    u, inv = np.unique(b, return_inverse=True)
    if 2 * len(u) > b.size:
        return None
    ax = axes[-1]
    values = u.reshape(tuple(len(u) if i == ax else 1 for i in range(b.ndim)))
    index = inv.reshape(b.shape)
    if decode:  # drop the trailing decode-point axis (totals are summed over it)
        index = index[..., 0]
    return _BatchClasses(values, index, ax)


_ONE = np.asarray(1.0)
_ONE.setflags(write=False)


def evaluate_phase(model: Model, gpu: GPU, layout: Layout, program: Program, sizes: dict[str, np.ndarray],
                   weights: np.ndarray, *, decode: bool, routing=None, microbatches=None,
                   distinct_batches: bool = False, phase_rows=None, moe_binder=None,
                   per_replica: bool = False) -> PhaseArrays:
    """``routing`` (MoE models only): a routing string or ``energylens.moe.Routing``; None = uniform.

    ``distinct_batches`` (totals only: no per-kernel records): where the batch per micro-batch is the only
    size that varies along its axes (``batch / min(batch, pp)`` over pipeline degrees and batches), the
    kernels are costed once per distinct value and the totals spread back (the same numbers).

    ``microbatches``: with pipeline parallelism the batch of a replica is split into ``m`` micro-batches
    that follow each other through the stages (GPipe-style fill and drain): the phase lasts one
    micro-batch's pass plus ``m - 1`` times the slowest stage (prefill), or, for decode, where a
    micro-batch's next token needs its previous one, the longer of one pass and ``m`` turns of the slowest
    stage per step; every GPU is busy ``m`` times its stage's share. None = ``min(batch, pp)`` (one
    micro-batch per stage, as vLLM's pipeline engines); 1 = the whole batch at once.

    ``phase_rows`` (with ``decode``; :func:`energylens.cost.phase_pair.evaluate_phases`): several phases of one
    configuration stacked along the points axis, ``weights`` one row per phase and ``phase_rows`` a bool per
    row (True: the decode rule for micro-batches); totals gain a trailing phase axis. ``moe_binder``: a callable
    ``(b, t, tp, ep) -> MoEBinding`` in place of ``bind_moe`` (the stacked phases bind each phase's points).
    ``per_replica``: the energy totals (``energy_j`` and its five parts) of one data-parallel replica, each total
    being that times ``PhaseArrays.replicas`` (a sweep multiplies only the rows it reads)."""
    ctx = phase_context(model, gpu, layout, program, decode)
    all_sizes = {**ctx.dims, **sizes}
    pp_layout = ctx.axes["pp"]
    if microbatches is None:
        b_in = np.asarray(all_sizes["b"], dtype=float)
        pp_b = pp_layout[..., None] if (decode and pp_layout.ndim) else pp_layout
        m_b = np.where(pp_b > 1, np.maximum(np.minimum(b_in, pp_b), 1.0), 1.0) if ctx.pipelined else _ONE
    else:
        m_b = np.asarray(microbatches, dtype=float)
    if (m_b != 1.0).any():
        all_sizes["b"] = np.asarray(all_sizes["b"], dtype=float) / m_b
    axes, degs_pt, axes_pt, nodes_pt = ctx.axes, ctx.degs_pt, ctx.axes_pt, ctx.nodes_pt
    full_shape = broadcast_shape(*(np.shape(v) for v in all_sizes.values()), *(np.shape(v) for v in degs_pt.values()),
                                 *(np.shape(v) for v in axes_pt.values()))
    # --- MoE: tokens per expert and experts touched, on the busiest and on the mean expert-parallel rank
    # (a caller that binds them itself, passing ``c`` and ``ROUTED_EXPERTS_KEY`` in ``sizes``, gets those
    # sizes as they are, for latency and energy alike)
    moe = None
    energy_sizes = all_sizes
    if is_moe(model) and ROUTED_EXPERTS_KEY not in sizes:
        from energylens.moe.binding import bind_moe

        moe = (moe_binder or partial(bind_moe, model, routing))(all_sizes["b"], all_sizes["t"], axes_pt["tp"],
                                                                axes_pt["ep"])
        energy_sizes = {**all_sizes, **moe.mean}
        all_sizes = {**all_sizes, **moe.busiest}
        full_shape = np.broadcast_shapes(full_shape, *(np.shape(v) for v in moe.busiest.values()))
    # --- end MoE
    # a sweep may fold its decode points onto their distinct contexts (``sweep.points``): ``reduce_points``
    folded = hasattr(weights, "reduce_points")
    w = weights if folded else np.asarray(weights, dtype=float)
    out_shape = full_shape if not decode else np.broadcast_shapes(full_shape[:-1], w.out_shape) if folded \
        else full_shape[:-1]
    if phase_rows is not None:  # one configuration, phases stacked: a trailing phase axis after the sums
        out_shape = out_shape + (len(phase_rows),)

    def reduce(x) -> np.ndarray:
        """Sum over decode points; shapes stay broadcastable (not expanded) until the totals."""
        x = np.asarray(x, dtype=float)
        if decode:  # stacked phases (one configuration): ``w`` has a row per phase
            return w.reduce_points(x) if folded else np.sum(x * w, axis=-1)
        return x

    variable = frozenset(sizes) | frozenset(moe.busiest if moe is not None else ())
    sections = ctx.sections
    layer_time: dict[str, np.ndarray] = {}
    layer_energy: dict[str, np.ndarray] = {}
    plan, k_sec, c_sec = ctx.compiled(variable)
    n_sec = len(sections)
    classes = None
    if distinct_batches and moe is None:
        used = {c.step.axis for c in plan.collectives}  # the axis sizes the plan reads
        classes = _batch_classes(decode, all_sizes, degs_pt, {k: v for k, v in axes_pt.items() if k in used},
                                 {k: v for k, v in nodes_pt.items() if k in used})
    expand = (lambda x: x) if classes is None else classes.expand
    cost = plan.evaluate(all_sizes if classes is None else {**all_sizes, "b": classes.values}, degs_pt, axes_pt,
                         nodes_pt)
    has_c = ctx.has_c if moe is not None else ctx.no_c
    cost_e = plan.evaluate(energy_sizes, degs_pt, axes_pt, nodes_pt) if any(has_c) else cost
    fields = ("latency_s", "energy_j", "compute_energy_j", "memory_energy_j", "static_energy_j")
    pts = w if decode else None
    tot_e = cost_e.section_totals(fields, k_sec, n_sec, pts)
    t_all = tot_e["latency_s"] if cost_e is cost else cost.section_totals(fields[:1], k_sec, n_sec, pts)["latency_s"]
    te_all, e_all = tot_e["latency_s"], tot_e["energy_j"]
    tc_all = cost.section_collective_totals("latency_s", c_sec, n_sec, pts)
    ec_all = cost.section_collective_totals("energy_j_per_gpu", c_sec, n_sec, pts)
    sums = {a: tot_e[a] for a in fields[2:]}
    # with batch classes, the per-section sums stay over the distinct batches (class space: every operation below
    # is element-wise, so doing it before spreading the values back gives the same numbers) and only the phase's
    # totals are spread back over the configurations
    kernel_time = kernel_time_e = coll_time = coll_energy = np.asarray(0.0)
    rank_sums = {a: np.asarray(0.0) for a in sums}
    for i, (name, _, count, _) in enumerate(sections):
        t_k = t_all[i]
        t_e = te_all[i] if has_c[i] else t_k
        # the slowest expert-parallel rank sets the pace: the busiest rank's kernels, or the mean rank's where
        # tile/wave quantisation makes the busier token count run faster
        t_k = np.maximum(t_k, t_e)
        t_c = tc_all[i]
        e_c = ec_all[i]
        t = t_k + t_c
        e = e_all[i] + e_c
        if has_c[i]:  # the mean rank waits for the slowest one at idle power
            e = e + idle_energy_j(gpu, t_k - t_e)
        layer_time[name] = t  # per execution (one layer for blocks)
        layer_energy[name] = e  # per rank per execution
        kernel_time = kernel_time + count * t_k
        kernel_time_e = kernel_time_e + count * t_e
        coll_time = coll_time + t_c * count
        coll_energy = coll_energy + e_c * count
        for a, v in sums.items():
            rank_sums[a] = rank_sums[a] + v[i] * count
    if moe is None:
        kernel_time_e = kernel_time
    # with batch classes (never with MoE) the sums above are spread back over the configurations where they meet
    # a pipeline degree, a data-parallel degree or the micro-batches below, each product over the other axes first
    # (section, record) lists built on first use; no reference cycle, so the arrays go with the PhaseArrays
    records = rec = None
    if classes is None:
        rec = KernelTable(sections, plan, k_sec, c_sec, cost, cost_e, has_c, ctx.plans)
        records = (_Lazy(rec, 0), _Lazy(rec, 1), _Lazy(rec, 2))
    tp = axes["tp"]
    dp = axes["dp"]
    pp = axes["pp"]
    # pipeline boundaries: the residual stream goes to the next stage
    p2p = None
    p2p_time = np.asarray(0.0)
    p2p_energy = np.asarray(0.0)
    if ctx.pipelined:
        from energylens.cost.collectives import collective_cost

        sharded_t = any(d == "t" for d, _ in program.residual_state.shard)
        msg = all_sizes["b"] * all_sizes["t"] * all_sizes["d"] * DTYPE_BYTES[model.act_dtype]
        tp_pt, pp_pt = axes_pt["tp"], axes_pt["pp"]
        if sharded_t:
            msg = msg / tp_pt
        crosses = np.where(tp_pt * pp_pt > layout.gpus_per_node, 2.0, 1.0)
        cc = by_group_size(collective_cost, "send_recv", msg, np.where(pp_pt > 1, 2.0, 1.0), gpu, crosses)
        p2p = CollectiveRecord("pipeline:send_recv", "send_recv", "pp", 1, np.asarray(2.0), np.asarray(msg),
                               cc.latency_s, cc.energy_j_per_gpu, "pipeline stage boundary")
        p2p_time = reduce(cc.latency_s) * (pp - 1)
        p2p_energy = reduce(cc.energy_j_per_gpu) * (pp - 1) * 2.0 * tp
    # micro-batches: one pass through all stages, then one slowest stage per further micro-batch
    m = np.take(m_b, 0, axis=-1) if (decode and np.ndim(m_b) and np.shape(m_b)[-1] == 1) else m_b
    m = np.asarray(m, dtype=float)
    if (m != 1.0).any():
        blocks_t = expand(sum((layer_time[b.name] * b.count for b, _ in program.blocks), np.asarray(0.0)))
        hop = np.where(pp > 1, p2p_time / np.maximum(pp - 1.0, 1.0), 0.0)
        slowest_stage = blocks_t / pp + expand(np.maximum(layer_time["pre"], layer_time["post"])) + hop
        one_pass = expand(kernel_time + coll_time) + p2p_time
        # decode: each micro-batch's next token waits for its previous one to leave the last stage, so a step
        # lasts the longer of one pass and m turns of the slowest stage (the pipeline stays full); prefill:
        # fill once, then one stage per micro-batch
        if phase_rows is not None:
            latency = np.where(phase_rows, np.maximum(one_pass, m * slowest_stage),
                               one_pass + (m - 1.0) * slowest_stage)
        elif decode:
            latency = np.maximum(one_pass, m * slowest_stage)
        else:
            latency = one_pass + (m - 1.0) * slowest_stage
    else:
        latency = expand(kernel_time + coll_time) + p2p_time

    # one replica's energy, then times the data-parallel degree (the only factor on the dp axis: a sweep's
    # largest arrays are made once per total, and the energy is summed before the dp axis joins)
    compute = expand(rank_sums["compute_energy_j"] * tp) * m
    memory = expand(rank_sums["memory_energy_j"] * tp) * m
    static = expand(rank_sums["static_energy_j"] * tp) * m
    comm = (expand(coll_energy * tp) + p2p_energy) * m
    gpu_time = tp * pp * latency
    busy_time = (expand(tp * (kernel_time_e + coll_time)) + 2.0 * tp * p2p_time) * m
    wait = idle_energy_j(gpu, np.maximum(gpu_time - busy_time, 0.0))
    energy = compute + memory + static + comm + wait
    if not per_replica:
        energy, compute, memory, static, comm, wait = (x * dp for x in (energy, compute, memory, static, comm, wait))

    def full(x) -> np.ndarray:  # a read-only view of the phase shape (sweeps gather rows without expanding)
        x = np.asarray(x, dtype=float)
        if x.shape == out_shape:
            return x
        if x.ndim == 0 and len(out_shape) <= 1:  # one configuration: a small array
            out = np.empty(out_shape)
            out[...] = x
            return out
        return np.broadcast_to(x, out_shape)

    if classes is None:
        layer_time = {k: full(v) for k, v in layer_time.items()}
        layer_energy = {k: full(v) for k, v in layer_energy.items()}
    else:  # spread back when read (a sweep reads the phase's totals only)
        layer_time, layer_energy = (_Spread(d, lambda v: full(expand(v))) for d in (layer_time, layer_energy))
    moe_wait = None if moe is None else full(tp * dp * m * idle_energy_j(gpu, kernel_time - kernel_time_e))
    kernel_time, coll_time = expand(kernel_time), expand(coll_time)
    return PhaseArrays(full(latency), full(energy), full(compute), full(memory), full(static), full(comm), full(wait),
                       full(kernel_time), full(coll_time), full(p2p_time), records[0] if records else [],
                       records[2] if records else [], p2p, reduce, layer_time, layer_energy, layer_time,
                       layer_energy, kernels_energy=records[1] if records else [],
                       moe_idle_wait_j=moe_wait,
                       moe=moe, microbatches=full(m), kernel_table=rec, replicas=dp if per_replica else None)


def memory_per_gpu(model: Model, layout: Layout, program: Program, gpu: GPU, batch_per_replica, max_context,
                   prompt_len, *, max_batched_tokens=PREFILL_CHUNK_TOKENS) -> dict[str, np.ndarray]:
    """Weights, KV cache and workspace on the most loaded GPU (bytes), vectorised. ``max_batched_tokens``:
    the engine's chunked-prefill budget, which bounds the tokens whose activations are live at once."""
    ctx = phase_context(model, gpu, layout, program, False)
    degs = ctx.degs_pt
    pp = ctx.axes["pp"]
    sizes = {**ctx.dims, "b": np.asarray(batch_per_replica, dtype=float), "t": np.asarray(prompt_len, dtype=float),
             "s": np.asarray(max_context, dtype=float)}
    if is_moe(model):  # MoE dispatch buffers: tokens per expert of the prompt (mean over experts)
        sizes["c"] = sizes["b"] * sizes["t"] * float(model.dims["x"]) / float(model.dims["e"])
    workload = ("b", "t", "s", "c") if "c" in sizes else ("b", "t", "s")
    plan, static = ctx.memory(workload)
    vals = {key: key_value(key, sizes, degs) for key in plan.keys if key[0] in workload}
    one = np.ndim(pp) == 0 and np.ndim(max_batched_tokens) == 0 and all(np.ndim(v) == 0 for v in vals.values())
    if one:  # one configuration: every product on floats (the same values)
        vals = {k: float(v) for k, v in vals.items()}
        vals.update(static.floats)
        maximum = max
    else:
        vals.update(static.arrays)
        maximum = np.maximum

    def total(monos) -> np.ndarray:
        return monomial_total(monos, vals)

    kv = np.asarray(0.0)
    act = np.asarray(0.0)
    for count, _, kv_terms, act_terms in plan.blocks:
        kv = kv + total(kv_terms) * count / (static.pp if one else pp)
        for m in act_terms:
            p = m.coef
            for k in m.keys:
                p = p * vals[k]
            act = maximum(act, p)
    weights = static.weights_bytes if one else static.weights(pp, total)
    # Serving engines prefill in chunks (vLLM max-num-batched-tokens): activations are live for at most
    # that many tokens at once, however long the batch of prompts.
    if one:
        act = act * min(1.0, float(max_batched_tokens) / max(float(sizes["b"]) * float(sizes["t"]), 1.0))
    else:
        tokens = sizes["b"] * sizes["t"]
        act = act * np.minimum(1.0, np.asarray(max_batched_tokens, dtype=float) / np.maximum(tokens, 1.0))
    workspace = RUNTIME_OVERHEAD_BYTES + 2.0 * act
    return {"weights_bytes": np.asarray(weights), "kv_cache_bytes": np.asarray(kv),
            "workspace_bytes": np.asarray(workspace), "capacity_bytes": np.asarray(gpu.hbm_capacity_bytes)}
