"""Plain-language explanation of an ``energylens plan`` choice (see :mod:`energylens.plan`)."""

from __future__ import annotations

OBJECTIVES = {"energy": ("energy_per_output_token_j", False), "throughput": ("output_tokens_per_s_per_gpu", True),
              "carbon": ("gco2e_per_output_token", False), "cost": ("usd_per_output_token", False)}  # (key, descending)
OBJECTIVE_WORDS = {"energy": "the least energy per output token", "throughput": "the most output tokens/s per GPU",
                   "carbon": "the least carbon per output token", "cost": "the least cost per output token"}


def layout_label(r: dict) -> str:
    """``tp4``, ``tp8 pp2``, ``tp2 dp4 ep8``; disaggregated rows name both pools."""
    if r["mode"] == "disaggregated":
        return f"P {r['prefill_pool']} + D {r['decode_pool']}"
    parts = [f"tp{r['tp']}"] + [f"{k}{r[k]}" for k in ("pp", "dp", "ep") if r[k] > 1]
    return " ".join(parts)


def short_label(r: dict) -> str:
    """A compact layout for an 80-column table: ``tp4``, ``tp2dp4ep8``, ``P1xtp2+D2xtp4``."""
    if r["mode"] == "disaggregated":
        return f"P{r['prefill_pool'].replace(' ', '')}+D{r['decode_pool'].replace(' ', '')}"
    return "".join([f"tp{r['tp']}"] + [f"{k}{r[k]}" for k in ("pp", "dp", "ep") if r[k] > 1])


def describe(r: dict) -> str:
    capped = r.get("power_limit_w") not in (None, r.get("default_power_limit_w"))
    lim = f", {r['power_limit_w']:g} W cap" if capped else ""
    clock = f", SM {r['sm_clock_mhz']:g} MHz" if r.get("sm_clock_mhz") else ""
    return (f"{r['num_gpus']}x {r['gpu']} {layout_label(r)} ({r['mode']}, concurrency {r['concurrency']:g}{lim}"
            f"{clock}): {r['energy_per_output_token_j']:.3g} J/token, {r['output_tokens_per_s_per_gpu']:,.0f} "
            f"tok/s/GPU, TTFT {r['ttft_s']:.3g} s, TPOT {r['tpot_s'] * 1e3:.3g} ms")


def _same_deployment(a: dict, b: dict) -> bool:
    keys = ("gpu", "tp", "pp", "dp", "ep", "mode", "power_limit_w", "sm_clock_mhz", "prefill_pool")
    return all(a.get(k) == b.get(k) for k in keys)


def _pct(a: float, b: float) -> str:
    return f"{(a / b - 1.0) * 100:+.0f} %"


def _tradeoff(result) -> str:
    """The Pareto fronts in words and which objective picks what."""
    front = sorted((result.rows[k] for k in result.front), key=lambda r: r["tpot_s"])
    text = f"Trade-off: {len(front)} deployment(s) on the Pareto front of energy per token against TPOT (* above)"
    if len(front) > 1:
        fast, lean = front[0], front[-1]
        text += (f", from {fast['energy_per_output_token_j']:.3g} J/token at TPOT {fast['tpot_s'] * 1e3:.3g} ms "
                 f"({fast['num_gpus']}x {fast['gpu']} {layout_label(fast)}, concurrency {fast['concurrency']:g}) to "
                 f"{lean['energy_per_output_token_j']:.3g} J/token at {lean['tpot_s'] * 1e3:.3g} ms ({lean['num_gpus']}x "
                 f"{lean['gpu']} {layout_label(lean)}, concurrency {lean['concurrency']:g}): a larger batch cap spends "
                 "less energy per token and makes every step (TPOT, TTFT) longer")
    n_et = len(result.front_energy_throughput)
    if n_et == 1:
        text += ("; energy per token and tokens/s per GPU do not trade off here (one deployment is best on both: "
                 "J/token = W per GPU / tok/s per GPU), so the two objectives differ only in the latency they accept")
    else:
        text += (f"; energy per token and tokens/s per GPU trade off across {n_et} deployments (those drawing fewer "
                 "watts per GPU, e.g. under a power limit, serve fewer tokens per GPU)")
    return (text + ". --objective energy picks the least-energy deployment within the SLOs, --objective "
            "throughput the most tokens/s per GPU (its own front against TPOT: "
            f"{len(result.front_throughput)} deployment(s)); a tighter --max-tpot-s moves either toward the fast end.")


