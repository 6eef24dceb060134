"""Reusable pieces of a decoder layer, written once as einsums: attention, SwiGLU MLP, norms.

Fusion groups follow what serving engines launch (vLLM): one fused QKV GEMM, one RoPE kernel,
FlashAttention (scores, softmax and PV on chip), one fused gate+up GEMM, and fused residual+RMSNorm.
"""

from __future__ import annotations

from dataclasses import dataclass

from energylens.graph.ops import Op, Role, Tensor, einsum, elementwise, gather

# FLOPs per output element of element-wise kernels (counted from their arithmetic).
RMSNORM_FLOPS = 4.0  # square, sum, scale by rsqrt, multiply by weight
ROPE_FLOPS = 3.0  # x*cos + rotate(x)*sin
SILU_MUL_FLOPS = 5.0  # exp, add, divide (sigmoid), multiply by x, multiply by up
SOFTMAX_FLOPS = 5.0  # max, subtract, exp, sum, divide
ADD_FLOPS = 1.0


@dataclass(frozen=True)
class AttentionOptions:
    qk_norm: bool = False
    window: int | None = None  # sliding-window attention: s -> min(s, window)
    flash: bool = True  # FlashAttention fusion (scores and probabilities stay on chip)
    prefix: str = "attn"


def rmsnorm(name: str, x: Tensor, out: str, *, group: str | None = None, weight: str | None = None) -> Op:
    w = Tensor(weight or f"{name}.weight", x.dims[-1], Role.WEIGHT)
    return elementwise(name, (x, w), Tensor(out, x.dims), flops_per_element=RMSNORM_FLOPS,
                       whole_dims=x.dims[-1], group=group)


def add(name: str, a: Tensor, b: Tensor, out: str, *, group: str | None = None) -> Op:
    return elementwise(name, (a, b), Tensor(out, a.dims), flops_per_element=ADD_FLOPS, group=group)


RESIDUAL_IN_GROUP = "residual_add_norm"


def residual_in_norm(norm: str, out: str) -> list[Op]:
    """The opening of a vLLM decoder layer: the previous layer's residual add fused into this layer's input
    RMSNorm (vLLM's ``fused_add_rms_norm``: ``norm(h, residual)``), one kernel. ``x`` is the residual stream
    entering the layer (the layer writes the next one as ``x`` after its attention), ``x_next`` the previous
    layer's output (the block's output name); the sum ``x_in`` is the residual of this layer's attention. One add per layer, as before: the first layer's (vLLM adds
    nothing there) stands for the last layer's, which vLLM fuses into the final norm."""
    return [add("mlp_residual", Tensor("x", "btd"), Tensor("x_next", "btd"), "x_in", group=RESIDUAL_IN_GROUP),
            rmsnorm(norm, Tensor("x_in", "btd"), out, group=RESIDUAL_IN_GROUP)]


