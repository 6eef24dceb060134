"""Argument and input checks shared by every front end (Python API, CLI, data files).

One place says what a number, a name or a file may be, so that ``predict``, ``serve``, ``disagg``,
``sweep``, ``validate``, ``calibrate`` and ``overlap`` refuse the same mistakes with the same
one-line ``EnergyLensError`` (field, value, what is allowed) before any work starts:

* integers reject ``bool`` and ``float`` (a degree of ``2.0`` or ``True`` is a mistake, not a 2);
* numbers must be finite and inside a stated range (``nan``, ``inf``, ``1e300`` are refused up front,
  so nothing downstream can overflow to NaN);
* names and paths are bounded strings without NUL bytes; a path that cannot be stat-ed is "not a file";
* file reads are bounded: only regular files (no ``/dev/zero``, FIFOs, directories), at most a stated
  size, UTF-8 text; YAML/JSON parse errors, recursion bombs and oversized integers become errors too;
* output paths must have an allowed suffix and an existing parent directory.

The bounds below are far above any real deployment; they exist so that every input either gives a
finite answer or a clear refusal.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from energylens.errors import EnergyLensError, SpecError

MAX_TOKENS = 10_000_000  # prompt, output or context tokens of one request
MAX_BATCH = 1_000_000  # sequences of a static batch / running requests of a deployment
MAX_DEGREE = 65_536  # tp, pp, dp, ep, GPUs per node
MAX_GPUS = 1_000_000  # GPUs of one deployment or budget
MAX_NAME_CHARS = 1024  # model/GPU names, paths, pattern strings
MIB = 1 << 20
MAX_CONFIG_BYTES = 4 * MIB  # config.json, GPU profile YAML, sweep spec, routing JSON/CSV
MAX_TABLE_BYTES = 64 * MIB  # validation CSVs
MAX_RECORD_BYTES = 256 * MIB  # measurement records


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer(field: str, value: object, *, low: int = 1, high: int | None = None,
            error: type[EnergyLensError] = EnergyLensError, what: str | None = None) -> int:
    """An ``int`` (NumPy integers too; never ``bool`` or ``float``) in ``[low, high]``."""
    if not _is_int(value) or value < low or (high is not None and value > high):
        rng = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise error(field, value, what or rng)
    return int(value)


def number(field: str, value: object, *, low: float = 0.0, high: float | None = None, low_open: bool = True,
           error: type[EnergyLensError] = EnergyLensError, what: str | None = None) -> float:
    """A finite real number (``int``/``float``/NumPy; never ``bool`` or text) in ``(low, high]``
    (``[low, high]`` with ``low_open=False``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > low if low_open else v >= low) and (high is None or v <= high)
    if not ok:
        lo = "(" if low_open else "["
        rng = f"a finite number in {lo}{low:g}, {high:g}]" if high is not None else \
            f"a finite number {'>' if low_open else '>='} {low:g}"
        raise error(field, value, what or rng)
    return float(value)


