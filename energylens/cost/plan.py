"""The compiled cost plan: a per-rank step list compiled once into flat per-op coefficients, then
evaluated over any array of configurations with a few NumPy calls per kernel family.

``compile_steps(gpu, model, steps, variable)`` (cached) does all the structural work once: fusion
groups into kernels (``cost.kernels.kernel_groups``), each op's dtype, family and rates, its FLOPs,
GEMM ``M, N, K, batch`` and HBM byte terms as *monomials* ``coef x prod(sizes)`` over the sizes that vary
(``variable``: the workload dims ``b``, ``t``, ``s`` and MoE's ``c``; model dims fold into ``coef``;
a sharded dim is its size over its degree, so layouts stay arrays too), horizontally fused GEMMs
(QKV, gate+up: one GEMM over their summed N), the fused-attention kernel's formula, the kernel's memory
efficiency and launch overhead, and each collective's message monomial.

``StepsPlan.evaluate(sizes, degrees, axis_sizes, nodes)`` then computes each distinct size product once
(over the axes it depends on: a decode weight GEMM on batch and TP, attention on the context), calls
the family formulas of :mod:`energylens.cost.families` and the roofline/power rules of
:mod:`energylens.cost.roofline` on ops *stacked* along a leading axis (one call per family, dtype and
shape), and keeps the kernels' costs as stacked arrays. Phase totals sum those arrays
(:meth:`StepsCost.total`); per-kernel records (:meth:`StepsCost.records`, what ``predict`` shows per op)
are views of the same arrays, built only when asked for. One configuration and 10^8 take the same path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from energylens.cost import families as fam
from energylens.cost.kernels import (
    ROUTED_EXPERTS_KEY,
    CollectiveRecord,
    KernelRecord,
    causal_fraction,
    kernel_groups,
    op_dtype,
)
from energylens.cost.roofline import KernelCost, gemm_efficiency, kernel_cost_from_terms
from energylens.graph.model import Model
from energylens.graph.ops import Op, Role, Tensor
from energylens.hardware.profile import GPU
from energylens.parallel.sharding import CollectiveStep, OpStep, Step

Key = tuple  # (size name, window (0: none), sharded dim ("": whole)); "#1" names the constant 1


@dataclass(frozen=True)
class Mono:
    """``coef x prod(values of keys)``: a size product of one op on one rank."""

    coef: float
    keys: tuple[Key, ...]

    def times(self, factor: float) -> Mono:
        return Mono(self.coef * factor, self.keys)


@dataclass(frozen=True)
class OpPlan:
    family: str  # "gemm" | "moe" | "vector" | "none"
    dtype: str
    peak_flops: float
    energy_per_flop_j: float
    flops: Mono
    causal: tuple[Mono, Mono] | None  # (t, s) of the whole op (not per rank) for causal fused attention
    mnk: tuple[Mono, Mono, Mono, Mono] | None  # GEMM M, N, K, batch on one rank
    merged_n: tuple[Mono, ...] | None  # horizontally fused GEMMs: every member's N (summed)
    efficiency: float  # vector ops: the dtype's efficiency
    coeffs: object  # GemmCoeffs (MoE grouped GEMM)


@dataclass(frozen=True)
class AttentionPlan:
    coeffs: fam.AttentionCoeffs
    b: Mono
    t: Mono
    s: Mono
    g: Mono
    r: Mono
    k: Mono
    kv_bytes: float
    window: float


@dataclass(frozen=True)
class KernelPlan:
    name: str
    kind: str
    ops: tuple[str, ...]
    terms: tuple[OpPlan, ...]
    bytes: tuple[Mono, ...]  # HBM byte terms in order (external inputs, then outputs)
    memory_efficiency: float
    overhead_s: float
    attention: AttentionPlan | None


@dataclass(frozen=True)
class CollectivePlan:
    step: CollectiveStep
    message: Mono


class _Compiler:
    def __init__(self, model: Model, gpu: GPU, variable: frozenset) -> None:
        self.model, self.gpu, self.variable = model, gpu, variable
        self.keys: dict[Key, None] = {}

    def dim_key(self, op: Op, d: str, sharded: bool) -> tuple[Key | None, float]:
        """Key of dim ``d`` of ``op`` (or None) and the constant factor it contributes."""
        attrs = op.attrs or {}
        name, window = d, 0.0
        if d == "e" and ROUTED_EXPERTS_KEY in self.variable and "c" in op.dims:
            name = ROUTED_EXPERTS_KEY
        if d == "t" and attrs.get("tokens") == "last":
            name = "#1"
        if d == "s" and attrs.get("window") and "s" in self.variable:
            window = float(attrs["window"])
        if not sharded and not window and (name == "#1" or name not in self.variable):
            return None, 1.0 if name == "#1" else float(self.model.dims[name])
        key = (name, window, d if sharded else "")
        self.keys[key] = None
        return key, 1.0

    def mono(self, op: Op, dims: str, sharded, coef: float = 1.0) -> Mono:
        keys = []
        for d in dims:
            key, c = self.dim_key(op, d, d in sharded)
            coef = coef * c
            if key is not None:
                keys.append(key)
        return Mono(coef, tuple(keys))

    def op_plan(self, st: OpStep, merged: tuple[Mono, ...] | None) -> OpPlan:
        op, gpu, model = st.op, self.gpu, self.model
        dtype = op_dtype(op, model, gpu)
        if op.kind == "einsum":
            flops = self.mono(op, op.spec.dims, st.shard, 2.0 if op.spec.contracted else 1.0)
        elif op.kind == "elementwise":
            flops = self.mono(op, op.output.dims, st.shard, op.flops_per_element)
        else:
            flops = Mono(0.0, ())
        causal = None
        if (op.causal or bool((op.attrs or {}).get("causal"))) and op.group is not None \
                and "t" in op.dims and "s" in op.dims:
            causal = (self.mono(op, "t", ()), self.mono(op, "s", ()))
        family, mnk, eff, coeffs = "none", None, 0.0, None
        if op.kind == "einsum":
            mnk = tuple(self.mono(op, letters, st.shard) for letters in gemm_letters(op))
            family = "moe" if (op.attrs or {}).get("moe") == "expert" else "gemm"
            if family == "moe":
                coeffs = fam.moe_coeffs(gpu, dtype)
        elif op.kind == "elementwise":
            family = "vector"
            # element-wise math runs on the vector units at the dtype's efficiency; a user profile without
            # one for this dtype uses its best-known dtype's (the same SMs issue both)
            eff = gpu.max_compute_efficiency(dtype if gpu.has(f"max_compute_efficiency_{dtype}") else "bf16")
        return OpPlan(family, dtype, gpu.peak_flops(dtype), gpu.energy_per_flop_j(dtype), flops, causal, mnk,
                      merged, eff, coeffs)

    def tensor_bytes(self, op: Op, t: Tensor, sharded) -> Mono:
        return self.mono(op, t.dims, sharded, 1.0).times(self.model.element_bytes(t))

    def kernel(self, steps: list[OpStep], consumers: Mapping[str, set[str]]) -> KernelPlan:
        gpu, model = self.gpu, self.model
        names = {s.op.name for s in steps}
        merged = self.horizontal(steps)
        terms = []
        produced: dict[str, OpStep] = {}
        byte_terms: dict[str, Mono] = {}
        mem_eff = overhead = None
        for st in steps:
            op = st.op
            term = self.op_plan(st, merged.get(op.name))
            terms.append(term)
            if term.family == "moe":
                mem_eff = term.coeffs.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s
                overhead = 0.5 * term.coeffs.overhead_s  # the fitted per-call overhead, split over its two GEMMs
            elif term.family == "gemm" and op.weights and mem_eff is None:
                gc = fam.gemm_coeffs(gpu, term.dtype)
                mem_eff, overhead = gc.bandwidth_bytes_per_s / gpu.hbm_bandwidth_bytes_per_s, gc.overhead_s
            for t in op.inputs:
                if t.name not in produced and t.name not in byte_terms:
                    if op.kind == "gather" and t.role is Role.WEIGHT:
                        # a lookup reads one row of the table per index, not the whole table
                        width = "".join(d for d in t.dims if d != op.gather_dim)
                        byte_terms[t.name] = self.mono(op, op.inputs[0].dims + width, st.shard,
                                                       1.0).times(model.element_bytes(t))
                    else:
                        byte_terms[t.name] = self.tensor_bytes(op, t, st.tensor_shards.get(t.name, frozenset()))
            produced[op.output.name] = st
        for tname, st in produced.items():
            t = st.op.output
            outside = consumers.get(tname, set()) - names
            if outside or not consumers.get(tname) or t.role is not Role.ACTIVATION:
                byte_terms[tname] = self.tensor_bytes(st.op, t, st.tensor_shards.get(tname, frozenset()))
        first = steps[0].op
        return KernelPlan(
            first.group if (first.group and len(steps) > 1) else first.name,
            "fused" if len(steps) > 1 else first.kind, tuple(s.op.name for s in steps), tuple(terms),
            tuple(byte_terms.values()), gpu.max_memory_efficiency if mem_eff is None else float(mem_eff),
            gpu.kernel_overhead_s if overhead is None else float(overhead), self.attention(steps))

    def horizontal(self, steps: list[OpStep]) -> dict[str, tuple[Mono, ...]]:
        """Horizontally fused GEMMs (QKV, gate+up) of one kernel are one GEMM: the projections that read
        the same activation over the same contraction share M and K and tile their summed N together."""
        groups: dict[tuple, list[tuple[str, Mono]]] = {}
        for st in steps:
            op = st.op
            if op.kind != "einsum" or not op.weights or len(op.inputs) != 2:
                continue
            act = op.inputs[0] if op.inputs[1].role is Role.WEIGHT else op.inputs[1]
            key = (act.name, op.spec.contracted, op_dtype(op, self.model, self.gpu))
            groups.setdefault(key, []).append((op.name, self.mono(op, gemm_letters(op)[1], st.shard)))
        out: dict[str, tuple[Mono, ...]] = {}
        for members in groups.values():
            if len(members) > 1:
                out.update({name: tuple(n for _, n in members) for name, _ in members})
        return out

    def attention(self, steps: list[OpStep]) -> AttentionPlan | None:
        """A fused (flash) GQA attention kernel gets the decode/prefill formulas of ``cost.families``."""
        if len(steps) < 2:
            return None
        for st in steps:
            op = st.op
            kv = [t for t in op.inputs if t.role is Role.KV_CACHE]
            if op.kind == "einsum" and kv and all(d in op.dims for d in "btsgrk"):
                c = fam.attention_coeffs(self.gpu, op_dtype(op, self.model, self.gpu))
                b, t, g, r, k = (self.mono(op, d, st.shard) for d in "btgrk")
                self.keys[("s", 0.0, "")] = None
                return AttentionPlan(c, b, t, Mono(1.0, (("s", 0.0, ""),)), g, r, k,
                                     self.model.element_bytes(kv[0]), float((op.attrs or {}).get("window") or 0.0))
        return None


def gemm_letters(op: Op) -> tuple[str, str, str, str]:
    """Dims of (M, N, K, batch) of an einsum, as ``EinsumSpec.gemm_mnk`` forms them."""
    spec = op.spec
    if len(spec.inputs) == 1:
        return spec.output, "", spec.contracted, ""
    a, b_ = spec.inputs[0], spec.inputs[1]
    batch = "".join(c for c in spec.output if c in a and c in b_)
    m = "".join(c for c in spec.output if c in a and c not in b_)
    n = "".join(c for c in spec.output if c in b_ and c not in a)
    return m, n, spec.contracted, batch


@dataclass(frozen=True)
class StepsPlan:
    """A compiled step list: kernels and collectives with their coefficients (see module docstring)."""

    gpu: GPU
    model: Model
    kernels: tuple[KernelPlan, ...]
    collectives: tuple[CollectivePlan, ...]
    keys: tuple[Key, ...]

    def evaluate(self, sizes: Mapping[str, np.ndarray], degrees: Mapping[str, np.ndarray],
                 axis_sizes: Mapping[str, np.ndarray], nodes: Mapping[str, np.ndarray] | None = None) -> StepsCost:
        vals = {key: _key_value(key, sizes, degrees) for key in self.keys}
        memo: dict[tuple, np.ndarray] = {}

        def ev(m: Mono):
            if not m.keys:
                return m.coef
            p = memo.get(m.keys)
            if p is None:
                p = vals[m.keys[0]]
                for k in m.keys[1:]:
                    p = p * vals[k]
                memo[m.keys] = p
            return m.coef * p if m.coef != 1.0 else p

        gpu = self.gpu
        # --- every op's FLOPs and compute efficiency; GEMMs stacked per (dtype, shape)
        n_ops = sum(len(k.terms) for k in self.kernels)
        flops: list = [0.0] * n_ops
        eff: list = [1.0] * n_ops
        gemms: dict[tuple, list] = {}
        i = 0
        for kp in self.kernels:
            for term in kp.terms:
                f = ev(term.flops)
                if term.causal is not None:
                    f = f * causal_fraction(ev(term.causal[0]), ev(term.causal[1]))
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
                    eff[i] = _moe_efficiency(gpu, term, f, ev)
                i += 1
        for (dtype, shape), members in gemms.items():
            if len(members) == 1:
                eff[members[0][0]] = gemm_efficiency(gpu, dtype, *members[0][1])
                continue
            rows = gemm_efficiency(gpu, dtype, *(_stack([a[j] for _, a in members], len(shape)) for j in range(4)))
            for r, (ix, _) in enumerate(members):
                eff[ix] = rows[r]
        # --- kernels: compute time and energy summed over their ops, HBM bytes, attention formula
        compute_s, e_compute, flops_k, bytes_k, att = [], [], [], [], []
        i = 0
        for kp in self.kernels:
            cs = np.asarray(0.0)
            ec = np.asarray(0.0)
            ft = np.asarray(0.0)
            for term in kp.terms:
                f = flops[i]
                cs = cs + f / (term.peak_flops * eff[i])
                ec = ec + f * term.energy_per_flop_j
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
        # --- roofline and power, kernels stacked per (shape, family formula or not)
        groups: dict[tuple, list[int]] = {}
        for j in range(len(self.kernels)):
            arrs = (compute_s[j], bytes_k[j], e_compute[j]) + (() if att[j] is None else (att[j],))
            groups.setdefault((np.broadcast_shapes(*(np.shape(x) for x in arrs)), att[j] is not None),
                              []).append(j)
        costs = []
        for (shape, has_att), idx in groups.items():
            col = (len(idx),) + (1,) * len(shape)
            mem = np.array([self.kernels[j].memory_efficiency for j in idx]).reshape(col)
            ovh = np.array([self.kernels[j].overhead_s for j in idx]).reshape(col)
            n = len(shape)
            kc = kernel_cost_from_terms(gpu, _stack([compute_s[j] for j in idx], n), _stack([bytes_k[j] for j in idx], n),
                                        _stack([e_compute[j] for j in idx], n), memory_efficiency=mem, overhead_s=ovh,
                                        latency_s=_stack([att[j] for j in idx], n) if has_att else None)
            if kc.latency_s.shape[0] != len(idx):  # every input was shared: one row per kernel all the same
                kc = _rows(kc, len(idx))
            costs.append((idx, kc))
        # --- collectives, stacked per (kind, axis)
        colls = []
        by_kind: dict[tuple, list[int]] = {}
        msgs = [ev(c.message) for c in self.collectives]
        for j, c in enumerate(self.collectives):
            by_kind.setdefault((c.step.kind, c.step.axis, np.shape(msgs[j])), []).append(j)
        from energylens.cost.collectives import collective_cost

        for (kind, axis, _), idx in by_kind.items():
            group = np.asarray(axis_sizes[axis], dtype=float)
            n_nodes = (nodes or {}).get(axis, 1)
            if len(idx) == 1:
                cc = collective_cost(kind, msgs[idx[0]], group, gpu, nodes=n_nodes)
            else:
                shape = np.broadcast_shapes(np.shape(msgs[idx[0]]), group.shape, np.shape(n_nodes))
                cc = collective_cost(kind, np.stack([np.broadcast_to(msgs[j], shape) for j in idx]),
                                     np.broadcast_to(group, shape)[None], gpu,
                                     nodes=np.broadcast_to(n_nodes, shape)[None])
            colls.append((idx, group, cc))
        return StepsCost(self, flops_k, bytes_k, costs, msgs, colls)


def _stack(xs: list, ndim: int) -> np.ndarray:
    """``xs`` stacked on a new leading axis, each over the axes it has (padded to ``ndim``), not expanded to
    the others' axes; one shared array stays one row (broadcast over the stack)."""
    first = xs[0]
    if all(x is first for x in xs):
        a = np.asarray(first, dtype=float)
        return a.reshape((1,) * (ndim + 1 - a.ndim) + a.shape)
    shape = np.broadcast_shapes(*(np.shape(x) for x in xs))
    shape = (1,) * (ndim - len(shape)) + shape
    return np.stack([np.broadcast_to(np.asarray(x, dtype=float), shape) for x in xs])


