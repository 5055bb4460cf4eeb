"""Benchmark: neuron-statistics pass, jaxunlearn (one jitted step per batch) vs HF PyTorch
(forward hooks accumulating the same sums), on a ~50M-parameter LLaVA built in code
(CLIP 4x256 @112px/patch14, Llama 4x512, vocab 32k), same batches, same run.

    .venv/bin/python scripts/bench_stats.py [--batches 8] [--batch-size 8] [--length 128]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time

import numpy as np


def hf_config():
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                              num_attention_heads=4, image_size=112, patch_size=14,
                              projection_dim=256)
    text = LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=4,
                       num_attention_heads=8, num_key_value_heads=8, vocab_size=32064,
                       max_position_embeddings=1024, pad_token_id=0)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=32000, vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=64)


def make_batches(n: int, bsz: int, length: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = rng.integers(3, 32000, size=(bsz, length)).astype(np.int32)
        ids[:, 1:65] = 32000
        ids[:, 0] = 1
        mask = np.ones((bsz, length), np.int32)
        for b in range(bsz):
            mask[b, length - int(rng.integers(0, length // 4)):] = 0
        loss = np.zeros((bsz, length), np.float32)
        loss[:, 70:90] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "loss_mask": loss,
                    "example_mask": np.ones(bsz, np.int32),
                    "pixel_values": rng.normal(size=(bsz, 3, 112, 112)).astype(np.float32)})
    return out


def torch_stats(hf, batches, tau: float):
    """Same sums as jaxunlearn (post site, scope all) from forward pre-hooks on down_proj/fc2."""
    import torch

    acc: dict = {}
    state: dict = {}

    def hook(key):
        def fn(_mod, inp):
            z = inp[0].float()
            w = state["lang"] if key[0] == "language" else state["vis"]
            w = w.reshape(*z.shape[:-1], 1).to(z.dtype)
            vals = {"n": w.sum(), "S1": (w * z.abs()).flatten(0, -2).sum(0),
                    "Sz": (w * z).flatten(0, -2).sum(0), "S2": (w * z * z).flatten(0, -2).sum(0),
                    "F": (w * (z.abs() > tau)).flatten(0, -2).sum(0),
                    "P": (w * (z > 0)).flatten(0, -2).sum(0)}
            slot = acc.setdefault(key, {k: 0 for k in vals})
            for k, v in vals.items():
                slot[k] = slot[k] + v
        return fn

    hooks = []
    for name, mod in hf.named_modules():
        m = re.search(r"layers\.(\d+)\.mlp\.(down_proj|fc2)$", name)
        if m:
            group = "vision" if "vision" in name else "language"
            hooks.append(mod.register_forward_pre_hook(hook((group, int(m.group(1))))))
    with torch.no_grad():
        for b in batches:
            mask = torch.tensor(b["attention_mask"])
            state["lang"] = mask * torch.tensor(b["example_mask"])[:, None]
            state["vis"] = torch.tensor(b["example_mask"])[:, None].expand(-1, 65)
            pos = torch.clamp(mask.cumsum(-1) - 1, min=0)
            hf(input_ids=torch.tensor(b["input_ids"]).long(), attention_mask=mask,
               pixel_values=torch.tensor(b["pixel_values"]), position_ids=pos, logits_to_keep=1)
    for h in hooks:
        h.remove()
    return {k: {s: np.asarray(v) for s, v in d.items()} for k, d in acc.items()}


def main() -> None:
    from jaxunlearn.host_memory import reuse_freed_host_memory

    reuse_freed_host_memory()  # both sides run with it (see jaxunlearn/host_memory.py)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = ap.parse_args()

    import torch
    from transformers import LlavaForConditionalGeneration

    import jax

    import jaxunlearn as ju
    from jaxunlearn.stats.activations import neuron_stats

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = hf_config()
    torch.manual_seed(0)
    hf = LlavaForConditionalGeneration(cfg).eval()
    n_params = sum(p.numel() for p in hf.parameters())
    batches = make_batches(args.batches, args.batch_size, args.length)
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        model = ju.load_pretrained(d)
    print(f"model: {n_params / 1e6:.1f}M params; {args.batches} batches of "
          f"{args.batch_size}x{args.length} tokens (+{args.batch_size} images 112px); "
          f"jax backend {jax.default_backend()}")

    t0 = time.perf_counter()
    neuron_stats(model, batches[:1], progress=False)  # compile
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = neuron_stats(model, batches, progress=False)
    t_jax = time.perf_counter() - t0

    torch_stats(hf, batches[:1], 0.01)  # warm up
    t0 = time.perf_counter()
    ref = torch_stats(hf, batches, 0.01)
    t_torch = time.perf_counter() - t0

    err = max(float(np.max(np.abs(ours["language"]["S1"][i] - ref[("language", i)]["S1"])
                       / (np.abs(ref[("language", i)]["S1"]) + 1e-3)))
              for i in range(4))
    toks = args.batches * args.batch_size * args.length
    print(f"jaxunlearn: {t_jax:.3f} s ({toks / t_jax:,.0f} tok/s; first-call compile "
          f"{t_compile:.1f} s)")
    print(f"HF torch + hooks: {t_torch:.3f} s ({toks / t_torch:,.0f} tok/s)")
    print(f"ratio torch/jax: {t_torch / t_jax:.2f}x   (max rel. diff of language S1: {err:.1e})")


if __name__ == "__main__":
    main()
