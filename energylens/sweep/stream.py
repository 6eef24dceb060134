"""Sweeps in bounded memory: chunks streamed to a file, running Pareto fronts, spreads and top-k.

``run_sweep`` returns the whole table, so its memory grows with the grid (about 0.5 KB per valid
row, twice that while chunks are joined). ``stream_sweep`` evaluates the same chunks
(``engine.plan_chunks``, in canonical row order) one at a time and, for each one,

* appends its rows to ``out`` (a ``.csv`` file, or a ``.parquet`` file with one row group per chunk;
  Parquet needs the optional ``pyarrow``) unless only the fronts are wanted,
* folds it into running Pareto fronts (``front(A + B) = front(front(A) + front(B))``), running
  min/max spreads and a running top-k, then drops it.

Peak memory is one chunk's evaluation (``DEFAULT_CHUNK_CONFIGS`` configurations, a few hundred MB)
plus the fronts (and chunk fronts waiting to be merged, up to ``FRONT_BATCH_FACTOR`` times the running front's
rows or ``FRONT_BATCH_ROWS``), whatever the grid size. The fronts and spreads equal ``run_sweep(spec).pareto(...)``
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
from energylens.sweep.table import SweepTable, front_columns, group_codes, group_ids

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
        cols = t.columns
        self.writer.writerows(zip(*(cols[k].tolist() for k in self.names), strict=True))

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
    fronts_merged: dict[str, SweepTable] = field(default_factory=dict)
    fronts_pending: dict[str, list[SweepTable]] = field(default_factory=dict)  # chunk fronts not merged yet
    spread_tables: dict[str, _Spread] = field(default_factory=dict)
    top: SweepTable | None = None
    valid_configs: int = 0
    feasible_configs: int = 0

    @property
    def front_tables(self) -> dict[str, SweepTable]:
        """The running fronts by key (pending chunk fronts merged in first)."""
        for key in list(self.fronts_pending):
            self._merge_front(key)
        return self.fronts_merged

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
            s.fronts_merged[_front_key(name, by)] = t.pareto(name, by=by)
        for column, by in self.spreads:
            s.spread_tables[_spread_key(column, by)] = _Spread.of(t, column, by)
        if self.top_k:  # rows whose value is 0 (no tokens in the phase) are left out, as in spread()
            rows = np.flatnonzero(t["feasible"] & (t[self.top_by] > 0))
            if len(rows):
                s.top = _smallest(t, self.top_by, self.top_k, rows)
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
            pending = self.fronts_pending.setdefault(key, [])
            pending.append(new)
            # chunk fronts wait until they hold twice as many rows as the running front (FRONT_BATCH_FACTOR; at
            # least FRONT_BATCH_ROWS), then join it in one pass: front(A + B + C) = front(front(A) + front(B) +
            # front(C)), and the running front (every workload's) is not re-sorted for each chunk
            if sum(len(t) for t in pending) >= max(FRONT_BATCH_FACTOR * len(self.fronts_merged.get(key, ())),
                                                   FRONT_BATCH_ROWS):
                self._merge_front(key)
        for column, by in self.spreads:
            key = _spread_key(column, by)
            new = other.spread_tables.get(key)
            if new is not None:
                old = self.spread_tables.get(key)
                self.spread_tables[key] = new if old is None else old.merge(new)
        if other.top is not None and len(other.top):
            both = other.top if self.top is None else SweepTable.concat([self.top, other.top])
            self.top = _smallest(both, self.top_by, self.top_k)

    def _merge_front(self, key: str) -> None:
        name, by = next((n, b) for n, b in self.fronts if _front_key(n, b) == key)
        old = self.fronts_merged.get(key)
        tables = ([old] if old is not None and len(old) else []) + self.fronts_pending.pop(key, [])
        if tables:
            self.fronts_merged[key] = _merged_front(tables, name, by)

    def front(self, name: str, by: Sequence[str] | None = None) -> SweepTable:
        return self.front_tables.get(_front_key(name, by), SweepTable({}))

    def spread(self, column: str, by: Sequence[str] | str | None = "model") -> dict:
        """As ``SweepTable.spread(column, by=by, rows=False)`` over every row seen."""
        acc = self.spread_tables.get(_spread_key(column, by))
        return {} if acc is None else acc.to_dict()


@dataclass
class _Spread:
    """Running min, max and row count of a column per group of ``by`` values, groups in order of first
    appearance; kept as arrays, so a chunk with tens of thousands of workloads folds in without a Python
    loop over them (``to_dict`` gives ``SweepTable.spread``'s form)."""

    by: tuple[str, ...] | None  # None: one group of all rows; a str ``by`` is a 1-tuple with ``single``
    single: bool
    keys: list[np.ndarray]
    vmin: np.ndarray
    vmax: np.ndarray
    rows: np.ndarray

    @classmethod
    def of(cls, t: SweepTable, column: str, by) -> _Spread:
        cols = (by,) if isinstance(by, str) else (tuple(by) if by else None)
        keep = t[column] > 0
        if "feasible" in t:
            keep &= t["feasible"]
        sel = np.flatnonzero(keep)
        v = t[column][sel]
        gid = group_ids(t, cols, sel)[0] if cols else np.zeros(len(sel), dtype=np.int64)
        return cls._reduce(cols, len(cols or ()) == 1, [t[c][sel] for c in cols or ()], v, v,
                           np.ones(len(sel), dtype=np.int64), gid)

    @classmethod
    def _reduce(cls, by, single, keys, vmin, vmax, rows, gid) -> _Spread:
        order = np.argsort(gid, kind="stable")
        g = gid[order]
        starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]])) if len(g) else np.zeros(0, np.intp)
        first = order[starts]  # each group's first row (the sort is stable)
        if len(g):
            vmin = np.minimum.reduceat(vmin[order], starts)
            vmax = np.maximum.reduceat(vmax[order], starts)
            rows = np.add.reduceat(rows[order], starts)
        by_first = np.argsort(first, kind="stable")
        return cls(by, single, [k[first[by_first]] for k in keys], vmin[by_first], vmax[by_first], rows[by_first])

    def merge(self, other: _Spread) -> _Spread:
        """This spread with ``other`` (of later rows) folded in."""
        keys = [np.concatenate([a, b]) for a, b in zip(self.keys, other.keys, strict=True)]
        n = len(self.vmin) + len(other.vmin)
        gid = group_codes(keys, n)[0] if self.by else np.zeros(n, dtype=np.int64)
        return self._reduce(self.by, self.single, keys, np.concatenate([self.vmin, other.vmin]),
                            np.concatenate([self.vmax, other.vmax]), np.concatenate([self.rows, other.rows]), gid)

    def to_dict(self) -> dict:
        vmin, vmax, rows = self.vmin.tolist(), self.vmax.tolist(), self.rows.tolist()
        if self.by:
            keys = list(zip(*(k.tolist() for k in self.keys), strict=True))
            keys = [k[0] for k in keys] if self.single else keys
        else:
            keys = ["all"] * len(vmin)
        return {key: {"min": vmin[n], "max": vmax[n], "spread": vmax[n] / vmin[n], "rows": int(rows[n])}
                for n, key in enumerate(keys)}


