"""Point planning and analytic FLOP/byte accounting for the measurement suites (pure Python).

Everything here is deterministic and torch-free: which shapes a suite measures (derived from the
dimensions of the shipped models and their tensor-parallel shards) and the analytic ``flops`` and
``bytes`` each point records. HBM bytes count every input read once and every output written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from energylens.cost.collectives import COLLECTIVES, bus_factor
from energylens.errors import UnknownNameError, WorkloadError
from energylens.hardware.profile import DTYPE_BYTES

MIB = 1 << 20
GIB = 1 << 30
SIZES = ("small", "default", "full")


@dataclass(frozen=True)
class ModelDims:
    """Decoder dimensions that fix every GEMM, attention and KV-cache shape of a model."""

    key: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    experts: int = 0
    top_k: int = 0
    moe_intermediate: int = 0
    qk_norm: bool = False

    @property
    def is_moe(self) -> bool:
        return self.experts > 0


# Measurement keys -> the catalogue's config.json (energylens/data/models): the shapes come from the
# same files the predictor builds its models from, never from a second table.
MODEL_CONFIGS: dict[str, str] = {
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
    "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B",
}


def dims_from_config(key: str, cfg) -> ModelDims:
    """A model's measurement dimensions from its Hugging Face config (``energylens.models.hf_config.HFConfig``)."""
    heads = cfg.int("num_attention_heads")
    hidden = cfg.int("hidden_size")
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0)
    return ModelDims(
        key, hidden, cfg.int("num_hidden_layers"), heads, cfg.int("num_key_value_heads", heads), head_dim,
        cfg.int("intermediate_size"), cfg.int("vocab_size"), experts=experts,
        top_k=int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
        moe_intermediate=int(cfg.get("moe_intermediate_size") or 0) if experts else 0,
        qk_norm=cfg.model_type in ("qwen3", "qwen3_moe"),
    )


def _catalogue_dims() -> dict[str, ModelDims]:
    from energylens.models.registry import resolve

    return {key: dims_from_config(key, resolve(hf_id)[0]) for key, hf_id in MODEL_CONFIGS.items()}


MODELS: dict[str, ModelDims] = _catalogue_dims()


def model_dims(key: str) -> ModelDims:
    if key not in MODELS:
        raise UnknownNameError("model", key, MODELS)
    return MODELS[key]


@dataclass(frozen=True)
class PointSpec:
    """A point to measure: what the runner builds and what the record will say about it."""

    kind: str
    dtype: str | None
    dims: dict
    flops: float
    bytes: float
    footprint_bytes: float = 0.0  # device memory the workload needs (one copy of its tensors)
    origins: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        inner = ",".join(f"{k}={v}" for k, v in self.dims.items())
        return f"{self.kind}[{self.dtype}]({inner})"


# --------------------------------------------------------------------------- accounting


def _elem(dtype: str) -> float:
    if dtype not in DTYPE_BYTES:
        raise UnknownNameError("dtype", dtype, DTYPE_BYTES)
    return DTYPE_BYTES[dtype]


def gemm_flops_bytes(m: int, n: int, k: int, batch: int = 1, dtype: str = "bf16") -> tuple[float, float]:
    """(FLOPs, HBM bytes) of ``batch`` GEMMs [m,k] x [k,n] -> [m,n]; fp8 inputs write bf16 outputs."""
    for name, v in (("m", m), ("n", n), ("k", k), ("batch", batch)):
        if v < 1:
            raise WorkloadError(f"gemm.{name}", v, "a positive integer")
    in_b = _elem(dtype)
    out_b = 2.0 if dtype == "fp8" else in_b
    flops = 2.0 * m * n * k * batch
    nbytes = batch * (m * k * in_b + k * n * in_b + m * n * out_b)
    return flops, float(nbytes)


def memcpy_flops_bytes(op: str, size_bytes: int, dtype: str = "bf16") -> tuple[float, float]:
    """``copy``: read + write ``size_bytes``; ``read``: a sum reduction reading them (one add each)."""
    if size_bytes < 1:
        raise WorkloadError("memcpy.size_bytes", size_bytes, "a positive byte count")
    if op == "copy":
        return 0.0, 2.0 * size_bytes
    if op == "read":
        return float(size_bytes / _elem(dtype)), float(size_bytes)
    raise UnknownNameError("memcpy.op", op, ("copy", "read"))


