"""MLLMU-Bench's own evaluation rules (``franciscoliu/MLLMU-Bench``, ``eval.py``) as pure functions.

Everything here restates ``eval.py`` (commit ``0e3098e``; facts with citations in
``docs/sources/mllmu-bench.md``): the prompts per task and modality in LLaVA wording, the
answer extraction, the cloze rule, generation ROUGE / BLEU, the few-shot demonstrations, the
test-image choice and the aggregation. Nothing here runs a model.

The benchmark decodes prompt + continuation and splits on ``"ASSISTANT:"``; because its prompts
end in ``ASSISTANT:``, the scored response is the continuation up to its first generated
``ASSISTANT:``, stripped. :func:`response` applies exactly that to a continuation, in every model
family (the other families put the same user text inside their own chat template).

Differences from ``eval.py``, all deliberate: its ``random`` module is never seeded, here every
draw takes a seed (each draw equals ``eval.py`` run after ``random.seed(seed)`` at the top of the
task function); asking for more demonstrations than the set has profiles raises in ``eval.py``
and takes all profiles here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from jaxunlearn.data.schema import BLANK, LETTERS, Profile, Question

# ----------------------------------------------------------------------------- prompts

IMAGE_TOKEN = "<image>"
MARKER = "ASSISTANT:"
CLASSIFICATION_SUFFIX = "Just give ONE letter representing the answer directly."
CLOZE_SUFFIX = "Please **ONLY** provide the correct answer that should replace the [Blank]."
GENERATION_SUFFIX = {
    "multi": "Answer the question based on your trained knowledge in one sentence accurately "
             "in ENGLISH.",
    "text": "Answer the question based on your trained knowledge in one sentence in ENGLISH.",
}
MAX_NEW_TOKENS = 50  # eval.py: every LLaVA generate call, greedy (do_sample=False)
DEMO_PROFILES = {"classification": 1, "cloze": 2, "generation": 0}  # eval.py, LLaVA branch
# sets whose prompts carry the demonstrations (eval.py `mode in [...]`)
DEMO_SETS = {"classification": ("forget", "retain", "test"),
             "cloze": ("forget", "retain", "test", "celebrity"), "generation": ()}
SETS = ("forget", "test", "retain", "celebrity")
EVAL_PY_SETS = {"forget": "Forget Set Results", "test": "Test Set Results",
                "retain": "Retain Set (shared dataset) Results",
                "celebrity": "Retain Set (real person) Results"}


def _options(options: Mapping[str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(options, Mapping):
        return dict(options)
    if len(options) != len(LETTERS):
        raise ValueError(f"a classification question needs {len(LETTERS)} options, got "
                         f"{len(options)}")
    return dict(zip(LETTERS, options))


def options_text(question: str, options: Mapping[str, str] | Sequence[str]) -> str:
    """``formulate_prompt_with_options``: the question, then one ``K: text`` line per option."""
    lines = "\n".join(f"{k}: {v}" for k, v in _options(options).items())
    return f"{question}\n{lines}"


def cloze_question(question: str) -> str:
    """The cloze question as asked: blank ``__`` shown as ``[Blank]``, then the instruction."""
    return f"{question.replace('__', BLANK)}\n{CLOZE_SUFFIX}"


def user_text(q: Question) -> str:
    """The user text of a query (no role tags, no image token): what every family is asked."""
    if q.kind == "classification":
        return f"{options_text(q.question, q.options)}\n{CLASSIFICATION_SUFFIX}"
    if q.kind == "cloze":
        return cloze_question(q.question)
    return f"{q.question}\n{GENERATION_SUFFIX[q.modality]}"


def demo_text(q: Question) -> str:
    """One demonstration block in LLaVA wording (classification or cloze)."""
    if q.kind == "classification":
        head = f"USER: {IMAGE_TOKEN}\n" if q.modality == "multi" else "USER:\n"
        opts = _options(q.options)
        lines = "".join(f"{k}: {opts[k]}\n" for k in LETTERS)
        return f"{head}Question: {q.question}\n{lines}Correct Answer: {q.answer}\n"
    if q.kind == "cloze":
        head = f"USER:{IMAGE_TOKEN}\n" if q.modality == "multi" else "USER:\n"
        return f"{head}{cloze_question(q.question)}\nCorrect Answer: {q.answer}\n"
    raise ValueError(f"eval.py gives no demonstrations for {q.kind!r} questions")


def llava_prompt(q: Question, demos: Sequence[Question] = ()) -> str:
    """The full LLaVA prompt of ``eval.py`` for ``q``, with ``demos`` prepended."""
    shots = "".join(demo_text(d) for d in demos)
    if q.kind == "generation":
        if demos:
            raise ValueError("eval.py gives no demonstrations for generation questions")
        if q.modality == "multi":
            return f"USER: {IMAGE_TOKEN}\n{user_text(q)}\n{MARKER} "
        return f"USER: {user_text(q)}\n{MARKER}"
    head = f"USER: {IMAGE_TOKEN}\n" if q.modality == "multi" else "USER:\n"
    return f"{shots}{head}{user_text(q)}\n{MARKER}"


# ----------------------------------------------------------------------------- extraction

def response(continuation: str) -> str:
    """The scored response: ``(prompt + continuation).split("ASSISTANT:")[1].strip()``, the
    prompt ending in ``ASSISTANT:`` (eval.py, all three tasks)."""
    return continuation.split(MARKER)[0].strip()


def extract_letter(continuation: str, keys: Iterable[str] = LETTERS) -> str | None:
    """eval.py ``evaluate_classification``: the response's first character, upper-cased, if it
    is an option key, else ``None``."""
    text = response(continuation)
    letter = text[0].upper() if text else None
    return letter if letter in set(keys) else None


def classification_correct(continuation: str, correct_answer: str,
                           keys: Iterable[str] = LETTERS) -> bool:
    """``predicted_answer == correct_answer`` (no stripping of the ground truth)."""
    return extract_letter(continuation, keys) == correct_answer


def cloze_correct(continuation: str, ground_truth: str) -> bool:
    """eval.py ``evaluate_fill_in_the_blank``: ``ground_truth.lower() in response.lower()``,
    the ground truth not stripped (an empty one always matches)."""
    return ground_truth.lower() in response(continuation).lower()


_ROUGE = None


def rouge(ground_truth: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure, ``rouge_scorer.RougeScorer([...], use_stemmer=True)``."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer
        _ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = _ROUGE.score(ground_truth, prediction)
    return {k: float(scores[k].fmeasure) for k in ("rouge1", "rouge2", "rougeL")}


def bleu(ground_truth: str, prediction: str) -> float:
    """eval.py ``compute_bleu``: whitespace tokens, ``sentence_bleu`` with smoothing method1."""
    import warnings

    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    with warnings.catch_warnings():  # nltk warns on empty / short hypotheses
        warnings.simplefilter("ignore")
        return float(sentence_bleu([ground_truth.split()], prediction.split(),
                                   smoothing_function=SmoothingFunction().method1))


def generation_scores(ground_truth: str, continuation: str) -> dict[str, float]:
    """ROUGE-1/2/L F and BLEU of one generation answer (eval.py ``evaluate_generation``)."""
    pred = response(continuation)
    return {**rouge(ground_truth, pred), "bleu": bleu(ground_truth, pred)}


# ----------------------------------------------------------------------------- draws

@dataclass(frozen=True)
class Draw:
    """The random choices of one task over one set: demonstration profiles and, per profile,
    the index of its test image (test set only)."""

    demo_ids: tuple[str, ...]
    test_image: dict[str, int]


def draw(kind: str, set_ids: Sequence[str], seed: int,
         image_counts: Sequence[tuple[str, int]] = ()) -> Draw:
    """eval.py's draws for ``kind`` with ``random.seed(seed)`` at the top of the task function.

    ``set_ids``: the evaluated set's IDs in order (test set: the forget split's IDs).
    ``image_counts``: (ID, number of test images) of the evaluated rows in row order (test set
    only). Demonstrations: ``random.sample(set_ids, DEMO_PROFILES[kind])``; then one
    ``random.choice`` per evaluated row.
    """
    rng = random.Random(seed)
    k = min(DEMO_PROFILES[kind], len(set_ids))
    demo_ids = tuple(rng.sample(list(set_ids), k)) if DEMO_PROFILES[kind] else ()
    picks = {pid: rng.choice(range(n)) for pid, n in image_counts if n > 0}
    return Draw(demo_ids, picks)


def demonstrations(kind: str, set_name: str, demo_ids: Sequence[str],
                   source: Mapping[str, Profile]) -> dict[str, list[Question]]:
    """Per modality, the demonstrations prepended to each query of ``kind`` in ``set_name``.

    The demonstration profiles are looked up in the few-shot source (``Full_Set``); an ID not
    there contributes nothing (the celebrity set). Every question of ``kind`` of those profiles
    is a demonstration, image ones for image queries and text ones for text queries.
    """
    out: dict[str, list[Question]] = {"multi": [], "text": []}
    if set_name not in DEMO_SETS[kind]:
        return out
    for pid in demo_ids:
        if pid in source:
            for q in source[pid].eval_questions:
                if q.kind == kind:
                    out[q.modality].append(q)
    return out


def _indexed(questions: Sequence[Question], kind: str) -> list[tuple[int, Question]]:
    """(eval.py index, question): within the modality sub-list for classification, within the
    flat task list otherwise."""
    qs = [q for q in questions if q.kind == kind]
    if kind != "classification":
        return list(enumerate(qs))
    counters = {"multi": 0, "text": 0}
    out = []
    for q in qs:
        out.append((counters[q.modality], q))
        counters[q.modality] += 1
    return out


def scored_questions(kind: str, pid: str, questions: Sequence[Question],
                     demo_ids: Sequence[str], source: Mapping[str, Profile]) -> list[Question]:
    """The questions of one row that eval.py scores: those at the indices a demonstration
    profile of the same ID used are skipped (per modality)."""
    skip: set[tuple[str, int]] = set()
    if pid in demo_ids and pid in source:
        skip = {(q.modality, i) for i, q in _indexed(source[pid].eval_questions, kind)}
    return [q for i, q in _indexed(questions, kind) if (q.modality, i) not in skip]


# ----------------------------------------------------------------------------- aggregation

def accuracy(correct: int, total: int) -> float:
    """Percent, 0 when there is no question (eval.py)."""
    return correct / total * 100 if total > 0 else 0.0


def aggregate(rows: Iterable[Mapping]) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Pool per-question scores into ``{set: {task: {modality: {metric: value}}}}``.

    Each row: ``set``, ``kind``, ``modality`` and either ``correct`` (classification, cloze) or
    ``rouge1``/``rouge2``/``rougeL``/``bleu`` (generation). Accuracies are percent over all
    questions of the set and modality (0 without questions); generation metrics are means
    (fractions, as eval.py prints them), absent for a modality without questions.
    """
    sums: dict[tuple[str, str, str], dict[str, float]] = {}
    counts: dict[tuple[str, str, str], int] = {}
    for r in rows:
        key = (r["set"], r["kind"], r["modality"])
        acc = sums.setdefault(key, {})
        if r["kind"] == "generation":
            for m in ("rouge1", "rouge2", "rougeL", "bleu"):
                acc[m] = acc.get(m, 0.0) + float(r[m])
        else:
            acc["correct"] = acc.get("correct", 0.0) + float(bool(r["correct"]))
        counts[key] = counts.get(key, 0) + 1
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    sets = sorted({k[0] for k in sums}, key=lambda s: (SETS.index(s) if s in SETS else 9, s))
    for s in sets:
        for kind in ("classification", "cloze", "generation"):
            for modality in ("multi", "text"):
                n = counts.get((s, kind, modality), 0)
                if kind == "generation":
                    if n:
                        out.setdefault(s, {}).setdefault(kind, {})[modality] = {
                            m: v / n for m, v in sums[(s, kind, modality)].items()}
                elif any(k[0] == s and k[1] == kind for k in counts):
                    correct = sums.get((s, kind, modality), {}).get("correct", 0.0)
                    out.setdefault(s, {}).setdefault(kind, {})[modality] = {
                        "accuracy": accuracy(int(correct), n)}
    return out


