"""LLaVA-OneVision: SigLIP tower + 2-layer projector + Qwen2 decoder with AnyRes images
(HF `LlavaOnevisionForConditionalGeneration`, transformers 5.23).

Image handling follows `LlavaOnevisionModel.get_image_features` / `pack_image_features`:
each image is a base crop (the whole image resized) plus a grid of crops chosen by
`select_best_resolution` over `image_grid_pinpoints`. The grid features are laid out as one
feature map, the padding added by the processor is cut away (`unpad_image`), the map is
bilinearly downsized when larger than `anyres_max_N` crops allow (`vision_aspect_ratio`), an
`image_newline` is appended to every row, and the base crop's features come first. Images of
a multi-image sample (`batch_num_images` > 1) use the base crop plus one newline.

Static shapes. Everything data dependent is computed on the host by `host_prepare` (numpy):
crops are packed into `crop_slots` slots (default: n_images * `max_crops`, the largest crop
count any pinpoint gives, so the count never depends on aspect ratios), and every input
position gets 4 (index, weight) pairs into the table [projected crop features; image_newline]
(copies, newlines and bilinear taps alike). Inside jit the model runs the tower on all slots
and gathers. Hence one compilation per (batch, length, number of images) whatever the image
sizes; pass `crop_slots=K` to use a smaller fixed budget of crops per batch instead.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxunlearn.checkpoint import mapping
from jaxunlearn.modeling.layers import Linear, activation, param
from jaxunlearn.modeling.llama import LlamaModel, TextConfig
from jaxunlearn.modeling.llava import default_positions, select_feature_layers
from jaxunlearn.modeling.siglip import SiglipVisionConfig, SiglipVisionTransformer


def default_grid_pinpoints(base: int = 384, n: int = 6) -> tuple[tuple[int, int], ...]:
    """transformers' default pinpoints: every (i*base, j*base) for i, j in 1..n."""
    return tuple((i * base, j * base) for i in range(1, n + 1) for j in range(1, n + 1))


