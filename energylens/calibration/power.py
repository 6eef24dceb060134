"""Fit the kernel power coefficients of :mod:`energylens.cost.roofline` to NVIDIA's NVML kernel power tables.

Model (the one the cost engine uses; the formula is :func:`energylens.cost.power.kernel_power_w`)::

    P = idle_power + busy_power + (flops * energy_per_flop[dtype] + bytes * energy_per_byte_hbm) / latency
    capped at power_limit (the kernel then runs at a lower clock; the tables' latency already includes that)

``idle_power`` is the profile's (context held, nothing running); ``busy_power`` is what running SMs add
before they do any counted work (clocks, warp schedulers, L2 and crossbar awake). Fitted per GPU with a
power table (``power_<gpu>_0.22.0_<family>``, H200 and B200; vLLM 0.22 kernels replayed under CUDA graphs
while NVML board power is polled every 100 ms) by robust least squares (soft-L1) on log power, the cap with
a rounded corner, each family weighted equally (GEMM, decode attention, prefill attention, fused MoE).

Rows used: kernels of at least ``MIN_LATENCY_S`` = 100 us. The collector replays a kernel at most 3000
times, so a 100 us kernel runs for 0.3 s (three NVML samples); below that the reading mixes in idle: on
H200 bf16 weight-streaming GEMMs (M <= 16) the median reads 155 W at < 5 us, 378 W at 10-20 us, 590 W at
80-120 us and 613 W at 0.33-0.6 ms (achieved bandwidth 0.84 -> 0.88 of peak over the last two), so from
100 us on the reading is the kernel's. What identifies each coefficient:

* ``busy_power``: long kernels that move few bytes and do few FLOPs (decode attention over thousands of
  short sequences, 0.4-1.7 ms at < 5 % of HBM bandwidth: 280-440 W on H200, against 130 W idle).
* ``energy_per_byte_hbm``: memory-bound kernels at different bandwidths (weight streaming, decode
  attention, small-token MoE); bounded so that a stream at the fitted bandwidth stays under the limit.
* ``energy_per_flop_<dtype>``: compute-bound kernels below the cap (prefill attention, mid-size GEMMs);
  a narrower dtype's J/FLOP is bounded by the wider one's. Most large GEMMs and MoEs run at the cap, where
  the power is the limit whatever the split. bf16 J/FLOP is bounded by :func:`flop_energy_bound_j`: the
  fastest GEMMs of the latency tables (``max_compute_efficiency_bf16`` x peak) fit under the limit at the
  lowest clock that still allows their rate (``s = eff``, voltage and idle power from ``cost/dvfs.py``).
  On B200 the tables alone do not pin the split between busy power and J/FLOP (held-out errors within a
  point from 0.4 to 0.85 pJ, busy power 330 -> 270 W): unbounded the fit takes 0.84 pJ, which would put the
  tables' own bf16 GEMMs (1.68 PFLOP/s) over 1000 W at any clock; the bound (0.57 pJ at busy 294 W) holds
  it (0.574 pJ at busy 281 W with attention on its tile FLOPs). H200's fit (0.455 pJ) lies inside its bound
  (0.75 pJ). Per FLOP at the clock the capped GEMMs run at,
  B200 spends less than H200: (limit - idle - busy) / measured rate = 0.28 against 0.42 pJ.

FLOPs and bytes per row are the physical counts of each family (GEMM ``2MNK`` and A+B+C; attention
``4·b·h·keys·D`` and the KV stream; fused MoE the hit experts' weights and the padded-tile FLOPs: each
expert's token rows rounded up to whole ``moe_tile_m`` tiles, the profile's fitted tile, as the cost engine
charges them (``cost/plan_eval.py``, ``cost/tiles.py``); the tensor cores run whole tiles, padding included.
Attention ``keys`` are likewise the keys per query row its tiles run (``cost/families.py:attention_tile_keys``,
the latency formula's tiling: a causal prefill's diagonal tiles whole, ``(T + q_tile / r) / 2`` per row
without a cache, a sliding window plus the tile it straddles), and an attention call with an fp8 KV cache is
charged the fp8 J/FLOP (``attention_mma_dtype``: Q quantised, fp8 Q/K/V tiles, the latency formula's fp8
kernel). Counted on useful keys at bf16 (the fit before), held-out prefill attention read 14.5 / 11.0 %
(H200 / B200) against 15.3 / 9.6 % on tile keys at the kernel's dtype; the fp8 tiles give H200 its own fp8
J/FLOP (0.34 against 0.455 pJ bf16; before, the bound J/FLOP(fp8) <= J/FLOP(bf16) was reached). Charged on useful
FLOPs instead, fused MoE pulled J/FLOP to 0.96-1.0 pJ on both GPUs (the fit without prefill attention) and
held out 9.1 / 10.2 % (B200 / H200) against 7.1 / 5.3 % padded). Whole shapes are held out (``HOLDOUT``; GEMM N or K = 7168) and the held-out error is the APE of
energy per call at the measured latency (= power APE).

Two more terms, both in the shipped fit (:func:`fit_power`):

* **The collector's capped runs** (a measurement model, never charged to a kernel): the collector replays a
  kernel until 1 s has passed but at most 3000 times, so kernels under ``RUN_CAP_LATENCY_S`` = 1/3000 s
  run for less than a second. Decode-attention readings step there: on H200 the reading above idle is 0.81
  of the model's at 0.31-0.33 ms and 1.03 at 0.33-0.36 ms (0.58 at 0.06-0.1 ms, 0.66 at 0.1-0.15 ms), while
  prefill attention (0.91 -> 0.90) and fused MoE (1.24 -> 1.24) read the same on both sides
  (:func:`run_cap_step`, printed by ``tools/calibrate_tables.py``). Below the cap a decode row reads as if each
  call were followed by ``replay_gap_s`` of idle GPU (``cost/power.py:replay_reading_w``; H200 about 60 us,
  B200 about 13 us); from the cap on it reads the kernel's own power. The other families get no gap.
* **A fused-MoE kernel's J per HBM byte** over the dense one (``moe_byte_energy_ratio``, a profile field the
  cost engine applies to fused-MoE bytes): each expert's weight tiles are read once per M-tile through L2
  and shared memory (a dense GEMM's weights once per call), and token rows are gathered and scattered by
  index; bounded so a MoE stream at the fastest fitted MoE bandwidth stays under the limit. With MoE energy
  on padded-tile FLOPs the ratio fell from 2.42 / 1.82 (B200 / H200, useful FLOPs) to about 1.9 / 1.7 (2.1 / 1.8
  with attention on its tile FLOPs).

The structural fit (``fit_power(structural=True)``; reported by ``tools/calibrate_tables.py``, written into
the profiles only with ``--structural``, an experiment) takes a replay gap for every family at every
latency instead: it raises busy power (H200 293 W) and the serving leave-one-model-out energy error.
The fit before these two terms (no gap, no MoE ratio) is reported as :data:`PLAIN`. The tables' own noise
(``tools/power_table_noise.py``: the same kernel collected twice) is ~10 % median APE for H200 decode
attention at 0.1-0.33 ms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from energylens.calibration.kernels import HOLDOUT, aic_expert_loads, subsample
from energylens.calibration.tables import Table, has_table, load_table
from energylens.cost import families as cost_families
from energylens.cost.dvfs import clock_model
from energylens.cost.power import kernel_power_w, replay_reading_w
from energylens.errors import SpecError
from energylens.hardware.profile import GPU

STREAM_SHARE_MAX = 0.95  # a weight stream at the achieved bandwidth uses at most this share of the headroom
POWER_GEMM_HOLDOUT = {"n": (7168,), "k": (7168,)}  # the power GEMM subset has no latency hold-out N/K values
MIN_LATENCY_S = 1e-4  # shorter kernels replay for < 0.3 s (at most 3000 times) and NVML's reading mixes in idle
FAMILIES = ("gemm", "generation_attention", "context_attention", "moe")
FAMILY_NAMES = {"gemm": "gemm", "generation_attention": "decode attention", "context_attention": "prefill attention",
                "moe": "moe"}
_EB = {"bfloat16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5625, "int4_wo": 0.5}
_FLOP_CLASS = {"bfloat16": "bf16", "fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4", "int4_wo": "bf16"}
CLASSES = ("bf16", "fp8", "fp4")
CORNER_W = 10.0  # rounded cap corner while fitting (W)
REPLAY_GAP_MAX_S = 2e-3  # upper bound of a family's fitted host gap per replayed call (s)
STRUCTURAL = "structural fit (reported, not in the profiles)"  # PowerFit.derived_from of fit_power(structural=True)
PLAIN = "plain fit: no replay gap, no MoE J/B ratio (reported, not in the profiles)"  # the fit shipped before
REPORTED = (STRUCTURAL, PLAIN)  # PowerFit.derived_from of the reported variants
# the collector replays a kernel until 1 s has passed, at most 3000 times (kernels-power SOURCE_extraction.md,
# collector/helper.py): a kernel shorter than this runs for less than a second
RUN_CAP_LATENCY_S = 1.0 / 3000.0
CAPPED_GAP_FAMILIES = ("generation_attention",)  # families whose readings step at the run cap (run_cap_step)
# (GPU, table, dtype) rows scored but never fitted, and why
NOT_FITTED = {("b200", "gemm", "fp8_block"): "host-bound: about 0.16 ms per call whatever the shape (bf16 does the "
              "same GEMMs in 0.02 ms) at near-idle power, so the kernel time is mostly an idle GPU"}


@dataclass
class PowerFit:
    gpu: str
    idle_power_w: float  # the profile's (not fitted)
    busy_power_w: float
    energy_per_flop_j: dict[str, float]
    energy_per_byte_j: float
    power_limit_w: float
    rows_fit: int
    sources: list[str]
    held_energy_ape: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    derived_from: str = ""
    moe_byte_energy_ratio: float = 1.0  # a fused-MoE kernel's J per HBM byte over energy_per_byte_j
    replay_gap_s: dict[str, float] = field(default_factory=dict)  # collector host time per call, per family (s)
    gap_below_s: float = np.inf  # the replay gap dilutes only rows shorter than this (s; RUN_CAP_LATENCY_S)

    @property
    def static_power_w(self) -> float:
        """Board power of a running kernel before its dynamic energy: idle + busy (W)."""
        return self.idle_power_w + self.busy_power_w

    @property
    def source(self) -> str:
        return _join_sources(self.sources) + f" ({self.rows_fit} rows fitted); python tools/calibrate_tables.py"


def _join_sources(paths: list[str]) -> str:
    """``dir/power_<gpu>_0.22.0_{a,b}.csv.gz`` for files that differ only in the family."""
    heads = {p[: p.index("0.22.0_") + 7] for p in paths}
    if len(heads) != 1:
        return "; ".join(paths)
    head = heads.pop()
    return head + "{" + ",".join(p[len(head):].removesuffix(".csv.gz") for p in paths) + "}.csv.gz"


def _moe_tile_m(gpu: GPU, moe_dtype: np.ndarray) -> np.ndarray:
    """Token rows per expert tile of each fused-MoE power-table row: the profile's ``moe_tile_m`` of the
    kernel the cost engine picks for that dtype (:func:`energylens.cost.families.moe_coeffs`)."""
    out = np.zeros(len(moe_dtype))
    for d in np.unique(moe_dtype):
        cls = _FLOP_CLASS.get(d, "bf16")
        out[moe_dtype == d] = cost_families.moe_coeffs(gpu, cls, "fp8_block" if d == "fp8_block" else "").tile_m
    return out


def _counts(family: str, t: Table, gpu: GPU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flops, bytes, dtype class) per row of a power table (fused MoE: padded-tile FLOPs, ``gpu``'s tiles)."""
    if family == "gemm":
        m, n, k = t["m"], t["n"], t["k"]
        eb = np.array([_EB[d] for d in t["gemm_dtype"]])
        return 2 * m * n * k, (m * k + n * k) * eb + 2 * m * n, np.array([_FLOP_CLASS[d] for d in t["gemm_dtype"]])
    if family in ("generation_attention", "context_attention"):
        kvb = np.where(t["kv_cache_dtype"] == "fp8", 1.0, 2.0)
        b, h, g, d, w = t["batch_size"], t["num_heads"], t["num_key_value_heads"], t["head_dim"], t["window_size"]
        c = cost_families.attention_coeffs(gpu)
        cls = np.where(kvb < 2.0, cost_families.attention_mma_dtype(gpu, 1.0), "bf16")  # a dtype class of CLASSES
        if family == "generation_attention":
            s = t["step"] + 1.0
            keys = np.where(w > 0, np.minimum(s, w), s)  # KV tokens of the cache tensor (its bytes)
            tile_keys = cost_families.attention_tile_keys(c, 1.0, s, w, h / g)
            return 4 * b * h * tile_keys * d, b * keys * g * d * 2 * kvb + 4 * b * h * d, cls
        n = t["isl"]
        tile_keys = cost_families.attention_tile_keys(c, n, n, w, h / g)
        return 4 * b * h * n * tile_keys * d, b * n * (h * d * 4 + g * d * 2 * kvb), cls
    load, hit = aic_expert_loads(t["num_tokens"], t["topk"], t["num_experts"], t["moe_ep_size"], t["distribution"])
    tokens, experts = load.sum(-1), hit.sum(-1)
    h, inter = t["hidden_size"], t["inter_size"] / t["moe_tp_size"]
    eb = np.array([_EB.get(d, 2.0) for d in t["moe_dtype"]])
    tile_m = _moe_tile_m(gpu, t["moe_dtype"])
    rows = np.where(hit > 0, load / np.maximum(hit, 1e-30), 0.0)  # a hit expert's tokens, as families.expert_tiles
    padded_rows = np.sum(hit * np.ceil(rows / tile_m[:, None]), axis=-1) * tile_m
    flops = 2 * padded_rows * 3 * h * inter
    byts = experts * 3 * h * inter * eb + tokens * (h * eb + 2 * h + 6 * inter)
    return flops, byts, np.array([_FLOP_CLASS.get(d, "bf16") for d in t["moe_dtype"]])


