"""LLaVA-OneVision module: SigLIP tower + shared projector + Qwen2 decoder; image features
are gathered by the host-computed plan of `anyres.host_prepare`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.decoder import LlamaModel
from jaxunlearn.modeling.layers import param
from jaxunlearn.modeling.llava_onevision.config import OneVisionConfig
from jaxunlearn.modeling.llava_onevision.siglip import SiglipVisionTransformer
from jaxunlearn.modeling.multimodal import (
    MultiModalProjector,
    ProjectedVisionLM,
    default_positions,
)


class LlavaOnevisionForConditionalGeneration(ProjectedVisionLM, nnx.Module):
    family = "llava_onevision"

    def __init__(self, c: OneVisionConfig, rngs: nnx.Rngs):
        self.config = c
        self.vision_tower = SiglipVisionTransformer(c.vision, rngs)
        self.multi_modal_projector = MultiModalProjector(c, rngs)
        self.image_newline = param(rngs, (c.text.hidden_size,), ("embed",))
        self.language_model = LlamaModel(c.text, rngs)
        self.init_head(c, rngs)

    # -- shared family interface
    def embed_inputs(self, input_ids: jax.Array, attention_mask: jax.Array,
                     pixel_values: jax.Array | None = None, image_index: jax.Array | None = None,
                     image_weight: jax.Array | None = None, probes: dict | None = None,
                     dtype=None, **unused) -> tuple[jax.Array, jax.Array]:
        """Token embeddings with packed image features gathered in, and position ids [B, T].

        Expects `host_prepare`'d inputs: pixel_values [slots, C, S, S], image_index /
        image_weight [B, T, 4]."""
        embeds = self.language_model.embed_tokens(input_ids)
        if dtype is not None:
            embeds = embeds.astype(dtype)
        if pixel_values is not None:
            if image_index is None or image_weight is None or pixel_values.ndim != 4:
                raise ValueError("llava_onevision inputs must go through host_prepare (use "
                                 "Model.logits / Model.host_inputs with image_sizes)")
            feats = self.image_features(pixel_values.astype(embeds.dtype),
                                        (probes or {}).get("vision"))
            table = jnp.concatenate([feats.reshape(-1, feats.shape[-1]),
                                     self.image_newline[...][None]], axis=0).astype(embeds.dtype)
            weight = image_weight.astype(embeds.dtype)
            merged = jnp.zeros_like(embeds)
            for j in range(image_index.shape[-1]):
                rows = jnp.take(table, image_index[..., j], axis=0)
                merged = merged + weight[..., j, None] * rows
            is_img = (input_ids == self.config.image_token_id)[..., None]
            embeds = jnp.where(is_img, merged, embeds)
        return embeds, default_positions(attention_mask)

