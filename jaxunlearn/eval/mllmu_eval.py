"""MLLMU-Bench's ``eval.py`` run on a model through the evaluator: the benchmark-exact table.

:mod:`jaxunlearn.eval.mllmu_rules` restates the rules of ``eval.py``
(``franciscoliu/MLLMU-Bench``); this module applies them to a model:

1. Sets (``eval.py main()``): Forget = the forget split's own rows, Test = ``Test_Set`` rows
   (paraphrased questions, transformed images) filtered to the forget IDs, Retain = the retain
   split's rows (default: the complement ``retain_(100-N)``), Celebrity = ``Retain_Set``.
2. Per set and task, the seeded draws (:func:`mllmu_rules.draw`): demonstration profiles
   (classification 1, cloze 2, from ``Full_Set``), whose questions are skipped when scoring,
   and one test image per ``Test_Set`` row.
3. Prompts: LLaVA gets ``eval.py``'s prompt string verbatim; the chat families (Qwen2-VL,
   Qwen2.5-VL, OneVision) get the same user text (demonstration blocks without their ``USER:``
   tag, the image block of an image query, then the query) as the user turn of their own chat
   template (:func:`bench_prompt`).
4. Greedy generation, ``max_new_tokens`` (``eval.py``: 50) for every task, batched by the
   evaluator's generate function in length buckets (static shapes).
5. Extraction and scoring: :func:`mllmu_rules.extract_letter` / ``cloze_correct`` /
   ``generation_scores`` (ROUGE-1/2/L F with stemmer, BLEU with smoothing method1).
6. Aggregation (:func:`mllmu_rules.aggregate`): accuracy pooled per set x modality in percent,
   generation metrics as means (fractions, as ``eval.py`` writes them).

One deliberate difference: image demonstrations are given without their images (the model
port takes one image per prompt; ``eval.py`` passes LLaVA ``[*demo_images, image]``). They keep
their text and use the text-only demonstration head ``USER:\\n``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxunlearn.data import templates as T
from jaxunlearn.data.schema import Benchmark, Profile, Question
from jaxunlearn.eval import mllmu_rules as R
from jaxunlearn.eval._atomic import atomic_write_text
from jaxunlearn.eval.evaluate import Evaluator, complement_split
from jaxunlearn.eval.records import make_record
from jaxunlearn.eval.tasks import generate_answers

KINDS = ("classification", "cloze", "generation")  # eval.py's order in the results file
MODALITY_NAMES = {"multi": "Image_Textual", "text": "Pure_Text"}
TASK_NAMES = {"classification": "classification", "cloze": "fill_in_the_blank",
              "generation": "generation"}
METRICS = {"classification": ("accuracy",), "cloze": ("accuracy",),
           "generation": ("rouge1", "rouge2", "rougeL", "bleu")}
METRIC_NAMES = {"accuracy": "accuracy (%)", "rouge1": "ROUGE-1", "rouge2": "ROUGE-2",
                "rougeL": "ROUGE-L", "bleu": "BLEU"}
RECORD_PREFIX = "bench_"  # record metric names: bench_accuracy (fraction), bench_rouge1, ...
DEMO_IMAGES_ERROR = (
    "image demonstrations with their images (eval.py passes LLaVA several images per prompt) "
    "are not supported: the model port takes one image per prompt; leave few_shot_images "
    "false (image demonstrations given as text-only ones, a documented difference)")


@dataclasses.dataclass(frozen=True)
class BenchSet:
    """One evaluated set: its rows (profiles), whether they ask ``eval`` or ``test``
    questions, and the IDs ``eval.py`` draws demonstrations from (``id_list``)."""

    rows: Sequence[Profile]
    which: str
    draw_ids: Sequence[str]


@dataclasses.dataclass(frozen=True)
class BenchItem:
    """One scored question: set, profile, the question, its demonstrations and its image."""

    set: str
    profile_id: str
    question: Question
    demos: tuple[Question, ...]
    image: Any


@dataclasses.dataclass
class BenchResult:
    """Per-question rows and the aggregated table ``{set: {task: {modality: {metric}}}}``."""

    rows: list[dict]
    table: dict

    def eval_py(self) -> dict:
        """The table under ``eval.py``'s result keys (``*_final_evaluation_results.json``)."""
        return R.eval_py_results(self.table)


def bench_sets(bench: Benchmark, forget_split: str, retain_split: str | None = None, *,
               max_profiles: int | None = None) -> dict[str, BenchSet]:
    """``eval.py``'s four sets of a forget split (``retain_split``: default its complement);
    ``max_profiles`` caps the retain and celebrity rows. Test / Celebrity are left out when
    the copy has no ``Test_Set`` / ``Retain_Set``."""
    retain_split = retain_split or complement_split(forget_split)
    forget = bench.split(forget_split)
    ids = [p.id for p in forget]
    cap = (lambda ps: list(ps[:max_profiles])) if max_profiles else list
    retain = cap(bench.split(retain_split))
    sets = {"forget": BenchSet(forget, "eval", ids)}
    if bench.splits.get("test"):
        by_id = bench.by_id()
        rows = [by_id[i] for i in R.rows_for_test_set(bench.splits["test"], ids)]
        sets["test"] = BenchSet(rows, "test", ids)
    sets["retain"] = BenchSet(retain, "eval", [p.id for p in retain])
    if bench.celebrities:
        celeb = cap(bench.celebrities)
        sets["celebrity"] = BenchSet(celeb, "eval", [p.id for p in celeb])
    return sets


