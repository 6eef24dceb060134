"""SM clock, voltage and power limit (DVFS): the clock a kernel runs at and what it costs there.

The GPU profile describes the board at its maximum SM clock ``f_max`` (its throughputs, J/FLOP, J/B
and context-held idle power). At clock ``f`` (``s = f / f_max``), for a kernel whose roofline terms
at ``f_max`` are ``t_c`` (compute), ``t_m`` (HBM) and dynamic energies ``e_c``, ``e_m``::

    t(s)      = max(t_c / s, t_m * max(1, knee / s)) + launch overhead
    e_c(s)    = e_c * v(s)^2                                   (CV^2 per switching event)
    e_m(s)    = e_m * (phi + (1 - phi) * v(s)^2)               (phi: DRAM-side share, memory clock fixed)
    static(s) = (idle_power * idle_shape(s) + busy_power * v(s)^2 s) * t(s)
    P(s)      = idle_power * idle_shape(s) + busy_power * v(s)^2 s + (e_c(s) + e_m(s)) / t(s)

(``idle_shape``: idle power with the clock locked at f; ``busy_power``: what running SMs add at
``f_max``, the profile's fitted value, 0 without one; it is clock-tree and scheduler switching, so it
scales as ``V^2 f``). Compute-bound work slows as ``1 / s``; HBM-bound work keeps its time while ``s >= knee``; dynamic
power of a fixed activity falls as ``v^2 s`` (V^2 f). The driver runs a kernel at the highest clock
``<= min(f_max, locked clock)`` whose power fits the power limit (``P`` rises with ``s``, so a
vectorised bisection finds it); if even ``f_min`` does not fit, the kernel also stretches at
``f_min`` until its power equals the limit (clock slowdown). Serving holds one clock over a whole
engine iteration instead (the power controller averages over far longer than one kernel):
:mod:`energylens.cost.clock_hold`.

Coefficients (``energylens/data/hardware/dvfs.yaml``, each with kind and source): ``f_max``,
``f_min`` (datasheet / locked-clock tables), ``idle_shape`` (EnergAIzer's measured idle power vs
locked SM clock, H100 and A100), ``v(s)`` (EnergAIzer's A100 supply-voltage table; assumed for
other GPUs, labelled), ``phi`` (HBM device pJ/bit over the whole-GPU HBM path pJ/bit, derived)
and ``knee`` (assumed, labelled). A GPU without an entry keeps the clock-free power cap (the kernel
stretches to ``e_dyn / (limit - idle)``).

At the profile's default limit and free clocks nothing changes for kernels whose power fits: the
formulas reduce to the plain roofline of :mod:`energylens.cost.roofline`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache
from importlib import resources

import numpy as np

from energylens.cost.distinct import unique_rows
from energylens.errors import SpecError, WorkloadError
from energylens.hardware.profile import GPU, OperatingPoint, Quantity, safe_load

BISECTION_STEPS = 24  # clock resolution (1 - s_min) / 2^24: far below the 15 MHz driver steps
GRID_BITS = 4  # halvings per round of the few-kernel search (2^4 clocks evaluated at once; measured best)
GRID_MAX_KERNELS = 256  # kernels up to which the halvings are walked over a grid of clocks per round


@dataclass(frozen=True)
class ClockModel:
    """DVFS coefficients of one GPU (curves as functions of ``s = f / f_max``)."""

    key: str
    f_max_mhz: float
    f_min_mhz: float
    idle_s: np.ndarray
    idle_ratio: np.ndarray
    volt_s: np.ndarray
    volt_ratio: np.ndarray
    dram_energy_fraction: float
    memory_knee_fraction: float
    provenance: dict

    @property
    def s_min(self) -> float:
        return self.f_min_mhz / self.f_max_mhz

    def idle_shape(self, s) -> np.ndarray:
        return np.interp(s, self.idle_s, self.idle_ratio)

    def voltage(self, s) -> np.ndarray:
        return np.interp(s, self.volt_s, self.volt_ratio)

    def dynamic_scale(self, s) -> np.ndarray:
        """Power of a fixed activity at clock ``s`` relative to ``f_max``: ``v(s)^2 s``."""
        return self.voltage(s) ** 2 * np.asarray(s, dtype=float)

    def to_dict(self) -> dict:
        return {"f_max_mhz": self.f_max_mhz, "f_min_mhz": self.f_min_mhz,
                "dram_energy_fraction": self.dram_energy_fraction,
                "memory_knee_fraction": self.memory_knee_fraction, "provenance": self.provenance}


def _data_path():
    return resources.files("energylens") / "data" / "hardware" / "dvfs.yaml"


def _shape(shapes: dict, ref, what: str, column: str) -> tuple[np.ndarray, np.ndarray, dict]:
    name = ref["shape"] if isinstance(ref, dict) else ref
    if name not in shapes:
        raise SpecError(f"dvfs.yaml: {what}", name, "one of " + ", ".join(sorted(shapes)))
    sh = shapes[name]
    pts = np.asarray(sh[column], dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or np.any(np.diff(pts[:, 0]) <= 0) or np.any(pts[:, 1] <= 0):
        raise SpecError(f"dvfs.yaml: shapes.{name}.{column}", pts.tolist(), "[[MHz, value], ...], MHz increasing")
    top = float(sh["clock_mhz_of_max"])
    ref_value = float(np.interp(top, pts[:, 0], pts[:, 1]))
    prov = {"kind": (ref.get("kind") if isinstance(ref, dict) else None) or sh["kind"], "source": sh["source"],
            "shape": name}
    if isinstance(ref, dict) and ref.get("note"):
        prov["note"] = ref["note"]
    return pts[:, 0] / top, pts[:, 1] / ref_value, prov


@cache
def _table() -> dict:
    path = _data_path()
    return safe_load(path.read_text()) if path.is_file() else {}


@cache
def _clock_model(key: str) -> ClockModel | None:
    data = _table()
    entry = (data.get("gpus") or {}).get(key)
    if entry is None:
        return None
    common = data.get("common") or {}
    shapes = data.get("shapes") or {}
    idle_s, idle_r, idle_p = _shape(shapes, entry["idle_power_shape"], f"gpus.{key}.idle_power_shape", "points_mhz_w")
    volt_s, volt_r, volt_p = _shape(shapes, entry["voltage_shape"], f"gpus.{key}.voltage_shape", "points_mhz_v")
    f_max = float(entry["sm_clock_max"]["value"])
    f_min = float(entry["sm_clock_min"]["value"])
    if not 0 < f_min < f_max:
        raise SpecError(f"dvfs.yaml: gpus.{key}.sm_clock_min", f_min, f"between 0 and sm_clock_max {f_max:g} MHz")
    prov = {"sm_clock_max": entry["sm_clock_max"], "sm_clock_min": entry["sm_clock_min"],
            "idle_power_shape": idle_p, "voltage_shape": volt_p,
            "dram_energy_fraction": common["dram_energy_fraction"],
            "memory_knee_fraction": common["memory_knee_fraction"]}
    return ClockModel(key, f_max, f_min, idle_s, idle_r, volt_s, volt_r,
                      float(common["dram_energy_fraction"]["value"]),
                      float(common["memory_knee_fraction"]["value"]), prov)


def clock_model(gpu: GPU) -> ClockModel | None:
    """The DVFS coefficients of ``gpu`` (by its key), or ``None`` when none are shipped."""
    return _clock_model(gpu.key)


def reference_idle_power_w(gpu: GPU) -> float:
    return gpu.operating.reference_idle_power_w if gpu.operating else gpu.idle_power_w


def reference_power_limit_w(gpu: GPU) -> float:
    return gpu.operating.reference_power_limit_w if gpu.operating else gpu.power_limit_w


def _positive(name: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or v <= 0:
        raise WorkloadError(name, v, "a positive number")
    return float(v)


def with_operating_point(gpu: GPU, *, power_limit_w: float | None = None, sm_clock_mhz: float | None = None) -> GPU:
    """``gpu`` with a per-GPU power limit (W) and/or a locked SM clock (MHz). Waiting GPUs idle at the
    locked clock's idle power. ``None`` for both returns ``gpu`` unchanged."""
    if power_limit_w is None and sm_clock_mhz is None:
        return gpu
    if not all(v is None or type(v) in (int, float) for v in (power_limit_w, sm_clock_mhz)):
        return _with_operating_point(gpu, power_limit_w, sm_clock_mhz)  # checked there (errors name the value)
    key = (id(gpu), power_limit_w, sm_clock_mhz)
    hit = _AT_POINT.get(key)
    if hit is not None and hit[0] is gpu:
        return hit[1]  # the same GPU object each time: compiled plans (cached per GPU object) are reused
    out = _with_operating_point(gpu, power_limit_w, sm_clock_mhz)
    if len(_AT_POINT) > 256:
        _AT_POINT.clear()
    _AT_POINT[key] = (gpu, out)
    return out


