"""grain pipeline: static bucketed shapes, modality-pure batches, resumable iterators."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from jaxunlearn.data import templates as T
from jaxunlearn.data.pipeline import (PipelineConfig, make_dataset, make_iterator,
                                      make_mixed_dataset, paired_dataset, place_batch,
                                      qa_records, question_records)
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark
from jaxunlearn.data.tokenizer import benchmark_tokenizer

CFG = PipelineConfig(family="llava", batch_size=4, image_token_count=9, bucket_size=32,
                     max_length=192, seed=0)


@pytest.fixture(scope="module")
def bench():
    return generate_benchmark(SynthConfig(seed=0, n_profiles=8, n_celebrities=2, image_size=32))


@pytest.fixture(scope="module")
def tok(bench):
    return benchmark_tokenizer(bench, vocab_size=1024)


def _rows(batch) -> list[tuple[int, ...]]:
    """Valid rows as tuples of real tokens (for set comparisons)."""
    out = []
    for ids, attn, ok in zip(batch["input_ids"], batch["attention_mask"], batch["example_mask"]):
        if ok:
            out.append(tuple(ids[attn == 1].tolist()))
    return out


def _qwen_images(tok):
    """The image encoder of a tiny Qwen2-VL (32x32 images: 64 patches, 16 image tokens)."""
    from hf_fixtures import tiny_family_config

    from jaxunlearn.data.images import encoder_for
    from jaxunlearn.modeling.qwen_vl import QwenVLConfig, host_prepare

    config = QwenVLConfig.from_hf(tiny_family_config("qwen2_vl", tok).to_dict())
    return encoder_for("qwen2_vl", config, host_prepare)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_static_shapes_buckets_and_modality(bench, tok, family: str) -> None:
    images = _qwen_images(tok) if family == "qwen2_vl" else None
    cfg = dataclasses.replace(CFG, family=family, images=images)
    n_tok = 9 if family == "llava" else 16
    records = qa_records(bench.profiles, family) + \
        question_records(bench.profiles[:3], family, which="test")
    ds = make_mixed_dataset(records, tok, cfg)
    img = T.image_token_id(tok, family)
    seen_T, n_rows, kinds = set(), 0, set()
    for batch in ds:
        B, L = batch["input_ids"].shape
        assert B == 4 and L in cfg.buckets() and L % 32 == 0
        seen_T.add(L)
        assert batch["input_ids"].dtype == np.int32 and batch["attention_mask"].dtype == np.int32
        assert batch["loss_mask"].dtype == np.float32 and batch["loss_mask"].shape == (B, L)
        valid = batch["example_mask"].astype(bool)
        has_img = (batch["input_ids"][valid] == img).sum(axis=1)
        multi = "pixel_values" in batch
        kinds.add(multi)
        if multi:
            shape = (4, 3, 32, 32) if family == "llava" else (256, 96)  # 4 x 64 patches
            assert batch["pixel_values"].shape == shape
            assert batch["pixel_values"].dtype == np.float32
            assert (has_img == n_tok).all()
        else:
            assert (has_img == 0).all()
        # loss only on real tokens, right padding, each valid row has an answer
        assert (batch["loss_mask"] <= batch["attention_mask"]).all()
        assert (batch["loss_mask"][valid].sum(axis=1) > 0).all()
        lengths = batch["attention_mask"].sum(axis=1)
        for row, n in zip(batch["attention_mask"], lengths):
            assert row[:n].all() and not row[n:].any()
        n_rows += int(valid.sum())
    assert n_rows == len(records) and kinds == {True, False}
    assert seen_T <= set(cfg.buckets()) and len(cfg.buckets()) == 6


def test_loss_mask_marks_answers_in_batches(bench, tok) -> None:
    records = qa_records(bench.profiles[:2], "llava", modality="text")
    answers = {" " + r["answer"] + "</s>" for r in records}
    for batch in make_dataset(records, tok, CFG):
        for ids, loss, ok in zip(batch["input_ids"], batch["loss_mask"], batch["example_mask"]):
            if ok:
                assert tok.decode(ids[loss == 1]) in answers


def test_left_padding(bench, tok) -> None:
    cfg = dataclasses.replace(CFG, padding_side="left", shuffle=False)
    records = question_records(bench.profiles[:2], "llava", with_answer=False, modality="multi")
    batch = next(iter(make_dataset(records, tok, cfg)))
    for row, n in zip(batch["attention_mask"], batch["attention_mask"].sum(axis=1)):
        assert row[len(row) - n:].all() and not row[: len(row) - n].any()
    assert batch["loss_mask"].sum() == 0  # prompts only
    assert (batch["input_ids"][:, -1] != tok.pad_token_id).all()


def test_final_batch_padded_with_masked_rows(bench, tok) -> None:
    records = qa_records(bench.profiles[:1], "llava", modality="text")  # 5 records
    batches = list(make_dataset(records, tok, CFG))
    assert [b["example_mask"].tolist() for b in batches] == [[1, 1, 1, 1], [1, 0, 0, 0]]
    last = batches[-1]
    assert last["attention_mask"][1:].sum() == 0 and last["loss_mask"][1:].sum() == 0
    dropped = list(make_dataset(records, tok, dataclasses.replace(CFG, drop_remainder=True)))
    assert len(dropped) == 1


def test_shuffle_is_seeded_and_epochs_reshuffle(bench, tok) -> None:
    records = qa_records(bench.profiles, "llava", modality="text")
    first = [_rows(b) for b in make_dataset(records, tok, CFG)]
    again = [_rows(b) for b in make_dataset(records, tok, CFG)]
    other = [_rows(b) for b in make_dataset(records, tok, dataclasses.replace(CFG, seed=1))]
    assert first == again and first != other
    two = [_rows(b) for b in make_dataset(records, tok, dataclasses.replace(CFG, num_epochs=2))]
    assert len(two) == 2 * len(first) and two[: len(first)] == first
    assert sorted(sum(two[len(first):], [])) == sorted(sum(first, []))
    assert two[len(first):] != first


def test_iterator_state_round_trip(bench, tok) -> None:
    records = qa_records(bench.profiles, "llava")
    ds = make_mixed_dataset(records, tok, CFG)
    it = make_iterator(ds)
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    fresh = make_iterator(make_mixed_dataset(records, tok, CFG))
    fresh.set_state(state)
    for want in expected:
        got = next(fresh)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_per_host_sharding(bench, tok) -> None:
    records = qa_records(bench.profiles, "llava", modality="text")
    shards = []
    for index in range(3):
        cfg = dataclasses.replace(CFG, shard_index=index, shard_count=3)
        shards.append([r for b in make_dataset(records, tok, cfg) for r in _rows(b)])
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(records) // 3
    assert not set(shards[0]) & set(shards[1]) and not set(shards[1]) & set(shards[2])


def test_paired_forget_retain_and_place_batch(bench, tok) -> None:
    forget = make_dataset(qa_records(bench.split("forget_15"), "llava", modality="multi"),
                          tok, CFG)
    retain_records = qa_records(bench.split("retain_85"), "llava", modality="multi")
    retain = make_dataset(retain_records, tok, CFG)
    pairs = paired_dataset(forget, retain, seed=0)
    assert len(pairs) == len(forget)
    retain_rows = {r for b in retain for r in _rows(b)}
    it = make_iterator(pairs)
    pair = next(it)
    assert set(pair) == {"forget", "retain"} and "pixel_values" in pair["retain"]
    assert set(_rows(pair["retain"])) <= retain_rows
    placed = place_batch(pair)
    assert isinstance(placed["forget"]["input_ids"], jax.Array)
    mesh = jax.make_mesh((1,), ("data",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    on_mesh = place_batch(pair["forget"], sharding)
    assert on_mesh["pixel_values"].sharding == sharding
    np.testing.assert_array_equal(np.asarray(on_mesh["input_ids"]), pair["forget"]["input_ids"])


def test_mixed_modalities_rejected(bench, tok) -> None:
    with pytest.raises(ValueError, match="make_mixed_dataset"):
        make_dataset(qa_records(bench.profiles[:1], "llava"), tok, CFG)
    long_cfg = dataclasses.replace(CFG, max_length=16)
    with pytest.raises(ValueError, match="max_length"):
        list(make_dataset(qa_records(bench.profiles[:1], "llava", modality="text"), tok,
                          long_cfg))


def test_length_grouping_keeps_every_example_and_cuts_padding(bench, tok) -> None:
    records = (qa_records(bench.profiles, "llava", modality="text")
               + question_records(bench.profiles, "llava", modality="text"))
    grouped_cfg = dataclasses.replace(CFG, group_by_length=4, bucket_size=16)
    plain = list(make_dataset(records, tok, dataclasses.replace(CFG, bucket_size=16)))
    grouped = list(make_dataset(records, tok, grouped_cfg))
    assert sorted(sum(map(_rows, grouped), [])) == sorted(sum(map(_rows, plain), []))
    assert [_rows(b) for b in make_dataset(records, tok, grouped_cfg)] == list(map(_rows, grouped))
    waste = lambda bs: sum(b["input_ids"].size - b["attention_mask"].sum() for b in bs)  # noqa: E731
    assert waste(grouped) < 0.7 * waste(plain), (waste(grouped), waste(plain))
    for b in grouped:  # answer positions follow the loss mask in grouped batches too
        assert (b["answer_index"] >= 0).sum() == b["loss_mask"][:, 1:].sum()
    two = list(make_dataset(records, tok, dataclasses.replace(grouped_cfg, num_epochs=2)))
    assert len(two) == 2 * len(grouped) and list(map(_rows, two[len(grouped):])) != \
        list(map(_rows, grouped))
    with pytest.raises(ValueError, match="group_by_length needs a finite num_epochs"):
        make_dataset(records, tok, dataclasses.replace(grouped_cfg, num_epochs=None))


def test_blank_images_give_text_batches_the_multimodal_structure(bench, tok) -> None:
    cfg = dataclasses.replace(CFG, blank_images=True)
    records = qa_records(bench.profiles, "llava")
    img = T.image_token_id(tok, "llava")
    kinds = set()
    for batch in make_mixed_dataset(records, tok, cfg):
        assert batch["pixel_values"].shape == (4, 3, 32, 32)
        multi = bool((batch["input_ids"] == img).any())
        kinds.add(multi)
        if not multi:
            assert not batch["pixel_values"].any()
    assert kinds == {True, False}
    with pytest.raises(ValueError, match="blank_images is for the llava family"):
        make_dataset(qa_records(bench.profiles, "qwen2_vl", modality="text"), tok,
                     dataclasses.replace(cfg, family="qwen2_vl"))


@pytest.mark.parametrize("group", [0, 2])
def test_process_rows_are_the_rows_of_the_global_batches(bench, tok, group: int) -> None:
    """`PipelineConfig.rows`: each process's batches are its rows of the global batches,
    bit for bit (padded length, answer width, padding rows, images), for every modality."""
    from jaxunlearn.parallel.mesh import ProcessRows

    cfg = dataclasses.replace(CFG, blank_images=True, group_by_length=group)
    records = qa_records(bench.profiles, "llava")[:22]  # a short final batch
    whole = list(make_mixed_dataset(records, tok, cfg))
    parts = [list(make_mixed_dataset(records, tok, dataclasses.replace(cfg, rows=r)))
             for r in ((0, 1), (1, 3), (3, 4))]
    assert all(len(p) == len(whole) for p in parts)
    for i, batch in enumerate(whole):
        got = [p[i] for p in parts]
        assert all(isinstance(g, ProcessRows) and g.rows == 4 for g in got)
        assert sorted(got[0]) == sorted(batch)
        for k, v in batch.items():
            np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), v, err_msg=k)


def _encoder_of(family: str, tok):
    """The image encoder of a tiny model of `family` (tests/hf_fixtures.py)."""
    from hf_fixtures import tiny_family_config

    from jaxunlearn.data.images import encoder_for

    hf = tiny_family_config(family, tok).to_dict()
    if family == "llava_onevision":
        from jaxunlearn.modeling.llava_onevision import OneVisionConfig, host_prepare

        return encoder_for(family, OneVisionConfig.from_hf(hf), host_prepare)
    from jaxunlearn.modeling.qwen_vl import QwenVLConfig, host_prepare

    return encoder_for(family, QwenVLConfig.from_hf(hf), host_prepare)


def _process_batches(records, tok, cfg, splits):
    """`collate_rows` of every process's rows of one global batch, their image units joined
    (`LocalUnits.join`) by an all-gather faked in this process: every process's blocks
    stacked in reverse process order (blocks are placed by their spans, not by order)."""
    from jaxunlearn.data.pipeline import _pad_id, collate_rows
    from jaxunlearn.parallel.mesh import LocalUnits

    got = [collate_rows(records, tok, dataclasses.replace(cfg, rows=rows), None, _pad_id(tok))
           for rows in splits]
    pending = [g["pixel_values"] for g in got if isinstance(g.get("pixel_values"), LocalUnits)]
    if pending:
        assert len(pending) == len(got)
        with pytest.raises(TypeError, match="join every process's first"):
            np.asarray(pending[0])
        stacked = jax.tree.map(lambda *xs: np.stack(xs), *[p.sent() for p in pending[::-1]])
        for g in got:
            g["pixel_values"] = g["pixel_values"].join(lambda tree: stacked)
    return got


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl", "llava_onevision"])
def test_process_rows_with_batch_wide_image_entries_equal_the_global_batch(bench, tok, family):
    """Qwen2-VL, Qwen2.5-VL (windowed tower) and OneVision: each process decodes only its
    rows' images, of different sizes; the entries not indexed by row (patches / crop slots,
    image grids, M-RoPE positions, window permutations, gather plans) rebuilt from the image
    sizes and the gathered pixels equal `collate` of the whole batch bit for bit, for 2 and 4
    processes, a short final batch and a text-only batch."""
    from PIL import Image

    from jaxunlearn.data.pipeline import _pad_id, collate, encode_record
    from jaxunlearn.modeling.model import shared_input_keys
    from jaxunlearn.parallel.mesh import ProcessRows

    cfg = dataclasses.replace(CFG, family=family, images=_encoder_of(family, tok),
                              max_length=512)
    sizes = [(32, 32), (48, 32), (40, 72), (32, 32), (64, 40), (24, 56), (56, 56)]  # (w, h)
    multi = qa_records(bench.profiles, family, modality="multi")[:len(sizes)]
    for r, size in zip(multi, sizes):
        r["image"] = Image.open(r["image"]).convert("RGB").resize(size) \
            if not isinstance(r["image"], Image.Image) else r["image"].resize(size)
    text = qa_records(bench.profiles, family, modality="text")[:4]
    units = set()
    for records in (multi[:4], multi[4:], text):
        whole = collate([encode_record(r, tok, cfg) for r in records], cfg, _pad_id(tok))
        shared = set(shared_input_keys(whole))
        assert shared >= ({"pixel_values"} if records[0]["image"] is not None else set())
        if records[0]["image"] is not None:
            units |= {int(cfg.encoder().describe(r["image"])["units"]) for r in records}
        for splits in (((0, 2), (2, 4)), ((0, 1), (1, 2), (2, 3), (3, 4))):
            got = _process_batches(records, tok, cfg, splits)
            assert all(isinstance(g, ProcessRows) and sorted(g) == sorted(whole) for g in got)
            for k, v in whole.items():
                if k in shared:  # the whole batch's, in every process
                    for g in got:
                        np.testing.assert_array_equal(g[k], v, err_msg=k)
                else:
                    np.testing.assert_array_equal(np.concatenate([g[k] for g in got]), v,
                                                  err_msg=k)
    assert len(units) > 1  # images of different patch / crop counts
    # a process's block missing from the gather: one error, not a silently zero image
    from jaxunlearn.data.pipeline import collate_rows

    half = collate_rows(multi[:4], tok, dataclasses.replace(cfg, rows=(0, 2)), None,
                        _pad_id(tok))["pixel_values"]
    with pytest.raises(ValueError, match="do not tile the batch's"):
        half.join(lambda tree: jax.tree.map(lambda x: x[None], tree))


def test_process_rows_of_qwen_through_the_dataset(bench, tok) -> None:
    """`make_mixed_dataset` with `rows` in one process, placed by `place_batch` (the real
    all-gather of one process), gives the batches of the dataset without rows."""
    from jaxunlearn.parallel.mesh import make_mesh
    from jaxunlearn.parallel.mesh import place_batch as place

    cfg = dataclasses.replace(CFG, family="qwen2_vl", images=_qwen_images(tok))
    records = qa_records(bench.profiles, "qwen2_vl")[:14]
    whole = list(make_mixed_dataset(records, tok, cfg))
    rows = list(make_mixed_dataset(records, tok, dataclasses.replace(cfg, rows=(0, 4))))
    assert len(rows) == len(whole) and any("pixel_values" in b for b in whole)
    mesh = make_mesh({"data": 1}, jax.devices()[:1])
    for a, b in zip(rows, whole):
        assert sorted(a) == sorted(b)
        placed = place(a, mesh)
        for k in b:
            np.testing.assert_array_equal(np.asarray(placed[k]), b[k], err_msg=k)
