"""Routing strings of the CLI and the API (``uniform``, ``zipf:S``, ``dirichlet:A``, a histogram file)
turned into a :class:`~energylens.moe.spec.Routing`."""

from __future__ import annotations

import math
from pathlib import Path

from energylens.errors import EnergyLensError, UnknownNameError
from energylens.moe.histograms import load_histogram
from energylens.moe.spec import (
    DEFAULT_DIRICHLET_SEED,
    DEFAULT_PERMUTATION_SEED,
    HISTOGRAM_SUFFIXES,
    MAX_ZIPF_EXPONENT,
    ROUTING_FORMS,
    Routing,
)


def parse_routing(text: str) -> Routing:
    """Parse a CLI routing string: ``uniform``, ``zipf:S[:sorted|:SEED]``, ``dirichlet:A[:SEED]``
    or a path to a ``.json``/``.csv``/``.npy`` histogram file."""
    if isinstance(text, Routing):
        return text
    if not isinstance(text, str) or not text.strip():
        raise UnknownNameError("routing", text, ROUTING_FORMS)
    stripped = text.strip()
    lowered = stripped.lower()
    if lowered == "uniform":
        return Routing.uniform()
    if Path(stripped).suffix.lower() in HISTOGRAM_SUFFIXES:
        return load_histogram(stripped)
    head, _, rest = lowered.partition(":")
    if head in ("zipf", "dirichlet") and rest:
        parts = rest.split(":")
        what = (
            "zipf:S[:sorted|:SEED] with 0 < S <= 100" if head == "zipf" else "dirichlet:A[:SEED] with A > 0"
        )
        if len(parts) > 2:
            raise EnergyLensError("routing", text, f"expected {what}")
        try:
            value = float(parts[0])
        except ValueError:
            raise EnergyLensError("routing", text, f"the parameter must be a number: {what}") from None
        sorted_experts = False
        seed = DEFAULT_PERMUTATION_SEED if head == "zipf" else DEFAULT_DIRICHLET_SEED
        if len(parts) == 2:
            option = parts[1].strip()
            if head == "zipf" and option == "sorted":
                sorted_experts = True
            elif option.isdigit():
                seed = int(option)
            else:
                raise EnergyLensError("routing", text, f"the option after the parameter must be {what}")
        if not math.isfinite(value) or value <= 0.0 or (head == "zipf" and value > MAX_ZIPF_EXPONENT):
            raise EnergyLensError("routing", text, f"the parameter is out of range: {what}")
        if head == "zipf":
            return Routing.zipf(value, sorted_experts=sorted_experts, seed=seed)
        return Routing.dirichlet(value, seed=seed)
    raise UnknownNameError("routing", text, ROUTING_FORMS)
