"""Columnar sweep results: one NumPy array per column, units in the column names.

``SweepTable`` is a thin wrapper around ``dict[str, np.ndarray]`` (all columns the same length).
Text columns (model, GPU, dtype) are object arrays that share one Python string per group, so a
million rows cost 8 bytes per row per text column. Conversions: ``to_records()`` (a NumPy
structured array), ``to_pandas()`` (if pandas is installed), ``to_csv(path)`` and
``to_parquet(path)`` (only if pyarrow is installed; otherwise a clear error).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from energylens.errors import EnergyLensError, SpecError
from energylens.pareto import pareto_mask_grouped, pareto_mask_rows

# Pareto fronts by name: (x column, y column, minimise x?, minimise y?).
FRONTS: dict[str, tuple[str, str, bool, bool]] = {
    "prefill-latency": ("ttft_s", "prefill_energy_per_token_j", True, True),
    "prefill-throughput": ("prefill_tokens_per_s", "prefill_energy_per_token_j", False, True),
    "prefill-gpus": ("num_gpus", "prefill_energy_per_token_j", True, True),
    "decode-latency": ("tpot_s", "decode_energy_per_token_j", True, True),
    "decode-throughput": ("decode_tokens_per_s", "decode_energy_per_token_j", False, True),
    "decode-gpus": ("num_gpus", "decode_energy_per_token_j", True, True),
    "request-latency": ("request_latency_s", "energy_per_output_token_j", True, True),
    "request-throughput": ("request_tokens_per_s", "energy_per_output_token_j", False, True),
    "request-gpus": ("num_gpus", "energy_per_output_token_j", True, True),
    "serving-latency": ("serve_itl_s", "serve_energy_per_output_token_j", True, True),
    "serving-throughput": ("serve_output_tokens_per_s", "serve_energy_per_output_token_j", False, True),
}


Source = Callable[[np.ndarray | None, Callable[[str], np.ndarray]], np.ndarray]
"""A lazy column: ``source(rows, get)`` gives the column's values at ``rows`` (None: every row); ``get(name)``
gives another column at the same rows (a derived column reads its inputs through it)."""


class SweepTable:
    """Columns of equal length; ``meta`` holds the spec, timings and skipped groups.

    A column is an array or a ``Source`` (see above) computed on first read: a sweep builds its ~65 columns
    as sources, and a reader that wants a Pareto front or a spread computes the few columns it reads. ``t[name]``
    computes the whole column once and keeps it; ``filter`` computes the kept rows only; ``columns`` (every
    column as an array, a ``dict``) and the writers compute the rest."""

    def __init__(self, columns: Mapping | None = None, meta: dict | None = None, *, length: int | None = None) -> None:
        self._data: dict = dict(columns or {})
        self.meta = {} if meta is None else meta
        lengths = {len(v) for v in self._data.values() if isinstance(v, np.ndarray)}
        if length is not None:
            lengths.add(int(length))
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        if self._data and not lengths:
            raise ValueError("a table of lazy columns needs its length")
        self._n = lengths.pop() if lengths else 0
        self.grid: tuple[int, int, int, int] | None = None  # see ``pareto``

    def __repr__(self) -> str:
        return f"SweepTable({len(self):,} rows x {len(self._data)} columns)"

    def __getstate__(self) -> dict:  # pickled (a Dask worker's table): every column as an array
        return {"_data": self.columns, "meta": self.meta, "_n": self._n, "grid": self.grid}

    # ------------------------------------------------------------------ access

    @property
    def columns(self) -> dict[str, np.ndarray]:
        """Every column as an array (lazy ones computed now), in column order."""
        for name, v in self._data.items():
            if not isinstance(v, np.ndarray):
                self[name]
        return self._data

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, name: str) -> np.ndarray:
        v = self._data.get(name)
        if v is None:
            raise SpecError("column", name, "one of " + ", ".join(self._data))
        if not isinstance(v, np.ndarray):
            v = _checked(name, v(None, self.__getitem__))
            self._data[name] = v
        return v

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Column ``name`` at ``rows`` (integer indices); a lazy column is computed at those rows only, unless they
        are a quarter of the table or more."""
        return self._at(rows)(name)

    def _at(self, rows: np.ndarray) -> Callable[[str], np.ndarray]:
        """A getter of columns at ``rows``, each computed once (derived columns share their inputs)."""
        return _RowGetter(self, rows)

    def single_text(self, name: str) -> bool:
        """Whether column ``name`` is text with one value in every row (remembered per table)."""
        memo = self.__dict__.setdefault("_single_text", {})
        if name not in memo:
            v = self._data.get(name)
            if isinstance(getattr(v, "value", None), str) and self._n:  # a lazy column of one text value
                memo[name] = True
            else:
                col = self[name]
                memo[name] = col.dtype == object and len(col) > 0 and bool(np.all(col == col[0]))
        return memo[name]

    def __contains__(self, name: str) -> bool:
        return name in self._data

    @property
    def names(self) -> list[str]:
        return list(self._data)

    def filter(self, mask) -> SweepTable:
        """Rows where ``mask`` is true (a boolean array or integer indices); lazy columns are computed at
        those rows only."""
        mask = np.asarray(mask)
        rows = np.flatnonzero(mask) if mask.dtype == bool else mask
        get = self._at(rows)
        return SweepTable({k: get(k) for k in self._data}, dict(self.meta), length=len(rows))

    def feasible(self) -> SweepTable:
        """Rows that meet every constraint of the spec (memory, SLOs, GPU budget)."""
        return self.filter(self["feasible"]) if len(self) else self

    def sort(self, by: str, *, descending: bool = False) -> SweepTable:
        order = np.argsort(self[by], kind="stable")
        return self.filter(order[::-1] if descending else order)

    def rows(self, limit: int | None = None) -> list[dict]:
        """Rows as plain dicts (Python scalars), the first ``limit`` of them."""
        n = len(self) if limit is None else min(limit, len(self))
        get = self._at(np.arange(n))
        cols = {k: get(k).tolist() for k in self._data}
        return [{k: cols[k][i] for k in cols} for i in range(n)]

    def row(self, i: int) -> dict:
        """Row ``i`` as a dict of Python scalars."""
        get = self._at(np.array([i]))
        return {k: get(k).tolist()[0] for k in self._data}

    @staticmethod
    def concat(tables: Iterable[SweepTable], meta: Mapping | None = None, order: np.ndarray | None = None
               ) -> SweepTable:
        """The tables' rows one after another (``order``: those rows, by position, in that order); lazy columns
        stay lazy (a column is joined when it is read)."""
        tables = [t for t in tables if t._data]
        meta = dict(meta or (tables[0].meta if tables else {}))
        if not tables:
            return SweepTable({}, meta)
        if len(tables) == 1 and order is None:  # the same columns
            out = SweepTable(tables[0]._data, meta, length=len(tables[0]))
            out.grid = tables[0].grid
            return out
        names = tables[0].names
        for t in tables[1:]:
            if t.names != names:
                raise ValueError("tables with different columns")
        starts = np.cumsum([0] + [len(t) for t in tables])

        def column(name: str) -> Source:
            def source(rows, get):
                sel = order if rows is None else (rows if order is None else order[rows])
                if sel is None:
                    return np.concatenate([t[name] for t in tables])
                part = np.searchsorted(starts, sel, side="right") - 1
                vals = [(pos, t.take(name, sel[pos] - starts[j]))
                        for j, t in enumerate(tables) for pos in [np.flatnonzero(part == j)]]
                out = np.empty(len(sel), dtype=np.result_type(*(v for _, v in vals)))
                for pos, v in vals:
                    out[pos] = v
                return out
            return source

        return SweepTable({k: column(k) for k in names}, meta, length=int(starts[-1]) if order is None else len(order))

    # ------------------------------------------------------------------ Pareto fronts

    def pareto(self, front: str = "decode-latency", *, x: str | None = None, y: str | None = None,
               minimize: Sequence[bool] | None = None, feasible_only: bool = True,
               by: Sequence[str] | None = None, index: bool = False) -> SweepTable | np.ndarray:
        """The non-dominated rows for a named front (``FRONTS``) or any two columns, sorted by x.

        Fronts are taken over feasible rows by default; rows with zero tokens in the phase
        (``output_len`` 0 for decode) are left out of decode and request fronts. ``by`` (e.g.
        ``("model", "prompt_len", "output_len")``) gives one front per group of those columns,
        concatenated in the order of the sorted group values (energy per token is only comparable
        between configurations serving the same requests); all groups are found in one vectorised
        pass. Among rows tied in both objectives only the one with the fewest GPUs is kept. ``index``: the
        front's row numbers instead of its table."""
        x, y, minimize = front_columns(front, x, y, minimize)
        keep = self["feasible"].copy() if (feasible_only and "feasible" in self) else np.ones(len(self), bool)
        if len(self) and (y.startswith(("decode", "energy_per_output", "serve")) or x.startswith(("tpot", "decode"))):
            keep &= self["output_len"] > 0
        sx, sy = (1.0 if minimize[0] else -1.0), (1.0 if minimize[1] else -1.0)
        on_grid = self._grid_axes(by)
        if on_grid is not None:  # groups of the same rows of a sweep grid: each group sorted on its own
            rows = np.flatnonzero(self._grid_mask(on_grid, self[x] * sx, self[y] * sy, keep))
        else:
            rows = np.flatnonzero(keep)  # only the columns the front needs are gathered until the end
        if not len(rows):
            return rows if index else self.filter(rows)
        gid = group_ids(self, by, rows)[0] if by else np.zeros(len(rows), dtype=np.int64)
        xv, yv = self[x][rows], self[y][rows]
        ox, oy = xv * sx, yv * sy
        if on_grid is not None:
            idx = np.arange(len(rows))
        else:
            idx = np.flatnonzero(pareto_mask_grouped(gid, np.column_stack([xv, yv]), list(minimize)))
        if "num_gpus" in self and len(idx) > 1:  # ties (same x and y): keep the fewest GPUs
            # (then the least overlap: a setting that changes nothing ties with sequential execution)
            ov = [self.take(c, rows[idx]) for c in ("overlap_chunks", "overlap_comm_sms") if c in self]
            idx = idx[np.lexsort((*_one_key([*ov, self.take("num_gpus", rows[idx])]), oy[idx], ox[idx], gid[idx]))]
            same = (gid[idx][1:] == gid[idx][:-1]) & (ox[idx][1:] == ox[idx][:-1]) & (oy[idx][1:] == oy[idx][:-1])
            idx = idx[np.concatenate([[True], ~same])]
        else:
            idx = idx[np.lexsort((oy[idx], ox[idx], gid[idx]))]
        return rows[idx] if index else self.filter(rows[idx])

    def _grid_axes(self, by) -> tuple[int, ...] | None:
        """With ``grid`` (a sweep block's rows: (valid layout and batch combinations, prompts, outputs, overlap
        settings), the last innermost, as ``sweep.runner`` lays them out), the grid axes that the ``by`` groups
        follow (prompt 1, output 2), or None where they do not follow grid axes."""
        if self.grid is None or not self._n:
            return None
        axes = {"prompt_len": 1, "output_len": 2}
        if any(c not in axes and not self.single_text(c) for c in by or ()):
            return None
        return tuple(sorted({axes[c] for c in by or () if c in axes}))

    def _grid_mask(self, group_axes: tuple[int, ...], ox: np.ndarray, oy: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """``pareto_mask_grouped`` over the rows ``keep`` holds, the groups given by grid axes: the grid's other
        axes are each group's members (one row per group in a 2-D array, sorted row by row)."""
        members = tuple(a for a in range(4) if a not in group_axes)
        perm = group_axes + members
        shape = tuple(self.grid[a] for a in perm)
        g = int(np.prod(shape[:len(group_axes)]))

        def rows_of(v):
            return np.where(keep, v, np.inf).reshape(self.grid).transpose(perm).reshape(g, -1)

        mask = pareto_mask_rows(rows_of(ox), rows_of(oy)).reshape(shape).transpose(np.argsort(perm)).reshape(-1)
        return mask & keep

    def spread(self, column: str, *, by: str | Sequence[str] | None = "model", feasible_only: bool = True,
               rows: bool = True) -> dict:
        """max/min of ``column`` (e.g. ``decode_energy_per_token_j``) over the rows, per value of
        ``by`` (a column or a tuple of columns; ``None`` = all rows), with the best and worst rows
        (``rows=False`` leaves them out: cheaper with many groups). Keys are the group values (a tuple
        when ``by`` is a tuple, ``"all"`` for ``None``), in order of first appearance. Rows whose
        value is 0 (a phase with no tokens) are left out."""
        if not len(self):
            return {}
        keep = self[column] > 0
        if feasible_only and "feasible" in self:
            keep &= self["feasible"]
        sel = np.flatnonzero(keep)
        if not len(sel):
            return {}
        cols = [by] if isinstance(by, str) else (list(by) if by else [])
        v = self[column][sel]
        gid, n_groups = group_ids(self, cols, sel) if cols else (np.zeros(len(sel), dtype=np.int64), 1)
        lo_order = np.lexsort((v, gid))  # stable: the first row of a tie wins, as argmin
        hi_order = np.lexsort((-v, gid))
        starts = np.flatnonzero(np.concatenate([[True], gid[lo_order][1:] != gid[lo_order][:-1]]))
        counts = np.diff(np.append(starts, len(sel)))
        lo, hi = lo_order[starts], hi_order[starts]
        first = np.full(n_groups, len(sel), dtype=np.int64)
        np.minimum.at(first, gid, np.arange(len(sel)))
        order = np.argsort(first[gid[lo]], kind="stable")
        lo, hi, counts = lo[order], hi[order], counts[order]
        keys = list(zip(*(self[c][sel[lo]].tolist() for c in cols), strict=True)) if cols else [()] * len(lo)
        vmin, vmax = v[lo].tolist(), v[hi].tolist()
        out = {}
        ends = self.filter(np.concatenate([sel[lo], sel[hi]])).rows() if rows else []  # best rows, then worst
        for n, key in enumerate(keys):
            entry = {"min": vmin[n], "max": vmax[n], "spread": vmax[n] / vmin[n], "rows": int(counts[n])}
            if rows:
                entry.update(best=ends[n], worst=ends[len(lo) + n])
            out[(key if len(cols) > 1 else key[0]) if cols else "all"] = entry
        return out

    # ------------------------------------------------------------------ conversions

    def to_records(self) -> np.ndarray:
        """A NumPy structured array (text columns as Python objects)."""
        dtype = [(k, v.dtype) for k, v in self.columns.items()]
        out = np.empty(len(self), dtype=dtype)
        for k, v in self.columns.items():
            out[k] = v
        return out

    def to_pandas(self):
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise EnergyLensError("format", "pandas", "install pandas to get a DataFrame (pip install pandas)") from exc
        return pd.DataFrame(self.columns)

    def to_csv(self, path: str | Path) -> Path:
        """Write every column; floats keep full precision (shortest round-trip repr)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        names = self.names
        cols = [self.columns[k].tolist() for k in names]
        with p.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            w.writerows(zip(*cols, strict=True))
        return p

    def to_parquet(self, path: str | Path) -> Path:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise EnergyLensError("format", "parquet",
                                  "pyarrow must be installed to write Parquet (pip install pyarrow); "
                                  "write CSV instead (a .csv path)") from exc
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in self.columns.items()}
        pq.write_table(pa.table(arrays), p)
        return p

    def write(self, path: str | Path) -> Path:
        """CSV or Parquet by the file suffix."""
        suffix = Path(path).suffix.lower()
        if suffix == ".csv":
            return self.to_csv(path)
        if suffix in (".parquet", ".pq"):
            return self.to_parquet(path)
        raise SpecError("out", str(path), "a path ending in .csv or .parquet")


class _RowGetter:
    """Columns of a table at some rows, each computed once (an object, not a closure that calls itself: no
    reference cycle keeps the table's evaluation arrays alive after use)."""

    def __init__(self, table: SweepTable, rows: np.ndarray) -> None:
        self.table, self.rows, self.memo = table, rows, {}

    def __call__(self, k: str) -> np.ndarray:
        if k not in self.memo:
            t, rows = self.table, self.rows
            v = t._data.get(k)
            if v is None:
                raise SpecError("column", k, "one of " + ", ".join(t._data))
            if isinstance(v, np.ndarray):
                self.memo[k] = v[rows]
            elif 4 * len(rows) >= len(t):  # most rows: the whole column (gathered in blocks, kept) is cheaper
                self.memo[k] = t[k][rows]
            else:
                self.memo[k] = _checked(k, v(rows, self))
        return self.memo[k]


def _one_key(keys: list[np.ndarray]) -> list[np.ndarray]:
    """``np.lexsort`` keys (the last the primary) as one integer key where they are small non-negative integers
    (the same order, one pass of the sort instead of several), else as they are."""
    if not all(k.dtype.kind in "iub" and (not len(k) or int(k.min()) >= 0) for k in keys):
        return keys
    code = np.zeros(len(keys[0]), dtype=np.int64)
    span = 1
    for k in reversed(keys):  # primary first
        width = int(k.max(initial=0)) + 1
        span *= width
        if span >= 1 << 62:
            return keys
        code = code * width + k.astype(np.int64)
    return [code]


def _checked(name: str, v: np.ndarray) -> np.ndarray:
    """A computed column; a non-finite element is a bug (never user error), so it fails loudly."""
    v = np.asarray(v)
    if v.dtype.kind == "f" and not np.isfinite(v.sum()) and not np.all(np.isfinite(v)):
        raise FloatingPointError(f"non-finite values in sweep column {name!r}")
    return v


def front_columns(front: str, x: str | None, y: str | None, minimize) -> tuple[str, str, tuple[bool, bool]]:
    """(x, y, minimise flags) of a named front, or of two columns given directly."""
    if x is None or y is None:
        if front not in FRONTS:
            raise SpecError("front", front, "one of " + ", ".join(FRONTS))
        x, y, mx, my = FRONTS[front]
        minimize = (mx, my) if minimize is None else minimize
    return x, y, ((True, True) if minimize is None else tuple(minimize))


def group_ids(t: SweepTable, by: Sequence[str], rows: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """One integer per row (of ``rows``, default all) naming its group of ``by`` values, numbered in
    sorted order of the values."""
    n = len(t) if rows is None else len(rows)
    one = np.zeros(n, dtype=np.int64)  # a text column with one value (a chunk's model, GPU): one group, no pass
    return group_codes([one if t.single_text(c) else t[c] if rows is None else t[c][rows] for c in by], n)


def group_codes(columns: Sequence[np.ndarray], n: int) -> tuple[np.ndarray, int]:
    """``group_ids`` over columns given as arrays of ``n`` values each: (group of each row, groups)."""
    code = np.zeros(n, dtype=np.int64)
    for col in columns:
        inv, k = _codes(col)
        code = code * k + inv
    return _codes(code)


def _codes(col: np.ndarray) -> tuple[np.ndarray, int]:
    """Each value's position among the column's sorted distinct values, and their number. Integers over a
    range not much wider than the column take a table (linear time; a sweep's prompt lengths, output lengths
    and group codes), text a dict pass (np.unique sorts Python objects, ~10x slower), the rest a sort."""
    if col.dtype == object and len(col) and bool(np.all(col == col[0])):  # one text value (one group)
        return np.zeros(len(col), dtype=np.int64), 1
    if col.dtype == object:
        uniq = sorted(set(col.tolist()))
        pos = {u: i for i, u in enumerate(uniq)}
        return np.fromiter((pos[u] for u in col.tolist()), dtype=np.int64, count=len(col)), len(uniq)
    if col.dtype.kind in "iu" and len(col):
        lo, hi = int(col.min()), int(col.max())
        if hi - lo <= 4 * len(col) + 4096:
            rel = (col - lo).astype(np.intp)
            present = np.zeros(hi - lo + 1, dtype=bool)
            present[rel] = True
            pos = np.cumsum(present) - 1
            return pos[rel].astype(np.int64), int(pos[-1]) + 1
    uniq, inv = np.unique(col, return_inverse=True)
    return inv.reshape(-1).astype(np.int64), len(uniq)


def read_csv(path: str | Path) -> SweepTable:
    """Read a table written by ``to_csv`` (numbers back as float/int/bool columns)."""
    p = Path(path)
    with p.open(newline="") as fh:
        r = csv.reader(fh)
        names = next(r)
        raw = list(zip(*r, strict=True)) if names else []
    cols: dict[str, np.ndarray] = {}
    for k, values in zip(names, raw or [()] * len(names), strict=True):
        cols[k] = _parse_column(list(values))
    return SweepTable(cols)


def _parse_column(values: list[str]) -> np.ndarray:
    if values and all(v in ("True", "False") for v in values):
        return np.array([v == "True" for v in values], dtype=bool)
    try:
        ints = np.array([int(v) for v in values], dtype=np.int64)
        return ints
    except ValueError:
        pass
    try:
        return np.array([float(v) for v in values], dtype=float)
    except ValueError:
        return np.array(values, dtype=object)