def plan(kind: str, set_name: str, bset: BenchSet, source: Mapping[str, Profile], seed: int,
         max_questions: int | None = None) -> list[BenchItem]:
    """The questions ``eval.py`` scores for ``kind`` on one set, with their demonstrations and
    images (draws seeded with ``seed``); ``max_questions`` caps each modality (None = all)."""
    test = bset.which == "test"
    counts = [(p.id, len(p.test_images)) for p in bset.rows] if test else ()
    drawn = R.draw(kind, bset.draw_ids, seed, counts)
    demos = R.demonstrations(kind, set_name, drawn.demo_ids, source)
    items: list[BenchItem] = []
    taken = {"multi": 0, "text": 0}
    for p in bset.rows:
        questions = p.test_questions if test else p.eval_questions
        image = p.test_images[drawn.test_image[p.id]] if test and p.id in drawn.test_image \
            else p.image
        for q in R.scored_questions(kind, p.id, questions, drawn.demo_ids, source):
            if max_questions is not None and taken[q.modality] >= max_questions:
                continue
            taken[q.modality] += 1
            items.append(BenchItem(set_name, p.id, q, tuple(demos[q.modality]),
                                   image if q.modality == "multi" else None))
    return items


def _text_demo(q: Question) -> Question:
    return dataclasses.replace(q, modality="text") if q.modality == "multi" else q


def bench_prompt(family: str, q: Question, demos: Sequence[Question] = (),
                 system: str | None = None) -> str:
    """The prompt of one benchmark question for ``family``.

    LLaVA: ``eval.py``'s prompt (:func:`mllmu_rules.llava_prompt`), ``system`` (e.g. the
    prompting baseline's) put before it as the project's templates do. Chat families: the same
    user text (each demonstration block without its ``USER:`` line head, then the family's
    image block for an image query, then the query's user text) as the user turn of the
    family's template. Image demonstrations are given as
    text-only ones (no image; module docstring).
    """
    demos = [_text_demo(d) for d in demos]
    if family == "llava":
        prompt = R.llava_prompt(q, demos)
        return f"{system} {prompt}" if system else prompt
    head = "USER:\n"
    blocks = []
    for d in demos:
        text = R.demo_text(d)
        if not text.startswith(head):  # text demonstrations always start with it
            raise AssertionError(f"unexpected demonstration block {text[:20]!r}")
        blocks.append(text[len(head):])
    image = T.chat_format(family).image_block if q.modality == "multi" else ""
    return T.format_prompt(family, "".join(blocks) + image + R.user_text(q), False,
                           system=system)


def score(item: BenchItem, continuation: str) -> dict:
    """One per-question row: what was asked, the continuation, the response ``eval.py``
    scores and its score (``letter``/``correct``, ``correct``, or ROUGE-1/2/L + BLEU)."""
    q = item.question
    row = {"set": item.set, "kind": q.kind, "modality": q.modality,
           "profile_id": item.profile_id, "question": q.question, "reference": q.answer,
           "continuation": continuation, "response": R.response(continuation)}
    if q.kind == "classification":
        row["letter"] = R.extract_letter(continuation)
        row["correct"] = R.classification_correct(continuation, q.answer)
    elif q.kind == "cloze":
        row["correct"] = R.cloze_correct(continuation, q.answer)
    else:
        row.update(R.generation_scores(q.answer, continuation))
    return row


def evaluate_benchmark(ev: Evaluator, bench: Benchmark, forget_split: str,
                       retain_split: str | None = None, *,
                       tasks: Sequence[str] = KINDS, seed: int = 0,
                       max_new_tokens: int = R.MAX_NEW_TOKENS,
                       max_profiles: int | None = None) -> BenchResult:
    """``eval.py`` on ``ev.model``: every set x task of ``forget_split`` (module docstring).

    Reads from ``ev.settings``: ``batch_size``, ``bucket_size``, ``max_questions`` (per set,
    task and modality; null = all, as ``eval.py``), ``system_prompt`` and ``progress``. All
    questions of all sets and tasks are generated in one bucketed pass.
    """
    unknown = [t for t in tasks if t not in KINDS]
    if unknown:
        raise ValueError(f"MLLMU-Bench tasks {unknown} unknown; use {', '.join(KINDS)}")
    source = {p.id: p for p in bench.profiles}  # eval.py --few_shot_data: Full_Set
    items: list[BenchItem] = []
    for set_name, bset in bench_sets(bench, forget_split, retain_split,
                                     max_profiles=max_profiles).items():
        for kind in (k for k in KINDS if k in tasks):
            items += plan(kind, set_name, bset, source, seed, ev.settings.max_questions)
    family = ev.pipeline.family
    records = [{"prompt": bench_prompt(family, it.question, it.demos, ev.settings.system_prompt),
                "answer": None, "image": it.image, "modality": it.question.modality,
                "profile_id": it.profile_id, "kind": it.question.kind} for it in items]
    answers = generate_answers(ev.model, ev.tokenizer, records, ev.task_pipeline,
                               max_new_tokens=max_new_tokens, batch_size=ev.settings.batch_size,
                               generate_fn=ev.generate_fn, progress=ev.settings.progress)
    rows = [score(it, a) for it, a in zip(items, answers)]
    table = R.aggregate(rows)
    for set_name in bench_sets(bench, forget_split, retain_split, max_profiles=max_profiles):
        for kind in (k for k in KINDS if k in tasks):  # every set x task x modality present
            block = table.setdefault(set_name, {}).setdefault(kind, {})
            if kind != "generation":
                for m in ("multi", "text"):
                    block.setdefault(m, {"accuracy": 0.0})
    return BenchResult(rows, _ordered(table, tasks))


