"""LLaVA-OneVision checkpoint keys and registry entry."""

from __future__ import annotations

from jaxunlearn.modeling.keys import KeyTable
from jaxunlearn.modeling.multimodal import patch_conv_shapes
from jaxunlearn.modeling.llava_onevision.anyres import host_prepare
from jaxunlearn.modeling.llava_onevision.config import OneVisionConfig
from jaxunlearn.modeling.llava_onevision.model import LlavaOnevisionForConditionalGeneration
from jaxunlearn.modeling.registry import Family

# Export layout = what transformers 5.23 `save_pretrained` writes for
# LlavaOnevisionForConditionalGeneration. Accepted on import besides it: the Hub layout
# (`vision_tower.vision_model.*`) and the in-memory names (`model.*`, `lm_head.*`).
ONEVISION_KEYS = KeyTable(
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
    modules=(
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("image_newline", "model.image_newline"),
        ("language_model.", "model.language_model."),
        ("lm_head", "lm_head"),
    ),
)

# renames our export into the Hub layout (llava-hf/llava-onevision-*): for tests, old tooling
ONEVISION_LEGACY_EXPORT = ((r"^vision_tower\.", "vision_tower.vision_model."),)


conv_shapes = patch_conv_shapes  # shared with the other LLaVA-style family


def family() -> Family:
    """The registry entry for model_type `llava_onevision`."""
    return Family("llava_onevision", OneVisionConfig.from_hf,
                  LlavaOnevisionForConditionalGeneration, ONEVISION_KEYS, conv_shapes,
                  "LlavaOnevisionForConditionalGeneration", host_prepare)
