"""LLaVA-1.5: CLIP vision tower + 2-layer projector + Llama decoder (HF
`LlavaForConditionalGeneration`)."""

from __future__ import annotations

import jax
from flax import nnx

from jaxunlearn.modeling.decoder import LlamaModel
from jaxunlearn.modeling.llava.clip import CLIPVisionTransformer
from jaxunlearn.modeling.llava.config import LlavaConfig
from jaxunlearn.modeling.multimodal import (
    MultiModalProjector,
    ProjectedVisionLM,
    default_positions,
    merge_image_features,
)


class LlavaForConditionalGeneration(ProjectedVisionLM, nnx.Module):
    family = "llava"

    def __init__(self, c: LlavaConfig, rngs: nnx.Rngs):
        self.config = c
        self.vision_tower = CLIPVisionTransformer(c.vision, rngs)
        self.multi_modal_projector = MultiModalProjector(c, rngs)
        self.language_model = LlamaModel(c.text, rngs)
        self.init_head(c, rngs)

    # -- shared family interface
    def embed_inputs(self, input_ids: jax.Array, attention_mask: jax.Array,
                     pixel_values: jax.Array | None = None, probes: dict | None = None,
                     dtype=None, **unused) -> tuple[jax.Array, jax.Array]:
        """Token embeddings with image features merged in, and position ids [B, T]."""
        embeds = self.language_model.embed_tokens(input_ids)
        if dtype is not None:
            embeds = embeds.astype(dtype)
        if pixel_values is not None:
            pv = pixel_values.astype(embeds.dtype)
            feats = self.image_features(pv, (probes or {}).get("vision"))
            feats = feats.reshape(-1, feats.shape[-1])
            embeds = merge_image_features(embeds, input_ids, self.config.image_token_id, feats)
        return embeds, default_positions(attention_mask)

