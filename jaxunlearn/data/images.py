"""Per-family image encoders: a record's image -> the HF processor's layout -> jit-ready arrays.

An encoder does three things for the data pipeline and the evaluation batches:

- ``encode(image)``: one image -> its arrays in the HF processor's per-image layout and the
  number of image tokens its placeholder expands to (``num_tokens``);
- ``collate(items, rows)``: the images of a batch (``None`` for rows without one) -> the
  processor's batch layout ("raw" inputs that ``Model.logits`` / ``ju.generate`` accept);
- ``prepare(batch)``: a raw batch -> the family's host-side preparation
  (``Family.host_prepare``), so the batch feeds the jitted forward directly with static
  shapes, plus ``vision_token_mask`` where vision rows are not one per example.

Layouts per family:

- LLaVA (:class:`ClipImages`): ``pixel_values`` [B, 3, S, S]: the batch's images in row order
  (as HF: image k feeds the k-th row holding image tokens), then zero images up to B rows; a
  fixed ``num_tokens``; ``prepare`` is the identity.
- Qwen2-VL / Qwen2.5-VL (:class:`QwenImages`): raw ``pixel_values`` [sum of patches, C*T*P*P]
  (the images of the batch concatenated in row order), ``image_grid_thw`` [n_images, 3] and
  ``patch_slots`` (B times the largest image's patch count); prepared: patches padded to the
  power-of-two bucket of ``patch_slots`` (one shape per batch size for images of one size),
  M-RoPE ``position_ids`` [3, B, T] and the ``vision_*`` index arrays; ``vision_token_mask``
  [N_pad] marks the real patches.
- LLaVA-OneVision (:class:`OneVisionImages`): raw ``pixel_values`` [n_images, crops, 3, S, S]
  (zero crops pad to the batch maximum), ``image_sizes`` [n_images, 2] and ``crop_slots``
  (B times the next power of two of the largest crop count, capped at the model's maximum:
  one shape per batch size for images of one size); prepared: ``pixel_values`` [slots, 3,
  S, S], ``image_index`` / ``image_weight`` [B, T, 4]; ``vision_token_mask`` [slots, P]
  marks the patches of real crops.

Qwen and OneVision arrays other than [B, ...] ones are per batch, not per row: such a batch
cannot be cut into row groups (see ``jaxunlearn.modeling.model.shared_input_keys``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from jaxunlearn.data import onevision_processor as ovp
from jaxunlearn.data import qwen_processor as qp
from jaxunlearn.data.processors import ClipImageConfig, preprocess_image

Arrays = dict[str, np.ndarray]


def _rgb(image: Any):
    from jaxunlearn.data.schema import load_image

    return load_image(image)


def image_size(image: Any) -> tuple[int, int]:
    """(height, width) of an image (PIL image, :class:`EncodedImage`, path or [H, W, C]
    array), read from the file's header only: no decoding."""
    from PIL import Image

    from jaxunlearn.data.schema import EncodedImage

    if image is None:
        raise ValueError("profile has no image; multimodal records need one (check the data dir)")
    if isinstance(image, np.ndarray):
        return int(image.shape[0]), int(image.shape[1])
    if isinstance(image, (Image.Image, EncodedImage)):
        return image.height, image.width
    with Image.open(image) as opened:
        return opened.height, opened.width


def _opened(image: Any):
    """A PIL image in its own mode, or an array as given (OneVision composites transparency
    itself, as HF does)."""
    from jaxunlearn.data.schema import open_image

    return image if isinstance(image, np.ndarray) else open_image(image)


@dataclasses.dataclass(frozen=True)
class ClipImages:
    """LLaVA-1.5: CLIP preprocessing, one [3, S, S] image per row, fixed token count."""

    config: ClipImageConfig = dataclasses.field(default_factory=lambda: ClipImageConfig(32, 32))
    tokens: int = 16
    image_fn: Callable[[Any], np.ndarray] | None = None  # overrides the CLIP preprocessing

    def num_tokens(self, image: Any) -> int:
        return self.tokens

    def encode(self, image: Any) -> Arrays:
        image = _rgb(image)
        pix = self.image_fn(image) if self.image_fn is not None else \
            preprocess_image(image, self.config)
        return {"pixel_values": np.asarray(pix, np.float32), "num_tokens": self.tokens}

    def blank(self, rows: int) -> Arrays:
        side = self.config.crop_size
        return {"pixel_values": np.zeros((rows, 3, side, side), np.float32)}

    def collate(self, items: Sequence[Arrays | None], rows: int) -> Arrays:
        if all(it is None for it in items):
            return {}
        # HF order: the k-th image feeds the k-th row holding image tokens; zeros fill the
        # batch to one image per row (static shape; they feed no token)
        out = self.blank(rows)
        real = [it["pixel_values"] for it in items if it is not None]
        out["pixel_values"][:len(real)] = real
        return out

    def prepare(self, batch: Arrays) -> Arrays:
        return batch


