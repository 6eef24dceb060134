"""Rows of a sweep block: the valid configurations gathered from the evaluation grid, the overlap rows, the
derived per-token figures and constraint flags, and the 80 % interval columns (``sweep.runner`` evaluates,
this module assembles the table's columns).

The valid configurations of a block are its valid (layout, batch) combinations, the *outer* axes, times
every (prompt, output) pair: validity never depends on the workload lengths. ``RowGather`` therefore copies
each array's (prompt, output) block once per valid combination (a row block, not one index per row), and
the identity columns are repeats and tiles of the axis values.
"""

from __future__ import annotations

import numpy as np

from energylens.cost.phase import USABLE_MEMORY_FRACTION
from energylens.sweep.spec import SweepSpec
from energylens.sweep.table import Source

NDIM = 7  # the axes of sweep.runner's grid: tp, pp, dp, ep, batch, prompt_len, output_len
AX_TP, AX_PP, AX_DP, AX_EP, AX_B, AX_P, AX_O = range(NDIM)  # (AX_P: the first workload-length axis)
OVERLAP_FIELDS = ("latency_s", "energy_j")  # what the overlap model re-costs per setting


class RowGather:
    """Picks the valid rows out of arrays that broadcast to the evaluation grid (no expansion).

    ``outer_index``: the valid (tp, pp, dp, ep, batch-of-evaluation) combinations as five index arrays (C
    order); ``shape``: the evaluation grid. A row is (combination, prompt, output) in C order."""

    def __init__(self, outer_index: list[np.ndarray], shape: tuple[int, ...]) -> None:
        self.outer_index = outer_index
        self.shape = shape
        self.n_outer = len(outer_index[0])
        self.cache: dict[tuple, np.ndarray] = {}
        self._rows: np.ndarray | None = None  # the rows last asked for (a filter asks for every column at them)
        self._at: dict = {}  # their positions: (combination, prompt, output), and per array shape

    def _prepared(self, a) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
        """``a`` as [evaluation rows of its outer axes, its (prompt, output) block], its block shape and each
        valid combination's row."""
        a = np.asarray(a, dtype=float)
        if a.ndim < NDIM:
            a = a.reshape((1,) * (NDIM - a.ndim) + a.shape)
        if 0 in a.strides:  # a broadcast view: gather from the data it views, not an expanded copy
            a = a[tuple(slice(0, 1) if (st == 0 and n > 1) else slice(None) for st, n in zip(a.strides, a.shape,
                                                                                           strict=True))]
        outer, inner = a.shape[:AX_P], a.shape[AX_P:]
        if outer not in self.cache:
            parts = [self.outer_index[i] if outer[i] > 1 else 0 for i in range(AX_P)]
            parts = np.broadcast_arrays(*parts, self.outer_index[0])[:AX_P]
            self.cache[outer] = np.ravel_multi_index(tuple(parts), outer)
        return np.ascontiguousarray(a).reshape(-1, inner[0] * inner[1]), inner, self.cache[outer]

    def __call__(self, a) -> np.ndarray:
        flat, inner, outer_rows = self._prepared(a)
        rows = flat[outer_rows]
        full = self.shape[AX_P:]
        if inner != full:  # constant along prompt or output: each row block spread over the pairs
            rows = np.broadcast_to(rows.reshape((self.n_outer,) + inner), (self.n_outer,) + full)
        return rows.reshape(-1)

    def positions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(valid combination, prompt, output) of each of ``rows`` (kept for the next call with the same rows)."""
        if rows is not self._rows:
            p, o = self.shape[AX_P:]
            k, i = np.divmod(rows, p * o)
            self._rows, self._at = rows, {"": (k, *np.divmod(i, o))}
        return self._at[""]

    def at(self, a, rows: np.ndarray) -> np.ndarray:
        """``self(a)[rows]`` without gathering the other rows."""
        flat, inner, outer_rows = self._prepared(a)
        k, pi, oi = self.positions(rows)
        key = (flat.shape[0], inner)
        ix = self._at.get(key)
        if ix is None or ix[0] is not outer_rows:
            pos = outer_rows[k] * (inner[0] * inner[1])
            if inner[0] > 1:
                pos = pos + pi * inner[1]
            if inner[1] > 1:
                pos = pos + oi
            ix = self._at[key] = (outer_rows, pos)
        return flat.reshape(-1)[ix[1]]

    def source(self, a) -> Source:
        """A lazy column gathered from ``a`` (an array over the evaluation grid)."""
        return lambda rows, get: self(a) if rows is None else self.at(a, rows)

    def scaled(self, a, factor: np.ndarray) -> Source:
        """A lazy column of ``a`` (over the evaluation grid) times ``factor`` (one value per valid combination),
        multiplied at the rows read."""
        def source(rows, get):
            if rows is None:
                x = self(a)
                return (x.reshape(self.n_outer, -1) * factor[:, None]).reshape(-1)
            return self.at(a, rows) * factor[self.positions(rows)[0]]

        return source

    def repeated(self, values: np.ndarray) -> Source:
        """A lazy column of one value per valid combination (``repeat``)."""
        return lambda rows, get: self.repeat(values) if rows is None else values[self.positions(rows)[0]]

    def tiled(self, values: np.ndarray, axis: int) -> Source:
        """A lazy column of a workload-length axis's values (``tile``)."""
        return lambda rows, get: self.tile(values, axis) if rows is None else values[self.positions(rows)[1 + axis - AX_P]]

    def tile(self, values: np.ndarray, axis: int) -> np.ndarray:
        """A workload-length axis's values (``axis`` 5: prompt, 6: output) on every row."""
        p, o = self.shape[AX_P:]
        inner = np.repeat(values, o) if axis == AX_P else np.tile(values, p)
        return np.tile(inner, self.n_outer)

    def repeat(self, values: np.ndarray) -> np.ndarray:
        """One value per valid combination (``values[k]`` for the k-th) on each of its rows."""
        return np.repeat(values, self.shape[AX_P] * self.shape[AX_P + 1])