def _held(family: str, t: Table) -> np.ndarray:
    key = {"gemm": "gemm", "generation_attention": "decode_attention", "context_attention": "prefill_attention",
           "moe": "moe"}[family]
    mask = np.zeros(len(t), dtype=bool)
    for col, values in (POWER_GEMM_HOLDOUT if family == "gemm" else HOLDOUT[key]).items():
        mask |= np.isin(t[col], values)
    return mask


@dataclass
class _Part:
    family: str
    table: Table
    flops: np.ndarray
    bytes: np.ndarray
    cls: np.ndarray
    held: np.ndarray

    @property
    def latency_s(self) -> np.ndarray:
        return self.table["latency_ms"] * 1e-3

    def fitted(self, gpu_key: str) -> np.ndarray:
        """Rows the fit may use (not held out, long enough, not in ``NOT_FITTED``)."""
        use = ~self.held & (self.latency_s >= MIN_LATENCY_S)
        if self.family == "gemm":
            for (g, fam, dt) in NOT_FITTED:
                if g == gpu_key and fam == "gemm":
                    use &= self.table["gemm_dtype"] != dt
        return use

    def groups(self) -> dict[str, np.ndarray]:
        """Held-out report groups: GEMM per table dtype, every other family whole."""
        if self.family != "gemm":
            return {FAMILY_NAMES[self.family]: np.ones(len(self.table), dtype=bool)}
        dt = self.table["gemm_dtype"]
        return {f"gemm {d}": dt == d for d in sorted(set(dt.tolist()))}