@dataclasses.dataclass(frozen=True)
class QwenImages:
    """Qwen2-VL / Qwen2.5-VL: native-resolution patches, tokens = patches / merge**2."""

    config: qp.QwenImageConfig
    model_config: Any  # QwenVLConfig (host_prepare's first argument)
    host_prepare: Callable[[Any, dict], dict]

    def num_tokens(self, image: Any) -> int:
        return int(self.describe(image)["num_tokens"])

    def describe(self, image: Any) -> Arrays:
        """``encode``'s arrays without ``pixel_values``, from the image's size alone (no
        decoding); ``units``: its patches."""
        grid = np.asarray(qp.image_grid(*image_size(image), self.config), np.int64)
        units = int(np.prod(grid))
        return {"image_grid_thw": grid, "num_tokens": units // self.config.merge_size ** 2,
                "units": units}

    def encode(self, image: Any) -> Arrays:
        patches, grid = qp.preprocess_image(_rgb(image), self.config)
        return {"pixel_values": patches, "image_grid_thw": np.asarray(grid, np.int64),
                "num_tokens": qp.num_image_tokens(np.asarray(grid), self.config.merge_size)[0],
                "units": len(patches)}

    def units(self, item: Arrays) -> np.ndarray:
        """The image's rows of the prepared ``pixel_values`` (its patches)."""
        return item["pixel_values"]

    def collate(self, items: Sequence[Arrays | None], rows: int) -> Arrays:
        real = [it for it in items if it is not None]
        if not real:
            return {}
        most = max(int(it["units"]) for it in real)
        if all("pixel_values" in it for it in real):
            pix = np.concatenate([it["pixel_values"] for it in real])
        else:  # described images: the layout, with zero patches
            pix = np.broadcast_to(np.zeros(self.model_config.vision.patch_dim, np.float32),
                                  (sum(int(it["units"]) for it in real),
                                   self.model_config.vision.patch_dim))
        return {"pixel_values": pix,
                "image_grid_thw": np.stack([it["image_grid_thw"] for it in real]),
                "patch_slots": np.asarray(rows * most, np.int64)}

    def prepare(self, batch: Arrays) -> Arrays:
        keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "patch_slots")
        out = self.host_prepare(self.model_config, {k: batch[k] for k in keys if k in batch})
        merged = {k: v for k, v in batch.items() if k not in keys}
        merged.update(out)
        if "pixel_values" in batch:
            n_real = len(batch["pixel_values"])
            merged["vision_token_mask"] = (np.arange(len(out["pixel_values"])) < n_real
                                           ).astype(np.int32)
        return merged


@dataclasses.dataclass(frozen=True)
class OneVisionImages:
    """LLaVA-OneVision: AnyRes crops; tokens from the image size (base + unpadded grid)."""

    config: ovp.OneVisionImageConfig
    model_config: Any  # OneVisionConfig
    host_prepare: Callable[[Any, dict], dict]

    def num_tokens(self, image: Any) -> int:
        return int(self.describe(image)["num_tokens"])

    def describe(self, image: Any) -> Arrays:
        """``encode``'s arrays without ``pixel_values``, from the image's size alone (no
        decoding); ``units``: its crops."""
        from jaxunlearn.modeling.llava_onevision import num_image_tokens

        size = image_size(image)
        return {"image_sizes": np.asarray(size, np.int64),
                "num_tokens": num_image_tokens(self.model_config, size),
                "units": ovp.crop_count(*size, self.config)}

    def encode(self, image: Any) -> Arrays:
        from jaxunlearn.modeling.llava_onevision import num_image_tokens

        crops, size = ovp.image_crops(_opened(image), self.config)
        return {"pixel_values": crops, "image_sizes": np.asarray(size, np.int64),
                "num_tokens": num_image_tokens(self.model_config, size), "units": len(crops)}

    def units(self, item: Arrays) -> np.ndarray:
        """The image's rows of the prepared ``pixel_values`` (its crops)."""
        return item["pixel_values"]

    def slots_per_row(self, items: Sequence[Arrays | None]) -> int:
        most = max(int(it["units"]) for it in items if it is not None)
        cap = max(self.model_config.max_crops, most)
        return min(cap, 1 << (most - 1).bit_length())

    def collate(self, items: Sequence[Arrays | None], rows: int) -> Arrays:
        real = [it for it in items if it is not None]
        if not real:
            return {}
        most = max(int(it["units"]) for it in real)
        v = self.model_config.vision
        shape = (len(real), most, v.num_channels, v.image_size, v.image_size)
        if all("pixel_values" in it for it in real):
            pix = np.zeros(shape, np.float32)
            for i, it in enumerate(real):
                pix[i, :len(it["pixel_values"])] = it["pixel_values"]
        else:  # described images: the layout, with zero crops
            pix = np.broadcast_to(np.zeros(shape[2:], np.float32), shape)
        return {"pixel_values": pix, "image_sizes": np.stack([it["image_sizes"] for it in real]),
                "crop_slots": np.asarray(rows * self.slots_per_row(items), np.int64)}

    def prepare(self, batch: Arrays) -> Arrays:
        keys = ("input_ids", "attention_mask", "pixel_values", "image_sizes", "crop_slots")
        raw = {k: batch[k] for k in keys if k in batch}
        if "crop_slots" in raw:
            raw["crop_slots"] = int(raw["crop_slots"])
        out = self.host_prepare(self.model_config, raw)
        merged = {k: v for k, v in batch.items() if k not in keys}
        merged.update(out)
        if "pixel_values" in batch:
            from jaxunlearn.modeling.llava_onevision import num_crops

            n_real = sum(num_crops(self.model_config, s) for s in batch["image_sizes"])
            slots = len(out["pixel_values"])
            patches = self.model_config.vision.num_patches
            merged["vision_token_mask"] = np.broadcast_to(
                (np.arange(slots) < n_real)[:, None], (slots, patches)).astype(np.int32)
        return merged