_AT_POINT: dict[tuple, tuple] = {}


def _with_operating_point(gpu: GPU, power_limit_w, sm_clock_mhz) -> GPU:
    ref_limit = reference_power_limit_w(gpu)
    ref_idle_w = reference_idle_power_w(gpu)
    cm = clock_model(gpu)
    upd: dict[str, Quantity] = {}
    clock = None
    if sm_clock_mhz is not None:
        clock = _positive("sm_clock_mhz", sm_clock_mhz)
        if cm is None:
            raise WorkloadError("sm_clock_mhz", sm_clock_mhz, f"no clock data for GPU {gpu.key} (energylens/data/"
                                "hardware/dvfs.yaml lists " + ", ".join(sorted(_table().get("gpus") or {})) + ")")
        if not cm.f_min_mhz <= clock <= cm.f_max_mhz:
            raise WorkloadError("sm_clock_mhz", sm_clock_mhz,
                                f"between {cm.f_min_mhz:g} and {cm.f_max_mhz:g} MHz for {gpu.key}")
        idle = ref_idle_w * float(cm.idle_shape(clock / cm.f_max_mhz))
        upd["idle_power"] = Quantity(idle, "W", "derived", "energylens/data/hardware/dvfs.yaml idle_power_shape",
                                     f"idle power with the SM clock locked at {clock:g} MHz")
    if power_limit_w is not None:
        limit = _positive("power_limit_w", power_limit_w)
        # without clock data nothing lowers the busy power of a running kernel: the limit must exceed it
        floor = ref_idle_w * float(cm.idle_shape(cm.s_min)) if cm else ref_idle_w + gpu.busy_power_w
        if not floor < limit <= ref_limit:
            raise WorkloadError("power_limit_w", power_limit_w,
                                f"above the idle power at the lowest clock ({floor:.0f} W) and at most the "
                                f"board's maximum {ref_limit:g} W for {gpu.key}")
        upd["power_limit"] = Quantity(limit, "W", "user", "Execution.power_limit_w (--power-limit)",
                                      "per-GPU power limit set by the user")
    if clock is None and power_limit_w is not None and float(power_limit_w) == ref_limit:
        return gpu
    op = OperatingPoint(ref_limit, ref_idle_w, clock)
    return replace(gpu.with_quantities(upd), operating=op)