def _parts(gpu: GPU, every: int) -> list[_Part]:
    parts = []
    for family in FAMILIES:
        if has_table(gpu.key, family, power=True):
            t = subsample(load_table(gpu.key, family, power=True), every)
            t = t.select(np.char.find(t["kernel_source"].astype(str), "marlin") < 0)
            flops, byts, cls = _counts(family, t, gpu)
            parts.append(_Part(family, t, flops, byts, cls, _held(family, t)))
    return parts


def _dynamic_w(fit: PowerFit, p: _Part) -> np.ndarray:
    e_flop = np.zeros(len(p.flops))
    for c, v in fit.energy_per_flop_j.items():
        e_flop = np.where(p.cls == c, v, e_flop)
    e_byte = fit.energy_per_byte_j * (fit.moe_byte_energy_ratio if p.family == "moe" else 1.0)
    return (p.flops * e_flop + p.bytes * e_byte) / p.latency_s


def predicted_power_w(fit: PowerFit, part: _Part, *, kernel_only: bool = False) -> np.ndarray:
    """What the table reads for each row of ``part`` under ``fit`` at the row's measured latency (W): the
    kernel's power diluted by the collector's host gap per call of the family (``kernel_only``: the
    kernel's own power, what the cost engine charges)."""
    p = kernel_power_w(fit.idle_power_w, fit.busy_power_w, _dynamic_w(fit, part), fit.power_limit_w)
    gap = 0.0 if kernel_only else fit.replay_gap_s.get(part.family, 0.0) * (part.latency_s < fit.gap_below_s)
    return replay_reading_w(fit.idle_power_w, p, part.latency_s, gap)


