"""Train-step throughput: jaxunlearn (one jitted step) vs HF PyTorch eager (forward +
backward + AdamW) on the same ~50M LLaVA, same batch, same run; with MFU."""

from __future__ import annotations

import time

import numpy as np

from jaxunlearn.bench.common import (
    best_time, bench_inputs, bench_llava_config_dict, hf_bench_model, jax_from_hf,
    matmul_peak_flops,
)
from jaxunlearn.data.answers import answer_index


def train_flops_per_step(n_params_llm: int, n_params_vision: int, tokens: int,
                         image_tokens: int) -> float:
    """6 * params * tokens (forward + backward) for the decoder and the vision tower."""
    return 6.0 * (n_params_llm * tokens + n_params_vision * image_tokens)


def run(batch: int = 8, length: int = 128, repeats: int = 5) -> dict:
    import jax
    import torch

    from jaxunlearn.train import finetune
    from jaxunlearn.train.state import init_state, make_optimizer
    from jaxunlearn.train.step import make_train_step

    hf = hf_bench_model()
    model = jax_from_hf(hf)
    ids, mask, loss_mask, pix = bench_inputs(batch, length)
    # answer_index is what the data pipeline adds to every batch: the head runs on the 63
    # answer positions of each row, not on the 64 image tokens and the prompt
    jbatch = {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32),
              "loss_mask": loss_mask, "pixel_values": pix,
              "answer_index": answer_index(loss_mask)}
    opt = make_optimizer(1e-5, schedule="constant")
    state = init_state(model.params, opt)
    step = make_train_step(finetune.make_nll_loss(model.graphdef), opt, clip_norm=1.0)
    t0 = time.perf_counter()
    state, m = step(state, {}, jbatch)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0

    def jax_step():
        nonlocal state
        state, metrics = step(state, {}, jbatch)
        jax.block_until_ready(metrics)

    jax_s = best_time(jax_step, repeats)

    hf.train()
    topt = torch.optim.AdamW(hf.parameters(), lr=1e-5, weight_decay=0.0)
    labels = torch.tensor(np.where(loss_mask > 0, ids, -100))
    tin = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
           "pixel_values": torch.tensor(pix), "labels": labels}

    def hf_step():
        topt.zero_grad(set_to_none=True)
        loss = hf(**tin).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        topt.step()

    hf_step()
    hf_s = best_time(hf_step, repeats)
    n_vision = sum(int(np.prod(v.shape)) for k, v in model.params.items()
                   if k.startswith(("vision_tower", "multi_modal")))
    n_embed = int(np.prod(model.params["language_model.embed_tokens.weight"].shape))
    n_head = int(np.prod(model.params["lm_head.kernel"].shape))
    n_body = model.num_params - n_vision - n_embed - n_head  # a lookup table does no matmul
    tokens = batch * length
    vc = bench_llava_config_dict()["vision_config"]
    image_tokens = batch * ((vc["image_size"] // vc["patch_size"]) ** 2 + 1)  # patches + CLS
    body = train_flops_per_step(n_body, n_vision, tokens, image_tokens)
    # MFU counts the work each side does: HF projects all tokens onto the vocabulary, the
    # jitted step only the answer positions (answer_index)
    hf_flops = body + 6.0 * n_head * tokens
    jax_flops = body + 6.0 * n_head * jbatch["answer_index"].size
    peak = matmul_peak_flops()
    return {"batch": batch, "length": length, "params_M": model.num_params / 1e6,
            "compile_s": compile_s, "jax_s": jax_s, "hf_s": hf_s,
            "jax_tok_s": tokens / jax_s, "hf_tok_s": tokens / hf_s, "ratio": hf_s / jax_s,
            "peak_gflops": peak / 1e9, "jax_mfu": jax_flops / jax_s / peak,
            "hf_mfu": hf_flops / hf_s / peak, "torch_threads": torch.get_num_threads()}


def main() -> None:
    from jaxunlearn.host_memory import reuse_freed_host_memory

    reuse_freed_host_memory()  # both sides run with it (see host_memory.py)
    r = run()
    print(f"train step, ~{r['params_M']:.1f}M LLaVA, batch {r['batch']} x {r['length']} tokens, "
          f"torch threads {r['torch_threads']}, matmul peak {r['peak_gflops']:.1f} GFLOP/s")
    print(f"jax compile (first step): {r['compile_s']:.2f} s")
    print(f"{'impl':<6}{'s/step':>10}{'tokens/s':>12}{'MFU':>8}")
    print(f"{'jax':<6}{r['jax_s']:>10.3f}{r['jax_tok_s']:>12.1f}{r['jax_mfu']:>8.1%}")
    print(f"{'hf':<6}{r['hf_s']:>10.3f}{r['hf_tok_s']:>12.1f}{r['hf_mfu']:>8.1%}")
    print(f"ratio jax/hf: {r['ratio']:.2f}x")


if __name__ == "__main__":
    main()
