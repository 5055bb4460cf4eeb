"""Evaluation throughput (questions/s): jaxunlearn tasks vs HF PyTorch ``generate``, same run.

A ~50M-parameter LLaVA with random weights (CLIP 4 x 256 at 112 px / patch 14, Llama 4 x 512,
vocab 32k) answers the same synthetic-benchmark questions (classification: few new tokens;
generation: up to 50) in both frameworks, greedy, same batch size and left padding.
Timings exclude the first (compiling / warm-up) pass. Usage::

    python scripts/bench_eval.py [--questions 64] [--batch-size 16] [--dtype float32]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import numpy as np


def build(tmp: str, dtype: str):
    """(jax model, torch model, tokenizer, benchmark, pipeline config) with shared weights."""
    import torch
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    import jaxunlearn as ju
    from jaxunlearn.demo.tiny import TinyWorldConfig, build_world

    world = TinyWorldConfig(image_size=112, patch=14, vision_hidden=256, vision_layers=4,
                            text_hidden=512, text_layers=4, text_intermediate=1376, heads=8,
                            n_profiles=40, n_celebrities=0)
    bench, tok, hf, pipe = build_world(world)
    hf["text_config"]["vocab_size"] = 32000
    torch.manual_seed(0)
    tmodel = LlavaForConditionalGeneration(LlavaConfig(**hf)).eval()
    tmodel.save_pretrained(tmp)
    jmodel = ju.load_pretrained(tmp, dtype=dtype)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmodel = tmodel.to(device=device, dtype=getattr(torch, dtype))
    print(f"model: {jmodel.num_params / 1e6:.1f}M params, torch on {device}, {dtype}")
    return jmodel, tmodel, tok, bench, pipe


def hf_generate_fn(tmodel):
    """A ``ju.generate``-compatible function running HF ``generate``."""
    import torch

    dev, dt = next(tmodel.parameters()).device, next(tmodel.parameters()).dtype

    def generate(model, ids, mask, pixel_values=None, *, max_new_tokens, eos_token_id,
                 pad_token_id):
        kw = {}
        if pixel_values is not None:
            kw["pixel_values"] = torch.as_tensor(np.asarray(pixel_values)).to(dev, dt)
        with torch.no_grad():
            out = tmodel.generate(input_ids=torch.as_tensor(np.asarray(ids)).long().to(dev),
                                  attention_mask=torch.as_tensor(np.asarray(mask)).to(dev),
                                  max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kw)
        return out[:, ids.shape[1]:].cpu().numpy()

    return generate


def timed(fn, repeats: int = 1) -> float:
    fn()  # warm-up: compilation (JAX) / CUDA kernels (torch)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main() -> None:
    from jaxunlearn.host_memory import reuse_freed_host_memory

    reuse_freed_host_memory()  # both sides run with it (see jaxunlearn/host_memory.py)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--questions", type=int, default=64, help="per task and modality")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--generation-tokens", type=int, default=50)
    args = ap.parse_args()

    import jax

    from jaxunlearn.data.pipeline import question_records
    from jaxunlearn.eval.tasks import generate_answers

    with tempfile.TemporaryDirectory() as tmp:
        jmodel, tmodel, tok, bench, pipe = build(tmp, args.dtype)
    pipe = dataclasses.replace(pipe, bucket_size=64)
    hf_gen = hf_generate_fn(tmodel)
    print(f"jax devices: {jax.devices()}")
    rows = []
    for kind, max_new in (("classification", 4), ("generation", args.generation_tokens)):
        for modality in ("multi", "text"):
            recs = question_records(bench.profiles, "llava", "eval", kind, modality)
            recs = (recs * (args.questions // max(len(recs), 1) + 1))[:args.questions]

            def run(gen, recs=recs, max_new=max_new):
                return generate_answers(jmodel, tok, recs, pipe, max_new_tokens=max_new,
                                        batch_size=args.batch_size, generate_fn=gen)

            t_jax = timed(lambda: run(None))
            t_hf = timed(lambda: run(hf_gen))
            same = np.mean([a == b for a, b in zip(run(None), run(hf_gen))])
            rows.append((kind, modality, len(recs), len(recs) / t_jax, len(recs) / t_hf, same))
    print(f"\n{'task':<15}{'modality':<9}{'n':>5}{'JAX q/s':>10}{'HF q/s':>10}{'ratio':>8}"
          f"{'same answer':>13}")
    for kind, mod, n, qj, qh, same in rows:
        print(f"{kind:<15}{mod:<9}{n:>5}{qj:>10.1f}{qh:>10.1f}{qj / qh:>8.2f}{same:>13.2f}")


if __name__ == "__main__":
    main()
