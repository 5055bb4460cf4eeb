"""LLaVA-1.5 image preprocessing (CLIP) in numpy + PIL, equal to ``CLIPImageProcessor``.

Steps, as in ``transformers``: convert to RGB; resize so the shortest side is ``size`` (the long
side becomes ``int(size * long / short)``) with PIL bicubic on uint8; center crop ``crop_size``
(top/left offsets ``(dim - crop) // 2``, zero padding if the image is smaller); rescale by
1/255 (computed in float64, stored as float32); normalise with the CLIP mean/std in float32;
channels first. Because the same PIL resize runs on the same uint8 input, the result matches
the Hugging Face PIL backend bit for bit.

``pad_to_square=True`` first applies LLaVA's ``expand2square`` (``image_aspect_ratio: pad``):
the image is centred on a square canvas of its long side filled with the mean colour
``tuple(int(m * 255) for m in image_mean)``, so nothing is cropped away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ClipImageConfig:
    """CLIP preprocessing settings (LLaVA-1.5 uses size = crop_size = 336)."""

    size: int = 336
    crop_size: int = 336
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255
    pad_to_square: bool = False


def expand_to_square(image: Image.Image, background: Sequence[int]) -> Image.Image:
    """Centre ``image`` on a square canvas of its longer side filled with ``background``."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    canvas = Image.new(image.mode, (side, side), tuple(background))
    canvas.paste(image, ((side - w) // 2, (side - h) // 2))
    return canvas


def resize_shortest_edge(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize so the shorter side equals ``size`` (HF's output-size rule)."""
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)


def center_crop(array: np.ndarray, height: int, width: int) -> np.ndarray:
    """Center crop an HWC array, zero padding first when it is smaller than the crop."""
    h, w = array.shape[:2]
    if h < height or w < width:
        nh, nw = max(h, height), max(w, width)
        top_pad, left_pad = -(-(nh - h) // 2), -(-(nw - w) // 2)
        padded = np.zeros((nh, nw, *array.shape[2:]), dtype=array.dtype)
        padded[top_pad:top_pad + h, left_pad:left_pad + w] = array
        array, h, w = padded, nh, nw
    top, left = (h - height) // 2, (w - width) // 2
    return array[top:top + height, left:left + width]


def preprocess_image(image: Image.Image, config: ClipImageConfig = ClipImageConfig()) -> np.ndarray:
    """One image -> float32 [3, crop_size, crop_size]."""
    image = image.convert("RGB") if image.mode != "RGB" else image
    if config.pad_to_square:
        image = expand_to_square(image, tuple(int(m * 255) for m in config.mean))
    array = np.asarray(resize_shortest_edge(image, config.size))
    array = center_crop(array, config.crop_size, config.crop_size)
    x = (array.astype(np.float64) * config.rescale_factor).astype(np.float32)
    x = (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_images(images: Sequence[Image.Image],
                      config: ClipImageConfig = ClipImageConfig()) -> np.ndarray:
    """A list of images -> float32 [B, 3, crop_size, crop_size]."""
    return np.stack([preprocess_image(im, config) for im in images]).astype(np.float32)
