"""Matplotlib figures of a sweep (Agg backend: no display needed).

* ``plot_pareto``: every feasible configuration as a point, the Pareto front highlighted;
* ``plot_breakdown``: stacked energy-per-token bars (compute, memory, static, communication,
  idle wait) for the configurations on a front;
* ``plot_energy_vs_batch``: energy per token against batch size, one line per layout;
* ``sweep_figure``: the four panels together (prefill front, decode front, breakdown, batch), saved.

Scatter plots draw at most ``max_points`` points (a fixed random subset, front points always
included), so a million-row sweep plots in about a second.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from energylens.errors import SpecError  # noqa: E402
from energylens.sweep.table import FRONTS, SweepTable  # noqa: E402

BREAKDOWN_LABELS = (("compute_j", "compute"), ("memory_j", "memory (HBM)"),
                    ("static_j", "static (idle power while busy)"), ("communication_j", "communication"),
                    ("idle_wait_j", "idle wait"))
BREAKDOWN_COLOURS = ("#4c72b0", "#dd8452", "#b0b0b0", "#55a868", "#c44e52")
AXIS_LABELS = {
    "ttft_s": "TTFT: prefill latency of the batch (s)",
    "tpot_s": "time per output token (s)",
    "request_latency_s": "request latency, prefill + decode (s)",
    "prefill_tokens_per_s": "prefill throughput (tokens/s)",
    "decode_tokens_per_s": "decode throughput (tokens/s)",
    "request_tokens_per_s": "output tokens/s",
    "num_gpus": "GPUs",
    "prefill_energy_per_token_j": "prefill energy per prompt token (J)",
    "decode_energy_per_token_j": "decode energy per output token (J)",
    "energy_per_output_token_j": "request energy per output token (J)",
    "serve_itl_s": "inter-token latency, continuous batching (s)",
    "serve_output_tokens_per_s": "output tokens/s, continuous batching",
    "serve_energy_per_output_token_j": "energy per output token, continuous batching (J)",
}


def _label(row: dict) -> str:
    parts = [f"tp{row['tp']}"]
    for k in ("pp", "dp", "ep"):
        if row[k] > 1:
            parts.append(f"{k}{row[k]}")
    parts.append(f"b{row['batch']}")
    if row.get("overlap_comm_sms", 0) > 0:  # overlap setting: SMs for communication x chunks
        parts.append(f"ov{row['overlap_comm_sms']}x{row['overlap_chunks']}")
    return " ".join(parts)


def select_workload(table: SweepTable, prompt_len: int | None = None, output_len: int | None = None,
                    ) -> tuple[SweepTable, int, int]:
    """Rows of one workload (default: the prompt and output lengths nearest the medians), since
    energy per token is only comparable between configurations serving the same requests."""
    if not len(table):
        return table, 0, 0
    if prompt_len is None:
        v = np.unique(table["prompt_len"])
        prompt_len = int(v[np.argmin(np.abs(v - np.median(table["prompt_len"])))])
    if output_len is None:
        v = np.unique(table["output_len"])
        output_len = int(v[np.argmin(np.abs(v - np.median(table["output_len"])))])
    sel = (table["prompt_len"] == prompt_len) & (table["output_len"] == output_len)
    return table.filter(sel), prompt_len, output_len


def _log_axes(ax, x: bool = True, y: bool = True, xbase: float = 10) -> None:
    """Log scales with plain-number tick labels (mathtext labels make drawing several times slower)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for on, axis, base in ((x, ax.xaxis, xbase), (y, ax.yaxis, 10)):
        if on:
            (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log", base=base)
            if base == 10:
                axis.set_major_locator(LogLocator(10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(NullFormatter())


def _front_spec(front: str) -> tuple[str, str, bool, bool]:
    if front not in FRONTS:
        raise SpecError("front", front, "one of " + ", ".join(FRONTS))
    return FRONTS[front]


MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _models(table: SweepTable) -> list[str]:
    return list(dict.fromkeys(table["model"].tolist())) if len(table) else []


def plot_pareto(table: SweepTable, front: str = "decode-latency", ax=None, *, max_points: int = 20_000,
                seed: int = 0):
    """Scatter of the feasible configurations and the Pareto front. One model: points coloured by
    GPU count, the front in red. Several models: one colour per model, one front per model."""
    x, y, _, _ = _front_spec(front)
    ax = ax or plt.figure(figsize=(6, 4.5)).gca()
    t = table.feasible() if "feasible" in table else table
    if len(t) and (x.startswith("tpot") or y.startswith(("decode", "energy_per_output", "serve"))):
        t = t.filter(t["output_len"] > 0)
    models = _models(t)
    rng = np.random.default_rng(seed)
    for i, model in enumerate(models):
        sub = t.filter(t["model"] == model) if len(models) > 1 else t
        pf = sub.pareto(front)
        idx = np.arange(len(sub))
        if len(sub) > max_points // max(len(models), 1):
            idx = np.sort(rng.choice(len(sub), max_points // len(models), replace=False))
        if len(models) == 1:
            from matplotlib.colors import LogNorm

            g = sub["num_gpus"]
            sc = ax.scatter(sub[x][idx], sub[y][idx], c=g[idx], s=7, alpha=0.45, cmap="viridis",
                            norm=LogNorm(vmin=max(g.min(), 1), vmax=max(g.max(), 2)), linewidths=0,
                            label=f"feasible configurations ({len(sub):,})")
            from matplotlib.ticker import FuncFormatter, NullFormatter

            cbar = ax.figure.colorbar(sc, ax=ax, pad=0.01)
            cbar.set_label("GPUs")
            cbar.set_ticks(np.unique(g).astype(float))
            cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            cbar.ax.yaxis.set_minor_formatter(NullFormatter())
            colour = "#d62728"
            label = f"Pareto front ({len(pf)})"
        else:
            colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
            ax.scatter(sub[x][idx], sub[y][idx], color=colour, s=5, alpha=0.2, linewidths=0)
            label = f"{model}: front ({len(pf)}) of {len(sub):,}"
        if len(pf):
            ax.plot(pf[x], pf[y], "-o", color=colour, ms=3.5, lw=1.5, label=label)
            best = int(np.argmin(pf[y]))
            ax.annotate(_label(pf.row(best)), (pf[x][best], pf[y][best]), textcoords="offset points",
                        xytext=(-4, -11), ha="right", fontsize=7, color=colour)
    _log_axes(ax)
    ax.set_xlabel(AXIS_LABELS.get(x, x))
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    phase, _, against = front.partition("-")
    ax.set_title(f"{phase}: energy per token vs {against} (Pareto front)", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="best")
    return ax


def plot_breakdown(table: SweepTable, phase: str = "decode", ax=None, *, rows: SweepTable | None = None,
                   max_bars: int = 10):
    """Stacked energy per token by component for ``rows`` (default: the phase's latency front)."""
    if phase not in ("prefill", "decode"):
        raise SpecError("phase", phase, "prefill or decode")
    ax = ax or plt.figure(figsize=(6, 4.5)).gca()
    if rows is None:
        models = _models(table)
        per = max(max_bars // max(len(models), 1), 2)
        parts = []
        for model in models:
            f = table.filter(table["model"] == model).pareto(f"{phase}-latency")
            if len(f) > per:
                f = f.filter(np.unique(np.linspace(0, len(f) - 1, per).round().astype(int)))
            parts.append(f)
        rows = SweepTable.concat(parts) if parts else table
    elif len(rows) > max_bars:
        rows = rows.filter(np.unique(np.linspace(0, len(rows) - 1, max_bars).round().astype(int)))
    if not len(rows):
        ax.text(0.5, 0.5, "no feasible configuration", ha="center", transform=ax.transAxes)
        return ax
    tokens = rows["batch"] * (rows["prompt_len"] if phase == "prefill" else rows["output_len"])
    total = rows[f"{phase}_energy_j"]
    # the breakdown is that of sequential execution; overlapped rows: shares of their sequential energy
    seq_total = total + rows[f"{phase}_overlap_saved_j"] if f"{phase}_overlap_saved_j" in rows else total
    bottom = np.zeros(len(rows))
    pos = np.arange(len(rows))
    for (col, label), colour in zip(BREAKDOWN_LABELS, BREAKDOWN_COLOURS, strict=True):
        v = 100.0 * rows[f"{phase}_{col}"] / seq_total
        ax.bar(pos, v, bottom=bottom, color=colour, label=label, width=0.7)
        bottom = bottom + v
    for i, jt in enumerate(total / tokens):
        ax.text(i, 101, f"{jt:.3g} J", ha="center", va="bottom", fontsize=6.5)
    ax.set_ylim(0, 140)
    ax.set_yticks(np.arange(0, 101, 20))
    ax.set_xticks(pos)
    many = len(set(rows["model"].tolist())) > 1
    ax.set_xticklabels([(f"{r['model']}: " if many else "") + _label(r) for r in rows.rows()], rotation=45,
                       ha="right", fontsize=6.5 if many else 7)
    ax.set_ylabel(f"share of {phase} energy (%)")
    ax.set_title(f"{phase} energy breakdown on the front (J per token above the bars)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", ncol=3, framealpha=0.9)
    return ax


def plot_energy_vs_batch(table: SweepTable, phase: str = "decode", ax=None, *, max_lines: int = 8):
    """Energy per token vs batch, one line per layout (the layouts reaching the lowest energy, per
    model), at the median prompt/output length, over configurations that fit in memory."""
    if phase not in ("prefill", "decode"):
        raise SpecError("phase", phase, "prefill or decode")
    ax = ax or plt.figure(figsize=(6, 4.5)).gca()
    t = table.filter(table["fits"]) if len(table) else table
    if phase == "decode" and len(t):
        t = t.filter(t["output_len"] > 0)
    if not len(t):
        ax.text(0.5, 0.5, "no configuration fits", ha="center", transform=ax.transAxes)
        return ax
    p = np.median(t["prompt_len"])
    p = t["prompt_len"][np.argmin(np.abs(t["prompt_len"] - p))]
    o = np.median(t["output_len"])
    o = t["output_len"][np.argmin(np.abs(t["output_len"] - o))]
    t = t.filter((t["prompt_len"] == p) & (t["output_len"] == o))
    y = f"{phase}_energy_per_token_j"
    models = _models(t)
    per = max(max_lines // len(models), 1)
    styles = ("-", "--", ":", "-.")
    for mi, model in enumerate(models):
        sub = t.filter(t["model"] == model)
        ov = ("overlap_comm_sms", "overlap_chunks") if "overlap_comm_sms" in sub else ()
        keys = np.stack([sub[c] for c in ("tp", "pp", "dp", "ep", *ov)], axis=1)
        layouts, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        best = np.array([sub[y][inverse == i].min() for i in range(len(layouts))])  # per layout
        for li, i in enumerate(np.argsort(best)[:per]):
            sel = inverse == i
            order = np.argsort(sub["batch"][sel])
            tp, pp, dp, ep = layouts[i][:4]
            name = f"tp{tp} pp{pp} dp{dp}" + (f" ep{ep}" if ep > 1 else "")
            if ov and layouts[i][4] > 0:
                name += f" ov{layouts[i][4]}x{layouts[i][5]}"
            kw = ({"color": MODEL_COLOURS[mi % len(MODEL_COLOURS)], "ls": styles[li % len(styles)]}
                  if len(models) > 1 else {})
            ax.plot(sub["batch"][sel][order], sub[y][sel][order], marker="o", ms=3,
                    label=(f"{model} " if len(models) > 1 else "") + name, **kw)
    _log_axes(ax, xbase=2)
    ax.set_xlabel("batch (sequences)")
    ax.set_ylabel(AXIS_LABELS.get(y, y))
    ax.set_title(f"{phase} energy vs batch (prompt {p}, output {o}; fitting configs)", fontsize=10)
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7)
    return ax


def sweep_figure(table: SweepTable, path: str | Path | None = None, *, title: str | None = None,
                 fronts: tuple[str, str] = ("prefill-latency", "decode-latency"), prompt_len: int | None = None,
                 output_len: int | None = None):
    """Four panels for one workload (default: median prompt/output length): two Pareto fronts, the
    decode energy breakdown on its front, decode energy vs batch."""
    t, p, o = select_workload(table, prompt_len, output_len)
    fig, axes = plt.subplots(2, 2, figsize=(13, 10))
    plot_pareto(t, fronts[0], axes[0, 0])
    plot_pareto(t, fronts[1], axes[0, 1])
    plot_breakdown(t, "decode", axes[1, 0])
    plot_energy_vs_batch(t, "decode", axes[1, 1])
    head = title or "energylens sweep"
    fig.suptitle(f"{head}\nworkload: prompt {p} tokens, output {o} tokens")
    fig.tight_layout()
    if path is not None:
        p_ = Path(path)
        if p_.suffix.lower() not in (".png", ".pdf", ".svg"):
            raise SpecError("plot", str(path), "a path ending in .png, .pdf or .svg")
        p_.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p_, dpi=110)
        plt.close(fig)
    return fig
