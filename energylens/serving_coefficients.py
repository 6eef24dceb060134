"""The serving coefficients as values: one platform's set (:class:`ServingCoefficients`), the shipped table
of pooled and per-platform sets (:class:`CoefficientTable`, read from
``energylens/data/validation/serving_coefficients.yaml``) and the default MoE routing they imply.

Fitted by ``tools/fit_serving.py`` (:mod:`energylens.calibration.serving_fit`); how they enter a
prediction: :mod:`energylens.serving`. Four coefficients, the same for every model:

* ``iteration_overhead_s`` and ``per_sequence_overhead_s`` describe the serving platform (host CPU,
  driver, the engine's kernels for that GPU architecture): each GPU type with development data has
  its own pair, every other GPU the pooled pair;
* ``active_power_fraction`` (shared by all GPUs): static power of a busy GPU above idle;
* ``routing_skew`` (shared; unit 1): the Zipf exponent ``S`` of expert popularity a serving prediction
  of a mixture-of-experts model uses when the user names no routing: within one MoE layer the expert
  of popularity rank ``i`` receives a share proportional to ``1 / i**S`` of the tokens
  (:meth:`energylens.moe.spec.Routing.zipf`, ranks scattered over the experts with the fixed default
  permutation). ``0`` is uniform routing. A trained router is skewed, so one decode step's tokens hit
  fewer distinct experts (fewer expert weights read) than uniform routing predicts, and with expert
  parallelism the busiest rank carries more than the mean. An explicit routing always wins; a router that
  balances expert load with a learned score bias (DeepSeek-V3 ``noaux_tc``, MiniMax-M2) routes uniformly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from functools import cache

import numpy as np

from energylens.checks import number
from energylens.datafiles import data_path
from energylens.errors import SpecError

COEFFICIENT_NAMES = ("iteration_overhead_s", "per_sequence_overhead_s", "active_power_fraction", "routing_skew")
OVERHEAD_NAMES = ("iteration_overhead_s", "per_sequence_overhead_s")  # per-platform; the rest is shared
SHIPPED = "energylens/data/validation/serving_coefficients.yaml"


@dataclass(frozen=True)
class ServingCoefficients:
    """Serving coefficients of one platform (the same for every model). Defaults: none (pure cost model,
    uniform MoE routing)."""

    iteration_overhead_s: float = 0.0
    per_sequence_overhead_s: float = 0.0
    active_power_fraction: float = 0.0
    source: str = "none (pure per-op cost model)"
    routing_skew: float = 0.0  # Zipf exponent of expert popularity (0: uniform)

    def to_dict(self) -> dict:
        return asdict(self)

    def routing(self):
        """The default MoE routing of a serving prediction: ``Routing.zipf(routing_skew)``, or ``None``
        (uniform) when the skew is 0."""
        from energylens.moe.spec import Routing

        s = float(self.routing_skew)
        return Routing.zipf(s) if s > 0 else None


def bias_balanced(model) -> bool:
    """Whether ``model``'s router balances expert load with a learned per-expert score bias (auxiliary-loss-free
    balancing: ``topk_method: noaux_tc`` in DeepSeek-V3/R1 and Kimi-K2 configs, ``use_routing_bias`` in
    MiniMax-M2; :func:`energylens.models.moe.bias_balanced_router`). Its expected expert popularity is uniform
    by construction, so the fitted Zipf skew (a popularity ranking) does not describe it."""
    moe = getattr(model, "info", {}).get("moe")
    return isinstance(moe, dict) and bool(moe.get("bias_balanced_router", False))


def serving_routing(routing, coefficients: ServingCoefficients, model=None):
    """The routing a serving prediction uses: the user's (``routing``, any form) when given; uniform (``None``)
    for a model whose router balances expert load with a learned bias (:func:`bias_balanced`); else the
    coefficients' fitted default (:meth:`ServingCoefficients.routing`)."""
    if routing is not None:
        return routing
    return None if model is not None and bias_balanced(model) else coefficients.routing()


@dataclass(frozen=True)
class CoefficientTable:
    """Pooled serving coefficients plus per-platform overheads (GPU key -> coefficients).

    ``for_gpu(key)`` gives the coefficients a prediction on that GPU uses: the platform's own fitted
    overheads when the development data covers it, else the pooled ones; the active power fraction
    and the routing skew are always the pooled (shared) ones."""

    pooled: ServingCoefficients = field(default_factory=ServingCoefficients)
    platforms: dict[str, ServingCoefficients] = field(default_factory=dict)

    def for_gpu(self, gpu_key: str | None) -> ServingCoefficients:
        return self.platforms.get(gpu_key or "", self.pooled)

    def to_dict(self) -> dict:
        return {"pooled": self.pooled.to_dict(), "platforms": {k: v.to_dict() for k, v in self.platforms.items()}}