def base_gpu(gpu: GPU) -> GPU:
    """``gpu`` at its profile's default limit and idle power with free clocks (no operating point)."""
    op = gpu.operating
    if op is None:
        return gpu
    q = gpu.quantities
    upd = {"power_limit": replace(q["power_limit"], value=op.reference_power_limit_w),
           "idle_power": replace(q["idle_power"], value=op.reference_idle_power_w)}
    return replace(gpu.with_quantities(upd), operating=None)


def dynamic_scale_at_lock(gpu: GPU) -> float:
    """``v^2 s`` at the locked clock (1 when clocks are free or the GPU has no clock data)."""
    cm = clock_model(gpu)
    if cm is None or gpu.operating is None or gpu.operating.sm_clock_mhz is None:
        return 1.0
    return float(cm.dynamic_scale(gpu.operating.sm_clock_mhz / cm.f_max_mhz))


@dataclass(frozen=True)
class ClockedCost:
    """A kernel at the clock the driver picks (arrays, one shape)."""

    latency_s: np.ndarray
    compute_energy_j: np.ndarray
    memory_energy_j: np.ndarray
    static_energy_j: np.ndarray
    clock_fraction: np.ndarray | float  # f / f_max (a float when the same for all)
    dynamic_scale: np.ndarray | float  # v^2 s at that clock (busy power relative to f_max)
    power_capped: np.ndarray  # the limit lowered the clock (or stretched the kernel)


def _at(cm: ClockModel, s, tc, tm, ec, em, ovh, ref_idle_w, busy_w):
    v2 = cm.voltage(s) ** 2
    lat = np.maximum(tc / s, tm * np.maximum(1.0, cm.memory_knee_fraction / s)) + ovh
    e_c = ec * v2
    e_m = em * (cm.dram_energy_fraction + (1.0 - cm.dram_energy_fraction) * v2)
    idle = ref_idle_w * cm.idle_shape(s) + busy_w * v2 * s  # static power while the kernel runs
    power = idle + (e_c + e_m) / lat
    return lat, e_c, e_m, idle, power