def _score(fit: PowerFit, parts: list[_Part]) -> None:
    for p in parts:
        ape = np.abs(predicted_power_w(fit, p) / p.table["avg_power_w"] - 1.0)
        score = p.held & (p.latency_s >= MIN_LATENCY_S)
        for name, mask in p.groups().items():
            fit.held_energy_ape[name] = ape[score & mask]


def _moe_stream_bw(gpu: GPU) -> float:
    """Fastest fitted fused-MoE weight stream of ``gpu`` (B/s): the profile's best ``moe_memory_efficiency_*``
    (the GEMM stream's where it has none) times the HBM bandwidth."""
    effs = [gpu.q(n) for n in gpu.quantities if n.startswith("moe_memory_efficiency_")]
    return gpu.hbm_bandwidth_bytes_per_s * max(effs or [gpu.max_memory_efficiency])


def flop_energy_bound_j(gpu: GPU, power_limit_w: float, busy_power_w):
    """Largest bf16 J/FLOP (at the maximum clock) with which the fastest GEMMs of ``gpu``'s latency tables fit
    under ``power_limit_w`` at some clock (J/FLOP; vectorised over ``busy_power_w``). Those GEMMs reach
    ``max_compute_efficiency_bf16`` x peak; a kernel cannot run faster than its clock allows, so they ran at an
    SM clock ``s >= eff``, where they draw ``idle x idle_shape(s) + busy x v(s)^2 s + J/FLOP x v(s)^2 x FLOP/s``
    (:mod:`energylens.cost.dvfs`). Every term falls with the clock, so the bound is taken at ``s = eff`` (the
    most the driver can have throttled them): with a larger J/FLOP they would be over the limit at any clock.
    The tables do show them throttled: B200 bf16 GEMMs at 50-60 % of peak (95 rows >= 0.1 ms) read 990 W of
    1000 W, which at the maximum clock needs at least 0.37 pJ/FLOP above busy power; the same expression at
    ``s = 1`` (the untabled GPUs' rule, :mod:`energylens.calibration.derived_power`) fits 0.24 pJ (busy 357 W), putting
    them at 900 W. A GPU without clock data: ``s = 1``, ``v = 1``."""
    eff = gpu.max_compute_efficiency("bf16")
    cm = clock_model(gpu)
    s = float(np.clip(eff, cm.s_min, 1.0)) if cm else 1.0
    v2 = float(cm.voltage(s)) ** 2 if cm else 1.0
    idle = gpu.idle_power_w * (float(cm.idle_shape(s)) if cm else 1.0)
    return (power_limit_w - idle - np.asarray(busy_power_w, dtype=float) * v2 * s) / (v2 * gpu.peak_flops("bf16") * eff)


