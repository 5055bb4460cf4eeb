"""Qwen2-VL / Qwen2.5-VL config parsing (HF config dict -> `QwenVLConfig`, `QwenVisionConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxunlearn.modeling.decoder import TextConfig

QWEN2_VL = "qwen2_vl"
QWEN2_5_VL = "qwen2_5_vl"


def _int(v: Any) -> int:
    """HF allows `patch_size` as an int or a (equal) pair."""
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


_TEXT_KEYS_IGNORED = ("vision_config", "text_config", "architectures")


@dataclasses.dataclass(frozen=True)
class QwenVisionConfig:
    """Vision tower hyper-parameters; `variant` is `qwen2_vl` or `qwen2_5_vl`."""

    variant: str
    depth: int
    hidden_size: int          # ViT width (HF `embed_dim` for Qwen2-VL, `hidden_size` for 2.5)
    intermediate_size: int
    num_heads: int
    out_hidden_size: int      # merger output = LLM width
    hidden_act: str
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    rope_theta: float = 10000.0
    window_size: int = 0      # pixels; 0 = no window attention (Qwen2-VL)
    fullatt_block_indexes: tuple[int, ...] = ()

    @staticmethod
    def from_hf(vc: dict[str, Any], variant: str) -> "QwenVisionConfig":
        rope = vc.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "axial")
        if rope_type != "axial":
            raise ValueError(f"vision_config rope_type {rope_type!r} is not supported; use axial")
        common = dict(
            variant=variant,
            depth=int(vc.get("depth", vc.get("num_hidden_layers", 32))),
            num_heads=int(vc.get("num_heads", vc.get("num_attention_heads", 16))),
            in_channels=int(vc.get("in_channels", vc.get("in_chans", 3))),
            patch_size=_int(vc.get("patch_size", 14)),
            temporal_patch_size=_int(vc.get("temporal_patch_size", 2)),
            spatial_merge_size=int(vc.get("spatial_merge_size", 2)),
            rope_theta=float(rope.get("rope_theta", 10000.0)),
        )
        if variant == QWEN2_VL:
            width = int(vc.get("embed_dim", 1280))
            return QwenVisionConfig(
                hidden_size=width, intermediate_size=int(width * vc.get("mlp_ratio", 4)),
                out_hidden_size=int(vc.get("hidden_size", 3584)),
                hidden_act=vc.get("hidden_act", "quick_gelu"), **common)
        if variant == QWEN2_5_VL:
            return QwenVisionConfig(
                hidden_size=int(vc.get("hidden_size", 3584)),
                intermediate_size=int(vc.get("intermediate_size", 3420)),
                out_hidden_size=int(vc.get("out_hidden_size", 3584)),
                hidden_act=vc.get("hidden_act", "silu"),
                window_size=int(vc.get("window_size", 112)),
                fullatt_block_indexes=tuple(int(i) for i in
                                            vc.get("fullatt_block_indexes", (7, 15, 23, 31))),
                **common)
        raise ValueError(f"unknown Qwen vision variant {variant!r}; use {QWEN2_VL} or {QWEN2_5_VL}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size ** 2

    @property
    def merge_unit(self) -> int:
        return self.spatial_merge_size ** 2

    @property
    def windowed(self) -> bool:
        return self.variant == QWEN2_5_VL


@dataclasses.dataclass(frozen=True)
class QwenVLConfig:
    vision: QwenVisionConfig
    text: TextConfig
    model_type: str
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    tie_word_embeddings: bool = False

    @staticmethod
    def from_hf(cfg: dict[str, Any]) -> "QwenVLConfig":
        model_type = cfg.get("model_type")
        if model_type not in (QWEN2_VL, QWEN2_5_VL):
            raise ValueError(f"model_type {model_type!r} is not a Qwen-VL family; use "
                             f"{QWEN2_VL} or {QWEN2_5_VL}")
        # Hub configs are flat (text keys at the top); transformers 5 nests `text_config`
        tc = {k: v for k, v in cfg.items() if k not in _TEXT_KEYS_IGNORED}
        tc.update(cfg.get("text_config") or {})
        if tc.get("use_sliding_window"):
            raise ValueError("text_config.use_sliding_window=true is not supported for Qwen-VL; "
                             "set it to false (the published checkpoints do)")
        rope = dict(tc.get("rope_parameters") or tc.get("rope_scaling") or {})
        rope.setdefault("rope_theta", tc.get("rope_theta", 1000000.0))
        rope.setdefault("mrope_section", [16, 24, 24])
        tc["rope_parameters"] = rope
        tc.pop("rope_scaling", None)
        text = TextConfig.from_hf(tc, qwen=True)
        # HF's Qwen2-VL attention always uses hidden_size // heads
        text = dataclasses.replace(text, head_dim=text.hidden_size // text.num_attention_heads)
        if sum(text.mrope_section) * 2 != text.head_dim:
            raise ValueError(f"mrope_section {list(text.mrope_section)} must sum to head_dim / 2 "
                             f"= {text.head_dim // 2}")
        vision = QwenVisionConfig.from_hf(cfg.get("vision_config") or {}, model_type)
        if vision.out_hidden_size != text.hidden_size:
            raise ValueError(f"vision merger output {vision.out_hidden_size} != text hidden_size "
                             f"{text.hidden_size}; fix vision_config")
        tied = bool(cfg.get("tie_word_embeddings",
                            (cfg.get("text_config") or {}).get("tie_word_embeddings", False)))
        return QwenVLConfig(
            vision=vision, text=text, model_type=model_type,
            image_token_id=int(cfg.get("image_token_id", 151655)),
            video_token_id=int(cfg.get("video_token_id", 151656)),
            vision_start_token_id=int(cfg.get("vision_start_token_id", 151652)),
            tie_word_embeddings=tied,
        )
