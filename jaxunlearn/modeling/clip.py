"""CLIP vision tower (HF `CLIPVisionTransformer`), as used by LLaVA-1.5.

The patch convolution (kernel = stride = patch) is a matmul over flattened patches: the
kernel is stored [C*P*P, D], flattened in the (C, P, P) order of torch's conv weight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.layers import (
    Embed, LayerNorm, Linear, activation, dot_product_attention, param,
)


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "VisionConfig":
        return VisionConfig(
            hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"], image_size=cfg["image_size"],
            patch_size=cfg["patch_size"], num_channels=cfg.get("num_channels", 3),
            layer_norm_eps=cfg.get("layer_norm_eps", 1e-5),
            hidden_act=cfg.get("hidden_act", "quick_gelu"),
        )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


def patchify(pixel_values: jax.Array, patch: int) -> jax.Array:
    """[N, C, H, W] -> [N, (H/P)*(W/P), C*P*P], patches in row-major order."""
    n, c, h, w = pixel_values.shape
    gh, gw = h // patch, w // patch
    x = pixel_values.reshape(n, c, gh, patch, gw, patch)
    x = x.transpose(0, 2, 4, 1, 3, 5)
    return x.reshape(n, gh * gw, c * patch * patch)


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, c: VisionConfig, rngs: nnx.Rngs):
        self.c = c
        self.class_embedding = param(rngs, (c.hidden_size,), ("embed",))
        self.patch_embedding = Linear(c.num_channels * c.patch_size ** 2, c.hidden_size,
                                      use_bias=False, axes=(None, "embed"), rngs=rngs)
        self.position_embedding = Embed(c.num_patches + 1, c.hidden_size, axes=(None, "embed"),
                                        rngs=rngs)

    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        c = self.c
        if pixel_values.shape[-1] != c.image_size or pixel_values.shape[-2] != c.image_size:
            raise ValueError(f"pixel_values of size {pixel_values.shape[-2:]} but this CLIP tower "
                             f"takes {c.image_size}x{c.image_size}; preprocess images to that size")
        patches = self.patch_embedding(patchify(pixel_values, c.patch_size))
        cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype),
                               (patches.shape[0], 1, c.hidden_size))
        x = jnp.concatenate([cls, patches], axis=1)
        return x + self.position_embedding.weight[...].astype(x.dtype)[None]


class CLIPAttention(nnx.Module):
    def __init__(self, c: VisionConfig, rngs: nnx.Rngs):
        d = c.hidden_size
        self.heads = c.num_attention_heads
        self.q_proj = Linear(d, d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.k_proj = Linear(d, d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.v_proj = Linear(d, d, use_bias=True, axes=("embed", "heads"), rngs=rngs)
        self.out_proj = Linear(d, d, use_bias=True, axes=("heads", "embed"), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        out = dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)),
                                    split(self.v_proj(x)), None)
        return self.out_proj(out.reshape(b, t, d))


class VisionMLP(nnx.Module):
    """fc1 -> act -> fc2; the neuron activation z = act(fc1(x)) feeds fc2."""

    def __init__(self, d: int, hidden: int, act: str, rngs: nnx.Rngs):
        self.fc1 = Linear(d, hidden, use_bias=True, axes=("embed", "mlp"), rngs=rngs)
        self.fc2 = Linear(hidden, d, use_bias=True, axes=("mlp", "embed"), rngs=rngs)
        self.act = activation(act)

    def __call__(self, x: jax.Array, probe=None) -> jax.Array:
        pre = self.fc1(x)
        z = self.act(pre)
        if probe is not None:
            probe(pre, z)
        return self.fc2(z)


class CLIPEncoderLayer(nnx.Module):
    def __init__(self, c: VisionConfig, rngs: nnx.Rngs):
        self.self_attn = CLIPAttention(c, rngs)
        self.layer_norm1 = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)
        self.mlp = VisionMLP(c.hidden_size, c.intermediate_size, c.hidden_act, rngs)
        self.layer_norm2 = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)

    def __call__(self, x: jax.Array, probe=None) -> jax.Array:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x), probe)


class CLIPEncoder(nnx.Module):
    def __init__(self, c: VisionConfig, rngs: nnx.Rngs):
        self.layers = nnx.List([CLIPEncoderLayer(c, rngs) for _ in range(c.num_hidden_layers)])


class CLIPVisionTransformer(nnx.Module):
    """HF `CLIPVisionModel.vision_model`. `post_layernorm` is kept for a faithful export but
    unused by LLaVA, which reads intermediate hidden states."""

    def __init__(self, c: VisionConfig, rngs: nnx.Rngs):
        self.c = c
        self.embeddings = CLIPVisionEmbeddings(c, rngs)
        self.pre_layrnorm = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)
        self.encoder = CLIPEncoder(c, rngs)
        self.post_layernorm = LayerNorm(c.hidden_size, c.layer_norm_eps, rngs=rngs)

    def hidden_states(self, pixel_values: jax.Array, needed: int,
                      probes: list | None = None) -> list[jax.Array]:
        """HF's `hidden_states` tuple truncated to its first `needed` entries: entry 0 is the
        embedding output (after `pre_layrnorm`), entry i the output of layer i. Layers whose
        output is never read are not run."""
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        states = [x]
        for i, layer in enumerate(self.encoder.layers):
            if len(states) >= needed:
                break
            x = layer(x, probes[i] if probes is not None else None)
            states.append(x)
        return states
