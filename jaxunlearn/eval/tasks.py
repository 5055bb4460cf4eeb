"""MLLMU-Bench evaluation tasks on a model: classification, generation, cloze, likelihood, NLL.

Every task works on multimodal and text-only questions. Prompts are tokenised once, grouped
by padded length (the pipeline's buckets) and batched with a fixed batch size, left-padded,
so a whole evaluation compiles only a few shapes: one per (modality, length bucket) for
generation (:func:`jaxunlearn.generate`, greedy, jitted KV-cache decoding) and for the
likelihood forward. Short final batches are filled with copies of their last row, whose
outputs are dropped. With several processes each batch is one computation over the global
batch, its rows split between the processes (:mod:`jaxunlearn.eval.spmd`).

Each task takes an :class:`~jaxunlearn.eval.evaluate.Evaluator` (model, tokenizer, pipeline,
settings, judge and generate function; a fake ``generate_fn`` in tests) and returns a
:class:`TaskResult`: result records (see :mod:`jaxunlearn.eval.records`) and one prediction
dict per question (for reports and debugging).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.data import templates as T
from jaxunlearn.data.pipeline import PipelineConfig, bucket_length, encode_record, qa_records
from jaxunlearn.data.images import ClipImages
from jaxunlearn.data.pipeline import blank_pixel_values, question_records, row_images
from jaxunlearn.data.schema import LETTERS, Profile, Question
from jaxunlearn.eval import metrics as M
from jaxunlearn.eval import spmd
from jaxunlearn.eval.records import make_record
from jaxunlearn.modeling.model import forward_logits
from jaxunlearn.objectives.nll import token_logprobs
from jaxunlearn.parallel import distributed
from jaxunlearn.train.typed import field

if TYPE_CHECKING:
    from jaxunlearn.eval.evaluate import Evaluator

GenerateFn = Callable[..., np.ndarray]
Record = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """How questions are asked and answers scored (the `eval:` section's settings)."""

    batch_size: int = field(8, "questions per generation / scoring batch")
    classification_tokens: int = field(4, "new tokens of a letter answer (MLLMU-Bench: the "
                                          "first character decides)")
    generation_tokens: int = field(50, "new tokens of a free answer")
    cloze_tokens: int = field(16, "new tokens of a cloze answer")
    likelihood: bool = field(True, "also score the options by likelihood")
    rotations: bool = field(False, "also ask every classification question with its options "
                            "rotated (shifts 1-3): rotated_accuracy = mean over the 4 "
                            "rotations, circular_accuracy (and, with likelihood, "
                            "circular_likelihood_accuracy) = correct in all of them "
                            "(MMBench's circular evaluation)")
    likelihood_target: str = field("text", "what is scored: the option text or its letter",
                                   choices=("text", "letter"))
    system_prompt: str | None = field(None, "a system prompt for every question")
    few_shot: tuple[tuple[str, str], ...] = field(
        (), "(user, answer) text turns before every question")
    max_questions: int | None = field(None, "questions per (set, task, modality); null = all")
    judge_metrics: tuple[str, ...] = field(("factuality",), "judge scores of free answers")
    bucket_size: int | None = field(None, "prompt length buckets; null = the pipeline's")
    progress: bool = field(True, "progress bars on stderr")

    def pipeline(self, pipe: PipelineConfig) -> PipelineConfig:
        """``pipe`` with this config's length buckets (fewer buckets, fewer compilations)."""
        if self.bucket_size is None:
            return pipe
        return dataclasses.replace(pipe, bucket_size=self.bucket_size)

    def prompt_kw(self) -> dict[str, Any]:
        """Keyword arguments of :func:`templates.format_prompt`."""
        kw: dict[str, Any] = {}
        if self.system_prompt:
            kw["system"] = self.system_prompt
        if self.few_shot:
            kw["few_shot"] = tuple(tuple(t) for t in self.few_shot)
        return kw

    def max_tokens(self, kind: str) -> int:
        return {"classification": self.classification_tokens,
                "generation": self.generation_tokens, "cloze": self.cloze_tokens}[kind]


@dataclasses.dataclass
class TaskResult:
    """Result records and per-question predictions of one task run."""

    records: list[Record]
    predictions: list[dict]

    def __iadd__(self, other: "TaskResult") -> "TaskResult":
        self.records += other.records
        self.predictions += other.predictions
        return self


@dataclasses.dataclass(frozen=True)
class Tag:
    """Where a task's records go: method, set, modality, and optional protocol/step."""

    method: str = "vanilla"
    set: str = "forget"
    modality: str = "multi"
    protocol: str | None = None
    step: int | None = None

    def record(self, task: str, metric: str, value: float | None, n: int) -> list[Record]:
        """A one-record list, or [] when there is no value (no questions)."""
        if value is None:
            return []
        return [make_record(self.method, self.set, task, self.modality, metric, value, n,
                            protocol=self.protocol, step=self.step)]


# ------------------------------------------------------------------------ batching

def _encode(records: Sequence[Record], tokenizer: Any, pipe: PipelineConfig,
            spread: spmd.Spread | None = None) -> list[dict]:
    """Tokenised examples with their images preprocessed; when ``spread`` gives this process
    a block of rows, images are left for :func:`_batches` to read for those rows only."""
    if spread is None or spread.rows is None:
        return [encode_record(r, tokenizer, pipe) for r in records]
    return [{**encode_record(r, tokenizer, pipe, images=False), "image_src": r["image"],
             "profile_id": r.get("profile_id")} for r in records]


def _batches(examples: Sequence[dict], pipe: PipelineConfig, batch_size: int,
             pad_id: int, spread: spmd.Spread | None = None
             ) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
    """(example indices, left-padded batch) grouped by length bucket, fixed batch size.

    Image inputs are in the HF processor's layout (see :mod:`jaxunlearn.data.images`); pass
    them on with :func:`model_image_inputs`. When ``spread`` gives this process a block of
    rows (one process of several, :mod:`jaxunlearn.eval.spmd`; examples of :func:`_encode`
    with that spread) only those rows' images are decoded: a LLaVA batch holds only those
    rows; a Qwen-VL / OneVision batch holds the whole global batch, its image layout built
    from the image sizes (file headers) with zero pixels, and the decoded images of the
    rows go to ``spread.images``, which ``spread.place`` puts in the prepared batch."""
    rows = spread.rows if spread is not None else None
    buckets = pipe.buckets()
    groups: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault(bucket_length(len(e["input_ids"]), buckets), []).append(i)
    for length in sorted(groups):
        idx = groups[length]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            rows_of = chunk + [chunk[-1]] * (batch_size - len(chunk))
            ids = np.full((batch_size, length), pad_id, np.int32)
            attn = np.zeros((batch_size, length), np.int32)
            loss = np.zeros((batch_size, length), np.float32)
            for r, i in enumerate(rows_of):
                e = examples[i]
                n = len(e["input_ids"])
                ids[r, length - n:], attn[r, length - n:] = e["input_ids"], 1
                if r < len(chunk):
                    loss[r, length - n:] = e["loss_mask"]
            batch = {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}
            enc = pipe.encoder()
            if rows is None:
                items = [examples[i].get("image") for i in rows_of]
            elif isinstance(enc, ClipImages):  # this process's rows only, their images read here
                batch = {k: v[rows[0]:rows[1]] for k, v in batch.items()}
                src = [examples[i].get("image_src") for i in rows_of[rows[0]:rows[1]]]
                items = [None if x is None else enc.encode(x) for x in src]
            else:  # the batch's image layout from the sizes; this process's images decoded
                src = [examples[i].get("image_src") for i in rows_of]
                items = [None if x is None else enc.describe(x) for x in src]
                spread.images = (row_images(src, items, enc, *rows,
                                            [examples[i].get("profile_id") for i in rows_of])
                                 if any(x is not None for x in src) else None)
            # images in the HF processor's layout (Model.host_inputs / generate prepare them)
            images = enc.collate(items, len(items))
            if not images and pipe.blank_images:  # text-only rows share the multimodal programs
                images = blank_pixel_values(pipe, len(items))
            batch.update(images)
            yield chunk, batch


def model_image_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The raw image inputs of an evaluation batch (``pixel_values`` and the family's extras
    such as ``image_grid_thw``, ``image_sizes``, ``crop_slots``), keyword arguments of
    ``generate`` / ``Model.host_inputs``."""
    return {k: v for k, v in batch.items()
            if k not in ("input_ids", "attention_mask", "loss_mask")}


def _pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id
    return int(tokenizer.eos_token_id if pid is None else pid)


def decode_answers(tokenizer: Any, tokens: np.ndarray, eos_id: int | None) -> list[str]:
    """New tokens [B, n] -> stripped strings, cut at the first EOS, special tokens skipped."""
    rows = []
    for row in np.asarray(tokens).tolist():
        if eos_id is not None and eos_id in row:
            row = row[:row.index(eos_id)]
        rows.append(row)
    return [s.strip() for s in tokenizer.batch_decode(rows, skip_special_tokens=True)]


def generate_answers(model: Any, tokenizer: Any, records: Sequence[Record],
                     pipe: PipelineConfig, *, max_new_tokens: int, batch_size: int = 8,
                     generate_fn: GenerateFn | None = None,
                     progress: bool = False, desc: str = "generate") -> list[str]:
    """Greedy answers to ``records`` (prompts of one modality or mixed), in record order;
    ``desc`` labels the progress bar (and the log line of a run over several processes,
    where ``generate_fn`` gets ``placement=`` and returns the global batch's tokens:
    :mod:`jaxunlearn.eval.spmd`)."""
    if generate_fn is None:
        from jaxunlearn.modeling.generate import generate as generate_fn
    if not records:
        return []
    spread = spmd.spread_for(batch_size)
    if spread is not None:
        model, batch_size = spmd.on_mesh(model), spread.batch_size
    placement = {"placement": spread} if spread is not None else {}
    prompts = [{**r, "answer": None} for r in records]
    eos = T.end_token_id(tokenizer, pipe.family)
    pad = _pad_id(tokenizer)
    answers: list[str | None] = [None] * len(records)
    for part in _by_modality(prompts):
        examples = _encode([prompts[i] for i in part], tokenizer, pipe, spread)
        for chunk, batch in _progress(_batches(examples, pipe, batch_size, pad, spread), progress,
                                      len(examples) // batch_size + 1, desc):
            images = model_image_inputs(batch)
            out = generate_fn(model, batch["input_ids"], batch["attention_mask"],
                              images.pop("pixel_values", None), max_new_tokens=max_new_tokens,
                              eos_token_id=eos, pad_token_id=pad, **placement, **images)
            texts = decode_answers(tokenizer, np.asarray(out)[:len(chunk)], eos)
            for i, text in zip(chunk, texts):
                answers[part[i]] = text
    if spread is not None:
        spread.log(desc)
    return [a if a is not None else "" for a in answers]


def _by_modality(records: Sequence[Record]) -> list[list[int]]:
    multi = [i for i, r in enumerate(records) if r["image"] is not None]
    text = [i for i, r in enumerate(records) if r["image"] is None]
    return [p for p in (multi, text) if p]


def _progress(it, enabled: bool, total: int, desc: str):
    if not enabled:
        return it
    from tqdm import tqdm
    return tqdm(it, total=total, desc=desc, unit="batch")


# ------------------------------------------------------------------------ likelihood

@functools.partial(jax.jit, static_argnames=("graphdef", "dtype"))
def _answer_logprob(graphdef, params, inputs, loss_mask, dtype=None):
    """(sum of answer-token log-probs [B], answer-token count [B])."""
    logits = forward_logits(graphdef, params, inputs, dtype=dtype)
    lp = token_logprobs(logits, inputs["input_ids"])
    w = loss_mask[:, 1:].astype(jnp.float32)
    return jnp.sum(lp * w, axis=-1), jnp.sum(w, axis=-1)


def answer_logprobs(model: Any, tokenizer: Any, records: Sequence[Record],
                    pipe: PipelineConfig, *, batch_size: int = 8, include_end: bool = True,
                    progress: bool = False, desc: str = "score"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per record: (sum log p(answer | prompt), number of answer tokens), one forward per batch.

    ``include_end=False`` leaves the end-of-answer token out of the sum. ``desc`` labels
    the progress bar (and the log line of a run over several processes, where each batch is
    one computation over the global batch and the sums are gathered to every process:
    :mod:`jaxunlearn.eval.spmd`).
    """
    if not records:
        return np.zeros(0), np.zeros(0)
    spread = spmd.spread_for(batch_size)
    if spread is not None:
        model, batch_size = spmd.on_mesh(model), spread.batch_size
    logp = np.zeros(len(records))
    count = np.zeros(len(records))
    pad = _pad_id(tokenizer)
    for part in _by_modality(records):
        examples = _encode([records[i] for i in part], tokenizer, pipe, spread)
        if not include_end:
            for e in examples:
                e["loss_mask"] = e["loss_mask"].copy()
                e["loss_mask"][-1] = 0.0
        for chunk, batch in _progress(_batches(examples, pipe, batch_size, pad, spread), progress,
                                      len(examples) // batch_size + 1, desc):
            images = model_image_inputs(batch)
            inputs = model.host_inputs(batch["input_ids"], batch["attention_mask"],
                                       images.pop("pixel_values", None), images)
            if spread is None:
                mask = jnp.asarray(batch["loss_mask"])
            else:
                inputs = spread.place({**inputs, "loss_mask": batch["loss_mask"]})
                mask = inputs.pop("loss_mask")
            s, n = _answer_logprob(model.graphdef, model.params, inputs, mask,
                                   dtype=model.compute_dtype)
            s, n = spmd.host_rows(spread, s), spmd.host_rows(spread, n)
            for r, i in enumerate(chunk):
                logp[part[i]], count[part[i]] = s[r], n[r]
    if spread is not None:
        spread.log(desc)
    return logp, count


def mean_answer_nll(model: Any, tokenizer: Any, records: Sequence[Record],
                    pipe: PipelineConfig, *, batch_size: int = 8) -> tuple[float | None, int]:
    """Mean NLL over all answer tokens of ``records`` (token-weighted) and the token count."""
    logp, count = answer_logprobs(model, tokenizer, records, pipe, batch_size=batch_size,
                                  desc="nll")
    total = int(count.sum())
    return (float(-logp.sum() / total) if total else None), total


# ------------------------------------------------------------------------ questions

def _questions(profiles: Sequence[Profile], pipe: PipelineConfig, kind: str, modality: str,
               which: str, cfg: EvalConfig) -> tuple[list[Record], list[Question]]:
    records = question_records(profiles, pipe.family, which, kind, modality, **cfg.prompt_kw())
    qs = [q for p in profiles for q in p.questions(which, kind, modality)]
    if cfg.max_questions is not None:
        records, qs = records[:cfg.max_questions], qs[:cfg.max_questions]
    return records, qs


def _prediction(rec: Record, q: Question | None, answer: str, **scores: Any) -> dict:
    return {"profile_id": rec["profile_id"], "kind": rec["kind"], "modality": rec["modality"],
            "question": q.question if q is not None else rec["prompt"],
            "reference": q.answer if q is not None else rec["answer"],
            "prediction": answer, **scores}


def rotations(records: Sequence[Record], qs: Sequence[Question], family: str,
              cfg: EvalConfig) -> list[tuple[list[Record], list[Question]]]:
    """The classification questions as asked: unrotated, then (with ``cfg.rotations``) each
    further cyclic rotation of the options (:func:`rotated_records`)."""
    shifts = range(1, len(LETTERS)) if cfg.rotations else range(0)
    return [(list(records), list(qs))] + [rotated_records(records, qs, family, cfg, s)
                                          for s in shifts]


def rotated_records(records: Sequence[Record], qs: Sequence[Question], family: str,
                    cfg: EvalConfig, shift: int) -> tuple[list[Record], list[Question]]:
    """The classification ``records`` asked with their options rotated by ``shift``
    (:meth:`Question.rotated`); image, profile and modality unchanged."""
    rqs = [q.rotated(shift) for q in qs]
    out = [{**r, "prompt": T.question_prompt(family, rq, **cfg.prompt_kw()),
            "answer": rq.answer} for r, rq in zip(records, rqs)]
    return out, rqs


def run_classification(ev: Evaluator, profiles: Sequence[Profile], tag: Tag, *,
                       which: str = "eval") -> TaskResult:
    """Classification by generated letter (MLLMU-Bench rule, :func:`metrics.letter_of`).

    Records: ``accuracy`` and ``no_letter`` (share of answers without a valid letter); with
    ``settings.rotations`` also ``rotated_accuracy`` (mean over the 4 cyclic rotations of
    the options) and ``circular_accuracy`` (correct in every rotation).
    """
    cfg, pipe = ev.settings, ev.task_pipeline
    records, qs = _questions(profiles, pipe, "classification", tag.modality, which, cfg)
    n = len(qs)
    asked, truth = [], []
    for recs, rqs in rotations(records, qs, pipe.family, cfg):
        asked += recs
        truth += rqs
    answers = generate_answers(ev.model, ev.tokenizer, asked, pipe,
                               max_new_tokens=cfg.classification_tokens,
                               batch_size=cfg.batch_size, generate_fn=ev.generate_fn,
                               progress=cfg.progress, desc="classification")
    letters = [M.letter_of(a) for a in answers]
    hits = [ltr == q.answer for ltr, q in zip(letters, truth)]
    correct = hits[:n]
    preds = [_prediction(r, q, a, letter=ltr, correct=c)
             for r, q, a, ltr, c in zip(records, qs, answers, letters, correct)]
    out = tag.record("classification", "accuracy", M.accuracy(correct), n)
    out += tag.record("classification", "no_letter",
                      M.accuracy([x is None for x in letters[:n]]), n)
    if cfg.rotations and n:
        per_q = np.asarray(hits, bool).reshape(len(LETTERS), n)
        for i, pred in enumerate(preds):
            pred["rotations_correct"] = per_q[:, i].tolist()
        out += tag.record("classification", "rotated_accuracy", float(per_q.mean()), n)
        out += tag.record("classification", "circular_accuracy",
                          float(per_q.all(axis=0).mean()), n)
    return TaskResult(out, preds)


def option_records(records: Sequence[Record], qs: Sequence[Question],
                   target: str = "text") -> list[Record]:
    """Four scoring records per question: the prompt followed by each option (letter or text)."""
    if target not in ("text", "letter"):
        raise ValueError(f"likelihood_target must be 'text' or 'letter', got {target!r}")
    out = []
    for r, q in zip(records, qs):
        for letter, option in zip(LETTERS, q.options):
            out.append({**r, "answer": option if target == "text" else letter})
    return out


def run_likelihood_classification(ev: Evaluator, profiles: Sequence[Profile], tag: Tag, *,
                                  which: str = "eval") -> TaskResult:
    """Classification by option likelihood: argmax over options of sum log p(option | prompt).

    No generation: one forward per batch of (question, option) rows. ``cfg.likelihood_target``
    scores the option text (default) or its letter; the end token is not counted.
    Record: ``likelihood_accuracy`` (task ``classification``); with ``settings.rotations``
    also ``circular_likelihood_accuracy`` (the most likely option is the right one in all 4
    rotations of the options).
    """
    cfg, pipe = ev.settings, ev.task_pipeline
    records, qs = _questions(profiles, pipe, "classification", tag.modality, which, cfg)
    n = len(qs)
    rows, truth = [], []
    for recs, rqs in rotations(records, qs, pipe.family, cfg):
        rows += option_records(recs, rqs, cfg.likelihood_target)
        truth += rqs
    logp, _ = answer_logprobs(ev.model, ev.tokenizer, rows, pipe, batch_size=cfg.batch_size,
                              include_end=False, progress=cfg.progress, desc="likelihood")
    scores = logp.reshape(len(truth), len(LETTERS)) if n else np.zeros((0, len(LETTERS)))
    choice = M.option_likelihood_choice(scores) if n else np.zeros(0, int)
    hits = [LETTERS[int(c)] == q.answer for c, q in zip(choice, truth)]
    correct = hits[:n]
    preds = [_prediction(r, q, LETTERS[int(c)], option_logps=s.tolist(), correct=ok)
             for r, q, c, s, ok in zip(records, qs, choice, scores, correct)]
    out = tag.record("classification", "likelihood_accuracy", M.accuracy(correct), n)
    if cfg.rotations and n:
        per_q = np.asarray(hits, bool).reshape(len(LETTERS), n)
        out += tag.record("classification", "circular_likelihood_accuracy",
                          float(per_q.all(axis=0).mean()), n)
    return TaskResult(out, preds)


def score_free_answers(answers: Sequence[str], references: Sequence[str],
                       questions: Sequence[str], tag: Tag, task: str, *,
                       judge: Any = None,
                       judge_metrics: Sequence[str] = ("factuality",)) -> tuple[list[Record],
                                                                               list[dict]]:
    """ROUGE-1/2/L, degeneration (always) and judge scores (when a judge is set).

    Returns (records, per-item score dicts). Judge scores that could not be parsed are left
    out of the mean; the record's ``n`` counts the scored items.
    """
    rouge = M.rouge_scores(answers, references)
    deg = M.degeneration(answers)
    n = len(answers)
    recs: list[Record] = []
    for t in M.ROUGE_TYPES:
        recs += tag.record(task, t, rouge["mean"][t], n)
    recs += tag.record(task, "degeneration", deg["degeneration"], n)
    items: list[dict] = [{t: rouge["per_item"][t][i] for t in M.ROUGE_TYPES}
                         | {"degenerate": deg["flags"][i]["degenerate"]} for i in range(n)]
    if judge is not None:
        triples = list(zip(questions, references, answers))
        for metric in judge_metrics:
            # several processes: process 0 asks the judge, every process gets the scores
            scores = distributed.from_primary(
                lambda m=metric: [r.score for r in judge.score_many(m, triples)])
            for item, score in zip(items, scores):
                item[metric] = score
            valid = [s for s in scores if s is not None]
            recs += tag.record(task, metric, float(np.mean(valid)) if valid else None,
                               len(valid))
    return recs, items


def run_generation(ev: Evaluator, profiles: Sequence[Profile], tag: Tag, *,
                   which: str = "eval") -> TaskResult:
    """Free generation (``settings.generation_tokens`` new tokens) scored by ROUGE (stemmer
    on). Records: ``rouge1``, ``rouge2``, ``rougeL`` (F-measure), ``degeneration``, and the
    judge's ``settings.judge_metrics`` when the evaluator has a judge.
    """
    cfg, pipe = ev.settings, ev.task_pipeline
    records, qs = _questions(profiles, pipe, "generation", tag.modality, which, cfg)
    answers = generate_answers(ev.model, ev.tokenizer, records, pipe,
                               max_new_tokens=cfg.generation_tokens, batch_size=cfg.batch_size,
                               generate_fn=ev.generate_fn, progress=cfg.progress,
                               desc="generation")
    recs, items = score_free_answers(answers, [q.answer for q in qs], [q.question for q in qs],
                                     tag, "generation", judge=ev.judge,
                                     judge_metrics=cfg.judge_metrics)
    preds = [_prediction(r, q, a, **it) for r, q, a, it in zip(records, qs, answers, items)]
    return TaskResult(recs, preds)


def run_cloze(ev: Evaluator, profiles: Sequence[Profile], tag: Tag, *,
              which: str = "eval") -> TaskResult:
    """Cloze: correct when the lower-cased reference is a substring of the answer.

    Records: ``accuracy`` and ``degeneration``.
    """
    cfg, pipe = ev.settings, ev.task_pipeline
    records, qs = _questions(profiles, pipe, "cloze", tag.modality, which, cfg)
    answers = generate_answers(ev.model, ev.tokenizer, records, pipe,
                               max_new_tokens=cfg.cloze_tokens, batch_size=cfg.batch_size,
                               generate_fn=ev.generate_fn, progress=cfg.progress, desc="cloze")
    correct = [M.cloze_correct(a, q.answer) for a, q in zip(answers, qs)]
    deg = M.degeneration(answers)
    preds = [_prediction(r, q, a, correct=c) for r, q, a, c in zip(records, qs, answers, correct)]
    out = tag.record("cloze", "accuracy", M.accuracy(correct), len(qs))
    out += tag.record("cloze", "degeneration", deg["degeneration"], len(qs))
    return TaskResult(out, preds)


def run_qa_generation(ev: Evaluator, profiles: Sequence[Profile], tag: Tag, task: str, *,
                      source: str = "train") -> TaskResult:
    """Generation on QA pairs (``source='train'`` or ``'understanding'``) of one modality.

    Used by S-MLLMUn (image / text memory on training QA, image understanding).
    """
    cfg, pipe = ev.settings, ev.task_pipeline
    records = qa_records(profiles, pipe.family, source, tag.modality, **cfg.prompt_kw())
    pairs = [qa for p in profiles
             for qa in (p.train_qa if source == "train" else p.understanding_qa)
             if qa.modality == tag.modality]
    if cfg.max_questions is not None:
        records, pairs = records[:cfg.max_questions], pairs[:cfg.max_questions]
    answers = generate_answers(ev.model, ev.tokenizer, records, pipe,
                               max_new_tokens=cfg.generation_tokens, batch_size=cfg.batch_size,
                               generate_fn=ev.generate_fn, progress=cfg.progress, desc=task)
    recs, items = score_free_answers(answers, [qa.answer for qa in pairs],
                                     [qa.question for qa in pairs], tag, task, judge=ev.judge,
                                     judge_metrics=cfg.judge_metrics)
    preds = [{"profile_id": r["profile_id"], "kind": task, "modality": r["modality"],
              "question": qa.question, "reference": qa.answer, "prediction": a, **it}
             for r, qa, a, it in zip(records, pairs, answers, items)]
    return TaskResult(recs, preds)


def run_nll(ev: Evaluator, profiles: Sequence[Profile], tag: Tag) -> TaskResult:
    """Mean answer-token NLL on the profiles' training QA: record (task ``qa``, metric ``nll``)."""
    records = qa_records(profiles, ev.pipeline.family, "train", tag.modality)
    nll, n = mean_answer_nll(ev.model, ev.tokenizer, records, ev.task_pipeline,
                             batch_size=ev.settings.batch_size)
    return TaskResult(tag.record("qa", "nll", nll, n), [])


TASK_RUNNERS: dict[str, Callable[..., TaskResult]] = {
    "classification": run_classification,
    "generation": run_generation,
    "cloze": run_cloze,
}


def run_task(kind: str, ev: Evaluator, profiles: Sequence[Profile], tag: Tag, *,
             which: str = "eval") -> TaskResult:
    """One task by name (``classification`` also runs likelihood scoring if enabled)."""
    if kind not in TASK_RUNNERS:
        raise ValueError(f"unknown task {kind!r}; choose from {sorted(TASK_RUNNERS)}")
    result = TASK_RUNNERS[kind](ev, profiles, tag, which=which)
    if kind == "classification" and ev.settings.likelihood:
        result += run_likelihood_classification(ev, profiles, tag, which=which)
    return result