def fit_power(gpu: GPU, every: int = 1, *, structural: bool = False, gap_families: tuple[str, ...] | None = None,
              moe_ratio: bool = True, gap_below_s: float | None = None) -> PowerFit:
    """Fit busy power, J/FLOP per dtype class and J/byte on every power table of ``gpu`` (its idle power
    is the profile's). J/byte is fitted as a share ``u`` (0..STREAM_SHARE_MAX) of the headroom a weight
    stream at the profile's achieved bandwidth may use (``e_byte = u (limit - idle - busy) / (bw x
    max_memory_efficiency)``): the latency tables reach that bandwidth, so a stream must not throttle.

    ``moe_ratio``: also fit the fused-MoE J/byte ratio, as a share of the headroom at the fastest fitted MoE
    weight stream (:func:`_moe_stream_bw`, so a MoE stream does not throttle either). ``gap_families``: the
    families with a replay gap, idle time per replayed call that dilutes what the table reads on rows
    shorter than ``gap_below_s`` (:func:`energylens.cost.power.replay_reading_w`; a property of the
    collector, not a cost of the kernel). Shipped: the decode-attention gap on the collector's capped runs
    (``CAPPED_GAP_FAMILIES``, ``RUN_CAP_LATENCY_S``). ``structural`` (reported, not shipped:
    :data:`STRUCTURAL`): a gap for every family at every latency (``tools/calibrate_tables.py
    --gaps/--no-moe-ratio`` select its terms)."""
    if gap_families is None:
        gap_families = FAMILIES if structural else CAPPED_GAP_FAMILIES
    if gap_below_s is None:
        gap_below_s = np.inf if structural else RUN_CAP_LATENCY_S
    parts = _parts(gpu, every)
    limit = float(np.median(np.concatenate([p.table["power_limit_w"] for p in parts])))
    idle = gpu.idle_power_w
    rates, meas, weights, lat, fam = [], [], [], [], []
    for i, p in enumerate(parts):
        use = p.fitted(gpu.key)
        rates.append(np.stack([np.where(p.cls == c, p.flops, 0.0) for c in CLASSES] + [p.bytes], axis=1)[use]
                     / p.latency_s[use, None])
        meas.append(p.table["avg_power_w"][use])
        weights.append(np.full(int(use.sum()), 1.0 / max(int(use.sum()), 1)))  # each family weighs the same
        lat.append(p.latency_s[use])
        fam.append(np.full(int(use.sum()), i))
    rate, measured, latency, fam_ix = (np.concatenate(a) for a in (rates, meas, lat, fam))
    sqrt_w = np.sqrt(np.concatenate(weights) * len(measured) / len(parts))
    classes = [c for i, c in enumerate(CLASSES) if rate[:, i].any()]  # bf16 first (CLASSES order)
    flop_rate = rate[:, [CLASSES.index(c) for c in classes]]
    stream_bw = gpu.hbm_bandwidth_bytes_per_s * gpu.max_memory_efficiency
    moe_bw = _moe_stream_bw(gpu)
    moe_rows = np.isin(fam_ix, [i for i, p in enumerate(parts) if p.family == "moe"])
    headroom = limit - idle
    nc = len(classes)
    with_moe = moe_ratio
    gapped = [i for i, p in enumerate(parts) if p.family in gap_families]
    below = latency < gap_below_s

    def unpack(x):
        busy = x[0] * headroom
        # bf16 J/FLOP as a share of flop_energy_bound_j (the fastest GEMMs fit under the limit), then each
        # narrower class as a fraction (<= 1) of the one before: a narrower tensor-core FLOP never costs more
        e_flop = x[1] * flop_energy_bound_j(gpu, limit, busy) * np.cumprod(np.concatenate([[1.0], x[2:1 + nc]]))
        e_byte = x[1 + nc] * (headroom - busy) / stream_bw
        e_moe = x[2 + nc] * (headroom - busy) / moe_bw if with_moe else e_byte
        gaps = np.zeros(len(parts))
        gaps[gapped] = 1e-4 * x[2 + nc + with_moe:]
        return busy, e_flop, e_byte, e_moe, gaps

    def resid(x):
        busy, e_flop, e_byte, e_moe, gaps = unpack(x)
        dyn = flop_rate @ e_flop + rate[:, -1] * np.where(moe_rows, e_moe, e_byte)
        p = kernel_power_w(idle, busy, dyn, limit, corner_w=CORNER_W)
        return sqrt_w * np.log(replay_reading_w(idle, p, latency, gaps[fam_ix] * below) / measured)

    x0 = [0.3, 0.5] + [0.5] * (nc - 1) + [0.5]
    hi = [0.95, 1.0] + [1.0] * (nc - 1) + [STREAM_SHARE_MAX]
    x0 += [0.5] * with_moe + [0.3] * len(gapped)
    hi += [STREAM_SHARE_MAX] * with_moe + [1e4 * REPLAY_GAP_MAX_S] * len(gapped)
    res = least_squares(resid, np.array(x0), bounds=(np.zeros(len(x0)), np.array(hi)), loss="soft_l1", f_scale=0.05)
    busy, e_flop, e_byte, e_moe, gaps = unpack(res.x)
    fit = PowerFit(gpu.key, idle, float(busy), dict(zip(classes, map(float, e_flop), strict=True)),
                   float(e_byte), limit, len(measured), [p.table.path for p in parts],
                   derived_from=STRUCTURAL if structural else "",
                   moe_byte_energy_ratio=float(e_moe / e_byte) if e_byte > 0 else 1.0,
                   replay_gap_s={parts[i].family: float(gaps[i]) for i in gapped}, gap_below_s=gap_below_s)
    _score(fit, parts)
    return fit


