"""Figure of an ``energylens plan``: energy per output token against output tokens/s per GPU.

Every deployment searched is a point (grey: misses an SLO; coloured by GPU type: meets them), the
energy-throughput Pareto front of the deployments meeting the SLOs is a line, the choice a star.
Matplotlib Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")


def plan_figure(result, path: str | Path, *, title: str | None = None) -> Path:
    """Draw ``result`` (a :class:`energylens.plan.PlanResult`) and save it to ``path``."""
    from energylens.checks import output_path

    p = output_path("plot", path, (".png", ".pdf", ".svg"))
    meets = {id(r) for r in result.rows}
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    miss = [r for r in result.all_rows if id(r) not in meets]
    if miss:
        ax.scatter([r["output_tokens_per_s_per_gpu"] for r in miss], [r["energy_per_output_token_j"] for r in miss],
                   s=10, c="#c8c8c8", marker="x", linewidths=0.7, label="misses an SLO")
    for k, g in enumerate(result.meta["gpus"]):
        rows = [r for r in result.rows if r["gpu"] == g]
        if rows:
            ax.scatter([r["output_tokens_per_s_per_gpu"] for r in rows], [r["energy_per_output_token_j"] for r in rows],
                       s=16, c=COLOURS[k % len(COLOURS)], alpha=0.8, label=f"{g} (meets SLOs)")
    if result.front:
        front = sorted((result.rows[k] for k in result.front), key=lambda r: r["output_tokens_per_s_per_gpu"])
        ax.plot([r["output_tokens_per_s_per_gpu"] for r in front], [r["energy_per_output_token_j"] for r in front],
                "k-", lw=1.2, label="Pareto front")
    if result.rows:
        b = result.rows[0]
        ax.scatter([b["output_tokens_per_s_per_gpu"]], [b["energy_per_output_token_j"]], s=180, marker="*",
                   c="gold", edgecolors="k", zorder=5, label=f"choice ({result.objective})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("output tokens/s per GPU")
    ax.set_ylabel("energy per output token (J)")
    m = result.meta
    slo = ", ".join(s for s in (f"TTFT <= {m['max_ttft_s']:g} s" if m["max_ttft_s"] is not None else "",
                                f"TPOT <= {m['max_tpot_s'] * 1e3:g} ms" if m["max_tpot_s"] is not None else "") if s)
    ax.set_title(title or f"{result.model}: {m['input_len']:g}+{m['output_len']:g} tokens, <= {m['max_gpus']} GPUs"
                 + (f", {slo}" if slo else ""), fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(p, dpi=90)
    plt.close(fig)
    return p