ImageEncoder = ClipImages | QwenImages | OneVisionImages


# ----------------------------------------------------------------------------- from a model

def qwen_image_config(preprocessor: dict | None, vision: Any) -> qp.QwenImageConfig:
    """Qwen image settings from a `preprocessor_config.json` dict (or None) and the model's
    vision config. Without a preprocessor file the HF defaults are scaled to the model's
    merged-patch size (min 2x2, max 1280 merged patches), so tiny test models see tiny images."""
    p = preprocessor or {}
    patch = int(p.get("patch_size", vision.patch_size))
    merge = int(p.get("merge_size", vision.spatial_merge_size))
    temporal = int(p.get("temporal_patch_size", vision.temporal_patch_size))
    if (patch, merge, temporal) != (vision.patch_size, vision.spatial_merge_size,
                                    vision.temporal_patch_size):
        raise ValueError(f"preprocessor_config.json patch_size/merge_size/temporal_patch_size "
                         f"{(patch, merge, temporal)} differ from the model's vision_config "
                         f"{(vision.patch_size, vision.spatial_merge_size, vision.temporal_patch_size)}"
                         "; fix preprocessor_config.json")
    factor = patch * merge
    size = p.get("size") or {}
    lo = p.get("min_pixels", size.get("shortest_edge", (2 * factor) ** 2))
    hi = p.get("max_pixels", size.get("longest_edge", factor * factor * 1280))
    return qp.QwenImageConfig(
        min_pixels=int(lo), max_pixels=int(hi), patch_size=patch, temporal_patch_size=temporal,
        merge_size=merge, mean=tuple(p.get("image_mean", qp.CLIP_MEAN)),
        std=tuple(p.get("image_std", qp.CLIP_STD)),
        rescale_factor=float(p.get("rescale_factor", 1 / 255)),
        do_resize=bool(p.get("do_resize", True)))


def onevision_image_config(preprocessor: dict | None, model_config: Any) -> ovp.OneVisionImageConfig:
    """OneVision crop settings from a `preprocessor_config.json` dict (or None: the HF class
    defaults with the model's crop size and grid pinpoints)."""
    v = model_config.vision
    if preprocessor:
        out = ovp.OneVisionImageConfig.from_hf(preprocessor, v.patch_size)
    else:
        out = ovp.OneVisionImageConfig(size=v.image_size,
                                       image_grid_pinpoints=model_config.image_grid_pinpoints,
                                       patch_size=v.patch_size)
    if out.size != v.image_size:
        raise ValueError(f"preprocessor_config.json crop size {out.size} != the vision tower's "
                         f"image_size {v.image_size}; fix preprocessor_config.json")
    return out


def clip_image_config(preprocessor: dict | None, image_size: int) -> ClipImageConfig:
    """CLIP settings from a `preprocessor_config.json` dict (or None: resize and crop to the
    vision tower's image size, CLIP mean/std)."""
    if not preprocessor:
        return ClipImageConfig(image_size, image_size)
    size = preprocessor.get("size") or {}
    crop = preprocessor.get("crop_size") or {}
    short = size.get("shortest_edge", size.get("height", image_size)) if isinstance(size, dict) \
        else size
    side = crop.get("height", image_size) if isinstance(crop, dict) else crop
    if int(side) != image_size:
        raise ValueError(f"preprocessor_config.json crop_size {side} != the vision tower's "
                         f"image_size {image_size}; fix preprocessor_config.json")
    return ClipImageConfig(int(short), int(side),
                           tuple(preprocessor.get("image_mean", ClipImageConfig.mean)),
                           tuple(preprocessor.get("image_std", ClipImageConfig.std)),
                           float(preprocessor.get("rescale_factor", 1 / 255)))


def encoder_for(family: str, model_config: Any, host_prepare: Callable | None,
                preprocessor: dict | None = None, image_token_count: int | None = None):
    """The image encoder of `family` for a model config (and its preprocessor settings)."""
    if family == "llava":
        size = model_config.vision.image_size
        return ClipImages(clip_image_config(preprocessor, size),
                          image_token_count or model_config.image_seq_length)
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return QwenImages(qwen_image_config(preprocessor, model_config.vision), model_config,
                          host_prepare)
    if family == "llava_onevision":
        return OneVisionImages(onevision_image_config(preprocessor, model_config), model_config,
                               host_prepare)
    raise ValueError(f"no image encoder for model family {family!r}; supported: llava, "
                     "llava_onevision, qwen2_vl, qwen2_5_vl")
