"""The one engine that computes values: per-rank steps x bound sizes x GPU -> kernel and collective costs.

Sizes are NumPy arrays (or scalars) that broadcast together: a sweep binds ``b``, ``t``, ``s`` and the
shard degrees as arrays over configurations and this code runs once.

* Consecutive ops of one fusion group form one kernel: one launch, and only the group's external
  inputs and outputs cross HBM (intermediates stay on chip).
* A kernel's compute time sums its ops' ``flops / (peak[dtype] * efficiency)``; its memory time is
  its external bytes over the achieved bandwidth (``cost.roofline``).
* Causal attention inside a fused (flash) kernel skips the masked half: FLOPs scale by
  ``(s - (t - 1) / 2) / s``. Unfused attention materialises and computes the full score matrix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from energylens.cost import families as fam
from energylens.cost.roofline import KernelCost, gemm_efficiency, kernel_cost_from_terms
from energylens.graph.model import Model
from energylens.graph.ops import Op, Role, Tensor
from energylens.graph.precision import gemm_dtype
from energylens.hardware.profile import GPU
from energylens.parallel.sharding import CollectiveStep, OpStep, Step


@dataclass(frozen=True)
class KernelRecord:
    """One kernel (a fusion group or a single op) on one rank, executed ``count`` times per phase."""

    name: str
    kind: str
    ops: tuple[str, ...]
    count: int
    flops: np.ndarray  # per call, per rank
    bytes: np.ndarray  # HBM bytes per call, per rank
    cost: KernelCost  # per call, per rank


@dataclass(frozen=True)
class CollectiveRecord:
    name: str
    kind: str
    axis: str
    count: int
    group_size: np.ndarray
    message_bytes: np.ndarray  # nccl-tests size, per rank per call
    latency_s: np.ndarray  # per call
    energy_j_per_gpu: np.ndarray  # per call, per participating GPU
    reason: str


# MoE: key of ``sizes`` holding the expert count the expert-side ops (those over ``c``, tokens per
# expert) touch, as a whole-model equivalent (experts hit on one rank x the ``e`` shard degree), so
# that a rank's grouped GEMMs, dispatch buffers and all-to-all messages count only the experts its
# tokens hit. Bound by ``energylens.moe.binding``; absent for dense models.
ROUTED_EXPERTS_KEY = "e:routed"


def op_sizes(op: Op, sizes: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sizes seen by this op: the workload's, with last-token heads (t=1) and sliding windows applied."""
    out = dict(sizes)
    if ROUTED_EXPERTS_KEY in sizes and "c" in op.dims:
        out["e"] = sizes[ROUTED_EXPERTS_KEY]
    attrs = op.attrs or {}
    if attrs.get("tokens") == "last":
        out["t"] = np.ones_like(np.asarray(sizes["t"], dtype=float))
    window = attrs.get("window")
    if window and "s" in out:
        out["s"] = np.minimum(np.asarray(out["s"], dtype=float), float(window))
    return out


def causal_fraction(t, s) -> np.ndarray:
    """Share of the t x s score matrix a causal kernel computes (t new tokens after s - t cached)."""
    t = np.asarray(t, dtype=float)
    s = np.asarray(s, dtype=float)
    return np.clip((s - (t - 1.0) / 2.0) / s, 0.0, 1.0)


class Binder:
    """Per-rank sizes and bytes of tensors, given global sizes and shard degrees."""

    def __init__(self, model: Model, sizes: Mapping[str, np.ndarray], degrees: Mapping[str, np.ndarray]) -> None:
        self.model = model
        self.sizes = {k: np.asarray(v, dtype=float) for k, v in sizes.items()}
        self.degrees = {k: np.asarray(v, dtype=float) for k, v in degrees.items()}

    def rank_sizes(self, op: Op, sharded: Mapping[str, str] | frozenset | set) -> dict[str, np.ndarray]:
        sz = op_sizes(op, self.sizes)
        out = {}
        for d in op.dims:
            v = sz[d]
            if d in sharded:
                v = np.ceil(v / self.degrees.get(d, 1.0)) if d == "v" else v / self.degrees.get(d, 1.0)
            out[d] = v
        return out

    def tensor_bytes(self, op: Op, t: Tensor, sharded: frozenset) -> np.ndarray:
        sz = self.rank_sizes(op, {d: "" for d in sharded})
        n = np.asarray(1.0)
        for d in t.dims:
            n = n * sz[d]
        return n * self.model.element_bytes(t)


def _op_flops(op: Op, step: OpStep, binder: Binder) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    sz = binder.rank_sizes(op, step.shard)
    if op.kind == "einsum":
        flops = np.asarray(op.spec.flops(sz), dtype=float)
    elif op.kind == "elementwise":
        n = np.asarray(1.0)
        for d in op.output.dims:
            n = n * sz[d]
        flops = op.flops_per_element * n
    else:
        flops = np.asarray(0.0)
    causal = op.causal or bool((op.attrs or {}).get("causal"))
    if causal and op.group is not None and "t" in sz and "s" in sz:
        full = op_sizes(op, binder.sizes)
        flops = flops * causal_fraction(full["t"], full["s"])
    return flops, sz


