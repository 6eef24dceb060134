"""Vectorised sweep evaluation: one array evaluation per (model, GPU, dtype, sp) group.

Within a group the configurations form a 7-axis grid ``(tp, pp, dp, ep, batch, prompt_len,
output_len)``. Each axis is a NumPy array shaped to broadcast along its own dimension, so every
per-op cost in ``cost.kernels`` / ``cost.phase.evaluate_phase`` is computed only over the axes it
depends on (a weight GEMM in decode does not vary with the prompt length; attention does), and the
phase totals come out over the whole grid in one call. There is no Python loop over
configurations: the loops are over groups (few), over output lengths <= ``DECODE_POINTS`` (at most
17, because ``workload.decode_sizes`` sums those exactly, as ``predict`` does) and, only with
``serving=True``, over the group's layouts.

Two details keep the grid small and the answer exact:

* The kernels see the batch *per replica* ``batch / dp``, not ``batch`` and ``dp`` separately. The
  evaluation grid therefore replaces the ``batch`` axis by the sorted unique values ``U`` of
  ``batch / dp`` (``dp`` stays a layout axis), and each configuration reads its row of ``U``.
* Layout values that do not divide the model are replaced by a valid placeholder (1) before the
  evaluation and the rows are dropped afterwards (as are batches that ``dp`` does not divide):
  the table holds valid configurations only, and never a NaN.

Columns (per configuration; energies are all GPUs together, J; latencies s; memory per GPU, B):
identity (``model, gpu, dtype, sp, tp, pp, dp, ep, num_gpus, batch, prompt_len, output_len``);
``prefill_*`` and ``decode_*`` latency, energy and its breakdown (compute, memory, static,
communication, idle_wait) exactly as ``predict`` reports them for a static batch; derived
``ttft_s`` (prefill latency of the batch), ``tpot_s`` (decode latency / output_len),
``*_energy_per_token_j``, ``*_tokens_per_s``, ``request_*`` (prefill + decode, per output token);
memory (``weights_bytes``, ``kv_cache_bytes``, ``workspace_bytes``, ``required_bytes``) and the
constraint flags ``fits``, ``meets_slo``, ``within_budget``, ``feasible``. With ``serving=True``
also ``serve_*`` columns: the continuous-batching steady state of ``energylens.serving`` at a
concurrency of ``batch`` running requests. The evaluation (phases, memory, serving state) runs here; the
columns are lazy (``SweepTable`` sources): a column is gathered from the evaluation arrays, derived or scaled
when it is first read, or only at the rows a filter keeps (a Pareto front reads a handful of columns, a
written table all of them).

Overlap settings (``spec.overlap_settings()``: ``overlap_comm_sms`` x ``overlap_chunks``) are the
innermost row axis, columns ``overlap_comm_sms`` and ``overlap_chunks`` (``0, 1`` = sequential, the
default and the only setting unless the spec lists others). Each setting with ``comm_sms > 0`` is one
more vectorised ``energylens.overlap.evaluate_overlap`` call per phase over the whole grid (a loop
over the few settings, never over configurations) with the plan
``OverlapPlan(spec.overlap_collective, None, chunks, comm_sms)``; its rows equal
``predict_with_overlap`` with that plan. The overlap model re-costs the phase ``latency_s`` and
``energy_j`` only: the ``*_compute_j`` ... ``*_idle_wait_j`` breakdown stays that of sequential
execution, and ``prefill_overlap_saved_s`` / ``prefill_overlap_saved_j`` (and ``decode_*``) hold the
change (sequential - overlapped), so breakdown sum - ``*_overlap_saved_j`` = ``*_energy_j``.
Sequential rows are bit for bit the rows of a sweep without overlap settings (saved = 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

import energylens.sweep.points as points
from energylens.cost.phase import evaluate_phase, memory_per_gpu
from energylens.errors import EnergyLensError
from energylens.overlap.cost import evaluate_overlap
from energylens.parallel.layout import Layout, check_layout
from energylens.program import build_program, local_experts_mask
from energylens.sweep.rows import (
    AX_B,
    AX_DP,
    AX_EP,
    AX_O,
    AX_P,
    AX_PP,
    AX_TP,
    NDIM,
    OVERLAP_FIELDS,
    RowGather,
    constant,
    derive,
    expand_overlap,
    interval_columns,
)
from energylens.sweep.spec import SweepSpec
from energylens.sweep.table import SweepTable
from energylens.workload import DECODE_POINTS, Workload, decode_sizes, prefill_sizes

# Configurations per vectorised evaluation. Measured with the streamed --pareto-only summaries over a 1.7 M slice
# of the 95 M grid of issue 19 (benchmarks/bench_speed.py, stream_chunk_*; one core, a loaded machine): 100 k ->
# 0.61 M configs/s per CPU second, 488 MB peak; 250 k -> 0.79 M/s, 521 MB; 500 k -> 0.71 M/s, 729 MB.
DEFAULT_CHUNK_CONFIGS = 250_000
PHASE_FIELDS = ("latency_s", "energy_j", "compute_j", "memory_j", "static_j", "communication_j", "idle_wait_j")
BREAKDOWN = ("compute_j", "memory_j", "static_j", "communication_j", "idle_wait_j")

ProgressFn = Callable[[int, int, SweepSpec], None]  # (chunks done, chunks total, chunk just done)


def _axis(values, ax: int, dtype=np.int64) -> np.ndarray:
    shape = [1] * NDIM
    shape[ax] = -1
    return np.asarray(values, dtype=dtype).reshape(shape)


# ---------------------------------------------------------------------------------- chunking


def plan_chunks(spec: SweepSpec, max_configs: int = DEFAULT_CHUNK_CONFIGS) -> list[SweepSpec]:
    """Split a spec into single-group sub-specs of at most ``max_configs`` configurations each.

    Groups are (model, GPU, dtype, sp, power limit, SM clock); a group that is too large is halved along its outermost
    axis with more than one value (tp, then pp, dp, ep, batch, prompt_len, output_len) until it
    fits. The chunks therefore follow the canonical row order: their tables, concatenated in chunk
    order, are the table of the whole spec (``stream_sweep`` writes them one after another)."""
    out: list[SweepSpec] = []
    for model in spec.models:
        for gpu in spec.gpus:
            for dtype in spec.dtypes:
                for sp in spec.sp:
                    for limit in spec.power_limit_w:
                        for clock in spec.sm_clock_mhz:
                            g = replace(spec, models=(model,), gpus=(gpu,), dtypes=(dtype,), sp=(sp,),
                                        power_limit_w=(limit,), sm_clock_mhz=(clock,))
                            out.extend(_split(g, max(int(max_configs), 1)))
    return out


def _split(spec: SweepSpec, max_configs: int) -> list[SweepSpec]:
    if spec.size <= max_configs:
        return [spec]
    for name in ("tp", "pp", "dp", "ep", "batch", "prompt_len", "output_len"):
        values = getattr(spec, name)
        if len(values) > 1:
            half = len(values) // 2
            return (_split(replace(spec, **{name: values[:half]}), max_configs)
                    + _split(replace(spec, **{name: values[half:]}), max_configs))
    return [spec]


# ---------------------------------------------------------------------------------- evaluation


def run_sweep(spec: SweepSpec, *, progress: ProgressFn | None = None,
              max_chunk_configs: int = DEFAULT_CHUNK_CONFIGS) -> SweepTable:
    """Evaluate every configuration of ``spec``; returns the valid ones as a columnar table.

    Groups that cannot run at all (a dtype the GPU lacks, an unknown name) raise, unless other
    groups remain: then they are skipped and listed in ``table.meta['skipped']``. A grid whose table
    would not fit in memory is refused up front (``sweep.guard``): ``stream_sweep`` handles any size."""
    from energylens.sweep.guard import check_size

    check_size(spec)  # refuse up front a table that would not fit in memory
    t0 = time.perf_counter()
    chunks = plan_chunks(spec, max_chunk_configs)
    tables = []
    skipped: list[str] = []
    errors: list[EnergyLensError] = []
    for i, chunk in enumerate(chunks):
        try:
            tables.append(evaluate_chunk(chunk))
        except EnergyLensError as exc:
            if len(spec.models) * len(spec.gpus) * len(spec.dtypes) == 1:
                raise
            errors.append(exc)
            tables.append(SweepTable({}))
            msg = f"{chunk.models[0]} on {chunk.gpus[0]} ({chunk.dtypes[0] or 'default dtype'}): {exc}"
            if msg not in skipped:
                skipped.append(msg)
        if progress is not None:
            progress(i + 1, len(chunks), chunk)
    if errors and not any(t.names for t in tables):
        raise errors[0]
    meta = {"spec": spec.to_dict(), "skipped": skipped, "chunks": len(chunks),
            "grid_configs": spec.size, "elapsed_s": 0.0}
    table = assemble(spec, chunks, tables, meta)
    table.meta["elapsed_s"] = time.perf_counter() - t0
    return table


def _group_key(chunk: SweepSpec) -> tuple:
    return (chunk.models[0], chunk.gpus[0], chunk.dtypes[0], chunk.sp[0], chunk.power_limit_w[0],
            chunk.sm_clock_mhz[0])


def assemble(spec: SweepSpec, chunks: list[SweepSpec], results: list[SweepTable], meta: dict) -> SweepTable:
    """Concatenate chunk results (one per chunk, empty for skipped ones) in the canonical row order:
    groups in spec order, then the grid axes (tp, pp, dp, ep, batch, prompt_len, output_len) in
    spec order, whatever the chunking."""
    if len(results) != len(chunks):
        raise ValueError("assemble needs one result table per chunk")
    pairs = [(c, t) for c, t in zip(chunks, results, strict=True) if t.names]
    if not pairs:
        return SweepTable({}, meta)
    table = SweepTable.concat([t for _, t in pairs], meta)
    keys = [_group_key(c) for c in chunks]
    if len(set(keys)) == len(keys):
        return table  # one chunk per group: rows are already in canonical order
    group_ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    gid = np.concatenate([np.full(len(t), group_ids[_group_key(c)]) for c, t in pairs])
    sort_keys = [_positions(table[name], getattr(spec, name)) for name in reversed(
        ("tp", "pp", "dp", "ep", "batch", "prompt_len", "output_len"))]
    settings = np.asarray(spec.overlap_settings(), dtype=np.int64)
    code = table["overlap_comm_sms"].astype(np.int64) * 1_000 + table["overlap_chunks"].astype(np.int64)
    setting_key = _positions(code, settings[:, 0] * 1_000 + settings[:, 1])
    return SweepTable.concat([table], table.meta, np.lexsort((setting_key, *sort_keys, gid)))


def _positions(column: np.ndarray, values) -> np.ndarray:
    v = np.asarray(values)
    order = np.argsort(v, kind="stable")
    pos = np.searchsorted(v[order], column)
    return order[np.clip(pos, 0, len(v) - 1)]


def evaluate_chunk(spec: SweepSpec) -> SweepTable:
    """One vectorised evaluation of a single-group spec (one model, GPU, dtype and sp value).

    A layout axis that maps model dimensions (``tp``, ``ep``) derives collectives only where its
    degree exceeds 1, and a collective splits a fusion group (e.g. MoE dispatch + expert GEMMs)
    even at group size 1. When the program with an axis active has other kernels than without
    it, the grid is evaluated in blocks (degree 1 / degree > 1 per such axis), each with the
    program ``predict`` would build, and the rows are merged back into grid order."""
    from energylens.pipeline import check_context, prepare
    from energylens.sweep.allocator import keep_freed_memory

    keep_freed_memory()  # NumPy temporaries reuse freed memory instead of faulting fresh pages in (sweep.allocator)
    if len(spec.models) * len(spec.gpus) * len(spec.dtypes) * len(spec.sp) * len(spec.power_limit_w) \
            * len(spec.sm_clock_mhz) != 1:
        raise ValueError("evaluate_chunk takes a single-group spec; use run_sweep or plan_chunks")
    m, g = prepare(spec.models[0], spec.gpus[0], spec.dtypes[0], power_limit_w=spec.power_limit_w[0],
                   sm_clock_mhz=spec.sm_clock_mhz[0])
    check_context(m, max(spec.prompt_len) + max(spec.output_len), "prompt_len + output_len (largest of the grid)")
    sp = bool(spec.sp[0])
    axes = {
        "tp": np.asarray(spec.tp, dtype=np.int64),
        "pp": np.asarray(spec.pp, dtype=np.int64),
        "dp": np.asarray(spec.dp, dtype=np.int64),
        "ep": np.asarray(spec.ep if "e" in m.dims else (1,), dtype=np.int64),  # dense models: ep = 1
    }
    work = (np.asarray(spec.batch, dtype=np.int64), np.asarray(spec.prompt_len, dtype=np.int64),
            np.asarray(spec.output_len, dtype=np.int64))
    logical_shape = tuple(len(v) for v in axes.values()) + tuple(len(v) for v in work)
    n_settings = len(spec.overlap_settings())
    meta = {"model": m.name, "gpu": g.key, "dtype": m.weight_dtype, "sp": sp,
            "grid_configs": int(np.prod(logical_shape)) * n_settings}
    overlap = any(k > 0 for k, _ in spec.overlap_settings())
    blocks = _activity_blocks(m, axes, sp, int(spec.gpus_per_node), collectives=overlap)
    parts = []
    for sel in blocks:
        sub = {k: axes[k][ix] for k, ix in sel.items()}
        cols, index = _evaluate_grid(m, g, spec, sp, sub, *work)
        if len(cols) and len(blocks) == 1:  # rows already in grid order
            parts.append((cols, None))
        elif len(cols):
            ix = index()
            for k, ax in (("tp", AX_TP), ("pp", AX_PP), ("dp", AX_DP), ("ep", AX_EP)):
                ix[ax] = sel[k][ix[ax]]  # block index -> group grid index
            flat = np.ravel_multi_index(tuple(ix), logical_shape)  # overlap settings: innermost axis
            parts.append((cols, (flat[:, None] * n_settings + np.arange(n_settings)).reshape(-1)))
    meta["valid_configs"] = sum(len(c) for c, _ in parts)
    meta["blocks"] = len(blocks)
    if not parts:
        return SweepTable({}, meta)
    if len(parts) == 1:  # its columns stay lazy
        return SweepTable.concat([parts[0][0]], meta)
    order = np.argsort(np.concatenate([f for _, f in parts]), kind="stable")
    return SweepTable.concat([c for c, _ in parts], meta, order)  # blocks merged in grid order


def _kernel_partition(program, collectives: bool = False) -> tuple:
    """The kernels a program launches, as op-name tuples (collectives split fusion groups); with
    ``collectives`` also the collectives, as ``("@", name)`` between them."""
    from energylens.parallel.sharding import CollectiveStep

    out = []
    sections = [program.pre] + [steps for _, steps in program.blocks] + [program.post]
    for steps in sections:
        pending: list[str] = []
        group = None
        for st in steps:
            if isinstance(st, CollectiveStep):
                if pending:
                    out.append(tuple(pending))
                pending, group = [], None
                if collectives:
                    out.append(("@", st.name))
                continue
            if pending and (st.op.group is None or st.op.group != group):
                out.append(tuple(pending))
                pending = []
            pending.append(st.op.name)
            group = st.op.group
            if group is None:
                out.append(tuple(pending))
                pending = []
        if pending:
            out.append(tuple(pending))
        out.append(("|",))
    return tuple(out)


def _activity_blocks(m, axes: dict[str, np.ndarray], sp: bool, gpn: int,
                     collectives: bool = False) -> list[dict[str, np.ndarray]]:
    """Index sets of the layout axes to evaluate together: one block unless an axis's activity
    (degree 1 vs > 1) changes the kernels of the program, or with ``collectives`` (overlap settings:
    a collective of group size 1 costs nothing sequentially but would be paired with a GEMM) its
    collectives."""
    everything = {k: np.arange(len(v)) for k, v in axes.items()}
    mapped = sorted(set(Layout().axes.values()) & set(axes))  # axes that shard model dimensions
    split_axes = []
    for name in mapped:
        v = axes[name]
        if np.any(v == 1) and np.any(v > 1):
            on = {k: int(np.max(vals)) for k, vals in axes.items()}
            off = dict(on, **{name: 1})
            lay_on = Layout(**{k: on[k] for k in ("tp", "pp", "dp", "ep")}, sp=sp, gpus_per_node=gpn)
            lay_off = Layout(**{k: off[k] for k in ("tp", "pp", "dp", "ep")}, sp=sp, gpus_per_node=gpn)
            if (_kernel_partition(build_program(m, lay_on), collectives)
                    != _kernel_partition(build_program(m, lay_off), collectives)):
                split_axes.append(name)
    blocks = [everything]
    for name in split_axes:
        v = axes[name]
        new = []
        for b in blocks:
            for sel in (np.flatnonzero(v == 1), np.flatnonzero(v > 1)):
                new.append({**b, name: sel})
        blocks = new
    return [part for b in blocks for part in _expert_group_blocks(m, axes, sp, gpn, b)]


def _expert_group_blocks(m, axes: dict[str, np.ndarray], sp: bool, gpn: int,
                         block: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """``block`` split so that each part has one program class for the experts: ``ep == 1``, expert
    groups inside the tp group (local dispatch, ``program.local_experts_mask``) or across replicas
    (all-to-all). Parts are products: tp values grouped by the classes of the block's ep values."""
    tp, ep = axes["tp"][block["tp"]], axes["ep"][block["ep"]]
    local = local_experts_mask(m, Layout(tp=tp[:, None], ep=ep[None, :], sp=sp, gpus_per_node=gpn))
    cls = np.where(ep[None, :] == 1, 0, np.where(local, 1, 2))  # [tp, ep] of the block
    if np.all(cls == cls.flat[0]):
        return [block]
    rows: dict[tuple, list[int]] = {}
    for i, row in enumerate(cls):
        rows.setdefault(tuple(row.tolist()), []).append(i)
    parts = []
    for row, tps in rows.items():
        for c in sorted(set(row)):
            parts.append({**block, "tp": block["tp"][tps], "ep": block["ep"][np.asarray(row) == c]})
    return parts


