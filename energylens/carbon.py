"""Carbon and cost per output token from predicted GPU energy and throughput.

Arithmetic only (no data): the user gives the grid's carbon intensity, the data centre's PUE and a
price per GPU-hour. For a deployment with energy per output token ``E`` (J, all GPUs, GPU board
energy as energylens predicts it) and output throughput ``X`` tokens/s per GPU::

    facility energy per token = E * pue                          (J; PUE = facility / IT energy)
    gCO2e per token           = E * pue / 3.6e6 * carbon_intensity  (3.6e6 J per kWh; g/kWh)
    USD per token             = usd_per_gpu_hour / 3600 / X       (each GPU is paid for whether busy or not)

``*_per_million_tokens`` are the same times 1e6. Host CPUs, networking and memory outside the GPU
boards are not in ``E``; a PUE only scales what is predicted. Vectorised: ``E`` and ``X`` may be arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from energylens.errors import WorkloadError

J_PER_KWH = 3.6e6
FIELDS = ("facility_energy_per_output_token_j", "gco2e_per_output_token", "gco2e_per_million_tokens",
          "usd_per_output_token", "usd_per_million_tokens")


def _check(name: str, v, low: float, inclusive: bool, what: str) -> None:
    if v is None:
        return
    ok = (not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(v)
          and (v >= low if inclusive else v > low))
    if not ok:
        raise WorkloadError(name, v, what)


@dataclass(frozen=True)
class Footprint:
    """Carbon intensity (gCO2e/kWh), PUE (>= 1) and price (USD per GPU-hour); ``None`` = not asked."""

    carbon_intensity_g_per_kwh: float | None = None
    pue: float = 1.0
    usd_per_gpu_hour: float | None = None

    def __post_init__(self) -> None:
        _check("carbon_intensity_g_per_kwh", self.carbon_intensity_g_per_kwh, 0.0, True, "a number >= 0 (gCO2e/kWh)")
        if self.pue is None:
            raise WorkloadError("pue", self.pue, "a number >= 1 (facility energy / IT energy)")
        _check("pue", self.pue, 1.0, True, "a number >= 1 (facility energy / IT energy)")
        _check("usd_per_gpu_hour", self.usd_per_gpu_hour, 0.0, True, "a number >= 0 (USD per GPU-hour)")

    @property
    def asked(self) -> bool:
        return self.carbon_intensity_g_per_kwh is not None or self.usd_per_gpu_hour is not None

    def per_token(self, energy_per_output_token_j, output_tokens_per_s_per_gpu) -> dict:
        """The ``FIELDS`` (arrays or floats); carbon/cost fields are ``None`` when not asked."""
        e = np.asarray(energy_per_output_token_j, dtype=float) * self.pue
        out: dict = {"facility_energy_per_output_token_j": e}
        if self.carbon_intensity_g_per_kwh is not None:
            g = e / J_PER_KWH * self.carbon_intensity_g_per_kwh
            out["gco2e_per_output_token"] = g
            out["gco2e_per_million_tokens"] = g * 1e6
        else:
            out["gco2e_per_output_token"] = out["gco2e_per_million_tokens"] = None
        if self.usd_per_gpu_hour is not None:
            x = np.asarray(output_tokens_per_s_per_gpu, dtype=float)
            usd = np.divide(self.usd_per_gpu_hour / 3600.0, x, out=np.full(x.shape, np.inf), where=x > 0)
            out["usd_per_output_token"] = usd
            out["usd_per_million_tokens"] = usd * 1e6
        else:
            out["usd_per_output_token"] = out["usd_per_million_tokens"] = None
        return out

    def per_token_floats(self, energy_per_output_token_j: float, output_tokens_per_s_per_gpu: float) -> dict:
        d = self.per_token(energy_per_output_token_j, output_tokens_per_s_per_gpu)
        return {k: (None if v is None else float(v)) for k, v in d.items()} | {
            "carbon_intensity_g_per_kwh": self.carbon_intensity_g_per_kwh, "pue": self.pue,
            "usd_per_gpu_hour": self.usd_per_gpu_hour}
