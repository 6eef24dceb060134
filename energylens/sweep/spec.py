"""Sweep specifications: what to evaluate (models x GPUs x dtypes x layouts x workloads) and which
constraints a configuration must meet.

A spec comes from YAML (``SweepSpec.from_yaml``, read with ``yaml.safe_load``), from a mapping
(``SweepSpec.from_dict``), from CLI flags (``parse_values``) or straight from Python. Every list
field takes a list, one value, or a range mapping ``{from: 1, to: 256, factor: 2}`` /
``{from: 512, to: 4096, step: 512}`` (both ends included when hit). Example::

    models: [llama3-70b, qwen3-30b-a3b]
    gpus: [h100-sxm]
    tp: [1, 2, 4, 8]
    pp: [1, 2]
    dp: [1, 2, 4]
    ep: [1, 2, 4, 8]          # MoE models only; dense models always use ep = 1
    batch: {from: 1, to: 256, factor: 2}
    prompt_len: [512, 2048]
    output_len: [128, 512]
    overlap_comm_sms: [0, 16, 32]   # SMs held by the communication kernel; 0 = no overlap (default [0])
    overlap_chunks: [1, 2, 4]       # pipeline chunks of an overlapped GEMM + collective (default [1])
    overlap_collective: "*"         # fnmatch glob over collective names, e.g. "*:all_reduce"
    power_limit_w: [null, 400]      # per-GPU power limit, W (null = the profile's); cost.dvfs
    sm_clock_mhz: [null]            # locked SM clock, MHz (null = free)
    serving: true                   # add continuous-batching serve_* columns (concurrency = batch)
    carbon_intensity_g_per_kwh: 400 # serve_gco2e_* columns (with pue: 1.2); usd_per_gpu_hour: serve_usd_*
    constraints:
      fits_memory: true
      max_ttft_s: 2.0         # prefill latency of the batch
      max_tpot_s: 0.05        # decode time per output token
      max_gpus: 16

Overlap settings (``energylens.overlap``) form one more axis: every ``(comm_sms, chunks)`` pair with
``comm_sms > 0`` overlaps each collective matching ``overlap_collective`` with its GEMM (one
``OverlapPlan(overlap_collective, None, chunks, comm_sms)``), plus one sequential setting
``(0, 1)`` if ``0`` is listed (``chunks`` means nothing without overlap, so ``comm_sms = 0`` rows are
not repeated per chunk count). ``overlap_settings()`` lists them in row order.

Every mistake raises ``SpecError`` naming the field (``constraints.max_ttft_s``), the value and
what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from energylens.checks import MAX_BATCH, MAX_DEGREE, MAX_GPUS, MAX_TOKENS
from energylens.errors import SpecError

INT_AXES = ("tp", "pp", "dp", "ep", "batch", "prompt_len", "output_len")
WORKLOAD_AXES = ("batch", "prompt_len", "output_len")
MAX_RANGE_VALUES = 100_000
AXIS_MAX = {"tp": MAX_DEGREE, "pp": MAX_DEGREE, "dp": MAX_DEGREE, "ep": MAX_DEGREE, "batch": MAX_BATCH,
            "prompt_len": MAX_TOKENS, "output_len": MAX_TOKENS}
OVERLAP_AXES = ("overlap_comm_sms", "overlap_chunks")
OPERATING_AXES = ("power_limit_w", "sm_clock_mhz")  # per-GPU power limit (W), locked SM clock (MHz); null = default
TUPLE_FIELDS = ("models", "gpus", "dtypes", "sp", *INT_AXES, *OVERLAP_AXES, *OPERATING_AXES)
MAX_OVERLAP_COMM_SMS = 10_000  # as OverlapPlan; the GPU's own SM count is checked when it is known
from energylens.overlap.rules import MAX_CHUNKS as MAX_OVERLAP_CHUNKS  # noqa: E402


@dataclass(frozen=True)
class Constraints:
    """What a configuration must meet to be *feasible*. ``None`` = no limit."""

    fits_memory: bool = True
    max_ttft_s: float | None = None  # prefill latency (time to first token of the batch)
    max_tpot_s: float | None = None  # decode latency / output tokens (time per output token)
    max_gpus: int | None = None  # GPU budget (tp x pp x dp)
    min_gpus: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepSpec:
    """The Cartesian product of every list, minus configurations that do not divide the model."""

    models: tuple[str, ...]
    gpus: tuple[str, ...]
    dtypes: tuple[str | None, ...] = (None,)  # weight dtype; None = the model's own
    tp: tuple[int, ...] = (1,)
    pp: tuple[int, ...] = (1,)
    dp: tuple[int, ...] = (1,)
    ep: tuple[int, ...] = (1,)
    sp: tuple[bool, ...] = (False,)
    batch: tuple[int, ...] = (1,)
    prompt_len: tuple[int, ...] = (2048,)
    output_len: tuple[int, ...] = (256,)
    gpus_per_node: int = 8
    constraints: Constraints = field(default_factory=Constraints)
    serving: bool = False  # add continuous-batching columns (energylens.serving), concurrency = batch
    name: str = "sweep"
    overlap_comm_sms: tuple[int, ...] = (0,)  # SMs of the communication kernel; 0 = sequential (no overlap)
    overlap_chunks: tuple[int, ...] = (1,)  # chunks of an overlapped (GEMM, collective) pair
    overlap_collective: str = "*"  # fnmatch pattern over collective names (energylens.overlap.OverlapPlan)
    power_limit_w: tuple[float | None, ...] = (None,)  # per-GPU power limit, W (None: the profile's; cost.dvfs)
    sm_clock_mhz: tuple[float | None, ...] = (None,)  # locked SM clock, MHz (None: free)
    carbon_intensity_g_per_kwh: float | None = None  # serving columns: gCO2e per token (energylens.carbon)
    pue: float = 1.0  # data-centre PUE (facility / IT energy)
    usd_per_gpu_hour: float | None = None  # serving columns: USD per token

    def footprint(self):
        """The :class:`energylens.carbon.Footprint` of the carbon/cost fields."""
        from energylens.carbon import Footprint

        return Footprint(self.carbon_intensity_g_per_kwh, self.pue, self.usd_per_gpu_hour)

    def __post_init__(self) -> None:
        for f in fields(self):  # accept lists (and one bare value) from Python callers
            v = getattr(self, f.name)
            if f.name in TUPLE_FIELDS:
                if isinstance(v, (list, tuple)):
                    object.__setattr__(self, f.name, tuple(v))
                elif isinstance(v, (str, int, bool)) or v is None:
                    object.__setattr__(self, f.name, (v,))
        _check_names("models", self.models)
        _check_names("gpus", self.gpus)
        from energylens.graph.precision import WEIGHT_DTYPE_NAMES

        for d in self.dtypes:
            if d is not None and d not in WEIGHT_DTYPE_NAMES:
                raise SpecError("dtypes", d, ", ".join(WEIGHT_DTYPE_NAMES) + " or null (the checkpoint's own formats)")
        for name in INT_AXES:
            values = getattr(self, name)
            if len(values) == 0:
                raise SpecError(name, list(values), "at least one value")
            low = 0 if name == "output_len" else 1
            high = AXIS_MAX[name]
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                    what = f"non-negative integers up to {high:,} (0 = prefill only)" if low == 0 else \
                        f"positive integers up to {high:,}"
                    raise SpecError(name, v, what)
            if len(set(values)) != len(values):
                raise SpecError(name, list(values), "distinct values")
        for name in OPERATING_AXES:
            values = getattr(self, name)
            if not values or any(v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                                    or not math.isfinite(v) or not 0 < v < 1e5) for v in values):
                raise SpecError(name, list(values), "positive numbers (W / MHz) or null (the GPU's default)")
            if len(set(values)) != len(values):
                raise SpecError(name, list(values), "distinct values")
        if not self.sp or any(not isinstance(v, bool) for v in self.sp):
            raise SpecError("sp", list(self.sp), "true and/or false")
        if isinstance(self.gpus_per_node, bool) or not isinstance(self.gpus_per_node, int) \
                or not 1 <= self.gpus_per_node <= MAX_DEGREE:
            raise SpecError("gpus_per_node", self.gpus_per_node, f"a positive integer up to {MAX_DEGREE}")
        c = self.constraints
        if not isinstance(c.fits_memory, bool):
            raise SpecError("constraints.fits_memory", c.fits_memory, "true or false")
        for name in ("max_ttft_s", "max_tpot_s"):
            v = getattr(c, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                  or v <= 0):
                raise SpecError(f"constraints.{name}", v, "a positive number of seconds or null")
        for name in ("max_gpus", "min_gpus"):
            v = getattr(c, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_GPUS):
                raise SpecError(f"constraints.{name}", v, f"a positive integer up to {MAX_GPUS:,} or null")
        if c.max_gpus is not None and c.min_gpus is not None and c.min_gpus > c.max_gpus:
            raise SpecError("constraints.min_gpus", c.min_gpus, f"at most max_gpus={c.max_gpus}")
        if not isinstance(self.serving, bool):
            raise SpecError("serving", self.serving, "true or false")
        self.footprint()  # checks carbon intensity, PUE and price (one line naming the field)
        for name, lo, hi in (("overlap_comm_sms", 0, MAX_OVERLAP_COMM_SMS), ("overlap_chunks", 1, MAX_OVERLAP_CHUNKS)):
            values = getattr(self, name)
            if len(values) == 0:
                raise SpecError(name, list(values), "at least one value")
            for v in values:
                if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                    raise SpecError(name, v, f"integers in [{lo}, {hi}]" + (" (0 = no overlap)" if lo == 0 else ""))
            if len(set(values)) != len(values):
                raise SpecError(name, list(values), "distinct values")
        if not isinstance(self.overlap_collective, str) or not self.overlap_collective.strip():
            raise SpecError("overlap_collective", self.overlap_collective,
                            "a non-empty collective name pattern, e.g. '*' or '*:all_reduce'")
        if self.serving and any(k > 0 for k in self.overlap_comm_sms):
            raise SpecError("overlap_comm_sms", list(self.overlap_comm_sms),
                            "[0] with serving: true (the continuous-batching model has no overlap)")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(cls, data: Mapping, *, source: str = "spec") -> SweepSpec:
        if not isinstance(data, Mapping):
            raise SpecError(source, type(data).__name__, "a mapping of sweep fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(f"{source}: {unknown[0]}", data[unknown[0]], "a known field: " + ", ".join(sorted(known)))
        kw: dict = {}
        for name in ("models", "gpus"):
            if name not in data:
                raise SpecError(name, None, "a list of names (required)")
            kw[name] = tuple(_as_list(name, data[name], str))
        if "dtypes" in data:
            kw["dtypes"] = tuple(None if d in (None, "null", "none", "default") else d
                                 for d in _as_list("dtypes", data["dtypes"], str, allow_none=True))
        for name in INT_AXES:
            if name in data:
                kw[name] = tuple(parse_values(name, data[name]))
        if "sp" in data:
            kw["sp"] = tuple(_as_list("sp", data["sp"], bool))
        for name in OPERATING_AXES:
            if name in data:
                kw[name] = tuple(data[name]) if isinstance(data[name], (list, tuple)) else (data[name],)
        for name in OVERLAP_AXES:
            if name in data:
                kw[name] = tuple(parse_values(name, data[name]))
        for name in ("gpus_per_node", "serving", "name", "overlap_collective", "carbon_intensity_g_per_kwh", "pue",
                     "usd_per_gpu_hour"):
            if name in data:
                kw[name] = data[name]
        if "constraints" in data and data["constraints"] is not None:
            cons = data["constraints"]
            if not isinstance(cons, Mapping):
                raise SpecError("constraints", cons, "a mapping (fits_memory, max_ttft_s, max_tpot_s, max_gpus, min_gpus)")
            cknown = {f.name for f in fields(Constraints)}
            bad = sorted(set(cons) - cknown)
            if bad:
                raise SpecError(f"constraints.{bad[0]}", cons[bad[0]], "a known constraint: " + ", ".join(sorted(cknown)))
            kw["constraints"] = Constraints(**dict(cons))
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepSpec:
        from energylens.checks import MAX_CONFIG_BYTES, is_file, parse_yaml, read_text

        if not is_file(path):
            raise SpecError("spec", str(path), "an existing YAML file")
        data = parse_yaml(read_text(path, "spec", max_bytes=MAX_CONFIG_BYTES, what="a sweep spec YAML file"),
                          "spec", str(path))
        return cls.from_dict(data or {}, source=str(path))

    def with_overrides(self, **changes) -> SweepSpec:
        """A copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @property
    def size(self) -> int:
        """Configurations in the full product (before dropping those that do not divide)."""
        n = len(self.models) * len(self.gpus) * len(self.dtypes) * len(self.sp) * len(self.power_limit_w) \
            * len(self.sm_clock_mhz)
        for name in INT_AXES:
            n *= len(getattr(self, name))
        return n * len(self.overlap_settings())

    def overlap_settings(self) -> list[tuple[int, int]]:
        """The ``(comm_sms, chunks)`` settings in row order: ``(0, 1)`` (sequential) where ``0`` is
        listed, at its place in ``overlap_comm_sms``; every ``comm_sms > 0`` with every chunk count."""
        out: list[tuple[int, int]] = []
        for k in self.overlap_comm_sms:
            out.extend([(0, 1)] if k == 0 else [(k, c) for c in self.overlap_chunks])
        return out


