"""Overlap plans: which collective hides behind which compute kernel, in how many chunks, with how many SMs.

An :class:`OverlapPlan` names collectives by a glob pattern over their program names
(``decoder.attn.o_proj:reduce_scatter``, ``*:all_gather``, ``*:all_to_all``) and optionally the
compute kernel they overlap (``decoder.mlp.gate_up``). Without ``compute`` the partner follows the
data flow, as Megatron-LM / TransformerEngine and DeepEP pipeline them:

* **producer** collectives consume what a GEMM just wrote: all-reduce and reduce-scatter of a
  row-parallel GEMM's partial sums, the all-to-all *combine* after the expert GEMMs. The GEMM is
  split into ``chunks`` along the tokens; chunk ``i``'s collective runs while chunk ``i+1`` computes.
* **consumer** collectives feed the next GEMM: all-gather before a column-parallel GEMM (sequence
  parallelism), the all-to-all *dispatch* before the expert GEMMs. Chunk ``i+1`` is communicated
  while chunk ``i`` computes.

The partner is the nearest kernel in the data-flow direction that contains an einsum (a GEMM),
within the same block. ``comm_sms`` is the number of SMs (NCCL channels / CTAs) the communication
kernel holds while the pair runs; the GEMM gets the other ``sm_count - comm_sms``. ``comm_sms = 0``
means no overlap: today's sequential execution, bit for bit.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from energylens.cost.kernels import kernel_groups
from energylens.errors import SpecError
from energylens.parallel.sharding import CollectiveStep, Step

PRODUCER = "producer"  # compute chunk i -> collective chunk i
CONSUMER = "consumer"  # collective chunk i -> compute chunk i
MAX_CHUNKS = 64


@dataclass(frozen=True)
class OverlapPlan:
    """One overlap rule. ``collective``/``compute`` are ``fnmatch`` patterns over program names."""

    collective: str = "*"
    compute: str | None = None
    chunks: int = 4
    comm_sms: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.collective, str) or not self.collective.strip():
            raise SpecError("overlap.collective", self.collective, "a non-empty name pattern, e.g. '*:all_gather'")
        if self.compute is not None and (not isinstance(self.compute, str) or not self.compute.strip()):
            raise SpecError("overlap.compute", self.compute, "a kernel name pattern or None (follow the data flow)")
        for name, lo, hi in (("chunks", 1, MAX_CHUNKS), ("comm_sms", 0, 10_000)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SpecError(f"overlap.{name}", v, f"an integer in [{lo}, {hi}]")

    @property
    def active(self) -> bool:
        """False for ``comm_sms == 0``: the plan changes nothing."""
        return self.comm_sms > 0

    def to_dict(self) -> dict:
        return {"collective": self.collective, "compute": self.compute, "chunks": self.chunks,
                "comm_sms": self.comm_sms}


@dataclass(frozen=True)
class SequenceItem:
    """A kernel or a collective of one rank's step list, in execution order."""

    kind: str  # "kernel" | "collective"
    name: str  # as cost_steps names it (prefix included)
    index: int  # position among the kernels (or among the collectives) of the section
    has_einsum: bool = False
    route: str = ""  # for kernels: "dispatch" / "combine" if an op of it routes tokens
    step: CollectiveStep | None = None


@dataclass(frozen=True)
class Pair:
    """A resolved overlap: collective ``collective_index`` with kernel ``kernel_index`` of one section."""

    plan: OverlapPlan
    collective: str
    collective_index: int
    compute: str
    kernel_index: int
    direction: str  # PRODUCER | CONSUMER


def step_sequence(steps: Sequence[Step], prefix: str = "") -> list[SequenceItem]:
    """Kernels and collectives in execution order, grouped exactly as ``cost.kernels.cost_steps`` groups
    fusion groups into kernels (a collective or a change of group ends a kernel)."""
    items: list[SequenceItem] = []
    n_kernels = 0
    n_colls = 0
    for group in kernel_groups(steps):
        if isinstance(group, CollectiveStep):
            items.append(SequenceItem("collective", prefix + group.name, n_colls, step=group))
            n_colls += 1
            continue
        first = group[0].op
        name = first.group if (first.group and len(group) > 1) else first.name
        route = ""
        for st in group:
            r = (st.op.attrs or {}).get("route")
            if r:
                route = str(r)
        items.append(SequenceItem("kernel", prefix + name, n_kernels,
                                  any(st.op.kind == "einsum" for st in group), route))
        n_kernels += 1
    return items


def _direction(items: list[SequenceItem], pos: int) -> str:
    """Producer or consumer for the collective at ``items[pos]`` (no explicit compute pattern)."""
    step = items[pos].step
    assert step is not None
    if step.kind in ("all_reduce", "reduce_scatter"):
        return PRODUCER
    if step.kind == "all_gather":
        return CONSUMER
    if step.kind == "all_to_all":
        for j in range(pos - 1, -1, -1):  # dispatch follows the routing kernel that sends tokens out
            if items[j].kind == "kernel":
                return CONSUMER if items[j].route == "dispatch" else PRODUCER
        return CONSUMER
    return PRODUCER


def _nearest_gemm(items: list[SequenceItem], pos: int, direction: str) -> int | None:
    rng = range(pos - 1, -1, -1) if direction == PRODUCER else range(pos + 1, len(items))
    for j in rng:
        if items[j].kind == "kernel" and items[j].has_einsum:
            return j
    return None


def resolve_pairs(items: list[SequenceItem], plans: Sequence[OverlapPlan]) -> list[Pair]:
    """Match active plans to the collectives of one section, in execution order. The first plan matching
    a collective wins; a kernel overlaps at most one collective (a later collective that would need an
    already claimed kernel stays sequential)."""
    pairs: list[Pair] = []
    claimed: dict[int, str] = {}
    for pos, it in enumerate(items):
        if it.kind != "collective":
            continue
        plan = next((p for p in plans if fnmatch.fnmatchcase(it.name, p.collective)), None)
        if plan is None or not plan.active:
            continue
        if plan.compute is None:
            direction = _direction(items, pos)
            j = _nearest_gemm(items, pos, direction)
        else:
            cands = [j for j, x in enumerate(items) if x.kind == "kernel" and fnmatch.fnmatchcase(x.name, plan.compute)]
            j = min(cands, key=lambda c: abs(c - pos)) if cands else None
            direction = PRODUCER if (j is not None and j < pos) else CONSUMER
        if j is None:
            continue  # nothing to hide behind in this section
        kernel = items[j]
        if kernel.index in claimed:
            continue  # the kernel already hides another collective: this one stays sequential
        claimed[kernel.index] = it.name
        pairs.append(Pair(plan, it.name, it.index, kernel.name, kernel.index, direction))
    return pairs


def parse_int_list(text: str, field: str, lo: int, hi: int) -> tuple[int, ...]:
    """``"0,4,8-16:4"`` -> (0, 4, 8, 12, 16). Ranges ``a-b`` or ``a-b:step``; every value in [lo, hi]."""
    out: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            if "-" in part:
                rng, _, step = part.partition(":")
                a, _, b = rng.partition("-")
                s = int(step) if step else 1
                if s <= 0:
                    raise ValueError
                vals = list(range(int(a), int(b) + 1, s))
            else:
                vals = [int(part)]
        except ValueError as exc:
            raise SpecError(field, text, "comma-separated integers or ranges like 8-32:8") from exc
        out += vals
    if not out or any(not lo <= v <= hi for v in out):
        raise SpecError(field, text, f"integers in [{lo}, {hi}]")
    return tuple(sorted(set(out)))
