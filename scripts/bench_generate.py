"""Greedy decoding throughput: jaxunlearn vs HF `generate` on the same ~50M LLaVA, same run.

Config (issue 2): CLIP 4 layers x 256 at 112 px / patch 14, Llama 4 layers x 512, vocab 32k,
batch 8, 32 new tokens, fp32 on CPU. Prints new tokens/s for both, the ratio, and the JAX
compile time separately. EOS is disabled so both decode exactly 32 tokens.

    python scripts/bench_generate.py [--batch 8] [--new 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def bench_config():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                              num_attention_heads=4, image_size=112, patch_size=14,
                              projection_dim=256)
    text = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                       max_position_embeddings=1024, pad_token_id=0, eos_token_id=2)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=31999, image_seq_length=64)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch
    from transformers import LlavaForConditionalGeneration

    import jaxunlearn as ju

    cfg = bench_config()
    torch.manual_seed(0)
    hf = LlavaForConditionalGeneration(cfg).eval()
    n_params = sum(p.numel() for p in hf.parameters())
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 31000, size=(args.batch, args.prompt))
    ids[:, 1:65] = 31999
    mask = np.ones_like(ids)
    pix = rng.normal(size=(args.batch, 3, 112, 112)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = ju.load_pretrained(d)

    t0 = time.perf_counter()
    ours = ju.generate(model, ids, mask, pix, max_new_tokens=args.new, eos_token_id=-1)
    compile_s = time.perf_counter() - t0
    jax_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        ours = ju.generate(model, ids, mask, pix, max_new_tokens=args.new, eos_token_id=-1)
        jax_times.append(time.perf_counter() - t0)

    hf_times = []
    with torch.no_grad():
        tin = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                   pixel_values=torch.tensor(pix))
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ref = hf.generate(**tin, max_new_tokens=args.new, min_new_tokens=args.new,
                              do_sample=False, pad_token_id=0)
            hf_times.append(time.perf_counter() - t0)
    ref = ref[:, ids.shape[1]:].numpy()
    same = float((ref == ours).mean())
    n_new = args.batch * args.new
    jax_tps, hf_tps = n_new / min(jax_times), n_new / min(hf_times)
    print(f"model: {n_params / 1e6:.1f}M params, batch {args.batch}, prompt {args.prompt}, "
          f"{args.new} new tokens, torch threads {torch.get_num_threads()}")
    print(f"jax compile+first call: {compile_s:.2f} s")
    print(f"{'impl':<8}{'best s':>10}{'new tok/s':>12}")
    print(f"{'jax':<8}{min(jax_times):>10.3f}{jax_tps:>12.1f}")
    print(f"{'hf':<8}{min(hf_times):>10.3f}{hf_tps:>12.1f}")
    print(f"ratio jax/hf: {jax_tps / hf_tps:.2f}x   token agreement with HF: {same:.3f}")


if __name__ == "__main__":
    main()
