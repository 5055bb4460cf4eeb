"""GPU check in one call: bf16/fp32 parity, real-size speed and memory, JAX vs PyTorch.

    python scripts/gpu_check.py [--size real|toy] [--out gpu_check.json]
                                [--deadline 420] [--section-timeout 150]

One process prints one table and writes a JSON (rewritten atomically after every row, so a
run cut short still leaves what it measured):

1. parity: the four families (llava, llava_onevision, qwen2_vl, qwen2_5_vl) as tiny random
   configs built with transformers config classes, jaxunlearn vs transformers on the same
   device, fp32 and bf16: max |dlogits| over real tokens and greedy-token agreement.
2. speed (same run, same shapes, random bf16 weights drawn on each side, no download; the
   numbers are timings only, correctness is section 1's): the LLaVA-1.5-7B
   architecture (CLIP ViT-L/14-336, 2-layer projector, Llama-2-7B decoder, vocab 32064):
   (a) LoRA r=16 train step on the LLM linears, batch 8 x 1024 tokens with images, remat,
   vs HF + peft with the same LoRA and gradient checkpointing; (b) the vision-only (VKD
   subset: projector + upper half of the vision MLPs) train step; (c) the neuron statistics
   pass over 8 batches vs HF forward hooks on the MLP activations; (d) greedy generation,
   batch 8, 128 new tokens vs HF `generate`. Tokens/s, ratio, and MFU against the card's
   dense bf16 peak (known cards only).
3. memory: JAX `compiled.memory_analysis()` and the runtime peak, torch
   `max_memory_allocated`; whether the LoRA step (batch 4 x 1024) and the vision-only step
   fit 24 GB and 48 GB cards.

`--size toy` runs the same code paths at tiny sizes (CPU, batch 2 x 64; CI runs it).
The script needs jax, flax, optax, torch, transformers, peft, safetensors, pyyaml, tqdm and
numpy; it does not need grain, datasets, rouge-score or nltk (the test suite does).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# JAX takes memory as it goes (no 75% preallocation) so that torch fits beside it
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

NEEDED = ("numpy", "jax", "flax", "optax", "torch", "transformers", "peft", "safetensors",
          "yaml", "tqdm")
# wheels the GPU machine lacks: only the test suite / data pipeline need them, not this script
NOT_NEEDED = {"grain": "grain", "datasets": "datasets", "rouge_score": "rouge-score",
              "nltk": "nltk"}
JAXUNLEARN_MODULES = ("jaxunlearn", "jaxunlearn.host_memory", "jaxunlearn.modeling.model",
                      "jaxunlearn.train.step",
                      "jaxunlearn.train.state", "jaxunlearn.train.lora",
                      "jaxunlearn.stats.activations")

FAMILIES = ("llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl")
# dense bf16 tensor-core peaks (TFLOP/s), matched against the device name in this order
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
               ("4090", 165.0), ("A6000", 155.0), ("L40S", 362.0))
CARDS_GIB = {"24 GB": 24.0, "48 GB": 48.0}
HEADROOM = 0.92  # a card's CUDA context and allocator slack take the rest
GIB = 1024 ** 3
TARGETS = {"train_lora_ratio": 1.5, "stats_ratio": 2.0, "generate_ratio": 2.0,
           "lora_b4_peak_gib": 24.0}

SIZES = {
    "real": dict(train_batch=8, seq=1024, answer=128, mem_batch=4, stats_batches=8,
                 gen_batch=8, gen_prompt_text=64, gen_new=128, repeats=3),
    "toy": dict(train_batch=2, seq=64, answer=16, mem_batch=1, stats_batches=8,
                gen_batch=2, gen_prompt_text=12, gen_new=8, repeats=2),
}


# ----------------------------------------------------------------------------- start-up

def startup_check() -> str:
    """One line: versions of what the script needs; exits 2 naming the missing wheels."""
    missing, versions = [], {}
    for name in NEEDED:
        try:
            mod = importlib.import_module(name)
            versions[name] = getattr(mod, "__version__", "?")
        except ImportError:
            missing.append(name)
    if missing:
        print(f"error: missing Python modules {', '.join(missing)}: bring their wheels (see "
              f"README 'GPU check': pip download ... --python-version 3.12 --only-binary=:all:)",
              flush=True)
        sys.exit(2)
    before = set(sys.modules)
    for name in JAXUNLEARN_MODULES:
        try:
            importlib.import_module(name)
        except ImportError as e:
            print(f"error: importing {name} failed ({e}); if a wheel is missing, bring it "
                  "(README 'GPU check')", flush=True)
            sys.exit(2)
    pulled = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(NOT_NEEDED))
    absent = [wheel for mod, wheel in NOT_NEEDED.items() if not _importable(mod)]
    import jax
    import torch

    dev = jax.devices()[0]
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no cuda"
    return (f"start-up: python {platform.python_version()}, jax {versions['jax']} on "
            f"{dev.platform} ({dev.device_kind}), flax {versions['flax']}, optax "
            f"{versions['optax']}, torch {versions['torch']} ({cuda}), transformers "
            f"{versions['transformers']}, peft {versions['peft']}: ok; not needed here: "
            f"{', '.join(NOT_NEEDED.values())} (absent: {', '.join(absent) or 'none'}"
            f"{'; imported anyway by jaxunlearn: ' + ', '.join(pulled) if pulled else ''})")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ----------------------------------------------------------------------------- recording

class Recorder:
    """Rows in a fixed order; the JSON is rewritten atomically (tmp + rename) after each."""

    def __init__(self, out: Path, meta: dict, rows: list[tuple[str, str, str]]):
        self.out, self.meta = out, meta
        self.rows = {key: {"section": sec, "row": key, "label": label,
                           "status": "not run"} for sec, key, label in rows}
        self.lock = threading.RLock()
        self.targets: list[dict] = []
        self.finished = False

    def update(self, key: str, **values) -> None:
        with self.lock:
            self.rows[key].update(values)
            self.write()

    def write(self) -> None:
        with self.lock:
            data = {"meta": self.meta, "complete": self.finished,
                    "rows": list(self.rows.values()), "targets": self.targets}
            tmp = self.out.with_name(self.out.name + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, default=_jsonable))
            os.replace(tmp, self.out)


def _jsonable(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_box(seconds: float):
    """Raise SectionTimeout after `seconds` (checked whenever Python code runs)."""
    def handler(signum, frame):
        raise SectionTimeout(f"section timeout after {seconds:.0f} s")

    if seconds <= 0:
        raise SectionTimeout("no time left before the deadline")
    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ----------------------------------------------------------------------------- helpers

def torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def no_tf32() -> None:
    """fp32 matmuls and convolutions in full fp32 on the torch side (the fp32 parity rows;
    the speed rows are bf16)."""
    import torch

    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def perturb_norms(model, seed: int = 0) -> None:
    """HF initialises norms to ones / zeros: perturb them so parity sees their weights."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "layrnorm" in name or "ln_q" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g).to(p.dtype))