def _op_dtype(op: Op, model: Model, gpu: GPU) -> str:
    """Math dtype of an op: element-wise kernels in fp32; a GEMM with a weight on its weight format's
    kernel path (``energylens.graph.precision.gemm_dtype``: fp8 x fp8 at the fp8 rate, w4a16 dequantised
    to the activation dtype, ...); other einsums (attention) at the activation dtype."""
    if op.kind != "einsum":
        return "fp32"
    if op.weights:
        return gemm_dtype(model.weight_format(op.weights[0].name), model.act_dtype, gpu)
    return model.act_dtype


def _horizontal_key(op: Op, model: Model, gpu: GPU) -> tuple | None:
    if op.kind != "einsum" or not op.weights or len(op.inputs) != 2:
        return None
    act = op.inputs[0] if op.inputs[1].role is Role.WEIGHT else op.inputs[1]
    return (act.name, op.spec.contracted, _op_dtype(op, model, gpu))


def _horizontal_n(steps: list[OpStep], binder: Binder, model: Model, gpu: GPU) -> dict[str, np.ndarray]:
    """Horizontally fused GEMMs (QKV, gate+up) of one kernel are one GEMM: the projections that read
    the same activation over the same contraction share M and K and tile their summed N together."""
    groups: dict[tuple, list[tuple[str, np.ndarray]]] = {}
    for st in steps:
        key = _horizontal_key(st.op, model, gpu)
        if key is not None:
            _, n, _, _ = st.op.spec.gemm_mnk(binder.rank_sizes(st.op, st.shard))
            groups.setdefault(key, []).append((st.op.name, np.asarray(n, dtype=float)))
    out: dict[str, np.ndarray] = {}
    for members in groups.values():
        if len(members) > 1:
            total = sum((n for _, n in members), np.asarray(0.0))
            out.update({name: total for name, _ in members})
    return out


def _attention_latency_s(gpu: GPU, model: Model, binder: Binder, steps: list[OpStep]) -> np.ndarray | None:
    """Latency of a fused (flash) GQA attention kernel from the decode/prefill formulas of ``cost.families``;
    None for any other kernel (which keeps the roofline)."""
    if len(steps) < 2:
        return None
    for st in steps:
        op = st.op
        kv = [t for t in op.inputs if t.role is Role.KV_CACHE]
        if op.kind == "einsum" and kv and all(d in op.dims for d in "btsgrk"):
            sz = binder.rank_sizes(op, st.shard)
            s_full = np.asarray(binder.sizes["s"], dtype=float)
            window = float((op.attrs or {}).get("window") or 0.0)
            c = fam.attention_coeffs(gpu, _op_dtype(op, model, gpu))
            kv_bytes = model.element_bytes(kv[0])
            return fam.attention_latency_s(c, sz["b"], sz["t"], s_full, sz["g"] * sz["r"], sz["g"], sz["k"],
                                           kv_bytes, window)
    return None


