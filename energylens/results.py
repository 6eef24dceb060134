"""Typed prediction results with units in every name; ``to_dict()`` gives plain JSON-able values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields


class Rows(Sequence):
    """A phase's rows (per op, per collective or per GPU) made from the phase's cost arrays when first read,
    then kept: a read-only sequence equal to the tuple of its rows (pickled and copied as that tuple; plain
    values come from ``PhaseResult.to_dict`` / ``Prediction.to_dict``, as ``dataclasses.asdict`` keeps them rows).
    Until read, per-op and per-collective rows keep the phase's stacked cost arrays alive (about 30 kB for a dense
    70B model's prediction, as much again as its rows); per-GPU rows keep a few floats."""

    __slots__ = ("_make", "_rows")

    def __init__(self, make: Callable[[], Sequence]) -> None:
        self._make, self._rows = make, None

    def _all(self) -> tuple:
        if self._rows is None:
            self._rows, self._make = tuple(self._make()), None
        return self._rows

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __iter__(self) -> Iterator:
        return iter(self._all())

    def __eq__(self, other) -> bool:
        if isinstance(other, (Rows, tuple)):
            return self._all() == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._all())

    def __repr__(self) -> str:
        return repr(self._all())

    def __reduce__(self):
        return tuple, (self._all(),)

    def __deepcopy__(self, memo) -> tuple:
        from copy import deepcopy

        return deepcopy(self._all(), memo)


@dataclass(frozen=True)
class OpResult:
    """One kernel (op or fusion group) summed over its executions in the phase.

    ``energy_j``, ``flops`` and ``bytes`` are totals over all GPUs; ``latency_s`` is the time it
    adds to the phase (one rank's executions on the critical path)."""

    name: str
    kind: str
    ops: tuple[str, ...]
    count: int
    flops: float
    bytes: float
    latency_s: float
    energy_j: float
    compute_energy_j: float
    memory_energy_j: float
    static_energy_j: float
    bound: str
    power_capped: bool


@dataclass(frozen=True)
class CollectiveResult:
    name: str
    kind: str
    axis: str
    group_size: int
    bytes: float  # message size per rank per call (nccl-tests convention)
    count: int  # calls per rank over the whole phase (decode: per step x steps), so bytes x count = bytes moved
    latency_s: float  # total over the phase on the critical path
    energy_j: float  # total over all participating GPUs
    reason: str


@dataclass(frozen=True)
class GPUResult:
    rank: int
    stage: int
    replica: int
    energy_j: float
    busy_s: float
    idle_s: float


@dataclass(frozen=True)
class EnergyBreakdown:
    compute_j: float
    memory_j: float
    static_j: float  # static/idle power while kernels run
    communication_j: float
    idle_wait_j: float  # GPUs waiting on the slowest rank / pipeline bubbles

    @property
    def total_j(self) -> float:
        return self.compute_j + self.memory_j + self.static_j + self.communication_j + self.idle_wait_j


