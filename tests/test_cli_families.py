"""The CLI on every model family: `finetune` -> `unlearn` (ga, npo, manu and the vision-side
vkd) -> `evaluate`, and every exported directory loads with `transformers` (no missing or
unexpected keys) with logits equal to the Flax model's (<= 1e-4).

Tiny random models of LLaVA-1.5, LLaVA-OneVision, Qwen2-VL and Qwen2.5-VL are written with
`save_pretrained` (tests/hf_fixtures.py) with the synthetic benchmark's tokenizer, so the
commands run on the synthetic benchmark exactly as a user runs them on a real checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import jaxunlearn as ju
from hf_fixtures import FAMILIES, hf_image_inputs, save_tiny_family
from jaxunlearn.cli import main
from jaxunlearn.data import templates as T
from jaxunlearn.data.schema import load_image
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

SYNTH = SynthConfig(seed=0, n_profiles=10, n_celebrities=4, image_size=32)
DATA = ["data.synthetic.n_profiles=10", "data.synthetic.n_celebrities=4",
        "data.synthetic.image_size=32", "data.batch_size=4", "data.max_length=256"]
TRAIN = ["train.batch_size=4", "train.progress=false"]
EVAL = ["eval.sets=[forget,retain]", "eval.max_questions=2", "eval.batch_size=4",
        "eval.classification_tokens=2", "eval.generation_tokens=4", "eval.cloze_tokens=4",
        "eval.bucket_size=256", "eval.progress=false"]
TRAINING = ["train.batch_size=4", "train.progress=false", "train.max_steps=1", "train.lr=1e-3"]
# method -> its command-line settings (manu does not train: a train key would be refused)
METHODS = {"ga": TRAINING, "npo": TRAINING, "manu": [],
           "vkd": [*TRAINING, "train.subset=projector+vision_mlp", "train.deeper_half=true"]}


def _hf_inputs(family: str, model, tok, image):
    """One multimodal prompt in the layout the family's HF processor emits (numpy)."""
    hf, n_tok = hf_image_inputs(family, model, image)
    prompt = T.training_prompt(family, "Who is this person?", True)
    ids = np.asarray([T.encode_example(tok, family, prompt, "A person.", n_tok)["input_ids"]])
    return ids, np.ones_like(ids), hf


def _check_export(family: str, path, tok, image) -> None:
    """`transformers` loads `path` with no missing / unexpected keys and its logits equal the
    Flax model's."""
    import torch
    from transformers import AutoModelForImageTextToText

    hf_model, info = AutoModelForImageTextToText.from_pretrained(
        path, output_loading_info=True, dtype=torch.float32)
    assert not info["missing_keys"] and not info["unexpected_keys"], (path, info)
    flax = ju.load_pretrained(path)
    ids, mask, extra = _hf_inputs(family, flax, tok, image)
    pix = extra.pop("pixel_values")
    want = np.asarray(flax.logits(ids, mask, pix, **extra))
    kw = {k: torch.as_tensor(v) for k, v in extra.items()}
    if family.startswith("qwen"):  # M-RoPE reads which tokens are image tokens
        image_id = T.image_token_id(tok, family)
        kw["mm_token_type_ids"] = torch.as_tensor((ids == image_id).astype(np.int64))
    with torch.no_grad():
        got = hf_model.eval()(input_ids=torch.as_tensor(ids, dtype=torch.long),
                              attention_mask=torch.as_tensor(mask, dtype=torch.long),
                              pixel_values=torch.as_tensor(pix),
                              **kw).logits.numpy()
    assert np.isfinite(want).all()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_cli_finetune_unlearn_evaluate_export(family, tmp_path, capsys):
    from transformers import AutoTokenizer

    bench = generate_benchmark(SYNTH)
    base = save_tiny_family(family, tmp_path / "base", bench=bench)
    tok = AutoTokenizer.from_pretrained(base)
    image = load_image(bench.profiles[0].image)

    ft = tmp_path / "ft"
    assert main(["finetune", f"model.checkpoint={base}", *DATA, *TRAIN, "train.max_steps=2",
                 "train.lr=1e-3", f"output.dir={ft}"]) == 0
    _check_export(family, ft / "model", tok, image)

    for method, options in METHODS.items():
        out = tmp_path / method
        assert main(["unlearn", "--method", method, "--model", str(ft / "model"), *DATA, *options,
                     f"output.dir={out}"]) == 0, method
        _check_export(family, out / "model", tok, image)

    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tmp_path / "ga" / "model"), *DATA, *EVAL,
                 f"output.dir={ev}"]) == 0
    report = json.loads((ev / "report.json").read_text())
    values = [r["value"] for r in report["records"] if r["value"] is not None]
    assert values and np.isfinite(values).all()
    sets = {r["set"] for r in report["records"]}
    assert sets == {"forget", "retain"}
