"""A Llama/Qwen3-shaped decoder in plain PyTorch ops with random bf16 weights (no download).

RMSNorm, fused QKV projection, rotate-half RoPE, (optional per-head Q/K RMSNorm for Qwen3), flash
SDPA with grouped-query K/V and a real KV cache, SiLU-gated MLP or a top-k routed MoE, untied lm_head.
Used by the ``models`` suite for prefill and decode steps; ``torch`` is passed in, never imported here.
"""

from __future__ import annotations

import math

from energylens.measure.points import ModelDims
from energylens.measure.workloads import flash_context, gqa_attention, native_gqa, rmsnorm, rope


class DecoderModel:
    """Random-weight decoder: ``layers`` decoder layers (may be fewer than the real model's)."""

    def __init__(
        self,
        torch: object,
        dims: ModelDims,
        layers: int,
        device: object,
        seed: int = 0,
        rope_theta: float = 500000.0,
        max_len: int = 65536,
    ) -> None:
        self.torch = torch
        self.dims = dims
        self.n_layers = layers
        self.device = device
        self.dtype = torch.bfloat16
        self.native_gqa = native_gqa(torch, device)
        self.flash = flash_context(torch)
        torch.manual_seed(seed)
        h, d = dims.hidden, dims.head_dim
        self.layers = []
        for _ in range(layers):
            p = {
                "ln1": self._ones(h),
                "ln2": self._ones(h),
                "wqkv": self._w((dims.heads + 2 * dims.kv_heads) * d, h),
                "wo": self._w(h, dims.heads * d),
            }
            if dims.qk_norm:
                p["qn"], p["kn"] = self._ones(d), self._ones(d)
            if dims.is_moe:
                f = dims.moe_intermediate
                p["router"] = self._w(dims.experts, h)
                p["wgu"] = self._w(dims.experts, h, 2 * f, fan_in=h)
                p["wdn"] = self._w(dims.experts, f, h, fan_in=f)
            else:
                p["wgu"] = self._w(2 * dims.intermediate, h)
                p["wdn"] = self._w(h, dims.intermediate)
            self.layers.append(p)
        self.embed = self._w(dims.vocab, h, fan_in=1)
        self.norm = self._ones(h)
        self.lm_head = self._w(dims.vocab, h)
        inv = 1.0 / (rope_theta ** (torch.arange(0, d, 2, device=device, dtype=torch.float32) / d))
        ang = torch.outer(torch.arange(max_len, device=device, dtype=torch.float32), inv)
        self.cos, self.sin = ang.cos().to(self.dtype), ang.sin().to(self.dtype)
        self.k_cache: list = []
        self.v_cache: list = []

    def _ones(self, n: int) -> object:
        return self.torch.ones((n,), device=self.device, dtype=self.dtype)

    def _w(self, *shape: int, fan_in: int | None = None) -> object:
        t = self.torch.empty(shape, device=self.device, dtype=self.dtype)
        t.normal_(0.0, 1.0 / math.sqrt(fan_in if fan_in is not None else shape[-1]))
        return t

    def allocate_cache(self, batch: int, length: int, layers: int | None = None) -> None:
        """A KV cache of exactly ``length`` positions (random contents) for the first ``layers``."""
        torch = self.torch
        self.k_cache, self.v_cache = [], []
        shape = (batch, self.dims.kv_heads, length, self.dims.head_dim)
        for _ in range(self.n_layers if layers is None else layers):
            self.k_cache.append(torch.empty(shape, device=self.device, dtype=self.dtype).normal_())
            self.v_cache.append(torch.empty(shape, device=self.device, dtype=self.dtype).normal_())

    def _mlp(self, p: dict, x: object) -> object:
        F = self.torch.nn.functional
        if not self.dims.is_moe:
            g, u = F.linear(x, p["wgu"]).chunk(2, dim=-1)
            return F.linear(F.silu(g) * u, p["wdn"])
        return self._moe(p, x)

    def _moe(self, p: dict, x: object) -> object:
        """Top-k routing; few active experts run one by one, many run as a padded batched GEMM."""
        torch = self.torch
        F = torch.nn.functional
        dims = self.dims
        shape = x.shape
        xt = x.reshape(-1, shape[-1])
        T, E, k = xt.shape[0], dims.experts, dims.top_k
        probs = F.linear(xt, p["router"]).float().softmax(dim=-1)
        topw, topi = probs.topk(k, dim=-1)
        topw = (topw / topw.sum(dim=-1, keepdim=True)).to(x.dtype).reshape(-1)
        flat = topi.reshape(-1)
        order = torch.argsort(flat, stable=True)
        sorted_e = flat[order]
        tok = order // k
        counts = torch.bincount(flat, minlength=E)
        counts_host = counts.tolist()  # host sync: routing decides the kernels, as in eager MoE
        out = torch.zeros_like(xt)
        active = sum(1 for c in counts_host if c)
        if 2 * active < E:
            start = 0
            for e, c in enumerate(counts_host):
                if not c:
                    continue
                sel = order[start : start + c]
                t = sel // k
                g, u = (xt[t] @ p["wgu"][e]).chunk(2, dim=-1)
                y = (F.silu(g) * u) @ p["wdn"][e]
                out.index_add_(0, t, y * topw[sel, None])
                start += c
            return out.reshape(shape)
        cap = max(counts_host)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(T * k, device=x.device) - starts[sorted_e]
        buf = xt.new_zeros((E, cap, shape[-1]))
        buf[sorted_e, pos] = xt[tok]
        g, u = torch.bmm(buf, p["wgu"]).chunk(2, dim=-1)
        y = torch.bmm(F.silu(g) * u, p["wdn"])
        out.index_add_(0, tok, y[sorted_e, pos] * topw[order, None])
        return out.reshape(shape)

    def _attention(self, li: int, p: dict, x: object, start: int) -> object:
        torch = self.torch
        F = torch.nn.functional
        dims = self.dims
        b, s, _ = x.shape
        nh, nkv, d = dims.heads, dims.kv_heads, dims.head_dim
        q, k, v = F.linear(x, p["wqkv"]).split([nh * d, nkv * d, nkv * d], dim=-1)
        q = q.view(b, s, nh, d).transpose(1, 2)
        k = k.view(b, s, nkv, d).transpose(1, 2)
        v = v.view(b, s, nkv, d).transpose(1, 2)
        if dims.qk_norm:
            q, k = rmsnorm(torch, q, p["qn"]), rmsnorm(torch, k, p["kn"])
        cos, sin = self.cos[start : start + s], self.sin[start : start + s]
        q, k = rope(torch, q, cos, sin), rope(torch, k, cos, sin)
        kc, vc = self.k_cache[li], self.v_cache[li]
        kc[:, :, start : start + s] = k
        vc[:, :, start : start + s] = v
        with self.flash():
            if s == 1:  # decode: the new query attends to the whole cache
                o = gqa_attention(
                    torch, q, kc[:, :, : start + 1], vc[:, :, : start + 1], False, self.native_gqa
                )
            else:  # prefill from position 0
                if not self.native_gqa and nkv != nh:
                    k = k.repeat_interleave(nh // nkv, dim=1)
                    v = v.repeat_interleave(nh // nkv, dim=1)
                o = gqa_attention(torch, q, k, v, True, self.native_gqa)
        return F.linear(o.transpose(1, 2).reshape(b, s, nh * d), p["wo"])

    def forward(self, inputs: object, start: int, layers: int | None = None, head: bool = True) -> object:
        """``inputs``: token ids [b, s] (``head``) or hidden states [b, s, h]; ``start``: position of
        the first new token (0 for prefill, the KV length for a decode step)."""
        F = self.torch.nn.functional
        x = F.embedding(inputs, self.embed) if head else inputs
        for li in range(self.n_layers if layers is None else layers):
            p = self.layers[li]
            x = x + self._attention(li, p, rmsnorm(self.torch, x, p["ln1"]), start)
            x = x + self._mlp(p, rmsnorm(self.torch, x, p["ln2"]))
        if not head:
            return x
        return F.linear(rmsnorm(self.torch, x[:, -1], self.norm), self.lm_head)
