"""Recorded per-layer expert-count histograms: load, validate, save, synthesise (JSON / CSV / NPY)."""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

import numpy as np

from energylens.errors import SpecError
from energylens.moe.spec import HISTOGRAM_SUFFIXES, Routing, _check_n_experts, _validate_counts
from energylens.moe.topk import _check_top_k, sample_topk

# --------------------------------------------------------------------------------------------
# Histogram files
# --------------------------------------------------------------------------------------------


def _load_json(path: Path) -> tuple[np.ndarray, int | None, str | None]:
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise SpecError("routing", where, f"a readable JSON histogram file ({exc})") from None
    if not isinstance(data, dict) or "layers" not in data:
        raise SpecError(
            "routing", where, 'a JSON object {"n_experts": E, "top_k": k, "layers": [[...]], "source": ...}'
        )
    layers = data["layers"]
    if not isinstance(layers, list) or not layers or not all(isinstance(row, list) for row in layers):
        raise SpecError("routing", where, '"layers" must be a non-empty list of lists of expert counts')
    widths = {len(row) for row in layers}
    if len(widths) != 1:
        raise SpecError(
            "routing", where, f'every row of "layers" needs the same number of experts, got {sorted(widths)}'
        )
    for i, row in enumerate(layers):
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise SpecError(
                    "routing", where, f"expert counts must be numbers; layer {i}, expert {j} is {value!r}"
                )
    counts = _validate_counts(np.array(layers, dtype=np.float64), where)
    n_experts = data.get("n_experts")
    if n_experts is not None and (isinstance(n_experts, bool) or n_experts != counts.shape[1]):
        raise SpecError(
            "routing",
            where,
            f'"n_experts" is {n_experts!r} but each row of "layers" has {counts.shape[1]} counts',
        )
    top_k = data.get("top_k")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= counts.shape[1]
    ):
        raise SpecError(
            "routing", where, f'"top_k" is {top_k!r}; it must be an integer in 1..{counts.shape[1]}'
        )
    source = data.get("source")
    if source is not None and not isinstance(source, str):
        raise SpecError("routing", where, '"source" must be a string')
    return counts, top_k, source


def _load_csv(path: Path) -> np.ndarray:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("routing", where, f"a readable CSV histogram file ({exc})") from None
    rows: list[list[float]] = []
    seen_line = False
    for line_no, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        cells = [c.strip() for c in cells]
        if not cells or all(c == "" for c in cells) or cells[0].startswith("#"):
            continue
        try:
            values = [float(c) for c in cells]
        except ValueError:
            if not seen_line:  # header row
                seen_line = True
                continue
            raise SpecError(
                "routing",
                where,
                f"line {line_no}: expert counts must be numbers (only the first row may be a header)",
            ) from None
        seen_line = True
        rows.append(values)
    if not rows:
        raise SpecError("routing", where, "a CSV file with one row of expert counts per layer")
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise SpecError("routing", where, f"every row needs the same number of experts, got {sorted(widths)}")
    return np.array(rows, dtype=np.float64)


def load_histogram(path: str | Path) -> Routing:
    """Load recorded per-layer expert-count histograms (``.json``, ``.csv`` or ``.npy``)."""
    file = Path(path)
    where = str(path)
    suffix = file.suffix.lower()
    if suffix not in HISTOGRAM_SUFFIXES:
        raise SpecError("routing", where, "a histogram file ending in .json, .csv or .npy")
    from energylens.checks import MAX_CONFIG_BYTES, is_file, regular_file

    if not is_file(file):
        raise SpecError("routing", where, "an existing histogram file (.json, .csv or .npy); no such file")
    regular_file(file, "routing", max_bytes=MAX_CONFIG_BYTES, what="a histogram file")
    top_k: int | None = None
    source: str | None = None
    if suffix == ".json":
        counts, top_k, source = _load_json(file)
    elif suffix == ".csv":
        counts = _load_csv(file)
    else:
        try:
            counts = np.load(file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise SpecError("routing", where, f"a readable .npy array of expert counts ({exc})") from None
    return Routing(
        "histogram",
        path=where,
        counts=_validate_counts(np.asarray(counts), where),
        recorded_top_k=top_k,
        source=source,
    )


def save_histogram(
    path: str | Path, counts: np.ndarray, *, top_k: int | None = None, source: str = ""
) -> Path:
    """Write expert-count histograms ``[n_layers, E]`` as ``.json``, ``.csv`` or ``.npy``."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in HISTOGRAM_SUFFIXES:
        raise SpecError("path", str(path), "a file name ending in .json, .csv or .npy")
    matrix = _validate_counts(np.asarray(counts), str(path))
    integral = bool(np.all(matrix == np.round(matrix)))
    if suffix == ".npy":
        np.save(file, matrix.astype(np.int64) if integral else matrix)
        return file
    rows = [[int(v) if integral else float(v) for v in row] for row in matrix]
    if suffix == ".json":
        payload: dict[str, object] = {"n_experts": int(matrix.shape[1])}
        if top_k is not None:
            payload["top_k"] = int(top_k)
        payload["source"] = source
        head = json.dumps(payload, indent=2)[:-2]  # without the closing "\n}"
        body = ",\n".join("    " + json.dumps(row, separators=(",", ":")) for row in rows)
        file.write_text(f'{head},\n  "layers": [\n{body}\n  ]\n}}\n', encoding="utf-8")
        return file
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([f"expert_{i}" for i in range(matrix.shape[1])])
    writer.writerows(rows)
    file.write_text(buffer.getvalue(), encoding="utf-8")
    return file


def example_histogram_path() -> Path:
    """The shipped synthetic example histogram (E=128, k=8; see its ``source`` field)."""
    return Path(str(resources.files("energylens") / "data" / "routing" / "example_skewed_qwen3_30b.json"))


def synthetic_histogram(
    n_experts: int = 128,
    top_k: int = 8,
    n_layers: int = 4,
    tokens_per_layer: int = 4096,
    exponent: float = 1.2,
    seed: int = 2025,
) -> np.ndarray:
    """Synthetic (NOT recorded) expert-count histograms ``[n_layers, n_experts]`` (int64).

    Layer ``l`` uses popularity ``zipf:exponent`` with permutation seed ``seed + l`` and routes
    ``tokens_per_layer`` tokens by ``sample_topk(p, top_k, tokens_per_layer,
    numpy.random.default_rng([seed, l]))``; counts are the per-expert assignment totals. The
    shipped ``example_skewed_qwen3_30b.json`` is ``synthetic_histogram()`` with the defaults.
    """
    n = _check_n_experts(n_experts)
    k = _check_top_k(top_k, n)
    out = np.zeros((n_layers, n), dtype=np.int64)
    for layer in range(n_layers):
        p = Routing.zipf(exponent, seed=seed + layer).probabilities(n)
        picks = sample_topk(p, k, tokens_per_layer, np.random.default_rng([seed, layer]))
        out[layer] = np.bincount(picks.ravel(), minlength=n)
    return out
