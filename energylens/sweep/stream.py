"""Sweeps in bounded memory: chunks streamed to a file, running Pareto fronts, spreads and top-k.

``run_sweep`` returns the whole table, so its memory grows with the grid (about 0.5 KB per valid
row, twice that while chunks are joined). ``stream_sweep`` evaluates the same chunks
(``engine.plan_chunks``, in canonical row order) one at a time and, for each one,

* appends its rows to ``out`` (a ``.csv`` file, or a ``.parquet`` file with one row group per chunk;
  Parquet needs the optional ``pyarrow``) unless only the fronts are wanted,
* folds it into running Pareto fronts (``front(A + B) = front(front(A) + front(B))``), running
  min/max spreads and a running top-k, then drops it.

Peak memory is one chunk's evaluation (``DEFAULT_CHUNK_CONFIGS`` configurations, a few hundred MB)
plus the fronts, whatever the grid size. The fronts and spreads equal ``run_sweep(spec).pareto(...)``
and ``.spread(...)`` row for row (tests/sweep/test_stream.py).

>>> res = stream_sweep(spec, out="grid.parquet", fronts=[("decode-latency", ("prompt_len",))])  # doctest: +SKIP
>>> res.fronts["decode-latency"].rows(3)                                                         # doctest: +SKIP
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from energylens.errors import EnergyLensError, SpecError
from energylens.sweep.guard import check_size
from energylens.sweep.runner import DEFAULT_CHUNK_CONFIGS, evaluate_chunk, plan_chunks
from energylens.sweep.spec import SweepSpec
from energylens.sweep.table import SweepTable, front_columns

FrontSpec = tuple[str, Sequence[str] | None]  # (front name, group-by columns or None)
SpreadSpec = tuple[str, Sequence[str] | str | None]  # (column, group-by)


# ---------------------------------------------------------------------------------- writers


class _CsvSink:
    def __init__(self, path: Path) -> None:
        self.fh = path.open("w", newline="")
        self.writer = csv.writer(self.fh)
        self.names: list[str] | None = None

    def write(self, t: SweepTable) -> None:
        if self.names is None:
            self.names = t.names
            self.writer.writerow(self.names)
        self.writer.writerows(zip(*(t.columns[k].tolist() for k in self.names), strict=True))

    def close(self) -> None:
        self.fh.close()


class _ParquetSink:
    def __init__(self, path: Path) -> None:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise EnergyLensError("format", "parquet",
                                  "pyarrow must be installed to write Parquet (pip install pyarrow); "
                                  "write CSV instead (a .csv path)") from exc
        self.pa, self.pq, self.path = pa, pq, path
        self.writer = None

    def write(self, t: SweepTable) -> None:
        table = self.pa.table({k: (v.astype(str) if v.dtype == object else v) for k, v in t.columns.items()})
        if self.writer is None:
            self.writer = self.pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table, row_group_size=len(t))  # one row group per chunk

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_sink(path: str | Path):
    """A writer for ``path`` by its suffix (``.csv`` or ``.parquet``/``.pq``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SpecError("out", str(path), "a path ending in .csv or .parquet")
    p.parent.mkdir(parents=True, exist_ok=True)
    return _CsvSink(p) if suffix == ".csv" else _ParquetSink(p)


# ---------------------------------------------------------------------------------- running summaries


@dataclass
class Summary:
    """Running Pareto fronts, spreads, top-k and row counts over the chunks seen so far."""

    fronts: Sequence[FrontSpec] = ()
    spreads: Sequence[SpreadSpec] = ()
    top_k: int = 0
    top_by: str = "energy_per_output_token_j"
    front_tables: dict[str, SweepTable] = field(default_factory=dict)
    spread_tables: dict[str, dict] = field(default_factory=dict)
    top: SweepTable | None = None
    valid_configs: int = 0
    feasible_configs: int = 0

    def chunk_summary(self, t: SweepTable) -> Summary:
        """This summary's shape, over one chunk only (what a worker sends back)."""
        s = Summary(self.fronts, self.spreads, self.top_k, self.top_by)
        s.add_table(t)
        return s

    def add_table(self, t: SweepTable) -> None:
        if not len(t):
            return
        self.merge(self._of(t))

    def _of(self, t: SweepTable) -> Summary:
        s = Summary(self.fronts, self.spreads, self.top_k, self.top_by)
        s.valid_configs = len(t)
        s.feasible_configs = int(np.count_nonzero(t["feasible"]))
        for name, by in self.fronts:
            s.front_tables[_front_key(name, by)] = t.pareto(name, by=by)
        for column, by in self.spreads:
            s.spread_tables[_spread_key(column, by)] = t.spread(column, by=by, rows=False)
        if self.top_k:
            f = t.feasible()
            if len(f):  # rows whose value is 0 (no tokens in the phase) are left out, as in spread()
                s.top = _smallest(f.filter(f[self.top_by] > 0), self.top_by, self.top_k)
        return s

    def merge(self, other: Summary) -> None:
        """Fold another summary (of later rows) into this one."""
        self.valid_configs += other.valid_configs
        self.feasible_configs += other.feasible_configs
        for name, by in self.fronts:
            key = _front_key(name, by)
            new = other.front_tables.get(key)
            if new is None or not len(new):
                continue
            old = self.front_tables.get(key)
            both = new if old is None or not len(old) else SweepTable.concat([old, new])
            self.front_tables[key] = both.pareto(name, by=by, feasible_only=False)
        for column, by in self.spreads:
            key = _spread_key(column, by)
            acc = self.spread_tables.setdefault(key, {})
            for k, v in other.spread_tables.get(key, {}).items():
                if k not in acc:
                    acc[k] = dict(v)
                    continue
                a = acc[k]
                a["min"] = min(a["min"], v["min"])
                a["max"] = max(a["max"], v["max"])
                a["rows"] += v["rows"]
                a["spread"] = a["max"] / a["min"]
        if other.top is not None and len(other.top):
            both = other.top if self.top is None else SweepTable.concat([self.top, other.top])
            self.top = _smallest(both, self.top_by, self.top_k)

    def front(self, name: str, by: Sequence[str] | None = None) -> SweepTable:
        return self.front_tables.get(_front_key(name, by), SweepTable({}))

    def spread(self, column: str, by: Sequence[str] | str | None = "model") -> dict:
        return self.spread_tables.get(_spread_key(column, by), {})


def _front_key(name: str, by) -> str:
    front_columns(name, None, None, None)  # unknown names fail here, before any work
    return name + ("" if not by else "@" + ",".join(by))


def _spread_key(column: str, by) -> str:
    cols = [by] if isinstance(by, str) else list(by or ())
    return column + "@" + ",".join(cols)


def _smallest(t: SweepTable, column: str, k: int) -> SweepTable:
    """The ``k`` rows with the smallest ``column`` (ties: the earlier row), sorted."""
    if len(t) > k:
        v = t[column]
        cut = np.partition(v, k - 1)[k - 1]
        t = t.filter(np.flatnonzero(v <= cut))
    order = np.argsort(t[column], kind="stable")[:k]
    return t.filter(order)


# ---------------------------------------------------------------------------------- the stream


@dataclass
class StreamResult:
    summary: Summary
    meta: dict
    table: SweepTable | None = None  # only with keep_table=True

    @property
    def fronts(self) -> dict[str, SweepTable]:
        return self.summary.front_tables


def stream_sweep(spec: SweepSpec, *, out: str | Path | None = None, write_all: bool = False,
                 fronts: Sequence[FrontSpec] = (("decode-latency", None),),
                 spreads: Sequence[SpreadSpec] = (), top_k: int = 0,
                 top_by: str = "energy_per_output_token_j", keep_table: bool = False,
                 max_chunk_configs: int = DEFAULT_CHUNK_CONFIGS,
                 progress: Callable[[int, int], None] | None = None) -> StreamResult:
    """Evaluate ``spec`` chunk by chunk; write rows to ``out`` (feasible rows, or all valid rows with
    ``write_all``), keep running fronts/spreads/top-k. ``keep_table`` also returns the whole table
    (refused up front when it would not fit in memory, ``sweep.guard``). Groups that cannot run are skipped as in ``run_sweep``."""
    if keep_table:
        check_size(spec)
    summary = Summary(tuple(fronts), tuple(spreads), int(top_k), top_by)
    for name, by in summary.fronts:
        _front_key(name, by)
    t0 = time.perf_counter()
    chunks = plan_chunks(spec, max_chunk_configs)
    sink = open_sink(out) if out is not None else None
    kept: list[SweepTable] = []
    skipped: list[str] = []
    errors: list[EnergyLensError] = []
    try:
        for i, chunk in enumerate(chunks):
            try:
                t = evaluate_chunk(chunk)
            except EnergyLensError as exc:
                if len(spec.models) * len(spec.gpus) * len(spec.dtypes) == 1:
                    raise
                errors.append(exc)
                msg = f"{chunk.models[0]} on {chunk.gpus[0]} ({chunk.dtypes[0] or 'default dtype'}): {exc}"
                if msg not in skipped:
                    skipped.append(msg)
                t = SweepTable({})
            if len(t):
                summary.add_table(t)
                if sink is not None:
                    rows = t if write_all else t.feasible()
                    if len(rows):
                        sink.write(rows)
                if keep_table:
                    kept.append(t)
            del t
            if progress is not None:
                progress(i + 1, len(chunks))
    finally:
        if sink is not None:
            sink.close()
    if errors and not summary.valid_configs and len(errors) == len(chunks):
        raise errors[0]
    meta = {"spec": spec.to_dict(), "skipped": skipped, "chunks": len(chunks), "grid_configs": spec.size,
            "valid_configs": summary.valid_configs, "feasible_configs": summary.feasible_configs,
            "out": None if out is None else str(out), "elapsed_s": time.perf_counter() - t0}
    table = SweepTable.concat(kept, meta) if keep_table else None
    return StreamResult(summary, meta, table)
