"""LLaVA-1.5 config parsing (HF `LlavaConfig` dict -> `LlavaConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxunlearn.modeling.decoder import TextConfig
from jaxunlearn.modeling.llava.clip import VisionConfig


@dataclasses.dataclass(frozen=True)
class LlavaConfig:
    vision: VisionConfig
    text: TextConfig
    image_token_id: int
    vision_feature_layer: int | tuple[int, ...] = -2
    vision_feature_select_strategy: str = "default"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "LlavaConfig":
        vc, tc = cfg.get("vision_config") or {}, cfg.get("text_config") or {}
        if vc.get("model_type", "clip_vision_model") != "clip_vision_model":
            raise ValueError(f"LLaVA vision_config.model_type {vc.get('model_type')!r} is not "
                             "supported; jaxunlearn ports clip_vision_model for llava")
        if tc.get("model_type", "llama") != "llama":
            raise ValueError(f"LLaVA text_config.model_type {tc.get('model_type')!r} is not "
                             "supported; jaxunlearn ports llama for llava")
        layer = cfg.get("vision_feature_layer", -2)
        strategy = cfg.get("vision_feature_select_strategy", "default")
        if strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {strategy!r}: use default or full")
        return LlavaConfig(
            vision=VisionConfig.from_hf(vc), text=TextConfig.from_hf(tc),
            image_token_id=cfg.get("image_token_id", cfg.get("image_token_index", 32000)),
            vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
            vision_feature_select_strategy=strategy,
            projector_hidden_act=cfg.get("projector_hidden_act", "gelu"),
            multimodal_projector_bias=cfg.get("multimodal_projector_bias", True),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layers = self.vision_feature_layer
        return (layers,) if isinstance(layers, int) else tuple(layers)

    @property
    def image_seq_length(self) -> int:
        """Image tokens per image in input_ids."""
        return self.vision.num_patches + (1 if self.vision_feature_select_strategy == "full" else 0)