def text_column(value: str, n: int) -> np.ndarray:
    """A text column: one shared Python string, n object references (np.repeat is ~8x np.full here)."""
    return np.repeat(np.array([value], dtype=object), n)


class constant:  # noqa: N801 - a Source, used like a function
    """A lazy column holding ``value`` on every row (text: one shared string); ``value`` tells a reader the column
    holds one value without computing it (``SweepTable.single_text``)."""

    def __init__(self, value, n: int, dtype=None) -> None:
        self.value, self.n, self.dtype = value, n, dtype

    def __call__(self, rows, get) -> np.ndarray:
        n = self.n if rows is None else len(rows)
        return text_column(self.value, n) if isinstance(self.value, str) else np.full(n, self.value, dtype=self.dtype)


def expand_overlap(cols: dict[str, np.ndarray], spec: SweepSpec, plans: list, prefill: dict, decode: dict,
                    take: RowGather) -> dict[str, np.ndarray]:
    """``n`` configuration rows -> ``n x settings`` rows (setting innermost) with the overlap columns."""
    settings = spec.overlap_settings()
    n_set = len(settings)
    n = len(cols["tp"])
    out = {k: (np.repeat(v, n_set) if n_set > 1 else v) for k, v in cols.items()}
    comm_sms = np.asarray([k for k, _ in settings], dtype=np.int64)
    chunks = np.asarray([c for _, c in settings], dtype=np.int64)
    out["overlap_comm_sms"] = np.tile(comm_sms, n)
    out["overlap_chunks"] = np.tile(chunks, n)
    sequential: dict[str, np.ndarray] = {}
    for ph, res in (("prefill", prefill), ("decode", decode)):
        for f in OVERLAP_FIELDS:
            base = cols[f"{ph}_{f}"]
            sequential[f] = out[f"{ph}_{f}"]  # the sequential values, one per overlap setting (repeated above)
            per = [base if plan is None else take(res[f"ov{i}_{f}"]) for i, plan in enumerate(plans)]
            out[f"{ph}_{f}"] = np.stack(per, axis=1).reshape(-1) if n_set > 1 else per[0]
        # sequential - overlapped (0 for sequential rows)
        for f, unit in (("latency_s", "s"), ("energy_j", "j")):
            out[f"{ph}_overlap_saved_{unit}"] = np.zeros(n) if n_set == 1 and plans[0] is None \
                else sequential[f] - out[f"{ph}_{f}"]
    return out


def _phase_tokens(get) -> tuple[np.ndarray, np.ndarray]:
    b = get("batch").astype(float)
    return b * get("prompt_len").astype(float), b * get("output_len").astype(float)


def _decode_figure(name: str) -> Source:
    """``tpot_s``, ``decode_energy_per_token_j``, ``decode_tokens_per_s`` or ``energy_per_output_token_j``: 0 on
    rows without output tokens (the guarded forms give the same values on rows that decode)."""

    def source(rows, get):
        o = get("output_len").astype(float)
        dec_t = get("decode_latency_s")
        has_out = o > 0
        plain = bool(has_out.all() and (dec_t > 0).all())  # every row decodes: the divisions need no guard
        if name == "tpot_s":
            return dec_t / o if plain else np.where(has_out, dec_t / np.where(has_out, o, 1.0), 0.0)
        out_tokens = _phase_tokens(get)[1]
        if name == "decode_tokens_per_s":
            return out_tokens / dec_t if plain else np.where(has_out, out_tokens / np.where(dec_t > 0, dec_t, 1.0),
                                                              0.0)
        e = get("decode_energy_j") if name == "decode_energy_per_token_j" else get("request_energy_j")
        return e / out_tokens if plain else np.where(has_out, e / np.where(has_out, out_tokens, 1.0), 0.0)

    return source