def peak_tflops(kind: str) -> float | None:
    for name, tf in PEAK_TFLOPS:
        if name.lower() in kind.lower():
            return tf
    return None


def jax_peak_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def fits(peak_gib: float | None) -> dict | None:
    if peak_gib is None or not math.isfinite(peak_gib):
        return None
    return {card: bool(peak_gib <= HEADROOM * cap) for card, cap in CARDS_GIB.items()}


# ----------------------------------------------------------------------------- tiny configs
# (copied from tests/hf_fixtures.py, tests/test_onevision_parity.py and
# tests/test_qwen_vl_parity.py: the script must not import from tests/)

IMG_LLAVA = 127
OV_IMG, OV_VID = 127, 126
OV_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56], [28, 84]]
# image (height, width) -> (crops, image tokens) for anyres_max_9, 28 px crops, patch 14:
# base crop 2x2 features, then the grid features with one newline per row
OV_IMAGES = {(28, 28): (2, 4 + 2 * (2 + 1)), (28, 56): (3, 4 + 2 * (4 + 1))}
Q_IMG, Q_VID, Q_VSTART, Q_VEND = 120, 121, 122, 123
Q_PATCH, Q_MERGE, Q_TPATCH = 4, 2, 2
Q_GRID_A, Q_GRID_B = (1, 8, 12), (1, 6, 4)


def tiny_llava_config(image_size: int = 28):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=4, image_size=image_size, patch_size=14,
                              projection_dim=16)
    text = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                       max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=5000.0,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
                       eos_token_id=2)
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                       image_token_index=IMG_LLAVA, vision_feature_layer=-2,
                       vision_feature_select_strategy="default", tie_word_embeddings=False,
                       image_seq_length=(image_size // 14) ** 2)


def tiny_onevision_config():
    from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, image_size=28, patch_size=14,
                                vision_use_head=False)
    text = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=128,
                       max_position_embeddings=512, rope_theta=5000.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                                image_token_index=OV_IMG, video_token_index=OV_VID,
                                vision_feature_layer=-1, vision_feature_select_strategy="full",
                                image_grid_pinpoints=OV_PINPOINTS,
                                vision_aspect_ratio="anyres_max_9", tie_word_embeddings=False)


def tiny_qwen_config(model_type: str):
    text = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [2, 3, 3]})
    common = dict(image_token_id=Q_IMG, video_token_id=Q_VID, vision_start_token_id=Q_VSTART,
                  vision_end_token_id=Q_VEND, tie_word_embeddings=False)
    if model_type == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2,
                      patch_size=Q_PATCH, spatial_merge_size=Q_MERGE,
                      temporal_patch_size=Q_TPATCH,
                      rope_parameters={"rope_type": "axial", "rope_theta": 1000.0})
        return Qwen2VLConfig(text_config=text, vision_config=vision, **common)
    from transformers import Qwen2_5_VLConfig

    # window attention in blocks 0 and 2, full attention in block 1
    vision = dict(depth=3, hidden_size=32, intermediate_size=48, num_heads=4,
                  out_hidden_size=64, patch_size=Q_PATCH, spatial_merge_size=Q_MERGE,
                  temporal_patch_size=Q_TPATCH, window_size=16, fullatt_block_indexes=[1])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **common)


def _left_pad(rows: list[list[int]], pads) -> tuple:
    import numpy as np

    length = max(len(r) + p for r, p in zip(rows, pads))
    ids = np.zeros((len(rows), length), np.int64)
    mask = np.zeros_like(ids)
    for b, row in enumerate(rows):
        ids[b, length - len(row):], mask[b, length - len(row):] = row, 1
    return ids, mask


