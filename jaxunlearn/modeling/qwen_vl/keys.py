"""Qwen2-VL / Qwen2.5-VL checkpoint keys and registry entries."""

from __future__ import annotations

from jaxunlearn.modeling.keys import KeyTable
from jaxunlearn.modeling.qwen_vl.config import QWEN2_5_VL, QWEN2_VL, QwenVLConfig
from jaxunlearn.modeling.qwen_vl.host import host_prepare
from jaxunlearn.modeling.qwen_vl.model import QwenVLForConditionalGeneration
from jaxunlearn.modeling.registry import Family

# Export layout = what transformers 5.23 `save_pretrained` writes for both Qwen-VL classes,
# which is also the Hub layout (`model.layers.*`, `visual.*`, `lm_head.*`). Accepted on
# import besides it: the in-memory names of transformers 5 (`model.language_model.*`,
# `model.visual.*`).
QWEN_VL_KEYS = KeyTable(
    prefixes=(
        ("visual.", "visual."),
        ("language_model.", "model."),
        ("lm_head.", "lm_head."),
    ),
    legacy=(
        (r"^model\.language_model\.", "model."),
        (r"^model\.visual\.", "visual."),
    ),
    modules=(
        ("visual.", "model.visual."),
        ("language_model.", "model.language_model."),
        ("lm_head", "lm_head"),
    ),
)

# renames our export into the transformers-5 in-memory layout (tests, tooling that wants it)
QWEN_VL_INMEMORY_EXPORT = ((r"^model\.", "model.language_model."), (r"^visual\.", "model.visual."))


def conv_shapes(c: QwenVLConfig) -> dict[str, tuple]:
    v = c.vision
    return {"visual.patch_embed.proj.kernel":
            (v.hidden_size, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size)}


def _family(model_type: str, architecture: str) -> Family:
    return Family(model_type, QwenVLConfig.from_hf, QwenVLForConditionalGeneration, QWEN_VL_KEYS,
                  conv_shapes, architecture, host_prepare)


def family_qwen2_vl() -> Family:
    """The registry entry for model_type `qwen2_vl`."""
    return _family(QWEN2_VL, "Qwen2VLForConditionalGeneration")


def family_qwen2_5_vl() -> Family:
    """The registry entry for model_type `qwen2_5_vl`."""
    return _family(QWEN2_5_VL, "Qwen2_5_VLForConditionalGeneration")
