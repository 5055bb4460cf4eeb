"""CLIP preprocessing parity with transformers' CLIPImageProcessor (built locally)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from jaxunlearn.data.processors import (ClipImageConfig, expand_to_square, preprocess_image,
                                        preprocess_images)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformers import CLIPImageProcessor


def _hf(size: int, crop: int) -> "CLIPImageProcessor":
    return CLIPImageProcessor(size={"shortest_edge": size},
                              crop_size={"height": crop, "width": crop})


@pytest.mark.parametrize("wh,size,crop", [((64, 64), 32, 32), ((50, 80), 32, 32),
                                          ((97, 41), 32, 28), ((20, 30), 32, 32),
                                          ((333, 250), 224, 224), ((33, 17), 16, 24),
                                          ((48, 48), 64, 64)])
def test_parity_with_clip_image_processor(wh: tuple[int, int], size: int, crop: int) -> None:
    rng = np.random.default_rng(sum(wh))
    image = Image.fromarray(rng.integers(0, 256, (wh[1], wh[0], 3), dtype=np.uint8))
    ref = _hf(size, crop)(images=[image], return_tensors="np")["pixel_values"][0]
    mine = preprocess_image(image, ClipImageConfig(size=size, crop_size=crop))
    assert mine.dtype == np.float32 and mine.shape == ref.shape == (3, crop, crop)
    np.testing.assert_allclose(mine, ref, rtol=0, atol=1e-6)


def test_batch_and_grayscale() -> None:
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (40, 30), dtype=np.uint8), mode="L"),
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))]
    ref = _hf(32, 32)(images=imgs, return_tensors="np")["pixel_values"]
    out = preprocess_images(imgs, ClipImageConfig(32, 32))
    assert out.shape == (2, 3, 32, 32)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)


def test_expand_to_square_pads_with_mean_colour() -> None:
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    cfg = ClipImageConfig(32, 32, pad_to_square=True)
    bg = tuple(int(m * 255) for m in cfg.mean)
    square = expand_to_square(image, bg)
    assert square.size == (40, 40)
    assert square.getpixel((0, 0)) == bg and square.getpixel((20, 20)) == (255, 0, 0)
    out = preprocess_image(image, cfg)
    ref = _hf(32, 32)(images=[square], return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
    # padded rows normalise to ~0 (mean colour), the red band does not
    assert np.abs(out[:, 0, :]).max() < 0.02 and out[0, 16, 16] > 1.0
