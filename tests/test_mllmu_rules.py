"""MLLMU-Bench scoring rules on canned model outputs.

Every expected value below is written from reading ``franciscoliu/MLLMU-Bench`` ``eval.py``
(commit ``0e3098e``), not from running it:

- letter: ``evaluate_classification``: ``generated_text.split("ASSISTANT:")[1].strip()`` on the
  decoded prompt + continuation (the prompt ends in ``ASSISTANT:``), then
  ``assistant_response[0].upper()`` if it is an option key, else ``None``; correct iff
  ``predicted_answer == correct_answer``;
- cloze: ``evaluate_fill_in_the_blank``: the same split, then
  ``ground_truth.lower() in assistant_response.lower()``;
- generation: ``evaluate_generation`` + ``compute_bleu``: ROUGE-1/2/L F with
  ``RougeScorer(..., use_stemmer=True)``, ``sentence_bleu([gt.split()], pred.split(),
  smoothing_function=SmoothingFunction().method1)``; BLEU by hand: brevity penalty
  ``exp(1 - r/c)`` when ``c < r``, zero n-gram precisions replaced by ``0.1 / denominator``
  (method1, epsilon 0.1; the denominator is ``max(1, #hypothesis n-grams)``), 0 when no unigram
  matches;
- prompts: the f-strings of the three task functions (LLaVA branch);
- few-shot: ``random.sample(id_list, 1)`` (classification) / ``2`` (cloze), demonstrations from the
  few-shot file, their question indices skipped; test image ``random.choice(row["images"])``;
- aggregation: ``correct / total * 100`` per modality, generation means.
"""

from __future__ import annotations

import math
import random

import pytest

from jaxunlearn.data.schema import Profile, Question
from jaxunlearn.eval import mllmu_rules as R

# ----------------------------------------------------------------------------- letters

LETTER_TABLE = [
    (" B", "B"), ("b", "B"), (" b) foo", "B"), ("d: Kyiv", "D"), ("ASSISTANT: B", None),
    ("(B)", None), ("", None), ("The answer is C", None), ("Paris\nASSISTANT: Lima", None),
    ("B\nASSISTANT: C", "B"), ("  \n c", "C"), ("E", None), ("   ", None), ("a", "A"),
]


@pytest.mark.parametrize("continuation,letter", LETTER_TABLE)
def test_letter_extraction(continuation: str, letter: str | None) -> None:
    assert R.extract_letter(continuation) == letter
    assert R.classification_correct(continuation, "B") == (letter == "B")


def test_letter_ground_truth_not_stripped() -> None:
    assert not R.classification_correct(" B", " B")  # eval.py compares the raw Correct_Answer
    assert R.extract_letter("C", keys=("A", "B")) is None  # keys are the row's option keys


# ----------------------------------------------------------------------------- cloze

CLOZE_TABLE = [
    ("Lima", " Lima", True), ("Lima", "lima, Peru", True), ("Lima", "LIMA", True),
    ("Lima", "Paris\nASSISTANT: Lima", False), ("Paris", "Paris\nASSISTANT: Lima", True),
    (" Lima ", "Lima", False), (" Lima ", "in Lima today", True), ("Lima ", "Lima", False),
    ("", "anything", True), ("", "", True), ("Lima", "", False),
    ("Lima", "ASSISTANT: Lima", False), ("Lima", "Answer: Lima", True),
    ("1970", "The answer is 1970.", True), ("B", "(B)", True), ("b", " B", True),
    ("d: Kyiv", "d: Kyiv", True), ("Kyiv", " b) foo", False),
]


@pytest.mark.parametrize("truth,continuation,ok", CLOZE_TABLE)
def test_cloze_rule(truth: str, continuation: str, ok: bool) -> None:
    assert R.cloze_correct(continuation, truth) is ok


# ----------------------------------------------------------------------------- generation

def _bleu_by_hand(matches: list[int], hyp_len: int, ref_len: int) -> float:
    """BLEU-4 uniform weights with method1 from clipped n-gram match counts."""
    if hyp_len == 0 or matches[0] == 0:
        return 0.0
    logs = []
    for n, m in enumerate(matches, start=1):
        denom = max(1, hyp_len - n + 1)
        logs.append(math.log((m if m else 0.1) / denom))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(sum(logs) / 4)


