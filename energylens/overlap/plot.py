"""Energy-vs-latency plot of an SM-allocation sweep: every allocation, the Pareto front, the baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from energylens.overlap.search import OverlapSweep

MARKERS = {1: "o", 2: "s", 4: "^", 8: "D", 16: "v", 32: "P", 64: "X"}


def plot_sweep(sweep: OverlapSweep, path: str | Path, *, title: str | None = None) -> Path:
    """Write a PNG (or any format matplotlib knows from the suffix) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lat_ms = sweep.latency_s * 1e3
    en = sweep.energy_j
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.6), dpi=130, gridspec_kw={"width_ratios": [1, 1.15]})
    rows = np.arange(1, len(lat_ms))
    ks = sweep.comm_sms[rows]
    norm = matplotlib.colors.Normalize(vmin=max(1, ks.min()) if len(ks) else 1, vmax=ks.max() if len(ks) else 1)
    cmap = matplotlib.colormaps["viridis"]
    front = sweep.pareto_indices()
    chunk_set = sorted(set(sweep.chunks[rows].tolist()))
    # zoom window: the baseline and the front, with a margin
    focus = np.concatenate([front, [0]])
    x0, x1 = lat_ms[focus].min(), lat_ms[focus].max()
    y0, y1 = en[focus].min(), en[focus].max()
    dx, dy = max(x1 - x0, 0.02 * x1), max(y1 - y0, 0.02 * y1)
    zoom = (x0 - 0.35 * dx, x1 + 0.6 * dx, y0 - 0.35 * dy, y1 + 0.8 * dy)
    for ax, zoomed in ((axes[0], False), (axes[1], True)):
        for c in chunk_set:
            sel = rows[sweep.chunks[rows] == c]
            ax.scatter(lat_ms[sel], en[sel], c=cmap(norm(sweep.comm_sms[sel])), marker=MARKERS.get(int(c), "o"), s=36,
                       edgecolors="none", alpha=0.85, zorder=2)
        ax.plot(lat_ms[front], en[front], "-", color="crimson", lw=1.2, zorder=3)
        ax.scatter(lat_ms[front], en[front], s=130, facecolors="none", edgecolors="crimson", lw=1.6, zorder=4)
        ax.scatter([lat_ms[0]], [en[0]], marker="*", s=260, color="black", zorder=5)
        ax.set_xlabel(f"{sweep.phase} latency (ms)")
        ax.set_ylabel(f"{sweep.phase} energy, all GPUs (J)")
        ax.grid(alpha=0.3)
        if zoomed:
            ax.set_xlim(zoom[0], zoom[1])
            ax.set_ylim(zoom[2], zoom[3])
            seen: set[tuple[int, int]] = set()
            for n, i in enumerate(front):
                key = (round(lat_ms[i], 3), round(en[i], 3))
                if i != 0 and key in seen:
                    continue
                seen.add(key)
                label = "baseline" if i == 0 else f"k={int(sweep.comm_sms[i])}, C={int(sweep.chunks[i])}"
                ax.annotate(label, (lat_ms[i], en[i]), textcoords="offset points",
                            xytext=(8, 10 if n % 2 == 0 else -14), fontsize=8, color="crimson")
            ax.set_title("zoom: baseline and Pareto front", fontsize=9)
        else:
            ax.set_title("all allocations", fontsize=9)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=axes[1], label="SMs given to communication (k)")
    handles = [Line2D([], [], marker=MARKERS.get(int(c), "o"), ls="", color="grey", label=f"C = {int(c)} chunk(s)")
               for c in chunk_set]
    handles += [Line2D([], [], marker="*", ls="", color="black", ms=13, label="sequential baseline (no overlap)"),
                Line2D([], [], marker="o", ls="-", color="crimson", mfc="none", ms=10, label="Pareto-optimal")]
    axes[0].legend(handles=handles, fontsize=8, loc="best")
    lay = sweep.layout
    wl = sweep.workload
    default = (f"{sweep.model} on {sweep.gpu}, tp={lay['tp']} pp={lay['pp']} dp={lay['dp']} ep={lay['ep']}"
               f"{' sp' if lay.get('sp') else ''}; {sweep.phase}, batch {wl['batch']} x {wl['prompt_len']} tokens; "
               f"overlap '{sweep.collective}' with its GEMM (k SMs to communication, C chunks)")
    fig.suptitle(title or default, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