def run_cap_step(fit: PowerFit, gpu: GPU, every: int = 1, band: float = 0.25) -> dict[str, tuple[float, float, int, int]]:
    """Per family of ``gpu``'s power tables: the median reading above idle over the kernel's own modelled power
    above idle (``fit``'s, no gap) on rows just under the collector's run cap (``RUN_CAP_LATENCY_S`` x
    (1 - ``band``) .. the cap) and just over it (the cap .. x (1 + 2 ``band``)), and the row counts. A
    ratio that jumps at the cap marks a family whose capped runs read diluted (``CAPPED_GAP_FAMILIES``).
    Rows modelled at the limit are left out (their ratio says nothing about dilution)."""
    out = {}
    for p in _parts(gpu, every):
        own = predicted_power_w(fit, p, kernel_only=True)
        ok = (own < 0.97 * fit.power_limit_w) & (own > fit.idle_power_w + 1.0)
        ratio = (p.table["avg_power_w"] - fit.idle_power_w) / np.where(ok, own - fit.idle_power_w, 1.0)
        lat = p.latency_s
        under = ok & (lat >= RUN_CAP_LATENCY_S * (1.0 - band)) & (lat < RUN_CAP_LATENCY_S)
        over = ok & (lat >= RUN_CAP_LATENCY_S) & (lat < RUN_CAP_LATENCY_S * (1.0 + 2.0 * band))
        med = [float(np.median(ratio[m])) if m.any() else float("nan") for m in (under, over)]
        out[p.family] = (med[0], med[1], int(under.sum()), int(over.sum()))
    return out