def _evaluate_grid(m, g, spec: SweepSpec, sp: bool, axes: dict[str, np.ndarray], batch: np.ndarray,
                   prompt: np.ndarray, out_len: np.ndarray) -> tuple[SweepTable, Callable | None]:
    """Columns of the valid rows of one grid block (C order) and a function giving their block grid indices."""
    gpn = int(spec.gpus_per_node)
    tp, pp, dp, ep = (axes[k] for k in ("tp", "pp", "dp", "ep"))
    logical_shape = (len(tp), len(pp), len(dp), len(ep), len(batch), len(prompt), len(out_len))

    # validity over the logical grid; per-axis placeholders keep the evaluation finite
    lay_logical = Layout(tp=_axis(tp, AX_TP), pp=_axis(pp, AX_PP), dp=_axis(dp, AX_DP), ep=_axis(ep, AX_EP),
                         sp=sp, gpus_per_node=gpn)
    valid = check_layout(m, lay_logical, strict=False)
    divides = (batch[None, :] % dp[:, None] == 0) & (batch[None, :] >= dp[:, None])  # [dp, batch]
    # validity never depends on the workload lengths: a mask over the (layout, batch) axes
    mask_outer = np.broadcast_to(valid & _axis_2d(divides), logical_shape[:AX_P] + (1, 1))[..., 0, 0]
    if not mask_outer.any():
        return SweepTable({}), None
    tp_e = np.where(check_layout(m, Layout(tp=tp), strict=False), tp, 1)
    pp_e = np.where(check_layout(m, Layout(pp=pp), strict=False), pp, 1)
    ep_e = np.where(check_layout(m, Layout(ep=ep, dp=ep), strict=False), ep, 1)  # experts divisible by ep
    bpr = batch[None, :] // dp[:, None]
    u_vals = np.unique(bpr[divides])
    u_index = np.searchsorted(u_vals, np.where(divides, bpr, u_vals[0]))  # [dp, batch] -> row of U

    lay = Layout(tp=_axis(tp_e, AX_TP), pp=_axis(pp_e, AX_PP), dp=_axis(dp, AX_DP), ep=_axis(ep_e, AX_EP),
                 sp=sp, gpus_per_node=gpn)
    # the block has one expert class (_activity_blocks); its placeholders for invalid layouts must not mix
    program = build_program(m, lay, local=bool(np.any(local_experts_mask(m, Layout(tp=tp[:, None], ep=ep[None, :],
                                                                                       sp=sp, gpus_per_node=gpn)))))
    b_eval = _axis(u_vals, AX_B, float)
    p_eval = _axis(prompt, AX_P, float)
    eval_shape = logical_shape[:AX_B] + (len(u_vals),) + logical_shape[AX_B + 1:]

    # prefill: one evaluation over the whole grid (no output-length axis)
    sizes, weights = prefill_sizes(Workload(1, _axis(prompt, AX_P), 0), b_eval)
    plans = _overlap_plans(spec)
    totals_only = all(p is None for p in plans)  # overlap plans read the per-kernel records
    pre = evaluate_phase(m, g, lay, program, sizes, weights, decode=False, distinct_batches=totals_only,
                         per_replica=totals_only)
    prefill = {f: getattr(pre, f) for f in PHASE_FIELDS}
    for i, plan in enumerate(plans):  # one vectorised evaluation per overlap setting (not per configuration)
        if plan is not None:
            op = evaluate_overlap(m, g, lay, program, sizes, weights, decode=False, plans=[plan], baseline=pre)
            prefill.update({f"ov{i}_{f}": getattr(op, f) for f in OVERLAP_FIELDS})

    # decode: output lengths > DECODE_POINTS in one evaluation (midpoint rule); shorter ones one by
    # one (exact sums, as predict does for a scalar output length)
    decode = _decode(m, g, lay, program, b_eval, prompt, out_len, eval_shape, plans)

    mem = memory_per_gpu(m, lay, program, g, b_eval, p_eval + _axis(out_len, AX_O, float), p_eval)

    # gather the valid rows: valid (layout, batch) combinations x every (prompt, output) pair
    outer = list(np.nonzero(mask_outer))
    outer_eval = list(outer)
    outer_eval[AX_B] = u_index[outer[AX_DP], outer[AX_B]]
    take = RowGather(outer_eval, eval_shape)
    n = take.n_outer * len(prompt) * len(out_len)
    # lazy columns (sweep.table.Source): a column is gathered or derived when it is read
    cols: dict = {
        "model": constant(m.name, n),
        "gpu": constant(g.key, n),
        "dtype": constant(m.weight_dtype, n),
        "sp": constant(sp, n, bool),
        "tp": take.repeated(tp[outer[AX_TP]]), "pp": take.repeated(pp[outer[AX_PP]]),
        "dp": take.repeated(dp[outer[AX_DP]]), "ep": take.repeated(ep[outer[AX_EP]]),
        "num_gpus": take.repeated(tp[outer[AX_TP]] * pp[outer[AX_PP]] * dp[outer[AX_DP]]),
        "power_limit_w": constant(float(g.power_limit_w), n, float),  # per GPU, as run (cost.dvfs)
        "sm_clock_mhz": constant(float((g.operating.sm_clock_mhz or 0.0) if g.operating else 0.0), n, float),  # 0: free
        "batch": take.repeated(batch[outer[AX_B]]),
        "prompt_len": take.tiled(prompt, AX_P),
        "output_len": take.tiled(out_len, AX_O),
    }
    # sequential only: the energy totals are one data-parallel replica's, times dp at the rows read
    replicas = None if pre.replicas is None else dp[outer[AX_DP]].astype(float)
    for ph, res in (("prefill", prefill), ("decode", decode)):
        for f in PHASE_FIELDS:
            cols[f"{ph}_{f}"] = take.source(res[f]) if replicas is None or f == "latency_s" else \
                take.scaled(res[f], replicas)
    for f in ("weights_bytes", "kv_cache_bytes", "workspace_bytes"):
        cols[f] = take.source(mem[f])
    if len(plans) == 1 and plans[0] is None:  # sequential only: one row per configuration, nothing re-costed
        cols.update(overlap_comm_sms=constant(0, n, np.int64), overlap_chunks=constant(1, n, np.int64))
        for ph in ("prefill", "decode"):
            cols.update({f"{ph}_overlap_saved_s": constant(0.0, n, float), f"{ph}_overlap_saved_j": constant(0.0, n, float)})
    else:
        cols = expand_overlap(SweepTable(cols, length=n).columns, spec, plans, prefill, decode, take)
        n = len(cols["tp"])
    derive(cols, spec, float(mem["capacity_bytes"]), n)
    if spec.serving:  # SweepSpec allows serving with the sequential setting only: one row per configuration
        from energylens.sweep.serving_cols import serving_columns

        cols.update(serving_columns(m, g, lay, b_eval, p_eval, _axis(out_len, AX_O, float), take, spec.footprint()))
    interval_columns(cols, m, g.key)
    inner = (len(prompt), len(out_len))

    def index() -> list[np.ndarray]:  # block grid indices of the rows (C order), for merging blocks
        pairs = np.indices(inner).reshape(2, -1)
        return [take.repeat(i) for i in outer] + [np.tile(pairs[0], take.n_outer), np.tile(pairs[1], take.n_outer)]

    table = SweepTable(cols, length=n)
    table.grid = (take.n_outer, len(prompt), len(out_len), len(plans))  # row order (Pareto fronts by workload)
    return table, index


