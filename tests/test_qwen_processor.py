"""numpy/PIL Qwen2-VL image processor vs HF's `Qwen2VLImageProcessor` (PIL backend)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from jaxunlearn.data.qwen_processor import (
    QwenImageConfig, num_image_tokens, preprocess_images, smart_resize,
)

# (height, width): upscaled by min_pixels, kept, downscaled by max_pixels, odd aspect, tiny
SIZES = [(37, 53), (64, 96), (300, 200), (23, 250), (5, 7)]
SETTINGS = {
    "small_patches": QwenImageConfig(min_pixels=16 * 16, max_pixels=96 * 96, patch_size=4),
    "defaults": QwenImageConfig(),
}


def hf_processor(c: QwenImageConfig):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    return Qwen2VLImageProcessorPil(min_pixels=c.min_pixels, max_pixels=c.max_pixels,
                                    patch_size=c.patch_size, merge_size=c.merge_size,
                                    temporal_patch_size=c.temporal_patch_size)


def images(seed: int = 0):
    rng = np.random.default_rng(seed)
    out = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in SIZES]
    out.append(out[0].convert("L"))   # grayscale -> RGB
    out.append(out[1].convert("RGBA"))
    return out


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_matches_hf_processor(name):
    c = SETTINGS[name]
    ims = images()
    ours = preprocess_images(ims, c)
    ref = hf_processor(c)(images=ims, return_tensors="np")
    np.testing.assert_array_equal(ours["image_grid_thw"], ref["image_grid_thw"])
    assert ours["pixel_values"].shape == ref["pixel_values"].shape
    assert ours["pixel_values"].dtype == np.float32
    np.testing.assert_allclose(ours["pixel_values"], ref["pixel_values"], atol=1e-6, rtol=0)
    assert sum(num_image_tokens(ours["image_grid_thw"], c.merge_size)) * c.merge_size ** 2 == \
        ours["pixel_values"].shape[0]


def test_smart_resize_rules():
    for h, w in SIZES:
        nh, nw = smart_resize(h, w, 28, 56 * 56, 28 * 28 * 1280)
        assert nh % 28 == 0 and nw % 28 == 0 and 56 * 56 <= nh * nw <= 28 * 28 * 1280


def test_bad_images_raise_clear_errors():
    with pytest.raises(ValueError, match="too small") as err:
        smart_resize(3, 5, factor=28, min_pixels=0)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(2, 500)
    c = QwenImageConfig(patch_size=4, do_resize=False)
    with pytest.raises(ValueError, match="multiples of 8") as err:
        preprocess_images([Image.new("RGB", (12, 8))], c)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="multiples of 8"):
        preprocess_images([Image.new("RGB", (4, 4))], c)
    out = preprocess_images([Image.new("RGB", (16, 8))], c)
    assert out["image_grid_thw"].tolist() == [[1, 2, 4]]
