"""Shared pieces of the speed benchmarks: the ~50M LLaVA config and the CPU matmul peak."""

from __future__ import annotations

import time

import numpy as np


def bench_llava_config_dict() -> dict:
    """~50M-parameter LLaVA: CLIP 4 x 256 at 112 px / patch 14, Llama 4 x 512, vocab 32k."""
    return {
        "model_type": "llava", "image_token_index": 31999, "image_seq_length": 64,
        "projector_hidden_act": "gelu", "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default", "pad_token_id": 0,
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 256,
                          "intermediate_size": 1024, "num_hidden_layers": 4,
                          "num_attention_heads": 4, "image_size": 112, "patch_size": 14,
                          "projection_dim": 256},
        "text_config": {"model_type": "llama", "hidden_size": 512, "intermediate_size": 1376,
                        "num_hidden_layers": 4, "num_attention_heads": 8,
                        "num_key_value_heads": 8, "vocab_size": 32000,
                        "max_position_embeddings": 1024, "pad_token_id": 0, "eos_token_id": 2},
    }


def hf_bench_model(seed: int = 0):
    """The benchmark config as a random HF LlavaForConditionalGeneration (fp32, eval)."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(LlavaConfig(**bench_llava_config_dict())).eval()


def jax_from_hf(hf_model):
    """Load an HF model into jaxunlearn through a temporary save_pretrained directory."""
    import tempfile

    import jaxunlearn as ju

    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        return ju.load_pretrained(d)


def bench_inputs(batch: int, length: int, seed: int = 0):
    """Token ids with 64 image tokens per row, an attention mask, answer mask and pixels."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 31000, size=(batch, length)).astype(np.int64)
    ids[:, 1:65] = 31999
    mask = np.ones_like(ids)
    loss_mask = np.zeros((batch, length), np.float32)
    loss_mask[:, 65:] = 1.0
    pix = rng.normal(size=(batch, 3, 112, 112)).astype(np.float32)
    return ids, mask, loss_mask, pix


def matmul_peak_flops(n: int = 2048, repeats: int = 8) -> float:
    """Measured fp32 matmul FLOP/s of this machine (the MFU denominator): the best of XLA's
    and torch's n x n products (one noisy short measurement once put HF above 100%)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = best_time(lambda: f(a).block_until_ready(), repeats)
    try:
        import torch

        t = torch.ones(n, n)
        best = min(best, best_time(lambda: t @ t, repeats))
    except ImportError:
        pass
    return 2 * n ** 3 / best


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
