"""Qwen2-VL and Qwen2.5-VL (HF `Qwen2VLForConditionalGeneration`,
`Qwen2_5_VLForConditionalGeneration`): native-resolution ViT + patch merger + Qwen2 decoder
with M-RoPE.

Static shapes under jit
-----------------------
Everything data dependent is computed on the host by `host_prepare` (numpy), which
`Model.host_inputs` (and so `Model.logits` and `ju.generate`) calls before jit:

- M-RoPE position ids [3, B, T], exactly HF's `get_rope_index` (left-padding aware; padding
  gets 0); image tokens are found at `image_token_id`;
- the patch sequence (all images of the batch, HF order) padded to `patch_bucket(N)`: the next
  power of two >= max(N, 64), a multiple of merge_size**2; `pixel_values` [N_pad, C*T*P*P];
- per-patch rotary (row, col) ids, segment ids for per-image (per-frame) attention and, for
  Qwen2.5-VL, window ids plus the window permutation and its inverse as index arrays
  (see `qwen_vision`). The block-diagonal masks are built from the ids inside jit.

So one compiled program serves every batch with the same (B, T) and patch bucket N_pad:
different image sizes, aspect ratios, image counts per row and padding amounts do not
recompile; only a batch whose total patch count crosses into another bucket compiles a new
one (log2 many in total). `image_grid_thw` and `mm_token_type_ids` are consumed on the host
and never reach jit. Text-only batches (no `pixel_values`) are a separate, also static,
program. Generation continues positions from max prefill position + 1, which is HF's
`rope_deltas` rule, so the generic `ju.generate` needs no Qwen-specific hook.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxunlearn.checkpoint import mapping
from jaxunlearn.modeling.layers import Linear
from jaxunlearn.modeling.llama import LlamaModel, TextConfig
from jaxunlearn.modeling.llava import default_positions, merge_image_features
from jaxunlearn.modeling.qwen_vision import (
    QWEN2_5_VL, QWEN2_VL, QwenVisionConfig, QwenVisionTransformer, patch_bucket,
    vision_host_arrays,
)

_TEXT_KEYS_IGNORED = ("vision_config", "text_config", "architectures")
_VISION_INPUTS = ("vision_pos", "vision_segments", "vision_windows", "vision_perm",
                  "vision_unperm")


@dataclasses.dataclass(frozen=True)
class QwenVLConfig:
    vision: QwenVisionConfig
    text: TextConfig
    model_type: str
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    tie_word_embeddings: bool = False

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "QwenVLConfig":
        model_type = cfg.get("model_type")
        if model_type not in (QWEN2_VL, QWEN2_5_VL):
            raise ValueError(f"model_type {model_type!r} is not a Qwen-VL family; use "
                             f"{QWEN2_VL} or {QWEN2_5_VL}")
        # Hub configs are flat (text keys at the top); transformers 5 nests `text_config`
        tc = {k: v for k, v in cfg.items() if k not in _TEXT_KEYS_IGNORED}
        tc.update(cfg.get("text_config") or {})
        if tc.get("use_sliding_window"):
            raise ValueError("text_config.use_sliding_window=true is not supported for Qwen-VL; "
                             "set it to false (the published checkpoints do)")
        rope = dict(tc.get("rope_parameters") or tc.get("rope_scaling") or {})
        rope.setdefault("rope_theta", tc.get("rope_theta", 1000000.0))
        rope.setdefault("mrope_section", [16, 24, 24])
        tc["rope_parameters"] = rope
        tc.pop("rope_scaling", None)
        text = TextConfig.from_hf(tc, qwen=True)
        # HF's Qwen2-VL attention always uses hidden_size // heads
        text = dataclasses.replace(text, head_dim=text.hidden_size // text.num_attention_heads)
        if sum(text.mrope_section) * 2 != text.head_dim:
            raise ValueError(f"mrope_section {list(text.mrope_section)} must sum to head_dim / 2 "
                             f"= {text.head_dim // 2}")
        vision = QwenVisionConfig.from_hf(cfg.get("vision_config") or {}, model_type)
        if vision.out_hidden_size != text.hidden_size:
            raise ValueError(f"vision merger output {vision.out_hidden_size} != text hidden_size "
                             f"{text.hidden_size}; fix vision_config")
        tied = bool(cfg.get("tie_word_embeddings",
                            (cfg.get("text_config") or {}).get("tie_word_embeddings", False)))
        return QwenVLConfig(
            vision=vision, text=text, model_type=model_type,
            image_token_id=int(cfg.get("image_token_id", 151655)),
            video_token_id=int(cfg.get("video_token_id", 151656)),
            vision_start_token_id=int(cfg.get("vision_start_token_id", 151652)),
            tie_word_embeddings=tied,
        )


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


# ----------------------------------------------------------------------------- host side


def rope_index(input_ids: np.ndarray, attention_mask: np.ndarray, grid_thw: np.ndarray | None,
               image_token_id: int, merge: int) -> np.ndarray:
    """HF `get_rope_index` for images: M-RoPE position ids [3, B, T] (int32).

    Real tokens (mask 1) are numbered left to right; text advances all three axes by one per
    token; an image of grid (t, h, w) spans t*h*w/merge**2 tokens with (t, row, col) offsets
    from the running position, after which the position advances by max(h, w) / merge.
    Padding gets 0. Images are taken from `grid_thw` in batch order."""
    b, t = input_ids.shape
    grids = [] if grid_thw is None else [tuple(int(v) for v in g) for g in grid_thw]
    pos = np.zeros((3, b, t), np.int64)
    gi = 0
    for row in range(b):
        valid = np.nonzero(attention_mask[row])[0]
        toks = input_ids[row, valid]
        out = np.zeros((3, len(valid)), np.int64)
        i = cur = 0
        while i < len(toks):
            if toks[i] == image_token_id:
                if gi >= len(grids):
                    n_tok = int((input_ids[attention_mask.astype(bool)] == image_token_id).sum())
                    raise ValueError(f"input_ids hold more image tokens ({n_tok}) than the "
                                     f"{len(grids)} image(s) in image_grid_thw provide")
                gt, gh, gw = grids[gi]
                lh, lw = gh // merge, gw // merge
                n = gt * lh * lw
                run = toks[i:i + n]
                if len(run) < n or not np.all(run == image_token_id):
                    got = int(np.argmin(np.append(run == image_token_id, False)))
                    raise ValueError(f"image {gi} has grid {list(grids[gi])} = {n} tokens but row "
                                     f"{row} holds {got} consecutive image tokens there; "
                                     "image_grid_thw does not match input_ids")
                tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(lh), np.arange(lw),
                                         indexing="ij")
                out[:, i:i + n] = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + cur
                cur += max(gh, gw) // merge
                i += n
                gi += 1
            else:
                j = i
                while j < len(toks) and toks[j] != image_token_id:
                    j += 1
                out[:, i:j] = np.arange(j - i) + cur
                cur += j - i
                i = j
        pos[:, row, valid] = out
    if gi != len(grids):
        raise ValueError(f"image_grid_thw lists {len(grids)} image(s) but input_ids hold image "
                         f"tokens for {gi}; image_grid_thw does not match input_ids")
    return pos.astype(np.int32)


def _check_grid(c: QwenVisionConfig, grid: np.ndarray, n_rows: int) -> None:
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"image_grid_thw must be [n_images, 3], got shape {grid.shape}")
    m = c.spatial_merge_size
    for k, (t, h, w) in enumerate(grid.tolist()):
        if min(t, h, w) < 1 or h < m or w < m:
            raise ValueError(f"image {k} grid {[t, h, w]} is too small: the vision tower needs at "
                             f"least {m}x{m} patches of {c.patch_size} px per image")
        if h % m or w % m:
            raise ValueError(f"image {k} grid {[t, h, w]}: height and width in patches must be "
                             f"multiples of spatial_merge_size {m}")
    expected = int(np.prod(grid, axis=1).sum())
    if expected != n_rows:
        raise ValueError(f"pixel_values has {n_rows} patches but image_grid_thw {grid.tolist()} "
                         f"describes {expected}; image_grid_thw does not match pixel_values")


def host_prepare(config: QwenVLConfig, raw: dict) -> dict:
    """Host-side preparation (numpy) of HF-processor inputs; see the module docstring.

    Consumes `image_grid_thw` (and ignores `mm_token_type_ids`); returns input_ids,
    attention_mask, padded pixel_values, position_ids [3, B, T] and the vision index arrays."""
    raw = dict(raw)
    if raw.get("pixel_values_videos") is not None or raw.get("video_grid_thw") is not None:
        raise ValueError("Qwen-VL video inputs are not supported by jaxunlearn; pass images")
    raw.pop("mm_token_type_ids", None)
    grid = raw.pop("image_grid_thw", None)
    ids = np.asarray(raw["input_ids"])
    mask = np.asarray(raw["attention_mask"])
    pix = raw.get("pixel_values")
    c = config.vision
    n_img_tok = int((ids[mask.astype(bool)] == config.image_token_id).sum())
    if pix is None:
        if grid is not None and len(np.asarray(grid)):
            raise ValueError("image_grid_thw given without pixel_values")
        if n_img_tok:
            raise ValueError(f"input_ids hold {n_img_tok} image tokens but no pixel_values "
                             "were given")
        raw["position_ids"] = rope_index(ids, mask, None, config.image_token_id,
                                         c.spatial_merge_size)
        return raw
    if grid is None:
        raise ValueError("Qwen-VL pixel_values need image_grid_thw (the processor returns both)")
    pix = np.asarray(pix)
    grid = np.asarray(grid).astype(np.int64).reshape(-1, 3) if np.size(grid) else \
        np.zeros((0, 3), np.int64)
    if pix.ndim != 2 or pix.shape[1] != c.patch_dim:
        raise ValueError(f"pixel_values must be [patches, {c.patch_dim}] (channels x "
                         f"temporal_patch_size x patch_size^2), got {pix.shape}; use the Qwen2-VL "
                         "image processor")
    _check_grid(c, grid, pix.shape[0])
    n_features = int((np.prod(grid, axis=1) // c.merge_unit).sum())
    if n_features != n_img_tok:
        raise ValueError(f"input_ids hold {n_img_tok} image tokens but image_grid_thw gives "
                         f"{n_features} image features; image_grid_thw does not match input_ids")
    raw["position_ids"] = rope_index(ids, mask, grid, config.image_token_id, c.spatial_merge_size)
    n_pad = patch_bucket(pix.shape[0], c.merge_unit)
    padded = np.zeros((n_pad, pix.shape[1]), pix.dtype if pix.dtype.kind == "f" else np.float32)
    padded[: pix.shape[0]] = pix
    raw["pixel_values"] = padded
    raw.update(vision_host_arrays(c, grid, n_pad))
    return raw


# ----------------------------------------------------------------------------- checkpoints

# Export layout = what transformers 5.23 `save_pretrained` writes for both Qwen-VL classes,
# which is also the Hub layout (`model.layers.*`, `visual.*`, `lm_head.*`). Accepted on
# import besides it: the in-memory names of transformers 5 (`model.language_model.*`,
# `model.visual.*`).
QWEN_VL_KEYS = mapping.KeyTable(
    prefixes=(
        ("visual.", "visual."),
        ("language_model.", "model."),
        ("lm_head.", "lm_head."),
    ),
    legacy=(
        (r"^model\.language_model\.", "model."),
        (r"^model\.visual\.", "visual."),
    ),
    modules=(
        ("visual.", "model.visual."),
        ("language_model.", "model.language_model."),
        ("lm_head", "lm_head"),
    ),
)

# renames our export into the transformers-5 in-memory layout (tests, tooling that wants it)
QWEN_VL_INMEMORY_EXPORT = ((r"^model\.", "model.language_model."), (r"^visual\.", "model.visual."))


def conv_shapes(c: QwenVLConfig) -> dict[str, tuple]:
    v = c.vision
    return {"visual.patch_embed.proj.kernel":
            (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)}


def _family(model_type: str, architecture: str):
    from jaxunlearn.modeling.registry import Family

    return Family(model_type, QwenVLConfig.from_hf, QwenVLForConditionalGeneration, QWEN_VL_KEYS,
                  conv_shapes, architecture, host_prepare)


def family_qwen2_vl():
    return _family(QWEN2_VL, "Qwen2VLForConditionalGeneration")


def family_qwen2_5_vl():
    return _family(QWEN2_5_VL, "Qwen2_5_VLForConditionalGeneration")