def _rows(kc: KernelCost, n: int) -> KernelCost:
    def full(a):
        return a if isinstance(a, float) else np.broadcast_to(a, (n,) + np.shape(a)[1:])

    return KernelCost(*(full(getattr(kc, f)) for f in _FIELDS), clock_fraction=full(kc.clock_fraction),
                      dynamic_scale=full(kc.dynamic_scale))


def _moe_efficiency(gpu: GPU, term: OpPlan, flops, ev):
    """Fused-MoE grouped GEMM: expert tiles padded to the MoE family's tile rows."""
    m, n, k, batch = (ev(x) for x in term.mnk)
    mc = term.coeffs
    m_tiles = np.maximum(batch, 1.0) * np.ceil(np.maximum(m, 1.0) / mc.tile_m)
    n_eff = n
    if term.merged_n is not None:
        n_eff = np.asarray(0.0)
        for x in term.merged_n:
            n_eff = n_eff + ev(x)
    math_s = fam.grouped_gemm_math_s(mc, m_tiles, n_eff, k) * n / n_eff
    return np.where(math_s > 0, flops / np.maximum(term.peak_flops * math_s, 1e-30), 1.0)


def _key_value(key: Key, sizes: Mapping[str, np.ndarray], degrees: Mapping[str, np.ndarray]):
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

    def __init__(self, plan: StepsPlan, flops, bytes_, costs, msgs, colls) -> None:
        self.plan, self.flops, self.bytes, self.costs, self.msgs, self.colls = plan, flops, bytes_, costs, msgs, colls

    def total(self, attr: str) -> np.ndarray:
        """Sum over the kernels of one ``KernelCost`` field (``latency_s``, ``energy_j``, ...)."""
        out = np.asarray(0.0)
        for _, kc in self.costs:
            out = out + np.sum(getattr(kc, attr), axis=0)
        return out

    def collective_total(self, attr: str) -> np.ndarray:
        """Sum over the collectives of ``latency_s`` or ``energy_j_per_gpu`` (per call)."""
        out = np.asarray(0.0)
        for idx, _, cc in self.colls:
            x = getattr(cc, attr)
            out = out + (np.sum(x, axis=0) if len(idx) > 1 else x)
        return out

    def records(self, count: int = 1, prefix: str = "") -> tuple[list[KernelRecord], list[CollectiveRecord]]:
        """Per-kernel and per-collective records (views of the stacked arrays), in program order."""
        kernels: list = [None] * len(self.plan.kernels)
        for idx, kc in self.costs:
            for r, j in enumerate(idx):
                kp = self.plan.kernels[j]
                cost = KernelCost(*(getattr(kc, f)[r] for f in _FIELDS),
                                  clock_fraction=_row(kc.clock_fraction, r), dynamic_scale=_row(kc.dynamic_scale, r))
                kernels[j] = KernelRecord(prefix + kp.name, kp.kind, kp.ops, count, self.flops[j], self.bytes[j], cost)
        colls: list = [None] * len(self.plan.collectives)
        for idx, group, cc in self.colls:
            for r, j in enumerate(idx):
                st = self.plan.collectives[j].step
                lat, en = (cc.latency_s, cc.energy_j_per_gpu) if len(idx) == 1 else (cc.latency_s[r],
                                                                                     cc.energy_j_per_gpu[r])
                colls[j] = CollectiveRecord(prefix + st.name, st.kind, st.axis, count, group,
                                            np.asarray(self.msgs[j]), lat, en, st.reason)
        return kernels, colls