def derive(cols: dict, spec: SweepSpec, capacity_bytes: float, n: int) -> None:
    """Per-token figures, throughputs and the constraint flags, as lazy columns over the gathered ones (``n``
    rows)."""
    c = spec.constraints
    usable = capacity_bytes * USABLE_MEMORY_FRACTION

    def slo(rows, get):
        ok = np.ones(n if rows is None else len(rows), dtype=bool)
        if c.max_ttft_s is not None:
            ok &= get("ttft_s") <= c.max_ttft_s
        if c.max_tpot_s is not None:
            ok &= get("tpot_s") <= c.max_tpot_s
        return ok

    def budget(rows, get):
        ok = np.ones(n if rows is None else len(rows), dtype=bool)
        if c.max_gpus is not None:
            ok &= get("num_gpus") <= c.max_gpus
        if c.min_gpus is not None:
            ok &= get("num_gpus") >= c.min_gpus
        return ok

    cols.update({
        "ttft_s": lambda rows, get: get("prefill_latency_s"),
        "prefill_energy_per_token_j": lambda rows, get: get("prefill_energy_j") / _phase_tokens(get)[0],
        "prefill_tokens_per_s": lambda rows, get: _phase_tokens(get)[0] / get("prefill_latency_s"),
        "tpot_s": _decode_figure("tpot_s"),
        "decode_energy_per_token_j": _decode_figure("decode_energy_per_token_j"),
        "decode_tokens_per_s": _decode_figure("decode_tokens_per_s"),
        "energy_per_output_token_j": _decode_figure("energy_per_output_token_j"),
        "request_latency_s": lambda rows, get: get("prefill_latency_s") + get("decode_latency_s"),
        "request_energy_j": lambda rows, get: get("prefill_energy_j") + get("decode_energy_j"),
        "request_tokens_per_s": lambda rows, get: _phase_tokens(get)[1] / get("request_latency_s"),
        "avg_power_w": lambda rows, get: get("request_energy_j") / get("request_latency_s"),
        "required_bytes": lambda rows, get: get("weights_bytes") + get("kv_cache_bytes") + get("workspace_bytes"),
        "fits": lambda rows, get: get("required_bytes") <= usable,
        "meets_slo": slo,
        "within_budget": budget,
        "feasible": lambda rows, get: get("meets_slo") & get("within_budget") & (get("fits") if c.fits_memory
                                                                                else True),
    })


def _scaled(col: str, factor: float, divide: bool = False) -> Source:
    return (lambda rows, get: get(col) / factor) if divide else (lambda rows, get: get(col) * factor)


def interval_columns(cols: dict, m, gpu_key: str) -> None:
    """``<column>_low`` / ``<column>_high``: the 80 % intervals ``predict`` and ``serve`` report. Static-batch
    request energy and latency get the measured/predicted ratios of public vLLM static-batch runs
    (``intervals.runtime_interval``); ``serve_*`` columns the serving validation residuals of the model
    family on this GPU (``intervals.interval_for``). Multiplicative, so one factor pair per column."""
    from energylens.intervals import interval_for, runtime_interval

    # TTFT and TPOT take the whole-request latency ratios (an assumption: the runs measured requests, not
    # phases); throughputs the inverse of the latency interval
    runtime = runtime_interval(1.0, 1.0)
    for col, key in (("request_energy_j", "total_energy_j"), ("request_latency_s", "total_latency_s"),
                     ("energy_per_output_token_j", "total_energy_j"), ("ttft_s", "total_latency_s"),
                     ("tpot_s", "total_latency_s")):
        iv = runtime.get(key)
        if iv:
            cols[f"{col}_low"], cols[f"{col}_high"] = _scaled(col, iv["low"]), _scaled(col, iv["high"])
            if col == "request_latency_s":
                tok = "request_tokens_per_s"
                cols[f"{tok}_low"], cols[f"{tok}_high"] = _scaled(tok, iv["high"], True), _scaled(tok, iv["low"], True)
    if "serve_itl_s" in cols:
        iv = interval_for(m, gpu_key, {"decode_step_latency_s": 1.0, "avg_power_w": 1.0,
                                       "energy_per_output_token_j": 1.0})
        for col, key in (("serve_itl_s", "decode_step_latency_s"), ("serve_avg_power_w", "avg_power_w"),
                         ("serve_energy_per_output_token_j", "energy_per_output_token_j")):
            if key in iv:
                cols[f"{col}_low"], cols[f"{col}_high"] = _scaled(col, iv[key]["low"]), _scaled(col, iv[key]["high"])
        if "decode_step_latency_s" in iv:  # tokens/s = running requests / iteration time: the inverse
            lat, tok = iv["decode_step_latency_s"], "serve_output_tokens_per_s"
            cols[f"{tok}_low"], cols[f"{tok}_high"] = _scaled(tok, lat["high"], True), _scaled(tok, lat["low"], True)