def parity_inputs(family: str, config, seed: int = 0) -> tuple:
    """(input_ids, attention_mask, pixel_values, extra kwargs as numpy) for two left-padded
    rows with images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if family == "llava":
        n = config.image_seq_length
        rows = [[1, 5, *([IMG_LLAVA] * n), *rng.integers(3, 100, size=k)] for k in (12, 7)]
        ids, mask = _left_pad(rows, (0, 5))
        pix = rng.normal(size=(2, 3, 28, 28)).astype(np.float32)
        return ids, mask, pix, {}
    if family == "llava_onevision":
        sizes = list(OV_IMAGES)
        rows = [[1, 5, *([OV_IMG] * OV_IMAGES[s][1]), *rng.integers(3, 100, size=k)]
                for s, k in zip(sizes, (10, 6))]
        ids, mask = _left_pad(rows, (0, 4))
        crops = max(c for c, _ in OV_IMAGES.values())
        pix = np.zeros((2, crops, 3, 28, 28), np.float32)
        for i, s in enumerate(sizes):
            pix[i, :OV_IMAGES[s][0]] = rng.normal(size=(OV_IMAGES[s][0], 3, 28, 28))
        return ids, mask, pix, {"image_sizes": np.asarray(sizes, np.int64)}
    grids = [Q_GRID_A, Q_GRID_B]
    rows = []
    for g, k in zip(grids, (8, 5)):
        n = g[0] * g[1] * g[2] // Q_MERGE ** 2
        rows.append([1, Q_VSTART, *([Q_IMG] * n), Q_VEND, *rng.integers(3, 100, size=k)])
    ids, mask = _left_pad(rows, (0, 6))
    grid = np.asarray(grids, np.int64)
    n_patches = int(np.prod(grid, axis=1).sum())
    pix = rng.normal(size=(n_patches, 3 * Q_TPATCH * Q_PATCH * Q_PATCH)).astype(np.float32)
    return ids, mask, pix, {"image_grid_thw": grid}


def hf_parity_kwargs(family: str, hf, ids, mask, pix, extra, dtype) -> dict:
    import inspect

    import numpy as np
    import torch

    dev = torch_device()
    kw = {"input_ids": torch.tensor(ids, device=dev),
          "attention_mask": torch.tensor(mask, device=dev),
          "pixel_values": torch.tensor(pix, device=dev).to(dtype)}
    for k, v in extra.items():
        kw[k] = torch.tensor(v, device=dev)
    if family.startswith("qwen") and "mm_token_type_ids" in inspect.signature(
            type(hf).forward).parameters:
        kw["mm_token_type_ids"] = torch.tensor((ids == Q_IMG).astype(np.int64), device=dev)
    return kw


def build_tiny_hf(family: str, seed: int = 0):
    import torch
    from transformers import (
        AutoModelForImageTextToText, LlavaForConditionalGeneration,
        LlavaOnevisionForConditionalGeneration,
    )

    torch.manual_seed(seed)
    if family == "llava":
        model = LlavaForConditionalGeneration(tiny_llava_config())
    elif family == "llava_onevision":
        model = LlavaOnevisionForConditionalGeneration(tiny_onevision_config())
    else:
        model = AutoModelForImageTextToText.from_config(tiny_qwen_config(family))
    model = model.eval()
    perturb_norms(model, seed)
    return model


# ----------------------------------------------------------------------------- 1. parity

def parity_rows() -> list[tuple[str, str, str]]:
    return [("parity", f"parity/{f}/{d}", f"parity {f} {d}")
            for f in FAMILIES for d in ("fp32", "bf16")]


def run_parity(rec: Recorder, family: str, tmp: Path, new_tokens: int = 8) -> None:
    """fp32 and bf16 rows of one family: both sides load the same saved checkpoint."""
    import jax
    import numpy as np
    import torch

    import jaxunlearn as ju

    hf = build_tiny_hf(family)
    path = tmp / family
    hf.save_pretrained(path)
    ids, mask, pix, extra = parity_inputs(family, hf.config)
    gen_ids, gen_mask, gen_pix, gen_extra = parity_inputs(family, hf.config, seed=1)
    dev = torch_device()
    for dname, tdtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        key = f"parity/{family}/{dname}"
        t0 = time.perf_counter()
        try:
            rec.update(key, status="running")
            model = ju.load_pretrained(path, dtype="float32" if dname == "fp32" else "bfloat16")
            # fp32 parity means fp32 matmuls: no TF32 on either side
            prec = getattr(jax, "default_matmul_precision", None)
            with (prec("highest") if prec is not None and dname == "fp32"
                  else contextlib.nullcontext()):
                ours = np.asarray(model.logits(ids, mask, pix, **extra), np.float32)
                ours_gen = ju.generate(model, gen_ids, gen_mask, gen_pix,
                                       max_new_tokens=new_tokens, eos_token_id=2,
                                       pad_token_id=0, **gen_extra)
            ref_model = hf.to(device=dev, dtype=tdtype)
            with torch.no_grad():
                kw = hf_parity_kwargs(family, ref_model, ids, mask, pix, extra, tdtype)
                if family in ("llava", "llava_onevision"):  # positions of left-padded rows
                    pos = np.where(mask == 1, np.cumsum(mask, -1) - 1, 0)
                    kw["position_ids"] = torch.tensor(pos, device=dev)
                ref = ref_model(**kw).logits.float().cpu().numpy()
                gkw = hf_parity_kwargs(family, ref_model, gen_ids, gen_mask, gen_pix,
                                       gen_extra, tdtype)
                ref_gen = ref_model.generate(**gkw, max_new_tokens=new_tokens,
                                             do_sample=False, eos_token_id=2, pad_token_id=0)
            ref_gen = ref_gen[:, gen_ids.shape[1]:].cpu().numpy()
            err = float(np.abs(ours - ref)[mask.astype(bool)].max())
            n = min(ours_gen.shape[1], ref_gen.shape[1])
            agree = float((ours_gen[:, :n] == ref_gen[:, :n]).mean()) if n else 0.0
            equal = bool(ours_gen.shape == ref_gen.shape and (ours_gen == ref_gen).all())
            rec.update(key, status="ok", max_abs_dlogits=err, greedy_agreement=agree,
                       greedy_equal=equal, greedy_tokens=int(ref_gen.size),
                       logits_scale=float(np.abs(ref[mask.astype(bool)]).max()),
                       seconds=time.perf_counter() - t0)
        except SectionTimeout:
            raise
        except Exception as e:  # noqa: BLE001 - a failing row must not stop the check
            rec.update(key, status=f"error: {type(e).__name__}: {str(e)[:300]}")
    hf.to("cpu")


# ----------------------------------------------------------------------------- 2. real size

def llava_7b_config_dict(size: str) -> dict:
    """LLaVA-1.5-7B (CLIP ViT-L/14-336, 2-layer GELU projector, Llama-2-7B, vocab 32064);
    `toy`: the same structure at tiny widths."""
    if size == "real":
        vision = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768,
                      hidden_act="quick_gelu", layer_norm_eps=1e-5)
        text = dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                    max_position_embeddings=4096, rms_norm_eps=1e-5)
        image_token = 32000
    else:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, image_size=28, patch_size=14, projection_dim=16,
                      hidden_act="quick_gelu", layer_norm_eps=1e-5)
        text = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                    rms_norm_eps=1e-5)
        image_token = 250
    n_img = (vision["image_size"] // vision["patch_size"]) ** 2
    text.update(model_type="llama", hidden_act="silu", bos_token_id=1, eos_token_id=2,
                pad_token_id=0, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    vision.update(model_type="clip_vision_model")
    return {"model_type": "llava", "image_token_index": image_token, "pad_token_id": 0,
            "image_seq_length": n_img, "projector_hidden_act": "gelu",
            "vision_feature_layer": -2, "vision_feature_select_strategy": "default",
            "multimodal_projector_bias": True, "tie_word_embeddings": False,
            "vision_config": vision, "text_config": text}


class Bench:
    """The JAX and HF models of one size, and the batches and FLOP counts of the rows."""

    def __init__(self, size: str):
        self.size, self.s = size, SIZES[size]
        self.cfg = llava_7b_config_dict(size)
        self.jax_model = None
        self.hf = None

    # -- models
    def build_jax(self):
        """Random bf16 parameters made inside one jit (no fp32 copy of the weights)."""
        import jax
        import jax.numpy as jnp

        import jaxunlearn as ju

        box = {}

        def build():
            m = ju.model_from_config(self.cfg, seed=0, dtype="bfloat16")
            box["model"] = m
            return m.params

        params = jax.block_until_ready(jax.jit(build)())
        self.jax_model = box["model"].replace(params=params, compute_dtype=jnp.bfloat16)
        return self.jax_model

    def build_hf(self):
        import torch
        from transformers import LlavaConfig, LlavaForConditionalGeneration

        torch.manual_seed(0)
        with torch.device(torch_device()):
            hf = LlavaForConditionalGeneration._from_config(LlavaConfig(**self.cfg),
                                                            dtype=torch.bfloat16)
        self.hf = hf.to(torch_device()).eval()  # a no-op unless the device context was ignored
        return self.hf

    # -- shapes
    @property
    def n_img(self) -> int:
        return self.cfg["image_seq_length"]

    def batch(self, batch: int, seq: int, seed: int = 0) -> dict:
        import numpy as np

        rng = np.random.default_rng(seed)
        text = self.cfg["text_config"]
        ids = rng.integers(3, self.cfg["image_token_index"] - 1, size=(batch, seq))
        ids[:, 0] = 1
        ids[:, 1:1 + self.n_img] = self.cfg["image_token_index"]
        assert self.n_img + 2 < seq <= text["max_position_embeddings"]
        loss_mask = np.zeros((batch, seq), np.float32)
        loss_mask[:, seq - self.s["answer"]:] = 1.0
        answer_index = np.tile(np.arange(seq - self.s["answer"] - 1, seq - 1, dtype=np.int32),
                               (batch, 1))
        size = self.cfg["vision_config"]["image_size"]
        return {"input_ids": ids.astype(np.int32), "attention_mask": np.ones((batch, seq),
                                                                             np.int32),
                "loss_mask": loss_mask, "answer_index": answer_index,
                "example_mask": np.ones(batch, np.int32),
                "pixel_values": rng.normal(size=(batch, 3, size, size)).astype(np.float32)}

    # -- FLOPs (model FLOPs; remat's recomputation is not counted)
    def counts(self) -> dict:
        import numpy as np

        p = self.jax_model.params
        size = {k: int(np.prod(v.shape)) for k, v in p.items()}
        head = size.get("lm_head.kernel", 0)
        body = sum(v for k, v in size.items() if k.startswith("language_model.")
                   and "embed_tokens" not in k)
        vis = sum(v for k, v in size.items()
                  if k.startswith(("vision_tower.", "multi_modal_projector.")))
        return {"head": head, "body": body, "vision": vis}

    def fwd_flops(self, batch: int, seq: int) -> tuple[float, float]:
        """(decoder body forward, vision tower + projector forward) FLOPs."""
        c, t, v = self.counts(), self.cfg["text_config"], self.cfg["vision_config"]
        pv = self.n_img + 1  # patches + CLS
        llm = batch * seq * (2 * c["body"] + 4 * t["num_hidden_layers"] * t["hidden_size"] * seq)
        vis = batch * pv * (2 * c["vision"]
                            + 4 * v["num_hidden_layers"] * v["hidden_size"] * pv)
        return float(llm), float(vis)


# -- JAX pieces

def jax_loss(graphdef, lora_cfg=None, remat: bool = True):
    """Mean answer NLL with the output head on the answer positions only."""
    import jax
    import jax.numpy as jnp

    from jaxunlearn.modeling.model import forward_hidden
    from jaxunlearn.train import lora as lora_lib

    def loss(trainable, frozen, batch):
        params = (lora_lib.merge(frozen, trainable, lora_cfg) if lora_cfg is not None
                  else {**frozen, **trainable})
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        hidden, module = forward_hidden(graphdef, params, inputs, dtype=jnp.bfloat16,
                                        remat=remat)
        idx = batch["answer_index"]
        states = jnp.take_along_axis(hidden, idx[..., None], axis=1)
        targets = jnp.take_along_axis(batch["input_ids"], idx + 1, axis=1)
        logits = module.lm_logits(states).astype(jnp.float32)
        lp = jax.nn.log_softmax(logits, -1)
        nll = -jnp.take_along_axis(lp, targets[..., None], -1).mean()
        return nll, {"weight": jnp.float32(idx.size)}

    return loss


VISION_SUBSET = re.compile(r"^(?:multi_modal_projector\.|vision_tower\.encoder\.layers\.(\d+)"
                           r"\.mlp\.)")
HF_VISION_SUBSET = re.compile(r"(?:multi_modal_projector\.|vision_tower\..*encoder\.layers\."
                              r"(\d+)\.mlp\.)")


def vkd_trainable(name: str, pattern, n_layers: int) -> bool:
    """VKD subset: the projector and the vision MLPs of the upper half of the layers."""
    m = pattern.search(name)
    return bool(m) and (m.group(1) is None or int(m.group(1)) >= n_layers // 2)


def jax_train_row(bench: Bench, mode: str, batch: int, seq: int, repeats: int) -> dict:
    """Compile (AOT, with memory analysis) and time one train step; mode lora | vision."""
    import jax

    from jaxunlearn.train import lora as lora_lib
    from jaxunlearn.train.state import init_state, make_optimizer
    from jaxunlearn.train.step import make_train_step

    model = bench.jax_model
    opt = make_optimizer(1e-5, schedule="constant")
    if mode == "lora":
        lcfg = lora_lib.LoraConfig(rank=16, alpha=32.0)
        trainable = lora_lib.init_lora(model.params, lcfg)
        frozen = model.params
    else:
        lcfg = None
        n = bench.cfg["vision_config"]["num_hidden_layers"]
        keys = [k for k in model.params if vkd_trainable(k, VISION_SUBSET, n)]
        trainable = {k: model.params[k] for k in keys}
        frozen = {k: v for k, v in model.params.items() if k not in trainable}
    n_trainable = int(sum(v.size for v in trainable.values()))
    state = init_state(trainable, opt)
    step = make_train_step(jax_loss(model.graphdef, lcfg), opt, clip_norm=1.0)
    data = jax.device_put(bench.batch(batch, seq))
    t0 = time.perf_counter()
    compiled = step.lower(state, frozen, data).compile()
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    get = (lambda name: float(getattr(mem, name, 0) or 0) / GIB) if mem is not None else None
    analysis = None
    if get is not None:
        analysis = get("argument_size_in_bytes") + get("temp_size_in_bytes") + max(
            get("output_size_in_bytes") - get("alias_size_in_bytes"), 0.0)
    peak_before = jax_peak_bytes()

    holder = {"state": state}

    def one():
        holder["state"], metrics = compiled(holder["state"], frozen, data)
        jax.block_until_ready(metrics)
        return metrics

    metrics = one()
    seconds = best_time(one, repeats)
    peak_after = jax_peak_bytes()
    loss = float(metrics["loss"])
    holder.clear()  # free the donated state before the next row
    return {"jax_s": seconds, "jax_compile_s": compile_s, "jax_compiled_peak_gib": analysis,
            "jax_runtime_peak_gib": None if peak_after is None else peak_after / GIB,
            # the runtime peak is the process's: exact for this row only if this row raised it
            "jax_runtime_peak_exact": bool(peak_after is not None
                                           and (peak_before is None or peak_after > peak_before)),
            "jax_trainable": n_trainable, "jax_loss": loss}


# -- HF pieces

def hf_train_row(bench: Bench, mode: str, batch: int, seq: int, repeats: int) -> dict:
    import numpy as np
    import torch

    hf = bench.hf
    dev = torch_device()
    data = bench.batch(batch, seq)
    labels = np.where(data["loss_mask"] > 0, data["input_ids"], -100)
    tin = {"input_ids": torch.tensor(data["input_ids"], device=dev).long(),
           "attention_mask": torch.tensor(data["attention_mask"], device=dev).long(),
           "pixel_values": torch.tensor(data["pixel_values"], device=dev).to(torch.bfloat16),
           "labels": torch.tensor(labels, device=dev).long()}
    ckpt = {"use_reentrant": False}  # gradient checkpointing of every decoder layer
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.2x
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt)
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt)
    hf.train()
    peft_model = None
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        targets = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        peft_model = get_peft_model(hf, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                   target_modules=targets, bias="none"))
        runner = peft_model
    else:
        n = bench.cfg["vision_config"]["num_hidden_layers"]
        for name, p in hf.named_parameters():
            p.requires_grad_(vkd_trainable(name, HF_VISION_SUBSET, n))
        runner = hf
    params = [p for p in runner.parameters() if p.requires_grad]
    n_trainable = int(sum(p.numel() for p in params))
    topt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.0)

    def one():
        topt.zero_grad(set_to_none=True)
        loss = runner(**tin).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        topt.step()
        sync()
        return loss

    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        loss = float(one().detach())
        seconds = best_time(one, repeats)
        peak = torch.cuda.max_memory_allocated() / GIB if torch.cuda.is_available() else None
    finally:
        if peft_model is not None:
            bench.hf = peft_model.unload()
        for p in bench.hf.parameters():
            p.requires_grad_(True)
            p.grad = None
        disable = (getattr(bench.hf, "activation_checkpointing_disable", None)
                   or bench.hf.gradient_checkpointing_disable)
        disable()
        bench.hf.eval()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {"hf_s": seconds, "hf_peak_gib": peak, "hf_trainable": n_trainable, "hf_loss": loss}


def hf_stats(hf, batches, tau: float = 0.01) -> dict:
    """The neuron sums jaxunlearn computes (post site, scope all) from forward pre-hooks on
    the MLP down projections (decoder down_proj, vision fc2)."""
    import numpy as np
    import torch

    dev = torch_device()
    acc: dict = {}
    state: dict = {}

    def hook(key):
        def fn(_mod, inp):
            z = inp[0].float()
            if key[0] == "language":
                w = state["lang"]
            else:
                w = state["ex"][:, None].expand(-1, z.shape[1])
            w = w.reshape(*z.shape[:-1], 1).to(z.dtype)
            flat = lambda x: x.flatten(0, -2).sum(0)  # noqa: E731
            vals = {"n": w.sum(), "S1": flat(w * z.abs()), "Sz": flat(w * z),
                    "S2": flat(w * z * z), "F": flat(w * (z.abs() > tau)),
                    "P": flat(w * (z > 0))}
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
    try:
        with torch.no_grad():
            for b in batches:
                mask = torch.tensor(b["attention_mask"], device=dev).long()
                ex = torch.tensor(b["example_mask"], device=dev)
                state["lang"], state["ex"] = mask * ex[:, None], ex
                pos = torch.clamp(mask.cumsum(-1) - 1, min=0)
                hf(input_ids=torch.tensor(b["input_ids"], device=dev).long(), attention_mask=mask,
                   pixel_values=torch.tensor(b["pixel_values"], device=dev).to(torch.bfloat16),
                   position_ids=pos, logits_to_keep=1)
        sync()
    finally:
        for h in hooks:
            h.remove()
    return {k: {s: np.asarray(v.cpu() if hasattr(v, "cpu") else v) for s, v in d.items()}
            for k, d in acc.items()}


def gen_inputs(bench: Bench) -> tuple:
    import numpy as np

    s = bench.s
    rng = np.random.default_rng(3)
    length = 1 + bench.n_img + s["gen_prompt_text"]
    ids = rng.integers(3, bench.cfg["image_token_index"] - 1, size=(s["gen_batch"], length))
    ids[:, 0] = 1
    ids[:, 1:1 + bench.n_img] = bench.cfg["image_token_index"]
    mask = np.ones_like(ids)
    size = bench.cfg["vision_config"]["image_size"]
    pix = rng.normal(size=(s["gen_batch"], 3, size, size)).astype(np.float32)
    return ids, mask, pix


# ----------------------------------------------------------------------------- rows

def speed_rows(size: str) -> list[tuple[str, str, str]]:
    s = SIZES[size]
    tb = f"{s['train_batch']}x{s['seq']}"
    return [
        ("speed", "speed/train_lora", f"train LoRA r16 LLM linears {tb} (tok/s)"),
        ("speed", "speed/train_vision", f"train vision-only VKD subset {tb} (tok/s)"),
        ("speed", "speed/stats", f"neuron stats {s['stats_batches']} x {tb} (tok/s)"),
        ("speed", "speed/generate", f"greedy generate b{s['gen_batch']} {s['gen_new']} new "
                                    "(new tok/s)"),
    ]


def memory_rows(size: str) -> list[tuple[str, str, str]]:
    s = SIZES[size]
    return [("memory", "memory/lora", f"LoRA step {s['mem_batch']}x{s['seq']} peak"),
            ("memory", "memory/vision", f"vision-only step {s['train_batch']}x{s['seq']} peak")]


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    return None if peak is None or not seconds else flops / seconds / (peak * 1e12)


def run_train(rec: Recorder, bench: Bench, key: str, mode: str, batch: int,
              peak: float | None) -> None:
    s = bench.s
    rec.update(key, status="running", batch=batch, seq=s["seq"])
    out = jax_train_row(bench, mode, batch, s["seq"], s["repeats"])
    rec.update(key, **out)
    out.update(hf_train_row(bench, mode, batch, s["seq"], s["repeats"]))
    tokens = batch * s["seq"]
    llm, vis = bench.fwd_flops(batch, s["seq"])
    head = bench.counts()["head"]
    # backward: activation gradients through the decoder (2x forward with the forward);
    # the vision tower is only differentiated in vision mode (about one forward's worth)
    base = 2 * llm + (2 if mode == "vision" else 1) * vis
    jax_flops = base + 6 * head * batch * s["answer"]  # head on the answer positions only
    hf_flops = base + 6 * head * tokens  # HF projects every position
    out.update(status="ok", tokens=tokens, jax_tok_s=tokens / out["jax_s"],
               hf_tok_s=tokens / out["hf_s"], ratio=out["hf_s"] / out["jax_s"],
               jax_mfu=mfu(jax_flops, out["jax_s"], peak),
               hf_mfu=mfu(hf_flops, out["hf_s"], peak))
    rec.update(key, **out)


def run_stats(rec: Recorder, bench: Bench, peak: float | None) -> None:
    import numpy as np

    from jaxunlearn.stats.activations import neuron_stats

    key, s = "speed/stats", bench.s
    b, t = s["train_batch"], s["seq"]
    rec.update(key, status="running", batch=b, seq=t, batches=s["stats_batches"])
    batches = [bench.batch(b, t, seed=i) for i in range(s["stats_batches"])]
    for x in batches:
        x.pop("answer_index")
    t0 = time.perf_counter()
    neuron_stats(bench.jax_model, batches[:1], progress=False)  # compile
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = neuron_stats(bench.jax_model, batches, progress=False)
    n_layers = len(ours["language"]["S1"])
    jax_s = time.perf_counter() - t0
    rec.update(key, jax_s=jax_s, jax_compile_s=compile_s)
    hf_stats(bench.hf, batches[:1])  # warm-up
    t0 = time.perf_counter()
    ref = hf_stats(bench.hf, batches)
    hf_layers = sum(1 for g, _ in ref if g == "language")
    hf_s = time.perf_counter() - t0
    finite = all(np.isfinite(v).all() for d in ours.values() for v in d.values())
    tokens = len(batches) * b * t
    llm, vis = bench.fwd_flops(b, t)
    flops = len(batches) * (llm + vis)
    rec.update(key, status="ok", hf_s=hf_s, tokens=tokens, jax_tok_s=tokens / jax_s,
               hf_tok_s=tokens / hf_s, ratio=hf_s / jax_s, jax_mfu=mfu(flops, jax_s, peak),
               hf_mfu=mfu(flops, hf_s, peak), stats_finite=bool(finite),
               layers_jax=n_layers, layers_hf=hf_layers)


def run_generate(rec: Recorder, bench: Bench) -> None:
    import torch

    import jaxunlearn as ju

    key, s = "speed/generate", bench.s
    ids, mask, pix = gen_inputs(bench)
    new = s["gen_new"]
    rec.update(key, status="running", batch=ids.shape[0], prompt=ids.shape[1], new=new)
    model = bench.jax_model

    def ours():
        return ju.generate(model, ids, mask, pix, max_new_tokens=new, eos_token_id=[],
                           pad_token_id=0)

    t0 = time.perf_counter()
    first = ours()
    compile_s = time.perf_counter() - t0
    jax_s = best_time(ours, s["repeats"])
    rec.update(key, jax_s=jax_s, jax_compile_s=compile_s)
    dev = torch_device()
    tin = {"input_ids": torch.tensor(ids, device=dev), "attention_mask": torch.tensor(
        mask, device=dev), "pixel_values": torch.tensor(pix, device=dev).to(torch.bfloat16)}
    out = {}

    def theirs():
        with torch.no_grad():
            out["ref"] = bench.hf.generate(**tin, max_new_tokens=new, min_new_tokens=new,
                                           do_sample=False, pad_token_id=0)
        sync()

    theirs()
    hf_s = best_time(theirs, s["repeats"])
    ref = out["ref"][:, ids.shape[1]:].cpu().numpy()
    tokens = ids.shape[0] * new
    rec.update(key, status="ok", hf_s=hf_s, tokens=tokens, jax_tok_s=tokens / jax_s,
               hf_tok_s=tokens / hf_s, ratio=hf_s / jax_s, jax_mfu=None, hf_mfu=None,
               new_tokens_jax=int(first.shape[1]), new_tokens_hf=int(ref.shape[1]))


# ----------------------------------------------------------------------------- table

def _f(x, fmt: str) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def format_table(rec: Recorder) -> str:
    m = rec.meta
    lines = [f"device: {m['device']} | jax {m['jax']} ({m['backend']}) | torch {m['torch']} "
             f"| transformers {m['transformers']} | size {m['size']} | {m['mfu_note']}",
             "| row | jax | hf | ratio | MFU jax / hf | peak GiB jax / hf | note |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rec.rows.values():
        note, jax_v, hf_v, ratio, mfu_v, peak_v = "", "-", "-", "-", "-", "-"
        st = r["status"]
        if st != "ok":
            note = st
        elif r["section"] == "parity":
            note = (f"max|dlogits| {r['max_abs_dlogits']:.2e} (logits up to "
                    f"{r['logits_scale']:.1f}); greedy {r['greedy_agreement']:.3f} of "
                    f"{r['greedy_tokens']} tokens{' (equal)' if r['greedy_equal'] else ''}")
        elif r["section"] == "speed":
            jax_v, hf_v = _f(r["jax_tok_s"], ".1f"), _f(r["hf_tok_s"], ".1f")
            ratio = _f(r["ratio"], ".2f") + "x"
            if r.get("jax_mfu") is not None:
                mfu_v = f"{r['jax_mfu']:.1%} / {r['hf_mfu']:.1%}"
            if "jax_compiled_peak_gib" in r:
                jp = r.get("jax_runtime_peak_gib")
                # a runtime peak this row did not raise is only an upper bound
                bound = "" if jp is None or r.get("jax_runtime_peak_exact") else "<="
                peak_v = (f"{bound}{_gib(jp if jp is not None else r['jax_compiled_peak_gib'])}"
                          f" / {_gib(r.get('hf_peak_gib'))}")
                note = (f"jax compile {r['jax_compile_s']:.1f} s, compiled peak "
                        f"{_gib(r['jax_compiled_peak_gib'])} GiB; trainable "
                        f"{r['jax_trainable'] / 1e6:.2f}M / {r['hf_trainable'] / 1e6:.2f}M")
            elif "stats_finite" in r:
                note = (f"jax compile {r['jax_compile_s']:.1f} s; decoder layers "
                        f"{r['layers_jax']} / {r['layers_hf']}")
            else:
                note = (f"jax compile {r['jax_compile_s']:.1f} s; prompt {r['prompt']}; "
                        f"new tokens {r['new_tokens_jax']} / {r['new_tokens_hf']}")
        else:
            jp, hp = r.get("jax_peak_gib"), r.get("hf_peak_gib")
            peak_v = f"{_gib(jp)} / {_gib(hp)}"
            fj, fh = r.get("jax_fits") or {}, r.get("hf_fits") or {}
            note = "; ".join(
                f"fits {c}: jax {_yn(fj.get(c))} / hf {_yn(fh.get(c))}" for c in CARDS_GIB)
            note += f" ({r.get('source', '')})"
        lines.append(f"| {r['label']} | {jax_v} | {hf_v} | {ratio} | {mfu_v} | {peak_v} | "
                     f"{note} |")
    if rec.targets:
        lines.append("targets:")
        for t in rec.targets:
            lines.append(f"  {t['target']}: {t['result']}")
    return "\n".join(lines)


def _gib(x) -> str:
    """GiB with two decimals, or three significant digits below 0.1 GiB (toy sizes)."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.3g}"