def explain(result) -> list[str]:
    m = result.meta
    slo = " and ".join(s for s in (f"TTFT <= {m['max_ttft_s']:g} s" if m["max_ttft_s"] is not None else "",
                                   f"TPOT <= {m['max_tpot_s'] * 1e3:g} ms" if m["max_tpot_s"] is not None else "") if s)
    slo = slo or "no latency SLO"
    rows, everything = result.rows, result.all_rows
    if not rows:
        if not everything:
            return [f"No deployment of {result.model} fits within {m['max_gpus']} GPUs of {', '.join(m['gpus'])}."]

        def excess(r):
            return max(r["ttft_s"] / (m["max_ttft_s"] or float("inf")), r["tpot_s"] / (m["max_tpot_s"] or float("inf")))

        near = min(everything, key=excess)
        return [f"No deployment meets {slo} within {m['max_gpus']} GPUs. Closest: {describe(near)} "
                f"({excess(near):.2f}x the tighter SLO). Relax the SLOs, allow more GPUs or try faster GPUs."]
    key, descending = OBJECTIVES[result.objective]
    best = rows[0]
    out = [f"Choice ({OBJECTIVE_WORDS[result.objective]} with {slo}): {describe(best)}."]
    iv = best.get("interval") or {}
    def num(v: float) -> str:
        return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"

    spans = [f"{name} {num(iv[k]['low'] * f)}-{num(iv[k]['high'] * f)}{unit}" for k, name, f, unit in (
        ("ttft_s", "TTFT", 1.0, " s"), ("tpot_s", "TPOT", 1e3, " ms"), ("energy_per_output_token_j", "", 1.0, " J/token"),
        ("output_tokens_per_s_per_gpu", "", 1.0, " tok/s/GPU")) if k in iv]
    if spans:
        out.append(f"80 % intervals of the choice: {', '.join(s.strip() for s in spans)} (validation residuals; TTFT "
                   "assumes the inter-token-latency residuals, no measured TTFT backs it).")
    # why this concurrency: the next one up on the same deployment breaks an SLO or is worse
    higher = sorted((r for r in everything if _same_deployment(r, best) and r["concurrency"] > best["concurrency"]),
                    key=lambda r: r["concurrency"])
    if higher:
        h = higher[0]
        broken = [f"TPOT {h['tpot_s'] * 1e3:.3g} ms" for _ in [0] if m["max_tpot_s"] is not None
                  and h["tpot_s"] > m["max_tpot_s"]] + [f"TTFT {h['ttft_s']:.3g} s" for _ in [0]
                                                         if m["max_ttft_s"] is not None and h["ttft_s"] > m["max_ttft_s"]]
        if broken:
            out.append(f"Why this batch cap: more concurrency packs more tokens per step (less energy per token, more "
                       f"tokens per GPU) until the SLO binds; at concurrency {h['concurrency']:g} the same deployment "
                       f"would exceed it ({', '.join(broken)}).")
        else:
            out.append(f"Why this batch cap: concurrency {h['concurrency']:g} meets the SLOs too but gives "
                       f"{h[key]:.4g} vs {best[key]:.4g} ({key}).")
    else:
        out.append("Why this batch cap: the largest concurrency searched (or the KV cache allows) for it.")
    # against the best of every other GPU type and layout
    per_gpu = {}
    for r in rows:
        per_gpu.setdefault(r["gpu"], r)
    others = [f"{g}: {describe(r)} ({_pct(r[key], best[key])} {key})" for g, r in per_gpu.items() if g != best["gpu"]]
    if others:
        out.append("Best on the other GPU types: " + "; ".join(others) + ".")
    missing = [g for g in m["gpus"] if g not in per_gpu and all(r["gpu"] != g for r in rows)]
    for g in missing:
        tried = [r for r in everything if r["gpu"] == g]
        out.append(f"{g}: " + ("no deployment meets the SLOs" if tried else "nothing fits in memory") + ".")
    layouts = {}
    for r in rows:
        if r["gpu"] == best["gpu"]:
            layouts.setdefault(layout_label(r), r)
    alt = [f"{lab} {r[key]:.4g} ({_pct(r[key], best[key])})" for lab, r in layouts.items() if lab != layout_label(best)]
    if alt:
        out.append(f"Other layouts on {best['gpu']} ({key}, their best row): " + ", ".join(alt[:5]) + ".")
    if m["disaggregated"]:
        modes = {}
        for r in rows:
            modes.setdefault(r["mode"], r)
        if len(modes) == 2:
            a, d = modes["aggregated"], modes["disaggregated"]
            out.append(f"Aggregated vs disaggregated (best of each): {a[key]:.4g} vs {d[key]:.4g} {key}; "
                       "disaggregated TTFT excludes queueing (pools sized to the request rate).")
        else:
            out.append(f"Only {next(iter(modes))} deployments meet the SLOs.")
    out.append(_tradeoff(result))
    other_obj = "throughput" if result.objective != "throughput" else "energy"
    okey, odesc = OBJECTIVES[other_obj]
    alt_best = (max if odesc else min)(rows, key=lambda r: r[okey])
    if alt_best is not best:
        out.append(f"For {OBJECTIVE_WORDS[other_obj]} instead: {describe(alt_best)}.")
    if best["dp"] == 1 and best["ep"] == 1 and best["mode"] == "aggregated" and best["num_gpus"] < m["max_gpus"]:
        out.append(f"More traffic: run up to {m['max_gpus'] // best['num_gpus']} such replicas within {m['max_gpus']} "
                   "GPUs; per-GPU and per-token figures stay the same.")
    out.append(f"Searched {m['candidates']} deployments ({m['meet_slo']} meet the SLOs) in {m['elapsed_s']:.1f} s; "
               "figures are model predictions with the 80 % intervals of `serve` in --json.")
    return out
