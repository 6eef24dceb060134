"""Quantisation read from a checkpoint: ``quantization_config`` in ``config.json`` and ``hf_quant_config.json``.

Formats (``energylens.graph.precision`` says how each is costed):

=====================  ==================================================================================
``quant_method``       read as
=====================  ==================================================================================
``fp8``                FP8 e4m3 weights, per-tensor or ``weight_block_size`` (128x128) fp32 scales; fp8
                       activations (``activation_scheme`` dynamic or static): w8a8
``fbgemm_fp8``         FP8 weights, per-channel scales; dynamic per-token fp8 activations: w8a8
``compressed-tensors`` each ``config_groups`` entry: weights float8 (tensor/channel/block), int4/int8
                       (group/channel, symmetric or with zero points), float4 group 16 (NVFP4) or 32
                       (MXFP4); ``input_activations`` fp8/fp4/int8 or none (weight-only); ``ignore``
``awq``                int4, ``group_size`` (128), fp16 scales + int4 zero points: w4a16
``gptq``/``auto-round`` int4/int8, ``group_size`` (-1: per channel), fp16 scales (+ zeros if not ``sym``):
                       w4a16 / w8a16
``mxfp4``              MXFP4 (block 32, e8m0 scales): w4a16 (gpt-oss experts)
``modelopt`` and       ``quant_algo`` FP8 (per-tensor w8a8), FP8_PER_CHANNEL_PER_TOKEN, FP8_BLOCK_SCALES,
``hf_quant_config``    NVFP4 (block 16, fp8 scales, w4a4), W4A16_NVFP4, INT4_AWQ, W4A8_AWQ, INT8_SQ,
                       MXFP4, W4A8_MXFP4_FP8 and MIXED_PRECISION (``quantized_layers``); ``exclude_modules``
=====================  ==================================================================================

Which modules stay unquantised follows the checkpoint (``ignore``, ``modules_to_not_convert``,
``exclude_modules``, module patterns with ``*`` or ``re:``). Whatever the checkpoint says, the MoE router and
the embedding stay in the float dtype (vLLM builds routers without a quantisation method) and so does the
LM head, except for GPTQ with ``lm_head: true``. Patterns are matched against the Hugging Face module names
of each graph weight in each layer (``LEAVES``); a weight whose layers disagree is costed in the format of
most of them, with a note. A ``quant_method`` not listed is an error, never silently bf16.
"""

from __future__ import annotations

import fnmatch
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from energylens.errors import SpecError
from energylens.graph.model import Model
from energylens.graph.precision import (
    FLOAT_DTYPES,
    FP32_SCALE_BYTES,
    Precision,
    WeightFormat,
    fp8,
    int_weights,
    mxfp4,
    nvfp4,
    plain,
    weight_class,
)
from energylens.models.hf_config import HFConfig

LAYER_ROOTS = ("model.layers.{i}", "model.language_model.layers.{i}", "language_model.model.layers.{i}",
               "model.language_model.model.layers.{i}", "layers.{i}")
