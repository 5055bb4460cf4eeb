"""Every family through the data pipeline, the evaluation tasks and the neuron statistics:
LLaVA, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL (tiny random models saved with save_pretrained)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import jaxunlearn as ju
from hf_fixtures import FAMILIES, hf_image_inputs, save_tiny_family
from jaxunlearn import session
from jaxunlearn.data import templates as T
from jaxunlearn.data.pipeline import (
    _pad_id, collate, encode_record, make_dataset, make_mixed_dataset, qa_records,
)
from jaxunlearn.data.schema import load_image
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
from jaxunlearn.modeling.model import forward_logits, model_inputs, shared_input_keys

CFG = {"data": {"batch_size": 4, "max_length": 256, "blank_images": False}, "train": {"seed": 0}}


@pytest.fixture(scope="module")
def bench():
    return generate_benchmark(SynthConfig(seed=0, n_profiles=10, n_celebrities=4, image_size=32))


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request, bench, tmp_path_factory):
    from transformers import AutoTokenizer

    path = save_tiny_family(request.param, tmp_path_factory.mktemp(request.param), bench=bench)
    model = ju.load_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    return request.param, model, tok, session.pipeline_for(model, CFG)


def _records(bench, family, n_multi=1, n_text=1):
    recs = qa_records(bench.profiles[:3], family, "train")
    return ([r for r in recs if r["image"] is not None][:n_multi]
            + [r for r in recs if r["image"] is None][:n_text])


def test_pipeline_batch_equals_hf_processor_inputs(fam, bench):
    """(a) a pipeline batch (a text-only and a multimodal row, padded to 4 rows) gives the
    logits of the HF-processor-layout inputs through Model.logits."""
    family, model, tok, pipe = fam
    records = _records(bench, family)[::-1]
    examples = [encode_record(r, tok, pipe) for r in records]
    batch = collate(examples, pipe, _pad_id(tok))
    got = np.asarray(forward_logits(model.graphdef, model.params, model_inputs(batch)))

    # the HF image processor on the same image, the prompt expanded to its token count
    hf, n_tok = hf_image_inputs(family, model, load_image(records[1]["image"]))
    ids = [T.encode_example(tok, family, r["prompt"], r["answer"], n_tok if i == 1 else 0)
           ["input_ids"] for i, r in enumerate(records)]
    length = batch["input_ids"].shape[1]
    hf_ids = np.full((4, length), _pad_id(tok), np.int64)
    hf_mask = np.zeros((4, length), np.int64)
    for i, row in enumerate(ids):
        hf_ids[i, :len(row)], hf_mask[i, :len(row)] = row, 1
    raw = collate(examples, pipe, _pad_id(tok), prepare=False)
    np.testing.assert_array_equal(raw["input_ids"], hf_ids)
    pix = hf.pop("pixel_values")
    if family == "llava":  # one image per row: pad the batch with zero images
        pix = np.concatenate([pix, np.zeros((3, *pix.shape[1:]), pix.dtype)])
    want = np.asarray(model.logits(hf_ids, hf_mask, pix, **hf))
    valid = hf_mask.astype(bool)
    np.testing.assert_allclose(got[valid], want[valid], atol=1e-5, rtol=0)


def test_datasets_static_shapes_and_errors(fam, bench):
    family, model, tok, pipe = fam
    records = _records(bench, family, n_multi=5, n_text=5)
    batches = list(make_mixed_dataset(records, tok, pipe))
    assert len(batches) == 4
    multi = [b for b in batches if "pixel_values" in b]
    assert len(multi) == 2
    for key in ("pixel_values", "vision_token_mask", "vision_pos"):  # static image shapes
        assert multi[0].get(key, np.zeros(0)).shape == multi[1].get(key, np.zeros(0)).shape
    if family == "llava":
        assert not shared_input_keys(multi[0])
    else:
        assert "pixel_values" in shared_input_keys(multi[0])
        from jaxunlearn.train.step import accumulate_grads

        def loss(p, frozen, b):
            return forward_logits(model.graphdef, {**frozen, **p}, model_inputs(b)).mean(), {}

        with pytest.raises(ValueError, match="grad_accum: 1"):
            accumulate_grads(loss, {}, model.params, multi[0], grad_accum=2)
        with pytest.raises(ValueError, match="blank_images"):
            session.pipeline_for(model, {**CFG, "data": {**CFG["data"], "blank_images": True}})
    assert make_dataset(records[:1], tok, pipe)[0]["input_ids"].shape[0] == 4


def test_eval_tasks_run(fam, bench):
    """(b) classification (generation + likelihood), generation, cloze and NLL give finite
    numbers on multimodal and text-only questions."""
    from jaxunlearn.eval import tasks
    from jaxunlearn.eval.evaluate import Evaluator

    family, model, tok, pipe = fam
    cfg = tasks.EvalConfig(batch_size=2, max_questions=2, classification_tokens=2,
                           generation_tokens=3, cloze_tokens=3, bucket_size=256)
    ev = Evaluator(model, tok, pipe, settings=cfg)
    profiles = bench.profiles[:1]
    for modality in ("multi", "text"):
        tag = tasks.Tag(modality=modality)
        out = ev.task("classification", profiles, tag)
        out += ev.task("generation", profiles, tag)
        out += ev.task("cloze", profiles, tag)
        out += tasks.run_nll(ev, profiles, tag)
        metrics = {(r["task"], r["metric"]) for r in out.records}
        assert {("classification", "accuracy"), ("classification", "likelihood_accuracy"),
                ("generation", "rouge1"), ("cloze", "accuracy"), ("qa", "nll")} <= metrics
        assert all(np.isfinite(r["value"]) for r in out.records)


def test_neuron_stats_count_only_real_patches(fam, bench):
    """(c) statistics run; padded patches / crop slots / rows do not count."""
    from jaxunlearn.data.images import ClipImages, OneVisionImages, QwenImages
    from jaxunlearn.modeling.mlp import group_shapes
    from jaxunlearn.stats.activations import neuron_stats
    from jaxunlearn.train.subsets import dead_vision_layers

    family, model, tok, pipe = fam
    records = _records(bench, family, n_multi=3, n_text=0)  # 3 images in a batch of 4 rows
    batch = collate([encode_record(r, tok, pipe) for r in records], pipe, _pad_id(tok))
    stats = neuron_stats(model, [batch], progress=False)
    enc = pipe.encoder()
    if isinstance(enc, ClipImages):
        per_image = (model.config.vision.image_size // model.config.vision.patch_size) ** 2 + 1
    elif isinstance(enc, QwenImages):
        per_image = 64  # 32x32 px in 4 px patches
        assert len(batch["pixel_values"]) > 3 * per_image  # the bucket pads patches
    else:
        assert isinstance(enc, OneVisionImages)
        per_image = 5 * model.config.vision.num_patches  # base + 2x2 grid crops
        assert len(batch["pixel_values"]) * model.config.vision.num_patches > 3 * per_image
    n_layers = group_shapes(model.params)["vision"][0]
    dead = dead_vision_layers(model)
    want = [0 if i in dead else 3 * per_image for i in range(n_layers)]
    np.testing.assert_array_equal(stats["vision"]["n"], want)
    text_tokens = int(batch["attention_mask"].sum())
    np.testing.assert_array_equal(stats["language"]["n"], [text_tokens] * 2)
    # on a mesh: rows split over 'data', per-batch image arrays replicated, same statistics
    from jaxunlearn.parallel.mesh import make_mesh

    sharded = neuron_stats(model, [batch], mesh=make_mesh({"data": 2, "tensor": 4}),
                           progress=False)
    for g in stats:
        np.testing.assert_array_equal(stats[g]["n"], sharded[g]["n"])
        np.testing.assert_allclose(stats[g]["S2"], sharded[g]["S2"], rtol=1e-5, atol=1e-6)


def test_image_features_weigh_real_images_only(fam, bench):
    """`image_features` (VKD's distillation target): one row per feature slot, weight 1 on
    exactly the features of the 3 real images (padded rows / patches / crop slots weigh 0)."""
    from jaxunlearn.modeling.model import image_features

    family, model, tok, pipe = fam
    records = _records(bench, family, n_multi=3, n_text=0)
    examples = [encode_record(r, tok, pipe) for r in records]
    batch = collate(examples, pipe, _pad_id(tok))
    feats, weights = image_features(model.graphdef, model.params,
                                    {**model_inputs(batch), "example_mask": batch["example_mask"]})
    per_image = examples[0]["image"]["num_tokens"]
    if family == "llava_onevision":  # image tokens = base + grid features + one newline per row
        grid = model.config.vision.image_size // model.config.vision.patch_size
        per_image = 5 * grid * grid
    assert feats.shape[0] == weights.shape[0] > 3 * per_image
    assert feats.shape[1] == model.config.text.hidden_size
    assert float(np.asarray(weights).sum()) == 3 * per_image


class _Placed(Exception):
    """Raised by `_Capture.place`: the generation stops before its (SPMD) program."""


class _Capture:
    """A `generate` placement that keeps the host-prepared inputs it gets (as one process of
    a `spmd.Spread` would place them: `Spread.local`) and stops the generation."""

    def __init__(self, spread=None):
        self.spread, self.got = spread, None

    def place(self, inputs):
        self.got = self.spread.local(inputs) if self.spread is not None else dict(inputs)
        raise _Placed

    def host(self, tree):
        return tree


def test_eval_batches_per_process_equal_the_global_batch(fam, bench, monkeypatch):
    """Evaluation across 2 processes, faked in this one: each process's eval batches
    (`tasks._encode` / `_batches` with a `spmd.Spread` of its rows, images of different
    sizes, a short final batch, text-only batches) decode only the images of its rows, and
    the inputs each process places after the host preparation (`generate`'s extra left
    padding and `Model.host_inputs`, and the likelihood forward's) equal those of one
    process bit for bit once the pixels are joined (the all-gather faked: blocks stacked in
    reverse process order)."""
    import dataclasses

    from jaxunlearn.data.pipeline import question_records
    from jaxunlearn.eval import spmd, tasks
    from jaxunlearn.modeling.generate import generate
    from jaxunlearn.parallel.mesh import LocalUnits, ProcessRows

    family, model, tok, pipe = fam
    pipe = dataclasses.replace(pipe, bucket_size=24)  # lengths that generate pads further
    records = question_records(bench.profiles[:3], family, "eval", "classification")
    sizes = iter([(32, 32), (48, 32), (40, 72), (64, 40), (24, 56), (56, 56), (32, 48)] * 9)
    for r in records:
        if r["image"] is not None:
            r["image"] = load_image(r["image"]).resize(next(sizes))
    pad = _pad_id(tok)
    enc = pipe.encoder()
    decoded = []
    real_encode = type(enc).encode
    monkeypatch.setattr(type(enc), "encode", lambda self, x: decoded.append(1) or
                        real_encode(self, x))
    splits = ((0, 2), (2, 4))
    n_batches, widths = 0, set()
    for part in tasks._by_modality(records):
        recs = [records[i] for i in part]
        assert len(recs) % 4  # a short final batch (rows copied)
        whole = tasks._batches(tasks._encode(recs, tok, pipe), pipe, 4, pad)
        spreads = [spmd.Spread(None, 4, rows) for rows in splits]
        procs = [tasks._batches(tasks._encode(recs, tok, pipe, s), pipe, 4, pad, s)
                 for s in spreads]
        decoded.clear()
        for (chunk, ref), *got in zip(whole, *procs):
            n_batches += 1
            multi = "pixel_values" in ref
            for g in got:
                assert g[0] == chunk
                # one process prepares the global batch (Qwen-VL / OneVision) or its rows
                assert len(g[1]["input_ids"]) == (2 if family == "llava" else 4)
            assert len(decoded) == (4 if multi else 0)  # each row's image once in all
            decoded.clear()
            for kind in ("generate", "likelihood"):
                placed = []
                for batch, s in [(ref, None)] + [(g[1], s) for g, s in zip(got, spreads)]:
                    images = tasks.model_image_inputs(batch)
                    pix = images.pop("pixel_values", None)
                    if kind == "generate":
                        cap = _Capture(s)
                        with pytest.raises(_Placed):
                            generate(model, batch["input_ids"], batch["attention_mask"], pix,
                                     max_new_tokens=2, pad_token_id=pad, placement=cap,
                                     **images)
                        placed.append(cap.got)
                    else:
                        inputs = model.host_inputs(batch["input_ids"], batch["attention_mask"],
                                                   pix, images)
                        inputs = {**inputs, "loss_mask": batch["loss_mask"]}
                        placed.append(s.local(inputs) if s is not None else inputs)
                want, parts = placed[0], placed[1:]
                widths.add(want["input_ids"].shape[1])
                assert all(isinstance(p, ProcessRows) and sorted(p) == sorted(want)
                           for p in parts)
                pending = [p["pixel_values"] for p in parts
                           if isinstance(p.get("pixel_values"), LocalUnits)]
                assert len(pending) == (len(parts) if multi and family != "llava" else 0)
                if pending:
                    stacked = jax.tree.map(lambda *xs: np.stack(xs),
                                           *[u.sent() for u in pending[::-1]])
                    for p in parts:
                        p["pixel_values"] = p["pixel_values"].join(
                            lambda tree, stacked=stacked: stacked)
                shared = set(shared_input_keys(want))
                assert (family in ("qwen2_vl", "qwen2_5_vl")) <= ("position_ids" in shared)
                for k, v in want.items():
                    if k in shared:
                        for p in parts:
                            np.testing.assert_array_equal(np.asarray(p[k]), v, err_msg=k)
                    else:
                        np.testing.assert_array_equal(
                            np.concatenate([np.asarray(p[k]) for p in parts]), v, err_msg=k)
    assert n_batches >= 3 and any(w % 24 for w in widths)  # generate's extra padding