def _axis_2d(dp_batch: np.ndarray) -> np.ndarray:
    """A [dp, batch] array placed on the grid's dp and batch axes."""
    shape = [1] * NDIM
    shape[AX_DP], shape[AX_B] = dp_batch.shape
    return dp_batch.reshape(shape)


def _overlap_plans(spec: SweepSpec) -> list:
    """One entry per overlap setting: None (sequential) or the ``OverlapPlan`` of the setting."""
    from energylens.overlap.rules import OverlapPlan

    return [None if k == 0 else OverlapPlan(spec.overlap_collective, None, chunks=c, comm_sms=k)
            for k, c in spec.overlap_settings()]


def _decode(m, g, lay, program, b_eval, prompt, out_len, eval_shape, plans=()) -> dict[str, np.ndarray]:
    long_ix = np.flatnonzero(out_len > DECODE_POINTS)
    short_ix = np.flatnonzero(out_len <= DECODE_POINTS)
    parts: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    if long_ix.size:
        w = Workload(1, _axis(prompt, AX_P), _axis(out_len[long_ix], AX_O))
        parts.append((long_ix, _decode_eval(m, g, lay, program, w, b_eval, plans)))
    for i in short_ix:
        w = Workload(1, _axis(prompt, AX_P), int(out_len[i]))
        parts.append((np.array([i]), _decode_eval(m, g, lay, program, w, b_eval, plans)))
    if len(parts) == 1:
        return parts[0][1]
    order = np.argsort(np.concatenate([ix for ix, _ in parts]))
    out = {}
    for f in parts[0][1]:
        arrays = [np.broadcast_to(res[f], eval_shape[:AX_O] + (len(ix),)) for ix, res in parts]
        out[f] = np.take(np.concatenate(arrays, axis=AX_O), order, axis=AX_O)
    return out


