"""Fit the kernel energy coefficients of :mod:`energylens.cost.roofline` to NVML kernel power tables.

Model (the one the cost engine uses)::

    P = P_static + (flops * energy_per_flop[dtype] + bytes * energy_per_byte_hbm) / latency
    capped at power_limit (the kernel then stretches; the tables' latency already includes that)

Fitted per GPU with a power table (``power_<gpu>_0.22.0_<family>``, H200 and B200; vLLM 0.22 kernels
replayed while NVML board power is polled) by robust least squares on log power with a rounded cap, on
the rows of at least 1/3000 s only (the collector replays at most 3000 times; a shorter kernel runs for
less than NVML's ~1 s averaging window, so its reading mixes in idle power). J/FLOP of a narrower dtype is
bounded by the wider one's; J/byte by the headroom a weight stream may use (``STREAM_SHARE_MAX``). FLOPs
and bytes per row are the physical counts of each family (GEMM ``2MNK`` and A+B+C; attention
``4·b·h·keys·D`` and the KV stream; fused MoE the expert GEMMs of the shard's tokens and the hit experts'
weights). Held-out shapes as for latency (``HOLDOUT``; GEMM N or K = 7168).

The fit is reported, not written into the profiles (kernels keep idle power as their static power and
J/FLOP derived from the power limit and the fitted GEMM efficiency): the reliable rows are almost all large kernels running at or near the power limit, so the
split between busy static power and J/FLOP is not identified by them (H200: 444 W static), and with those
values the serving model's energy per token on the ML.ENERGY development rows goes from 14 % to 22 %
MAPE (per-model refit floor 11 % -> 21 %): too much static power for the short kernels of decode
steps. :func:`profile_power` scores the profile's own coefficients on the same held-out rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares

from energylens.calibration.kernels import HOLDOUT, aic_expert_loads, subsample
from energylens.calibration.tables import Table, has_table, load_table
from energylens.hardware.profile import GPU

STREAM_SHARE_MAX = 0.95  # a weight stream at the achieved bandwidth uses at most this share of the headroom
POWER_GEMM_HOLDOUT = {"n": (7168,), "k": (7168,)}  # the power GEMM subset has no latency hold-out N/K values
MIN_LATENCY_S = 1.0 / 3000.0  # the collector replays at most 3000 times: shorter kernels run < 1 s and NVML's ~1 s average mixes in idle
FAMILIES = ("gemm", "generation_attention", "context_attention", "moe")
FAMILY_NAMES = {"gemm": "gemm", "generation_attention": "decode attention", "context_attention": "prefill attention",
                "moe": "moe"}
_EB = {"bfloat16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5625, "int4_wo": 0.5}
_FLOP_CLASS = {"bfloat16": "bf16", "fp8": "fp8", "fp8_block": "fp8", "nvfp4": "fp4", "int4_wo": "bf16"}
CLASSES = ("bf16", "fp8", "fp4")


@dataclass
class PowerFit:
    gpu: str
    static_power_w: float  # busy static power
    energy_per_flop_j: dict[str, float]
    energy_per_byte_j: float
    power_limit_w: float
    rows_fit: int
    sources: list[str]
    held_energy_ape: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    derived_from: str = ""

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


def _counts(family: str, t: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flops, bytes, dtype class) per row of a power table."""
    if family == "gemm":
        m, n, k = t["m"], t["n"], t["k"]
        eb = np.array([_EB[d] for d in t["gemm_dtype"]])
        return 2 * m * n * k, (m * k + n * k) * eb + 2 * m * n, np.array([_FLOP_CLASS[d] for d in t["gemm_dtype"]])
    if family in ("generation_attention", "context_attention"):
        kvb = np.where(t["kv_cache_dtype"] == "fp8", 1.0, 2.0)
        b, h, g, d, w = t["batch_size"], t["num_heads"], t["num_key_value_heads"], t["head_dim"], t["window_size"]
        if family == "generation_attention":
            s = t["step"] + 1.0
            keys = np.where(w > 0, np.minimum(s, w), s)
            return 4 * b * h * keys * d, b * keys * g * d * 2 * kvb + 4 * b * h * d, np.full(len(t), "bf16")
        n = t["isl"]
        keys = np.where(w > 0, np.minimum((n + 1) / 2, w), (n + 1) / 2)
        return 4 * b * h * n * keys * d, b * n * (h * d * 4 + g * d * 2 * kvb), np.full(len(t), "bf16")
    load, hit = aic_expert_loads(t["num_tokens"], t["topk"], t["num_experts"], t["moe_ep_size"], t["distribution"])
    tokens, experts = load.sum(-1), hit.sum(-1)
    h, inter = t["hidden_size"], t["inter_size"] / t["moe_tp_size"]
    eb = np.array([_EB.get(d, 2.0) for d in t["moe_dtype"]])
    flops = 2 * tokens * 3 * h * inter
    byts = experts * 3 * h * inter * eb + tokens * (h * eb + 2 * h + 6 * inter)
    return flops, byts, np.array([_FLOP_CLASS.get(d, "bf16") for d in t["moe_dtype"]])


def _held(family: str, t: Table) -> np.ndarray:
    key = {"gemm": "gemm", "generation_attention": "decode_attention", "context_attention": "prefill_attention",
           "moe": "moe"}[family]
    mask = np.zeros(len(t), dtype=bool)
    for col, values in (POWER_GEMM_HOLDOUT if family == "gemm" else HOLDOUT[key]).items():
        mask |= np.isin(t[col], values)
    return mask


