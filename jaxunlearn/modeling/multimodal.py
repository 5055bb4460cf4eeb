"""Pieces shared by the LLaVA-style families: the 2-layer multimodal projector and HF's
vision-feature selection (LLaVA-1.5 and LLaVA-OneVision), position ids from a padding mask
and the image-token merge (also used by Qwen-VL)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.modeling.layers import Linear, activation


class MultiModalProjector(nnx.Module):
    """linear_1 -> act -> linear_2 from the selected vision features to the text width.

    `c` is a LLaVA or OneVision config (vision.hidden_size, feature_layers, text.hidden_size,
    multimodal_projector_bias, projector_hidden_act)."""

    def __init__(self, c, rngs: nnx.Rngs):
        d_in = c.vision.hidden_size * len(c.feature_layers)
        d = c.text.hidden_size
        self.linear_1 = Linear(d_in, d, use_bias=c.multimodal_projector_bias,
                               axes=(None, "embed"), rngs=rngs)
        self.linear_2 = Linear(d, d, use_bias=c.multimodal_projector_bias,
                               axes=("embed", "embed_out"), rngs=rngs)
        self.act = activation(c.projector_hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))


class AllLayerProbes(list):
    """Vision-tower probes that must see every layer, as HF's forward runs them all (with
    `output_hidden_states`), including layers after the deepest one feature selection reads."""


def select_feature_layers(tower, pixel_values: jax.Array, feature_layers, strategy: str,
                          num_layers: int, probes: list | None = None) -> jax.Array:
    """HF's vision feature selection: hidden states at `feature_layers` (negative indices
    count from the end of the num_layers+1 states), CLS dropped for `default`, concatenated
    on the feature axis. Layers after the deepest selected one are not run, unless `probes`
    is an `AllLayerProbes`."""
    n_states = num_layers + 1
    idx = [layer % n_states for layer in feature_layers]
    needed = n_states if isinstance(probes, AllLayerProbes) else max(idx) + 1
    states = tower.hidden_states(pixel_values, needed, probes)
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


class ProjectedVisionLM:
    """What LLaVA-1.5 and LLaVA-OneVision share (written once): the HF vision-feature
    selection of `vision_tower`, the projector, and the output head (tied or `lm_head`).

    Subclasses (nnx modules) set `config`, `vision_tower`, `multi_modal_projector`,
    `language_model` and, unless embeddings are tied, `lm_head`."""

    def init_head(self, c, rngs: nnx.Rngs) -> None:
        """`lm_head` unless the config ties it to the input embeddings."""
        if not c.tie_word_embeddings:
            self.lm_head = Linear(c.text.hidden_size, c.text.vocab_size, use_bias=False,
                                  axes=("embed", "vocab"), rngs=rngs)

    def vision_features(self, pixel_values: jax.Array, probes: list | None = None) -> jax.Array:
        """Selected vision hidden states [images or crops, tokens, D_vision * n_layers]."""
        c = self.config
        return select_feature_layers(self.vision_tower, pixel_values, c.feature_layers,
                                     c.vision_feature_select_strategy,
                                     c.vision.num_hidden_layers, probes)

    def image_features(self, pixel_values: jax.Array, probes: list | None = None) -> jax.Array:
        """Projected features [images or crops, tokens, D_text]."""
        return self.multi_modal_projector(self.vision_features(pixel_values, probes))

    def lm_logits(self, hidden: jax.Array) -> jax.Array:
        if self.config.tie_word_embeddings:
            return self.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)


def patch_conv_shapes(c) -> dict[str, tuple]:
    """Our path -> torch shape of the vision tower's conv patch kernel (CLIP and SigLIP)."""
    v = c.vision
    return {"vision_tower.embeddings.patch_embedding.kernel":
            (v.hidden_size, v.num_channels, v.patch_size, v.patch_size)}