def _check_names(field_name: str, values: Sequence) -> None:
    if not values or any(not isinstance(v, str) or not v.strip() for v in values):
        raise SpecError(field_name, list(values) if not isinstance(values, str) else values, "a non-empty list of names")


def _as_list(name: str, value, kind: type, *, allow_none: bool = False) -> list:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    for v in items:
        if v is None and allow_none:
            continue
        if kind is bool:
            if not isinstance(v, bool):
                raise SpecError(name, v, "true or false")
        elif not isinstance(v, kind) or (kind is str and not v.strip()):
            raise SpecError(name, v, f"a {kind.__name__} or a list of them")
    return items


def parse_values(name: str, value) -> list[int]:
    """A list of integers from a list, one integer, a range mapping or a CLI string.

    CLI strings: ``"1,2,4,8"``, ``"1:256:x2"`` (from 1 to 256 doubling), ``"512:4096:512"``
    (from 512 to 4096 in steps of 512). Mappings: ``{from, to, step}`` or ``{from, to, factor}``.
    """
    if isinstance(value, str):
        text = value.replace(" ", "")
        if not text:
            raise SpecError(name, value, "integers like '1,2,4', 'a:b:xF' or 'a:b:STEP'")
        out: list[int] = []
        for part in text.split(","):
            if ":" in part:
                bits = part.split(":")
                if len(bits) != 3:
                    raise SpecError(name, value, "ranges as FROM:TO:STEP or FROM:TO:xFACTOR")
                lo, hi, st = bits
                rng = {"from": _int(name, lo, value), "to": _int(name, hi, value)}
                if st.startswith("x"):
                    rng["factor"] = _int(name, st[1:], value)
                else:
                    rng["step"] = _int(name, st, value)
                out.extend(_range(name, rng))
            else:
                out.append(_int(name, part, value))
        return _dedupe(out)
    if isinstance(value, Mapping):
        return _range(name, value)
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            else:
                raise SpecError(name, v, "integers (a list, one value, or {from, to, step|factor})")
        out.append(v)
    return out


