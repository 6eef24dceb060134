"""Exception types raised at the edges (spec loading, CLI arguments, API arguments).

Every message names the field, the value and what is allowed. The CLI turns any
``EnergyLensError`` into one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


def plain(value: object) -> object:
    """A value as a reader should see it in a message: NumPy scalars as Python numbers, short arrays
    as lists (not ``array([...])``), long text shortened."""
    if hasattr(value, "tolist") and hasattr(value, "ndim"):  # NumPy arrays and scalars
        size = getattr(value, "size", 1)
        value = value.tolist() if size <= 16 else f"<{size} values>"
    if isinstance(value, str) and len(value) > 200:
        return value[:80] + f"... ({len(value)} characters)"
    return value


def _shown(value: object) -> str:
    try:
        text = repr(plain(value))
    except (RecursionError, ValueError):  # a value nested thousands deep, an integer of 5000 digits
        return f"<{type(value).__name__}>"
    return text if len(text) <= 300 else text[:240] + f"... ({len(text)} characters)"


class EnergyLensError(ValueError):
    """Base class: a user-facing mistake in a spec or an argument."""

    def __init__(self, field: str, value: object, allowed: str) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field}={_shown(value)} is not valid: {allowed}".replace("\n", " "))


class EinsumError(EnergyLensError):
    """A malformed einsum string or shapes that do not match it."""


class DimensionError(EnergyLensError):
    """An unknown dimension letter, a mismatched or non-positive size."""


class UnknownNameError(EnergyLensError):
    """An unknown GPU, model, link, routing or other catalogue name."""

    def __init__(self, field: str, value: object, known: Iterable[str]) -> None:
        known_list = sorted(set(known))
        super().__init__(field, value, "known values are " + ", ".join(known_list))
        self.known = known_list


class LayoutError(EnergyLensError):
    """A parallel layout that does not divide the model, or does not fit."""


class WorkloadError(EnergyLensError):
    """A non-positive batch or length, or an unknown phase."""


class SpecError(EnergyLensError):
    """A malformed data file (hardware profile, measurement record, sweep spec)."""


class MeasurementError(EnergyLensError):
    """A measurement record with missing units or inconsistent metadata."""


class UnsupportedModelError(SpecError):
    """A model whose architecture energylens has no builder for (linear attention, Mamba layers, ...)."""