def attention_pairs(q_len: int, kv_len: int, causal: bool) -> float:
    """Query-key pairs per (batch, head); causal masks are bottom-right aligned (decode/prefill)."""
    if q_len < 1 or kv_len < 1 or (causal and q_len > kv_len):
        raise WorkloadError("attention", (q_len, kv_len), "1 <= q_len (<= kv_len when causal)")
    if not causal:
        return float(q_len * kv_len)
    return float(q_len * (kv_len - q_len) + q_len * (q_len + 1) / 2)


def attention_flops_bytes(
    batch: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    q_len: int,
    kv_len: int,
    causal: bool,
    dtype: str = "bf16",
    kv_heads_read: int | None = None,
) -> tuple[float, float]:
    """Fused attention: 4*d FLOPs per pair (QK^T and PV); bytes read Q, K, V once and write O once.

    ``kv_heads_read`` is the number of K/V heads actually stored (``heads`` when the harness had to
    expand grouped-query K/V before the call); it defaults to ``kv_heads``.
    """
    e = _elem(dtype)
    kvh = kv_heads if kv_heads_read is None else kv_heads_read
    flops = 4.0 * head_dim * attention_pairs(q_len, kv_len, causal) * batch * heads
    nbytes = e * batch * head_dim * (2.0 * q_len * heads + 2.0 * kv_len * kvh)
    return flops, nbytes


ELEMENTWISE_OPS = ("rmsnorm", "silu_mul", "rope")


def elementwise_flops_bytes(
    op: str, tokens: int, width: int, heads: int = 1, dtype: str = "bf16"
) -> tuple[float, float]:
    """Analytic cost of the fused element-wise ops of a decoder layer.

    rmsnorm:  x[T,w] -> y[T,w] with weight[w]; ~4 FLOPs/element.
    silu_mul: gate_up[T,2w] -> y[T,w]; ~5 FLOPs/output (sigmoid, two multiplies).
    rope:     x[T,heads,w] rotated with cos/sin[T,w/2]; 3 FLOPs/element.
    """
    e = _elem(dtype)
    if op == "rmsnorm":
        return 4.0 * tokens * width, e * (2.0 * tokens * width + width)
    if op == "silu_mul":
        return 5.0 * tokens * width, e * 3.0 * tokens * width
    if op == "rope":
        return 3.0 * tokens * heads * width, e * (2.0 * tokens * heads * width + tokens * width)
    raise UnknownNameError("elementwise.op", op, ELEMENTWISE_OPS)


# --------------------------------------------------------------------------- shapes from models


