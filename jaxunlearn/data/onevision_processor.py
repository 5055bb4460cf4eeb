"""LLaVA-OneVision image preprocessing in numpy + PIL, equal to transformers'
``LlavaOnevisionImageProcessorPil`` (the PIL backend of ``LlavaOnevisionImageProcessor``).

Per image of a single-image sample: pick the pinpoint (height, width) with
``select_best_resolution``; resize with PIL bicubic on uint8 to fit it keeping the aspect
ratio (the fitted side exact, the other ``ceil``-ed); centre it on a zero canvas of the
pinpoint (extra pixel of odd padding at the bottom/right); cut it into ``size`` x ``size``
crops in row-major order; prepend the whole image resized to ``size`` x ``size``. Images of a
multi-image sample are instead padded to a square of the mean colour and resized (one crop).
Every crop is rescaled by 1/255 (float64, stored float32) and normalised in float32,
channels first. ``pixel_values`` are zero-padded on the crop axis to the batch maximum (or
``pad_to``), as HF does; ``image_sizes`` are the original (height, width).

The same PIL resize runs on the same uint8 data, so the output equals HF's bit for bit. The
torchvision backend resizes differently and is not what this matches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jaxunlearn.modeling.llava_onevision import (
    default_grid_pinpoints, select_best_resolution, unpadded_box,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class OneVisionImageConfig:
    """Preprocessing settings; defaults are the transformers class defaults. Published
    OneVision checkpoints use SigLIP's mean = std = 0.5 (see `from_hf`)."""

    size: int = 384
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = int(Image.Resampling.BICUBIC)
    image_grid_pinpoints: tuple[tuple[int, int], ...] = default_grid_pinpoints()
    patch_size: int = 14  # the vision tower's, only to reject images too thin to keep a feature row

    @staticmethod
    def from_hf(cfg: dict[str, Any], patch_size: int = 14) -> "OneVisionImageConfig":
        """From a `preprocessor_config.json` dict."""
        size = cfg.get("size") or {"height": 384, "width": 384}
        side = size.get("height", size.get("shortest_edge"))
        if size.get("width", side) != side:
            raise ValueError(f"OneVision crops must be square; got size {size}")
        pins = cfg.get("image_grid_pinpoints")
        return OneVisionImageConfig(
            size=int(side), mean=tuple(cfg.get("image_mean", CLIP_MEAN)),
            std=tuple(cfg.get("image_std", CLIP_STD)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)),
            resample=int(cfg.get("resample", int(Image.Resampling.BICUBIC))),
            image_grid_pinpoints=(tuple((int(h), int(w)) for h, w in pins) if pins
                                  else default_grid_pinpoints(int(side))),
            patch_size=patch_size)


def to_rgb(image: Any) -> Image.Image:
    """A PIL image (any mode; transparency composited on white, as HF) or a uint8 [H, W, 3]
    array -> RGB PIL image. Anything else raises a one-line ValueError."""
    if isinstance(image, Image.Image):
        if image.width < 1 or image.height < 1:
            raise ValueError(f"empty image of size {image.size}")
        if "A" in image.getbands() or image.info.get("transparency") is not None:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image array of shape {image.shape}: expected [height, width, 3] RGB "
                             "(3 channels last); convert grayscale/RGBA to RGB first")
        if image.dtype != np.uint8:
            raise ValueError(f"image array of dtype {image.dtype}: expected uint8 in [0, 255]")
        if image.shape[0] < 1 or image.shape[1] < 1:
            raise ValueError(f"empty image of shape {image.shape}")
        return Image.fromarray(image, "RGB")
    raise ValueError(f"unsupported image type {type(image).__name__}: pass a PIL image or a "
                     "uint8 [height, width, 3] numpy array")


def patch_output_size(height: int, width: int, target: Sequence[int]) -> tuple[int, int]:
    """Size after fitting (height, width) into target (th, tw), keeping the aspect ratio."""
    th, tw = target
    scale_w, scale_h = tw / width, th / height
    if scale_w < scale_h:
        return min(math.ceil(height * scale_w), th), tw
    return th, min(math.ceil(width * scale_h), tw)