def number_array(field: str, value: object, *, low: float = 0.0, high: float | None = None, low_open: bool = True,
                 error: type[EnergyLensError] = EnergyLensError, what: str | None = None) -> np.ndarray:
    """A non-empty array of finite numbers in range (``number`` applied elementwise)."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError, OverflowError):
        raise error(field, value, what or "numbers") from None
    bad = a.size == 0 or a.dtype.kind not in "iuf" or a.size > MAX_BATCH
    if not bad:
        a = a.astype(float)
        bad = bool(np.any(~np.isfinite(a)) or np.any(a <= low if low_open else a < low)
                   or (high is not None and np.any(a > high)))
    if bad:
        rng = f"finite numbers in {'(' if low_open else '['}{low:g}, {high:g}]" if high is not None else \
            f"finite numbers {'>' if low_open else '>='} {low:g}"
        raise error(field, _plain(value), what or rng)
    return a


def boolean(field: str, value: object, *, error: type[EnergyLensError] = EnergyLensError) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise error(field, value, "true or false")
    return bool(value)


def choice(field: str, value: object, options: Iterable, *, error: type[EnergyLensError] = EnergyLensError):
    opts = list(options)
    if not isinstance(value, (str, int, float, type(None))) or value not in opts:
        raise error(field, value, "one of " + ", ".join(str(o) for o in opts))
    return value


def text(field: str, value: object, *, error: type[EnergyLensError] = EnergyLensError,
         what: str = "a non-empty name") -> str:
    """A non-empty string of at most ``MAX_NAME_CHARS`` characters without NUL bytes."""
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS or "\x00" in value:
        shown = value if not isinstance(value, str) or len(value) <= 80 else value[:60] + f"... ({len(value)} chars)"
        raise error(field, shown, f"{what} (text of 1 to {MAX_NAME_CHARS} characters, no NUL)")
    return value


def is_file(path: object) -> bool:
    """``Path(path).is_file()`` that never raises (over-long or NUL-holding names are not files)."""
    try:
        return os.path.isfile(str(path))  # (no Path object: called for every GPU name of every prediction)
    except (OSError, ValueError):
        return False


def exists(path: object) -> bool:
    try:
        return Path(str(path)).exists()
    except (OSError, ValueError):
        return False


def regular_file(path: str | os.PathLike, field: str, *, max_bytes: int = MAX_CONFIG_BYTES, what: str = "a file",
                 error: type[EnergyLensError] = SpecError) -> Path:
    """``path`` if it is a regular file of at most ``max_bytes`` bytes (stat only: never opens a device
    or a FIFO, so ``/dev/zero`` and named pipes are refused without blocking)."""
    name = text(field, str(path), error=error, what=what)
    try:
        st = os.stat(name)
    except (OSError, ValueError) as exc:
        raise error(field, name, f"{what} (cannot open it: {getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(field, name, f"{what}: a regular file, not a directory, device or pipe")
    if st.st_size > max_bytes:
        raise error(field, name, f"{what} of at most {max_bytes:,} bytes (this one has {st.st_size:,})")
    return Path(name)


def read_text(path: str | os.PathLike, field: str, *, max_bytes: int = MAX_CONFIG_BYTES, what: str = "a file",
              error: type[EnergyLensError] = SpecError) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` bytes.

    Refuses, before reading: directories, devices (``/dev/zero``), FIFOs and sockets, files larger than
    ``max_bytes``; after: text that is not UTF-8. Never reads more than ``max_bytes + 1`` bytes."""
    name = str(regular_file(path, field, max_bytes=max_bytes, what=what, error=error))
    try:
        with open(name, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise error(field, name, f"{what} (cannot read it: {exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise error(field, name, f"{what} of at most {max_bytes:,} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(field, name, f"{what} in UTF-8 text (byte {exc.start} is not)") from None


def parse_yaml(source: str, field: str, origin: str, *, error: type[EnergyLensError] = SpecError) -> object:
    """``yaml.safe_load`` (C parser when available) with every parser failure as ``error``:
    syntax errors, recursion bombs (thousands of nested brackets), bad timestamps."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(source, Loader=loader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise error(field, origin, f"valid YAML ({exc.__class__.__name__}: {str(exc).splitlines()[0][:120]})") from None
    except (RecursionError, ValueError, OverflowError, TypeError) as exc:
        raise error(field, origin, f"YAML a parser can read ({exc.__class__.__name__})") from None


def read_csv_rows(path: object, columns: Iterable[str], fmt: str) -> list[dict]:
    """Rows of a bounded UTF-8 CSV file that has every one of ``columns`` (``fmt`` names the format in
    errors); a row with too few or too many cells is refused, naming the row."""
    import csv
    import io

    if not is_file(path):
        raise SpecError("data", str(path), f"an existing CSV file in the {fmt}")
    p = Path(str(path))
    source = read_text(p, "data", max_bytes=MAX_TABLE_BYTES, what=f"a CSV file in the {fmt}")
    columns = tuple(columns)
    try:
        reader = csv.DictReader(io.StringIO(source, newline=""))
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise SpecError(f"{p.name} columns", ", ".join(missing), f"the {fmt} columns: " + ", ".join(columns))
        rows = [dict(r) for r in reader]
    except csv.Error as exc:
        raise SpecError("data", str(path), f"a readable CSV file ({exc})") from None
    for i, r in enumerate(rows):
        if None in r or any(v is None for v in r.values()):
            raise SpecError("data", str(path), f"a CSV whose rows have one cell per column (data row {i} has "
                            f"{len(r) - (None in r) + len(r.get(None) or [])} cells)")
    return rows


def parse_json(source: str, field: str, origin: str, *, error: type[EnergyLensError] = SpecError) -> object:
    """``json.loads`` with failures (syntax, nesting bombs, integers over 4300 digits) as ``error``."""
    try:
        return json.loads(source)
    except json.JSONDecodeError as exc:
        raise error(field, origin, f"valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (RecursionError, ValueError) as exc:
        raise error(field, origin, f"JSON a parser can read ({exc.__class__.__name__})") from None


def output_path(field: str, path: object, suffixes: Iterable[str], *, create_parent: bool = False,
                error: type[EnergyLensError] = SpecError) -> Path:
    """A path to write: an allowed suffix and an existing (or, with ``create_parent``, creatable) parent
    directory, checked before any work."""
    allowed = tuple(suffixes)
    name = text(field, path if isinstance(path, str) else str(path), error=error, what="a file path")
    p = Path(name)
    if p.suffix.lower() not in allowed:
        raise error(field, name, "a path ending in " + " or ".join(allowed))
    parent = p.parent if str(p.parent) else Path(".")
    if create_parent:
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (OSError, ValueError) as exc:
            raise error(field, name, f"a path whose directory can be created ({exc})") from None
    try:
        ok = parent.is_dir() and os.access(parent, os.W_OK) and not p.is_dir()
    except (OSError, ValueError):
        ok = False
    if not ok:
        raise error(field, name, f"a path in an existing, writable directory ({parent} is not one)")
    return p


def write_text(field: str, path: Path, content: str, *, error: type[EnergyLensError] = SpecError) -> None:
    try:
        path.write_text(content)
    except OSError as exc:
        raise error(field, str(path), f"a writable file path ({exc.strerror or exc})") from None


def finite_result(field: str, value: object, *, error: type[EnergyLensError] = EnergyLensError) -> None:
    """Refuse a non-finite or negative output (the last guard: never print NaN or inf)."""
    a = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise error(field, _plain(value), "a finite, non-negative result; the inputs are outside what the model "
                    "covers (try smaller sizes)")


def _plain(value: object) -> object:
    """NumPy values as plain Python ones (for messages and JSON)."""
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 16 else f"array of {value.size} values"
    if isinstance(value, np.generic):
        return value.item()
    return value


def json_safe(obj: object) -> object:
    """A copy for ``json.dumps(allow_nan=False)``: NumPy values as Python ones, NaN/inf as ``None``."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
