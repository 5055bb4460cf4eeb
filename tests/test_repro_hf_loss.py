"""GA under `label_scope: all_tokens` is MLLMU-Bench's GA loss on the real model: the
negated `outputs.loss` of transformers' `LlavaForConditionalGeneration` with the labels of
franciscoliu/MLLMU-Bench `data_process/data_preprocess.py::train_collate_fn_llava`
(`labels = input_ids.clone(); labels[labels == pad_token_id] = -100`) and
`baselines/GA.py::main` (`loss = -outputs.loss`; no position_ids passed), on a tiny random
LLaVA (fp32) with padded rows of different lengths. With right padding (the data pipeline's)
the two agree as they are; with left padding HF would also count the first real token
predicted from the pad position before it (a fully masked attention row, filled differently by
every attention implementation), which `all_tokens` leaves out, so that label is dropped on
the HF side. The answer scope (labels = -100 outside the answer) is a different number.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jaxunlearn as ju
from hf_fixtures import llava_batch, save_hf_llava, tiny_llava_config
from jaxunlearn.objectives import gradient as G

PAD = 0  # llava_batch pads with id 0; real tokens are >= 1


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    cfg = tiny_llava_config(text_layers=2, vision_layers=2)
    path = tmp_path_factory.mktemp("hf_llava")
    hf = save_hf_llava(cfg, path).eval()
    return cfg, hf, ju.load_pretrained(path)


def _right_pad(ids, mask):
    """The same rows with the padding moved to the right."""
    out_ids, out_mask = np.full_like(ids, PAD), np.zeros_like(mask)
    for b in range(ids.shape[0]):
        real = ids[b][mask[b] == 1]
        out_ids[b, :len(real)], out_mask[b, :len(real)] = real, 1
    return out_ids, out_mask


@pytest.mark.parametrize("side", ["left", "right"])
def test_ga_all_tokens_equals_transformers_loss_with_mllmu_labels(models, side):
    cfg, hf, model = models
    ids, mask, pix = llava_batch(cfg, seed=5, left_pad=(0, 6, 3))
    if side == "right":
        ids, mask = _right_pad(ids, mask)
    assert not np.any(ids[mask == 1] == PAD)
    labels = ids.copy()
    labels[labels == PAD] = -100  # train_collate_fn_llava
    if side == "left":  # HF would read the first real token's prediction from a pad position
        labels[np.arange(len(ids)), np.argmax(mask, axis=1)] = -100
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                 pixel_values=torch.tensor(pix), labels=torch.tensor(labels))
    theirs = -float(out.loss)  # baselines/GA.py: loss = -outputs.loss
    logits = model.logits(ids, mask, pix)
    batch = {"input_ids": ids, "attention_mask": mask,
             "example_mask": np.ones(ids.shape[0], np.int32)}
    ours = float(G.ga(logits, batch, "all_tokens"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    # answer scope: the last 4 real tokens of each row are the answer
    loss_mask = np.zeros(ids.shape, np.float32)
    for b in range(ids.shape[0]):
        loss_mask[b, np.flatnonzero(mask[b])[-4:]] = 1.0
    answer = float(G.ga(logits, {**batch, "loss_mask": loss_mask}, "answer"))
    ans_labels = np.where(loss_mask > 0, ids, -100)
    with torch.no_grad():
        ref = -float(hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                        pixel_values=torch.tensor(pix), labels=torch.tensor(ans_labels)).loss)
    np.testing.assert_allclose(answer, ref, rtol=1e-5)
    assert abs(answer - ours) > 1e-3