def _normalize(array: np.ndarray, config: OneVisionImageConfig) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [3, H, W]: rescale (float64) then normalise (float32)."""
    x = (array.astype(np.float64) * config.rescale_factor).astype(np.float32)
    x = (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def _check_size(h: int, w: int, config: OneVisionImageConfig) -> None:
    """Reject an image whose unpadded feature map would have no row or column."""
    th, tw = select_best_resolution((h, w), config.image_grid_pinpoints)
    grid = config.size // config.patch_size
    fh, fw = th // config.size * grid, tw // config.size * grid
    r0, r1, c0, c1 = unpadded_box((h, w), fh, fw)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"image of size {h}x{w} (height x width) is too small or too thin for "
                         "OneVision: no feature row survives; pad or crop it to a saner "
                         "aspect ratio")


def crop_count(height: int, width: int, config: OneVisionImageConfig = OneVisionImageConfig(),
               multi_image: bool = False) -> int:
    """Crops :func:`image_crops` makes of an image of (height, width), from the size alone
    (no decoding): the base crop and the grid of the best resolution (1 if multi-image)."""
    if height < 1 or width < 1:
        raise ValueError(f"empty image of size {(width, height)}")
    if multi_image:
        return 1
    _check_size(height, width, config)
    th, tw = select_best_resolution((height, width), config.image_grid_pinpoints)
    return 1 + -(-th // config.size) * -(-tw // config.size)


def image_crops(image: Any, config: OneVisionImageConfig = OneVisionImageConfig(),
                multi_image: bool = False) -> tuple[np.ndarray, tuple[int, int]]:
    """One image -> (float32 [n_crops, 3, size, size], original (height, width))."""
    pil = to_rgb(image)
    w, h = pil.size
    s, resample = config.size, Image.Resampling(config.resample)
    if multi_image:
        side = max(h, w)
        fill = tuple(int(m * 255) for m in config.mean)
        canvas = np.empty((side, side, 3), np.uint8)
        canvas[:] = fill
        arr = np.asarray(pil)
        if w > h:
            canvas[(side - h) // 2:(side - h) // 2 + h] = arr
        else:
            canvas[:, (side - w) // 2:(side - w) // 2 + w] = arr
        square = Image.fromarray(canvas, "RGB") if side != h or side != w else pil
        crops = [np.asarray(square.resize((s, s), resample=resample))]
    else:
        _check_size(h, w, config)
        th, tw = select_best_resolution((h, w), config.image_grid_pinpoints)
        nh, nw = patch_output_size(h, w, (th, tw))
        resized = np.asarray(pil.resize((nw, nh), resample=resample))
        top, left = (th - nh) // 2, (tw - nw) // 2  # odd padding: the extra pixel after
        canvas = np.zeros((th, tw, 3), np.uint8)
        canvas[top:top + nh, left:left + nw] = resized
        base = np.asarray(pil.resize((s, s), resample=resample))
        crops = [base] + [canvas[i:i + s, j:j + s]
                          for i in range(0, th, s) for j in range(0, tw, s)]
    return np.stack([_normalize(c, config) for c in crops]), (h, w)


def preprocess(images: Sequence[Any] | Sequence[Sequence[Any]],
               config: OneVisionImageConfig = OneVisionImageConfig(),
               pad_to: int | None = None) -> dict[str, np.ndarray]:
    """Images (one per sample, or a list of lists: images per sample) -> `pixel_values`
    float32 [n_images, n_crops, 3, size, size] (zero-padded crops), `image_sizes` int64
    [n_images, 2] (height, width) and `batch_num_images` int64 [n_samples]."""
    if isinstance(images, (Image.Image, np.ndarray)):
        images = [images]
    if len(images) and isinstance(images[0], (list, tuple)):
        samples = [list(x) for x in images if len(x)]
    else:
        samples = [[im] for im in images]
    if not samples:
        raise ValueError("no images to preprocess")
    out, sizes = [], []
    for sample in samples:
        for im in sample:
            crops, size = image_crops(im, config, multi_image=len(sample) != 1)
            out.append(crops)
            sizes.append(size)
    n = max(len(c) for c in out) if pad_to is None else int(pad_to)
    if any(len(c) > n for c in out):
        raise ValueError(f"an image needs {max(len(c) for c in out)} crops but pad_to is {n}")
    pix = np.zeros((len(out), n, 3, config.size, config.size), np.float32)
    for i, c in enumerate(out):
        pix[i, :len(c)] = c
    return {"pixel_values": pix, "image_sizes": np.asarray(sizes, np.int64),
            "batch_num_images": np.asarray([len(s) for s in samples], np.int64)}