def _row(x, r):
    return x if isinstance(x, float) else x[r]


_CACHE: dict[tuple, tuple[object, StepsPlan]] = {}


def compile_steps(gpu: GPU, model: Model, steps: Sequence[Step], variable: frozenset) -> StepsPlan:
    """The compiled plan of ``steps`` on ``gpu`` for sizes ``variable`` (cached per objects and keys)."""
    key = (id(gpu), id(model), tuple(id(s) for s in steps), variable)
    hit = _CACHE.get(key)
    if hit is not None and hit[0][0] is gpu and hit[0][1] is model:
        return hit[1]
    c = _Compiler(model, gpu, variable)
    consumers: dict[str, set[str]] = {}
    for st in steps:
        if isinstance(st, OpStep):
            for t in st.op.inputs:
                consumers.setdefault(t.name, set()).add(st.op.name)
    kernels, colls = [], []
    for item in kernel_groups(steps):
        if isinstance(item, CollectiveStep):
            # message: the tensor on one rank with the collective's view of its sharding
            fake = Op(item.name, "elementwise", (), item.tensor, attrs=dict(item.attrs))
            colls.append(CollectivePlan(item, c.tensor_bytes(fake, item.tensor, item.shard)))
        else:
            kernels.append(c.kernel(item, consumers))
    plan = StepsPlan(gpu, model, tuple(kernels), tuple(colls), tuple(c.keys))
    if len(_CACHE) > 512:
        _CACHE.clear()
    _CACHE[key] = ((gpu, model, steps), plan)
    return plan


def variable_sizes(model: Model, sizes: Mapping[str, np.ndarray]) -> frozenset:
    """Names in ``sizes`` that are not the model's own constant dims."""
    out = []
    for k, v in sizes.items():
        const = model.dims.get(k)
        if const is None or np.ndim(v) or float(v) != float(const):
            out.append(k)
    return frozenset(out)


def cost_steps(gpu: GPU, model: Model, steps: Sequence[Step], sizes: Mapping[str, np.ndarray],
               degrees: Mapping[str, np.ndarray], axis_sizes: Mapping[str, np.ndarray], *, count: int = 1,
               prefix: str = "", nodes: Mapping[str, np.ndarray] | None = None,
               ) -> tuple[list[KernelRecord], list[CollectiveRecord]]:
    """Cost every kernel and collective of a step list executed ``count`` times on one rank (records)."""
    plan = compile_steps(gpu, model, steps, variable_sizes(model, sizes))
    return plan.evaluate(sizes, degrees, axis_sizes, nodes).records(count, prefix)