TOP_LEVEL = {
    "lm_head.weight": ("lm_head", "language_model.lm_head", "model.language_model.lm_head"),
    "embed.weight": ("model.embed_tokens", "model.language_model.embed_tokens", "language_model.model.embed_tokens"),
}
_GATE_UP = ("mlp.experts.gate_up_proj", "feed_forward.experts.gate_up_proj", "feed_forward.experts")
LEAVES: dict[str, tuple[str, ...]] = {  # graph weight -> Hugging Face module names inside one layer
    "attn.wq": ("self_attn.q_proj",), "attn.wk": ("self_attn.k_proj",), "attn.wv": ("self_attn.v_proj",),
    "attn.wo": ("self_attn.o_proj",), "attn.w_q_a": ("self_attn.q_a_proj",),
    "attn.w_q_b_nope": ("self_attn.q_b_proj",), "attn.w_q_b_rope": ("self_attn.q_b_proj",),
    "attn.w_kv_a": ("self_attn.kv_a_proj_with_mqa",), "attn.w_k_rope": ("self_attn.kv_a_proj_with_mqa",),
    "attn.w_uk": ("self_attn.kv_b_proj",), "attn.w_uv": ("self_attn.kv_b_proj",),
    "mlp.w_gate": ("mlp.gate_proj", "feed_forward.gate_proj"), "mlp.w_up": ("mlp.up_proj", "feed_forward.up_proj"),
    "mlp.w_down": ("mlp.down_proj", "feed_forward.down_proj"),
    "moe.experts.w_gate": ("mlp.experts.0.gate_proj", "block_sparse_moe.experts.0.w1", *_GATE_UP),
    "moe.experts.w_up": ("mlp.experts.0.up_proj", "block_sparse_moe.experts.0.w3", *_GATE_UP),
    "moe.experts.w_down": ("mlp.experts.0.down_proj", "block_sparse_moe.experts.0.w2", "mlp.experts.down_proj",
                           "feed_forward.experts.down_proj", "feed_forward.experts"),
    "moe.shared.w_gate": ("mlp.shared_experts.gate_proj", "mlp.shared_expert.gate_proj",
                          "feed_forward.shared_expert.gate_proj"),
    "moe.shared.w_up": ("mlp.shared_experts.up_proj", "mlp.shared_expert.up_proj",
                        "feed_forward.shared_expert.up_proj"),
    "moe.shared.w_down": ("mlp.shared_experts.down_proj", "mlp.shared_expert.down_proj",
                          "feed_forward.shared_expert.down_proj"),
}
NEVER_QUANTISED = ("router", "embedding", "norm", "other")
SUPPORTED_METHODS = ("fp8", "fbgemm_fp8", "compressed-tensors", "awq", "gptq", "auto-round", "mxfp4", "modelopt")


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _match(pattern: str, path: str) -> bool:
    """A module pattern as checkpoints write them: ``re:<regex>``, a glob, or a (suffix) module name."""
    if pattern.startswith("re:"):
        return re.match(pattern[3:], path) is not None
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(path, pattern)
    return path == pattern or path.endswith("." + pattern)


def _hits(patterns, paths: list[str]) -> bool:
    return any(_match(p, a) for path in paths for a in _ancestors(path) for p in patterns)


