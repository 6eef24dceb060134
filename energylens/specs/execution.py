"""``Execution``: how a model runs: parallel layout and placement, workload, engine settings, MoE
routing, compute-communication overlap and a power limit. One configuration, checked on construction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from energylens.errors import LayoutError, SpecError, WorkloadError
from energylens.graph.model import MESH_AXES
from energylens.moe.binding import resolve_routing
from energylens.moe.routing import Routing
from energylens.overlap.rules import OverlapPlan
from energylens.parallel.layout import DEFAULT_AXES, Layout

MAX_DEGREE = 1 << 16


def _positive_int(value: object, name: str, error: type, *, zero: bool = False, limit: int | None = None) -> None:
    low = 0 if zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (limit and value > limit):
        allowed = "a non-negative integer" if zero else "a positive integer"
        raise error(name, value, allowed + (f" (at most {limit})" if limit else ""))


@dataclass(frozen=True)
class Execution:
    """One configuration of a run.

    Layout: ``tp`` tensor-, ``pp`` pipeline-, ``dp`` data-, ``ep`` expert-parallel degrees; ``sp``
    sequence parallelism; ``gpus_per_node`` how many GPUs of a node the layout fills before it spills
    to the next (None: the system's); ``axes`` the dim -> mesh-axis map (None: Megatron's,
    ``parallel.layout.DEFAULT_AXES``; a model's own ``sharding`` still overrides it).
    Workload: ``batch`` sequences of ``prompt_len`` prompt tokens generating ``output_len`` tokens.
    Engine: ``max_batched_tokens`` the chunked-prefill token budget that bounds live activations (None:
    the engine default). ``routing`` (MoE): ``uniform``, ``zipf:S``, ``dirichlet:A``, a histogram file or
    a ``Routing``. ``overlap``: overlap plans (None: the model's own, if any). ``power_limit_w``: the
    enforced GPU power limit (None: the profile's); ``sm_clock_mhz``: a locked SM clock (None: free;
    both through :mod:`energylens.cost.dvfs`)."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    sp: bool = False
    gpus_per_node: int | None = None
    axes: Mapping[str, str] | None = None
    batch: int = 1
    prompt_len: int = 2048
    output_len: int = 256
    max_batched_tokens: int | None = None
    routing: str | Routing | None = None
    overlap: tuple[OverlapPlan, ...] | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: float | None = None
    _routing: Routing | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tp", "pp", "dp", "ep"):
            _positive_int(getattr(self, name), name, LayoutError, limit=MAX_DEGREE)
        if not isinstance(self.sp, bool):
            raise LayoutError("sp", self.sp, "true or false")
        if self.gpus_per_node is not None:
            _positive_int(self.gpus_per_node, "gpus_per_node", LayoutError, limit=MAX_DEGREE)
        if self.axes is not None:
            if not isinstance(self.axes, Mapping):
                raise LayoutError("axes", self.axes, "a mapping of dimension letter -> mesh axis")
            for dim, axis in self.axes.items():
                if not (isinstance(dim, str) and len(dim) == 1 and dim.islower()) or axis not in MESH_AXES:
                    raise LayoutError(f"axes[{dim!r}]", axis, "a dimension letter mapped to one of "
                                      + ", ".join(MESH_AXES))
        _positive_int(self.batch, "batch", WorkloadError)
        _positive_int(self.prompt_len, "prompt_len", WorkloadError)
        _positive_int(self.output_len, "output_len", WorkloadError, zero=True)
        if self.max_batched_tokens is not None:
            _positive_int(self.max_batched_tokens, "max_batched_tokens", WorkloadError)
        if self.dp > 1 and self.batch % self.dp:
            raise LayoutError("dp", self.dp, f"a divisor of the batch ({self.batch}): each replica serves batch/dp")
        object.__setattr__(self, "_routing", None if self.routing is None else resolve_routing(self.routing))
        if self.overlap is not None:
            plans = (self.overlap,) if isinstance(self.overlap, OverlapPlan) else self.overlap
            if not isinstance(plans, (tuple, list)) or not all(isinstance(p, OverlapPlan) for p in plans):
                raise SpecError("overlap", self.overlap, "a sequence of energylens.overlap.OverlapPlan")
            object.__setattr__(self, "overlap", tuple(plans))
        if self.power_limit_w is not None:
            p = self.power_limit_w
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p < 1e5:
                raise SpecError("power_limit_w", p, "a power limit in watts, above 0")
        if self.sm_clock_mhz is not None:
            f = self.sm_clock_mhz
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f < 1e5:
                raise SpecError("sm_clock_mhz", f, "an SM clock in MHz, above 0")

    @property
    def num_gpus(self) -> int:
        return self.tp * self.pp * self.dp

    @property
    def resolved_routing(self) -> Routing | None:
        """The ``Routing`` the ``routing`` field names (None when not given)."""
        return self._routing

    def layout(self, gpus_per_node: int) -> Layout:
        """The ``Layout`` of this execution; ``gpus_per_node`` is the system's (used when ours is None)."""
        axes = dict(DEFAULT_AXES) if self.axes is None else dict(self.axes)
        return Layout(tp=self.tp, pp=self.pp, dp=self.dp, ep=self.ep, sp=self.sp,
                      gpus_per_node=self.gpus_per_node or gpus_per_node, axes=axes)

    @classmethod
    def from_layout(cls, layout: Layout, **workload: object) -> Execution:
        """An ``Execution`` from a scalar ``Layout`` and workload/engine keywords."""
        try:
            degrees = {n: int(getattr(layout, n)) for n in ("tp", "pp", "dp", "ep")}
        except TypeError as exc:
            raise LayoutError("layout", layout.to_dict(), "one configuration (scalar degrees); sweep arrays "
                              "go through energylens.sweep") from exc
        axes = None if dict(layout.axes) == DEFAULT_AXES else dict(layout.axes)
        return cls(**degrees, sp=bool(layout.sp), gpus_per_node=int(layout.gpus_per_node), axes=axes, **workload)

    def to_dict(self) -> dict:
        out = {"tp": self.tp, "pp": self.pp, "dp": self.dp, "ep": self.ep, "sp": self.sp,
               "gpus_per_node": self.gpus_per_node, "batch": self.batch, "prompt_len": self.prompt_len,
               "output_len": self.output_len, "max_batched_tokens": self.max_batched_tokens,
               "routing": None if self._routing is None else self._routing.name,
               "overlap": None if self.overlap is None else [p.to_dict() for p in self.overlap],
               "power_limit_w": self.power_limit_w, "sm_clock_mhz": self.sm_clock_mhz}
        if self.axes is not None:
            out["axes"] = dict(self.axes)
        return out
