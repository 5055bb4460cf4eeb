"""`MethodResult` on disk: what `jaxunlearn unlearn` writes is what `prune apply` and
`convert peft` read. Pruning re-applied to the starting checkpoint reproduces the unlearned
model bit for bit (MANU, selective pruning); a LoRA run exports a PEFT adapter that `peft`
loads with logits within 1e-4 of the unlearned model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jaxunlearn as ju
from jaxunlearn.cli import main
from jaxunlearn.methods.base import RESULT_FORMAT, MethodResult
from jaxunlearn.train.lora import LoraConfig

# the CLI's synthetic benchmark, small
DATA = ["data.synthetic.n_profiles=10", "data.synthetic.n_celebrities=2", "data.batch_size=8"]


def _unlearn(base: Path, out: Path, method: str, *overrides: str) -> Path:
    argv = ["unlearn", "--method", method, "--model", str(base), f"output.dir={out}", *DATA,
            *overrides]
    assert main(argv) == 0
    return out


def _params_equal(a: Path, b: Path) -> None:
    pa, pb = ju.load_pretrained(a).params, ju.load_pretrained(b).params
    assert set(pa) == set(pb)
    for k in pa:
        np.testing.assert_array_equal(np.asarray(pa[k]), np.asarray(pb[k]), err_msg=k)


@pytest.mark.parametrize("method,options", [
    ("manu", ["method.options.alpha=0.1", "method.options.formulation=official"]),
    ("selective_pruning", ["method.options.frac=0.1", "method.options.groups=[language,vision]"]),
])
def test_prune_apply_reproduces_the_unlearned_model(tiny_vanilla, tmp_path, method, options):
    base = Path(tiny_vanilla[0].source_dir)
    out = _unlearn(base, tmp_path / "run", method, "method.options.progress=false", *options)
    doc = json.loads((out / "result.json").read_text())
    assert doc["format"] == RESULT_FORMAT and "neuron_masks.npz" in doc["files"]
    assert not (out / "artifacts.npz").exists()
    res = MethodResult.load(out)
    assert res.params is None and sum(int(m.sum()) for m in res.neuron_masks.values()) > 0
    assert set(res.neuron_scores) == set(res.neuron_masks)
    # the output directory and its mask file both work
    assert main(["prune", "apply", "--masks", str(out), "--model", str(base),
                 "--out", str(tmp_path / "pruned")]) == 0
    _params_equal(tmp_path / "pruned", out / "model")
    assert main(["prune", "apply", "--masks", str(out / "neuron_masks.npz"), "--model",
                 str(base), "--out", str(tmp_path / "pruned2")]) == 0
    _params_equal(tmp_path / "pruned2", out / "model")


def test_convert_peft_of_an_unlearn_lora_run(tiny_vanilla, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import LlavaForConditionalGeneration

    from hf_fixtures import hf_positions

    model, tok, bench, pipe = tiny_vanilla
    base = Path(model.source_dir)
    out = _unlearn(base, tmp_path / "run", "ga", "train.lora=true", "train.lora_rank=4",
                   "train.max_steps=2", "train.lr=0.01", "train.batch_size=4",
                   "train.progress=false")
    res = MethodResult.load(out)
    assert isinstance(res.lora_config, LoraConfig) and res.lora_config.rank == 4
    assert any(np.abs(v).max() > 0 for k, v in res.lora.items() if k.endswith("lora_b"))
    assert main(["convert", "peft", str(out), str(tmp_path / "peft"), "--base", str(base)]) == 0

    from jaxunlearn.data.pipeline import make_dataset, qa_records

    recs = [r for r in qa_records(bench.split("forget_10"), "llava", "train")
            if r["image"] is not None][:2]
    batch = next(iter(make_dataset(recs, tok, pipe)))
    ids, mask, pix = (np.asarray(batch[k])[:1] for k in ("input_ids", "attention_mask",
                                                          "pixel_values"))
    ours = np.asarray(ju.load_pretrained(out / "model").logits(ids, mask, pix))
    hf = LlavaForConditionalGeneration.from_pretrained(base, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        peft_model = PeftModel.from_pretrained(hf, tmp_path / "peft").eval()
        ref = peft_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                         pixel_values=torch.tensor(pix),
                         position_ids=torch.tensor(hf_positions(mask))).logits.numpy()
    valid = mask.astype(bool)
    err = np.abs(ref - ours)[valid].max()
    assert err <= 1e-4, err


def test_method_result_round_trip(tmp_path):
    masks = {"language": np.array([[True, False, False]]), "vision": np.zeros((2, 2), bool)}
    lcfg = LoraConfig(rank=2, alpha=4.0)
    res = MethodResult({"w": np.ones(2)}, {"method": "x", "steps": 3},
                       neuron_masks=masks, neuron_scores={g: m * 1.0 for g, m in masks.items()},
                       neuron_meta={"model_type": "llava"},
                       param_masks={"saliency_mask": {"a.kernel": np.eye(2, dtype=bool)}},
                       lora={"a.lora_a": np.ones((2, 2), np.float32)}, lora_config=lcfg)
    res.save(tmp_path / "r")
    back = MethodResult.load(tmp_path / "r")
    assert back.params is None and back.report == res.report and back.lora_config == lcfg
    np.testing.assert_array_equal(back.neuron_masks["language"], masks["language"])
    np.testing.assert_array_equal(back.param_masks["saliency_mask"]["a.kernel"], np.eye(2))
    np.testing.assert_array_equal(back.lora["a.lora_a"], np.ones((2, 2)))
    assert back.neuron_meta["model_type"] == "llava"
    with pytest.raises(FileNotFoundError, match="result.json"):
        MethodResult.load(tmp_path)
