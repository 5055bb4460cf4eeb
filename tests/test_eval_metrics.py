"""Tests for jaxunlearn.eval.metrics (pure Python, fast)."""

import numpy as np
import pytest
from rouge_score import rouge_scorer

from jaxunlearn.eval import metrics as M

PREDS = ["The cat sat on the mat.", "He was born in Paris in 1990.", "", "running dogs"]
REFS = ["A cat was sitting on the mat.", "She was born in Lyon in 1991.", "nothing", "dogs run"]


def test_rouge_scores_match_rouge_score():
    out = M.rouge_scores(PREDS, REFS)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    for t in ("rouge1", "rouge2", "rougeL"):
        want = [scorer.score(r, p)[t].fmeasure for p, r in zip(PREDS, REFS)]
        assert out["per_item"][t] == pytest.approx(want, abs=0)
        assert out["mean"][t] == pytest.approx(np.mean(want))
    assert out["n"] == 4
    assert out["per_item"]["rouge1"][3] == 1.0  # stemming: running dogs ~ dogs run
    assert out["per_item"]["rouge1"][2] == 0.0


def test_rouge_scores_empty_and_mismatch():
    assert M.rouge_scores([], [])["mean"]["rougeL"] is None
    with pytest.raises(ValueError, match="one reference per prediction"):
        M.rouge_scores(["a"], [])


@pytest.mark.parametrize("answer,letter", [
    ("", None), ("   ", None), ("a", None), ("b) foo", None), (" B", "B"), ("\nC\n", "C"),
    ("A: foo", "A"), ("(B)", None), ("The answer is C", None), ("D", "D"), ("E", None),
])
def test_letter_of(answer, letter):
    assert M.letter_of(answer) == letter


def test_cloze_correct():
    assert M.cloze_correct("He was born in PARIS.", "Paris")
    assert M.cloze_correct("paris", " Paris ")
    assert not M.cloze_correct("Lyon", "Paris")
    assert not M.cloze_correct("", "Paris")
    with pytest.raises(ValueError):
        M.cloze_correct("x", "  ")


def test_option_likelihood_choice_and_accuracy():
    logps = np.array([[-1.0, -0.5, -3.0, -2.0],
                      [-1.0, -1.0, -1.0, -2.0],   # tie -> lowest index
                      [np.nan, -9.0, -8.0, -7.0],  # NaN never wins
                      [-4.0, -3.0, -2.0, -1.0]])
    assert M.option_likelihood_choice(logps).tolist() == [1, 0, 3, 3]
    assert M.likelihood_accuracy(logps, ["B", 0, "C", "D"]) == 0.75
    with pytest.raises(ValueError):
        M.option_likelihood_choice(np.zeros(4))


def test_accuracy_helpers():
    assert M.accuracy([]) is None
    assert M.classification_accuracy(["A", "b", " C: x", "(D)"], ["A", "B", 2, "D"]) == 0.5
    assert M.cloze_accuracy(["in 1990", "no"], ["1990", "yes"]) == 0.5
    with pytest.raises(ValueError):
        M.letter_index("E")


def test_degeneration_flags_and_shares():
    answers = [
        "",                                        # empty
        "   ",                                     # empty
        "the the the the the",                     # repetitive (single token)
        "I am I am I am I am I am",                # repetitive (3-grams)
        "!!! ### ??? ...",                         # nonword
        "x7@# q%% a",                              # nonword: 1/3 words
        "He was born in Paris in 1990.",           # fine
        "1990",                                    # fine: numbers are words
        "Jean-Luc didn't go.",                     # fine
        "no no",                                   # fine (too short to call repetitive)
    ]
    out = M.degeneration(answers)
    flags = [f["degenerate"] for f in out["flags"]]
    assert flags == [True, True, True, True, True, True, False, False, False, False]
    assert [f["empty"] for f in out["flags"]][:2] == [True, True]
    assert out["flags"][3]["repetitive"] and not out["flags"][3]["nonword"]
    assert out["flags"][4]["nonword"] and not out["flags"][4]["repetitive"]
    assert out["empty"] == 0.2 and out["repetitive"] == 0.2 and out["nonword"] == 0.2
    assert out["degeneration"] == 0.6 and out["n"] == 10
    assert M.degeneration([])["degeneration"] is None
