"""Greedy decoding throughput: jaxunlearn vs HF `generate` on the same ~50M LLaVA, same run.

Batch 8, 96-token prompts with 64 image tokens, 32 new tokens, fp32 on CPU, EOS disabled so
both decode exactly the same number of tokens. Compile time is reported separately.
"""

from __future__ import annotations

import time


from jaxunlearn.bench.common import best_time, bench_inputs, hf_bench_model, jax_from_hf


def run(batch: int = 8, prompt: int = 96, new: int = 32, repeats: int = 3) -> dict:
    import torch

    import jaxunlearn as ju

    hf = hf_bench_model()
    model = jax_from_hf(hf)
    ids, mask, _, pix = bench_inputs(batch, prompt)
    kw = {"max_new_tokens": new, "eos_token_id": -1}
    t0 = time.perf_counter()
    ours = ju.generate(model, ids, mask, pix, **kw)
    compile_s = time.perf_counter() - t0
    jax_s = best_time(lambda: ju.generate(model, ids, mask, pix, **kw), repeats)
    tin = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
           "pixel_values": torch.tensor(pix)}
    with torch.no_grad():
        def hf_gen():
            return hf.generate(**tin, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               pad_token_id=0)
        ref = hf_gen()
        hf_s = best_time(hf_gen, repeats)
    agree = float((ref[:, ids.shape[1]:].numpy() == ours).mean())
    n = batch * new
    return {"batch": batch, "prompt": prompt, "new": new, "compile_s": compile_s,
            "jax_s": jax_s, "hf_s": hf_s, "jax_tok_s": n / jax_s, "hf_tok_s": n / hf_s,
            "ratio": hf_s / jax_s, "token_agreement": agree,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    from jaxunlearn.host_memory import reuse_freed_host_memory

    reuse_freed_host_memory()  # both sides run with it (see host_memory.py)
    r = run()
    print(f"greedy generation, ~50M LLaVA, batch {r['batch']}, prompt {r['prompt']}, "
          f"{r['new']} new tokens, torch threads {r['torch_threads']}")
    print(f"jax compile + first call: {r['compile_s']:.2f} s")
    print(f"{'impl':<6}{'best s':>10}{'new tok/s':>12}")
    print(f"{'jax':<6}{r['jax_s']:>10.3f}{r['jax_tok_s']:>12.1f}")
    print(f"{'hf':<6}{r['hf_s']:>10.3f}{r['hf_tok_s']:>12.1f}")
    print(f"ratio jax/hf: {r['ratio']:.2f}x   token agreement with HF: {r['token_agreement']:.3f}")


if __name__ == "__main__":
    main()
