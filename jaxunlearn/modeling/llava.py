"""LLaVA-1.5: CLIP vision tower + 2-layer projector + Llama decoder (HF
`LlavaForConditionalGeneration`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.clip import CLIPVisionTransformer, VisionConfig
from jaxunlearn.modeling.layers import Linear, activation
from jaxunlearn.modeling.llama import LlamaModel, TextConfig


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
    vision: VisionConfig
    text: TextConfig
    image_token_id: int
    vision_feature_layer: int | tuple[int, ...] = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "LlavaConfig":
        vc, tc = cfg.get("vision_config") or {}, cfg.get("text_config") or {}
        if vc.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise ValueError(f"LLaVA vision_config.model_type {vc.get('model_type')!r} is not "
                             "supported; jaxunlearn ports clip_vision_model for llava")
        if tc.get("model_type", "llama") != "llama":
            raise ValueError(f"LLaVA text_config.model_type {tc.get('model_type')!r} is not "
                             "supported; jaxunlearn ports llama for llava")
        layer = cfg.get("vision_feature_layer", -2)
        strategy = cfg.get("vision_feature_select_strategy", "default")
        if strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {strategy!r}: use default or full")
        return LlavaConfig(
            vision=VisionConfig.from_hf(vc), text=TextConfig.from_hf(tc),
            image_token_id=cfg.get("image_token_id", cfg.get("image_token_index", 32000)),
            vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
            vision_feature_select_strategy=strategy,
            projector_hidden_act=cfg.get("projector_hidden_act", "gelu"),
            multimodal_projector_bias=cfg.get("multimodal_projector_bias", True),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layers = self.vision_feature_layer
        return (layers,) if isinstance(layers, int) else tuple(layers)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per image in input_ids."""
        return self.vision.num_patches + (1 if self.vision_feature_select_strategy == "full" else 0)


class LlavaMultiModalProjector(nnx.Module):
    def __init__(self, c: LlavaConfig, rngs: nnx.Rngs):
        d_in = c.vision.hidden_size * len(c.feature_layers)
        d = c.text.hidden_size
        self.linear_1 = Linear(d_in, d, use_bias=c.multimodal_projector_bias,
                               axes=(None, "embed"), rngs=rngs)
        self.linear_2 = Linear(d, d, use_bias=c.multimodal_projector_bias,
                               axes=("embed", "embed_out"), rngs=rngs)
        self.act = activation(c.projector_hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))


def select_feature_layers(tower, pixel_values: jax.Array, feature_layers, strategy: str,
                          num_layers: int, probes: list | None = None) -> jax.Array:
    """HF's vision feature selection: hidden states at `feature_layers` (negative indices
    count from the end of the num_layers+1 states), CLS dropped for `default`, concatenated
    on the feature axis. Layers after the deepest selected one are not run."""
    n_states = num_layers + 1
    idx = [layer % n_states for layer in feature_layers]
    states = tower.hidden_states(pixel_values, max(idx) + 1, probes)
    picked = [states[i] for i in idx]
    if strategy == "default":
        picked = [s[:, 1:] for s in picked]
    return jnp.concatenate(picked, axis=-1)


def default_positions(attention_mask: jax.Array) -> jax.Array:
    """Position ids from a (left- or right-) padded mask: real tokens count 0, 1, 2, ...;
    padding gets 0 (HF generate's rule)."""
    pos = jnp.cumsum(attention_mask.astype(jnp.int32), axis=-1) - 1
    return jnp.where(attention_mask.astype(bool), pos, 0)


def merge_image_features(embeds: jax.Array, input_ids: jax.Array, image_token_id: int,
                         features: jax.Array) -> jax.Array:
    """Place feature rows at image-token positions in order (torch `masked_scatter`):
    the k-th image token of the flattened batch receives row k of `features` [K, D]."""
    b, t, d = embeds.shape
    is_img = (input_ids == image_token_id).reshape(-1)
    idx = jnp.clip(jnp.cumsum(is_img) - 1, 0, features.shape[0] - 1)
    gathered = jnp.take(features.astype(embeds.dtype), idx, axis=0)
    return jnp.where(is_img[:, None], gathered, embeds.reshape(-1, d)).reshape(b, t, d)


class LlavaForConditionalGeneration(nnx.Module):
    family = "llava"

    def __init__(self, c: LlavaConfig, rngs: nnx.Rngs):
        self.config = c
        self.vision_tower = CLIPVisionTransformer(c.vision, rngs)
        self.multi_modal_projector = LlavaMultiModalProjector(c, rngs)
        self.language_model = LlamaModel(c.text, rngs)
        if not c.tie_word_embeddings:
            self.lm_head = Linear(c.text.hidden_size, c.text.vocab_size, use_bias=False,
                                  axes=("embed", "vocab"), rngs=rngs)

    # -- vision
    def vision_features(self, pixel_values: jax.Array, probes: list | None = None) -> jax.Array:
        """Selected CLIP hidden states [N_img, tokens, D_vision * n_layers], pre-projector."""
        c = self.config
        return select_feature_layers(self.vision_tower, pixel_values, c.feature_layers,
                                     c.vision_feature_select_strategy,
                                     c.vision.num_hidden_layers, probes)

    def image_features(self, pixel_values: jax.Array, probes: list | None = None) -> jax.Array:
        """Projected image features [N_img, tokens, D_text]."""
        return self.multi_modal_projector(self.vision_features(pixel_values, probes))

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

    def lm_logits(self, hidden: jax.Array) -> jax.Array:
        if self.config.tie_word_embeddings:
            return self.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)
