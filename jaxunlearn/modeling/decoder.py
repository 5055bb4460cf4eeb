"""Llama-style decoder (Llama / Vicuna / Qwen2 language models) with an explicit KV cache.

One module serves Llama and Qwen2: they differ by biases on q/k/v (Qwen2) and by M-RoPE
(Qwen2-VL), both config switches. Attribute paths mirror HF's `LlamaModel` / `Qwen2Model`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.layers import (
    Embed, Linear, RMSNorm, activation, apply_rotary, attention_heads_major, dot_product_attention,
    rope_cos_sin, rope_inv_freq,
)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """The decoder hyper-parameters jaxunlearn reads from an HF `text_config`."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple | None = None  # sorted items of HF rope_parameters, hashable
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    mrope_section: tuple[int, ...] | None = None

    @staticmethod
    def from_hf(cfg: dict[str, Any], *, qwen: bool = False) -> "TextConfig":
        heads = cfg["num_attention_heads"]
        rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
        theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
        mrope = rope.get("mrope_section")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        scaling = None
        if rope_type == "linear":
            scaling = (("factor", float(rope["factor"])), ("rope_type", "linear"))
        elif rope_type not in ("default", "mrope"):
            raise ValueError(f"text_config rope_type {rope_type!r} is not supported; "
                             "supported: default, linear, mrope")
        bias = bool(cfg.get("attention_bias", False))
        return TextConfig(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=float(theta),
            rope_scaling=scaling,
            qkv_bias=True if qwen else bias,
            o_bias=False if qwen else bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            hidden_act=cfg.get("hidden_act", "silu"),
            mrope_section=tuple(mrope) if mrope else None,
        )


class LlamaAttention(nnx.Module):
    def __init__(self, c: TextConfig, rngs: nnx.Rngs):
        self.c = c
        d, hd = c.hidden_size, c.head_dim
        self.q_proj = Linear(d, c.num_attention_heads * hd, use_bias=c.qkv_bias,
                             axes=("embed", "heads"), rngs=rngs)
        self.k_proj = Linear(d, c.num_key_value_heads * hd, use_bias=c.qkv_bias,
                             axes=("embed", "kv_heads"), rngs=rngs)
        self.v_proj = Linear(d, c.num_key_value_heads * hd, use_bias=c.qkv_bias,
                             axes=("embed", "kv_heads"), rngs=rngs)
        self.o_proj = Linear(c.num_attention_heads * hd, d, use_bias=c.o_bias,
                             axes=("heads", "embed"), rngs=rngs)

    def __call__(self, x, cos, sin, allowed, kv_cache=None, cache_index=None):
        c = self.c
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, c.num_attention_heads, c.head_dim)
        k = self.k_proj(x).reshape(b, t, c.num_key_value_heads, c.head_dim)
        v = self.v_proj(x).reshape(b, t, c.num_key_value_heads, c.head_dim)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if kv_cache is None:
            return self.o_proj(dot_product_attention(q, k, v, allowed).reshape(b, t, -1)), None
        # the cache is heads-major [B, KV, S, D]: appending is a contiguous write per head
        ck, cv = kv_cache
        ck = jax.lax.dynamic_update_slice(ck, k.transpose(0, 2, 1, 3).astype(ck.dtype),
                                          (0, 0, cache_index, 0))
        cv = jax.lax.dynamic_update_slice(cv, v.transpose(0, 2, 1, 3).astype(cv.dtype),
                                          (0, 0, cache_index, 0))
        out = attention_heads_major(q, ck.astype(q.dtype), cv.astype(q.dtype), allowed)
        return self.o_proj(out.reshape(b, t, -1)), (ck, cv)


class LlamaMLP(nnx.Module):
    """SiLU-gated MLP; the neuron activation z = act(gate(x)) * up(x) feeds down_proj."""

    def __init__(self, c: TextConfig, rngs: nnx.Rngs):
        self.gate_proj = Linear(c.hidden_size, c.intermediate_size, use_bias=c.mlp_bias,
                                axes=("embed", "mlp"), rngs=rngs)
        self.up_proj = Linear(c.hidden_size, c.intermediate_size, use_bias=c.mlp_bias,
                              axes=("embed", "mlp"), rngs=rngs)
        self.down_proj = Linear(c.intermediate_size, c.hidden_size, use_bias=c.mlp_bias,
                                axes=("mlp", "embed"), rngs=rngs)
        self.act = activation(c.hidden_act)

    def __call__(self, x, probe=None):
        pre = self.gate_proj(x)
        up = self.up_proj(x)
        z = self.act(pre) * up
        out = self.down_proj(z)
        if probe is not None:
            probe(pre, z, {"gate_proj": pre, "up_proj": up, "down_proj": out})
        return out


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, c: TextConfig, rngs: nnx.Rngs):
        self.self_attn = LlamaAttention(c, rngs)
        self.mlp = LlamaMLP(c, rngs)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, rngs=rngs)

    def __call__(self, x, cos, sin, allowed, kv_cache=None, cache_index=None, probe=None):
        h, new_cache = self.self_attn(self.input_layernorm(x), cos, sin, allowed, kv_cache,
                                      cache_index)
        x = x + h
        x = x + self.mlp(self.post_attention_layernorm(x), probe)
        return x, new_cache


def attention_allowed(key_valid: jax.Array, q_len: int, cache_index) -> jax.Array:
    """Causal + padding mask [B, Tq, S]: query i (absolute index cache_index+i) sees key s
    when s <= cache_index+i and key s is a real token."""
    s = key_valid.shape[1]
    q_abs = cache_index + jnp.arange(q_len)[:, None]
    causal = jnp.arange(s)[None, :] <= q_abs
    return causal[None] & key_valid[:, None, :].astype(bool)


class LlamaModel(nnx.Module):
    """Token embedding, decoder layers and final norm (HF `LlamaModel` / `Qwen2Model`)."""

    def __init__(self, c: TextConfig, rngs: nnx.Rngs):
        self.c = c
        self.embed_tokens = Embed(c.vocab_size, c.hidden_size, rngs=rngs)
        self.layers = nnx.List([LlamaDecoderLayer(c, rngs) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps, rngs=rngs)

    def __call__(self, inputs_embeds: jax.Array, positions: jax.Array, key_valid: jax.Array,
                 cache: list | None = None, cache_index=0, remat: bool = False,
                 probes: list | None = None):
        """Run the decoder.

        inputs_embeds [B, T, D]; positions [B, T] (or [3, B, T] with M-RoPE); key_valid
        [B, S] marks real tokens among the S keys (S = T without a cache, the cache length
        with one). Returns (final hidden states [B, T, D], updated cache or None).
        """
        c = self.c
        t = inputs_embeds.shape[1]
        scaling = dict(c.rope_scaling) if c.rope_scaling else None
        inv = rope_inv_freq(c.head_dim, c.rope_theta, scaling)
        cos, sin = rope_cos_sin(positions, inv, c.mrope_section)
        allowed = attention_allowed(key_valid, t, cache_index)
        x = inputs_embeds
        new_cache = [] if cache is not None else None
        for i, layer in enumerate(self.layers):
            probe = probes[i] if probes is not None else None
            kv = cache[i] if cache is not None else None
            if remat and cache is None and probe is None:
                x, _ = nnx.remat(lambda lyr, h: lyr(h, cos, sin, allowed))(layer, x)
            else:
                x, kv_new = layer(x, cos, sin, allowed, kv, cache_index, probe)
                if cache is not None:
                    new_cache.append(kv_new)
        return self.norm(x), new_cache
