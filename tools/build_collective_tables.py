"""Rebuild energylens/data/hardware/collectives/<gpu>.csv from the read-only reference files.

Usage::

    python tools/build_collective_tables.py [--reference /work/shared/reference] [--out energylens/data/hardware/collectives]

Inputs (see energylens/data/hardware/collectives/SOURCE.md):

* ``hardware/hardware_notes.md`` §5.1: AIConfigurator nccl-tests tables (all_reduce, all_gather,
  reduce_scatter, alltoall at 2/4/8 GPUs, 1 KiB - 512 MiB) for A100-SXM4-80GB, H100-SXM, H200-SXM, B200.
* ``hardware/hardware_notes.md`` §5.2 / §5.5: stas00 single-node 8-GPU all-reduce long sweeps; only the sizes
  above 512 MiB are kept (below that the nccl-tests rows are preferred).
* ``vidur-profiling/network_collectives_loggrid.csv``: send_recv between 2 GPUs of one node (h100_dgx, a100_dgx).

Every output row has one source. No (collective, group_size, message_bytes) appears twice.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

from energylens.cost.collectives import bus_factor as cost_bus_factor

UNITS = {"K": 2**10, "M": 2**20, "G": 2**30}
AIC_COMMIT = "repo:ai-dynamo/aiconfigurator@095f58a5:aic-core/src/aiconfigurator_core/systems/data"
AIC_TABLES = {  # heading prefix in hardware_notes.md §5.1 -> (gpu key, aiconfigurator system dir, NCCL version)
    "**A100-SXM4-80GB, NCCL 2.27.3**": ("a100-sxm-80gb", "a100_sxm", "2.27.3"),
    "**H100-SXM-80GB, NCCL 2.29.2**": ("h100-sxm", "h100_sxm", "2.29.2"),
    "**H200-SXM, NCCL 2.29.2**": ("h200", "h200_sxm", "2.29.2"),
    "**B200, NCCL 2.29.2**": ("b200", "b200_sxm", "2.29.2"),
}
NAME = {"alltoall": "all_to_all"}
VIDUR = {"h100_dgx": "h100-sxm", "a100_dgx": "a100-sxm-80gb"}
VIDUR_SRC = (
    "repo:microsoft/vidur@7d47513:data/profiling/network/{}/send_recv.csv "
    "(extract: /work/shared/reference/vidur-profiling/network_collectives_loggrid.csv; kineto NCCL kernel time, median)"
)
STAS00 = "repo:stas00/ml-engineering@744d01e1:network/README.md"
COLUMNS = ["collective", "group_size", "message_bytes", "latency_s", "busbw_bytes_per_s", "source"]


def bus_factor(kind: str, p: int) -> float:
    return float(cost_bus_factor(kind, p))  # the one definition: energylens.cost.collectives.bus_factor


def size_bytes(token: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG])", token.strip())
    if not m:
        raise ValueError(f"unrecognised size {token!r}")
    return int(m.group(1)) * UNITS[m.group(2)]


def row(kind: str, p: int, n: int, t: float, source: str) -> dict:
    return {
        "collective": kind,
        "group_size": p,
        "message_bytes": n,
        "latency_s": f"{t:.6g}",
        "busbw_bytes_per_s": f"{bus_factor(kind, p) * n / t:.6g}",
        "source": source,
    }


def table_lines(lines: list[str], start: int) -> list[list[str]]:
    """The markdown table rows (split cells) that follow line ``start``."""
    out, i = [], start + 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    while i < len(lines) and lines[i].startswith("|"):
        out.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    return out


def aic_rows(lines: list[str]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for i, line in enumerate(lines):
        for head, (key, sysdir, ver) in AIC_TABLES.items():
            if not line.startswith(head):
                continue
            tab = table_lines(lines, i)
            sizes = [size_bytes(s) for s in tab[0][2:]]
            src = f"{AIC_COMMIT}/{sysdir}/comm/nccl/{ver}/nccl_perf.parquet (nccl-tests fp16, via hardware_notes.md §5.1)"
            for cells in tab[2:]:
                kind, p = NAME.get(cells[0], cells[0]), int(cells[1])
                for n, cell in zip(sizes, cells[2:], strict=True):
                    t_us = float(cell.split("/")[0])
                    rows.setdefault(key, []).append(row(kind, p, n, t_us * 1e-6, src))
    return rows


def stas00_rows(lines: list[str], text: str) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    big = 512 * 2**20
    for i, line in enumerate(lines):
        if line.startswith("8xA100 (NVLink3, nccl-tests all_reduce_perf"):
            tab = table_lines(lines, i)
            sizes = [size_bytes(s) for s in tab[0][1:]]
            times = next(r for r in tab if r[0] == "time us")[1:]
            for n, t in zip(sizes, times, strict=True):
                if n > big:
                    rows.setdefault("a100-sxm-80gb", []).append(
                        row(
                            "all_reduce",
                            8,
                            n,
                            float(t) * 1e-6,
                            f"{STAS00} (8xA100 nccl-tests all_reduce_perf, ring; via hardware_notes.md §5.2)",
                        )
                    )
        if line.startswith("8xH200 (NVLink4, `all_reduce_bench.py`"):
            tab = table_lines(lines, i)
            sizes = [size_bytes(s) for s in tab[0][1:]]
            busbw = next(r for r in tab if r[0] == "busbw")[1:]
            for n, b in zip(sizes, busbw, strict=True):
                if n > big:
                    t = bus_factor("all_reduce", 8) * n / (float(b) * 1e9)
                    rows.setdefault("h200", []).append(
                        row(
                            "all_reduce",
                            8,
                            n,
                            t,
                            f"{STAS00} (8xH200 all_reduce_bench.py, NCCL 2.27.7, NVLS; busbw measured, latency derived = "
                            "bus_factor x bytes / busbw; via hardware_notes.md §5.2)",
                        )
                    )
    m = re.search(r"B200, 1 node vs 4 nodes, all-reduce busbw GB/s \(stas00\):(.*?)\.\n", text, re.S)
    if m:
        for tok, one, _four in re.findall(r"(\d+[KMG]) ([\d.]+) / ([\d.]+)", m.group(1)):
            n = size_bytes(tok)
            if n > big:
                t = bus_factor("all_reduce", 8) * n / (float(one) * 1e9)
                rows.setdefault("b200", []).append(
                    row(
                        "all_reduce",
                        8,
                        n,
                        t,
                        f"{STAS00} (P6-B200 single node, 8 GPUs; busbw measured, latency derived = bus_factor x bytes / busbw; "
                        "via hardware_notes.md §5.5)",
                    )
                )
    return rows


def vidur_rows(path: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    seen = set()
    with path.open() as fh:
        for r in csv.DictReader(fh):
            key = VIDUR.get(r["system"])
            if key is None or r["collective"] != "send_recv":
                continue
            if int(r["num_workers"]) != 2 or int(r["devices_per_node"]) != 2:  # intra-node pairs only
                continue
            n = int(r["size_bytes"])
            if (key, n) in seen:
                continue
            seen.add((key, n))
            rows.setdefault(key, []).append(
                row("send_recv", 2, n, float(r["time_ms_median"]) * 1e-3, VIDUR_SRC.format(r["system"]))
            )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default="/work/shared/reference")
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parents[1] / "energylens/data/hardware/collectives")
    )
    args = ap.parse_args()
    ref = Path(args.reference)
    text = (ref / "hardware/hardware_notes.md").read_text()
    lines = text.splitlines()
    merged: dict[str, list[dict]] = {}
    for part in (
        aic_rows(lines),
        stas00_rows(lines, text),
        vidur_rows(ref / "vidur-profiling/network_collectives_loggrid.csv"),
    ):
        for key, rows in part.items():
            merged.setdefault(key, []).extend(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = {"all_reduce": 0, "all_gather": 1, "reduce_scatter": 2, "all_to_all": 3, "send_recv": 4}
    for key, rows in sorted(merged.items()):
        ids = [(r["collective"], r["group_size"], r["message_bytes"]) for r in rows]
        if len(ids) != len(set(ids)):
            raise SystemExit(f"{key}: duplicate (collective, group_size, message_bytes) rows")
        rows.sort(key=lambda r: (order[r["collective"]], r["group_size"], r["message_bytes"]))
        with (out / f"{key}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        print(f"{key}: {len(rows)} rows")


if __name__ == "__main__":
    main()
