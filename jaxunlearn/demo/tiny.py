"""A tiny LLaVA world built from scratch: synthetic benchmark, BPE tokenizer, model config,
and the pipeline config that matches them. Shared by the demo and the tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from jaxunlearn.data.pipeline import PipelineConfig
from jaxunlearn.data.processors import ClipImageConfig
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
from jaxunlearn.data.tokenizer import benchmark_tokenizer


@dataclasses.dataclass(frozen=True)
class TinyWorldConfig:
    seed: int = 0
    n_profiles: int = 20
    n_celebrities: int = 6
    image_size: int = 32       # synthetic image and CLIP input size
    patch: int = 8             # -> (32/8)^2 = 16 image tokens
    vocab_size: int = 1024
    vision_hidden: int = 64
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 2
    text_intermediate: int = 344
    heads: int = 4
    batch_size: int = 8


def tiny_llava_hf_config(tokenizer: Any, cfg: TinyWorldConfig) -> dict:
    """HF LlavaConfig dict sized to the tokenizer (image token, pad, eos)."""
    from jaxunlearn.data.templates import image_token_id

    img = image_token_id(tokenizer, "llava")
    n_tok = (cfg.image_size // cfg.patch) ** 2
    text = {"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": cfg.text_hidden,
            "intermediate_size": cfg.text_intermediate, "num_hidden_layers": cfg.text_layers,
            "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.heads,
            "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
            "hidden_act": "silu", "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
    vision = {"model_type": "clip_vision_model", "hidden_size": cfg.vision_hidden,
              "intermediate_size": cfg.vision_hidden * 4, "num_hidden_layers": cfg.vision_layers,
              "num_attention_heads": cfg.heads, "image_size": cfg.image_size,
              "patch_size": cfg.patch, "projection_dim": cfg.vision_hidden,
              "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
    return {"model_type": "llava", "image_token_index": img, "image_seq_length": n_tok,
            "projector_hidden_act": "gelu", "vision_feature_layer": -1,
            "vision_feature_select_strategy": "default", "multimodal_projector_bias": True,
            "tie_word_embeddings": False, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id, "vision_config": vision,
            "text_config": text}


def build_world(cfg: TinyWorldConfig, tokenizer_dir: str | Path | None = None):
    """(benchmark, tokenizer, HF config dict, PipelineConfig) for a tiny LLaVA."""
    bench = generate_benchmark(SynthConfig(seed=cfg.seed, n_profiles=cfg.n_profiles,
                                           n_celebrities=cfg.n_celebrities,
                                           image_size=cfg.image_size))
    tok = benchmark_tokenizer(bench, tokenizer_dir, vocab_size=cfg.vocab_size)
    hf_config = tiny_llava_hf_config(tok, cfg)
    pipe = PipelineConfig(family="llava", batch_size=cfg.batch_size,
                          image_token_count=hf_config["image_seq_length"],
                          image=ClipImageConfig(cfg.image_size, cfg.image_size),
                          bucket_size=32, max_length=256, seed=cfg.seed)
    return bench, tok, hf_config, pipe
