"""MANU `formulation: official` against the published pipeline of franciscoliu/MANU.

The reference below is written from a reading of the published code (facts in
docs/sources/method-reproductions.md, MANU) and runs on the *transformers* model with torch
forward hooks, in NumPy:

- `prune/activation_collect.py::ActivationCollector.register_hook`: the hook stores each
  module's OUTPUT; `get_activations` concatenates along dim 0.
- `prune/prune_utility.py::register_feedforward_hooks` ("Llava"): every vision layer's
  `mlp.fc1` / `mlp.fc2` is hooked under each of the fixed keys `vision_fc{1,2}_{21,22,23}`,
  every language layer's `gate_proj` / `up_proj` / `down_proj` under
  `lang_{gate,up,down}_proj_{29,30,31}` (the last three layers of LLaVA-1.5-7B; here the last
  three layers of each tower).
- `prune_utility.py::collect_feedforward_activations`: per batch, activations clamped to
  [-1e3, 1e3]; `abs().mean(0)`, `(abs() > 0.1).mean(0)`, `std(0)`, `sqrt((a**2).mean(0))`
  over layers x batch at each position; chunks of 10 batches: `torch.cat(scores).mean(0)`;
  the mean of the chunk means. Multimodal batches run the whole model, unimodal (text) batches
  `model.language_model` only.
- `prune/prune_incremental.py::iterative_pruning`: vision keys from the multimodal loaders,
  language keys from the unimodal ones; retain statistics over as many batches as the forget
  loader has (`num_batches=total_batches_forget_*`); `batch_size` 4.
- `prune_utility.py::compute_combined_scores_incremental`: weights {I_abs 2, I_freq 0, I_var 2,
  I_rms 2}, `w * (forget / (retain + 1e-5) - 1)` summed over the metrics.
- `prune_utility.py::compute_top_k_pruning_mask`: all keys of a tower concatenated,
  `k = int(top_k_percent / 100 * numel)`, threshold = k-th largest, mask = `scores >= threshold`.
- `prune_utility.py::apply_structural_pruning` / `apply_mask_to_layer`: for each layer whose
  index names a key, the Linear's weight rows and bias entries where its mask is 1 are zeroed.

The batches (the same records, in the order `official_records` draws them) are the
project's pipeline batches cut to their longest row (the published collators pad to the
longest); pad positions get the project's position ids (see docs/methods.md, `manu`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import jaxunlearn as ju
from hf_fixtures import (
    hf_positions, save_tiny_family, tiny_family_config, tiny_image_processor, tiny_tokenizer,
)
from jaxunlearn.cli import main
from jaxunlearn.data.pipeline import qa_records
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
from jaxunlearn.methods.base import MethodResult, UnlearnData, run_method
from jaxunlearn.methods.manu import official_records
from jaxunlearn.session import pipeline_for

SYNTH = SynthConfig(seed=0, n_profiles=10, n_celebrities=4, image_size=32)
PLANTED = (5, 17)          # gate_proj channels planted to fire on forget-only tokens
ALPHA = 6 / 768            # language: k = int(alpha * 3 * (96 + 96 + 64)) = 6 -> two channels
WEIGHTS = {"abs": 2.0, "freq": 0.0, "var": 2.0, "rms": 2.0}
LAST = 3


# ----------------------------------------------------------------------------- reference

def ref_batch_scores(acts: list[np.ndarray]) -> dict[str, np.ndarray]:
    """`collect_feedforward_activations` for one key and one batch: [T, C] per metric."""
    a = np.clip(np.concatenate(acts, axis=0).astype(np.float64), -1e3, 1e3)
    return {"abs": np.abs(a).mean(0), "freq": (np.abs(a) > 0.1).mean(0),
            "var": a.std(0, ddof=1), "rms": np.sqrt((a ** 2).mean(0))}


def ref_final(per_batch: list[dict[str, np.ndarray]], chunk: int = 10) -> dict[str, np.ndarray]:
    """Chunk means (`torch.cat(scores).mean(0)`) and their mean."""
    means = [{k: np.concatenate([b[k] for b in per_batch[i:i + chunk]], 0).mean(0)
              for k in per_batch[0]} for i in range(0, len(per_batch), chunk)]
    return {k: np.mean([m[k] for m in means], axis=0) for k in per_batch[0]}


def ref_topk(scores: dict[str, np.ndarray], percent: float) -> dict[str, np.ndarray]:
    """`compute_top_k_pruning_mask`."""
    flat = np.concatenate([s.ravel() for s in scores.values()])
    k = int(percent / 100 * flat.size)
    thr = np.sort(flat)[::-1][k - 1]
    return {n: s >= thr for n, s in scores.items()}


class Collector:
    """`ActivationCollector` + `register_feedforward_hooks` on a transformers LLaVA."""

    def __init__(self, hf, vision_layers: int, text_layers: int):
        self.acts: dict[str, list[np.ndarray]] = {}
        vis = hf.model.vision_tower.encoder.layers
        lang = hf.model.language_model.layers
        for layer in vis:
            for idx in range(vision_layers - LAST, vision_layers):
                for lin in ("fc1", "fc2"):
                    self._hook(getattr(layer.mlp, lin), f"vision_{lin}_{idx}")
        for layer in lang:
            for idx in range(text_layers - LAST, text_layers):
                for lin in ("gate_proj", "up_proj", "down_proj"):
                    self._hook(getattr(layer.mlp, lin), f"lang_{lin}_{idx}")

    def _hook(self, module, key):
        module.register_forward_hook(
            lambda m, i, o: self.acts.setdefault(key, []).append(o.detach().numpy()))


def reference(hf, collector, batches: dict[str, list[dict]], text_layers: int):
    """Masks {key: bool [C]} and final scores {key: [C]} of the published pipeline."""
    scores = {}
    for which in ("forget", "retain"):
        for modality, prefix in (("multi", "vision_"), ("text", "lang_")):
            per_key: dict[str, list] = {}
            for b in batches[(which, modality)]:
                rows = np.asarray(b["example_mask"]) > 0
                mask = np.asarray(b["attention_mask"])[rows]
                t = int(mask.sum(1).max())
                ids, mask = np.asarray(b["input_ids"])[rows, :t], mask[:, :t]
                kw = dict(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                          position_ids=torch.as_tensor(hf_positions(mask)))
                collector.acts.clear()
                with torch.no_grad():
                    if modality == "multi":
                        hf(pixel_values=torch.as_tensor(np.asarray(b["pixel_values"])[rows]),
                           **kw)
                    else:
                        hf.model.language_model(**kw)
                for key, acts in collector.acts.items():
                    if key.startswith(prefix):
                        per_key.setdefault(key, []).append(ref_batch_scores(acts))
            for key, per_batch in per_key.items():
                scores.setdefault(key, {})[which] = ref_final(per_batch)
    combined = {key: sum(w * (s["forget"][m] / (s["retain"][m] + 1e-5) - 1)
                         for m, w in WEIGHTS.items()) for key, s in scores.items()}
    masks = {}
    for prefix in ("vision_", "lang_"):
        masks.update(ref_topk({k: v for k, v in combined.items() if k.startswith(prefix)},
                              ALPHA * 100))
    return masks, combined


def ref_prune(hf, masks: dict[str, np.ndarray]) -> None:
    """`apply_structural_pruning` + `apply_mask_to_layer` (rows and bias where mask is 1)."""
    towers = (("vision_", ("fc1", "fc2"), hf.model.vision_tower.encoder.layers),
              ("lang_", ("gate_proj", "up_proj", "down_proj"), hf.model.language_model.layers))
    with torch.no_grad():
        for prefix, names, layers in towers:
            for idx, layer in enumerate(layers):
                for lin in names:
                    key = f"{prefix}{lin}_{idx}"
                    if key in masks:
                        mod = getattr(layer.mlp, lin)
                        keep = 1.0 - torch.as_tensor(masks[key], dtype=torch.float32)
                        mod.weight.mul_(keep[:, None])
                        if mod.bias is not None:
                            mod.bias.mul_(keep)


# ----------------------------------------------------------------------------- the model

def planted_llava(out: Path, bench, forget_only: list[int]):
    """Tiny LLaVA (4 vision, 4 text layers) whose gate_proj channels PLANTED fire on the
    `forget_only` tokens: only their embeddings write hidden dim 0 of the residual stream
    (no attention or MLP output does), which these channels read strongly in every layer."""
    from transformers import LlavaForConditionalGeneration

    tok = tiny_tokenizer(bench, out)
    config = tiny_family_config("llava", tok, vision_layers=4)
    config.text_config.num_hidden_layers = 4
    torch.manual_seed(0)
    hf = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn_like(p))
        emb = hf.model.language_model.embed_tokens.weight
        emb[:, 0] = 0.0
        emb[forget_only, 0] = 1.0
        for layer in hf.model.language_model.layers:  # nothing else writes hidden dim 0
            layer.self_attn.o_proj.weight[0] = 0.0
            layer.mlp.down_proj.weight[0] = 0.0
            layer.mlp.gate_proj.weight[list(PLANTED), 0] = 3.0
    hf.save_pretrained(out)
    tiny_image_processor("llava").save_pretrained(out)
    return hf


def _data(model, tok, bench) -> UnlearnData:
    cfg = {"train": {"grad_accum": 1, "seed": 0},
           "data": {"blank_images": False, "batch_size": 4, "max_length": 256}}
    return UnlearnData(tok, pipeline_for(model, cfg), bench.split("forget_10"),
                       bench.split("retain_90"))


def test_official_equals_the_published_pipeline_on_planted_neurons(tmp_path):
    from transformers import AutoTokenizer

    bench = generate_benchmark(SYNTH)
    # tokens of the forget text QA that no retain text QA holds (the forget person's name)
    tok = tiny_tokenizer(bench, tmp_path / "tok")
    ids = {w: {t for r in qa_records(bench.split(split), "llava", "train", "text")
               for t in tok(r["prompt"] + " " + r["answer"])["input_ids"]}
           for w, split in (("forget", "forget_10"), ("retain", "retain_90"))}
    forget_only = sorted(ids["forget"] - ids["retain"])
    assert forget_only

    hf = planted_llava(tmp_path / "hf", bench, forget_only)
    model = ju.load_pretrained(tmp_path / "hf")
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    data = _data(model, tok, bench)
    res = run_method("manu", model, data, {"formulation": "official", "alpha": ALPHA,
                                           "progress": False})

    batches = {}
    for modality in ("multi", "text"):
        forget, retain = official_records(data, modality, 4, 0)
        n_batches = -(-len(forget) // 4)
        assert len(retain) == min(n_batches * 4, len(data.records("retain", modality)))
        for which, recs in (("forget", forget), ("retain", retain)):
            batches[(which, modality)] = list(data.dataset(recs, shuffle=False, batch_size=4))
    collector = Collector(hf, 4, 4)
    want, combined = reference(hf, collector, batches, 4)

    # the planted channels are the language selection, in the last three layers only
    gate = res.neuron_masks["language.gate_proj"]
    assert np.argwhere(gate).tolist() == [[i, c] for i in (1, 2, 3) for c in PLANTED]
    for key, mask in res.neuron_masks.items():
        group, lin = key.split(".")
        prefix = "lang_" if group == "language" else "vision_"
        assert not mask[0].any(), key
        for idx in (1, 2, 3):
            np.testing.assert_array_equal(mask[idx], want[f"{prefix}{lin}_{idx}"], err_msg=key)
        np.testing.assert_allclose(res.neuron_scores[key], combined[f"{prefix}{lin}_3"],
                                   rtol=1e-4, atol=1e-4, err_msg=key)
    assert res.neuron_masks["vision.fc1"].any() or res.neuron_masks["vision.fc2"].any()

    # the zeroed weight rows (bias entries) equal the published apply_structural_pruning's
    ref_prune(hf, want)
    sd = {k: v.numpy() for k, v in hf.state_dict().items()}
    for ours, theirs in (("vision_tower.encoder.layers", "model.vision_tower.encoder.layers"),
                         ("language_model.layers", "model.language_model.layers")):
        for idx in range(4):
            for lin in ("fc1", "fc2", "gate_proj", "up_proj", "down_proj"):
                k = f"{ours}.{idx}.mlp.{lin}.kernel"
                if k not in res.params:
                    continue
                got = np.asarray(res.params[k]).T
                ref = sd[f"{theirs}.{idx}.mlp.{lin}.weight"]
                np.testing.assert_array_equal(got == 0, ref == 0, err_msg=k)
                np.testing.assert_allclose(got, ref, rtol=1e-6, atol=0, err_msg=k)
                if f"{ours}.{idx}.mlp.{lin}.bias" in res.params:
                    np.testing.assert_array_equal(
                        np.asarray(res.params[f"{ours}.{idx}.mlp.{lin}.bias"]) == 0,
                        sd[f"{theirs}.{idx}.mlp.{lin}.bias"] == 0, err_msg=k)


@pytest.mark.parametrize("family", ["qwen2_5_vl"])
def test_official_through_the_cli(family, tmp_path):
    """`jaxunlearn unlearn --method manu` official on a Qwen family (gated vision MLP: gate /
    up / down share the vision threshold); `prune apply` reproduces the pruned model. LLaVA
    runs the same path in tests/test_method_results.py."""
    bench = generate_benchmark(SYNTH)
    base = save_tiny_family(family, tmp_path / "base", bench=bench, vision_layers=4)
    out = tmp_path / "run"
    data = ["data.synthetic.n_profiles=10", "data.synthetic.n_celebrities=4",
            "data.synthetic.image_size=32", "data.batch_size=4", "data.max_length=256"]
    assert main(["unlearn", "--method", "manu", "--model", str(base), *data,
                 "method.options.formulation=official", "method.options.alpha=0.05",
                 "method.options.progress=false", f"output.dir={out}"]) == 0
    res = MethodResult.load(out)
    assert set(res.neuron_masks) == {f"{g}.{n}" for g in ("language", "vision")
                                     for n in ("gate_proj", "up_proj", "down_proj")}
    report = json.loads((out / "unlearn_report.json").read_text())
    assert report["layers"] == {"language": [0, 1], "vision": [1, 2, 3]}
    for key, m in res.neuron_masks.items():
        layers = report["layers"][key.split(".")[0]]
        assert all((m[i] == m[layers[0]]).all() for i in layers) and m[layers[0]].any() or \
            not m.any()
        assert not m[[i for i in range(m.shape[0]) if i not in layers]].any(), key
    assert main(["prune", "apply", "--masks", str(out), "--model", str(base),
                 "--out", str(tmp_path / "pruned")]) == 0
    pa = ju.load_pretrained(tmp_path / "pruned").params
    pb = ju.load_pretrained(out / "model").params
    for k in pa:
        np.testing.assert_array_equal(np.asarray(pa[k]), np.asarray(pb[k]), err_msg=k)


@pytest.mark.parametrize("key,value", [("activation_site", "pre"), ("token_scope", "answer"),
                                       ("retain_size", "forget"), ("eps", 1e-3)])
def test_official_refuses_the_paper_only_options(key, value):
    from jaxunlearn.methods.manu import ManuOptions, _check_options

    with pytest.raises(ValueError, match=f"{key} is not read by formulation: official"):
        _check_options(ManuOptions(formulation="official", **{key: value}))
    assert _check_options(ManuOptions(formulation="paper", **{key: value}))