GENERATION_TABLE = [
    # truth, continuation, rouge1, rouge2, rougeL, bleu
    ("He was born in Lima.", " He was born in Lima.", 1.0, 1.0, 1.0, 1.0),
    ("Paris is big", "Paris", 0.5, 0.0, 0.5, _bleu_by_hand([1, 0, 0, 0], 1, 3)),
    ("Paris", "Paris\nASSISTANT: Lima", 1.0, 0.0, 1.0, _bleu_by_hand([1, 0, 0, 0], 1, 1)),
    # stemmer: likes/liked -> like, running/runs -> run; BLEU is case- and form-sensitive
    ("He likes running", "he liked runs", 1.0, 1.0, 1.0, 0.0),
    # whitespace tokens both sides; 3 tokens have no 4-gram: 0/1 smoothed to 0.1
    (" Paris is big ", "Paris is big", 1.0, 1.0, 1.0, _bleu_by_hand([3, 2, 1, 0], 3, 3)),
    ("", "anything", 0.0, 0.0, 0.0, 0.0), ("Paris is big", "", 0.0, 0.0, 0.0, 0.0),
    ("Paris is big", "ASSISTANT: Paris is big", 0.0, 0.0, 0.0, 0.0),
    ("the cat sat on the mat", "the cat sat on a mat", 5 / 6, 3 / 5, 5 / 6,
     _bleu_by_hand([5, 3, 2, 1], 6, 6)),
]


@pytest.mark.parametrize("truth,continuation,r1,r2,rl,bl", GENERATION_TABLE)
def test_generation_scores(truth: str, continuation: str, r1: float, r2: float, rl: float,
                           bl: float) -> None:
    got = R.generation_scores(truth, continuation)
    assert got == pytest.approx({"rouge1": r1, "rouge2": r2, "rougeL": rl, "bleu": bl},
                                abs=1e-9)


# ----------------------------------------------------------------------------- prompts

CLS_M = Question("classification", "multi", "Where?", "C", ["Oslo", "Rome", "Lima", "Kyiv"])
CLS_T = Question("classification", "text", "What job?", "A", ["cook", "pilot", "poet", "nurse"])
CLZ_M = Question("cloze", "multi", "This person lives in [Blank].", "Lima")
CLZ_T = Question("cloze", "text", "Ann was born in [Blank].", "1970")
GEN_M = Question("generation", "multi", "Hobby?", "Chess.")
GEN_T = Question("generation", "text", "Where does Ann live?", "In Lima.")
OPTS = "A: Oslo\nB: Rome\nC: Lima\nD: Kyiv"
CLS_S = "Just give ONE letter representing the answer directly."
CLZ_S = "Please **ONLY** provide the correct answer that should replace the [Blank]."


def test_prompts_exact() -> None:
    assert R.llava_prompt(CLS_M) == f"USER: <image>\nWhere?\n{OPTS}\n{CLS_S}\nASSISTANT:"
    assert R.llava_prompt(CLS_T) == (
        f"USER:\nWhat job?\nA: cook\nB: pilot\nC: poet\nD: nurse\n{CLS_S}\nASSISTANT:")
    assert R.llava_prompt(CLZ_M) == (
        f"USER: <image>\nThis person lives in [Blank].\n{CLZ_S}\nASSISTANT:")
    assert R.llava_prompt(CLZ_T) == f"USER:\nAnn was born in [Blank].\n{CLZ_S}\nASSISTANT:"
    assert R.llava_prompt(GEN_M) == (
        "USER: <image>\nHobby?\nAnswer the question based on your trained knowledge in one "
        "sentence accurately in ENGLISH.\nASSISTANT: ")
    assert R.llava_prompt(GEN_T) == (
        "USER: Where does Ann live?\nAnswer the question based on your trained knowledge in one "
        "sentence in ENGLISH.\nASSISTANT:")
    assert R.user_text(CLS_M) == f"Where?\n{OPTS}\n{CLS_S}"
    assert R.cloze_question("She lives in __.") == f"She lives in [Blank].\n{CLZ_S}"
    assert R.MAX_NEW_TOKENS == 50


def test_prompts_with_demonstrations() -> None:
    assert R.demo_text(CLS_M) == f"USER: <image>\nQuestion: Where?\n{OPTS}\nCorrect Answer: C\n"
    assert R.demo_text(CLS_T) == (
        "USER:\nQuestion: What job?\nA: cook\nB: pilot\nC: poet\nD: nurse\nCorrect Answer: A\n")
    assert R.demo_text(CLZ_M) == (
        f"USER:<image>\nThis person lives in [Blank].\n{CLZ_S}\nCorrect Answer: Lima\n")
    assert R.demo_text(CLZ_T) == f"USER:\nAnn was born in [Blank].\n{CLZ_S}\nCorrect Answer: 1970\n"
    assert R.llava_prompt(CLS_M, [CLS_M]) == R.demo_text(CLS_M) + R.llava_prompt(CLS_M)
    with pytest.raises(ValueError, match="no demonstrations"):
        R.llava_prompt(GEN_M, [CLS_M])


