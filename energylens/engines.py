"""Serving-engine defaults (``energylens/data/engines/<engine>.yaml``), sourced data rather than constants."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from energylens.datafiles import read_yaml
from energylens.errors import SpecError


@dataclass(frozen=True)
class EngineSettings:
    """What the serving engine does that the cost model needs (units in the names)."""

    max_batched_tokens: int  # chunked-prefill token budget per iteration
    gpu_memory_utilization: float  # fraction of HBM the engine may fill
    runtime_overhead_bytes: float  # per-GPU memory outside weights, KV cache and activations


@cache
def engine_settings(engine: str = "vllm") -> EngineSettings:
    """The shipped defaults of ``engine`` (only ``vllm`` is shipped)."""
    if engine != "vllm":
        raise SpecError("engine", engine, "'vllm' (the only engine with shipped defaults)")
    data = read_yaml("engines", f"{engine}.yaml")
    settings = data.get("settings") if isinstance(data, dict) else None
    if not isinstance(settings, dict):
        raise SpecError(f"engines/{engine}.yaml: settings", settings, "a mapping of named settings")

    def value(name: str) -> float:
        entry = settings.get(name)
        v = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not entry.get("source"):
            raise SpecError(f"engines/{engine}.yaml: settings.{name}", entry, "{value: <positive number>, source: ...}")
        return float(v)

    return EngineSettings(int(value("max_batched_tokens")), value("gpu_memory_utilization"),
                          value("runtime_overhead_bytes"))


VLLM = engine_settings("vllm")
