"""``energylens plan``: the deployment that serves a model within TTFT/TPOT SLOs at the least energy per
output token (or the most output tokens/s per GPU, the least carbon or cost).

Search space, per GPU type (and per power limit / locked SM clock given):

* **aggregated** (one vLLM instance, continuous batching): ``tp`` in 1, 2, 4, 8 (up to a node),
  ``pp`` > 1 only on full nodes (``tp = gpus_per_node``); for MoE models also expert parallelism
  (vLLM's ``--enable-expert-parallel``) over the tensor-parallel GPUs (``ep = tp``) or over
  data-parallel attention replicas (``tp = 1``, ``ep = dp`` in 2, 4, 8, 16); everything within
  ``max_gpus``. Dense (and ``ep = 1``) deployments are listed
  with ``dp = 1``: replicas are independent, so more of them multiply the throughput and leave every
  per-GPU and per-token figure unchanged (replicate up to ``max_gpus / num_gpus``);
* each instance runs a **closed loop** of ``concurrency`` clients (the batch cap: vLLM's running
  requests), staggered (steady traffic), on the concurrency grid ``CONCURRENCY`` (per replica):
  :func:`energylens.serving_load.serve_closed_loop_arrays` gives mean and p90 TTFT and TPOT, tokens/s
  per GPU, power and J per output token; the KV cache from free memory caps the running batch
  (requests wait) and deployments whose weights or one request do not fit are dropped. One call costs
  every layout with the same active parallel axes (one program) at every concurrency, and the power
  limits of a GPU type share one set of clock levels (:func:`energylens.cost.clock_hold.hold_clock`);
* **disaggregated** (``disaggregated=True``): a prefill pool and a decode pool of the same GPU type,
  each ``tp`` in the fitting ones, sized in whole instances within ``max_gpus`` by
  :func:`energylens.disagg.disaggregated` (KV transfer over the NICs included); its TTFT is the
  prefill service time plus the transfer (no queueing: the pools are sized to the request rate).

Deployments meeting ``max_ttft_s`` and ``max_tpot_s`` (means) are ranked by the objective:
``energy`` (J per output token, low first), ``throughput`` (output tokens/s per GPU, high first),
``carbon`` (gCO2e per token: energy x PUE x carbon intensity) or ``cost`` (USD per token: price per
GPU-hour / tokens per GPU-hour). Ties go to the other of energy/throughput, then fewer GPUs.

Pareto fronts: energy per output token against output tokens/s per GPU is usually one deployment
(J/token = W per GPU / tok/s per GPU: the deployment that serves the most tokens per GPU also spends its
watts best) unless power limits trade watts for tokens. The real trade-off is against latency: a larger
batch cap packs more tokens per step (less energy per token, more tokens per GPU) and lengthens every
step (higher TPOT and TTFT). ``front`` is therefore the front of energy per token against TPOT (``*`` in
the table, ``pareto`` on a row), ``front_throughput`` that of tokens/s per GPU against TPOT, and
``front_energy_throughput`` the energy-throughput one. Every row carries 80 % intervals (from
:mod:`energylens.intervals`): energy per token and power from their residual cells, TPOT and TTFT (mean and
p90) from the inter-token-latency cell (TTFT is a sum of engine iterations; no measured TTFT is in the
residual set, so that interval is an assumption, labelled in its ``basis``), tokens/s per GPU its inverse.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from energylens.carbon import Footprint
from energylens.errors import EnergyLensError, LayoutError, SpecError, WorkloadError
from energylens.pareto import pareto_mask
from energylens.plan_explain import OBJECTIVES, explain

# the batch cap (closed-loop clients per replica): four steps per doubling (costed together, so a finer
# grid costs little more time)
CONCURRENCY = (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224,
               256, 320, 384, 448, 512)
TP_CHOICES = (1, 2, 4, 8)
EP_DP_CHOICES = (2, 4, 8, 16)
MAX_PLAN_GPUS = 4096
ROW_KEYS = ("gpu", "num_gpus", "tp", "ep", "dp", "pp", "mode", "concurrency", "ttft_s", "ttft_p90_s", "tpot_s",
            "tpot_p90_s", "energy_per_output_token_j", "output_tokens_per_s_per_gpu", "avg_power_w",
            "power_limit_w", "sm_clock_mhz")


@dataclass
class PlanResult:
    """Ranked deployments meeting the SLOs (``rows``), the Pareto front (indices into ``rows``), the
    choice explained (``explanation``) and counts (``meta``)."""

    model: str
    objective: str
    rows: list[dict]
    front: list[int]  # energy per output token against TPOT (both lower is better)
    explanation: list[str]
    meta: dict = field(default_factory=dict)
    all_rows: list[dict] = field(default_factory=list)  # every candidate evaluated (for plots)
    front_throughput: list[int] = field(default_factory=list)  # tokens/s per GPU (higher) against TPOT (lower)
    front_energy_throughput: list[int] = field(default_factory=list)  # energy per token against tokens/s per GPU

    def to_dict(self) -> dict:
        return {"model": self.model, "objective": self.objective, "rows": self.rows, "pareto_front": self.front,
                "pareto_front_throughput": self.front_throughput,
                "pareto_front_energy_throughput": self.front_energy_throughput,
                "explanation": self.explanation, "meta": self.meta}


def _layouts(model, max_gpus: int, gpus_per_node: int) -> list[tuple[int, int, int, int]]:
    """(tp, pp, dp, ep) candidates (see the module docstring)."""
    moe = "e" in model.dims
    out = []
    for tp in TP_CHOICES:
        if tp > min(gpus_per_node, max_gpus):
            continue
        for pp in (1, 2, 4):
            if pp > 1 and (tp != min(gpus_per_node, max(TP_CHOICES)) or tp * pp > max_gpus):
                continue
            out.append((tp, pp, 1, 1))
        if moe and 1 < tp:  # attention tensor-parallel, experts expert-parallel over the same GPUs
            out.append((tp, 1, 1, tp))
    if moe:  # data-parallel attention, experts expert-parallel over all replicas (wide EP)
        out += [(1, 1, dp, dp) for dp in EP_DP_CHOICES if 1 < dp <= max_gpus]
    return out


def _check(model, gpus, max_gpus, input_len, output_len, max_ttft_s, max_tpot_s, objective, footprint,
           concurrency) -> tuple:
    from energylens.checks import MAX_BATCH, MAX_TOKENS, integer, number

    if isinstance(gpus, str):
        gpus = [g for g in gpus.split(",") if g.strip()]
    if not gpus:
        raise SpecError("gpu", gpus, "one or more GPU names, e.g. h100-sxm,h200,b200")
    max_gpus = integer("max_gpus", max_gpus, low=1, high=MAX_PLAN_GPUS, error=LayoutError)
    input_len = float(number("input_len", input_len, high=MAX_TOKENS, error=WorkloadError))
    output_len = float(number("output_len", output_len, high=MAX_TOKENS, error=WorkloadError))
    if output_len < 2:
        raise WorkloadError("output_len", output_len, "at least 2 tokens (TPOT needs a second token)")
    for name, v in (("max_ttft_s", max_ttft_s), ("max_tpot_s", max_tpot_s)):
        if v is not None:
            number(name, v, high=1e6, error=WorkloadError, what="a positive number of seconds")
    if objective not in OBJECTIVES:
        raise SpecError("objective", objective, "one of " + ", ".join(OBJECTIVES))
    if objective == "carbon" and footprint.carbon_intensity_g_per_kwh is None:
        raise SpecError("objective", objective, "carbon needs --carbon-intensity (gCO2e/kWh)")
    if objective == "cost" and footprint.usd_per_gpu_hour is None:
        raise SpecError("objective", objective, "cost needs --usd-per-gpu-hour")
    conc = tuple(CONCURRENCY if concurrency is None else concurrency)
    if not conc:
        raise WorkloadError("concurrency", list(conc), "at least one value")
    for c in conc:
        integer("concurrency", c, high=MAX_BATCH, error=WorkloadError)
    return list(dict.fromkeys(g.strip() for g in gpus)), max_gpus, input_len, output_len, tuple(sorted(set(conc)))


def _iv_factors(model, gpu_key: str, level: float) -> dict:
    """Multiplicative (low, high) factors of the serve intervals for this model family and GPU."""
    from energylens.intervals import interval_for

    iv = interval_for(model, gpu_key, {"decode_step_latency_s": 1.0, "avg_power_w": 1.0,
                                       "energy_per_output_token_j": 1.0}, level)
    return {k: (v["low"], v["high"], v["basis"]) for k, v in iv.items()}


TTFT_BASIS = ("; TTFT: the inter-token-latency residuals applied to a sum of engine iterations (an assumption: "
              "no measured TTFT in the residual set; on NVIDIA's silicon runs the range holds far fewer than 80 % "
              "of measured TTFTs, tools/silicon_interval_coverage.py)")


def _intervals(row: dict, factors: dict, level: float) -> dict:
    out = {}
    for metric, key in (("tpot_s", "decode_step_latency_s"), ("tpot_p90_s", "decode_step_latency_s"),
                        ("ttft_s", "decode_step_latency_s"), ("ttft_p90_s", "decode_step_latency_s"),
                        ("avg_power_w", "avg_power_w"), ("energy_per_output_token_j", "energy_per_output_token_j")):
        if key in factors:
            lo, hi, basis = factors[key]
            out[metric] = {"low": row[metric] * lo, "high": row[metric] * hi, "level": level,
                           "basis": basis + (TTFT_BASIS if metric.startswith("ttft") else "")}
    if "decode_step_latency_s" in factors:  # throughput per GPU ~ running / TPOT: the inverse interval
        lo, hi, basis = factors["decode_step_latency_s"]
        x = row["output_tokens_per_s_per_gpu"]
        out["output_tokens_per_s_per_gpu"] = {"low": x / hi, "high": x / lo, "level": level, "basis": basis}
    return out


def _groups(m, layouts, i, o, gpus_per_node, g) -> list[list[tuple]]:
    """The layouts that fit (weights and one request), grouped by their active parallel axes and expert
    class (``program.local_experts``): one program
    per group (``program.build_program``), so each group is costed in one vectorised call."""
    from energylens.kv_capacity import kv_capacity
    from energylens.parallel.layout import Layout, check_layout
    from energylens.program import active_axes, local_experts

    groups: dict[tuple, list[tuple]] = {}
    for tp, pp, dp, ep in layouts:
        lay = Layout(tp=tp, pp=pp, dp=dp, ep=ep, gpus_per_node=gpus_per_node)
        if not bool(np.all(check_layout(m, lay, strict=False))):
            continue
        cap = kv_capacity(m, g, lay)
        if cap.fits and float(cap.max_running(i, o)) >= 1:
            key = (tuple(sorted(active_axes(m, lay).items())), local_experts(m, lay))
            groups.setdefault(key, []).append(((tp, pp, dp, ep), cap))
    return list(groups.values())


def _aggregated(m, gpus: list, gname, layouts, conc, i, o, gpus_per_node, notes) -> list[list[dict]]:
    """Closed-loop rows of every fitting layout at every concurrency, one list per GPU of ``gpus`` (the
    same GPU type at several power limits: the clock levels are costed once for all limits). Each group
    of layouts with the same active axes is one vectorised call (layouts on the first axis)."""
    from dataclasses import fields

    from energylens.kv_capacity import KVCapacity
    from energylens.parallel.layout import Layout
    from energylens.serving_load import serve_closed_loop_arrays

    g0 = gpus[0]
    limits = [g.power_limit_w for g in gpus] if len(gpus) > 1 else None
    out: list[list[dict]] = [[] for _ in gpus]
    for group in _groups(m, layouts, i, o, gpus_per_node, g0):
        deg = np.array([d for d, _ in group], dtype=np.int64)  # (L, 4): tp, pp, dp, ep
        lay = Layout(*(deg[:, k:k + 1] for k in range(4)), gpus_per_node=gpus_per_node)
        cap = KVCapacity(**{f.name: np.array([[getattr(c, f.name)] for _, c in group]) for f in fields(KVCapacity)})
        per = np.asarray(conc, dtype=float)[None, :]
        ok = per >= deg[:, 1:2]  # at least one request per pipeline stage
        c = np.where(ok, per, deg[:, 1:2]) * deg[:, 2:3]  # whole deployment (dp replicas)
        res = serve_closed_loop_arrays(m, g0, lay, c, i, o, staggered=True, capacity=cap, limits_w=limits)
        for j, arr in enumerate(res if limits else [res]):
            keep = ok & np.asarray(arr.fits) & np.isfinite(arr.tpot_s)

            def at(a, idx, shape=c.shape):
                return float(np.broadcast_to(np.asarray(a, dtype=float), shape)[idx])

            for idx in zip(*np.nonzero(keep), strict=True):
                tp, pp, dp, ep = (int(v) for v in deg[idx[0]])
                out[j].append({"gpu": gname, "num_gpus": tp * pp * dp, "tp": tp, "ep": ep, "dp": dp, "pp": pp,
                               "mode": "aggregated", "concurrency": float(c[idx]),
                               "ttft_s": at(arr.ttft_s, idx), "ttft_p90_s": at(arr.ttft_p90_s, idx),
                               "tpot_s": at(arr.tpot_s, idx), "tpot_p90_s": at(arr.tpot_p90_s, idx),
                               "energy_per_output_token_j": at(arr.energy_per_output_token_j, idx),
                               "output_tokens_per_s_per_gpu": at(arr.output_tokens_per_s_per_gpu, idx),
                               "avg_power_w": at(arr.avg_power_w, idx), "running_batch": at(arr.running_batch, idx)})
    for rows in out:  # the order of the per-layout search: layouts as listed, then concurrency
        rows.sort(key=lambda r: (layouts.index((r["tp"], r["pp"], r["dp"], r["ep"])), r["concurrency"]))
    return out


def _disaggregated(model, m, g, gname, conc, i, o, max_gpus, gpus_per_node, notes) -> list[dict]:
    from energylens.disagg import Pool, disaggregated
    from energylens.kv_capacity import kv_capacity
    from energylens.parallel.layout import Layout, check_layout

    fitting = []
    for tp in TP_CHOICES:
        lay = Layout(tp=tp, gpus_per_node=gpus_per_node)
        if tp <= min(gpus_per_node, max_gpus) and bool(np.all(check_layout(m, lay, strict=False))):
            cap = kv_capacity(m, g, lay)
            if cap.fits and float(cap.max_running(i, o)) >= 1:
                fitting.append(tp)
    rows = []
    dtype = None
    for tpa in fitting[:3]:
        for tpb in fitting[:3]:
            if tpa + tpb > max_gpus:
                continue
            pa, pb = Pool(gpu=g, tp=tpa, dtype=dtype), Pool(gpu=g, tp=tpb, dtype=dtype)
            cap = kv_capacity(m, g, Layout(tp=tpb, gpus_per_node=gpus_per_node))
            slots = float(cap.max_running(i, o))
            c = np.asarray([x for x in conc if x <= slots], dtype=float)
            if c.size == 0:
                continue
            try:
                d = disaggregated(m, pa, pb, concurrency=c, prompt_len=i, output_len=o, max_gpus=max_gpus,
                                  gpus_per_node=gpus_per_node)
            except EnergyLensError as exc:
                notes.append(f"{gname} disaggregated tp{tpa}/tp{tpb}: {exc}")
                continue
            ok = np.asarray(d.prefill_fits & d.decode_fits)
            for k in np.flatnonzero(np.broadcast_to(ok, c.shape)):
                n = int(np.broadcast_to(d.num_gpus, c.shape)[k])
                nb = int(np.broadcast_to(d.decode_instances, c.shape)[k])
                na = int(np.broadcast_to(d.prefill_instances, c.shape)[k])

                def at(a, k=k, shape=c.shape):
                    return float(np.broadcast_to(a, shape)[k])

                tok = at(d.output_tokens_per_s)
                rows.append({"gpu": gname, "num_gpus": n, "tp": tpb, "ep": 1, "dp": 1, "pp": 1,
                             "mode": "disaggregated", "concurrency": float(c[k] * nb),
                             "ttft_s": at(d.ttft_s), "ttft_p90_s": at(d.ttft_s), "tpot_s": at(d.itl_s),
                             "tpot_p90_s": at(d.itl_s), "energy_per_output_token_j": at(d.energy_per_output_token_j),
                             "output_tokens_per_s_per_gpu": at(d.output_tokens_per_s_per_gpu),
                             "avg_power_w": at(d.energy_per_output_token_j) * tok, "running_batch": float(c[k] * nb),
                             "prefill_pool": f"{na}x tp{tpa}", "decode_pool": f"{nb}x tp{tpb}"})
    return rows


def _finish(model, m, g, found, disaggregated, conc, i, o, max_gpus, gpus_per_node, notes, footprint, level,
            rows) -> None:
    """Disaggregated candidates of this GPU, then operating point, intervals, carbon and cost on every row."""
    if disaggregated:
        found += _disaggregated(model, m, g, g.key, conc, i, o, max_gpus, gpus_per_node, notes)
    if not found:
        notes.append(f"{g.key}: no deployment within {max_gpus} GPUs holds the weights and one request")
    factors = _iv_factors(m, g.key, level)
    for r in found:
        r["power_limit_w"] = g.power_limit_w
        r["default_power_limit_w"] = g.operating.reference_power_limit_w if g.operating else g.power_limit_w
        r["sm_clock_mhz"] = g.operating.sm_clock_mhz if g.operating else None
        r["interval"] = _intervals(r, factors, level)
        r.update(footprint.per_token_floats(r["energy_per_output_token_j"], r["output_tokens_per_s_per_gpu"]))
    rows += found


def plan(model, gpus, *, max_gpus: int, input_len: float, output_len: float, max_ttft_s: float | None = None,
         max_tpot_s: float | None = None, objective: str = "energy", disaggregated: bool = False,
         concurrency=None, power_limits=(None,), sm_clocks=(None,), footprint: Footprint | None = None,
         dtype: str | None = None, gpus_per_node: int = 8, interval_level: float = 0.8) -> PlanResult:
    """Search deployments of ``model`` on ``gpus`` (see the module docstring); ``power_limits`` (W per
    GPU) and ``sm_clocks`` (MHz) are extra axes (``None``: the profile's limit, clocks free)."""
    from energylens.pipeline import prepare

    t0 = time.perf_counter()
    footprint = footprint or Footprint()
    gpus, max_gpus, i, o, conc = _check(model, gpus, max_gpus, input_len, output_len, max_ttft_s, max_tpot_s,
                                        objective, footprint, concurrency)
    notes: list[str] = []
    rows: list[dict] = []
    model_name = None
    for gname in gpus:
        for sc in sm_clocks:
            prepared = []
            for pl in power_limits:
                try:
                    prepared.append((pl, *prepare(model, gname, dtype, power_limit_w=pl, sm_clock_mhz=sc)))
                except WorkloadError as exc:
                    if len(gpus) * len(power_limits) * len(sm_clocks) == 1:
                        raise
                    notes.append(f"{gname}: skipped ({exc})")
            # the profile's own limit alone; the user's limits together (one set of clock levels)
            batches = [[p] for p in prepared if p[0] is None] + [b for b in [[p for p in prepared if p[0]]] if b]
            for batch in batches:
                m = batch[0][1]
                model_name = m.hf_id or m.name
                for (_, _, g), agg in zip(batch, _aggregated(m, [g for _, _, g in batch], batch[0][2].key,
                                                             _layouts(m, max_gpus, gpus_per_node), conc, i, o,
                                                             gpus_per_node, notes), strict=True):
                    _finish(model, m, g, agg, disaggregated, conc, i, o, max_gpus, gpus_per_node, notes, footprint,
                            interval_level, rows)
    if model_name is None:
        raise SpecError("gpu", ",".join(gpus), "at least one GPU that accepts the power limit / SM clock given")
    ok = [r for r in rows if (max_ttft_s is None or r["ttft_s"] <= max_ttft_s)
          and (max_tpot_s is None or r["tpot_s"] <= max_tpot_s)]
    key, descending = OBJECTIVES[objective]
    other = "output_tokens_per_s_per_gpu" if key != "output_tokens_per_s_per_gpu" else "energy_per_output_token_j"
    sign = -1.0 if descending else 1.0
    osign = -1.0 if other == "output_tokens_per_s_per_gpu" else 1.0
    ok.sort(key=lambda r: (sign * r[key], osign * r[other], r["num_gpus"]))
    fronts: dict[str, list[int]] = {"energy_tpot": [], "throughput_tpot": [], "energy_throughput": []}
    if ok:
        e, x, t = (np.array([r[k] for r in ok]) for k in ("energy_per_output_token_j", "output_tokens_per_s_per_gpu",
                                                          "tpot_s"))
        for name, cols, minimize in (("energy_tpot", (e, t), [True, True]), ("throughput_tpot", (x, t), [False, True]),
                                     ("energy_throughput", (e, x), [True, False])):
            mask = pareto_mask(np.stack(cols, axis=1), minimize=minimize)
            fronts[name] = [int(k) for k in np.flatnonzero(mask)]
            for k, r in enumerate(ok):
                r["pareto" if name == "energy_tpot" else f"pareto_{name}"] = bool(mask[k])
    meta = {"candidates": len(rows), "meet_slo": len(ok), "elapsed_s": time.perf_counter() - t0, "notes": notes,
            "max_gpus": max_gpus, "input_len": i, "output_len": o, "max_ttft_s": max_ttft_s, "max_tpot_s": max_tpot_s,
            "gpus": gpus, "disaggregated": bool(disaggregated), "concurrency_grid": list(conc),
            "footprint": {"carbon_intensity_g_per_kwh": footprint.carbon_intensity_g_per_kwh, "pue": footprint.pue,
                          "usd_per_gpu_hour": footprint.usd_per_gpu_hour}}
    result = PlanResult(model_name, objective, ok, fronts["energy_tpot"], [], meta, rows, fronts["throughput_tpot"],
                        fronts["energy_throughput"])
    result.explanation = explain(result)
    return result