def eval_py_results(table: Mapping) -> dict:
    """``aggregate``'s table under eval.py's result keys
    (``{output_file}_final_evaluation_results.json``)."""
    out = {}
    for s, tasks in table.items():
        block: dict[str, dict[str, float]] = {}
        if "cloze" in tasks:
            block["fill_in_the_blank"] = {
                "image_textual_accuracy": tasks["cloze"].get("multi", {}).get("accuracy", 0),
                "pure_text_accuracy": tasks["cloze"].get("text", {}).get("accuracy", 0)}
        if "classification" in tasks:
            c = tasks["classification"]
            block["classification"] = {
                "Image-Textual Question Accuracy": c.get("multi", {}).get("accuracy", 0),
                "Pure Text Question Accuracy": c.get("text", {}).get("accuracy", 0)}
        if "generation" in tasks:
            g: dict[str, float] = {}
            for modality, label in (("multi", "Image_Textual"), ("text", "Pure_Text")):
                if modality in tasks["generation"]:
                    v = tasks["generation"][modality]
                    g.update({f"Average ROUGE-1 ({label})": v["rouge1"],
                              f"Average ROUGE-2 ({label})": v["rouge2"],
                              f"Average ROUGE-L ({label})": v["rougeL"],
                              f"Average BLEU ({label})": v["bleu"]})
            block["generation"] = g
        out[EVAL_PY_SETS.get(s, s)] = block
    return out


def rows_for_test_set(test_ids: Sequence[str], forget_ids: Iterable[str]) -> list[str]:
    """Test_Set rows evaluated for a forget split: Test_Set order, filtered to its IDs
    (eval.py ``df[df['ID'].isin(id_list)]``)."""
    keep = set(forget_ids)
    return [i for i in test_ids if i in keep]


__all__ = [
    "CLASSIFICATION_SUFFIX", "CLOZE_SUFFIX", "DEMO_PROFILES", "DEMO_SETS", "Draw",
    "EVAL_PY_SETS", "GENERATION_SUFFIX", "IMAGE_TOKEN", "MARKER", "MAX_NEW_TOKENS", "SETS",
    "accuracy", "aggregate", "bleu", "classification_correct", "cloze_correct", "cloze_question",
    "demo_text", "demonstrations", "draw", "eval_py_results", "extract_letter",
    "generation_scores", "llava_prompt", "options_text", "response", "rouge",
    "rows_for_test_set", "scored_questions", "user_text",
]
