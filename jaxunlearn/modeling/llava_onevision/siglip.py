"""SigLIP vision tower (HF `SiglipVisionModel`), as used by LLaVA-OneVision.

Differences from CLIP: the patch convolution has a bias, there is no class token and no
pre-layernorm, the position table has one row per patch, and the MLP uses
`gelu_pytorch_tanh`. `hidden_states` entry 0 is the embedding output and entry i the output
of encoder layer i (before `post_layernorm`), which is what LLaVA-OneVision selects from.
The attention-pooling `head` exists only when `vision_use_head` (OneVision checkpoints set it
to False); it is ported so that checkpoints which carry it round-trip, and `__call__` runs it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.layers import Embed, LayerNorm, Linear, dot_product_attention, param
from jaxunlearn.modeling.vit import EncoderLayer, VisionMLP, patchify


@dataclasses.dataclass(frozen=True)
class SiglipVisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-6
    hidden_act: str = "gelu_pytorch_tanh"
    vision_use_head: bool = True

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "SiglipVisionConfig":
        """Parse an HF `SiglipVisionConfig` dict (defaults as in transformers)."""
        return SiglipVisionConfig(
            hidden_size=cfg.get("hidden_size", 768),
            intermediate_size=cfg.get("intermediate_size", 3072),
            num_hidden_layers=cfg.get("num_hidden_layers", 12),
            num_attention_heads=cfg.get("num_attention_heads", 12),
            image_size=cfg.get("image_size", 224),
            patch_size=cfg.get("patch_size", 16),
            num_channels=cfg.get("num_channels", 3),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-6),
            hidden_act=cfg.get("hidden_act", "gelu_pytorch_tanh"),
            vision_use_head=bool(cfg.get("vision_use_head", True)),
        )

    @property
    def grid(self) -> int:
        """Patches per side of one image."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid ** 2


class SiglipVisionEmbeddings(nnx.Module):
    """Patch conv (with bias, as a matmul over flattened patches) + learned positions."""

    def __init__(self, c: SiglipVisionConfig, rngs: nnx.Rngs):
        self.c = c
        self.patch_embedding = Linear(c.num_channels * c.patch_size ** 2, c.hidden_size,
                                      use_bias=True, axes=(None, "embed"), rngs=rngs)
        self.position_embedding = Embed(c.num_patches, c.hidden_size, axes=(None, "embed"),
                                        rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.c
        if pixel_values.shape[-1] != c.image_size or pixel_values.shape[-2] != c.image_size:
            raise ValueError(f"pixel_values of size {pixel_values.shape[-2:]} but this SigLIP "
                             f"tower takes {c.image_size}x{c.image_size}; preprocess images to "
                             "that size")
        x = self.patch_embedding(patchify(pixel_values, c.patch_size))
        return x + self.position_embedding.weight[...].astype(x.dtype)[None]


class SiglipEncoder(nnx.Module):
    def __init__(self, c: SiglipVisionConfig, rngs: nnx.Rngs):
        # CLIP's encoder layer has exactly SigLIP's structure and parameter names
        self.layers = nnx.List([EncoderLayer(c, rngs) for _ in range(c.num_hidden_layers)])


class MultiheadAttention(nnx.Module):
    """torch `nn.MultiheadAttention` (batch_first) with its packed `in_proj_weight` [3D, D]."""

    def __init__(self, d: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.in_proj_weight = param(rngs, (3 * d, d), (None, "embed"))
        self.in_proj_bias = param(rngs, (3 * d,), (None,), "zeros")
        self.out_proj = Linear(d, d, use_bias=True, axes=("heads", "embed"), rngs=rngs)

    def __call__(self, q: jax.Array, kv: jax.Array) -> jax.Array:
        d = q.shape[-1]
        w = self.in_proj_weight[...].astype(q.dtype)
        bias = self.in_proj_bias[...].astype(q.dtype)
        proj = lambda x, i: jnp.dot(x, w[i * d:(i + 1) * d].T) + bias[i * d:(i + 1) * d]  # noqa: E731
        split = lambda y: y.reshape(*y.shape[:2], self.heads, d // self.heads)  # noqa: E731
        out = dot_product_attention(split(proj(q, 0)), split(proj(kv, 1)), split(proj(kv, 2)), None)
        return self.out_proj(out.reshape(*q.shape[:2], d))


class SiglipMultiheadAttentionPoolingHead(nnx.Module):
    """A learned probe attends over the tokens, then LayerNorm + residual MLP."""

    def __init__(self, c: SiglipVisionConfig, rngs: nnx.Rngs):
        self.probe = param(rngs, (1, 1, c.hidden_size), (None, None, "embed"))
        self.attention = MultiheadAttention(c.hidden_size, c.num_attention_heads, rngs)
        self.layernorm = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)
        self.mlp = VisionMLP(c.hidden_size, c.intermediate_size, c.hidden_act, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        h = self.attention(probe, x)
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]


class SiglipVisionTransformer(nnx.Module):
    """HF `SiglipVisionModel` (same attribute paths as the transformers 5 module)."""

    def __init__(self, c: SiglipVisionConfig, rngs: nnx.Rngs):
        self.c = c
        self.embeddings = SiglipVisionEmbeddings(c, rngs)
        self.encoder = SiglipEncoder(c, rngs)
        self.post_layernorm = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)
        if c.vision_use_head:
            self.head = SiglipMultiheadAttentionPoolingHead(c, rngs)

    def hidden_states(self, pixel_values: jax.Array, needed: int,
                      probes: list | None = None) -> list[jax.Array]:
        """HF's `hidden_states` tuple truncated to its first `needed` entries (entry 0: the
        embeddings; entry i: output of layer i). Layers whose output is never read are not run."""
        x = self.embeddings(pixel_values)
        states = [x]
        for i, layer in enumerate(self.encoder.layers):
            if len(states) >= needed:
                break
            x = layer(x, probes[i] if probes is not None else None)
            states.append(x)
        return states

    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        """(last_hidden_state after post_layernorm, pooled output or None without a head)."""
        x = self.hidden_states(pixel_values, self.c.num_hidden_layers + 1)[-1]
        x = self.post_layernorm(x)
        return x, (self.head(x) if self.c.vision_use_head else None)
