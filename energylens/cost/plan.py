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
from dataclasses import dataclass, replace

import numpy as np

from energylens.cost import families as fam
from energylens.cost.kernels import (
    ROUTED_EXPERTS_KEY,
    CollectiveRecord,
    KernelRecord,
    kernel_groups,
    op_dtype,
)
from energylens.cost.plan_eval import StepsCost, evaluate_plan, flat_tables
from energylens.graph.model import Model
from energylens.graph.ops import Op, Role, Tensor
from energylens.graph.precision import gemm_kernel, moe_format_key
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
    dtype: str  # GEMMs: the kernel variant whose coefficients apply (fp8_block, nvfp4) or the math dtype
    peak_flops: float
    energy_per_flop_j: float
    flops: Mono
    causal: tuple[Mono, Mono, Mono, Mono] | None  # causal fused attention, the whole op (not per rank): t, the
    # keys its FLOPs count (window applied), all keys s, and the window (a constant; 0: none)
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
    memory_energy_scale: float = 1.0  # J per HBM byte over the profile's (a fused-MoE kernel's ratio)


@dataclass(frozen=True)
class CollectivePlan:
    step: CollectiveStep
    message: Mono


class _Compiler:
    def __init__(self, model: Model, gpu: GPU, variable: frozenset) -> None:
        self.model, self.gpu, self.variable = model, gpu, variable
        self.keys: dict[Key, None] = {}
        self.in_fused_moe = self.fused_moe_ops()

    def fused_moe_ops(self) -> frozenset[str]:
        """Element-wise ops that a fitted fused-MoE call already times: the kernel tables measure vLLM's whole
        FusedMoE layer, so its fitted ``moe_overhead`` holds the launches of the top-k routing, the SwiGLU
        between the expert GEMMs and the weighted top-k sum (combine); these ops add no launch of their own."""
        out: set[str] = set()
        for block in self.model.blocks:
            experts = [op for op in block.ops if op.kind == "einsum" and op.weights and (op.attrs or {}).get("moe") == "expert"]
            if not experts:
                continue
            dtype = op_dtype(experts[0], self.model, self.gpu)
            key = moe_format_key(self.model.weight_format(experts[0].weights[0].name))
            if not (self.gpu.has(f"moe_overhead_{key}") or self.gpu.has(f"moe_overhead_{dtype}")):
                continue
            routes: dict[str, set] = {}
            for op in block.ops:
                for t in op.inputs:
                    routes.setdefault(t.name, set()).add((op.attrs or {}).get("route"))
            for op in block.ops:
                a = op.attrs or {}
                if op.kind == "elementwise" and (a.get("moe") == "expert" or a.get("route") == "combine"
                                                 or {"dispatch", "combine"} <= routes.get(op.output.name, set())):
                    out.add(op.name)  # the last: top-k, whose choice both dispatch and combine read
        return frozenset(out)

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
            s_op = self.mono(op, "s", ())  # the key axis its FLOPs count (a sliding window applied)
            window = next((k[1] for k in s_op.keys if k[0] == "s"), 0.0)
            s_all = Mono(s_op.coef, tuple((k[0], 0.0, k[2]) if k[0] == "s" else k for k in s_op.keys))
            for k in s_all.keys:
                self.keys[k] = None
            causal = (self.mono(op, "t", ()), s_op, s_all, Mono(window, ()))
        family, mnk, eff, coeffs = "none", None, 0.0, None
        if op.kind == "einsum":
            mnk = tuple(self.mono(op, letters, st.shard) for letters in gemm_letters(op))
            family = "moe" if (op.attrs or {}).get("moe") == "expert" else "gemm"
            if family == "moe":
                coeffs = fam.moe_coeffs(gpu, dtype, moe_format_key(model.weight_format(op.weights[0].name)))
        elif op.kind == "elementwise":
            family = "vector"
            # element-wise math runs on the vector units at the dtype's efficiency; a user profile without
            # one for this dtype uses its best-known dtype's (the same SMs issue both)
            eff = gpu.max_compute_efficiency(dtype if gpu.has(f"max_compute_efficiency_{dtype}") else "bf16")
        if family == "gemm" and op.weights:  # the coefficients of its kernel variant (fp8_block, nvfp4), at the
            kernel = gemm_kernel(model.weight_format(op.weights[0].name), model.act_dtype, gpu)  # math rate
        else:
            kernel = dtype
        return OpPlan(family, kernel, gpu.peak_flops(dtype), gpu.energy_per_flop_j(dtype), flops, causal, mnk,
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
        if all(st.op.name in self.in_fused_moe for st in steps):
            overhead = 0.0
        attention = self.attention(steps)
        if attention is not None:  # its einsums on the cache: the J/FLOP of the tensor-core dtype they run at
            mma = fam.attention_mma_dtype(gpu, attention.kv_bytes, model.act_dtype)
            terms = [replace(tm, energy_per_flop_j=gpu.energy_per_flop_j(mma))
                     if tm.family == "gemm" and any(t.role is Role.KV_CACHE for t in st.op.inputs) else tm
                     for tm, st in zip(terms, steps, strict=True)]
        first = steps[0].op
        return KernelPlan(
            first.group if (first.group and len(steps) > 1) else first.name,
            "fused" if len(steps) > 1 else first.kind, tuple(s.op.name for s in steps), tuple(terms),
            tuple(byte_terms.values()), gpu.max_memory_efficiency if mem_eff is None else float(mem_eff),
            gpu.kernel_overhead_s if overhead is None else float(overhead), attention,
            gpu.moe_byte_energy_ratio if any(t.family == "moe" for t in terms) else 1.0)

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

    flat: object  # energylens.cost.plan_eval.FlatTables: index tables of the all-ops-stacked evaluation
    sum_order: np.ndarray  # kernels in the order their costs are summed (section, then context-free first)

    def evaluate(self, sizes: Mapping[str, np.ndarray], degrees: Mapping[str, np.ndarray],
                 axis_sizes: Mapping[str, np.ndarray], nodes: Mapping[str, np.ndarray] | None = None) -> StepsCost:
        """Costs at bound sizes (arrays broadcasting over configurations; see the module docstring)."""
        return evaluate_plan(self, sizes, degrees, axis_sizes, nodes)


_CACHE: dict[tuple, tuple[tuple, tuple]] = {}


def compile_steps(gpu: GPU, model: Model, steps: Sequence[Step], variable: frozenset) -> StepsPlan:
    """The compiled plan of ``steps`` on ``gpu`` for sizes ``variable`` (cached per objects and keys)."""
    return _compile(gpu, model, (steps,), variable)[0]


def compile_sections(gpu: GPU, model: Model, sections: Sequence[Sequence[Step]], variable: frozenset,
                     ) -> tuple[StepsPlan, np.ndarray, np.ndarray]:
    """Several step lists (a program's pre, blocks and post) compiled into one plan, evaluated at once:
    (plan, section of each kernel, section of each collective)."""
    return _compile(gpu, model, tuple(sections), variable)


def _compile(gpu: GPU, model: Model, sections: tuple, variable: frozenset) -> tuple[StepsPlan, np.ndarray, np.ndarray]:
    key = (id(gpu), id(model), tuple(tuple(id(s) for s in steps) for steps in sections), variable)
    hit = _CACHE.get(key)
    if hit is not None and hit[0][0] is gpu and hit[0][1] is model:
        return hit[1]
    c = _Compiler(model, gpu, variable)
    kernels, colls, k_sec, c_sec = [], [], [], []
    for i, steps in enumerate(sections):
        consumers: dict[str, set[str]] = {}
        for st in steps:
            if isinstance(st, OpStep):
                for t in st.op.inputs:
                    consumers.setdefault(t.name, set()).add(st.op.name)
        for item in kernel_groups(steps):
            if isinstance(item, CollectiveStep):
                # message: the tensor on one rank with the collective's view of its sharding
                fake = Op(item.name, "elementwise", (), item.tensor, attrs=dict(item.attrs))
                colls.append(CollectivePlan(item, c.tensor_bytes(fake, item.tensor, item.shard)))
                c_sec.append(i)
            else:
                kernels.append(c.kernel(item, consumers))
                k_sec.append(i)
    # per-section sums add kernels whose sizes do not depend on the context ``s`` first: in a sweep those
    # arrays are small and the context-dependent ones (attention) large, so each addition stays small
    order = sorted(range(len(kernels)), key=lambda j: (k_sec[j], _uses_context(kernels[j]), j))
    plan = StepsPlan(gpu, model, tuple(kernels), tuple(colls), tuple(c.keys),
                     flat_tables(tuple(kernels), tuple(colls)), np.asarray(order, dtype=np.intp))
    out = (plan, np.asarray(k_sec, dtype=np.intp), np.asarray(c_sec, dtype=np.intp))
    if len(_CACHE) > 512:
        _CACHE.clear()
    _CACHE[key] = ((gpu, model, sections), out)
    return out


@dataclass(frozen=True)
class MemoryPlan:
    """Tensor bytes on one rank for the memory check: per block (count, weight terms, KV-cache terms, live
    activation terms), the first and last stage's weight terms; and the keys they read."""

    blocks: tuple[tuple[int, tuple[Mono, ...], tuple[Mono, ...], tuple[Mono, ...]], ...]
    pre_weights: tuple[Mono, ...]
    post_weights: tuple[Mono, ...]
    keys: tuple[Key, ...]


def _uses_context(kp: KernelPlan) -> bool:
    monos = [x for t in kp.terms for x in (t.flops, *(t.mnk or ()), *(t.merged_n or ()), *(t.causal or ()))]
    monos += list(kp.bytes)
    if kp.attention is not None:
        monos.append(kp.attention.s)
    return any(k[0] == "s" for m in monos for k in m.keys)


def compile_memory(gpu: GPU, model: Model, program, variable: frozenset) -> MemoryPlan:
    """The byte terms of ``energylens.cost.phase.memory_per_gpu`` for a program (cached like the cost plan)."""
    key = ("memory", id(gpu), id(model), id(program), variable)
    hit = _CACHE.get(key)
    if hit is not None and hit[0][0] is gpu and hit[0][1] is model:
        return hit[1]
    c = _Compiler(model, gpu, variable)

    def collect(steps, role: Role) -> tuple[tuple[Mono, ...], tuple[Mono, ...]]:
        seen: dict[str, Mono] = {}
        act: list[Mono] = []
        consumer_groups: dict[str, set] = {}
        for st in steps:
            if isinstance(st, OpStep):
                for t in st.op.inputs:
                    consumer_groups.setdefault(t.name, set()).add(st.op.group)
        for st in steps:
            if not isinstance(st, OpStep):
                continue
            for t in (*st.op.inputs, st.op.output):
                if t.role is role and t.name not in seen and (role is not Role.KV_CACHE or "s" in t.dims):
                    seen[t.name] = c.tensor_bytes(st.op, t, st.tensor_shards.get(t.name, frozenset()))
            # intermediates consumed only inside their fusion group stay on chip (e.g. flash attention scores)
            on_chip = st.op.group is not None and consumer_groups.get(st.op.output.name, set()) == {st.op.group}
            if st.op.output.role is Role.ACTIVATION and not on_chip:
                act.append(c.tensor_bytes(st.op, st.op.output, st.tensor_shards.get(st.op.output.name, frozenset())))
        return tuple(seen.values()), tuple(act)

    blocks = []
    for block, steps in program.blocks:
        w, a = collect(steps, Role.WEIGHT)
        blocks.append((block.count, w, collect(steps, Role.KV_CACHE)[0], a))
    plan = MemoryPlan(tuple(blocks), collect(program.pre, Role.WEIGHT)[0], collect(program.post, Role.WEIGHT)[0],
                      tuple(c.keys))
    _CACHE[key] = ((gpu, model, program), plan)
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
