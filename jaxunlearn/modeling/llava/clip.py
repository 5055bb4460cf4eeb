"""CLIP vision tower (HF `CLIPVisionTransformer`), as used by LLaVA-1.5; the encoder layer
and patch flattening are the shared ones of `modeling.vit`."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.layers import Embed, LayerNorm, Linear, param
from jaxunlearn.modeling.vit import EncoderLayer, patchify


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


class CLIPEncoder(nnx.Module):
    def __init__(self, c: VisionConfig, rngs: nnx.Rngs):
        self.layers = nnx.List([EncoderLayer(c, rngs) for _ in range(c.num_hidden_layers)])


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