def fit_power(gpu: GPU, every: int = 1) -> PowerFit:
    """Fit busy static power, J/FLOP per dtype class and J/byte on every power table of ``gpu``.

    J/byte is fitted as a share ``u`` (0..STREAM_SHARE_MAX) of the headroom a weight stream at the profile's
    achieved bandwidth can use (``e_byte = u (limit - P_static) / (bw x max_memory_efficiency)``): the latency
    tables reach that bandwidth, so a stream must not throttle; the reliable power rows hold too few
    memory-bound kernels to pin J/byte on their own."""
    parts = []
    for fam in FAMILIES:
        if has_table(gpu.key, fam, power=True):
            t = subsample(load_table(gpu.key, fam, power=True), every)
            t = t.select(np.char.find(t["kernel_source"].astype(str), "marlin") < 0)
            flops, byts, cls = _counts(fam, t)
            parts.append((fam, t, flops, byts, cls, _held(fam, t)))
    limit = float(np.median(np.concatenate([p[1]["power_limit_w"] for p in parts])))
    rates, meas = [], []
    for _fam, t, flops, byts, cls, held in parts:
        lat = t["latency_ms"] * 1e-3
        use = ~held & (lat >= MIN_LATENCY_S)
        rates.append(np.stack([np.where(cls == c, flops, 0.0) for c in CLASSES] + [byts], axis=1)[use] / lat[use, None])
        meas.append(t["avg_power_w"][use])
    rate, measured = np.concatenate(rates), np.concatenate(meas)
    classes = [c for i, c in enumerate(CLASSES) if rate[:, i].any()]  # bf16 first (CLASSES order)
    flop_rate = rate[:, [CLASSES.index(c) for c in classes]]
    stream_bw = gpu.hbm_bandwidth_bytes_per_s * gpu.max_memory_efficiency

    def unpack(x):
        static = 100.0 * x[0]
        # bf16 J/FLOP, then each narrower class as a fraction (<= 1) of the one before: a narrower
        # tensor-core FLOP never costs more than a wider one
        e_flop = 1e-13 * x[1] * np.cumprod(np.concatenate([[1.0], x[2:-1]]))
        e_byte = x[-1] * (limit - static) / stream_bw
        return static, e_flop, e_byte

    def power(x):
        static, e_flop, e_byte = unpack(x)
        return smooth_cap_w(static + flop_rate @ e_flop + rate[:, -1] * e_byte, limit)

    x0 = np.array([2.0, 3.0] + [0.5] * (len(classes) - 1) + [0.5])
    hi = np.array([limit / 100.0, np.inf] + [1.0] * (len(classes) - 1) + [STREAM_SHARE_MAX])
    res = least_squares(lambda x: np.log(power(x) / measured), x0, bounds=(np.zeros_like(x0), hi),
                        loss="soft_l1", f_scale=0.05)
    static, e_flop, e_byte = unpack(res.x)
    fit = PowerFit(gpu.key, float(static), dict(zip(classes, map(float, e_flop), strict=True)),
                   float(e_byte), limit, len(measured), [p[1].path for p in parts])
    for fam, t, flops, byts, cls, held in parts:
        lat = t["latency_ms"] * 1e-3
        p_pred = predicted_power_w(fit, flops, byts, cls, lat)
        e_ape = np.abs(p_pred * lat / (t["avg_power_w"] * lat) - 1.0)
        fit.held_energy_ape[FAMILY_NAMES[fam]] = e_ape[held & (lat >= MIN_LATENCY_S)]
    return fit


def smooth_cap_w(p, limit: float, width_w: float = 10.0) -> np.ndarray:
    """``min(p, limit)`` with a rounded corner ``width_w`` wide (so a fit sees the capped rows' slope)."""
    z = (limit - np.asarray(p, dtype=float)) / width_w
    return limit - width_w * np.logaddexp(0.0, z) + width_w * np.log(2.0) * 0.0


def predicted_power_w(fit: PowerFit, flops, byts, cls, latency_s) -> np.ndarray:
    e_flop = np.zeros(len(flops))
    for c, v in fit.energy_per_flop_j.items():
        e_flop = np.where(cls == c, v, e_flop)
    p = fit.static_power_w + (flops * e_flop + byts * fit.energy_per_byte_j) / latency_s
    return np.minimum(p, fit.power_limit_w)


def profile_power(gpu: GPU, every: int = 1) -> PowerFit:
    """The profile's own power coefficients (idle power while busy, J/FLOP per dtype, J/byte) scored on the same
    held-out power-table rows as :func:`fit_power` (``derived_from`` names the profile)."""
    e_flop = {"bf16": gpu.energy_per_flop_j("bf16"), "fp8": gpu.energy_per_flop_j("fp8")}
    e_flop["fp4"] = e_flop["fp8"]
    fit = PowerFit(gpu.key, gpu.idle_power_w, e_flop,
                   gpu.energy_per_byte_j, gpu.power_limit_w, 0, [], derived_from=f"profile {gpu.key}")
    for fam in FAMILIES:
        if has_table(gpu.key, fam, power=True):
            t = subsample(load_table(gpu.key, fam, power=True), every)
            t = t.select(np.char.find(t["kernel_source"].astype(str), "marlin") < 0)
            flops, byts, cls = _counts(fam, t)
            lat = t["latency_ms"] * 1e-3
            held = _held(fam, t) & (lat >= MIN_LATENCY_S)
            p = predicted_power_w(fit, flops, byts, cls, lat)
            fit.held_energy_ape[FAMILY_NAMES[fam]] = np.abs(p / t["avg_power_w"] - 1.0)[held]
    return fit


__all__ = ["PowerFit", "fit_power", "predicted_power_w", "profile_power"]
