"""Tiny random HF models built in code and saved to temp dirs (no hub access)."""

from __future__ import annotations

import numpy as np
import torch


def tiny_llava_config(*, gqa: bool = True, tied: bool = False, feature_layer=-2,
                      strategy: str = "default", image_size: int = 28, patch: int = 14,
                      vocab: int = 128, text_layers: int = 2, vision_layers: int = 3,
                      image_token: int = 127):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=vision_layers,
                              num_attention_heads=4, image_size=image_size, patch_size=patch,
                              projection_dim=16)
    text = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=text_layers,
                       num_attention_heads=4, num_key_value_heads=2 if gqa else 4,
                       vocab_size=vocab, max_position_embeddings=256, rms_norm_eps=1e-5,
                       rope_theta=5000.0, tie_word_embeddings=tied, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=image_token, vision_feature_layer=feature_layer,
                       vision_feature_select_strategy=strategy, tie_word_embeddings=tied,
                       image_seq_length=(image_size // patch) ** 2 + (strategy == "full"))


def save_hf_llava(config, out_dir, seed: int = 0):
    """Random LlavaForConditionalGeneration (fp32) saved with save_pretrained; returns the model."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    # HF initialises norms to ones / zeros: perturb them so the test sees their weights
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out_dir)
    return model


def llava_batch(config, seed: int = 0, batch: int = 3, length: int = 24, left_pad=(0, 5, 2),
                n_images=None):
    """input_ids with one expanded image per row, left padding, and pixel values."""
    rng = np.random.default_rng(seed)
    n_img_tok = config.image_seq_length
    img_id = config.image_token_index
    ids = np.zeros((batch, length), np.int64)
    mask = np.zeros((batch, length), np.int64)
    for b in range(batch):
        pad = left_pad[b % len(left_pad)]
        n = length - pad
        row = rng.integers(3, img_id, size=n)
        start = 2
        row[start:start + n_img_tok] = img_id
        row[0] = 1
        ids[b, pad:] = row
        mask[b, pad:] = 1
    size = config.vision_config.image_size
    pix = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
    return ids, mask, pix


def hf_positions(mask: np.ndarray) -> np.ndarray:
    pos = np.cumsum(mask, -1) - 1
    return np.where(mask == 1, pos, 0)