def _kernel(gpu: GPU, model: Model, binder: Binder, steps: list[OpStep], consumers: Mapping[str, set[str]],
            count: int) -> KernelRecord:
    names = {s.op.name for s in steps}
    produced: dict[str, OpStep] = {}
    compute_s = np.asarray(0.0)
    e_compute = np.asarray(0.0)
    flops_total = np.asarray(0.0)
    byte_terms: dict[str, np.ndarray] = {}
    merged_n = _horizontal_n(steps, binder, model, gpu)
    mem_eff = overhead = None
    for st in steps:
        op = st.op
        flops, sz = _op_flops(op, st, binder)
        dtype = _op_dtype(op, model, gpu)
        if op.kind == "einsum" and (op.attrs or {}).get("moe") == "expert":
            # fused-MoE grouped GEMM: expert tiles padded to the MoE family's tile rows
            m, n, k, batch = op.spec.gemm_mnk(sz)
            mc = fam.moe_coeffs(gpu, dtype)
            m_tiles = np.maximum(batch, 1.0) * np.ceil(np.maximum(m, 1.0) / mc.tile_m)
            n_eff = merged_n.get(op.name, n)
            math_s = fam.grouped_gemm_math_s(mc, m_tiles, n_eff, k) * n / n_eff
            eff = np.where(math_s > 0, flops / np.maximum(gpu.peak_flops(dtype) * math_s, 1e-30), 1.0)
            mem_eff = mc.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s
            overhead = 0.5 * mc.overhead_s  # the fitted per-call overhead, split over its two grouped GEMMs
        elif op.kind == "einsum":
            m, n, k, batch = op.spec.gemm_mnk(sz)
            eff = gemm_efficiency(gpu, dtype, m, merged_n.get(op.name, n), k, batch)
            if op.weights and mem_eff is None:
                gc = fam.gemm_coeffs(gpu, dtype)
                mem_eff, overhead = gc.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s, gc.overhead_s
        else:
            # element-wise math runs on the vector units at the dtype's efficiency; a user profile without
            # one for this dtype uses its best-known dtype's (the same SMs issue both)
            eff = gpu.max_compute_efficiency(dtype if gpu.has(f"max_compute_efficiency_{dtype}") else "bf16")
        compute_s = compute_s + flops / (gpu.peak_flops(dtype) * eff)
        e_compute = e_compute + flops * gpu.energy_per_flop_j(dtype)
        flops_total = flops_total + flops
        for t in op.inputs:
            if t.name not in produced and t.name not in byte_terms:
                if op.kind == "gather" and t.role is Role.WEIGHT:
                    # a lookup reads one row of the table per index, not the whole table
                    rs = binder.rank_sizes(op, st.shard)
                    n_rows = np.asarray(1.0)
                    for d in op.inputs[0].dims:
                        n_rows = n_rows * rs[d]
                    width = np.asarray(1.0)
                    for d in t.dims:
                        if d != op.gather_dim:
                            width = width * rs[d]
                    byte_terms[t.name] = n_rows * width * model.element_bytes(t)
                else:
                    byte_terms[t.name] = binder.tensor_bytes(op, t, st.tensor_shards.get(t.name, frozenset()))
        produced[op.output.name] = st
    for tname, st in produced.items():
        t = st.op.output
        outside = consumers.get(tname, set()) - names
        if outside or not consumers.get(tname) or t.role is not Role.ACTIVATION:
            byte_terms[tname] = binder.tensor_bytes(st.op, t, st.tensor_shards.get(tname, frozenset()))
    bytes_total = np.asarray(0.0)
    for v in byte_terms.values():
        bytes_total = bytes_total + v
    cost = kernel_cost_from_terms(gpu, compute_s, bytes_total, e_compute, memory_efficiency=mem_eff,
                                  overhead_s=overhead, latency_s=_attention_latency_s(gpu, model, binder, steps))
    first = steps[0].op
    name = first.group if (first.group and len(steps) > 1) else first.name
    kind = "fused" if len(steps) > 1 else first.kind
    return KernelRecord(name, kind, tuple(s.op.name for s in steps), count, flops_total, bytes_total, cost)


def kernel_groups(steps: Sequence[Step]) -> list[CollectiveStep | list[OpStep]]:
    """Steps in execution order with consecutive ops of one fusion group joined into one kernel
    (a collective or a change of group ends a kernel; an op without a group is a kernel alone)."""
    out: list[CollectiveStep | list[OpStep]] = []
    pending: list[OpStep] = []
    for st in steps:
        if isinstance(st, CollectiveStep):
            if pending:
                out.append(pending)
                pending = []
            out.append(st)
            continue
        if pending and (st.op.group is None or st.op.group != pending[-1].op.group):
            out.append(pending)
            pending = []
        pending.append(st)
        if st.op.group is None:
            out.append(pending)
            pending = []
    if pending:
        out.append(pending)
    return out


def cost_steps(gpu: GPU, model: Model, steps: list[Step], sizes: Mapping[str, np.ndarray],
               degrees: Mapping[str, np.ndarray], axis_sizes: Mapping[str, np.ndarray], *, count: int = 1,
               prefix: str = "", nodes: Mapping[str, np.ndarray] | None = None) -> tuple[list[KernelRecord], list[CollectiveRecord]]:
    """Cost every kernel and collective of a step list executed ``count`` times on one rank."""
    binder = Binder(model, sizes, degrees)
    consumers: dict[str, set[str]] = {}
    for st in steps:
        if isinstance(st, OpStep):
            for t in st.op.inputs:
                consumers.setdefault(t.name, set()).add(st.op.name)
    kernels: list[KernelRecord] = []
    colls: list[CollectiveRecord] = []
    for item in kernel_groups(steps):
        if isinstance(item, CollectiveStep):
            from energylens.cost.collectives import collective_cost

            st = item
            group = np.asarray(axis_sizes[st.axis], dtype=float)
            # message: the tensor on one rank with the collective's view of its sharding
            fake = Op(st.name, "elementwise", (), st.tensor, attrs=dict(st.attrs))
            msg = binder.tensor_bytes(fake, st.tensor, st.shard)
            n_nodes = (nodes or {}).get(st.axis, 1)
            cc = collective_cost(st.kind, msg, group, gpu, nodes=n_nodes)
            colls.append(CollectiveRecord(prefix + st.name, st.kind, st.axis, count, group, np.asarray(msg),
                                          cc.latency_s, cc.energy_j_per_gpu, st.reason))
        else:
            rec = _kernel(gpu, model, binder, item, consumers, count)
            kernels.append(KernelRecord(prefix + rec.name, rec.kind, rec.ops, rec.count, rec.flops, rec.bytes, rec.cost))
    return kernels, colls