def attention(x: Tensor, opts: AttentionOptions = AttentionOptions()) -> tuple[list[Op], Tensor]:
    """GQA attention over ``x`` (btd): QKV projections, RoPE, KV-cache write, attention, output projection.

    Returns the ops and the output tensor (btd, before the residual add).
    """
    p = opts.prefix
    ops: list[Op] = []
    q = Tensor(f"{p}.q", "btgrk")
    k = Tensor(f"{p}.k", "btgk")
    v = Tensor(f"{p}.v", "btgk")
    ops.append(einsum(f"{p}.q_proj", "btd,dgrk->btgrk", (x, f"{p}.wq"), q, weight=1, group=f"{p}.qkv"))
    ops.append(einsum(f"{p}.k_proj", "btd,dgk->btgk", (x, f"{p}.wk"), k, weight=1, group=f"{p}.qkv"))
    ops.append(einsum(f"{p}.v_proj", "btd,dgk->btgk", (x, f"{p}.wv"), v, weight=1, group=f"{p}.qkv"))
    if opts.qk_norm:
        qn, kn = Tensor(f"{p}.qn", q.dims), Tensor(f"{p}.kn", k.dims)
        ops.append(elementwise(f"{p}.q_norm", (q, Tensor(f"{p}.q_norm.weight", "k", Role.WEIGHT)), qn,
                               flops_per_element=RMSNORM_FLOPS, whole_dims="k", group=f"{p}.qk_norm"))
        ops.append(elementwise(f"{p}.k_norm", (k, Tensor(f"{p}.k_norm.weight", "k", Role.WEIGHT)), kn,
                               flops_per_element=RMSNORM_FLOPS, whole_dims="k", group=f"{p}.qk_norm"))
        q, k = qn, kn
    qr, kr = Tensor(f"{p}.q_rot", q.dims), Tensor(f"{p}.k_rot", k.dims)
    ops.append(elementwise(f"{p}.rope_q", (q,), qr, flops_per_element=ROPE_FLOPS, whole_dims="k", group=f"{p}.rope"))
    ops.append(elementwise(f"{p}.rope_k", (k,), kr, flops_per_element=ROPE_FLOPS, whole_dims="k", group=f"{p}.rope"))
    # The new token's K and V are written into the paged KV cache.
    k_new = Tensor(f"{p}.k_new", "btgk", Role.KV_CACHE)
    v_new = Tensor(f"{p}.v_new", "btgk", Role.KV_CACHE)
    ops.append(elementwise(f"{p}.kv_write_k", (kr,), k_new, flops_per_element=0.0, group=f"{p}.kv_write"))
    ops.append(elementwise(f"{p}.kv_write_v", (v,), v_new, flops_per_element=0.0, group=f"{p}.kv_write"))
    k_cache = Tensor(f"{p}.k_cache", "bsgk", Role.KV_CACHE)
    v_cache = Tensor(f"{p}.v_cache", "bsgk", Role.KV_CACHE)
    grp = f"{p}.flash" if opts.flash else None
    attrs = {"window": opts.window} if opts.window else {}
    scores = Tensor(f"{p}.scores", "bgrts")
    probs = Tensor(f"{p}.probs", "bgrts")
    out = Tensor(f"{p}.out", "btgrk")
    s_op = einsum(f"{p}.qk", "btgrk,bsgk->bgrts", (qr, k_cache), scores, group=grp, causal=True,
                  roles=(Role.ACTIVATION, Role.KV_CACHE))
    sm_op = elementwise(f"{p}.softmax", (scores,), probs, flops_per_element=SOFTMAX_FLOPS, whole_dims="s",
                        group=grp, attrs={"causal": True, **attrs})
    pv_op = einsum(f"{p}.pv", "bgrts,bsgk->btgrk", (probs, v_cache), out, group=grp, causal=True,
                   roles=(Role.ACTIVATION, Role.KV_CACHE))
    if attrs:
        from dataclasses import replace

        s_op = replace(s_op, attrs=attrs)
        pv_op = replace(pv_op, attrs=attrs)
    ops.extend([s_op, sm_op, pv_op])
    o = Tensor(f"{p}.o", "btd")
    ops.append(einsum(f"{p}.o_proj", "btgrk,grkd->btd", (out, f"{p}.wo"), o, weight=1))
    return ops, o


def gated_mlp(x: Tensor, *, prefix: str = "mlp", fused: bool = False, activation: str = "silu_mul",
              flops_per_element: float = SILU_MUL_FLOPS) -> tuple[list[Op], Tensor]:
    """Gated MLP: fused gate+up GEMM, act(gate) x up, down projection (f is the intermediate size).
    ``activation`` names the element-wise kernel (SwiGLU ``silu_mul``, GeGLU ``gelu_mul``)."""
    p = prefix
    gate, up, h, out = Tensor(f"{p}.gate", "btf"), Tensor(f"{p}.up", "btf"), Tensor(f"{p}.h", "btf"), Tensor(f"{p}.out", "btd")
    grp = f"{p}.gate_up"
    ops = [
        einsum(f"{p}.gate_proj", "btd,df->btf", (x, f"{p}.w_gate"), gate, weight=1, group=grp),
        einsum(f"{p}.up_proj", "btd,df->btf", (x, f"{p}.w_up"), up, weight=1, group=grp),
        elementwise(f"{p}.{activation}", (gate, up), h, flops_per_element=flops_per_element,
                    group=grp if fused else f"{p}.act"),
        einsum(f"{p}.down_proj", "btf,fd->btd", (h, f"{p}.w_down"), out, weight=1),
    ]
    return ops, out


def swiglu_mlp(x: Tensor, *, prefix: str = "mlp", fused: bool = False) -> tuple[list[Op], Tensor]:
    """SwiGLU MLP: fused gate+up GEMM, SiLU x up, down projection (f is the intermediate size)."""
    return gated_mlp(x, prefix=prefix, fused=fused)


def embedding(name: str = "embed") -> list[Op]:
    ids = Tensor("ids", "bt", Role.TOKENS)
    table = Tensor(f"{name}.weight", "vd", Role.WEIGHT)
    return [gather(name, ids, table, Tensor("x", "btd"), gather_dim="v")]


def lm_head(x: Tensor, *, tied: bool) -> list[Op]:
    """Final norm, logits for the last token of each sequence, and sampling over the vocabulary."""
    xf = Tensor("final_norm.out", "btd")
    weight = "embed.weight" if tied else "lm_head.weight"
    logits = Tensor("logits", "btv")
    last = {"tokens": "last"}
    from dataclasses import replace

    head = einsum("lm_head", "btd,dv->btv", (xf, Tensor(weight, "dv", Role.WEIGHT)), logits, weight=1)
    return [
        rmsnorm("final_norm", x, xf.name),
        replace(head, attrs=last),
        elementwise("sampler", (logits,), Tensor("next_ids", "bt", Role.TOKENS), flops_per_element=3.0,
                    whole_dims="v", attrs=last),
    ]
