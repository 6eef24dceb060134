"""Model names: short names (``llama3-8b``), Hugging Face ids (``meta-llama/Llama-3.1-70B-Instruct``)
and local ``config.json`` paths, resolved to shipped configs (no network at run time)."""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

from energylens.datafiles import data_path
from energylens.errors import SpecError, UnknownNameError
from energylens.graph.model import Model
from energylens.models.hf_config import HFConfig
from energylens.specs.model_yaml import SPEC_SUFFIXES, load_model_spec

SHORT_NAMES: dict[str, str] = {
    "llama3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama3-70b": "meta-llama/Meta-Llama-3-70B",
    "llama3.1-8b": "meta-llama/Llama-3.1-8B-Instruct",
    "llama3.1-70b": "meta-llama/Llama-3.1-70B-Instruct",
    "llama3.1-405b": "meta-llama/Llama-3.1-405B-Instruct",
    "llama3-405b": "meta-llama/Llama-3.1-405B-Instruct",
    "llama3.3-70b": "meta-llama/Llama-3.3-70B-Instruct",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "qwen3-14b": "Qwen/Qwen3-14B",
    "qwen3-32b": "Qwen/Qwen3-32B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
    "qwen3-235b-a22b": "Qwen/Qwen3-235B-A22B",
    "qwen3-coder-30b-a3b": "Qwen/Qwen3-Coder-30B-A3B-Instruct",
    "qwen3-coder-480b-a35b": "Qwen/Qwen3-Coder-480B-A35B-Instruct",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
    "deepseek-v3": "deepseek-ai/DeepSeek-V3",
    "gpt-oss-20b": "openai/gpt-oss-20b",
    "gpt-oss-120b": "openai/gpt-oss-120b",
    "gemma3-12b": "google/gemma-3-12b-it",
    "gemma3-27b": "google/gemma-3-27b-it",
    "llama4-scout": "meta-llama/Llama-4-Scout-17B-16E-Instruct",
    "llama4-maverick": "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
}

# Hugging Face ids that share a shipped config's architecture (same shapes; noted in SOURCES.md).
HF_ALIASES: dict[str, str] = {
    "meta-llama/Meta-Llama-3-8B-Instruct": "meta-llama/Meta-Llama-3-8B",
    "meta-llama/Meta-Llama-3-70B-Instruct": "meta-llama/Meta-Llama-3-70B",
    "meta-llama/Llama-3.1-8B": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B": "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Llama-3.1-405B": "meta-llama/Llama-3.1-405B-Instruct",
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8": "meta-llama/Llama-4-Maverick-17B-128E-Instruct",
    "deepseek-ai/DeepSeek-V3.1": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1-0528": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1": "deepseek-ai/DeepSeek-V3",
    "Qwen/Qwen3-30B-A3B-Instruct-2507": "Qwen/Qwen3-30B-A3B-Instruct-2507",
}


def _config_dir():
    return data_path("models")


@cache
def shipped_configs() -> dict[str, str]:
    """HF id -> file name of every shipped config.json."""
    out: dict[str, str] = {}
    for entry in _config_dir().iterdir():
        if entry.name.endswith(".json") and "__" in entry.name:
            org, _, rest = entry.name[: -len(".json")].partition("__")
            out[f"{org}/{rest}"] = entry.name
    return out


def known_models() -> list[str]:
    return sorted(SHORT_NAMES) + sorted(shipped_configs())


def resolve(name: str) -> tuple[HFConfig, str, str]:
    """(config, short name, hf id) for a short name, HF id (case-insensitive) or config path."""
    from energylens.checks import exists, text

    shipped = shipped_configs()
    key = text("model", name, error=SpecError, what="a model short name, Hugging Face id or config.json path").strip()
    lower = {k.lower(): k for k in shipped}
    short_lower = {k.lower(): v for k, v in SHORT_NAMES.items()}
    alias_lower = {k.lower(): v for k, v in HF_ALIASES.items()}
    hf_id = None
    if key.lower() in short_lower:
        hf_id = short_lower[key.lower()]
    elif key.lower() in lower:
        hf_id = lower[key.lower()]
    elif key.lower() in alias_lower:
        hf_id = alias_lower[key.lower()]
    if hf_id is not None and hf_id in shipped:
        entry = _config_dir() / shipped[hf_id]
        import json

        cfg = HFConfig(json.loads(entry.read_text()), f"energylens/data/models/{shipped[hf_id]}")
        short = next((s for s, h in SHORT_NAMES.items() if h == hf_id), hf_id.split("/")[-1].lower())
        return cfg, short, hf_id
    path = Path(key)
    if path.suffix == ".json" or exists(path):
        if exists(path / "config.json"):
            path = path / "config.json"
        cfg = HFConfig.from_path(path)
        short = (path.parent.name or path.stem) if path.name == "config.json" else path.stem
        return cfg, short, str(cfg.get("_name_or_path", ""))
    raise UnknownNameError("model", name, list(SHORT_NAMES) + list(shipped))


def load_model(name: str | Model) -> Model:
    """Build the einsum graph for a model name, HF id, config.json path or einsum spec file (.yaml/.yml,
    ``docs/einsum-spec.md``)."""
    if isinstance(name, Model):
        return name
    from energylens.checks import MAX_CONFIG_BYTES, is_file, regular_file, text

    if not isinstance(name, str):
        raise SpecError("model", name, "a model short name, Hugging Face id, config.json path, spec .yaml or Model")
    key = text("model", name, error=SpecError, what="a model short name, Hugging Face id or config.json path").strip()
    if key.lower().endswith(SPEC_SUFFIXES):
        if not is_file(key):
            raise SpecError("model spec file", key, "an existing einsum spec .yaml file (docs/einsum-spec.md)")
        path = regular_file(key, "model spec file", max_bytes=MAX_CONFIG_BYTES, what="an einsum spec .yaml file")
        stat = path.stat()
        return _load_spec_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    return _load_cached(key)


@lru_cache(maxsize=32)
def _load_spec_cached(path: str, mtime_ns: int, size: int) -> Model:
    """A spec file's model, cached per (path, modification time, size): an edited file is read again."""
    return load_model_spec(Path(path))


@lru_cache(maxsize=64)
def _load_cached(name: str) -> Model:
    from energylens.models.builders import BUILDERS

    cfg, short, hf_id = resolve(name)
    builder = BUILDERS.get(cfg.model_type)
    if builder is None:
        raise SpecError(f"model {name!r} model_type", cfg.model_type,
                        "a supported architecture: " + ", ".join(sorted(BUILDERS)))
    return builder(cfg, short, hf_id)
