"""Model-independent scoring rules for MLLMU-Bench style evaluation.

Everything here works on strings and arrays already produced by a model: ROUGE, the
classification letter rule, the cloze substring rule, option-likelihood choice, accuracy,
and the offline degeneration score.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL")
LETTERS: str = "ABCD"


@functools.lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer  # imported lazily: slow-ish import

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def _check_same_length(a: Sequence, b: Sequence, what: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{what}: got {len(a)} predictions but {len(b)} references; "
                         "pass one reference per prediction")


def _mean(values: Sequence[float]) -> float | None:
    """Mean of ``values``; None for an empty list (keeps reports valid JSON)."""
    return float(np.mean(values)) if len(values) else None


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """ROUGE-1/2/L F-measure per item and their means (``rouge_score``, stemmer on).

    Returns ``{"per_item": {"rouge1": [...], "rouge2": [...], "rougeL": [...]},
    "mean": {"rouge1": m1, ...}, "n": n}``; means are None when ``n == 0``.
    """
    _check_same_length(predictions, references, "rouge_scores")
    scorer = _rouge_scorer()
    per_item: dict[str, list[float]] = {t: [] for t in ROUGE_TYPES}
    for pred, ref in zip(predictions, references):
        scores = scorer.score(target=ref, prediction=pred)
        for t in ROUGE_TYPES:
            per_item[t].append(float(scores[t].fmeasure))
    return {
        "per_item": per_item,
        "mean": {t: _mean(v) for t, v in per_item.items()},
        "n": len(predictions),
    }


def letter_of(answer: str) -> str | None:
    """The MLLMU-Bench classification rule: the chosen option letter, or None (wrong).

    Leading/trailing whitespace is stripped, then the first character is the prediction
    if it is one of ``A``-``D`` (uppercase only). So ``" B"`` -> ``"B"``, ``"A: foo"`` ->
    ``"A"``, but ``"b"``, ``"(B)"``, ``"The answer is C"`` and ``""`` -> None.
    """
    stripped = answer.strip()
    if stripped and stripped[0] in LETTERS:
        return stripped[0]
    return None


def cloze_correct(answer: str, reference: str) -> bool:
    """Cloze rule: the lower-cased reference is a substring of the lower-cased answer.

    Surrounding whitespace of the reference is ignored; an empty reference is an error
    (it would match every answer).
    """
    ref = reference.strip().lower()
    if not ref:
        raise ValueError("cloze_correct: empty reference would match any answer")
    return ref in answer.lower()


def option_likelihood_choice(option_logps) -> np.ndarray:
    """Index of the most likely option per question, from ``[n_questions, n_options]`` scores.

    Ties go to the lowest index (``np.argmax`` semantics); NaN counts as -inf.
    """
    scores = np.asarray(option_logps, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"option_likelihood_choice: expected [n_questions, n_options], "
                         f"got shape {scores.shape}")
    scores = np.where(np.isnan(scores), -np.inf, scores)
    return np.argmax(scores, axis=1)


def letter_index(letter: str | int) -> int:
    """Option index of ``"A"``-``"D"`` (0-3); an int passes through."""
    if isinstance(letter, (int, np.integer)):
        return int(letter)
    if not isinstance(letter, str) or len(letter) != 1 or letter not in LETTERS:
        raise ValueError(f"letter_index: expected one of {list(LETTERS)}, got {letter!r}")
    return LETTERS.index(letter)


def accuracy(correct: Sequence[bool]) -> float | None:
    """Share of True values; None for an empty sequence."""
    return _mean([float(bool(c)) for c in correct])


def classification_accuracy(answers: Sequence[str], gold: Sequence[str | int]) -> float | None:
    """Accuracy of generated answers under :func:`letter_of` against gold letters/indices."""
    _check_same_length(answers, gold, "classification_accuracy")
    return accuracy([letter_of(a) == LETTERS[letter_index(g)] for a, g in zip(answers, gold)])


def likelihood_accuracy(option_logps, gold: Sequence[str | int]) -> float | None:
    """Accuracy of :func:`option_likelihood_choice` against gold letters/indices."""
    choice = option_likelihood_choice(option_logps)
    _check_same_length(choice, gold, "likelihood_accuracy")
    return accuracy([int(c) == letter_index(g) for c, g in zip(choice, gold)])


def cloze_accuracy(answers: Sequence[str], references: Sequence[str]) -> float | None:
    """Accuracy of :func:`cloze_correct` over paired answers and references."""
    _check_same_length(answers, references, "cloze_accuracy")
    return accuracy([cloze_correct(a, r) for a, r in zip(answers, references)])


# --- degeneration -------------------------------------------------------------------------

_EDGE_PUNCT = "\"'`.,;:!?()[]{}<>«»“”‘’-–—*_/\\|"
_WORD = re.compile(r"^[^\W\d_]+(?:['’\-][^\W\d_]+)*$")  # letters, inner ' or -
_NUMBER = re.compile(r"^\d+(?:[.,/:]\d+)*(?:st|nd|rd|th|s|%)?$")

DEGENERATION_MIN_TOKENS_NGRAM = 4
DEGENERATION_NGRAM = 3
DEGENERATION_MAX_REPEATED = 0.5
DEGENERATION_MIN_WORD_SHARE = 0.5


def _is_word(token: str) -> bool:
    core = token.strip(_EDGE_PUNCT)
    return bool(core) and bool(_WORD.match(core) or _NUMBER.match(core.lower()))


def _repeated_ngram_share(tokens: Sequence[str], n: int) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def degeneration_flags(answer: str) -> dict[str, bool]:
    """Flags of one answer; see :func:`degeneration` for the definition."""
    tokens = answer.lower().split()
    empty = not tokens
    repetitive = (
        (len(tokens) >= DEGENERATION_MIN_TOKENS_NGRAM
         and _repeated_ngram_share(tokens, DEGENERATION_NGRAM) > DEGENERATION_MAX_REPEATED)
        or (len(tokens) >= 3 and len(set(tokens)) == 1)
    )
    nonword = (not empty and
               sum(_is_word(t) for t in tokens) / len(tokens) < DEGENERATION_MIN_WORD_SHARE)
    return {"empty": empty, "repetitive": repetitive, "nonword": nonword,
            "degenerate": empty or repetitive or nonword}


def degeneration(answers: Sequence[str]) -> dict:
    """Offline degeneration score (no judge): share of answers that are degenerate.

    Tokens are the whitespace-separated pieces of the lower-cased answer. An answer is
    - ``empty``: no tokens (empty or whitespace only);
    - ``repetitive``: at least 4 tokens and more than half of its word 3-grams repeat an
      earlier 3-gram (``1 - unique/total > 0.5``), or at least 3 tokens that are all the
      same token (``"no no no"``);
    - ``nonword``: fewer than half of its tokens are words, where a word is a token that,
      after stripping surrounding punctuation, is letters (inner ``'`` or ``-`` allowed,
      any script) or a number (``1990``, ``3.5``, ``21st``);
    - ``degenerate``: any of the three.

    Returns ``{"flags": [per-answer dict of the four flags], "empty": share,
    "repetitive": share, "nonword": share, "degeneration": share of degenerate, "n": n}``;
    shares are None when there are no answers.
    """
    flags = [degeneration_flags(a) for a in answers]
    out: dict = {"flags": flags}
    for key in ("empty", "repetitive", "nonword"):
        out[key] = accuracy([f[key] for f in flags])
    out["degeneration"] = accuracy([f["degenerate"] for f in flags])
    out["n"] = len(flags)
    return out