_FOLDED: dict[tuple, tuple | None] = {}  # the last (prompt, output) lengths -> folded contexts and points


def _decode_eval(m, g, lay, program, w: Workload, b_eval, plans=()) -> dict[str, np.ndarray]:
    sizes, weights = decode_sizes(w, b_eval)
    t = np.asarray(sizes["t"])
    if np.all(t == 1.0):  # decode computes one query token per sequence: a scalar keeps arrays small
        sizes["t"] = np.asarray(1.0)
        if all(p is None for p in plans):  # kernels costed once per distinct context (sweep.points)
            key = (points.FOLD_MAX_SHARE,) + tuple((np.shape(v), np.asarray(v).tobytes())
                                                   for v in (w.prompt_len, w.output_len))
            if key not in _FOLDED:  # chunks of one grid share their lengths: folded once
                _FOLDED.clear()
                _FOLDED[key] = points.fold_contexts(sizes["s"], weights)
            if _FOLDED[key] is not None:
                sizes["s"], weights = _FOLDED[key]
    sequential = all(p is None for p in plans)
    pa = evaluate_phase(m, g, lay, program, sizes, weights, decode=True, distinct_batches=sequential,
                        per_replica=sequential)
    out = {f: getattr(pa, f) for f in PHASE_FIELDS}
    for i, plan in enumerate(plans):
        if plan is not None:
            op = evaluate_overlap(m, g, lay, program, sizes, weights, decode=True, plans=[plan], baseline=pa)
            out.update({f"ov{i}_{f}": getattr(op, f) for f in OVERLAP_FIELDS})
    return out
