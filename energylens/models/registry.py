"""Model names: short names (``llama3-8b``), Hugging Face ids (``meta-llama/Llama-3.1-70B-Instruct``),
local ``config.json`` paths, einsum spec files, any Hugging Face id when online (``energylens.models.hub``)
and published variants of shipped ids offline (``energylens.models.names``), resolved in that order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache, lru_cache
from pathlib import Path

from energylens.datafiles import data_path
from energylens.errors import SpecError, UnsupportedModelError
from energylens.graph.model import Model
from energylens.models.hf_config import HFConfig

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
    "meta-llama/Llama-3.1-8B": "meta-llama/Meta-Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "meta-llama/Llama-3.1-70B": "meta-llama/Meta-Llama-3.1-70B",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "meta-llama/Llama-3.1-70B-Instruct",
    "meta-llama/Llama-3.1-405B": "meta-llama/Meta-Llama-3.1-405B",
    "deepseek-ai/DeepSeek-V3.1": "deepseek-ai/DeepSeek-V3",
    "deepseek-ai/DeepSeek-R1-0528": "deepseek-ai/DeepSeek-R1",
}
# = ``energylens.specs.model_yaml.SPEC_SUFFIXES`` (a test checks): the YAML spec language is imported only
# when a spec file is loaded, not for a shipped model (cold start, issue 19).
SPEC_SUFFIXES = (".yaml", ".yml")
QUANT_FILE_SUFFIX = ".hf_quant_config.json"  # shipped hf_quant_config.json beside <org>__<name>.json
# Parts of an architecture the builders leave out, by model_type (added to the model's notes).
ARCHITECTURE_NOTES = {
    "mimo": "multi-token-prediction layers not modelled",
    "qwen3_vl_text": "vision tower not modelled (text serving)",
    "qwen3_vl_moe_text": "vision tower not modelled (text serving)",
    "kimi_k2": "vision tower (if any) not modelled (text serving)",
}


@dataclass(frozen=True)
class Resolved:
    """A model name resolved to a config: what was read and what was assumed."""

    cfg: HFConfig
    short: str
    hf_id: str
    quant_file: Mapping | None = None
    notes: tuple[str, ...] = ()


def _config_dir():
    return data_path("models")


@cache
def shipped_configs() -> dict[str, str]:
    """HF id -> file name of every shipped config.json."""
    out: dict[str, str] = {}
    for entry in _config_dir().iterdir():
        if entry.name.endswith(".json") and "__" in entry.name and not entry.name.endswith(QUANT_FILE_SUFFIX):
            org, _, rest = entry.name[: -len(".json")].partition("__")
            out[f"{org}/{rest}"] = entry.name
    return out


def known_models() -> list[str]:
    return sorted(SHORT_NAMES) + sorted(shipped_configs())


def _read_json(entry, origin: str) -> dict:
    try:
        data = json.loads(entry.read_text())
    except json.JSONDecodeError as exc:
        raise SpecError(origin, "", f"valid JSON (line {exc.lineno}: {exc.msg})") from exc
    if not isinstance(data, dict):
        raise SpecError(origin, type(data).__name__, "a JSON object")
    return data


def _shipped(hf_id: str, notes: tuple[str, ...] = ()) -> Resolved:
    fname = shipped_configs()[hf_id]
    entry = _config_dir() / fname
    cfg = HFConfig(_read_json(entry, f"energylens/data/models/{fname}"), f"energylens/data/models/{fname}")
    qpath = _config_dir() / (fname[: -len(".json")] + QUANT_FILE_SUFFIX)
    quant = _read_json(qpath, f"energylens/data/models/{qpath.name}") if qpath.is_file() else None
    short = next((s for s, h in SHORT_NAMES.items() if h == hf_id), hf_id.split("/")[-1].lower())
    return Resolved(cfg, short, hf_id, quant, notes)


def _variant(name: str, why: str) -> Resolved | None:
    """A published variant of a shipped model (offline), with its quantisation and a note."""
    from energylens.models.names import assumed_quantisation, find_variant, tokens

    v = find_variant(name, list(shipped_configs()))
    if v is None:
        return None
    base = _shipped(v.base)
    data = dict(base.cfg.data)
    quant_file = base.quant_file
    if v.quant_tags:
        if v.sibling is not None:
            sib = _shipped(v.sibling)
            q, quant_file = sib.cfg.get("quantization_config"), sib.quant_file
            what = f"the quantisation of the shipped {v.sibling}"
        else:
            q, quant_file, what = assumed_quantisation(v.quant_tags, tokens(name)[0], base.cfg.int("num_hidden_layers"))
        data.pop("quantization_config", None)
        if q is not None:
            data["quantization_config"] = q
    else:
        what = "the base checkpoint's own formats"
    cfg = HFConfig(data, base.cfg.origin)
    tag_text = ", ".join(sorted(v.quant_tags | v.other_tags)) or "none"
    note = (f"{name!r} is not shipped ({why}): assumed the architecture of {v.base} (variant tags: {tag_text}; "
            f"same shapes) with {what}")
    return Resolved(cfg, name.strip().rpartition("/")[2].lower(), name.strip(), quant_file, (note,))


def resolve_model(name: str, *, hub: bool | None = None) -> Resolved:
    """Resolve a short name, shipped Hugging Face id (case-insensitive), config.json path, any Hugging Face id
    (``huggingface_hub``; ``hub=False`` never asks it) or a published variant of a shipped id."""
    from energylens.checks import exists, text

    shipped = shipped_configs()
    key = text("model", name, error=SpecError, what="a model short name, Hugging Face id or config.json path").strip()
    lower = {k.lower(): k for k in shipped}
    short_lower = {k.lower(): v for k, v in SHORT_NAMES.items()}
    alias_lower = {k.lower(): v for k, v in HF_ALIASES.items()}
    k = key.lower()
    hf_id = short_lower.get(k) or lower.get(k) or alias_lower.get(k)
    if hf_id is not None and hf_id in shipped:
        notes = (f"{key} shares the architecture of the shipped {hf_id} (same shapes)",) if k in alias_lower else ()
        return _shipped(hf_id, notes)
    path = Path(key)
    if path.suffix == ".json" or exists(path):
        if exists(path / "config.json"):
            path = path / "config.json"
        cfg = HFConfig.from_path(path)
        qpath = path.parent / "hf_quant_config.json"
        quant = _read_json(qpath, str(qpath)) if qpath.is_file() else None
        short = (path.parent.name or path.stem) if path.name == "config.json" else path.stem
        return Resolved(cfg, short, str(cfg.get("_name_or_path", "")), quant)
    import energylens.models.hub as hf  # beyond the shipped names only (cold start, issue 19)
    from energylens.models.names import UnknownModelError, unsupported_model

    bad = unsupported_model(key)
    if bad is not None:
        raise UnsupportedModelError(f"model {name!r} model_type", bad[1], f"not supported: {bad[2]}")
    why = "not a Hugging Face id"
    if hub is not False and hf.looks_like_repo_id(key):
        got, why = hf.fetch(key)
        if got is not None:
            cfg = HFConfig(got.config, got.origin)
            return Resolved(cfg, key.rpartition("/")[2].lower(), key, got.quant_config,
                            (f"config.json read from the Hugging Face Hub cache: {got.origin}",))
    elif hub is False:
        why = "the Hugging Face Hub is not asked here"
    found = _variant(key, why)
    if found is not None:
        return found
    raise UnknownModelError(name, list(SHORT_NAMES) + list(shipped) + list(HF_ALIASES), why)


def resolve(name: str) -> tuple[HFConfig, str, str]:
    """(config, short name, hf id) for a short name, HF id (case-insensitive) or config path."""
    r = resolve_model(name)
    return r.cfg, r.short, r.hf_id


def load_model(name: str | Model, *, hub: bool | None = None) -> Model:
    """Build the einsum graph for a model name, HF id, config.json path or einsum spec file (.yaml/.yml,
    ``docs/einsum-spec.md``), with the checkpoint's tensor formats (``energylens.models.quant``) and context
    length. ``hub=False``: never ask the Hugging Face Hub (offline resolution only)."""
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
    return _load_cached(key, hub)


@lru_cache(maxsize=32)
def _load_spec_cached(path: str, mtime_ns: int, size: int) -> Model:
    """A spec file's model, cached per (path, modification time, size): an edited file is read again."""
    from energylens.specs.model_yaml import load_model_spec

    return load_model_spec(Path(path))