# GPUs whose idle power is the floor of their own power tables (the profile's source is weaker), and why
IDLE_FROM_TABLES = {
    "b200": "the profile's 175 W (a screenshot of an idle air-cooled B200, 137 W, plus a CUDA-context increment) "
            "is below every one of the tables' readings: that screenshot is deep idle (clocks down, no process); "
            "a serving engine holds the context with the clocks up between kernels"}


def table_floor_power_w(gpu_key: str) -> tuple[float, list[str]]:
    """Lowest NVML reading over every power table of ``gpu_key`` (W) and the files: a process holding the
    context with the clocks up, replaying a kernel that leaves the GPU idle most of the time (host-bound
    replays). An upper bound of context-held idle at the maximum clock: on H200 it reads 126.3 W against
    the 120.1 W measured at 1980 MHz by EnergAIzer (same GH100 die as H100), 5 % above."""
    floors, paths = [], []
    for fam in FAMILIES:
        if has_table(gpu_key, fam, power=True):
            t = load_table(gpu_key, fam, power=True)
            floors.append(float(np.min(t["avg_power_w"])))
            paths.append(t.path)
    if not floors:
        raise SpecError("gpu", gpu_key, "a GPU with kernel power tables")
    return min(floors), paths


def profile_power(gpu: GPU, every: int = 1) -> PowerFit:
    """The profile's own power coefficients (idle and busy power, J/FLOP per dtype, J/byte) scored on the
    same held-out power-table rows as :func:`fit_power` (``derived_from`` names the profile)."""
    e_flop = {c: gpu.energy_per_flop_j(c) for c in CLASSES if gpu.has(f"energy_per_flop_{c}")}
    e_flop.setdefault("fp4", e_flop["fp8"])
    fit = PowerFit(gpu.key, gpu.idle_power_w, gpu.busy_power_w, e_flop, gpu.energy_per_byte_j, gpu.power_limit_w,
                   0, [], derived_from=f"profile {gpu.key}")
    _score(fit, _parts(gpu, every))
    return fit


