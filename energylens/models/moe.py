"""Mixture-of-experts decoders from ``config.json``: Qwen3-MoE / Qwen2-MoE, Mixtral, DeepSeek-V3/V2
(multi-head latent attention), gpt-oss and Llama 4 (Scout, Maverick).

An MoE MLP is written as einsums with an expert dimension ``e`` (listed in ``ARCHITECTURES``, collected by :mod:`energylens.models.builders` on
import; ``energylens.models.registry`` imports this module):

* router ``"btd,de->bte"`` (its weight is ``shardable=False``: every rank holds the whole router);
* ``topk`` (softmax/sigmoid + top-k selection) ``bte -> btx`` (``x`` = the k routed slots);
* ``dispatch`` (``attrs={"route": "dispatch"}``) ``btd, btx -> ecd``: per-expert token buffers, ``c``
  tokens per expert. It shares the gate/up fusion group (vLLM's fused MoE kernel gathers the rows
  of its experts directly); under expert parallelism the derived all-to-all splits it off;
* grouped expert GEMMs ``"ecd,edf->ecf"`` (gate and up: one fused kernel), SiLU x up, and
  ``"ecf,efd->ecd"`` (down), all with ``attrs={"moe": "expert"}``;
* shared experts (DeepSeek, Llama 4, Qwen2-MoE) as a normal SwiGLU on ``btd`` whose down projection
  carries ``attrs={"moe": "shared"}`` (its partial sum under tensor parallelism is reduced once,
  together with the routed output, as vLLM does);
* ``combine`` (``attrs={"route": "combine"}``) ``ecd, btx[, shared btd] -> btd``: the top-k
  weighted sum of expert outputs (plus the shared expert output).

``c`` is not a model constant: the model carries a placeholder ``c = 1`` and evaluation binds it
from the routing statistics (``energylens.moe.binding``): tokens per expert on the mean rank and
on the busiest expert-parallel rank, with only the experts actually hit counted in ``e``.

Dimension letters beyond the core legend (``MOE_LEGEND``): ``u`` the FFN width of dense layers of a
MoE model (DeepSeek's first 3 layers, Llama-4 Maverick's non-MoE layers, Qwen ``mlp_only_layers``),
``j`` the shared-expert width when it differs from the routed width ``f``, and for MLA ``q``
(query low rank), ``l`` (key/value latent rank), ``p`` (RoPE head dim), ``w`` (value head dim).
Both ``u`` and ``j`` are tensor-parallel (``Layout`` maps them to ``tp``).

Approximations (also in ``Model.info["notes"]``):

* routing is not part of the graph: which experts tokens pick comes from a routing distribution
  at evaluation time (uniform by default); DeepSeek's group-limited routing, Llama 4's sigmoid
  top-1 and gpt-oss's softmax-after-top-k are all "k of E experts per token";
* MLA (DeepSeek) is written in its weight-absorbed form (what vLLM runs for decode): scores over
  the 512-wide latent plus the 64-wide RoPE key, values read from the latent, then the value
  up-projection. Prefill engines expand K/V instead, which needs ~3x fewer attention FLOPs; the
  absorbed form overestimates prefill attention FLOPs (not the projections);
* gpt-oss: attention sinks, biases and the clamped SwiGLU are left out (each < 0.1 % of FLOPs);
  its checkpoint stores the experts in MXFP4 (4.25 bits per weight incl. the shared 8-bit scales) and
  keeps attention, router, embedding and head in bf16 (read by ``energylens.models.quant``; expert GEMMs
  dequantise to bf16);
* Llama 4: chunked local attention (``attention_chunk_size`` 8192) is modelled as a sliding window
  of the chunk size (exact while the context fits one chunk, an upper bound beyond); every 4th
  layer is a global NoPE layer (full attention; its RoPE kernel is kept, < 0.1 % of the work);
* Qwen2-MoE's sigmoid gate on the shared expert is left out (one ``d``-wide dot product per token).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from energylens.errors import SpecError
from energylens.graph.einsum import LEGEND
from energylens.graph.model import Block, Model
from energylens.graph.ops import Op, Role, Tensor, einsum, elementwise
from energylens.models.dense import BuildOptions, attention_dims, decoder_layer, name_output
from energylens.models.hf_config import HFConfig
from energylens.models.layers import (
    RMSNORM_FLOPS,
    ROPE_FLOPS,
    SILU_MUL_FLOPS,
    SOFTMAX_FLOPS,
    add,
    embedding,
    lm_head,
    residual_in_norm,
    rmsnorm,
)

EXTRA_LEGEND: dict[str, str] = {
    "u": "FFN width of the dense (non-MoE) layers of an MoE model",
    "j": "FFN width of the shared expert(s), where it differs from the routed experts' f",
    "q": "query low-rank (q_lora) dimension of multi-head latent attention",
    "l": "key/value latent (kv_lora) dimension of multi-head latent attention",
    "p": "rotary (RoPE) part of an MLA query/key head",
    "w": "value head dimension of multi-head latent attention",
}
MOE_LEGEND: dict[str, str] = {**LEGEND, "f": "feed-forward width of one routed expert (MoE) or of the MLP",
                              **EXTRA_LEGEND}

TOPK_FLOPS_PER_EXPERT = SOFTMAX_FLOPS + 1.0  # score normalisation (5) + one comparison per expert
EXPERT = {"moe": "expert"}
SHARED = {"moe": "shared"}
C_PLACEHOLDER = 1  # tokens per expert: bound from routing statistics at evaluation time


@dataclass(frozen=True)
class MoESpec:
    n_experts: int
    top_k: int
    shared_letter: str = ""  # "" none, "f" (shared width = expert width) or "j"
    n_shared: int = 0


def _with_attrs(op: Op, attrs: dict) -> Op:
    return replace(op, attrs={**dict(op.attrs or {}), **attrs})


def swiglu(x: Tensor, letter: str, *, prefix: str, last_attrs: dict | None = None) -> tuple[list[Op], Tensor]:
    """SwiGLU MLP over FFN letter ``letter`` (``f``, ``u`` or ``j``): fused gate+up, SiLU x up, down."""
    p, f = prefix, letter
    gate, up, h = Tensor(f"{p}.gate", f"bt{f}"), Tensor(f"{p}.up", f"bt{f}"), Tensor(f"{p}.h", f"bt{f}")
    out = Tensor(f"{p}.out", "btd")
    grp = f"{p}.gate_up"
    down = einsum(f"{p}.down_proj", f"bt{f},{f}d->btd", (h, f"{p}.w_down"), out, weight=1, legend=MOE_LEGEND)
    ops = [
        einsum(f"{p}.gate_proj", f"btd,d{f}->bt{f}", (x, f"{p}.w_gate"), gate, weight=1, group=grp, legend=MOE_LEGEND),
        einsum(f"{p}.up_proj", f"btd,d{f}->bt{f}", (x, f"{p}.w_up"), up, weight=1, group=grp, legend=MOE_LEGEND),
        elementwise(f"{p}.silu_mul", (gate, up), h, flops_per_element=SILU_MUL_FLOPS, group=f"{p}.act"),
        _with_attrs(down, last_attrs) if last_attrs else down,
    ]
    return ops, out


def moe_mlp(x: Tensor, spec: MoESpec, *, prefix: str = "moe") -> tuple[list[Op], Tensor]:
    """Router, top-k, dispatch, grouped expert SwiGLU, optional shared experts, combine."""
    p = prefix
    E, k = spec.n_experts, spec.top_k
    router_w = Tensor(f"{p}.router.weight", "de", Role.WEIGHT, shardable=False)
    logits = Tensor(f"{p}.router_logits", "bte")
    topk = Tensor(f"{p}.topk", "btx")
    disp = Tensor(f"{p}.dispatched", "ecd")
    gate, up, h = Tensor(f"{p}.experts.gate", "ecf"), Tensor(f"{p}.experts.up", "ecf"), Tensor(f"{p}.experts.h", "ecf")
    routed = Tensor(f"{p}.experts.out", "ecd")
    grp = f"{p}.experts.gate_up"

    def w(name: str) -> Tensor:
        return Tensor(f"{p}.experts.{name}", "edf" if name != "w_down" else "efd", Role.WEIGHT)

    ops: list[Op] = [
        einsum(f"{p}.router", "btd,de->bte", (x, router_w), logits),
        elementwise(f"{p}.topk", (logits,), topk, flops_per_element=TOPK_FLOPS_PER_EXPERT * E / k, whole_dims="e"),
        elementwise(f"{p}.dispatch", (x, topk), disp, flops_per_element=0.0, group=grp, attrs={"route": "dispatch"}),
        _with_attrs(einsum(f"{p}.experts.gate_proj", "ecd,edf->ecf", (disp, w("w_gate")), gate, group=grp), EXPERT),
        _with_attrs(einsum(f"{p}.experts.up_proj", "ecd,edf->ecf", (disp, w("w_up")), up, group=grp), EXPERT),
        elementwise(f"{p}.experts.silu_mul", (gate, up), h, flops_per_element=SILU_MUL_FLOPS,
                    group=f"{p}.experts.act", attrs=EXPERT),
        _with_attrs(einsum(f"{p}.experts.down_proj", "ecf,efd->ecd", (h, w("w_down")), routed), EXPERT),
    ]
    inputs: tuple[Tensor, ...] = (routed, topk)
    flops = 2.0 * k
    if spec.shared_letter:
        shared_ops, shared_out = swiglu(x, spec.shared_letter, prefix=f"{p}.shared", last_attrs=SHARED)
        ops += shared_ops
        inputs = (*inputs, shared_out)
        flops += 1.0
    out = Tensor(f"{p}.out", "btd")
    ops.append(elementwise(f"{p}.combine", inputs, out, flops_per_element=flops, attrs={"route": "combine"}))
    return ops, out


# ----------------------------------------------------------------------------------------------
# Multi-head latent attention (DeepSeek-V2/V3), weight-absorbed form
# ----------------------------------------------------------------------------------------------


def mla_attention(x: Tensor, *, q_lora: bool, prefix: str = "attn") -> tuple[list[Op], Tensor]:
    """MLA: latent KV (``l``) + shared RoPE key (``p``) cached; queries absorbed into the latent space."""
    p, L = prefix, MOE_LEGEND
    ops: list[Op] = []
    grp_a = f"{p}.qkv_a"  # vLLM fuses q_a_proj and kv_a_proj_with_mqa into one GEMM
    kv_lat, k_pe = Tensor(f"{p}.kv_latent", "btl"), Tensor(f"{p}.k_pe", "btp")
    if q_lora:
        q_a = Tensor(f"{p}.q_a", "btq")
        ops.append(einsum(f"{p}.q_a_proj", "btd,dq->btq", (x, f"{p}.w_q_a"), q_a, weight=1, group=grp_a, legend=L))
    ops.append(einsum(f"{p}.kv_a_proj", "btd,dl->btl", (x, f"{p}.w_kv_a"), kv_lat, weight=1, group=grp_a, legend=L))
    ops.append(einsum(f"{p}.k_rope_proj", "btd,dp->btp", (x, f"{p}.w_k_rope"), k_pe, weight=1, group=grp_a, legend=L))
    grp_n = f"{p}.latent_norm"
    if q_lora:
        q_in = Tensor(f"{p}.q_a_norm.out", "btq")
        ops.append(elementwise(f"{p}.q_a_norm", (q_a, Tensor(f"{p}.q_a_norm.weight", "q", Role.WEIGHT)), q_in,
                               flops_per_element=RMSNORM_FLOPS, whole_dims="q", group=grp_n))
        text_nope, text_rope = "btq,qgk->btgk", "btq,qgp->btgp"
    else:
        q_in = x
        text_nope, text_rope = "btd,dgk->btgk", "btd,dgp->btgp"
    kv_n = Tensor(f"{p}.kv_a_norm.out", "btl")
    ops.append(elementwise(f"{p}.kv_a_norm", (kv_lat, Tensor(f"{p}.kv_a_norm.weight", "l", Role.WEIGHT)), kv_n,
                           flops_per_element=RMSNORM_FLOPS, whole_dims="l", group=grp_n))
    q_nope, q_pe = Tensor(f"{p}.q_nope", "btgk"), Tensor(f"{p}.q_pe", "btgp")
    ops.append(einsum(f"{p}.q_b_nope", text_nope, (q_in, f"{p}.w_q_b_nope"), q_nope, weight=1, group=f"{p}.q_b", legend=L))
    ops.append(einsum(f"{p}.q_b_rope", text_rope, (q_in, f"{p}.w_q_b_rope"), q_pe, weight=1, group=f"{p}.q_b", legend=L))
    q_rot, k_rot = Tensor(f"{p}.q_rot", "btgp"), Tensor(f"{p}.k_rot", "btp")
    ops.append(elementwise(f"{p}.rope_q", (q_pe,), q_rot, flops_per_element=ROPE_FLOPS, whole_dims="p", group=f"{p}.rope"))
    ops.append(elementwise(f"{p}.rope_k", (k_pe,), k_rot, flops_per_element=ROPE_FLOPS, whole_dims="p", group=f"{p}.rope"))
    lat_new = Tensor(f"{p}.latent_new", "btl", Role.KV_CACHE)
    rope_new = Tensor(f"{p}.k_rope_new", "btp", Role.KV_CACHE)
    ops.append(elementwise(f"{p}.kv_write_latent", (kv_n,), lat_new, flops_per_element=0.0, group=f"{p}.kv_write"))
    ops.append(elementwise(f"{p}.kv_write_rope", (k_rot,), rope_new, flops_per_element=0.0, group=f"{p}.kv_write"))
    q_lat = Tensor(f"{p}.q_latent", "btgl")
    ops.append(einsum(f"{p}.q_absorb", "btgk,glk->btgl", (q_nope, f"{p}.w_uk"), q_lat, weight=1, legend=L))
    lat_cache = Tensor(f"{p}.latent_cache", "bsl", Role.KV_CACHE)
    rope_cache = Tensor(f"{p}.k_rope_cache", "bsp", Role.KV_CACHE)
    grp = f"{p}.flash"
    s_lat, s_rope = Tensor(f"{p}.scores_latent", "bgts"), Tensor(f"{p}.scores_rope", "bgts")
    probs, out_lat = Tensor(f"{p}.probs", "bgts"), Tensor(f"{p}.out_latent", "btgl")
    kv_roles = (Role.ACTIVATION, Role.KV_CACHE)
    ops.append(einsum(f"{p}.qk_latent", "btgl,bsl->bgts", (q_lat, lat_cache), s_lat, group=grp, causal=True,
                      roles=kv_roles, legend=L))
    ops.append(einsum(f"{p}.qk_rope", "btgp,bsp->bgts", (q_rot, rope_cache), s_rope, group=grp, causal=True,
                      roles=kv_roles, legend=L))
    ops.append(elementwise(f"{p}.softmax", (s_lat, s_rope), probs, flops_per_element=SOFTMAX_FLOPS + 1.0,
                           whole_dims="s", group=grp, attrs={"causal": True}))
    ops.append(einsum(f"{p}.pv", "bgts,bsl->btgl", (probs, lat_cache), out_lat, group=grp, causal=True,
                      roles=kv_roles, legend=L))
    out = Tensor(f"{p}.out", "btgw")
    ops.append(einsum(f"{p}.v_up", "btgl,glw->btgw", (out_lat, f"{p}.w_uv"), out, weight=1, legend=L))
    o = Tensor(f"{p}.o", "btd")
    ops.append(einsum(f"{p}.o_proj", "btgw,gwd->btd", (out, f"{p}.wo"), o, weight=1, legend=L))
    return ops, o


def mla_decoder_layer(mlp_builder: Callable[[Tensor], tuple[list[Op], Tensor]], *, q_lora: bool) -> list[Op]:
    """Pre-norm layer with MLA: x -> norm -> MLA -> +x -> norm -> MLP/MoE -> +x, each residual add fused into
    the next RMSNorm as vLLM does (the MLP's into the next layer's input norm, :func:`residual_in_norm`)."""
    x = Tensor("x_in", "btd")
    ops: list[Op] = residual_in_norm("attn_norm", "attn_norm.out")
    att, o = mla_attention(Tensor("attn_norm.out", "btd"), q_lora=q_lora)
    ops += att
    ops.append(add("attn_residual", x, o, "x", group="add_norm"))  # the residual the next layer reads as x
    ops.append(rmsnorm("mlp_norm", Tensor("x", "btd"), "mlp_norm.out", group="add_norm"))
    mlp, m = mlp_builder(Tensor("mlp_norm.out", "btd"))
    return name_output(ops + mlp, m)


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------


def _layer_blocks(kinds: list[tuple], make: Callable[[tuple], list[Op]], name: Callable[[tuple], str]) -> tuple[Block, ...]:
    """One Block per distinct layer kind (first-occurrence order), repeated as often as it occurs."""
    order: list[tuple] = []
    for kind in kinds:
        if kind not in order:
            order.append(kind)
    return tuple(Block(name(kind), tuple(make(kind)), kinds.count(kind),
                       layers=tuple(i for i, k in enumerate(kinds) if k == kind)) for kind in order)


def _dtypes(cfg: HFConfig) -> tuple[str, str]:
    """(weight dtype, activation/KV dtype): FP8 checkpoints (DeepSeek-V3) keep bf16 activations."""
    quant = cfg.get("quantization_config") or {}
    weight = "fp8" if isinstance(quant, dict) and quant.get("quant_method") == "fp8" else cfg.dtype
    return weight, ("bf16" if weight == "fp8" else weight)


def bias_balanced_router(cfg: HFConfig) -> bool:
    """Whether the router adds a learned per-expert bias to its scores that training adjusts to keep every
    expert's load equal (auxiliary-loss-free load balancing, DeepSeek-V3 report arXiv:2412.19437 sec. 2.1.2):
    ``topk_method: noaux_tc`` (DeepSeek-V3/R1, Kimi-K2) or ``use_routing_bias: true`` (MiniMax-M2). Such a
    router's expected expert popularity is uniform by construction."""
    return cfg.get("topk_method") == "noaux_tc" or cfg.get("use_routing_bias") is True