FRONT_BATCH_FACTOR = 2.0  # chunk-front rows that may wait, per row of the running front (measured on a 7.7 M
# slice of the 95 M grid, 36 chunks, 204 k-row front: 1 -> 9.2-9.9 s CPU, 581 MB; 2 -> 8.6-9.3 s, 602 MB; 3 -> 8.5 s,
# 745 MB)
FRONT_BATCH_ROWS = 250_000  # chunk-front rows that may wait to be merged (about one chunk's worth of memory)
FRONT_KEY_COLUMNS = ("feasible", "output_len", "num_gpus", "overlap_chunks", "overlap_comm_sms")


def _merged_front(tables: list[SweepTable], name: str, by) -> SweepTable:
    """``SweepTable.concat(tables).pareto(name, by=by, feasible_only=False)``, with only the columns the front
    reads joined until the surviving rows are known (a running front holds every workload's front: joining
    all its columns for every chunk would cost more than the chunk)."""
    if len(tables) == 1:
        return tables[0].pareto(name, by=by, feasible_only=False)
    x, y, _ = front_columns(name, None, None, None)
    first = tables[0].names
    need = [c for c in dict.fromkeys([x, y, *(by or ()), *FRONT_KEY_COLUMNS]) if c in tables[0]]
    keys = SweepTable({c: np.concatenate([t[c] for t in tables]) for c in need})
    idx = keys.pareto(name, by=by, feasible_only=False, index=True)
    starts = np.cumsum([0] + [len(t) for t in tables])
    src = np.searchsorted(starts, idx, side="right") - 1  # the table each surviving row comes from
    parts = [(pos, idx[pos] - starts[j]) for j in range(len(tables)) for pos in [np.flatnonzero(src == j)]]
    cols = {}
    for c in first:
        out = np.empty(len(idx), dtype=np.result_type(*(t[c] for t in tables)))
        for (pos, rows), t in zip(parts, tables, strict=True):
            out[pos] = t[c][rows]
        cols[c] = out
    return SweepTable(cols, dict(tables[0].meta))


def _front_key(name: str, by) -> str:
    front_columns(name, None, None, None)  # unknown names fail here, before any work
    return name + ("" if not by else "@" + ",".join(by))


def _spread_key(column: str, by) -> str:
    cols = [by] if isinstance(by, str) else list(by or ())
    return column + "@" + ",".join(cols)


def _smallest(t: SweepTable, column: str, k: int, rows: np.ndarray | None = None) -> SweepTable:
    """The ``k`` rows (of ``rows``, default all) with the smallest ``column`` (ties: the earlier row), sorted."""
    rows = np.arange(len(t)) if rows is None else rows
    v = t[column][rows]
    if len(rows) > k:
        cut = np.partition(v, k - 1)[k - 1]
        near = np.flatnonzero(v <= cut)
        rows, v = rows[near], v[near]
    return t.filter(rows[np.argsort(v, kind="stable")[:k]])


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
