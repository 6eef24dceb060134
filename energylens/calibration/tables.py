"""Read the shipped kernel tables (``energylens/data/calibration/aiconfigurator/``) into NumPy columns.

One function, :func:`load_table`, returns a :class:`Table`: a name -> 1-D array mapping (numbers as
float, text as str), with the file it came from. Standard library + NumPy; no pandas.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from energylens.errors import SpecError

TABLE_DIR = "data/calibration/aiconfigurator"
GPU_TAGS = {"h100-sxm": "h100_sxm", "h200": "h200_sxm", "b200": "b200_sxm"}
LATENCY_VERSION = "0.24.0"
POWER_VERSION = "0.22.0"


@dataclass(frozen=True)
class Table:
    """Columns of one table; ``path`` is the repo-relative file name (the ``source`` of fitted values)."""

    path: str
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def select(self, mask: np.ndarray) -> Table:
        return Table(self.path, {k: v[mask] for k, v in self.columns.items()})


def table_dir() -> Path:
    return Path(str(resources.files("energylens") / TABLE_DIR))


def table_path(gpu_key: str, family: str, *, power: bool = False) -> Path:
    tag = GPU_TAGS.get(gpu_key)
    if tag is None:
        raise SpecError("gpu", gpu_key, "one of " + ", ".join(GPU_TAGS) + " (GPUs with kernel tables)")
    name = f"power_{tag}_{POWER_VERSION}_{family}.csv.gz" if power else f"{tag}_{LATENCY_VERSION}_{family}.csv.gz"
    return table_dir() / name


def has_table(gpu_key: str, family: str, *, power: bool = False) -> bool:
    return gpu_key in GPU_TAGS and table_path(gpu_key, family, power=power).is_file()


def load_table(gpu_key: str, family: str, *, power: bool = False) -> Table:
    """All rows of one shipped table (numbers as float64 arrays, text columns as str arrays)."""
    path = table_path(gpu_key, family, power=power)
    if not path.is_file():
        raise SpecError("table", str(path), "a kernel table shipped in energylens/data/calibration/aiconfigurator")
    with gzip.open(path, "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = list(reader)
    cols: dict[str, np.ndarray] = {}
    for i, name in enumerate(header):
        raw = [r[i] for r in rows]
        try:
            cols[name] = np.asarray(raw, dtype=float)
        except ValueError:
            cols[name] = np.asarray(raw, dtype=str)
    return Table(f"energylens/{TABLE_DIR}/{path.name}", cols)
