"""Qwen2-VL / Qwen2.5-VL image preprocessing in numpy + PIL, equal to HF's
``Qwen2VLImageProcessor`` (PIL backend, ``Qwen2VLImageProcessorPil``).

Per image, as in ``transformers``: convert to RGB; ``smart_resize`` the (height, width) to
multiples of ``factor = patch_size * merge_size`` with the pixel count inside
[min_pixels, max_pixels] and the aspect ratio kept; PIL bicubic resize on uint8; rescale by
1/255 (float64, stored float32); normalise with the CLIP mean/std in float32; then patchify
channels-first into rows of C * temporal_patch_size * P * P values, in merge-block order
(each merge_size x merge_size block of patches is contiguous), the single frame repeated
``temporal_patch_size`` times. Returns ``pixel_values`` [sum of patches, C*T*P*P] float32 and
``image_grid_thw`` [n_images, 3] int64 (t = 1, h and w in patches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class QwenImageConfig:
    """Settings of HF's Qwen2-VL image processor (its defaults)."""

    min_pixels: int = 56 * 56
    max_pixels: int = 28 * 28 * 1280
    patch_size: int = 14
    temporal_patch_size: int = 2
    merge_size: int = 2
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255
    do_resize: bool = True

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Target (height, width): multiples of `factor`, pixel count within [min_pixels,
    max_pixels], aspect ratio kept as closely as possible (HF's rule, same rounding)."""
    if height < 1 or width < 1:
        raise ValueError(f"image of size {height}x{width} is empty")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image of size {height}x{width}: absolute aspect ratio must be smaller "
                         f"than 200, got {max(height, width) / min(height, width)}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar < factor or w_bar < factor:
        raise ValueError(f"image of size {height}x{width} is too small for {factor}px merged "
                         f"patches with min_pixels={min_pixels}; raise min_pixels or upscale it")
    return h_bar, w_bar


def patchify(image: np.ndarray, patch_size: int, merge_size: int,
             temporal_patch_size: int) -> tuple[np.ndarray, int, int]:
    """[C, H, W] float32 -> ([grid_h * grid_w, C*T*P*P], grid_h, grid_w) in merge-block order."""
    c, h, w = image.shape
    factor = patch_size * merge_size
    if h < factor or w < factor or h % factor or w % factor:
        raise ValueError(f"image of size {h}x{w} cannot be cut into {patch_size}px patches merged "
                         f"{merge_size}x{merge_size}: height and width must be positive multiples "
                         f"of {factor} (resize it, e.g. with do_resize=True)")
    gh, gw = h // patch_size, w // patch_size
    x = image.reshape(c, gh // merge_size, merge_size, patch_size, gw // merge_size, merge_size,
                      patch_size)
    x = x.transpose(1, 4, 2, 5, 0, 3, 6)  # (gh/m, gw/m, m, m, C, P, P)
    x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], temporal_patch_size, *x.shape[5:]))
    return x.reshape(gh * gw, c * temporal_patch_size * patch_size ** 2), gh, gw


def _to_rgb_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """HWC uint8 RGB."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"numpy images must be uint8 HWC, got dtype {image.dtype}; pass a "
                             "PIL image or uint8 array")
        image = Image.fromarray(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def image_grid(height: int, width: int, config: QwenImageConfig = QwenImageConfig()) -> tuple:
    """(1, grid_h, grid_w) of an image of (height, width): what :func:`preprocess_image` gives
    it, from the size alone (no decoding)."""
    if config.do_resize:
        height, width = smart_resize(height, width, config.factor, config.min_pixels,
                                     config.max_pixels)
    factor = config.factor
    if height < factor or width < factor or height % factor or width % factor:
        raise ValueError(f"image of size {height}x{width} cannot be cut into {config.patch_size}px "
                         f"patches merged {config.merge_size}x{config.merge_size}: height and "
                         f"width must be positive multiples of {factor} (resize it, e.g. with "
                         "do_resize=True)")
    return 1, height // config.patch_size, width // config.patch_size


def preprocess_image(image: Image.Image | np.ndarray,
                     config: QwenImageConfig = QwenImageConfig()) -> tuple[np.ndarray, tuple]:
    """One image -> (patches [grid_h * grid_w, C*T*P*P] float32, (1, grid_h, grid_w))."""
    array = _to_rgb_array(image)
    if config.do_resize:
        h, w = array.shape[:2]
        nh, nw = smart_resize(h, w, config.factor, config.min_pixels, config.max_pixels)
        resized = Image.fromarray(array).resize((nw, nh), resample=Image.Resampling.BICUBIC)
        array = np.asarray(resized)
    x = (array.astype(np.float64) * config.rescale_factor).astype(np.float32)
    x = (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    patches, gh, gw = patchify(np.ascontiguousarray(x.transpose(2, 0, 1)), config.patch_size,
                               config.merge_size, config.temporal_patch_size)
    return patches, (1, gh, gw)


def preprocess_images(images: Sequence[Image.Image | np.ndarray],
                      config: QwenImageConfig = QwenImageConfig()) -> dict[str, np.ndarray]:
    """Images -> {"pixel_values": [sum patches, C*T*P*P] float32, "image_grid_thw": [n, 3]}."""
    if not len(images):
        raise ValueError("no images given")
    patches, grids = zip(*(preprocess_image(im, config) for im in images))
    return {"pixel_values": np.concatenate(patches, axis=0).astype(np.float32),
            "image_grid_thw": np.asarray(grids, np.int64)}


def num_image_tokens(image_grid_thw: np.ndarray, merge_size: int = 2) -> list[int]:
    """Image placeholder tokens per image (t * h * w / merge_size**2)."""
    grid = np.asarray(image_grid_thw).reshape(-1, 3)
    return [int(n) for n in np.prod(grid, axis=1) // merge_size ** 2]