@dataclasses.dataclass(frozen=True)
class OneVisionConfig:
    vision: SiglipVisionConfig
    text: TextConfig
    image_token_id: int
    video_token_id: int = 151647
    image_grid_pinpoints: tuple[tuple[int, int], ...] = default_grid_pinpoints()
    vision_aspect_ratio: str = "anyres_max_9"
    vision_feature_layer: int | tuple[int, ...] = -1
    vision_feature_select_strategy: str = "full"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "OneVisionConfig":
        """Parse an HF `LlavaOnevisionConfig` dict; clear errors for what is not ported."""
        vc, tc = cfg.get("vision_config") or {}, cfg.get("text_config") or {}
        if vc.get("model_type", "siglip_vision_model") != "siglip_vision_model":
            raise ValueError(f"LLaVA-OneVision vision_config.model_type {vc.get('model_type')!r} "
                             "is not supported; jaxunlearn ports siglip_vision_model")
        if tc.get("model_type", "qwen2") != "qwen2":
            raise ValueError(f"LLaVA-OneVision text_config.model_type {tc.get('model_type')!r} is "
                             "not supported; jaxunlearn ports qwen2")
        if tc.get("use_sliding_window") or any(t != "full_attention"
                                               for t in tc.get("layer_types") or ()):
            raise ValueError("LLaVA-OneVision text_config uses sliding-window attention, which "
                             "jaxunlearn does not port; set use_sliding_window: false")
        if not vc:  # transformers' defaults for OneVision: SigLIP so400m-patch14-384, no head
            vc = dict(hidden_size=1152, intermediate_size=4304, patch_size=14, image_size=384,
                      num_hidden_layers=26, num_attention_heads=16, vision_use_head=False)
        vision = SiglipVisionConfig.from_hf(vc)
        strategy = cfg.get("vision_feature_select_strategy", "full")
        if strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {strategy!r}: use default or full")
        ratio = cfg.get("vision_aspect_ratio", "anyres_max_9")
        if not re.fullmatch(r"anyres_max_\d+", str(ratio)):
            raise ValueError(f"vision_aspect_ratio {ratio!r} is not supported; use anyres_max_N")
        pins = cfg.get("image_grid_pinpoints")
        pins = (tuple((int(h), int(w)) for h, w in pins) if pins
                else default_grid_pinpoints(vision.image_size))
        for h, w in pins:
            if h % vision.image_size or w % vision.image_size:
                raise ValueError(f"image_grid_pinpoints entry {[h, w]} is not a multiple of the "
                                 f"vision image_size {vision.image_size}")
        layer = cfg.get("vision_feature_layer", -1)
        tied = bool(cfg.get("tie_word_embeddings", False) or tc.get("tie_word_embeddings", False))
        return OneVisionConfig(
            vision=vision, text=TextConfig.from_hf(tc, qwen=True),
            image_token_id=cfg.get("image_token_id", cfg.get("image_token_index", 151646)),
            video_token_id=cfg.get("video_token_id", cfg.get("video_token_index", 151647)),
            image_grid_pinpoints=pins, vision_aspect_ratio=str(ratio),
            vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
            vision_feature_select_strategy=strategy,
            projector_hidden_act=cfg.get("projector_hidden_act", "gelu"),
            multimodal_projector_bias=cfg.get("multimodal_projector_bias", True),
            tie_word_embeddings=tied,
        )

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layers = self.vision_feature_layer
        return (layers,) if isinstance(layers, int) else tuple(layers)

    @property
    def tokens_per_crop(self) -> int:
        """Feature rows per crop after feature selection."""
        drop = 1 if self.vision_feature_select_strategy == "default" else 0
        return self.vision.num_patches - drop

    @property
    def max_crops(self) -> int:
        """Largest crop count of any image: the biggest pinpoint grid plus the base crop."""
        s = self.vision.image_size
        return max(-(-h // s) * -(-w // s) for h, w in self.image_grid_pinpoints) + 1

    @property
    def max_num_patches(self) -> int:
        """N of `anyres_max_N` (parsed as transformers does)."""
        return int(self.vision_aspect_ratio[len("anyres_max_"):])


# ----------------------------------------------------------------------------- host-side plan

def select_best_resolution(original_size: Sequence[int],
                           possible_resolutions: Sequence[Sequence[int]]) -> tuple[int, int]:
    """transformers' rule: the (height, width) pinpoint keeping the most of the image's
    resolution, ties broken by the least wasted area."""
    oh, ow = int(original_size[0]), int(original_size[1])
    best, max_eff, min_waste = None, 0, float("inf")
    for h, w in possible_resolutions:
        scale = min(w / ow, h / oh)
        dw, dh = int(ow * scale), int(oh * scale)
        eff = min(dw * dh, ow * oh)
        waste = w * h - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            max_eff, min_waste, best = eff, waste, (h, w)
    return best


def num_crops(config: OneVisionConfig, image_size: Sequence[int], multi_image: bool = False) -> int:
    """Crops the processor makes for an image of (height, width): base + grid (1 if multi-image)."""
    if multi_image:
        return 1
    s = config.vision.image_size
    h, w = select_best_resolution(image_size, config.image_grid_pinpoints)
    return -(-h // s) * -(-w // s) + 1


def unpadded_box(image_size: Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) kept by `unpad_image` on a [height, width] feature map."""
    oh, ow = int(image_size[0]), int(image_size[1])
    if ow / oh > width / height:
        new_h = int(round(oh * (width / ow), 7))
        pad = (height - new_h) // 2
        return pad, height - pad, 0, width
    new_w = int(round(ow * (height / oh), 7))
    pad = (width - new_w) // 2
    return 0, height, pad, width - pad


def _bilinear_taps(n_in: int, n_out: int) -> list[tuple[int, int, float, float]]:
    """torch `interpolate(mode="bilinear", align_corners=False)` along one axis:
    per output index (i0, i1, w0, w1)."""
    if n_out <= 0:
        return []
    scale = n_in / n_out
    taps = []
    for d in range(n_out):
        src = max(scale * (d + 0.5) - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + (1 if i0 < n_in - 1 else 0)
        l1 = src - i0
        taps.append((i0, i1, 1.0 - l1, l1))
    return taps


NEWLINE = -1  # sentinel source index: the image_newline row


def image_token_plan(config: OneVisionConfig, image_size: Sequence[int],
                     multi_image: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Where each of an image's tokens comes from, as (src [K, 4], weight [K, 4]).

    `src` indexes the image's own crop features flattened as crop * tokens_per_crop + token
    (crop 0 = base), or is NEWLINE; a token is sum_j weight[:, j] * row(src[:, j]).
    """
    tpc = config.tokens_per_crop
    rows: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
    one = lambda i: ((i, 0, 0, 0), (1.0, 0.0, 0.0, 0.0))  # noqa: E731
    base = [one(t) for t in range(tpc)]
    if multi_image:
        rows = base + [one(NEWLINE)]
    else:
        side = config.vision.grid
        if side * side != tpc:
            raise ValueError("The number of patches is not consistent with the image size: "
                             "vision_feature_select_strategy 'default' drops a patch, so AnyRes "
                             "grids need 'full' (as in transformers)")
        s = config.vision.image_size
        bh, bw = select_best_resolution(image_size, config.image_grid_pinpoints)
        nph, npw = bh // s, bw // s
        height, width = nph * side, npw * side
        r0, r1, c0, c1 = unpadded_box(image_size, height, width)
        h, w = r1 - r0, c1 - c0  # an extreme aspect ratio can leave 0 rows or columns (as HF)

        def src(y: int, x: int) -> int:  # position in the unpadded map -> feature row
            y, x = y + r0, x + c0
            crop = 1 + (y // side) * npw + x // side
            return crop * tpc + (y % side) * side + x % side

        ratio = math.sqrt(h * w / (config.max_num_patches * side ** 2))
        grid_rows = []
        if ratio > 1.1:
            ty = _bilinear_taps(h, int(h // ratio))
            tx = _bilinear_taps(w, int(w // ratio))
            for y0, y1, wy0, wy1 in ty:
                for x0, x1, wx0, wx1 in tx:
                    grid_rows.append(((src(y0, x0), src(y0, x1), src(y1, x0), src(y1, x1)),
                                      (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1)))
                grid_rows.append(one(NEWLINE))
        else:
            for y in range(h):
                grid_rows.extend(one(src(y, x)) for x in range(w))
                grid_rows.append(one(NEWLINE))
        rows = base + grid_rows
    idx = np.asarray([r[0] for r in rows], np.int64)
    weight = np.asarray([r[1] for r in rows], np.float64)
    return idx, weight


def num_image_tokens(config: OneVisionConfig, image_size: Sequence[int],
                     multi_image: bool = False) -> int:
    """Image tokens that stand for one image of (height, width) in input_ids."""
    return len(image_token_plan(config, image_size, multi_image)[0])


def host_prepare(config: OneVisionConfig, raw: dict) -> dict:
    """Host-side (numpy) preparation: pack crops into fixed slots and build the gather plan.

    Reads `pixel_values` ([n_images, crops, 3, S, S] as the HF processor pads them, or the
    crops of all images concatenated [n, 3, S, S]), `image_sizes` [n_images, 2] (height, width),
    optional `batch_num_images` and `crop_slots`. Writes `pixel_values` [slots, 3, S, S],
    `image_index` [B, T, 4] int32 and `image_weight` [B, T, 4] float32.
    """
    raw = dict(raw)
    pix = raw.pop("pixel_values", None)
    sizes = raw.pop("image_sizes", None)
    per_sample = raw.pop("batch_num_images", None)
    slots = raw.pop("crop_slots", None)
    ids = np.asarray(raw["input_ids"])
    is_img = ids == config.image_token_id
    if pix is None:
        if is_img.any():
            raise ValueError(f"input_ids hold {int(is_img.sum())} image tokens but no "
                             "pixel_values were given")
        return raw
    if sizes is None:
        raise ValueError("llava_onevision needs image_sizes [n_images, 2] (height, width) with "
                         "pixel_values, as the OneVision processor returns them")
    pix = np.asarray(pix, np.float32)
    sizes = np.asarray(sizes).reshape(-1, 2).astype(np.int64)
    n_img = len(sizes)
    if per_sample is None:
        multi = [False] * n_img
    else:
        per_sample = [int(n) for n in np.asarray(per_sample).reshape(-1)]
        if sum(per_sample) != n_img:
            raise ValueError(f"batch_num_images {per_sample} sums to {sum(per_sample)} but "
                             f"image_sizes has {n_img} images")
        multi = [n != 1 for n in per_sample for _ in range(n)]
    counts = [num_crops(config, sizes[i], multi[i]) for i in range(n_img)]
    s, ch = config.vision.image_size, config.vision.num_channels
    if pix.ndim == 5:
        if pix.shape[0] != n_img:
            raise ValueError(f"pixel_values holds {pix.shape[0]} images but image_sizes {n_img}")
        for i, c in enumerate(counts):
            if pix.shape[1] < c:
                raise ValueError(f"image {i} of size {tuple(sizes[i])} needs {c} crops but "
                                 f"pixel_values has {pix.shape[1]}; preprocess with the same "
                                 "image_grid_pinpoints as the model config")
        crops = [pix[i, :c] for i, c in enumerate(counts)]
    elif pix.ndim == 4:
        if pix.shape[0] != sum(counts):
            raise ValueError(f"pixel_values holds {pix.shape[0]} crops but image_sizes need "
                             f"{sum(counts)}")
        starts = np.cumsum([0] + counts)
        crops = [pix[starts[i]:starts[i + 1]] for i in range(n_img)]
    else:
        raise ValueError(f"pixel_values of shape {pix.shape}: expected [n_images, crops, C, H, W]")
    if pix.shape[-3:] != (ch, s, s):
        raise ValueError(f"pixel_values crops of shape {pix.shape[-3:]} but the vision tower takes "
                         f"{(ch, s, s)}")
    n_slots = int(slots) if slots is not None else n_img * config.max_crops
    if sum(counts) > n_slots:
        raise ValueError(f"the images need {sum(counts)} crops but crop_slots is {n_slots}")
    packed = np.zeros((n_slots, ch, s, s), np.float32)
    tpc = config.tokens_per_crop
    newline_row = n_slots * tpc
    src_all, w_all, offset = [], [], 0
    for i in range(n_img):
        packed[offset:offset + counts[i]] = crops[i]
        src, w = image_token_plan(config, sizes[i], multi[i])
        src_all.append(np.where(src == NEWLINE, newline_row, src + offset * tpc))
        w_all.append(w)
        offset += counts[i]
    src = np.concatenate(src_all) if src_all else np.zeros((0, 4), np.int64)
    w = np.concatenate(w_all) if w_all else np.zeros((0, 4))
    if int(is_img.sum()) != len(src):
        raise ValueError(f"Image features and image tokens do not match: input_ids hold "
                         f"{int(is_img.sum())} image tokens but the images (sizes "
                         f"{sizes.tolist()}) need {len(src)}; expand each <image> with "
                         "llava_onevision.num_image_tokens")
    index = np.zeros(ids.shape + (4,), np.int32)
    weight = np.zeros(ids.shape + (4,), np.float32)
    index[is_img] = src
    weight[is_img] = w
    raw.update(pixel_values=packed, image_index=index, image_weight=weight)
    return raw


# ----------------------------------------------------------------------------- model

class OneVisionProjector(nnx.Module):
    def __init__(self, c: OneVisionConfig, rngs: nnx.Rngs):
        d_in = c.vision.hidden_size * len(c.feature_layers)
        d = c.text.hidden_size
        self.linear_1 = Linear(d_in, d, use_bias=c.multimodal_projector_bias,
                               axes=(None, "embed"), rngs=rngs)
        self.linear_2 = Linear(d, d, use_bias=c.multimodal_projector_bias,
                               axes=("embed", "embed_out"), rngs=rngs)
        self.act = activation(c.projector_hidden_act)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.linear_2(self.act(self.linear_1(x)))


class LlavaOnevisionForConditionalGeneration(nnx.Module):
    family = "llava_onevision"

    def __init__(self, c: OneVisionConfig, rngs: nnx.Rngs):
        self.config = c
        self.vision_tower = SiglipVisionTransformer(c.vision, rngs)
        self.multi_modal_projector = OneVisionProjector(c, rngs)
        self.image_newline = param(rngs, (c.text.hidden_size,), ("embed",))
        self.language_model = LlamaModel(c.text, rngs)
        if not c.tie_word_embeddings:
            self.lm_head = Linear(c.text.hidden_size, c.text.vocab_size, use_bias=False,
                                  axes=("embed", "vocab"), rngs=rngs)

    # -- vision
    def vision_features(self, pixel_values: jax.Array, probes: list | None = None) -> jax.Array:
        """Selected SigLIP hidden states [n_crops, tokens_per_crop, D_vision * n_layers]."""
        c = self.config
        return select_feature_layers(self.vision_tower, pixel_values, c.feature_layers,
                                     c.vision_feature_select_strategy,
                                     c.vision.num_hidden_layers, probes)

    def image_features(self, pixel_values: jax.Array, probes: list | None = None) -> jax.Array:
        """Projected crop features [n_crops, tokens_per_crop, D_text]."""
        return self.multi_modal_projector(self.vision_features(pixel_values, probes))

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

    def lm_logits(self, hidden: jax.Array) -> jax.Array:
        if self.config.tie_word_embeddings:
            return self.language_model.embed_tokens.attend(hidden)
        return self.lm_head(hidden)


# ----------------------------------------------------------------------------- checkpoint keys

# Export layout = what transformers 5.23 `save_pretrained` writes for
# LlavaOnevisionForConditionalGeneration. Accepted on import besides it: the Hub layout
# (`vision_tower.vision_model.*`) and the in-memory names (`model.*`, `lm_head.*`).
ONEVISION_KEYS = mapping.KeyTable(
    prefixes=(
        ("vision_tower.", "vision_tower."),
        ("multi_modal_projector.", "multi_modal_projector."),
        ("image_newline", "image_newline"),
        ("language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ),
    legacy=(
        (r"^(model\.)?vision_tower\.vision_model\.", "vision_tower."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^model\.image_newline$", "image_newline"),
        (r"^model\.language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
    ),
)

# renames our export into the Hub layout (llava-hf/llava-onevision-*): for tests, old tooling
ONEVISION_LEGACY_EXPORT = ((r"^vision_tower\.", "vision_tower.vision_model."),)


def conv_shapes(c: OneVisionConfig) -> dict:
    v = c.vision
    return {"vision_tower.embeddings.patch_embedding.kernel":
            (v.hidden_size, v.num_channels, v.patch_size, v.patch_size)}


def family():
    """The registry entry for model_type `llava_onevision`."""
    from jaxunlearn.modeling.registry import Family

    return Family("llava_onevision", OneVisionConfig.from_hf,
                  LlavaOnevisionForConditionalGeneration, ONEVISION_KEYS, conv_shapes,
                  "LlavaOnevisionForConditionalGeneration", host_prepare)
