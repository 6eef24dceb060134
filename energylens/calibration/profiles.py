"""Write fitted coefficients into the built-in GPU profile YAMLs, one ``name: {...}`` line per quantity.

The files keep their comments and the order of existing lines: a fitted quantity replaces the line of
the same name, a new one is appended to the ``quantities`` block (the last block of every profile).
The result is re-parsed with :func:`energylens.hardware.profile.parse_gpu` before it is written.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from energylens.hardware.profile import Quantity, forget_loaded_profiles, parse_gpu, safe_load

_LINE = re.compile(r"^  ([A-Za-z0-9_]+): \{")


def profile_path(gpu_key: str) -> Path:
    return Path(str(resources.files("energylens") / "data" / "hardware" / "gpus" / f"{gpu_key}.yaml"))


def _format_value(v: float | None) -> str:
    if v is None:
        return "null"
    return repr(float(f"{v:.7g}"))


def quantity_line(name: str, q: Quantity) -> str:
    parts = [f"value: {_format_value(q.value)}", f"unit: {json.dumps(q.unit)}", f"kind: {q.kind}",
             f"source: {json.dumps(q.source)}"]
    if q.note:
        parts.append(f"note: {json.dumps(q.note)}")
    return f"  {name}: {{{', '.join(parts)}}}"


def updated_text(text: str, updates: dict[str, Quantity], origin: str) -> str:
    """``text`` of a profile with ``updates`` applied (checked by parsing the result)."""
    lines = text.rstrip("\n").split("\n")
    seen = set()
    for i, line in enumerate(lines):
        m = _LINE.match(line)
        if m and m.group(1) in updates:
            lines[i] = quantity_line(m.group(1), updates[m.group(1)])
            seen.add(m.group(1))
    lines += [quantity_line(name, q) for name, q in updates.items() if name not in seen]
    out = "\n".join(lines) + "\n"
    parse_gpu(safe_load(out), origin)
    return out


def write_profile(gpu_key: str, updates: dict[str, Quantity], path: Path | None = None) -> Path:
    path = path or profile_path(gpu_key)
    path.write_text(updated_text(path.read_text(), updates, str(path)))
    forget_loaded_profiles()  # the rules that derive from this profile (derived_power) read what was written
    return path
