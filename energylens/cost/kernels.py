"""What the cost engine works on: kernel and collective records, per-op sizes, fusion into kernels.

The engine itself (compiled once per step list, evaluated over arrays of configurations) is
:mod:`energylens.cost.plan`; the rules it follows:

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

from energylens.cost.roofline import KernelCost
from energylens.graph.model import Model
from energylens.graph.ops import Op, Tensor
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


def causal_fraction(t, s, window=0.0) -> np.ndarray:
    """Share of the t x s' score matrix a causal kernel computes (t new tokens after s - t cached; s' = s, or
    min(s, window) for a sliding window, the key axis its einsums count): the mean over the rows of their keys,
    row i (1..t) seeing s - t + i of them, at most ``window`` (0: none), over s'."""
    t = np.maximum(np.asarray(t, dtype=float), 1.0)
    s = np.asarray(s, dtype=float)
    w = np.asarray(window, dtype=float)
    first = s - t + 1.0  # keys of the first new row
    if not np.any(w > 0):
        return np.minimum(np.maximum((s - (t - 1.0) / 2.0) / s, 0.0), 1.0)
    cap = np.where(w > 0, w, np.inf)
    free = np.clip(cap - first + 1.0, 0.0, t)  # rows under the window: keys first .. first + free - 1
    keys = (free * (first + (free - 1.0) / 2.0) + (t - free) * np.minimum(cap, s)) / t
    return np.minimum(np.maximum(keys / np.minimum(s, cap), 0.0), 1.0)


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


def op_dtype(op: Op, model: Model, gpu: GPU) -> str:
    """Math dtype of an op: element-wise kernels in fp32; a GEMM with a weight on its weight format's
    kernel path (``energylens.graph.precision.gemm_dtype``: fp8 x fp8 at the fp8 rate, w4a16 dequantised
    to the activation dtype, ...); other einsums (attention) at the activation dtype."""
    if op.kind != "einsum":
        return "fp32"
    if op.weights:
        return gemm_dtype(model.weight_format(op.weights[0].name), model.act_dtype, gpu)
    return model.act_dtype


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
