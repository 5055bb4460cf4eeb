"""Qwen2-VL / Qwen2.5-VL module: vision tower with patch merger + Qwen2 decoder with M-RoPE
(inputs prepared on the host by `host.host_prepare`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.decoder import LlamaModel
from jaxunlearn.modeling.layers import Linear
from jaxunlearn.modeling.multimodal import default_positions, merge_image_features
from jaxunlearn.modeling.qwen_vl.config import QwenVLConfig
from jaxunlearn.modeling.qwen_vl.vision import QwenVisionTransformer

_VISION_INPUTS = ("vision_pos", "vision_segments", "vision_windows", "vision_perm",
                  "vision_unperm")


class QwenVLForConditionalGeneration(nnx.Module):
    family = "qwen_vl"

    def __init__(self, c: QwenVLConfig, rngs: nnx.Rngs):
        self.config = c
        self.visual = QwenVisionTransformer(c.vision, rngs)
        self.language_model = LlamaModel(c.text, rngs)
        if not c.tie_word_embeddings:
            self.lm_head = Linear(c.text.hidden_size, c.text.vocab_size, use_bias=False,
                                  axes=("embed", "vocab"), rngs=rngs)

    def image_features(self, pixel_values: jax.Array, vision: dict,
                       probes: list | None = None) -> jax.Array:
        """Merged image tokens [N_pad / merge**2, D_text]; real ones first, in image order."""
        return self.visual(pixel_values, probes=probes, **vision)

    def embed_inputs(self, input_ids: jax.Array, attention_mask: jax.Array,
                     pixel_values: jax.Array | None = None, probes: dict | None = None,
                     dtype=None, position_ids: jax.Array | None = None,
                     **extra) -> tuple[jax.Array, jax.Array]:
        """Token embeddings with image tokens replaced by vision features, and M-RoPE
        positions [3, B, T] (host-computed `position_ids`; text-only rows count 0, 1, ...)."""
        embeds = self.language_model.embed_tokens(input_ids)
        if dtype is not None:
            embeds = embeds.astype(dtype)
        if pixel_values is not None:
            vision = {k: extra[k] for k in _VISION_INPUTS if extra.get(k) is not None}
            if "vision_pos" not in vision or position_ids is None:
                raise ValueError("Qwen-VL inputs with pixel_values must be prepared on the host "
                                 "(Model.host_inputs or qwen_vl.host_prepare) with image_grid_thw")
            feats = self.image_features(pixel_values.astype(embeds.dtype), vision,
                                        (probes or {}).get("vision"))
            embeds = merge_image_features(embeds, input_ids, self.config.image_token_id, feats)
        if position_ids is None:
            pos = default_positions(attention_mask)
            position_ids = jnp.broadcast_to(pos[None], (3, *pos.shape))
        return embeds, position_ids

    def lm_logits(self, hidden: jax.Array) -> jax.Array:
        if self.config.tie_word_embeddings:
            return self.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)
