"""Model ids a shipped config does not carry verbatim: published variants, unsupported architectures,
closest names.

* **Variants** (offline): an id that is a shipped one plus published variant tags (``-Instruct``,
  ``-Thinking``, ``-Base``, ``-it``, date tags such as ``-2507``/``-0528``, ``-v0.1``, and quantisation tags
  ``-FP8``, ``-AWQ``, ``-GPTQ-Int4``, ``-NVFP4``, ``-MXFP4``, ``-W4A16``...) resolves to that architecture.
  Names compare by *core* tokens (case-insensitive, ``llama-3.1-8b`` = ``Llama3.1-8B``); among shipped
  configs with the same core the one sharing most variant tags wins. A quantisation tag takes the
  quantisation of a shipped sibling with the same core and tag (e.g. ``Qwen/Qwen3-32B-FP8``) if there is
  one, otherwise the publisher's published recipe for that tag (``assumed_quantisation``); a note says
  which.
* **Unsupported** architectures (``energylens/data/models/unsupported.yaml``): a clear error naming why.
* Otherwise the three closest known ids (difflib).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache

from energylens.errors import EnergyLensError, UnknownNameError

QUANT_TAGS = ("fp8", "awq", "gptq", "int4", "int8", "nvfp4", "mxfp4", "w4a16", "w8a8", "w8a16", "w4a8", "bf16",
              "fp16")
VARIANT_TAGS = ("instruct", "thinking", "base", "chat", "it", "hf", "pt", "dynamic", "static", "quantized",
                "original", *QUANT_TAGS)
_DATE = re.compile(r"^\d{4}$|^\d{6}$|^\d{8}$|^v0\.\d+$")
_KEEP = re.compile(r"^v\d+(\.\d+)*$|^\d+(\.\d+)?[a-z]*$")


def tokens(name: str) -> tuple[str, list[str]]:
    """(org, name tokens) of an id: lower case, split at ``-``/``_``/space and between a word and a number."""
    org, _, rest = name.strip().lower().rpartition("/")
    out: list[str] = []
    for tok in re.split(r"[-_\s]+", rest.replace("quantized.", "quantized-")):
        if not tok:
            continue
        if tok in VARIANT_TAGS or _DATE.match(tok) or _KEEP.match(tok):
            out.append(tok)
            continue
        out.extend(t for t in re.split(r"(?<=[a-z])(?=\d)", tok) if t)
    if len(out) > 1 and out[0] == "meta" and out[1] == "llama":
        out = out[1:]
    return org, out


def is_variant_tag(tok: str) -> bool:
    return tok in VARIANT_TAGS or bool(_DATE.match(tok))


def core(name: str) -> tuple[str, ...]:
    return tuple(t for t in tokens(name)[1] if not is_variant_tag(t))


def tags(name: str) -> set[str]:
    return {t for t in tokens(name)[1] if is_variant_tag(t)}


@dataclass(frozen=True)
class Variant:
    base: str  # shipped id whose architecture this is
    quant_tags: frozenset[str]
    other_tags: frozenset[str]
    sibling: str | None  # shipped id with the same core and the same quantisation tags


def find_variant(name: str, known: list[str]) -> Variant | None:
    """The shipped id ``name`` is a published variant of, or None."""
    want_core, want_tags = core(name), tags(name)
    if not want_core:
        return None
    org = tokens(name)[0]
    same = [k for k in known if core(k) == want_core]
    if not same:
        return None
    qt = frozenset(want_tags & set(QUANT_TAGS))

    def score(k: str) -> tuple:
        kt = tags(k)
        quantised = bool(kt & set(QUANT_TAGS))
        shared = len((kt & want_tags) - set(QUANT_TAGS))
        extra = len(kt - want_tags)
        return (not quantised, 2 * shared - extra, tokens(k)[0] == org, -len(k))

    base = max(same, key=score)
    siblings = [k for k in same if frozenset(tags(k) & set(QUANT_TAGS)) == qt and qt]
    sibling = max(siblings, key=lambda k: (tokens(k)[0] == org, len(tags(k) & want_tags))) if siblings else None
    return Variant(base, qt, frozenset(want_tags - qt), sibling)


def assumed_quantisation(quant_tags: frozenset[str], org: str, n_layers: int) -> tuple[dict | None, dict | None, str]:
    """(quantization_config, hf_quant_config, what was assumed) for a variant's quantisation tags, from the
    publisher's published recipe for that tag."""
    q = set(quant_tags)
    org = org.lower()
    if q & {"bf16", "fp16"} and not q - {"bf16", "fp16"}:
        return None, None, "unquantised (bf16/fp16 tag)"
    if "nvfp4" in q:
        return None, {"quantization": {"quant_algo": "NVFP4", "group_size": 16, "kv_cache_quant_algo": "FP8",
                                       "exclude_modules": ["lm_head"]}}, \
            "ModelOpt NVFP4 (block 16, fp8 scales, w4a4; FP8 KV-cache scales), as nvidia/Qwen3-235B-A22B-NVFP4"
    if "mxfp4" in q:
        return {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                                    "model.embed_tokens", "lm_head"]}, None, \
            "MXFP4 (block 32) for MLP/expert weights, attention in bf16, as openai/gpt-oss"
    if "awq" in q:
        return {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}, None, \
            "AWQ int4, group 128 with zero points (AutoAWQ defaults), w4a16"
    if q & {"gptq", "int4", "w4a16"} and "int8" not in q:
        return {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}, None, \
            "GPTQ-style int4, group 128, symmetric, w4a16"
    if q & {"int8", "w8a8", "w8a16"}:
        if "gptq" in q or "w8a16" in q:
            return {"quant_method": "gptq", "bits": 8, "group_size": 128, "sym": True}, None, \
                "GPTQ-style int8, group 128, w8a16"
        return {"quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
            "targets": ["Linear"], "weights": {"num_bits": 8, "type": "int", "strategy": "channel", "symmetric": True},
            "input_activations": {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True}}}}, None, \
            "int8 per-channel weights with dynamic per-token int8 activations (w8a8), as LLM Compressor's W8A8"
    if q & {"fp8", "w4a8"}:
        if org == "nvidia":
            return None, {"quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}, \
                "ModelOpt FP8 (per-tensor w8a8, FP8 KV-cache scales), as nvidia/Llama-3.1-70B-Instruct-FP8"
        if org == "meta-llama":
            last = max(n_layers - 1, 0)
            return {"quant_method": "fbgemm_fp8", "modules_to_not_convert": [
                "re:.*self_attn.*", "model.layers.0.mlp", "model.layers.0.feed_forward", f"model.layers.{last}.mlp",
                f"model.layers.{last}.feed_forward", "lm_head"]}, None, \
                "Meta's FP8 recipe (Llama 3 paper, sec. 6.2): per-channel FP8 feed-forward weights with dynamic " \
                "per-token FP8 activations; attention and the first and last layers' feed-forward in bf16"
        if org in ("qwen", "deepseek-ai", "minimaxai", "zai-org", "xiaomimimo", "moonshotai", "stepfun-ai"):
            return {"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]}, None, \
                "block-128 FP8 with dynamic FP8 activations, as the publisher's FP8 checkpoints (e.g. Qwen/Qwen3-32B-FP8)"
        return {"quant_method": "compressed-tensors", "ignore": ["lm_head"], "config_groups": {"group_0": {
            "targets": ["Linear"], "weights": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "token", "dynamic": True}}}}, None, \
            "FP8 per-channel weights with dynamic per-token FP8 activations (LLM Compressor FP8-dynamic)"
    return None, None, "unquantised"


@cache
def unsupported() -> dict:
    """``{"architectures": model_type -> why, "models": id -> model_type}`` of architectures without a builder."""
    from energylens.datafiles import data_path, safe_load

    path = data_path("models", "unsupported.yaml")
    data = safe_load(path.read_text()) if path.is_file() else {}
    return {"architectures": dict(data.get("architectures") or {}), "models": dict(data.get("models") or {})}


def unsupported_reason(model_type: str) -> str | None:
    return unsupported()["architectures"].get(model_type)


def unsupported_model(name: str) -> tuple[str, str, str] | None:
    """(catalogue id, model_type, why) when ``name`` (or a variant of it) is an unsupported catalogue model."""
    models = unsupported()["models"]
    lower = {k.lower(): k for k in models}
    hit = lower.get(name.strip().lower())
    if hit is None:
        want = core(name)
        hit = next((k for k in models if want and core(k) == want), None)
    if hit is None:
        return None
    mt = models[hit]
    return hit, mt, unsupported_reason(mt) or "no builder for this architecture"


class UnknownModelError(UnknownNameError):
    """An unknown model id: names the three closest known ids instead of listing them all."""

    def __init__(self, name: str, known: list[str], why: str) -> None:  # noqa: B042 - built from its parts
        closest = closest_ids(name, known)
        EnergyLensError.__init__(self, "model", name,
                                 "not a shipped model, a config.json path, a published variant of a shipped model, "
                                 f"or a Hugging Face id that could be read ({why}); closest: {', '.join(closest)} "
                                 "('energylens models --all' lists every shipped id)")
        self.known = sorted(set(known))
        self.closest = closest


def closest_ids(name: str, known: list[str], n: int = 3) -> list[str]:
    low = {k.lower(): k for k in known}
    key = name.strip().lower()
    hits = difflib.get_close_matches(key, list(low), n=n, cutoff=0.0)
    if len(hits) < n:  # compare the name part alone too (an org the catalogue does not use)
        short = {k.rpartition("/")[2]: k for k in low}
        hits += [short[h] for h in difflib.get_close_matches(key.rpartition("/")[2], list(short), n=n, cutoff=0.0)
                 if short[h] not in hits]
    return [low[h] for h in hits[:n]]