def _model(cfg: HFConfig, name: str, hf_id: str, dims: dict[str, int], blocks: tuple[Block, ...], spec: MoESpec,
           moe_layers: int, notes: list[str]) -> Model:
    tied = bool(cfg.get("tie_word_embeddings", False))
    weight_dtype, act_dtype = _dtypes(cfg)
    dims = {**dims, "e": spec.n_experts, "x": spec.top_k, "c": C_PLACEHOLDER}
    return Model(
        name=name,
        dims=dims,
        pre=tuple(embedding()),
        blocks=blocks,
        post=tuple(lm_head(Tensor("x", "btd"), tied=tied)),
        weight_dtype=weight_dtype,
        act_dtype=act_dtype,
        kv_dtype=act_dtype,
        legend=dict(MOE_LEGEND),
        hf_id=hf_id,
        family=cfg.model_type,
        info={
            "tied_embeddings": tied,
            "architecture": "moe",
            "config": cfg.origin,
            "moe": {"n_experts": spec.n_experts, "top_k": spec.top_k, "moe_layers": moe_layers,
                    "shared_experts": spec.n_shared, "bias_balanced_router": bias_balanced_router(cfg)},
            "notes": tuple(notes),
        },
    )


def _positive_list(cfg: HFConfig, key: str) -> list:
    value = cfg.get(key) or []
    if not isinstance(value, list):
        raise SpecError(f"{cfg.origin}: {key}", value, "a list")
    return value