@lru_cache(maxsize=64)
def _load_cached(name: str, hub: bool | None) -> Model:
    from energylens.models.builders import BUILDERS
    from energylens.models.quant import checkpoint_precision, context_limit

    r = resolve_model(name, hub=hub)
    cfg = r.cfg
    builder = BUILDERS.get(cfg.model_type)
    if builder is None:
        from energylens.models.names import unsupported_reason

        why = unsupported_reason(cfg.model_type) or unsupported_reason(str(cfg.get("_outer_model_type")))
        if why:
            raise UnsupportedModelError(f"model {name!r} model_type", cfg.model_type, f"not supported: {why}")
        raise SpecError(f"model {name!r} model_type", cfg.model_type,
                        "a supported architecture: " + ", ".join(sorted(BUILDERS)))
    model = builder(cfg, r.short, r.hf_id)
    limit, source = context_limit(cfg)
    if limit is None and model.info.get("default_max_position_embeddings"):
        limit = int(model.info["default_max_position_embeddings"])
        source = "max_position_embeddings (transformers default; the config leaves it out)"
    info = dict(model.info)
    extra = ARCHITECTURE_NOTES.get(cfg.model_type)
    if extra:
        info["notes"] = tuple(info.get("notes", ())) + (extra,)
    info.update({"max_context": limit, "max_context_source": source, "resolution_notes": r.notes})
    model = replace(model, info=info)
    return model.with_precision(checkpoint_precision(model, cfg, r.quant_file))
