"""OneVision image preprocessing vs transformers' LlavaOnevisionImageProcessorPil."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxunlearn.data import onevision_processor as P
from jaxunlearn.modeling import llava_onevision as ov

SMALL = dict(size=28, image_grid_pinpoints=((28, 28), (28, 56), (56, 28), (56, 56), (28, 84)))


def hf_processor(size: int, pinpoints, mean=None, std=None):
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    kw = {} if mean is None else {"image_mean": list(mean), "image_std": list(std)}
    return LlavaOnevisionImageProcessorPil(size={"height": size, "width": size},
                                           image_grid_pinpoints=[list(p) for p in pinpoints], **kw)


def rand_image(h: int, w: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed + h * 7 + w)
    arr = rng.integers(0, 256, size=(h, w, len(mode)), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)


def check(ours: dict, ref) -> None:
    assert ours["pixel_values"].shape == tuple(ref["pixel_values"].shape)
    assert ours["pixel_values"].dtype == np.float32
    np.testing.assert_allclose(ours["pixel_values"], np.asarray(ref["pixel_values"]), atol=1e-6,
                               rtol=0)
    np.testing.assert_array_equal(ours["image_sizes"], np.asarray(ref["image_sizes"]))
    np.testing.assert_array_equal(ours["batch_num_images"], np.asarray(ref["batch_num_images"]))


def test_single_images_many_aspect_ratios():
    cfg = P.OneVisionImageConfig(**SMALL)
    hf = hf_processor(cfg.size, cfg.image_grid_pinpoints)
    images = [rand_image(30, 90), rand_image(61, 29), rand_image(50, 47), rand_image(9, 13),
              rand_image(17, 70, "RGBA"), rand_image(40, 40, "L"), rand_image(100, 33)]
    check(P.preprocess(images, cfg), hf(images, return_tensors="np"))


def test_multi_image_samples():
    cfg = P.OneVisionImageConfig(**SMALL)
    hf = hf_processor(cfg.size, cfg.image_grid_pinpoints)
    images = [[rand_image(30, 90)], [rand_image(61, 29, seed=1), rand_image(20, 20)],
              [rand_image(13, 41, seed=2), rand_image(45, 12, seed=3), rand_image(33, 60)]]
    check(P.preprocess(images, cfg), hf(images, return_tensors="np"))


def test_published_settings_384():
    """The settings of the published checkpoints: 384 crops, default pinpoints, mean = std = 0.5."""
    cfg = P.OneVisionImageConfig.from_hf({"size": {"height": 384, "width": 384},
                                          "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    hf = hf_processor(384, cfg.image_grid_pinpoints, cfg.mean, cfg.std)
    images = [rand_image(480, 640), rand_image(300, 1000)]
    check(P.preprocess(images, cfg), hf(images, return_tensors="np"))
    arrays = [np.asarray(im) for im in images]  # uint8 HWC numpy input
    check(P.preprocess(arrays, cfg), hf(images, return_tensors="np"))


def test_token_count_matches_hf_processor_rule():
    """Our model-side token count equals LlavaOnevisionProcessor._get_number_of_features."""
    from transformers import LlavaOnevisionConfig
    from transformers.models.llava_onevision.processing_llava_onevision import (
        LlavaOnevisionProcessor,
    )

    c = ov.OneVisionConfig.from_hf(LlavaOnevisionConfig().to_dict())
    proc = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
    proc.image_processor = hf_processor(384, c.image_grid_pinpoints)
    proc.num_image_tokens, proc.vision_aspect_ratio = 729, c.vision_aspect_ratio
    for size in [(480, 640), (300, 1000), (1000, 300), (2000, 2000), (384, 384), (50, 3000)]:
        assert ov.num_image_tokens(c, size) == proc._get_number_of_features(*size, 384, 384), size


def test_bad_inputs_raise_clear_errors():
    cfg = P.OneVisionImageConfig(**SMALL)
    with pytest.raises(ValueError, match=r"expected \[height, width, 3\]"):
        P.preprocess([np.zeros((20, 20, 4), np.uint8)], cfg)
    with pytest.raises(ValueError, match=r"expected \[height, width, 3\]"):
        P.preprocess([np.zeros((20, 20), np.uint8)], cfg)
    with pytest.raises(ValueError, match="expected uint8"):
        P.preprocess([np.zeros((20, 20, 3), np.float32)], cfg)
    with pytest.raises(ValueError, match="too small or too thin"):
        P.preprocess([rand_image(1, 200)], cfg)
    with pytest.raises(ValueError, match="unsupported image type"):
        P.preprocess(["cat.png"], cfg)
