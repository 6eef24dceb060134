"""Figure of an ``energylens plan``: energy per output token against output tokens/s per GPU (left) and
against TPOT (right, the real trade-off: a larger batch cap spends less energy per token and lengthens
every step).

Every deployment searched is a point (grey: misses an SLO; coloured by GPU type: meets them), each panel's
Pareto front of the deployments meeting the SLOs is a line, the choice a star, the TPOT SLO a dashed line.
Matplotlib Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def _panel(ax, result, xkey: str, xscale: float, front: list[int], xlabel: str) -> None:
    meets = {id(r) for r in result.rows}
    miss = [r for r in result.all_rows if id(r) not in meets]
    if miss:
        ax.scatter([r[xkey] * xscale for r in miss], [r["energy_per_output_token_j"] for r in miss],
                   s=10, c="#c8c8c8", marker="x", linewidths=0.7, label="misses an SLO")
    for k, g in enumerate(result.meta["gpus"]):
        rows = [r for r in result.rows if r["gpu"] == g]
        if rows:
            ax.scatter([r[xkey] * xscale for r in rows], [r["energy_per_output_token_j"] for r in rows],
                       s=16, c=COLOURS[k % len(COLOURS)], alpha=0.8, label=f"{g} (meets SLOs)")
    if front:
        pts = sorted((result.rows[k] for k in front), key=lambda r: r[xkey])
        ax.plot([r[xkey] * xscale for r in pts], [r["energy_per_output_token_j"] for r in pts], "k-", lw=1.2,
                label=f"Pareto front ({len(pts)})")
    if result.rows:
        b = result.rows[0]
        ax.scatter([b[xkey] * xscale], [b["energy_per_output_token_j"]], s=180, marker="*", c="gold", edgecolors="k",
                   zorder=5, label=f"choice ({result.objective})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    for axis in (ax.xaxis, ax.yaxis):  # plain numbers, no crowded minor labels
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("energy per output token (J)")
    ax.grid(True, which="both", alpha=0.3)


def plan_figure(result, path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``result`` (a :class:`energylens.plan.PlanResult`) and save it to ``path``."""
    from energylens.checks import output_path

    p = output_path("plot", path, (".png", ".pdf", ".svg"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.0, 4.6))
    _panel(left, result, "output_tokens_per_s_per_gpu", 1.0, result.front_energy_throughput,
           "output tokens/s per GPU")
    _panel(right, result, "tpot_s", 1e3, result.front, "TPOT (ms)")
    m = result.meta
    if m["max_tpot_s"] is not None:
        right.axvline(m["max_tpot_s"] * 1e3, color="k", ls="--", lw=0.8, label="TPOT SLO")
    left.legend(fontsize=7, loc="upper right")
    right.legend(fontsize=7, loc="upper right")
    slo = ", ".join(s for s in (f"TTFT <= {m['max_ttft_s']:g} s" if m["max_ttft_s"] is not None else "",
                                f"TPOT <= {m['max_tpot_s'] * 1e3:g} ms" if m["max_tpot_s"] is not None else "") if s)
    fig.suptitle(title or f"{result.model}: {m['input_len']:g}+{m['output_len']:g} tokens, <= {m['max_gpus']} GPUs"
                 + (f", {slo}" if slo else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p
