"""What a calibration from measured records returns: fitted values, fit summaries, residuals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from energylens.hardware.profile import GPU, Quantity


@dataclass(frozen=True)
class PointResidual:
    """Measured vs predicted (fitted profile) for one point; errors in % of the measurement."""

    file: str
    index: int
    kind: str
    dtype: str | None
    name: str
    role: str  # "fit: <names>", "held-out", "power-capped"
    power_capped: bool
    latency_s: float
    latency_pred_s: float
    energy_j: float
    energy_pred_j: float

    @property
    def latency_err_pct(self) -> float:
        return 100.0 * (self.latency_pred_s / self.latency_s - 1.0) if self.latency_s > 0 else 0.0

    @property
    def energy_err_pct(self) -> float:
        return 100.0 * (self.energy_pred_j / self.energy_j - 1.0) if self.energy_j > 0 else 0.0


@dataclass(frozen=True)
class FitSummary:
    """Mean absolute and max absolute % error of a group of points."""

    n: int
    latency_mape_pct: float
    latency_max_abs_pct: float
    energy_mape_pct: float
    energy_max_abs_pct: float

    @staticmethod
    def of(rows: Sequence[PointResidual]) -> FitSummary:
        if not rows:
            return FitSummary(0, float("nan"), float("nan"), float("nan"), float("nan"))
        lat = np.abs([r.latency_err_pct for r in rows])
        en = np.abs([r.energy_err_pct for r in rows])
        return FitSummary(len(rows), float(lat.mean()), float(lat.max()), float(en.mean()), float(en.max()))


@dataclass(frozen=True)
class FittedValue:
    """One fitted number with its old value and what fitted it."""

    name: str
    unit: str
    old: float | None
    new: float
    n_points: int
    data: str  # which points, human-readable
    at_bound: bool = False


@dataclass
class CalibrationResult:
    """Fitted quantities, the fitted profile, per-point residuals and their summaries."""

    base: GPU
    profile: GPU
    fitted: dict[str, Quantity]
    values: list[FittedValue]
    residuals: list[PointResidual]
    summary: dict[str, FitSummary]
    notes: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
