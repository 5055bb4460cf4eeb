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


# ----------------------------------------------------------------------------- every family
# Tiny random models of the four families with a tokenizer holding the family's special
# tokens and a preprocessor_config.json: complete HF directories that `ju.load_pretrained`,
# `transformers` and `jaxunlearn finetune/unlearn/evaluate model.checkpoint=DIR` consume.

FAMILIES = ("llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl")
TINY_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]


def tiny_tokenizer(bench=None, out_dir=None, vocab_size: int = 384):
    """The synthetic benchmark's BPE tokenizer (every family's special tokens, names as single
    tokens); `bench` defaults to a small synthetic benchmark (seed 0)."""
    from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
    from jaxunlearn.data.tokenizer import benchmark_tokenizer

    if bench is None:
        bench = generate_benchmark(SynthConfig(seed=0, n_profiles=10, n_celebrities=4,
                                               image_size=32))
    return benchmark_tokenizer(bench, out_dir, vocab_size=vocab_size)


def tiny_family_config(family: str, tok, *, vision_layers: int = 3, feature_layer: int = -2):
    """A tiny transformers config of `family` whose token ids match `tok`."""
    ids = tok.convert_tokens_to_ids
    vocab = -(-len(tok) // 64) * 64
    pad, bos = tok.pad_token_id, tok.bos_token_id
    if family == "llava":
        return tiny_llava_config(vocab=vocab, image_token=ids("<image>"), image_size=28,
                                 vision_layers=vision_layers, feature_layer=feature_layer)
    im_end = ids("<|im_end|>")
    if family == "llava_onevision":
        from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

        vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=vision_layers, num_attention_heads=4,
                                    image_size=28, patch_size=14, vision_use_head=False)
        text = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab,
                           max_position_embeddings=1024, rope_theta=5000.0, rms_norm_eps=1e-5,
                           tie_word_embeddings=False, pad_token_id=pad, bos_token_id=bos,
                           eos_token_id=im_end)
        return LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                    image_token_index=ids("<image>"), video_token_index=vocab - 1,
                                    vision_feature_layer=feature_layer,
                                    vision_feature_select_strategy="full",
                                    image_grid_pinpoints=TINY_PINPOINTS,
                                    vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False)
    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                max_position_embeddings=1024, bos_token_id=bos, eos_token_id=im_end,
                pad_token_id=pad, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                   "mrope_section": [2, 3, 3]})
    common = dict(image_token_id=ids("<|image_pad|>"), video_token_id=vocab - 1,
                  vision_start_token_id=ids("<|vision_start|>"),
                  vision_end_token_id=ids("<|vision_end|>"), tie_word_embeddings=False)
    if family == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=vision_layers, embed_dim=32, hidden_size=64, num_heads=4,
                      mlp_ratio=2, patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(depth=vision_layers, hidden_size=32, intermediate_size=48, num_heads=4,
                      out_hidden_size=64, patch_size=4, spatial_merge_size=2,
                      temporal_patch_size=2, window_size=16, fullatt_block_indexes=[1])
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)
    raise ValueError(f"unknown family {family!r}; use one of {FAMILIES}")


def tiny_image_processor(family: str):
    """The HF (PIL backend) image processor matching `tiny_family_config(family)`."""
    if family == "llava":
        from transformers import CLIPImageProcessorPil

        return CLIPImageProcessorPil(size={"shortest_edge": 28},
                                     crop_size={"height": 28, "width": 28})
    if family == "llava_onevision":
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil,
        )

        return LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28},
                                               image_grid_pinpoints=TINY_PINPOINTS)
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
    )

    # 32x32 images stay 32x32: 8x8 patches of 4 px, 16 image tokens
    return Qwen2VLImageProcessorPil(min_pixels=16 * 16, max_pixels=64 * 64, patch_size=4,
                                    merge_size=2, temporal_patch_size=2)


def save_tiny_family(family: str, out_dir, *, bench=None, seed: int = 0, vision_layers: int = 3,
                     feature_layer: int = -2):
    """Write a complete tiny HF directory of `family` (config, fp32 random weights with
    perturbed norms, the benchmark tokenizer, preprocessor_config.json); returns its path."""
    from pathlib import Path

    from transformers import AutoModelForImageTextToText

    out = Path(out_dir)
    tok = tiny_tokenizer(bench, out)
    config = tiny_family_config(family, tok, vision_layers=vision_layers,
                                feature_layer=feature_layer)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    with torch.no_grad():  # HF norms start at ones / zeros: perturb so their weights matter
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name or "ln_q" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(out)
    tiny_image_processor(family).save_pretrained(out)
    return out


def hf_image_inputs(family: str, model, image):
    """(the family's HF image-processor outputs for one image as numpy, the number of image
    tokens its prompt expands to) — the reference layout pipeline and export tests compare to."""
    proc = tiny_image_processor(family)
    hf = {k: np.asarray(v) for k, v in proc(images=[image], return_tensors="np").items()}
    hf.pop("batch_num_images", None)
    if family == "llava":
        n_tok = model.config.image_seq_length
    elif family == "llava_onevision":
        from jaxunlearn.modeling.llava_onevision import num_image_tokens

        n_tok = num_image_tokens(model.config, tuple(hf["image_sizes"][0]))
    else:
        n_tok = int(np.prod(hf["image_grid_thw"][0])) // 4
    return hf, n_tok
