"""LLaVA-1.5 (model_type `llava`): CLIP tower + projector + Llama decoder.

`config` parses the HF config, `clip` is the vision tower, `model` the module, `keys` the
checkpoint key table and the registry entry.
"""

from jaxunlearn.modeling.llava.clip import CLIPVisionTransformer, VisionConfig
from jaxunlearn.modeling.llava.config import LlavaConfig
from jaxunlearn.modeling.llava.keys import LLAVA_KEYS, LLAVA_LEGACY_EXPORT, conv_shapes, family
from jaxunlearn.modeling.llava.model import LlavaForConditionalGeneration
from jaxunlearn.modeling.multimodal import (
    default_positions, merge_image_features, select_feature_layers,
)

__all__ = [
    "CLIPVisionTransformer", "LLAVA_KEYS", "LLAVA_LEGACY_EXPORT", "LlavaConfig",
    "LlavaForConditionalGeneration", "VisionConfig", "conv_shapes", "default_positions",
    "family", "merge_image_features", "select_feature_layers",
]