def _highest_fitting_clock(cm: ClockModel, args: list, ref_idle_w: float, busy_w: float, limit_w: float,
                           s_cap: float) -> np.ndarray:
    """The clock of ``BISECTION_STEPS`` halvings of ``[s_min, s_cap]`` (``P(s_cap) > limit``): keep the upper
    half where the power at its lower end fits the limit. Few kernels (a single prediction): the same halvings
    walked over ``2^GRID_BITS`` clocks evaluated at once per round (the midpoints the halvings visit are among
    them, computed as they compute them), ``BISECTION_STEPS / GRID_BITS`` rounds instead of one power evaluation
    per halving: the same clocks bit for bit."""
    n = len(args[0])
    lo = np.full(n, cm.s_min)
    if n > GRID_MAX_KERNELS:
        hi = np.full(n, s_cap)
        for _ in range(BISECTION_STEPS):  # invariant: P(hi) > limit; P(lo) <= limit unless lo = s_min fails
            mid = 0.5 * (lo + hi)
            fits = _at(cm, mid, *args, ref_idle_w, busy_w)[4] <= limit_w
            lo = np.where(fits, mid, lo)
            hi = np.where(fits, hi, mid)
        return lo
    points = 1 << GRID_BITS
    cols = [a[:, None] for a in args]
    bits = 1 << np.arange(points - 1)
    walk = _walk_table(GRID_BITS)
    flat = np.arange(n) * (points + 1)
    clocks = np.empty((n, points + 1))  # a round's ends (columns 0, points) and every midpoint between
    # the first rounds' clocks are the same for every kernel: the tree of the halvings' midpoints, kept with
    # the terms of the power that depend on the clock alone (computed as ``_at`` computes them)
    tree = _clock_tree(cm, s_cap, ref_idle_w, busy_w)
    depth, pos = _tree_positions(GRID_BITS)
    tc, tm, ec, em, ovh = cols
    node = np.zeros(n, dtype=np.intp)  # heap index of each kernel's next midpoint (children of i: 2i + 1, 2i + 2)
    for _ in range(TREE_DEPTH // GRID_BITS):
        s, v2, knee, dram, idle = tree.terms[:, ((node[:, None] + 1) << depth) - 1 + pos]
        power = idle + (ec * v2 + em * dram) / (np.maximum(tc / s, tm * knee) + ovh)  # ``_at``'s, term by term
        node = ((node + 1) << GRID_BITS) - 1 + walk[(power <= limit_w) @ bits]
    clocks[:, 0], clocks[:, points] = tree.lo[node], tree.hi[node]
    for _ in range(BISECTION_STEPS // GRID_BITS - TREE_DEPTH // GRID_BITS):
        step = points
        while step > 1:  # each midpoint as the halvings compute it (bit for bit): 0.5 * (lower + upper end)
            half = step // 2
            clocks[:, half:points:step] = 0.5 * (clocks[:, 0:points - half:step] + clocks[:, step::step])
            step = half
        fits = _at(cm, clocks[:, 1:points], *cols, ref_idle_w, busy_w)[4] <= limit_w
        j = flat + walk[fits @ bits]  # where this round's halvings end, from which of its clocks fit
        clocks[:, 0], clocks[:, points] = clocks.ravel()[j], clocks.ravel()[j + 1]
    return clocks[:, 0].copy()


TREE_DEPTH = 12  # levels of halvings taken from the kept tree of midpoints (a multiple of GRID_BITS)


@dataclass(frozen=True)
class _ClockTree:
    """The halvings' midpoints of ``[s_min, s_cap]`` down to ``TREE_DEPTH`` levels in heap order (node 0 the
    first midpoint; node i halves ``[lo[i], hi[i]]``, its children 2i + 1 and 2i + 2 the two halves), one level
    more for the intervals; ``terms``: ``[s, v^2, max(1, knee / s), phi + (1 - phi) v^2, static power]``."""

    terms: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


_TREES: dict[tuple, tuple] = {}


def _clock_tree(cm: ClockModel, s_cap: float, ref_idle_w: float, busy_w: float) -> _ClockTree:
    """The ``_ClockTree`` of a GPU's clock model at a top clock, idle and busy power (kept per those: a few
    hundred kB each, at most 16)."""
    key = (id(cm), s_cap, ref_idle_w, busy_w)
    hit = _TREES.get(key)
    if hit is not None and hit[0] is cm:
        return hit[1]
    nodes = (1 << (TREE_DEPTH + 1)) - 1
    lo, hi, s = np.empty(nodes), np.empty(nodes), np.empty(nodes)
    lo[0], hi[0] = cm.s_min, s_cap
    s[0] = 0.5 * (lo[0] + hi[0])
    for d in range(1, TREE_DEPTH + 1):  # each level's midpoints as the halvings compute them
        parent = np.arange((1 << (d - 1)) - 1, (1 << d) - 1)
        lo[2 * parent + 1], hi[2 * parent + 1] = lo[parent], s[parent]
        lo[2 * parent + 2], hi[2 * parent + 2] = s[parent], hi[parent]
        level = slice((1 << d) - 1, (1 << (d + 1)) - 1)
        s[level] = 0.5 * (lo[level] + hi[level])
    v2 = cm.voltage(s) ** 2
    terms = np.stack([s, v2, np.maximum(1.0, cm.memory_knee_fraction / s),
                      cm.dram_energy_fraction + (1.0 - cm.dram_energy_fraction) * v2,
                      ref_idle_w * cm.idle_shape(s) + busy_w * v2 * s])
    tree = _ClockTree(terms, lo, hi)
    if len(_TREES) >= 16:
        _TREES.clear()
    _TREES[key] = (cm, tree)
    return tree


@cache
def _tree_positions(bits: int) -> tuple[np.ndarray, np.ndarray]:
    """For the clocks ``1 .. 2^bits - 1`` of a round (in order), their depth below the round's first midpoint and
    their place on that level: a round at node ``i`` evaluates the nodes ``(i + 1) 2^depth - 1 + place``."""
    j = np.arange(1, 1 << bits)
    low = j & -j  # 2^(trailing zeros)
    depth = bits - 1 - np.log2(low).astype(np.intp)
    return depth, (j // low) >> 1


SEARCH_DISTINCT_MIN = 1 << 12  # capped kernels from which the clock search runs on their distinct terms only
# (measured on the benchmark sweeps, bench_speed.py: from 4 k the row search costs less than the halvings it saves)


def _search_distinct(cm: ClockModel, args: list, ref_idle_w: float, busy_w: float, limit_w: float, s_cap: float
                     ) -> np.ndarray:
    """``_highest_fitting_clock`` of many capped kernels (a sweep's grid), searched once per distinct combination
    of their terms where those are at most two thirds of them (the search is element-wise: the same clocks)."""
    if len(args[0]) >= SEARCH_DISTINCT_MIN:
        uniq, inv = unique_rows(np.stack(args, axis=1))
        if 3 * len(uniq) <= 2 * len(args[0]):
            cols = [np.ascontiguousarray(uniq[:, j]) for j in range(len(args))]
            return _highest_fitting_clock(cm, cols, ref_idle_w, busy_w, limit_w, s_cap)[inv]
    return _highest_fitting_clock(cm, args, ref_idle_w, busy_w, limit_w, s_cap)


@cache
def _walk_table(bits: int) -> np.ndarray:
    """For every pattern of which clocks ``1 .. 2^bits - 1`` of a round fit (bit ``j - 1`` of the index: clock
    ``j`` fits), the clock ``bits`` halvings end on: start at 0, step ``2^(bits-1)``, move up where the midpoint
    fits, halve the step."""
    points = 1 << bits
    patterns = np.arange(1 << (points - 1))
    j = np.zeros(len(patterns), dtype=np.intp)
    half = points
    for _ in range(bits):
        half >>= 1
        j = j + half * ((patterns >> (j + half - 1)) & 1)
    return j


MEASURED_KINDS = ("fitted", "measured")


def latency_measured_at_limit(gpu: GPU) -> bool:
    """Whether ``gpu``'s kernel latencies are measured ones (its GEMM efficiency fitted on, or measured from, kernel
    timings), which ran under the board's default power limit: kernels the limit throttled are in them already."""
    q = gpu.quantities.get("max_compute_efficiency_bf16")
    return q is not None and q.kind in MEASURED_KINDS


def clocked_cost(gpu: GPU, compute_s, memory_s, compute_energy_j, memory_energy_j, overhead_s) -> ClockedCost:
    """Latency and energy of kernels with roofline terms (at ``f_max``) ``compute_s``, ``memory_s``,
    dynamic energies and launch overhead, at the highest clock whose power fits the limit.

    Measured latencies (:func:`latency_measured_at_limit`) are those at the default limit: the kernels it throttled
    are throttled in the table already. Where ``FLOPs x J/FLOP + bytes x J/B`` over such a fitted latency says the
    kernel would draw more than that limit (B200: 0.96 pJ/FLOP puts a 1.6 PFLOP/s bf16 GEMM at 2.1 kW; its power
    table reads 988 W of 1000 at that rate), it keeps the latency and draws the limit: its dynamic energies are
    scaled to fit instead of slowing it a second time (flagged ``power_capped``). A lower limit or a locked clock
    slows it from there; GPUs with spec-derived latencies run at ``f_max`` and search their clock at any limit."""
    if not latency_measured_at_limit(gpu):
        return _clocked_cost(gpu, compute_s, memory_s, compute_energy_j, memory_energy_j, overhead_s)
    lat = np.maximum(compute_s, memory_s) + overhead_s
    ref_idle_w, busy_w = reference_idle_power_w(gpu), gpu.busy_power_w
    room = (reference_power_limit_w(gpu) - ref_idle_w - busy_w) * lat
    dyn = compute_energy_j + memory_energy_j
    at_ref = np.asarray(dyn > room)
    if at_ref.any():
        k = np.where(at_ref, room / np.where(at_ref, dyn, 1.0), 1.0)
        compute_energy_j, memory_energy_j = compute_energy_j * k, memory_energy_j * k
    if gpu.operating is None:  # the default limit: every kernel fits now, at its measured latency
        return ClockedCost(lat, compute_energy_j, memory_energy_j, (ref_idle_w + busy_w) * lat, 1.0, 1.0, at_ref)
    out = _clocked_cost(gpu, compute_s, memory_s, compute_energy_j, memory_energy_j, overhead_s)
    return replace(out, power_capped=np.asarray(out.power_capped) | at_ref) if at_ref.any() else out


def _clocked_cost(gpu: GPU, compute_s, memory_s, compute_energy_j, memory_energy_j, overhead_s) -> ClockedCost:
    limit_w = gpu.power_limit_w
    cm = clock_model(gpu)
    op = gpu.operating
    if cm is None:  # no clock data: the clock-free cap (stretch until the power equals the limit, cost/power.py)
        from energylens.cost import power

        after = power.cap(gpu, np.maximum(compute_s, memory_s) + overhead_s, compute_energy_j + memory_energy_j,
                          busy_w=gpu.busy_power_w)
        return ClockedCost(after.latency_s, compute_energy_j, memory_energy_j, after.static_energy_j, 1.0, 1.0,
                           after.capped)
    ref_idle_w = reference_idle_power_w(gpu)
    busy_w = gpu.busy_power_w
    s_cap = (op.sm_clock_mhz / cm.f_max_mhz) if (op and op.sm_clock_mhz) else 1.0
    if s_cap == 1.0:  # the profile's own numbers at f_max (bit for bit the plain roofline)
        lat = np.maximum(compute_s, memory_s) + overhead_s
        e_c, e_m, idle = compute_energy_j, memory_energy_j, ref_idle_w + busy_w
        over = e_c + e_m > (limit_w - idle) * lat  # idle + busy + e_dyn / lat > limit
    else:
        lat, e_c, e_m, idle, power = _at(cm, s_cap, compute_s, memory_s, compute_energy_j, memory_energy_j,
                                         overhead_s, ref_idle_w, busy_w)
        over = power > limit_w
    over = np.asarray(over)
    if not over.any():
        scale = 1.0 if s_cap == 1.0 else float(cm.dynamic_scale(s_cap))
        return ClockedCost(lat, e_c, e_m, idle * lat, s_cap, scale, over)
    shape = over.shape  # (every input's axes)

    def full(a) -> np.ndarray:  # a writable array of the full shape
        out = np.empty(shape)
        out[...] = a
        return out

    args = [a[over] if isinstance(a, np.ndarray) and a.shape == shape else full(a)[over]
            for a in (compute_s, memory_s, compute_energy_j, memory_energy_j, overhead_s)]
    s, lat, e_c, e_m, idle = full(s_cap), full(lat), full(e_c), full(e_m), full(idle)
    lo = _search_distinct(cm, args, ref_idle_w, busy_w, limit_w, s_cap)
    l2, c2, m2, i2, p2 = _at(cm, lo, *args, ref_idle_w, busy_w)
    # below f_min the clock cannot go: stretch (clock slowdown) until the power equals the limit
    headroom = np.maximum(limit_w - i2, 1e-9)
    l2 = np.where(p2 > limit_w, np.maximum(l2, (c2 + m2) / headroom), l2)
    lat[over], e_c[over], e_m[over], idle[over], s[over] = l2, c2, m2, i2, lo
    return ClockedCost(lat, e_c, e_m, idle * lat, s, cm.dynamic_scale(s), over)