OVERHEAD_LIMIT_S = 1.0  # a host time per iteration (or per request per iteration) of a second or more is not an engine's


def with_overheads(coefficients: CoefficientTable | None = None, *, iteration_overhead_s: float | None = None,
                   per_sequence_overhead_s: float | None = None) -> CoefficientTable:
    """The shipped (or given) table with the serving overheads of every platform replaced by the user's (``None``
    keeps the fitted value): for an engine other than the fitted one (vLLM 0.11 with async scheduling), e.g. one
    that hides its host time behind the GPU (0 and 0 cost the kernel sum alone). The active power fraction and the
    routing skew stay fitted. Raises ``SpecError`` naming the field for a value that is not a finite number in
    [0, 1] s."""
    table = coefficients or load_coefficient_table()
    given = {n: v for n, v in (("iteration_overhead_s", iteration_overhead_s),
                                ("per_sequence_overhead_s", per_sequence_overhead_s)) if v is not None}
    for name, v in given.items():
        given[name] = number(name, v, low=0.0, low_open=False, high=OVERHEAD_LIMIT_S, error=SpecError,
                             what=f"seconds, a finite number in [0, {OVERHEAD_LIMIT_S:g}] (default: the fitted value)")
    if not given:
        return table
    note = "; overheads set by the user: " + ", ".join(f"{n} = {float(v):g} s" for n, v in given.items())

    def over(c: ServingCoefficients) -> ServingCoefficients:
        return replace(c, **{n: float(v) for n, v in given.items()}, source=c.source + note)
    return CoefficientTable(over(table.pooled), {k: over(v) for k, v in table.platforms.items()})


def resolve_coefficients(coefficients: ServingCoefficients | CoefficientTable | None,
                         gpu_key: str | None) -> ServingCoefficients:
    """The coefficients for one GPU: a table is resolved per platform, a single set is used as given,
    ``None`` means the shipped table."""
    if coefficients is None:
        coefficients = load_coefficient_table()
    if isinstance(coefficients, CoefficientTable):
        return coefficients.for_gpu(gpu_key)
    return coefficients


def data_file(name: str):
    """A file of ``energylens/data/validation``."""
    return data_path("validation", name)


def _value(entry, where: str) -> float:
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), (int, float)) \
            or isinstance(entry.get("value"), bool) or not np.isfinite(entry["value"]) or entry["value"] < 0:
        raise SpecError(f"serving_coefficients.yaml: {where}", entry,
                        "{value: <number >= 0>, unit, fitted_on, method}")
    return float(entry["value"])


@cache
def load_coefficient_table() -> CoefficientTable:
    """The fitted coefficients shipped in ``energylens/data/validation/serving_coefficients.yaml``."""
    import yaml

    path = data_file("serving_coefficients.yaml")
    if not path.is_file():
        return CoefficientTable()
    data = yaml.safe_load(path.read_text()) or {}
    coeffs = data.get("coefficients") or {}
    values = {name: _value(coeffs[name], f"coefficients.{name}") for name in COEFFICIENT_NAMES if name in coeffs}
    pooled = ServingCoefficients(**values, source=f"{SHIPPED} (pooled)")
    platforms = {}
    raw = data.get("platforms") or {}
    if not isinstance(raw, dict):
        raise SpecError("serving_coefficients.yaml: platforms", raw, "a mapping GPU key -> {overhead: {value, ...}}")
    for key, entry in raw.items():
        if not isinstance(entry, dict) or set(entry) - set(OVERHEAD_NAMES):
            raise SpecError(f"serving_coefficients.yaml: platforms.{key}", entry,
                            f"a mapping with only {', '.join(OVERHEAD_NAMES)}")
        over = {name: _value(entry[name], f"platforms.{key}.{name}") for name in OVERHEAD_NAMES if name in entry}
        platforms[str(key)] = replace(pooled, **over, source=f"{SHIPPED} (platform {key})")
    return CoefficientTable(pooled, platforms)


def load_coefficients(gpu_key: str | None = None) -> ServingCoefficients:
    """The shipped coefficients for ``gpu_key`` (its platform's overheads if fitted, else pooled)."""
    return load_coefficient_table().for_gpu(gpu_key)
