"""grain input pipelines: records -> prompt + tokens -> pixels -> bucketed, padded batches.

A *record* is a dict ``{"prompt", "answer", "image", "modality", "profile_id", "kind"}``
(``image`` is None for text-only records), built by :func:`qa_records` /
:func:`question_records`. :func:`make_dataset` turns records of one modality into a
``grain.MapDataset`` of batches:

- ``input_ids`` int32 [B, T], ``attention_mask`` int32 [B, T] (1 on real tokens),
- ``loss_mask`` float32 [B, T]: 1 where token t is an answer token (or the end token), i.e. the
  target of the logits at t-1; use ``logits[:, :-1]`` against ``input_ids[:, 1:]`` weighted by
  ``loss_mask[:, 1:]``,
- ``answer_index`` int32 [B, A]: the positions t-1 of each row's answer tokens t, padded with
  -1 to a power of two A (losses use it to run the output head on answer positions only),
- ``example_mask`` int32 [B]: 0 for rows that only pad a final short batch,
- the family's image inputs, built in the HF processor's layout and then host-prepared for
  the jitted forward by the family's image encoder (:mod:`jaxunlearn.data.images`): LLaVA
  ``pixel_values`` float32 [B, 3, H, W] (text-only batches too, all zeros, with
  ``PipelineConfig.blank_images``); Qwen-VL padded patches, ``position_ids`` [3, B, T] and
  ``vision_*`` arrays; OneVision crop slots with ``image_index`` / ``image_weight``. Qwen and
  OneVision batches also carry ``vision_token_mask`` (real patches / crops, for statistics).

T is the smallest bucket (multiple of ``bucket_size``, at most ``max_length``) that fits the
longest example, so jitted steps see a few static shapes. A batch is all-multi or all-text;
:func:`make_mixed_dataset` interleaves the two streams. Records are sharded per host
only when ``PipelineConfig.shard_index`` / ``shard_count`` say so; ``PipelineConfig.rows``
keeps the global batches but collates only one process's rows of each (``finetune`` under
several processes, every family; see :mod:`jaxunlearn.parallel.mesh`), and iterators from
:func:`make_iterator` support ``get_state()`` / ``set_state()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import grain
import jax
import numpy as np

from jaxunlearn.data import templates as T
from jaxunlearn.data.answers import answer_index
from jaxunlearn.data.images import ClipImages, ImageEncoder
from jaxunlearn.data.processors import ClipImageConfig
from jaxunlearn.data.schema import Profile
from jaxunlearn.parallel.mesh import LocalUnits, ProcessRows

Record = dict[str, Any]
Batch = dict[str, np.ndarray]


# ----------------------------------------------------------------------------- records

def qa_records(profiles: Iterable[Profile], family: str, source: str = "train",
               modality: str | None = None, **prompt_kw: Any) -> list[Record]:
    """Records from training QA (``source='train'``) or image-understanding QA."""
    out = []
    for p in profiles:
        pairs = p.train_qa if source == "train" else p.understanding_qa
        for qa in pairs:
            if modality is not None and qa.modality != modality:
                continue
            multi = qa.modality == "multi"
            out.append({"prompt": T.training_prompt(family, qa.question, multi, **prompt_kw),
                        "answer": qa.answer, "image": p.image if multi else None,
                        "modality": qa.modality, "profile_id": p.id, "kind": source})
    return out


def question_records(profiles: Iterable[Profile], family: str, which: str = "eval",
                     kind: str | None = None, modality: str | None = None,
                     with_answer: bool = True, **prompt_kw: Any) -> list[Record]:
    """Records from evaluation questions (``which='eval'``) or test questions.

    Multimodal test questions cycle through the profile's transformed test images. The answer
    is the letter for classification. ``with_answer=False`` leaves ``answer`` None (prompts for
    generation).
    """
    out = []
    for p in profiles:
        n_multi = 0
        for q in p.questions(which, kind, modality):
            image = None
            if q.modality == "multi":
                pool = p.test_images if which == "test" and p.test_images else [p.image]
                image = pool[n_multi % len(pool)]
                n_multi += 1
            out.append({"prompt": T.question_prompt(family, q, **prompt_kw),
                        "answer": q.answer if with_answer else None, "image": image,
                        "modality": q.modality, "profile_id": p.id, "kind": q.kind})
    return out


# how a trained classification question is answered: "B" or "B: <the option>"
CLASSIFICATION_ANSWERS = ("letter", "letter_option")


def trained_question_records(profiles: Iterable[Profile], family: str, kinds: Sequence[str],
                             modality: str | None = None, *, seed: int | None = None,
                             repeats: int = 1, classification_answer: str = "letter",
                             **prompt_kw: Any) -> list[Record]:
    """Evaluation questions of ``kinds`` as *training* records (a model trained on them, such
    as the demo's, must have them in its forget / retain data too).

    Classification questions come with their options reordered, so that no letter can be
    memorised: ``seed=None`` gives every question in all 4 cyclic rotations
    (:meth:`Question.rotated`); an int gives ``repeats`` random orders per question drawn
    from ``seed`` (new ones each epoch when the seed is the epoch's). Their answer is the
    letter (``classification_answer="letter"``: ``B``) or the letter and the option as the
    prompt shows it (``"letter_option"``: ``B: Vellmouth``; the benchmark's rule reads the
    first character either way)."""
    from jaxunlearn.data.schema import LETTERS, Question

    if repeats < 1 or (seed is None and repeats != 1):
        raise ValueError(f"repeats must be >= 1 (and 1 with seed=None: all 4 rotations), "
                         f"got {repeats}")
    if classification_answer not in CLASSIFICATION_ANSWERS:
        raise ValueError(f"classification_answer must be one of {CLASSIFICATION_ANSWERS}, got "
                         f"{classification_answer!r}")
    rng = None if seed is None else np.random.default_rng([seed, 7])
    out = []
    for p in profiles:
        for q in p.eval_questions:
            if q.kind not in kinds or (modality is not None and q.modality != modality):
                continue
            variants = [q]
            if q.kind == "classification":
                if rng is None:
                    variants = [q.rotated(s) for s in range(len(LETTERS))]
                else:
                    variants = []
                    for _ in range(repeats):
                        order = [int(i) for i in rng.permutation(len(q.options))]
                        options = [q.options[i] for i in order]
                        variants.append(Question(q.kind, q.modality, q.question,
                                                 LETTERS[order.index(LETTERS.index(q.answer))],
                                                 options))
            for v in variants:
                answer = v.answer
                if v.kind == "classification" and classification_answer == "letter_option":
                    answer = f"{v.answer}: {v.answer_text}"
                out.append({"prompt": T.question_prompt(family, v, **prompt_kw),
                            "answer": answer,
                            "image": p.image if v.modality == "multi" else None,
                            "modality": v.modality, "profile_id": p.id, "kind": v.kind})
    return out


# ----------------------------------------------------------------------------- batching

@dataclass(frozen=True)
class PipelineConfig:
    """How records become batches."""

    family: str = "llava"
    batch_size: int = 8
    image_token_count: int = 16  # LLaVA: image tokens per image (without `images`)
    image: ClipImageConfig = field(default_factory=lambda: ClipImageConfig(32, 32))  # LLaVA
    # the family's image encoder (jaxunlearn.data.images); None: LLaVA's CLIP encoder from
    # `image` and `image_token_count`. session.pipeline_for builds it from the model.
    images: ImageEncoder | None = None
    bucket_size: int = 32
    max_length: int = 512
    padding_side: str = "right"
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = 1  # None: repeat forever
    drop_remainder: bool = False  # False: the last batch is padded with masked-out rows
    # > 0: batch examples of similar length. After the seeded shuffle, each run of
    # group_by_length * batch_size examples is sorted by token count and cut into batches,
    # and the batch order is shuffled again: less padding, still a random order of batches.
    group_by_length: int = 0
    # width A of answer_index: None = the next power of two of the batch's longest answer
    # (a few shapes); an int fixes A for every batch (one shape; longer answers are an error)
    answer_tokens: int | None = None
    # LLaVA only: text-only batches also carry pixel_values (all zeros, and no image tokens
    # in the prompt), so both modalities share one batch structure and one compiled step.
    # Exact: no image token means the image features enter nothing and every vision-side
    # gradient is zero; the cost is one vision-tower pass per text-only batch. Statistics
    # ignore images of rows without image tokens.
    blank_images: bool = False
    # keep only shard `shard_index` of `shard_count` of the records (None: all records; the
    # commands feed every process the same global batches, see jaxunlearn.parallel.mesh)
    shard_index: int | None = None
    shard_count: int | None = None
    # (start, stop): collate only rows [start, stop) of every global batch of `batch_size`
    # rows (`parallel.mesh.process_rows`: this process's rows on the mesh). The text of the
    # whole global batch is tokenised (its padded length and answer width), images are read
    # and preprocessed for these rows only; batches are `parallel.mesh.ProcessRows`. Qwen-VL
    # and OneVision entries not indexed by row are the global batch's: their layout comes from
    # the image sizes, their pixels are joined from every process's when the batch is placed
    # (`collate_rows`, `parallel.mesh.place_batch`).
    rows: tuple[int, int] | None = None

    def encoder(self) -> ImageEncoder:
        """The image encoder of this pipeline's family."""
        if self.images is not None:
            return self.images
        if self.family != "llava":
            raise ValueError(f"PipelineConfig for family {self.family!r} needs the model's image "
                             "encoder: build it with jaxunlearn.session.pipeline_for(model, cfg) "
                             "or pass images=jaxunlearn.data.images.encoder_for(...)")
        return ClipImages(self.image, self.image_token_count)

    def buckets(self) -> tuple[int, ...]:
        """Allowed padded lengths."""
        out = list(range(self.bucket_size, self.max_length + 1, self.bucket_size))
        if not out or out[-1] != self.max_length:
            out.append(self.max_length)
        return tuple(out)


def bucket_length(length: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= ``length``."""
    for b in buckets:
        if b >= length:
            return b
    raise ValueError(f"sequence of {length} tokens exceeds max_length {buckets[-1]}; "
                     f"raise PipelineConfig.max_length or shorten the prompt")


def _encoder(config: PipelineConfig, image_fn: Callable[[Any], np.ndarray] | None):
    enc = config.encoder()
    if image_fn is None:
        return enc
    if not isinstance(enc, ClipImages):
        raise ValueError(f"image_fn replaces LLaVA's CLIP preprocessing; family "
                         f"{config.family!r} preprocesses with its own processor (drop image_fn)")
    return ClipImages(enc.config, enc.tokens, image_fn)


def encode_record(record: Record, tokenizer: Any, config: PipelineConfig,
                  image_fn: Callable[[Any], np.ndarray] | None = None, *,
                  images: bool = True) -> dict[str, Any]:
    """Tokenise one record (template already applied) and preprocess its image: the example's
    ``input_ids``, ``loss_mask`` and, for a multimodal record, ``image`` (the encoder's arrays
    of the image in the HF processor's per-image layout). ``images=False``: the image is not
    read (its token count comes from the encoder) and ``image`` is left out."""
    multi = record["image"] is not None
    enc = _encoder(config, image_fn)
    image = enc.encode(record["image"]) if multi and images else None
    tokens = (int(image["num_tokens"]) if image is not None else enc.num_tokens(record["image"])
              ) if multi else 0
    ex: dict[str, Any] = T.encode_example(tokenizer, config.family, record["prompt"],
                                          record["answer"], tokens)
    if len(ex["input_ids"]) > config.max_length:
        raise ValueError(f"example of profile {record.get('profile_id')} has "
                         f"{len(ex['input_ids'])} tokens > max_length {config.max_length}; "
                         f"raise PipelineConfig.max_length")
    if image is not None:
        ex["image"] = image
    return ex


def collate(examples: Sequence[dict[str, Any]], config: PipelineConfig, pad_id: int,
            prepare: bool = True, images: bool = True) -> Batch:
    """Pad examples to a bucket length and to ``batch_size`` rows; the image inputs in the HF
    processor's layout (``images=False``: text fields only), host-prepared for the jitted
    forward unless ``prepare=False``."""
    B = config.batch_size
    length = bucket_length(max(len(e["input_ids"]) for e in examples), config.buckets())
    ids = np.full((B, length), pad_id, np.int32)
    attn = np.zeros((B, length), np.int32)
    loss = np.zeros((B, length), np.float32)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        sl = slice(0, n) if config.padding_side == "right" else slice(length - n, length)
        ids[i, sl], attn[i, sl], loss[i, sl] = e["input_ids"], 1, e["loss_mask"]
    batch = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss,
             "answer_index": answer_index(loss, None if config.answer_tokens is None
                                          else (config.answer_tokens,)),
             "example_mask": (np.arange(B) < len(examples)).astype(np.int32)}
    if not images:
        return batch
    enc = config.encoder()
    items = [e.get("image") for e in examples] + [None] * (B - len(examples))
    images = enc.collate(items, B)
    if not images and config.blank_images:
        images = blank_pixel_values(config, B)
    batch.update(images)
    return enc.prepare(batch) if prepare else batch


def collate_rows(records: Sequence[Record], tokenizer: Any, config: PipelineConfig,
                 image_fn: Callable[[Any], np.ndarray] | None, pad_id: int) -> ProcessRows:
    """Rows ``config.rows`` of the global batch of ``records``, equal to the same rows of
    ``collate`` of all of them: text fields from the whole batch's tokens, images of these
    rows only.

    Qwen-VL / OneVision: the entries not indexed by row (``shared_input_keys``) are those of
    the whole batch. Their layout (image grids, M-RoPE positions, slots, index arrays) is
    prepared from the sizes of all the batch's images (read from file headers, not decoded).
    The pixel entry holds this process's images only (``parallel.mesh.LocalUnits``), which
    ``parallel.mesh.place_batch`` joins with the other processes' (an all-gather)."""
    start, stop = config.rows
    enc = _encoder(config, image_fn)
    described = None if isinstance(enc, ClipImages) else \
        [None if r["image"] is None else enc.describe(r["image"]) for r in records]
    counts = [0 if r["image"] is None else enc.num_tokens(r["image"]) if described is None
              else int(described[i]["num_tokens"]) for i, r in enumerate(records)]
    texts = [T.encode_example(tokenizer, config.family, r["prompt"], r["answer"], n)
             for r, n in zip(records, counts)]
    for r, ex in zip(records, texts):
        if len(ex["input_ids"]) > config.max_length:
            raise ValueError(f"example of profile {r.get('profile_id')} has "
                             f"{len(ex['input_ids'])} tokens > max_length {config.max_length}; "
                             f"raise PipelineConfig.max_length")
    full = collate(texts, dataclasses.replace(config, blank_images=False, rows=None), pad_id,
                   images=False)
    if described is not None:
        return _shared_rows(records, described, full, enc, config)
    batch = {k: v[start:stop] for k, v in full.items()}
    local = [encode_record(r, tokenizer, config, image_fn) for r in records[start:stop]]
    items = [e.get("image") for e in local] + [None] * (stop - start - len(local))
    images = enc.collate(items, stop - start)
    if not images and config.blank_images:
        images = blank_pixel_values(config, stop - start)
    batch.update(images)
    return ProcessRows(enc.prepare(batch), start, stop, config.batch_size)


def _shared_rows(records: Sequence[Record], described: list, full: Batch, enc: ImageEncoder,
                 config: PipelineConfig) -> ProcessRows:
    """`collate_rows` for batches with entries not indexed by row (Qwen-VL, OneVision)."""
    from jaxunlearn.modeling.model import shared_input_keys

    start, stop, B = *config.rows, config.batch_size
    layout = enc.collate(described + [None] * (B - len(described)), B)
    prepared = enc.prepare({**full, **layout})
    shared = set(shared_input_keys(prepared))
    batch = {k: v if k in shared else v[start:stop] for k, v in prepared.items()}
    if layout:  # this process's images decoded; the global patches / crops when placed
        images = row_images([r["image"] for r in records], described, enc, start, stop,
                            [r.get("profile_id") for r in records])
        batch["pixel_values"] = images.local(batch["pixel_values"])
    return ProcessRows(batch, start, stop, B)


@dataclass(frozen=True)
class RowImages:
    """This process's decoded images of rows ``[start, stop)`` of a global batch whose pixel
    entry is batch-wide (Qwen-VL patches, OneVision crops, images in row order): their units
    (``ImageEncoder.units``), the unit they start at in the batch's layout (``offset``), one
    process's room (``capacity``: the same in every process) and the batch's real units
    (``total``). See :func:`row_images`."""

    units: tuple[np.ndarray, ...]
    offset: int
    capacity: int
    total: int

    def local(self, target: Any) -> LocalUnits:
        """These units in place of the prepared global pixel entry ``target`` (its shape and
        dtype; zeros beyond the real units), to be joined across processes when placed
        (``parallel.mesh.place_batch``)."""
        shape, dtype = tuple(np.shape(target)), np.dtype(target.dtype)
        block = (np.concatenate(self.units) if self.units
                 else np.zeros((0, *shape[1:]), dtype))
        return LocalUnits(block, self.offset, self.capacity, self.total, shape, dtype)


def row_images(images: Sequence[Any], described: Sequence[dict | None], enc: ImageEncoder,
               start: int, stop: int, labels: Sequence[Any] | None = None) -> RowImages:
    """Decode the images of rows ``[start, stop)`` of a global batch (``images``: one source
    or None per row; ``described``: ``enc.describe`` of every row's image, read from file
    headers; rows past their end have none), checking each against its header: the pixels
    this process contributes to the batch-wide entry whose layout comes from ``described``
    (``labels``: a name per row for errors, e.g. profile ids)."""
    local = []
    for i in range(start, min(stop, len(described))):  # rows past the records: none
        d = described[i]
        if d is None:
            continue
        item = enc.encode(images[i])
        if any(not np.array_equal(item[k], v) for k, v in d.items()):
            who = f"profile {labels[i]}" if labels is not None else f"row {i}"
            raise ValueError(f"image of {who}: decoded { {k: item[k] for k in d} } but its "
                             f"header said {d}")
        local.append(enc.units(item))
    real = [int(d["units"]) for d in described if d is not None]
    return RowImages(tuple(local), sum(int(d["units"]) for d in described[:start]
                                       if d is not None),
                     (stop - start) * max(real), sum(real))


def blank_pixel_values(config: PipelineConfig, rows: int) -> dict[str, np.ndarray]:
    """All-zero LLaVA images ``{"pixel_values": [rows, 3, S, S]}`` for text-only rows
    (``PipelineConfig.blank_images``)."""
    enc = config.encoder()
    if not isinstance(enc, ClipImages):
        raise ValueError(f"blank_images is for the llava family (one image per row); "
                         f"turn it off for {config.family!r}")
    return enc.blank(rows)


def _pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pid is None:
        raise ValueError("tokenizer has neither a pad nor an eos token; set tokenizer.pad_token")
    return int(pid)


def _shard(records: Sequence[Record], config: PipelineConfig) -> list[Record]:
    if config.shard_index is None and config.shard_count is None:
        return list(records)
    index = config.shard_index or 0
    count = config.shard_count or 1
    usable = len(records) - len(records) % count  # equal work on every host
    return list(records[:usable][index::count])


def make_dataset(records: Sequence[Record], tokenizer: Any, config: PipelineConfig,
                 image_fn: Callable[[Any], np.ndarray] | None = None) -> grain.MapDataset:
    """Batches from records of a single modality (see the module docstring)."""
    if config.padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {config.padding_side!r}")
    modalities = {r["image"] is not None for r in records}
    if len(modalities) > 1:
        raise ValueError("records mix multimodal and text-only examples; split them by "
                         "modality or use make_mixed_dataset")
    if not records:
        raise ValueError("no records to batch; check the split and filters")
    if config.blank_images and config.family != "llava":
        raise ValueError(f"blank_images is for the llava family (one image per row); "
                         f"turn it off for {config.family!r}")
    pad_id = _pad_id(tokenizer)
    records = _shard(records, config)
    if config.group_by_length > 0:
        if config.num_epochs is None:
            raise ValueError("group_by_length needs a finite num_epochs (each epoch is grouped "
                             "with its own seed)")
        lengths = [token_count(r, tokenizer, config) for r in records]
        groups = [idx for epoch in range(config.num_epochs)
                  for idx in length_grouped_batches(lengths, config.batch_size,
                                                    config.group_by_length, config.seed + epoch,
                                                    config.shuffle, config.drop_remainder)]
        if config.rows is not None:
            return grain.MapDataset.source(groups).map(lambda idx: collate_rows(
                [records[i] for i in idx], tokenizer, config, image_fn, pad_id))
        return grain.MapDataset.source(groups).map(lambda idx: collate(
            [encode_record(records[i], tokenizer, config, image_fn) for i in idx], config,
            pad_id))
    ds = grain.MapDataset.source(records)
    if config.shuffle:
        ds = ds.shuffle(seed=config.seed)
    if config.num_epochs != 1:
        ds = ds.repeat(config.num_epochs)
    if config.rows is not None:  # records in batches, each process encodes its rows
        return ds.batch(config.batch_size, drop_remainder=config.drop_remainder,
                        batch_fn=lambda recs: collate_rows(recs, tokenizer, config, image_fn,
                                                           pad_id))
    ds = ds.map(lambda r: encode_record(r, tokenizer, config, image_fn))
    return ds.batch(config.batch_size, drop_remainder=config.drop_remainder,
                    batch_fn=lambda exs: collate(exs, config, pad_id))


def token_count(record: Record, tokenizer: Any, config: PipelineConfig) -> int:
    """Length of a record's encoded example (image placeholders included)."""
    multi = record["image"] is not None
    n = config.encoder().num_tokens(record["image"]) if multi else 0
    ex = T.encode_example(tokenizer, config.family, record["prompt"], record["answer"], n)
    return len(ex["input_ids"])


def length_grouped_batches(lengths: Sequence[int], batch_size: int, group: int, seed: int,
                           shuffle: bool = True, drop_remainder: bool = False) -> list[list[int]]:
    """Index lists of batches whose members have similar lengths (see
    ``PipelineConfig.group_by_length``). Every index appears exactly once (the last batch
    may be short unless ``drop_remainder``)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    span = batch_size * group
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span].tolist(), key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    # every chunk but the last is a whole number of batches: one short batch at most
    if drop_remainder:
        batches = [b for b in batches if len(b) == batch_size]
    if shuffle:
        batches = [batches[int(i)] for i in rng.permutation(len(batches))]
    return batches


def interleave(datasets: Sequence[grain.MapDataset], seed: int,
               shuffle: bool = True) -> grain.MapDataset:
    """All elements of finite ``datasets`` in one dataset, order shuffled by ``seed``."""
    sizes = [len(d) for d in datasets]
    offsets = np.cumsum([0, *sizes])

    def get(i: int) -> Any:
        k = int(np.searchsorted(offsets, i, side="right")) - 1
        return datasets[k][int(i - offsets[k])]

    ds = grain.MapDataset.range(int(offsets[-1]))
    return (ds.shuffle(seed=seed) if shuffle else ds).map(get)


def make_mixed_dataset(records: Sequence[Record], tokenizer: Any, config: PipelineConfig,
                       image_fn: Callable[[Any], np.ndarray] | None = None) -> grain.MapDataset:
    """Multimodal and text-only batches (each batch one modality), interleaved by seed.

    Needs finite ``num_epochs``.
    """
    if config.num_epochs is None:
        raise ValueError("make_mixed_dataset needs a finite num_epochs; repeat the result "
                         "with .repeat() instead")
    parts = [[r for r in records if r["image"] is not None],
             [r for r in records if r["image"] is None]]
    sets = [make_dataset(p, tokenizer, config, image_fn) for p in parts if p]
    return interleave(sets, config.seed, config.shuffle)


def paired_dataset(forget: grain.MapDataset, retain: grain.MapDataset,
                   seed: int = 0) -> grain.MapDataset:
    """``{"forget": batch, "retain": batch}`` per forget batch; retain batches in a seeded
    random order, cycled when the retain set has fewer batches."""
    if len(retain) == 0:
        raise ValueError("retain dataset is empty; paired batches need retain data")
    order = np.random.default_rng(seed).permutation(len(retain))
    return grain.MapDataset.range(len(forget)).map(
        lambda i: {"forget": forget[i], "retain": retain[int(order[i % len(order)])]})


def make_iterator(ds: grain.MapDataset) -> grain.DatasetIterator:
    """A checkpointable iterator (``get_state()`` / ``set_state(state)``)."""
    return iter(ds.to_iter_dataset())


def place_batch(batch: Any, sharding: jax.sharding.Sharding | None = None) -> Any:
    """Move a (nested) numpy batch to devices, optionally with a sharding.

    On several hosts each host passes its local rows and ``sharding`` describes the global
    array (``jax.make_array_from_process_local_data``).
    """
    if sharding is None:
        return jax.device_put(batch)
    if jax.process_count() > 1:
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    return jax.device_put(batch, sharding)
