"""LLaVA-1.5 checkpoint keys and registry entry."""

from __future__ import annotations

from jaxunlearn.modeling.keys import KeyTable
from jaxunlearn.modeling.multimodal import patch_conv_shapes
from jaxunlearn.modeling.llava.config import LlavaConfig
from jaxunlearn.modeling.llava.model import LlavaForConditionalGeneration
from jaxunlearn.modeling.registry import Family

# Export layout = what `transformers` 5 `save_pretrained` writes for LLaVA. Accepted on
# import besides it: the legacy Hub layout (`vision_tower.vision_model.*`) and the in-memory
# names of transformers 5 (`model.vision_tower.*`, `model.language_model.*`, `lm_head.*`).
LLAVA_KEYS = KeyTable(
    prefixes=(
        ("vision_tower.", "vision_tower."),
        ("multi_modal_projector.", "multi_modal_projector."),
        ("language_model.", "language_model.model."),
        ("lm_head.", "language_model.lm_head."),
    ),
    legacy=(
        (r"^(model\.)?vision_tower\.vision_model\.", "vision_tower."),
        (r"^model\.vision_tower\.", "vision_tower."),
        (r"^model\.multi_modal_projector\.", "multi_modal_projector."),
        (r"^model\.language_model\.", "language_model.model."),
        (r"^lm_head\.", "language_model.lm_head."),
    ),
    modules=(
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("language_model.", "model.language_model."),
        ("lm_head", "lm_head"),
    ),
)

# renames our export into the legacy layout published on the Hub (tests, old tooling)
LLAVA_LEGACY_EXPORT = ((r"^vision_tower\.", "vision_tower.vision_model."),)


conv_shapes = patch_conv_shapes  # shared with the other LLaVA-style family


def family() -> Family:
    """The registry entry for model_type `llava`."""
    return Family("llava", LlavaConfig.from_hf, LlavaForConditionalGeneration, LLAVA_KEYS,
                  conv_shapes, "LlavaForConditionalGeneration")
