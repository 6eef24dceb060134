"""Dense decoder-only transformers (Llama 3/3.1/3.3, Qwen2/Qwen3 dense, Mistral): GQA, RoPE, SwiGLU."""

from __future__ import annotations

from dataclasses import dataclass

from energylens.graph.model import Block, Model
from energylens.graph.ops import Op, Tensor
from energylens.models.hf_config import HFConfig
from energylens.models.layers import (
    AttentionOptions,
    add,
    attention,
    embedding,
    lm_head,
    residual_in_norm,
    rmsnorm,
    swiglu_mlp,
)


@dataclass(frozen=True)
class BuildOptions:
    """Fusion choices. Defaults follow vLLM's kernels (flash attention, fused add+RMSNorm)."""

    flash_attention: bool = True
    fused_swiglu: bool = False
    fused_add_norm: bool = True


def attention_dims(cfg: HFConfig) -> dict[str, int]:
    d = cfg.int("hidden_size")
    heads = cfg.int("num_attention_heads")
    kv = cfg.int("num_key_value_heads", heads)
    head_dim = cfg.int("head_dim", d // heads)
    if heads % kv:
        from energylens.errors import SpecError

        raise SpecError(f"{cfg.origin}: num_key_value_heads", kv, f"a divisor of num_attention_heads ({heads})")
    return {"d": d, "g": kv, "r": heads // kv, "k": head_dim, "v": cfg.int("vocab_size")}


def decoder_layer(mlp_builder, *, qk_norm: bool, opts: BuildOptions, window: int | None = None,
                  prefix: str = "") -> list[Op]:
    """Pre-norm decoder layer: x -> norm -> attention -> +x -> norm -> MLP -> +x. With ``fused_add_norm``
    (vLLM) both residual adds are fused into the next RMSNorm: the MLP's into the next layer's input norm
    (:func:`residual_in_norm`), so the layer ends with the MLP output ``x_next``."""
    norm_grp = "add_norm" if opts.fused_add_norm else None
    if opts.fused_add_norm:
        x = Tensor("x_in", "btd")
        ops: list[Op] = residual_in_norm("attn_norm", "attn_norm.out")
    else:
        x = Tensor("x", "btd")
        ops = [rmsnorm("attn_norm", x, "attn_norm.out")]
    att_ops, o = attention(Tensor("attn_norm.out", "btd"),
                           AttentionOptions(qk_norm=qk_norm, window=window, flash=opts.flash_attention))
    ops += att_ops
    mid = "x" if opts.fused_add_norm else "x_mid"  # fused: the residual stream the next layer reads as x
    ops.append(add("attn_residual", x, o, mid, group=norm_grp))
    ops.append(rmsnorm("mlp_norm", Tensor(mid, "btd"), "mlp_norm.out", group=norm_grp))
    mlp_ops, m = mlp_builder(Tensor("mlp_norm.out", "btd"))
    ops += mlp_ops
    if opts.fused_add_norm:
        return name_output(ops, m)
    ops.append(add("mlp_residual", Tensor("x_mid", "btd"), m, "x_next"))
    return ops


def name_output(ops: list[Op], m: Tensor) -> list[Op]:
    """The layer's last op writes its output as ``x_next`` (what the next layer's residual add reads)."""
    from dataclasses import replace

    last = ops[-1]
    assert last.output.name == m.name
    return ops[:-1] + [replace(last, output=replace(last.output, name="x_next"))]


def build_dense(cfg: HFConfig, name: str, hf_id: str = "", opts: BuildOptions = BuildOptions()) -> Model:
    dims = attention_dims(cfg)
    dims["f"] = cfg.int("intermediate_size")
    qk_norm = cfg.model_type.startswith("qwen3")
    tied = bool(cfg.get("tie_word_embeddings", False))
    layer = decoder_layer(lambda x: swiglu_mlp(x, fused=opts.fused_swiglu), qk_norm=qk_norm, opts=opts)
    return Model(
        name=name,
        dims=dims,
        pre=tuple(embedding()),
        blocks=(Block("decoder", tuple(layer), cfg.int("num_hidden_layers")),),
        post=tuple(lm_head(Tensor("x", "btd"), tied=tied)),
        weight_dtype=cfg.dtype,
        act_dtype="bf16" if cfg.dtype == "fp8" else cfg.dtype,
        kv_dtype="bf16" if cfg.dtype == "fp8" else cfg.dtype,
        hf_id=hf_id,
        family=cfg.model_type,
        info={"tied_embeddings": tied, "architecture": "dense", "config": cfg.origin},
    )


# model_type -> builder (collected by energylens.models.builders)
ARCHITECTURES = {"llama": build_dense, "qwen3": build_dense, "qwen2": build_dense, "mistral": build_dense,
                 "mimo": build_dense, "qwen3_vl_text": build_dense}
