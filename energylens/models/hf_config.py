"""Reading Hugging Face ``config.json`` files (no network): field access with clear errors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from energylens.errors import SpecError

MAX_CONFIG_INT = 2**31 - 1  # sizes, head counts, layers: int32, as the frameworks store them
TORCH_DTYPES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float8_e4m3fn": "fp8"}


class HFConfig:
    """A config.json mapping with typed, checked accessors. ``text_config`` is merged for multimodal models."""

    def __init__(self, data: Mapping[str, Any], origin: str) -> None:
        if not isinstance(data, Mapping):
            raise SpecError(origin, type(data).__name__, "a JSON object (Hugging Face config.json)")
        merged = dict(data)
        text = data.get("text_config")
        if isinstance(text, Mapping):
            for k, v in text.items():
                merged.setdefault(k, v)
            merged["model_type"] = text.get("model_type", data.get("model_type"))
            merged["_outer_model_type"] = data.get("model_type")
        self.data = merged
        self.origin = origin

    @classmethod
    def from_path(cls, path: str | Path) -> HFConfig:
        from energylens.checks import MAX_CONFIG_BYTES, is_file, parse_json, read_text

        p = Path(path)
        if not is_file(p):
            raise SpecError("model", str(path), "a known model name or an existing config.json path")
        data = parse_json(read_text(p, "model", max_bytes=MAX_CONFIG_BYTES, what="a config.json file"),
                          "model", str(path))
        return cls(data, str(p))

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def int(self, key: str, default: int | None = None) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise SpecError(f"{self.origin}: {key}", None, "required integer field of config.json")
        ok = not isinstance(value, bool) and isinstance(value, (int, float))
        if not ok or not math.isfinite(value) or value != int(value) or not 0 < value <= MAX_CONFIG_INT:
            raise SpecError(f"{self.origin}: {key}", value, f"a positive integer up to {MAX_CONFIG_INT:,}")
        return int(value)

    @property
    def model_type(self) -> str:
        return str(self.data.get("model_type", ""))

    @property
    def dtype(self) -> str:
        raw = str(self.data.get("torch_dtype") or self.data.get("dtype") or "bfloat16")
        return TORCH_DTYPES.get(raw, "bf16")