def _int(name: str, text: str, whole) -> int:
    if len(text) > 20:  # int() of thousands of digits is slow, and no axis value is that long
        raise SpecError(name, whole, "integers of at most 20 digits")
    try:
        return int(text)
    except ValueError:
        raise SpecError(name, whole, "integers like '1,2,4', 'a:b:xF' or 'a:b:STEP'") from None


def _dedupe(values: list[int]) -> list[int]:
    seen: dict[int, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


def _range(name: str, rng: Mapping) -> list[int]:
    allowed = {"from", "to", "step", "factor"}
    bad = sorted(set(rng) - allowed)
    if bad:
        raise SpecError(f"{name}.{bad[0]}", rng[bad[0]], "one of from, to, step, factor")
    for k in ("from", "to"):
        v = rng.get(k)
        if isinstance(v, bool) or not isinstance(v, int):
            raise SpecError(f"{name}.{k}", v, "an integer (required in a range)")
    lo, hi = rng["from"], rng["to"]
    if hi < lo:
        raise SpecError(f"{name}.to", hi, f"at least from={lo}")
    if ("step" in rng) == ("factor" in rng):
        raise SpecError(name, dict(rng), "exactly one of step or factor")
    if "step" in rng:
        st = rng["step"]
        if isinstance(st, bool) or not isinstance(st, int) or st < 1:
            raise SpecError(f"{name}.step", st, "a positive integer")
        if (hi - lo) // st + 1 > MAX_RANGE_VALUES:
            raise SpecError(name, dict(rng), f"at most {MAX_RANGE_VALUES} values")
        return list(range(lo, hi + 1, st))
    fa = rng["factor"]
    if isinstance(fa, bool) or not isinstance(fa, int) or fa < 2:
        raise SpecError(f"{name}.factor", fa, "an integer >= 2")
    if lo < 1:
        raise SpecError(f"{name}.from", lo, "at least 1 with a factor")
    out = []
    v = lo
    while v <= hi:
        out.append(v)
        v *= fa
    return out