@dataclass(frozen=True)
class PhaseResult:
    phase: str
    energy_j: float
    latency_s: float
    avg_power_w: float  # all GPUs together
    tokens: float
    energy_per_token_j: float
    tokens_per_s: float
    breakdown: EnergyBreakdown
    # tuples, or ``Rows`` made from the phase's cost arrays when first read
    ops: Sequence[OpResult] = ()
    collectives: Sequence[CollectiveResult] = ()
    per_gpu: Sequence[GPUResult] = ()

    def to_dict(self, *, rows: bool = True) -> dict:
        """Plain values; ``rows=False`` leaves out ``ops`` and ``collectives`` (``per_gpu`` stays)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["breakdown"] = asdict(self.breakdown)
        d["breakdown"]["total_j"] = self.breakdown.total_j
        for name in ("ops", "collectives", "per_gpu"):
            if rows or name == "per_gpu":
                d[name] = tuple(asdict(r) for r in d[name])
            else:
                del d[name]
        return d


@dataclass(frozen=True)
class MemoryReport:
    weights_bytes: float  # per GPU (the most loaded pipeline stage)
    kv_cache_bytes: float
    workspace_bytes: float
    capacity_bytes: float
    usable_fraction: float

    @property
    def required_bytes(self) -> float:
        return self.weights_bytes + self.kv_cache_bytes + self.workspace_bytes

    @property
    def fits(self) -> bool:
        return self.required_bytes <= self.capacity_bytes * self.usable_fraction

    def to_dict(self) -> dict:
        d = asdict(self)
        d["required_bytes"] = self.required_bytes
        d["fits"] = self.fits
        return d


@dataclass(frozen=True)
class MoEPhaseStats:
    """Expert routing in one phase, per MoE layer (decode: per decode step). "Tokens" of a rank count
    routed assignments (token, expert): a batch of T tokens makes T x top_k of them."""

    group_tokens: float  # tokens entering one expert-parallel group's MoE layer
    tokens_per_rank: tuple[float, ...]  # expected assignments of each expert-parallel rank
    mean_rank_tokens: float
    max_rank_tokens: float  # the busiest rank (expected maximum), which sets the pace
    imbalance: float  # max_rank_tokens / mean_rank_tokens (1 = balanced)
    experts_hit: float  # distinct experts with >= 1 token, whole group (<= n_experts)
    experts_hit_per_rank_mean: float
    experts_hit_per_rank_max: float  # experts whose weights the busiest rank reads
    idle_wait_j: float  # energy of GPUs waiting (at idle power) for the busiest rank's experts, all GPUs
    method: str  # how the expected maxima were found: exact, monte-carlo or normal


@dataclass(frozen=True)
class MoEReport:
    """Mixture-of-experts summary of a prediction (``Prediction.moe``; ``to_dict()["moe"]``)."""

    routing: str
    n_experts: int
    top_k: int
    ep: int
    moe_layers: int
    expert_sharding: str  # "expert-parallel" (each expert whole on one of ep ranks) or "tensor-parallel"
    prefill: MoEPhaseStats
    decode: MoEPhaseStats

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Prediction:
    model: str
    gpu: str
    dtype: str
    layout: dict
    workload: dict
    prefill: PhaseResult
    decode: PhaseResult
    memory: MemoryReport
    warnings: tuple[str, ...] = field(default_factory=tuple)
    extra: dict = field(default_factory=dict)
    moe: MoEReport | None = None  # mixture-of-experts models only

    @property
    def total_energy_j(self) -> float:
        return self.prefill.energy_j + self.decode.energy_j

    @property
    def total_latency_s(self) -> float:
        return self.prefill.latency_s + self.decode.latency_s

    @property
    def energy_per_output_token_j(self) -> float:
        """Whole request: (prefill + decode energy of the static batch) / output tokens; 0 without output.
        ``decode.energy_per_token_j`` is the decode phase alone; ``energylens serve`` gives the serving steady
        state (continuous batching, runtime overheads). README: "Which J per token?"."""
        return self.total_energy_j / self.decode.tokens if self.decode.tokens > 0 else 0.0

    def to_dict(self, *, ops: bool = True) -> dict:
        prefill = self.prefill.to_dict(rows=False)
        decode = self.decode.to_dict(rows=False)
        colls = [dict(asdict(c), phase="prefill") for c in self.prefill.collectives] + [
            dict(asdict(c), phase="decode") for c in self.decode.collectives
        ]
        out = {
            "model": self.model,
            "gpu": self.gpu,
            "dtype": self.dtype,
            "layout": self.layout,
            "workload": self.workload,
            "prefill": prefill,
            "decode": decode,
            "total": {
                "energy_j": self.total_energy_j,
                "latency_s": self.total_latency_s,
                "avg_power_w": self.total_energy_j / self.total_latency_s if self.total_latency_s > 0 else 0.0,
                "energy_per_output_token_j": self.energy_per_output_token_j,
            },
            "memory": self.memory.to_dict(),
            "per_gpu": {"prefill": prefill.pop("per_gpu"), "decode": decode.pop("per_gpu")},
            "collectives": colls,
            "warnings": list(self.warnings),
        }
        if ops:  # (made only when asked for: the per-op rows are built when first read)
            out["ops"] = [dict(asdict(o), phase=ph.phase) for ph in (self.prefill, self.decode) for o in ph.ops]
        if self.moe is not None:
            out["moe"] = self.moe.to_dict()
        out.update(self.extra)
        return out