def _ordered(table: Mapping, tasks: Sequence[str]) -> dict:
    sets = [s for s in R.SETS if s in table] + [s for s in table if s not in R.SETS]
    return {s: {k: {m: dict(table[s][k][m]) for m in ("multi", "text") if m in table[s][k]}
                for k in KINDS if k in tasks and k in table[s]} for s in sets}


def counts(rows: Sequence[Mapping]) -> dict[tuple[str, str, str], int]:
    """Scored questions per (set, task, modality)."""
    out: dict[tuple[str, str, str], int] = {}
    for r in rows:
        key = (r["set"], r["kind"], r["modality"])
        out[key] = out.get(key, 0) + 1
    return out


def bench_records(result: BenchResult, method: str, *, protocol: str | None = None,
                  step: int | None = None) -> list[dict]:
    """Result records of the table: metrics ``bench_accuracy`` (a fraction, like every
    record), ``bench_rouge1/2/L`` and ``bench_bleu``; ``n`` = scored questions."""
    n = counts(result.rows)
    out = []
    for s, tasks in result.table.items():
        for kind, mods in tasks.items():
            for m, metrics in mods.items():
                for name, value in metrics.items():
                    v = value / 100 if name == "accuracy" else value
                    out.append(make_record(method, s, kind, m, RECORD_PREFIX + name, v,
                                           n.get((s, kind, m), 0), protocol=protocol, step=step))
    return out


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if metric == "accuracy" else f"{value:.4f}"


def markdown(tables: Mapping[str, Mapping], rows: Mapping[str, Sequence[Mapping]] | None = None
             ) -> str:
    """The benchmark table (sets x tasks x modality) of one or more models (``{label: table}``):
    one row per set, task, modality and metric, one column per model; accuracy in percent,
    generation metrics as ``eval.py`` writes them (means in [0, 1]); ``n`` = scored questions
    of the first model."""
    labels = list(tables)
    first = counts(rows[labels[0]]) if rows else {}
    keys: list[tuple[str, str, str, str]] = []
    for table in tables.values():
        for s, tasks in table.items():
            for kind, mods in tasks.items():
                for m in ("multi", "text"):
                    for metric in METRICS[kind]:
                        if m in mods and (s, kind, m, metric) not in keys:
                            keys.append((s, kind, m, metric))
    order = {s: i for i, s in enumerate(R.SETS)}
    keys.sort(key=lambda k: (order.get(k[0], 9), KINDS.index(k[1]), k[2] != "multi",
                             METRICS[k[1]].index(k[3])))
    lines = ["| Set | Task | Modality | Metric | n | " + " | ".join(labels) + " |",
             "|---|---|---|---|---:|" + "---:|" * len(labels)]
    for s, kind, m, metric in keys:
        cells = [_fmt(metric, t.get(s, {}).get(kind, {}).get(m, {}).get(metric))
                 for t in tables.values()]
        lines.append(f"| {R.EVAL_PY_SETS.get(s, s)} | {TASK_NAMES[kind]} | "
                     f"{MODALITY_NAMES[m]} | {METRIC_NAMES[metric]} | "
                     f"{first.get((s, kind, m), 0) if rows else ''} | " + " | ".join(cells)
                     + " |")
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, name: str, result: BenchResult) -> dict[str, Path]:
    """``{name}_final_evaluation_results.json`` (``eval.py``'s keys and values) and
    ``{name}_predictions.jsonl`` (one scored question per line) in ``out_dir``."""
    out = Path(out_dir)
    res = atomic_write_text(out / f"{name}_final_evaluation_results.json",
                            json.dumps(result.eval_py(), indent=2))
    pred = atomic_write_text(out / f"{name}_predictions.jsonl",
                             "".join(json.dumps(r) + "\n" for r in result.rows))
    return {res.name: res, pred.name: pred}


__all__ = ["BenchItem", "BenchResult", "BenchSet", "DEMO_IMAGES_ERROR", "KINDS",
           "bench_prompt", "bench_records", "bench_sets", "counts", "evaluate_benchmark",
           "markdown", "plan", "score", "write_results"]