def projection_shapes(model: ModelDims, tp: int) -> list[tuple[str, int, int, int]]:
    """(name, N, K, batch) of every weight GEMM of one layer (plus lm_head) on one TP rank.

    Column-parallel (qkv, gate_up, lm_head) shard N; row-parallel (o, down) shard K. K/V heads are
    replicated when there are fewer than ``tp``. MoE experts keep all experts on each rank and shard
    their intermediate dimension (the usual tensor-parallel MoE); ``batch`` is then the expert count.
    """
    if tp < 1 or model.heads % tp:
        raise WorkloadError("tp", tp, f"a divisor of {model.key}'s {model.heads} attention heads")
    d = model.head_dim
    q_heads = model.heads // tp
    kv_heads = max(1, model.kv_heads // tp)
    out = [
        ("qkv", (q_heads + 2 * kv_heads) * d, model.hidden, 1),
        ("o_proj", model.hidden, q_heads * d, 1),
        ("lm_head", math.ceil(model.vocab / tp), model.hidden, 1),
    ]
    if model.is_moe:
        f = max(1, model.moe_intermediate // tp)
        out += [
            ("router", model.experts, model.hidden, 1),
            ("experts_gate_up", 2 * f, model.hidden, model.experts),
            ("experts_down", model.hidden, f, model.experts),
        ]
    else:
        f = model.intermediate // tp
        out += [("gate_up", 2 * f, model.hidden, 1), ("down", model.hidden, f, 1)]
    return out


@dataclass(frozen=True)
class MicroPlan:
    """The knobs of the ``micro`` suite for one size tier."""

    models: tuple[str, ...]
    tps: tuple[int, ...]
    tokens: tuple[int, ...]
    expert_tokens: tuple[int, ...]
    squares: tuple[int, ...]
    k_sweep: tuple[int, ...]
    memcpy_sizes: tuple[int, ...]
    prefill_lens: tuple[int, ...]
    prefill_batches: tuple[int, ...]
    decode_kv: tuple[int, ...]
    decode_batches: tuple[int, ...]
    attention_models: tuple[tuple[str, int], ...]
    elementwise_tokens: tuple[int, ...]
    fp8_models: tuple[str, ...]


MICRO_PLANS: dict[str, MicroPlan] = {
    "small": MicroPlan(
        models=("llama-3-8b",),
        tps=(1,),
        tokens=(1, 16, 256, 4096),
        expert_tokens=(),
        squares=(2048, 8192),
        k_sweep=(256, 1024, 4096),
        memcpy_sizes=tuple(MIB * 4**i for i in range(0, 7)),  # 1 MiB .. 4 GiB
        prefill_lens=(1024, 4096),
        prefill_batches=(1,),
        decode_kv=(1024, 8192),
        decode_batches=(1, 16),
        attention_models=(("llama-3-8b", 1),),
        elementwise_tokens=(256, 4096),
        fp8_models=(),
    ),
    "default": MicroPlan(
        models=("llama-3-8b", "llama-3-70b", "qwen3-30b-a3b"),
        tps=(1, 4),
        tokens=(1, 32, 512, 4096),
        expert_tokens=(1, 8, 64),
        squares=(1024, 2048, 4096, 8192, 16384),
        k_sweep=(128, 256, 512, 1024, 2048, 4096, 16384),
        memcpy_sizes=tuple(MIB * 4**i for i in range(0, 7)) + (8 * GIB,),  # 1 MiB .. 8 GiB
        prefill_lens=(512, 2048, 8192),
        prefill_batches=(1,),
        decode_kv=(512, 4096, 32768),
        decode_batches=(1, 32),
        attention_models=(("llama-3-8b", 1), ("llama-3-70b", 8)),
        elementwise_tokens=(16, 512, 8192),
        fp8_models=("llama-3-8b",),
    ),
    "full": MicroPlan(
        models=("llama-3-8b", "llama-3-70b", "qwen3-30b-a3b"),
        tps=(1, 2, 4, 8),
        tokens=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192),
        expert_tokens=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
        squares=(512, 1024, 2048, 4096, 8192, 16384),
        k_sweep=(64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384),
        memcpy_sizes=tuple(MIB * 2**i for i in range(0, 14)),  # 1 MiB .. 8 GiB
        prefill_lens=(512, 1024, 2048, 4096, 8192),
        prefill_batches=(1, 2, 4, 8),
        decode_kv=(512, 1024, 2048, 4096, 8192, 16384, 32768),
        decode_batches=(1, 2, 4, 8, 16, 32, 64, 128),
        attention_models=(("llama-3-8b", 1), ("llama-3-70b", 8), ("qwen3-30b-a3b", 1), ("llama-3-70b", 4)),
        elementwise_tokens=(1, 16, 128, 1024, 4096, 8192),
        fp8_models=("llama-3-8b", "llama-3-70b", "qwen3-30b-a3b"),
    ),
}


def micro_plan(size: str) -> MicroPlan:
    if size not in MICRO_PLANS:
        raise UnknownNameError("size", size, MICRO_PLANS)
    return MICRO_PLANS[size]


def _gemm_spec(m: int, n: int, k: int, batch: int, dtype: str, origins: tuple[str, ...]) -> PointSpec:
    if dtype == "fp8":  # torch._scaled_mm wants every dimension a multiple of 16
        m = max(16, -(-m // 16) * 16)
    flops, nbytes = gemm_flops_bytes(m, n, k, batch, dtype)
    return PointSpec("gemm", dtype, {"m": m, "n": n, "k": k, "batch": batch}, flops, nbytes, nbytes, origins)


def gemm_points(plan: MicroPlan, dtypes: tuple[str, ...] = ("bf16", "fp8")) -> list[PointSpec]:
    """GEMMs from the models' TP shards at the plan's token counts, plus squares and a K sweep.

    Duplicated shapes are measured once; ``origins`` lists every (model, tp, projection) using it.
    fp8 is planned for ``plan.fp8_models`` (dense GEMMs only: torch has no grouped fp8 GEMM).
    """
    found: dict[tuple, list[str]] = {}

    def add(m: int, n: int, k: int, batch: int, dtype: str, origin: str) -> None:
        found.setdefault((m, n, k, batch, dtype), []).append(origin)

    for dtype in dtypes:
        for key in plan.models if dtype == "bf16" else plan.fp8_models:
            model = model_dims(key)
            for tp in plan.tps:
                for name, n, k, batch in projection_shapes(model, tp):
                    if batch > 1:
                        if dtype != "bf16":
                            continue
                        for m in plan.expert_tokens:
                            add(m, n, k, batch, dtype, f"{key} tp{tp} {name} ({m} tokens/expert)")
                    else:
                        for m in plan.tokens:
                            add(m, n, k, 1, dtype, f"{key} tp{tp} {name}")
        for s in plan.squares:
            add(s, s, s, 1, dtype, "square")
        for k in plan.k_sweep:
            add(8192, 8192, k, 1, dtype, "k-sweep")
    return [_gemm_spec(m, n, k, b, dt, tuple(o)) for (m, n, k, b, dt), o in found.items()]


def memcpy_points(plan: MicroPlan, dtype: str = "bf16") -> list[PointSpec]:
    out = []
    for op in ("copy", "read"):
        for size in plan.memcpy_sizes:
            flops, nbytes = memcpy_flops_bytes(op, size, dtype)
            footprint = 2 * size if op == "copy" else size
            out.append(PointSpec("memcpy", dtype, {"op": op, "size_bytes": size}, flops, nbytes, footprint))
    return out


def attention_points(plan: MicroPlan, dtype: str = "bf16") -> list[PointSpec]:
    """SDPA prefill (causal, q_len = kv_len) and decode (q_len 1) with per-rank head counts."""
    out = []
    e = _elem(dtype)
    for key, tp in plan.attention_models:
        model = model_dims(key)
        heads = model.heads // tp
        kvh = max(1, model.kv_heads // tp)
        base = {"model": key, "tp": tp, "heads": heads, "kv_heads": kvh, "head_dim": model.head_dim}
        for b in plan.prefill_batches:
            for s in plan.prefill_lens:
                flops, nbytes = attention_flops_bytes(b, heads, kvh, model.head_dim, s, s, True, dtype)
                dims = {**base, "phase": "prefill", "batch": b, "q_len": s, "kv_len": s, "causal": True}
                out.append(PointSpec("attention", dtype, dims, flops, nbytes, nbytes))
        for b in plan.decode_batches:
            for kv in plan.decode_kv:
                flops, nbytes = attention_flops_bytes(b, heads, kvh, model.head_dim, 1, kv, False, dtype)
                dims = {**base, "phase": "decode", "batch": b, "q_len": 1, "kv_len": kv, "causal": False}
                # worst case (K/V expanded to every query head) for the memory check
                footprint = e * b * model.head_dim * (2 * heads + 2 * kv * heads)
                out.append(PointSpec("attention", dtype, dims, flops, nbytes, footprint))
    return out


def elementwise_points(
    plan: MicroPlan, model_key: str = "llama-3-8b", dtype: str = "bf16"
) -> list[PointSpec]:
    model = model_dims(model_key)
    out = []
    for t in plan.elementwise_tokens:
        for op, width, heads in (
            ("rmsnorm", model.hidden, 1),
            ("silu_mul", model.intermediate, 1),
            ("rope", model.head_dim, model.heads),
        ):
            flops, nbytes = elementwise_flops_bytes(op, t, width, heads, dtype)
            dims = {"op": op, "tokens": t, "width": width, "heads": heads, "model": model_key}
            out.append(PointSpec("elementwise", dtype, dims, flops, nbytes, 2 * nbytes))
    return out


def idle_point(seconds: float) -> PointSpec:
    return PointSpec("idle", None, {"seconds": seconds}, 0.0, 0.0, 0.0)


MICRO_KINDS = ("idle", "memcpy", "gemm", "attention", "elementwise")


def plan_micro(
    size: str = "default", only: tuple[str, ...] | None = None, fp8: bool = True, idle_s: float = 5.0
) -> list[PointSpec]:
    """Every point of the ``micro`` suite, cheapest-to-fit first (idle, memcpy, gemm, ...)."""
    plan = micro_plan(size)
    kinds = MICRO_KINDS if not only else tuple(only)
    for k in kinds:
        if k not in MICRO_KINDS:
            raise UnknownNameError("only", k, MICRO_KINDS)
    points: list[PointSpec] = []
    for kind in MICRO_KINDS:
        if kind not in kinds:
            continue
        if kind == "idle":
            points.append(idle_point(idle_s))
        elif kind == "memcpy":
            points += memcpy_points(plan)
        elif kind == "gemm":
            points += gemm_points(plan, ("bf16", "fp8") if fp8 else ("bf16",))
        elif kind == "attention":
            points += attention_points(plan)
        elif kind == "elementwise":
            points += elementwise_points(plan)
    return points


# --------------------------------------------------------------------------- whole models


def layer_weight_bytes(model: ModelDims, dtype: str = "bf16") -> float:
    """Bytes of one decoder layer's weights (all experts for MoE)."""
    e = _elem(dtype)
    h, d = model.hidden, model.head_dim
    attn = h * (model.heads + 2 * model.kv_heads) * d + model.heads * d * h
    if model.is_moe:
        mlp = model.experts * 3 * h * model.moe_intermediate + model.experts * h
    else:
        mlp = 3 * h * model.intermediate
    norms = 2 * h + (2 * d if model.qk_norm else 0)
    return e * (attn + mlp + norms)


def model_weight_bytes(model: ModelDims, layers: int, dtype: str = "bf16") -> float:
    """Decoder layers plus embedding, final norm and (untied) lm_head."""
    return layers * layer_weight_bytes(model, dtype) + _elem(dtype) * (
        2 * model.vocab * model.hidden + model.hidden
    )


def kv_cache_bytes(model: ModelDims, layers: int, batch: int, tokens: int, dtype: str = "bf16") -> float:
    return _elem(dtype) * 2.0 * layers * batch * tokens * model.kv_heads * model.head_dim


def _active_experts(model: ModelDims, tokens: int) -> float:
    """Expected distinct experts hit by ``tokens`` tokens routed uniformly to top_k experts."""
    if not model.is_moe:
        return 0.0
    return model.experts * (1.0 - (1.0 - model.top_k / model.experts) ** tokens)


def model_flops_bytes(
    model: ModelDims,
    layers: int,
    batch: int,
    new_tokens: int,
    kv_len: int,
    dtype: str = "bf16",
    head: bool = True,
) -> tuple[float, float]:
    """Analytic (FLOPs, HBM bytes) of one forward over ``new_tokens`` per sequence after ``kv_len``.

    FLOPs: weight GEMMs over every token, attention pairs (causal), and with ``head`` the lm_head for
    the last token of each sequence. Bytes: weights read once (MoE: the expected distinct active
    experts), the KV cache read and the new K/V written, with ``head`` the lm_head and embedding rows;
    activations are not counted.
    """
    e = _elem(dtype)
    h, d = model.hidden, model.head_dim
    tokens = batch * new_tokens
    total = kv_len + new_tokens
    attn_w = h * (model.heads + 2 * model.kv_heads) * d + model.heads * d * h
    flops_layer = 2.0 * tokens * attn_w
    flops_layer += 4.0 * d * model.heads * batch * attention_pairs(new_tokens, total, True)
    bytes_layer = e * attn_w
    if model.is_moe:
        expert_w = 3 * h * model.moe_intermediate
        flops_layer += 2.0 * tokens * (model.experts * h + model.top_k * expert_w)
        bytes_layer += e * (model.experts * h + _active_experts(model, tokens) * expert_w)
    else:
        flops_layer += 2.0 * tokens * 3 * h * model.intermediate
        bytes_layer += e * 3 * h * model.intermediate
    bytes_layer += kv_cache_bytes(model, 1, batch, kv_len, dtype) + kv_cache_bytes(
        model, 1, batch, new_tokens, dtype
    )
    flops, nbytes = layers * flops_layer, layers * bytes_layer
    if head:
        flops += 2.0 * batch * h * model.vocab
        nbytes += e * (model.vocab * h + tokens * h)  # lm_head + embedding rows
    return flops, nbytes


@dataclass(frozen=True)
class ModelsPlan:
    prefill: tuple[tuple[int, int], ...]  # (batch, prompt)
    decode: tuple[tuple[int, int], ...]  # (batch, kv_len)


MODELS_PLANS: dict[str, ModelsPlan] = {
    "small": ModelsPlan(prefill=((1, 512), (1, 2048)), decode=((1, 1024), (16, 1024))),
    "default": ModelsPlan(
        prefill=((1, 512), (1, 2048), (1, 8192), (4, 2048), (16, 512)),
        decode=tuple((b, kv) for b in (1, 8, 32, 64, 128) for kv in (512, 2048, 8192, 32768)),
    ),
    "full": ModelsPlan(
        prefill=tuple((b, s) for b in (1, 2, 4, 8, 16) for s in (256, 512, 1024, 2048, 4096, 8192)),
        decode=tuple((b, kv) for b in (1, 2, 4, 8, 16, 32, 64, 128, 256) for kv in (512, 2048, 8192, 32768)),
    ),
}


def max_layers_fitting(
    model: ModelDims, memory_bytes: float, reserve_fraction: float = 0.35, dtype: str = "bf16"
) -> int:
    """Most decoder layers whose weights fit in ``(1 - reserve_fraction)`` of the device memory."""
    e = _elem(dtype)
    fixed = e * (2 * model.vocab * model.hidden + model.hidden)
    room = memory_bytes * (1.0 - reserve_fraction) - fixed
    return max(0, min(model.layers, int(room // layer_weight_bytes(model, dtype))))


def plan_models(
    size: str,
    memory_bytes: float,
    models: tuple[str, ...] = ("llama-3-8b", "qwen3-30b-a3b"),
    dtype: str = "bf16",
    memory_fraction: float = 0.85,
) -> list[PointSpec]:
    """One decoder layer (``scope`` "layer": no embedding or lm_head) and the whole model (``scope``
    "model", or "model-truncated" with ``layers`` < ``model_layers`` when the weights do not fit) at
    prefill and decode points whose weights, KV cache and activations fit ``memory_bytes``."""
    if size not in MODELS_PLANS:
        raise UnknownNameError("size", size, MODELS_PLANS)
    plan = MODELS_PLANS[size]
    out: list[PointSpec] = []
    budget = memory_bytes * memory_fraction
    for key in models:
        model = model_dims(key)
        full_layers = max_layers_fitting(model, memory_bytes, dtype=dtype)
        for layers in sorted({1, full_layers}):
            if layers < 1:
                continue
            weights = model_weight_bytes(model, layers, dtype)
            scope = "layer" if layers == 1 else ("model" if layers == model.layers else "model-truncated")
            for phase, pairs in (("prefill", plan.prefill), ("decode", plan.decode)):
                for batch, length in pairs:
                    new, kv = (length, 0) if phase == "prefill" else (1, length)
                    cache = kv_cache_bytes(model, layers, batch, kv + new, dtype)
                    tokens = batch * new
                    width = max(model.intermediate, model.moe_intermediate * model.top_k, model.vocab // 8)
                    act = _elem(dtype) * tokens * (8 * model.hidden + 3 * width)
                    if weights + cache + act > budget:
                        continue
                    flops, nbytes = model_flops_bytes(
                        model, layers, batch, new, kv, dtype, head=scope != "layer"
                    )
                    dims = {
                        "model": key,
                        "scope": scope,
                        "layers": layers,
                        "model_layers": model.layers,
                        "batch": batch,
                        "new_tokens": new,
                        "kv_len": kv,
                    }
                    out.append(PointSpec(f"model_{phase}", dtype, dims, flops, nbytes, weights + cache + act))
    return out


# --------------------------------------------------------------------------- collectives

COLLECTIVE_OPS = COLLECTIVES  # the collectives the cost model knows (energylens.cost.collectives)


def collective_sizes(size: str) -> tuple[int, ...]:
    """Message sizes per rank: 4 KiB .. 1 GiB (x4 steps; x2 for ``full``)."""
    step = 2 if size == "full" else 4
    out, s = [], 4096
    while s <= GIB:
        out.append(s)
        s *= step
    return tuple(out)


def plan_collectives(size: str, world: int, dtype: str = "bf16") -> list[PointSpec]:
    if world < 2:
        return []
    out = []
    for op in COLLECTIVE_OPS:
        for nbytes in collective_sizes(size):
            dims = {
                "op": op,
                "size_bytes": nbytes,
                "world_size": world,
                "bus_bytes": float(bus_factor(op, world)) * nbytes,
            }
            out.append(PointSpec("collective", dtype, dims, 0.0, float(nbytes), 3.0 * nbytes))
    return out