def _yn(x) -> str:
    return "-" if x is None else ("yes" if x else "no")


# ----------------------------------------------------------------------------- main

def memory_row(rec: Recorder, key: str, jax_row: dict, hf_row: dict, source: str) -> None:
    jp = jax_row.get("jax_runtime_peak_gib") if jax_row.get("jax_runtime_peak_exact") else None
    source += "; jax: runtime peak" if jp is not None else "; jax: compiled memory analysis"
    jp = jp if jp is not None else jax_row.get("jax_compiled_peak_gib")
    hp = hf_row.get("hf_peak_gib")
    rec.update(key, status="ok" if jp is not None or hp is not None else "n/a",
               jax_peak_gib=jp, hf_peak_gib=hp,
               jax_compiled_peak_gib=jax_row.get("jax_compiled_peak_gib"),
               jax_runtime_peak_gib=jax_row.get("jax_runtime_peak_gib"),
               jax_fits=fits(jp), hf_fits=fits(hp), source=source)


def evaluate_targets(rec: Recorder, on_gpu: bool) -> None:
    rows = rec.rows

    def check(name: str, value, ok) -> None:
        if not on_gpu:
            result = "n/a (not on a GPU)"
        elif value is None:
            result = "not measured"
        else:
            result = f"{'PASS' if ok(value) else 'FAIL'} ({value})"
        rec.targets.append({"target": name, "value": value, "result": result})

    r = lambda k, f: rows[k].get(f) if rows[k]["status"] == "ok" else None  # noqa: E731
    fmt = lambda v, s: None if v is None else format(v, s)  # noqa: E731
    lora = r("speed/train_lora", "ratio")
    check(f"LoRA 7B train step >= {TARGETS['train_lora_ratio']}x HF + peft tok/s",
          fmt(lora, ".2f"), lambda v: float(v) >= TARGETS["train_lora_ratio"])
    mem = r("memory/lora", "jax_peak_gib")
    check(f"LoRA 7B step fits a {TARGETS['lora_b4_peak_gib']:.0f} GB card at batch "
          f"{SIZES['real']['mem_batch']} x {SIZES['real']['seq']} (jax peak <= "
          f"{TARGETS['lora_b4_peak_gib'] * HEADROOM:.1f} GiB)",
          fmt(mem, ".2f"), lambda v: float(v) <= TARGETS["lora_b4_peak_gib"] * HEADROOM)
    st = r("speed/stats", "ratio")
    check(f"statistics pass >= {TARGETS['stats_ratio']}x HF hooks", fmt(st, ".2f"),
          lambda v: float(v) >= TARGETS["stats_ratio"])
    gen = r("speed/generate", "ratio")
    check(f"generation >= {TARGETS['generate_ratio']}x HF generate", fmt(gen, ".2f"),
          lambda v: float(v) >= TARGETS["generate_ratio"])
    errs = {f: r(f"parity/{f}/bf16", "max_abs_dlogits") for f in FAMILIES}
    rec.targets.append({"target": "bf16 parity max |dlogits| per family", "value": errs,
                        "result": ", ".join(f"{f} {_f(v, '.2e')}" for f, v in errs.items())})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="real")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--deadline", type=float, default=420.0,
                    help="total seconds; the JSON holds what was measured by then")
    ap.add_argument("--section-timeout", type=float, default=150.0,
                    help="seconds per section (parity, model building, each speed/memory row)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    line = startup_check()
    print(line, flush=True)

    import jax
    import torch
    import transformers

    from jaxunlearn.host_memory import reuse_freed_host_memory

    reuse_freed_host_memory()
    no_tf32()
    dev = jax.devices()[0]
    on_gpu = dev.platform == "gpu"
    peak = peak_tflops(dev.device_kind) if on_gpu else None
    meta = {"device": dev.device_kind, "backend": dev.platform, "jax": jax.__version__,
            "torch": torch.__version__, "transformers": transformers.__version__,
            "size": args.size, "startup": line, "peak_bf16_tflops": peak,
            "mfu_note": ("MFU against the card's dense bf16 peak" if peak else
                         "MFU omitted: unknown card or not a GPU"),
            "argv": sys.argv[1:], "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                               time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = Recorder(out, meta, parity_rows() + speed_rows(args.size) + memory_rows(args.size))
    rec.write()

    def left() -> float:
        return args.deadline - (time.perf_counter() - start)

    def on_deadline():  # a compile or kernel the alarm cannot interrupt: stop the process
        with rec.lock:
            for r in rec.rows.values():
                if r["status"] in ("not run", "running"):
                    r["status"] = "not reached: total deadline"
            rec.meta["seconds"] = time.perf_counter() - start
            rec.write()
            print(format_table(rec), flush=True)
            print(f"deadline of {args.deadline:.0f} s reached; wrote {out}", flush=True)
        os._exit(3)

    watchdog = threading.Timer(max(left(), 0) + 15.0, on_deadline)
    watchdog.daemon = True
    watchdog.start()

    def skip_rest(keys, why: str) -> None:
        for k in keys:
            if rec.rows[k]["status"] in ("not run", "running"):
                rec.update(k, status=why)

    # 1. parity
    with tempfile.TemporaryDirectory() as tmp:
        try:
            with time_box(min(args.section_timeout, left())):
                for fam in FAMILIES:
                    run_parity(rec, fam, Path(tmp))
        except SectionTimeout as e:
            skip_rest([k for _, k, _ in parity_rows()], f"skipped: {e}")

    # 2. + 3. speed and memory on the LLaVA-1.5-7B architecture; each row is its own
    # time-boxed section, in the order of what matters most if time runs out
    bench = Bench(args.size)
    s = bench.s
    speed_keys = [k for _, k, _ in speed_rows(args.size)]
    mem_keys = [k for _, k, _ in memory_rows(args.size)]
    try:
        with time_box(min(args.section_timeout, left())):
            bench.build_jax()
            bench.build_hf()
    except Exception as e:  # noqa: BLE001 - SectionTimeout, or the 7B models do not fit
        skip_rest(speed_keys + mem_keys, f"skipped: building the models failed: "
                                         f"{type(e).__name__}: {str(e)[:300]}")
        bench = None

    def lora_memory():  # first: its JAX runtime peak is then this step's own
        rec.update("memory/lora", status="running")
        row = jax_train_row(bench, "lora", s["mem_batch"], s["seq"], 1)
        row.update(hf_train_row(bench, "lora", s["mem_batch"], s["seq"], 1))
        memory_row(rec, "memory/lora", row, row, f"measured at {s['mem_batch']}x{s['seq']}")

    def vision_memory():
        row = rec.rows["speed/train_vision"]
        if row["status"] != "ok":
            raise RuntimeError("the vision-only speed row did not run")
        memory_row(rec, "memory/vision", row, row,
                   f"from the {s['train_batch']}x{s['seq']} speed row")

    sections = (
        ("memory/lora", lora_memory),
        ("speed/train_lora", lambda: run_train(rec, bench, "speed/train_lora", "lora",
                                               s["train_batch"], peak)),
        ("speed/stats", lambda: run_stats(rec, bench, peak)),
        ("speed/generate", lambda: run_generate(rec, bench)),
        ("speed/train_vision", lambda: run_train(rec, bench, "speed/train_vision", "vision",
                                                 s["train_batch"], peak)),
        ("memory/vision", vision_memory),
    )
    for key, fn in sections if bench is not None else ():
        try:
            with time_box(min(args.section_timeout, left())):
                fn()
        except SectionTimeout as e:
            rec.update(key, status=f"skipped: {e}")
        except Exception as e:  # noqa: BLE001 - a failing row must not stop the check
            rec.update(key, status=f"error: {type(e).__name__}: {str(e)[:300]}")
        finally:
            import gc

            gc.collect()

    watchdog.cancel()
    evaluate_targets(rec, on_gpu)
    rec.finished = True
    rec.meta["seconds"] = time.perf_counter() - start
    rec.write()
    print(format_table(rec), flush=True)
    print(f"wrote {out} in {rec.meta['seconds']:.1f} s", flush=True)
    return 0 if all(r["status"] == "ok" for r in rec.rows.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
