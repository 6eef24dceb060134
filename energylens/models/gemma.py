"""Gemma 3 text decoders (``gemma3`` / ``gemma3_text``): 5 local sliding-window layers : 1 global layer.

Architecture (Hugging Face ``Gemma3TextConfig`` / vLLM ``Gemma3DecoderLayer``):

* GQA attention with RMSNorm on queries and keys (``qk_norm``), RoPE, ``head_dim`` 256 by default
  (the 27B config sets 128), so ``heads x head_dim`` need not equal ``hidden_size``;
* local layers attend over a sliding window of ``sliding_window`` (1024) keys, every
  ``sliding_window_pattern``-th layer (6) is global (or as ``layer_types`` lists them);
* four RMSNorms per layer: input, post-attention, pre-feed-forward (fused with the residual add,
  as vLLM does) and post-feed-forward;
* GeGLU MLP (``gelu_pytorch_tanh(gate) * up``), same einsums as SwiGLU;
* the embedding is scaled by ``sqrt(hidden_size)`` and tied to the LM head.

Fields the published configs leave out fall back to the transformers defaults (``vocab_size``
262208, ``head_dim`` 256, ``sliding_window_pattern`` 6, ``tie_word_embeddings`` True), as listed
in ``energylens/data/models/SOURCES.md``. The SigLIP vision tower of the multimodal checkpoints is
not modelled: text serving never runs it (its ~0.4 B weights are left out of memory too).
"""

from __future__ import annotations

from energylens.graph.model import Block, Model
from energylens.graph.ops import Op, Tensor, elementwise
from energylens.models.hf_config import HFConfig
from energylens.models.layers import (
    AttentionOptions,
    add,
    attention,
    embedding,
    gated_mlp,
    lm_head,
    residual_in_norm,
    rmsnorm,
)

GELU_TANH_MUL_FLOPS = 9.0  # x^3, 2 mul-adds, tanh, add, 2 muls (0.5*x*(1+tanh(.))), multiply by up
EMBED_SCALE_FLOPS = 1.0

DEFAULTS = {"vocab_size": 262208, "head_dim": 256, "sliding_window": 1024, "sliding_window_pattern": 6,
            "max_position_embeddings": 131072}


def geglu_mlp(x: Tensor, *, prefix: str = "mlp") -> tuple[list[Op], Tensor]:
    """GeGLU MLP: gate and up GEMMs (one fused kernel), gelu_tanh(gate) x up, down projection."""
    return gated_mlp(x, prefix=prefix, activation="gelu_mul", flops_per_element=GELU_TANH_MUL_FLOPS)


def gemma3_layer(window: int | None) -> list[Op]:
    """x -> norm -> attention -> post-norm -> +x -> norm -> GeGLU -> post-norm -> +x, as vLLM runs it: each
    residual add fused into the next RMSNorm (the MLP's into the next layer's input norm,
    :func:`residual_in_norm`), so the layer ends with the post-feed-forward norm's output ``x_next``."""
    x = Tensor("x_in", "btd")
    ops: list[Op] = residual_in_norm("input_norm", "input_norm.out")
    att, o = attention(Tensor("input_norm.out", "btd"), AttentionOptions(qk_norm=True, window=window))
    ops += att
    ops.append(rmsnorm("post_attn_norm", o, "post_attn_norm.out"))
    ops.append(add("attn_residual", x, Tensor("post_attn_norm.out", "btd"), "x", group="add_norm"))
    ops.append(rmsnorm("pre_ffw_norm", Tensor("x", "btd"), "pre_ffw_norm.out", group="add_norm"))
    mlp, m = geglu_mlp(Tensor("pre_ffw_norm.out", "btd"))
    ops += mlp
    ops.append(rmsnorm("post_ffw_norm", m, "x_next"))
    return ops


def layer_kinds(cfg: HFConfig, n_layers: int) -> list[str]:
    """'sliding_attention' or 'full_attention' per layer, from ``layer_types`` or the 5:1 pattern."""
    types = cfg.get("layer_types")
    if isinstance(types, list) and len(types) == n_layers:
        return [str(t) for t in types]
    pattern = cfg.int("sliding_window_pattern", DEFAULTS["sliding_window_pattern"])
    return ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]


def build_gemma3(cfg: HFConfig, name: str, hf_id: str = "") -> Model:
    d = cfg.int("hidden_size")
    heads = cfg.int("num_attention_heads")
    kv = cfg.int("num_key_value_heads", heads)
    if heads % kv:
        from energylens.errors import SpecError

        raise SpecError(f"{cfg.origin}: num_key_value_heads", kv, f"a divisor of num_attention_heads ({heads})")
    dims = {"d": d, "g": kv, "r": heads // kv, "k": cfg.int("head_dim", DEFAULTS["head_dim"]),
            "v": cfg.int("vocab_size", DEFAULTS["vocab_size"]), "f": cfg.int("intermediate_size")}
    n_layers = cfg.int("num_hidden_layers")
    window = cfg.int("sliding_window", DEFAULTS["sliding_window"])
    kinds = layer_kinds(cfg, n_layers)
    n_local = sum(1 for k in kinds if k == "sliding_attention")
    n_global = n_layers - n_local
    blocks = []
    if n_local:
        blocks.append(Block("local", tuple(gemma3_layer(window)), n_local,
                            layers=tuple(i for i, k in enumerate(kinds) if k == "sliding_attention")))
    if n_global:
        blocks.append(Block("global", tuple(gemma3_layer(None)), n_global,
                            layers=tuple(i for i, k in enumerate(kinds) if k != "sliding_attention")))
    tied = bool(cfg.get("tie_word_embeddings", True))
    pre = embedding() + [elementwise("embed_scale", (Tensor("x_emb", "btd"),), Tensor("x", "btd"),
                                     flops_per_element=EMBED_SCALE_FLOPS)]
    # the lookup writes x_emb; the sqrt(d) scale writes the residual stream x
    from dataclasses import replace

    pre[0] = replace(pre[0], output=Tensor("x_emb", "btd"))
    return Model(
        name=name,
        dims=dims,
        pre=tuple(pre),
        blocks=tuple(blocks),
        post=tuple(lm_head(Tensor("x", "btd"), tied=tied)),
        weight_dtype=cfg.dtype,
        act_dtype="bf16" if cfg.dtype == "fp8" else cfg.dtype,
        kv_dtype="bf16" if cfg.dtype == "fp8" else cfg.dtype,
        hf_id=hf_id,
        family="gemma3",
        info={"tied_embeddings": tied, "architecture": "dense", "config": cfg.origin,
              "sliding_window": window, "local_layers": n_local, "global_layers": n_global,
              "default_max_position_embeddings": DEFAULTS["max_position_embeddings"],
              "note": "vision tower not modelled (text serving)"},
    )


# model_type -> builder (collected by energylens.models.builders)
ARCHITECTURES = {"gemma3": build_gemma3, "gemma3_text": build_gemma3}
