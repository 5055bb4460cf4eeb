"""LLaVA-OneVision config parsing (HF `LlavaOnevisionConfig` dict -> `OneVisionConfig`)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from jaxunlearn.modeling.decoder import TextConfig
from jaxunlearn.modeling.llava_onevision.siglip import SiglipVisionConfig


def default_grid_pinpoints(base: int = 384, n: int = 6) -> tuple[tuple[int, int], ...]:
    """transformers' default pinpoints: every (i*base, j*base) for i, j in 1..n."""
    return tuple((i * base, j * base) for i in range(1, n + 1) for j in range(1, n + 1))


@dataclasses.dataclass(frozen=True)
class OneVisionConfig:
    vision: SiglipVisionConfig
    text: TextConfig
    image_token_id: int
    video_token_id: int = 151647
    image_grid_pinpoints: tuple[tuple[int, int], ...] = default_grid_pinpoints()
    vision_aspect_ratio: str = "anyres_max_9"
    vision_feature_layer: int | tuple[int, ...] = -1
    vision_feature_select_strategy: str = "full"
    projector_hidden_act: str = "gelu"
    multimodal_projector_bias: bool = True
    tie_word_embeddings: bool = False

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "OneVisionConfig":
        """Parse an HF `LlavaOnevisionConfig` dict; clear errors for what is not ported."""
        vc, tc = cfg.get("vision_config") or {}, cfg.get("text_config") or {}
        if vc.get("model_type", "siglip_vision_model") != "siglip_vision_model":
            raise ValueError(f"LLaVA-OneVision vision_config.model_type {vc.get('model_type')!r} "
                             "is not supported; jaxunlearn ports siglip_vision_model")
        if tc.get("model_type", "qwen2") != "qwen2":
            raise ValueError(f"LLaVA-OneVision text_config.model_type {tc.get('model_type')!r} is "
                             "not supported; jaxunlearn ports qwen2")
        if tc.get("use_sliding_window") or any(t != "full_attention"
                                               for t in tc.get("layer_types") or ()):
            raise ValueError("LLaVA-OneVision text_config uses sliding-window attention, which "
                             "jaxunlearn does not port; set use_sliding_window: false")
        if not vc:  # transformers' defaults for OneVision: SigLIP so400m-patch14-384, no head
            vc = dict(hidden_size=1152, intermediate_size=4304, patch_size=14, image_size=384,
                      num_hidden_layers=26, num_attention_heads=16, vision_use_head=False)
        vision = SiglipVisionConfig.from_hf(vc)
        strategy = cfg.get("vision_feature_select_strategy", "full")
        if strategy not in ("default", "full"):
            raise ValueError(f"vision_feature_select_strategy {strategy!r}: use default or full")
        ratio = cfg.get("vision_aspect_ratio", "anyres_max_9")
        if not re.fullmatch(r"anyres_max_\d+", str(ratio)):
            raise ValueError(f"vision_aspect_ratio {ratio!r} is not supported; use anyres_max_N")
        pins = cfg.get("image_grid_pinpoints")
        pins = (tuple((int(h), int(w)) for h, w in pins) if pins
                else default_grid_pinpoints(vision.image_size))
        for h, w in pins:
            if h % vision.image_size or w % vision.image_size:
                raise ValueError(f"image_grid_pinpoints entry {[h, w]} is not a multiple of the "
                                 f"vision image_size {vision.image_size}")
        layer = cfg.get("vision_feature_layer", -1)
        tied = bool(cfg.get("tie_word_embeddings", False) or tc.get("tie_word_embeddings", False))
        return OneVisionConfig(
            vision=vision, text=TextConfig.from_hf(tc, qwen=True),
            image_token_id=cfg.get("image_token_id", cfg.get("image_token_index", 151646)),
            video_token_id=cfg.get("video_token_id", cfg.get("video_token_index", 151647)),
            image_grid_pinpoints=pins, vision_aspect_ratio=str(ratio),
            vision_feature_layer=layer if isinstance(layer, int) else tuple(layer),
            vision_feature_select_strategy=strategy,
            projector_hidden_act=cfg.get("projector_hidden_act", "gelu"),
            multimodal_projector_bias=cfg.get("multimodal_projector_bias", True),
            tie_word_embeddings=tied,
        )

    @property
    def feature_layers(self) -> tuple[int, ...]:
        layers = self.vision_feature_layer
        return (layers,) if isinstance(layers, int) else tuple(layers)

    @property
    def tokens_per_crop(self) -> int:
        """Feature rows per crop after feature selection."""
        drop = 1 if self.vision_feature_select_strategy == "default" else 0
        return self.vision.num_patches - drop

    @property
    def max_crops(self) -> int:
        """Largest crop count of any image: the biggest pinpoint grid plus the base crop."""
        s = self.vision.image_size
        return max(-(-h // s) * -(-w // s) for h, w in self.image_grid_pinpoints) + 1

    @property
    def max_num_patches(self) -> int:
        """N of `anyres_max_N` (parsed as transformers does)."""
        return int(self.vision_aspect_ratio[len("anyres_max_"):])