def build_qwen_moe(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    """Qwen3-MoE (QK-norm, no shared expert) and Qwen2-MoE (shared expert of its own width)."""
    dims = attention_dims(cfg)
    E, k = cfg.int("num_experts"), cfg.int("num_experts_per_tok")
    dims["f"] = cfg.int("moe_intermediate_size")
    n_layers = cfg.int("num_hidden_layers")
    step = cfg.int("decoder_sparse_step", 1)
    mlp_only = set(_positive_list(cfg, "mlp_only_layers"))
    is_moe = [(i not in mlp_only) and (i + 1) % step == 0 for i in range(n_layers)]
    shared_width = int(cfg.get("shared_expert_intermediate_size") or 0)
    shared = ""
    if shared_width:
        shared = "f" if shared_width == dims["f"] else "j"
        if shared == "j":
            dims["j"] = shared_width
    if not all(is_moe):
        dims["u"] = cfg.int("intermediate_size")
    spec = MoESpec(E, k, shared_letter=shared, n_shared=1 if shared else 0)
    qk_norm = cfg.model_type in ("qwen3_moe", "qwen3_vl_moe_text")
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    opts = BuildOptions()

    def make(kind: tuple) -> list[Op]:
        (moe,) = kind
        mlp = (lambda x: moe_mlp(x, spec)) if moe else (lambda x: swiglu(x, "u", prefix="mlp"))
        return decoder_layer(mlp, qk_norm=qk_norm, opts=opts, window=window)

    blocks = _layer_blocks([(m,) for m in is_moe], make, lambda kind: "moe" if kind[0] else "dense")
    notes = ["Qwen2-MoE shared-expert sigmoid gate left out"] if shared else []
    return _model(cfg, name, hf_id, dims, blocks, spec, sum(is_moe), notes)


def build_mixtral(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    """Mixtral: GQA, every layer MoE with ``num_local_experts`` experts of width ``intermediate_size``."""
    dims = attention_dims(cfg)
    dims["f"] = cfg.int("intermediate_size")
    spec = MoESpec(cfg.int("num_local_experts"), cfg.int("num_experts_per_tok"))
    window = cfg.get("sliding_window") or None
    layer = decoder_layer(lambda x: moe_mlp(x, spec), qk_norm=False, opts=BuildOptions(), window=window)
    n = cfg.int("num_hidden_layers")
    return _model(cfg, name, hf_id, dims, (Block("moe", tuple(layer), n),), spec, n, [])


def build_minimax_m2(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    """MiniMax-M2: GQA with QK-norm, every layer MoE (``num_local_experts`` experts of width
    ``intermediate_size``, sigmoid router with a bias), no shared expert. Left out: partial rotary
    (``rotary_dim`` of ``head_dim``; RoPE is a small element-wise op) and the MTP modules (vLLM serves
    without speculative decoding by default)."""
    dims = attention_dims(cfg)
    dims["f"] = cfg.int("intermediate_size")
    spec = MoESpec(cfg.int("num_local_experts"), cfg.int("num_experts_per_tok"))
    layer = decoder_layer(lambda x: moe_mlp(x, spec), qk_norm=True, opts=BuildOptions(), window=None)
    n = cfg.int("num_hidden_layers")
    notes = ["partial rotary (rotary_dim) and MTP modules left out"]
    return _model(cfg, name, hf_id, dims, (Block("moe", tuple(layer), n),), spec, n, notes)


def build_gpt_oss(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    """gpt-oss: alternating sliding-window (128) / full attention, MoE every layer, MXFP4 experts."""
    dims = attention_dims(cfg)
    dims["f"] = cfg.int("intermediate_size")
    E = cfg.int("num_local_experts")
    k = cfg.int("num_experts_per_tok", cfg.get("experts_per_token"))
    spec = MoESpec(E, k)
    n = cfg.int("num_hidden_layers")
    window = cfg.int("sliding_window", 128)
    types = _positive_list(cfg, "layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                                   for i in range(n)]
    if len(types) != n or any(t not in ("sliding_attention", "full_attention") for t in types):
        raise SpecError(f"{cfg.origin}: layer_types", types,
                        f"{n} entries, each 'sliding_attention' or 'full_attention'")
    opts = BuildOptions()

    def make(kind: tuple) -> list[Op]:
        return decoder_layer(lambda x: moe_mlp(x, spec), qk_norm=False, opts=opts,
                             window=window if kind[0] == "sliding_attention" else None)

    blocks = _layer_blocks([(t,) for t in types], make,
                           lambda kind: "moe_sliding" if kind[0] == "sliding_attention" else "moe_full")
    notes = ["attention sinks, biases and the clamped SwiGLU left out"]
    return _model(cfg, name, hf_id, dims, blocks, spec, n, notes)


def build_llama4(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    """Llama 4 text decoder: MoE (+1 shared expert) every ``interleave_moe_layer_step``-th layer, dense
    layers of width ``intermediate_size_mlp`` otherwise; chunked local attention on RoPE layers, global
    attention on every 4th (NoPE) layer."""
    dims = attention_dims(cfg)
    dims["f"] = cfg.int("intermediate_size")
    n = cfg.int("num_hidden_layers")
    step = cfg.int("interleave_moe_layer_step", 1)
    is_moe = [(i + 1) % step == 0 for i in range(n)]  # transformers: range(step - 1, n, step)
    if not all(is_moe):
        dims["u"] = cfg.int("intermediate_size_mlp")
    no_rope = _positive_list(cfg, "no_rope_layers")
    if len(no_rope) == n:  # transformers: 1 = RoPE layer, 0 = NoPE (global) layer
        is_global = [not bool(v) for v in no_rope]
    else:
        interval = cfg.int("no_rope_layer_interval", 4)
        is_global = [(i + 1) % interval == 0 for i in range(n)]
    chunk = cfg.get("attention_chunk_size")
    spec = MoESpec(cfg.int("num_local_experts"), cfg.int("num_experts_per_tok"), shared_letter="f", n_shared=1)
    qk_norm = bool(cfg.get("use_qk_norm", False))
    opts = BuildOptions()

    def make(kind: tuple) -> list[Op]:
        moe, glob = kind
        mlp = (lambda x: moe_mlp(x, spec)) if moe else (lambda x: swiglu(x, "u", prefix="mlp"))
        window = None if (glob or not chunk) else int(chunk)
        return decoder_layer(mlp, qk_norm=qk_norm and not glob, opts=opts, window=window)

    kinds = list(zip(is_moe, is_global, strict=True))
    blocks = _layer_blocks(kinds, make, lambda kind: ("moe" if kind[0] else "dense") + ("_global" if kind[1] else "_chunked"))
    notes = ["chunked attention modelled as a sliding window of attention_chunk_size",
             "NoPE global layers keep their RoPE kernel"]
    return _model(cfg, name, hf_id, dims, blocks, spec, sum(is_moe), notes)


def build_deepseek(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    """DeepSeek-V3 / V2: MLA attention, ``first_k_dense_replace`` dense layers, then MoE layers with
    ``n_routed_experts`` routed and ``n_shared_experts`` shared experts."""
    d = cfg.int("hidden_size")
    heads = cfg.int("num_attention_heads")
    q_lora = cfg.get("q_lora_rank")
    dims: dict[str, int] = {
        "d": d, "g": heads, "r": 1, "k": cfg.int("qk_nope_head_dim"), "p": cfg.int("qk_rope_head_dim"),
        "w": cfg.int("v_head_dim"), "l": cfg.int("kv_lora_rank"), "v": cfg.int("vocab_size"),
        "f": cfg.int("moe_intermediate_size"),
    }
    if q_lora:
        dims["q"] = cfg.int("q_lora_rank")
    n = cfg.int("num_hidden_layers")
    first_dense = int(cfg.get("first_k_dense_replace") or 0)
    freq = cfg.int("moe_layer_freq", 1)
    is_moe = [i >= first_dense and i % freq == 0 for i in range(n)]
    if not all(is_moe):
        dims["u"] = cfg.int("intermediate_size")
    n_shared = int(cfg.get("n_shared_experts") or 0)
    shared = ""
    if n_shared:
        shared = "f" if n_shared == 1 else "j"
        if shared == "j":
            dims["j"] = n_shared * dims["f"]
    spec = MoESpec(cfg.int("n_routed_experts"), cfg.int("num_experts_per_tok"), shared_letter=shared,
                   n_shared=n_shared)

    def make(kind: tuple) -> list[Op]:
        (moe,) = kind
        mlp = (lambda x: moe_mlp(x, spec)) if moe else (lambda x: swiglu(x, "u", prefix="mlp"))
        return mla_decoder_layer(mlp, q_lora=bool(q_lora))

    blocks = _layer_blocks([(m,) for m in is_moe], make, lambda kind: "moe" if kind[0] else "dense")
    notes = ["MLA in weight-absorbed form (prefill attention FLOPs overestimated ~3x; projections exact)",
             "group-limited routing treated as top-k of all experts",
             "multi-token-prediction (MTP) module not modelled"]
    return _model(cfg, name, hf_id, dims, blocks, spec, sum(is_moe), notes)


# model_type -> builder (collected by energylens.models.builders)
ARCHITECTURES = {"qwen3_moe": build_qwen_moe, "qwen2_moe": build_qwen_moe, "mixtral": build_mixtral,
                 "gpt_oss": build_gpt_oss, "llama4": build_llama4, "llama4_text": build_llama4,
                 "deepseek_v3": build_deepseek, "deepseek_v2": build_deepseek, "minimax_m2": build_minimax_m2,
                 "kimi_k2": build_deepseek, "qwen3_vl_moe_text": build_qwen_moe}