def scaled_fit(fit: PowerFit, gpu: GPU) -> PowerFit:
    """``fit`` (of a GPU with a power table) carried to ``gpu``, a board with the same die and clocks but
    another memory and maybe another limit (H100 SXM from H200): busy power and J/FLOP are the die's and
    kept; J/byte and a fused-MoE J/byte ratio are kept (the whole-GPU path per byte is mostly on-die: L2,
    crossbar, PHY; ``gpu``'s slower HBM keeps a MoE stream further under the limit); idle power and the
    limit are ``gpu``'s. Nothing is scored (no table)."""
    return PowerFit(gpu.key, gpu.idle_power_w, fit.busy_power_w, dict(fit.energy_per_flop_j), fit.energy_per_byte_j,
                    gpu.power_limit_w, 0, list(fit.sources), derived_from=f"{fit.gpu} power fit",
                    moe_byte_energy_ratio=fit.moe_byte_energy_ratio)


__all__ = ["CAPPED_GAP_FAMILIES", "flop_energy_bound_j", "IDLE_FROM_TABLES", "MIN_LATENCY_S", "NOT_FITTED", "PLAIN", "REPORTED", "RUN_CAP_LATENCY_S",
           "STRUCTURAL", "PowerFit", "fit_power", "predicted_power_w", "profile_power", "run_cap_step", "scaled_fit",
           "table_floor_power_w"]
