"""The one accessor of the package's data files (``energylens/data/...``).

Every sourced number the code uses (GPU profiles, links, engine defaults, fitted coefficients,
validation tables) is read through :func:`data_path` / :func:`read_yaml`, so a reader finds where a
value comes from in one place and no module builds its own path.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from importlib.abc import Traversable

import yaml

_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader when present


def safe_load(text: str) -> object:
    """``yaml.safe_load`` semantics (no arbitrary objects), with the C parser when available."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a SafeLoader


def data_path(*parts: str) -> Traversable:
    """``energylens/data/<parts...>`` inside the installed package."""
    path = resources.files("energylens") / "data"
    for part in parts:
        path = path / part
    return path


@cache
def read_yaml(*parts: str) -> object:
    """A shipped YAML data file, parsed once (callers must not mutate the result)."""
    return safe_load(data_path(*parts).read_text())