def _patterns(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(where, value, "a list of module names or patterns")
    return value


class _Scheme:
    """Format of each Hugging Face module of one checkpoint (None: not quantised)."""

    def __init__(self, method: str, source: str, exclude: list[str], fmt: WeightFormat | None = None,
                 groups: list[tuple[list[str], WeightFormat]] | None = None,
                 layers: Mapping[str, WeightFormat] | None = None, lm_head: bool = False) -> None:
        self.method, self.source, self.exclude = method, source, exclude
        self.fmt, self.groups, self.layers, self.lm_head = fmt, groups, layers, lm_head

    def format_for(self, paths: list[str]) -> WeightFormat | None:
        if _hits(self.exclude, paths):
            return None
        if self.layers is not None:  # MIXED_PRECISION: only the listed modules are quantised
            for path in paths:
                for a in _ancestors(path):
                    for key, f in self.layers.items():
                        if a == key or _match(key, a):
                            return f
            return None
        if self.groups is not None:
            for targets, f in self.groups:
                if "Linear" in targets or _hits(targets, paths):
                    return f
            return None
        return self.fmt


def _num(value: Any, where: str, default: int | None = None) -> int | None:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise SpecError(where, value, "an integer")
    return int(value)


def _ct_format(weights: Mapping, acts: Mapping | None, k: int, where: str) -> WeightFormat:
    """One compressed-tensors ``config_groups`` entry."""
    if not isinstance(weights, Mapping):
        raise SpecError(f"{where}.weights", weights, "a mapping (num_bits, type, strategy, ...)")
    bits = _num(weights.get("num_bits"), f"{where}.weights.num_bits")
    kind = str(weights.get("type", "int"))
    strategy = str(weights.get("strategy") or "tensor")
    group = _num(weights.get("group_size"), f"{where}.weights.group_size")
    act = None
    if isinstance(acts, Mapping) and acts.get("num_bits"):
        a_bits, a_type = _num(acts.get("num_bits"), f"{where}.input_activations.num_bits"), str(acts.get("type", "int"))
        act = {(8, "float"): "fp8", (4, "float"): "fp4", (8, "int"): "int8"}.get((a_bits, a_type))
        if act is None:
            raise SpecError(f"{where}.input_activations", dict(acts), "8-bit float, 4-bit float or 8-bit int activations")
    if kind == "float" and bits == 8:
        if strategy == "block":
            block = weights.get("block_structure") or [128, 128]
            return fp8("block", activation=act, block=(int(block[0]), int(block[1])), method="compressed-tensors")
        return fp8("channel" if strategy in ("channel", "group") else "tensor", activation=act, k=k,
                   method="compressed-tensors")
    if kind == "float" and bits == 4:
        if group == 32:
            return mxfp4(activation=act, method="compressed-tensors")
        return nvfp4(activation=act, method="compressed-tensors")
    if kind == "int" and bits in (4, 8):
        return int_weights(bits, group if strategy == "group" else None, symmetric=bool(weights.get("symmetric", True)),
                           k=k, activation=act, method="compressed-tensors")
    raise SpecError(f"{where}.weights", {"num_bits": bits, "type": kind},
                    "float8, float4 (NVFP4/MXFP4), int4 or int8 weights")


_MODELOPT = {
    "FP8": lambda g, k: fp8("tensor", method="modelopt"),
    "FP8_PER_CHANNEL_PER_TOKEN": lambda g, k: fp8("channel", k=k, method="modelopt"),
    "FP8_BLOCK_SCALES": lambda g, k: fp8("block", method="modelopt"),
    "FP8_PB_WO": lambda g, k: fp8("block", activation=None, method="modelopt"),
    "NVFP4": lambda g, k: nvfp4(),
    "W4A16_NVFP4": lambda g, k: nvfp4(activation=None),
    "INT4_AWQ": lambda g, k: int_weights(4, g or 128, method="modelopt"),
    "W4A8_AWQ": lambda g, k: int_weights(4, g or 128, activation="fp8", method="modelopt"),
    "INT8_SQ": lambda g, k: int_weights(8, None, k=k, scale_bytes=FP32_SCALE_BYTES, activation="int8", method="modelopt"),
    "MXFP4": lambda g, k: mxfp4(method="modelopt"),
    "W4A16_MXFP4": lambda g, k: mxfp4(method="modelopt"),
    "W4A8_MXFP4_FP8": lambda g, k: mxfp4(activation="fp8", method="modelopt"),
}


def _modelopt_format(algo: Any, group: Any, k: int, where: str) -> WeightFormat:
    key = str(algo).upper()
    if key not in _MODELOPT:
        raise SpecError(where, algo, "a ModelOpt quant_algo energylens models: " + ", ".join(_MODELOPT)
                        + " (or MIXED_PRECISION)")
    return _MODELOPT[key](_num(group, f"{where} group_size"), k)


def _modelopt_scheme(q: Mapping, source: str, k: int) -> tuple[_Scheme, bool]:
    """(scheme, FP8 KV-cache scales present) of a ModelOpt ``quantization`` block."""
    algo = q.get("quant_algo")
    exclude = _patterns(q.get("exclude_modules", q.get("ignore")), f"{source}: exclude_modules")
    kv = str(q.get("kv_cache_quant_algo") or "").upper() == "FP8" or _kv_scheme_fp8(q.get("kv_cache_scheme"))
    if str(algo).upper() == "MIXED_PRECISION":
        layers = q.get("quantized_layers")
        if not isinstance(layers, Mapping):
            raise SpecError(f"{source}: quantized_layers", layers, "a mapping module -> {quant_algo, group_size}")
        fmts = {name: _modelopt_format(v.get("quant_algo"), v.get("group_size"), k, f"{source}: quantized_layers.{name}")
                for name, v in layers.items() if isinstance(v, Mapping)}
        return _Scheme("modelopt", source, exclude, layers=fmts), kv
    return _Scheme("modelopt", source, exclude, fmt=_modelopt_format(algo, q.get("group_size"), k,
                                                                    f"{source}: quant_algo")), kv


def _kv_scheme_fp8(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("num_bits") == 8 and value.get("type", "float") == "float"


def scheme_of(cfg: HFConfig, quant_file: Mapping | None = None) -> tuple[_Scheme | None, bool]:
    """The checkpoint's quantisation scheme (None: unquantised) and whether it carries FP8 KV-cache scales."""
    k = int(cfg.get("hidden_size") or 0)
    q = cfg.get("quantization_config")
    where = f"{cfg.origin}: quantization_config"
    if q is None or q == {}:
        if quant_file is None:
            return None, False
        block = quant_file.get("quantization", quant_file)
        if not isinstance(block, Mapping):
            raise SpecError("hf_quant_config.json: quantization", block, "a mapping with quant_algo")
        return _modelopt_scheme(block, "hf_quant_config.json (ModelOpt)", k)
    if not isinstance(q, Mapping):
        raise SpecError(where, q, "a mapping with quant_method")
    method = str(q.get("quant_method", "")).lower()
    source = f"config.json quantization_config ({method})"
    exclude = _patterns(q.get("modules_to_not_convert") or q.get("ignored_layers") or q.get("ignore"),
                        f"{where}.modules_to_not_convert")
    if method == "fp8":
        block = q.get("weight_block_size")
        f = fp8("block", block=(int(block[0]), int(block[1]))) if block else fp8("tensor")
        return _Scheme(method, source, exclude, fmt=f), False
    if method == "fbgemm_fp8":
        return _Scheme(method, source, exclude, fmt=fp8("channel", k=k, method=method)), False
    if method in ("awq", "gptq", "auto-round"):
        bits = _num(q.get("bits", q.get("w_bit")), f"{where}.bits", 4)
        group = _num(q.get("group_size", q.get("q_group_size")), f"{where}.group_size", 128)
        sym = not bool(q.get("zero_point", True)) if method == "awq" else bool(q.get("sym", True))
        f = int_weights(bits, group, symmetric=sym, k=k, method=method)
        return _Scheme(method, source, exclude, fmt=f, lm_head=method == "gptq" and bool(q.get("lm_head"))), False
    if method == "mxfp4":
        return _Scheme(method, source, exclude, fmt=mxfp4()), False
    if method == "modelopt" or ("quant_algo" in q and method in ("", "modelopt")):
        return _modelopt_scheme(q, source, k)
    if method == "compressed-tensors":
        groups = []
        for gname, g in (q.get("config_groups") or {}).items():
            if not isinstance(g, Mapping):
                raise SpecError(f"{where}.config_groups.{gname}", g, "a mapping with targets and weights")
            targets = _patterns(g.get("targets"), f"{where}.config_groups.{gname}.targets")
            groups.append((targets, _ct_format(g.get("weights"), g.get("input_activations"), k,
                                               f"{where}.config_groups.{gname}")))
        if not groups:
            raise SpecError(f"{where}.config_groups", q.get("config_groups"), "at least one quantisation group")
        return _Scheme(method, source, exclude, groups=groups), _kv_scheme_fp8(q.get("kv_cache_scheme"))
    raise SpecError(f"{where}.quant_method", q.get("quant_method"),
                    "a method energylens models: " + ", ".join(SUPPORTED_METHODS)
                    + " (or cost it as another format with --weight-dtype)")


def _weight_layers(model: Model) -> dict[str, list[int | None]]:
    """Graph weight name -> layer indices it occurs in (None for the embedding and head)."""
    out: dict[str, list[int | None]] = {}
    start = 0
    for block in model.blocks:
        layers = block.layers or tuple(range(start, start + block.count))
        start += block.count
        names = dict.fromkeys(t.name for op in block.ops for t in op.weights)
        for n in names:
            out.setdefault(n, []).extend(layers)
    for op in (*model.pre, *model.post):
        for t in op.weights:
            out.setdefault(t.name, [None])
    return out


def _paths(name: str, layer: int | None) -> list[str]:
    if layer is None:
        return list(TOP_LEVEL.get(name, (name.removesuffix(".weight"),)))
    leaves = LEAVES.get(name, ())
    return [root.format(i=layer) + "." + leaf for root in LAYER_ROOTS for leaf in leaves]


def checkpoint_precision(model: Model, cfg: HFConfig, quant_file: Mapping | None = None) -> Precision:
    """Every weight's format as the checkpoint stores it (``quantization_config`` or ``hf_quant_config.json``)."""
    act = model.act_dtype if model.act_dtype in FLOAT_DTYPES else "bf16"
    default = plain(act)
    scheme, kv_scales = scheme_of(cfg, quant_file)
    if scheme is None:
        return Precision(default, act, act, {}, "checkpoint dtype (unquantised)")
    weights: dict[str, WeightFormat] = {}
    notes: list[str] = []
    for name, layers in _weight_layers(model).items():
        cls = weight_class(name)
        if cls in NEVER_QUANTISED or (cls == "lm_head" and not scheme.lm_head):
            continue
        votes = Counter(scheme.format_for(_paths(name, i)) for i in layers)
        fmt, n = votes.most_common(1)[0]
        if len(votes) > 1:
            parts = ", ".join(f"{c} {f.name if f else act}" for f, c in votes.most_common())
            notes.append(f"{name} differs by layer ({parts} of {len(layers)} layers): costed as "
                         f"{fmt.name if fmt else act} in every layer")
        if fmt is not None:
            weights[name] = fmt
    kv = act
    if kv_scales and scheme.method == "modelopt":
        kv = "fp8"
        notes.append("the checkpoint's ModelOpt config quantises the KV cache to FP8: vLLM's --kv-cache-dtype "
                     "'auto' resolves to fp8 for such checkpoints (vLLM >= 0.11), so the KV cache is costed in fp8; "
                     f"--kv-cache-dtype {act} costs an unquantised cache")
    elif kv_scales:
        notes.append("the checkpoint carries FP8 KV-cache scales: --kv-cache-dtype fp8 uses them (vLLM's "
                     f"default 'auto' keeps the KV cache in {act} for {scheme.method} checkpoints)")
    if not weights:
        notes.append(f"{scheme.source}: no modelled weight is quantised (all excluded); weights costed in {act}")
    return Precision(default, act, kv, weights, scheme.source, tuple(notes))


def context_limit(cfg: HFConfig) -> tuple[int | None, str]:
    """(longest context in tokens, where it comes from): ``max_position_embeddings``, or the RoPE scaling's
    ``factor x original_max_position_embeddings`` when that is larger."""
    mpe = cfg.get("max_position_embeddings")
    limit = int(mpe) if isinstance(mpe, (int, float)) and not isinstance(mpe, bool) and mpe > 0 else None
    source = "max_position_embeddings"
    rs = cfg.get("rope_scaling")
    if isinstance(rs, Mapping) and rs.get("factor") and rs.get("original_max_position_embeddings"):
        try:
            scaled = int(float(rs["factor"]) * float(rs["original_max_position_embeddings"]))
        except (TypeError, ValueError):
            scaled = 0
        if limit is None or scaled > limit:
            limit, source = scaled, "rope_scaling factor x original_max_position_embeddings"
    return limit, source
