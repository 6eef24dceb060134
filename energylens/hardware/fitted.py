"""Where a profile fitted from real measurements lives, so it can replace the built-in one.

Convention: ``energylens/data/measurements/<gpu-key>/profile.yaml`` (written by ``energylens calibrate``
from the records under ``energylens/data/measurements/<gpu-key>/micro/``). When that file exists,
``load_gpu("<gpu-key>")`` should return it instead of the spec-sheet profile in
``energylens/data/hardware/gpus/<gpu-key>.yaml``. The environment variable
``ENERGYLENS_NO_FITTED_PROFILES=1`` turns the hook off (spec-sheet profiles only).

This module imports only the data accessor, so ``energylens.hardware.profile`` can call
:func:`fitted_profile_path` without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from energylens.datafiles import data_path

DISABLE_ENV = "ENERGYLENS_NO_FITTED_PROFILES"
PROFILE_NAME = "profile.yaml"


def measurements_dir() -> Path:
    """The package's ``data/measurements`` directory."""
    return Path(str(data_path("measurements")))


def fitted_profile_path(gpu_key: str, root: str | os.PathLike | None = None) -> Path | None:
    """Path of the fitted profile for ``gpu_key`` if one exists (and the hook is on), else None."""
    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return None
    key = gpu_key.strip().lower()
    if not key or "/" in key or "\\" in key or key.startswith("."):
        return None
    base = Path(root) if root is not None else measurements_dir()
    path = base / key / PROFILE_NAME
    return path if path.is_file() else None