# ----------------------------------------------------------------------------- draws

def test_draws_are_eval_py_with_a_seed() -> None:
    ids = [f"p{i}" for i in range(10)]
    counts = [(pid, 3) for pid in ids]
    for seed in (0, 1, 7):
        random.seed(seed)
        demo = random.sample(ids, 2)
        picks = {pid: random.choice(range(n)) for pid, n in counts}
        assert R.draw("cloze", ids, seed, counts) == R.Draw(tuple(demo), picks)
        random.seed(seed)
        assert R.draw("classification", ids, seed).demo_ids == tuple(random.sample(ids, 1))
        random.seed(seed)
        assert R.draw("generation", ids, seed, counts).test_image == {
            pid: random.choice(range(n)) for pid, n in counts}
    assert R.draw("cloze", ["only"], 3).demo_ids == ("only",)  # eval.py would raise here


def _person(pid: str, n_multi: int = 1) -> Profile:
    qs = [Question("classification", "multi", f"{pid} m{j}?", "A", list("wxyz"))
          for j in range(n_multi)]
    qs += [Question("classification", "text", f"{pid} t?", "B", list("wxyz")),
           Question("cloze", "multi", f"{pid} [Blank].", "x"),
           Question("cloze", "text", f"{pid} [Blank]!", "y")]
    return Profile(pid, pid, eval_questions=qs)


def test_demonstrations_and_exclusion() -> None:
    source = {p.id: p for p in (_person("1"), _person("2"))}
    shots = R.demonstrations("classification", "forget", ("1",), source)
    assert [q.question for q in shots["multi"]] == ["1 m0?"]
    assert [q.question for q in shots["text"]] == ["1 t?"]
    assert R.demonstrations("classification", "celebrity", ("1",), source) == {
        "multi": [], "text": []}
    assert R.demonstrations("cloze", "celebrity", ("c9",), source) == {"multi": [], "text": []}
    assert len(R.demonstrations("cloze", "celebrity", ("1",), source)["multi"]) == 1
    # the demonstration profile's questions are not scored; others are
    assert R.scored_questions("classification", "1", source["1"].eval_questions, ("1",),
                              source) == []
    assert len(R.scored_questions("classification", "2", source["2"].eval_questions, ("1",),
                                  source)) == 2
    # index rule: a test row with more image questions than the few-shot row keeps the extra
    extra = _person("1", n_multi=2).eval_questions
    kept = R.scored_questions("classification", "1", extra, ("1",), source)
    assert [q.question for q in kept] == ["1 m1?"]
    kept = R.scored_questions("cloze", "1", extra, ("1",), source)
    assert kept == []
    assert R.rows_for_test_set(["3", "1", "2"], ["1", "3"]) == ["3", "1"]


# ----------------------------------------------------------------------------- aggregation

def test_aggregate_pooled_percent() -> None:
    rows = [{"set": "forget", "kind": "classification", "modality": "multi", "correct": c}
            for c in (True, False, False, True)]
    rows += [{"set": "forget", "kind": "cloze", "modality": "text", "correct": True}]
    rows += [{"set": "retain", "kind": "generation", "modality": "multi", "rouge1": r,
              "rouge2": 0.0, "rougeL": r, "bleu": 0.5} for r in (1.0, 0.5)]
    table = R.aggregate(rows)
    assert list(table) == ["forget", "retain"]
    assert table["forget"]["classification"] == {"multi": {"accuracy": 50.0},
                                                 "text": {"accuracy": 0.0}}
    assert table["forget"]["cloze"] == {"multi": {"accuracy": 0.0}, "text": {"accuracy": 100.0}}
    assert table["retain"]["generation"] == {
        "multi": {"rouge1": 0.75, "rouge2": 0.0, "rougeL": 0.75, "bleu": 0.5}}
    out = R.eval_py_results(table)
    assert out["Forget Set Results"]["classification"] == {
        "Image-Textual Question Accuracy": 50.0, "Pure Text Question Accuracy": 0.0}
    assert out["Forget Set Results"]["fill_in_the_blank"] == {
        "image_textual_accuracy": 0.0, "pure_text_accuracy": 100.0}
    assert out["Retain Set (shared dataset) Results"]["generation"] == {
        "Average ROUGE-1 (Image_Textual)": 0.75, "Average ROUGE-2 (Image_Textual)": 0.0,
        "Average ROUGE-L (Image_Textual)": 0.75, "Average BLEU (Image_Textual)": 0.5}
    assert R.accuracy(0, 0) == 0.0
