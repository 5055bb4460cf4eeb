"""Prompts for the judge model and the rule that reads a score out of its reply.

Three metrics: ``factuality`` (1-10, MLLMU-Bench style), ``fact`` (0-10) and ``meaningful``
(0-10) (S-MLLMUn style). Every prompt asks for a final line ``Score: N``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class JudgePrompt:
    """A metric's system prompt, user template and inclusive score range."""

    system: str
    user: str
    low: int
    high: int

    def messages(self, question: str, reference: str, answer: str) -> list[dict[str, str]]:
        """Chat messages for one item."""
        user = self.user.format(question=question, reference=reference, answer=answer)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def fingerprint(self) -> str:
        """Short hash of the prompt text, part of the cache key (edits invalidate the cache)."""
        text = "\x00".join([self.system, self.user, str(self.low), str(self.high)])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


_SYSTEM = ("You are a strict, impartial grader of answers produced by an AI model. "
           "Follow the rubric exactly. End your reply with one line of the form "
           "'Score: N' where N is an integer.")

PROMPTS: dict[str, JudgePrompt] = {
    "factuality": JudgePrompt(
        system=_SYSTEM,
        user=(
            "Rate how factually correct the model's answer is with respect to the reference "
            "answer, on an integer scale from 1 to 10.\n"
            "10: the answer states the same facts as the reference, nothing false.\n"
            "5: the answer is partly correct, or mixes correct and incorrect facts.\n"
            "1: the answer is wrong, contradicts the reference, is off-topic or empty.\n"
            "Judge meaning, not wording; paraphrases of the reference are fully correct.\n\n"
            "Question: {question}\nReference answer: {reference}\nModel answer: {answer}\n\n"
            "Reply with 'Score: N' (1-10)."
        ),
        low=1, high=10,
    ),
    "fact": JudgePrompt(
        system=_SYSTEM,
        user=(
            "Decide how much of the factual knowledge in the reference answer is revealed by "
            "the model's answer, on an integer scale from 0 to 10.\n"
            "10: every fact of the reference is stated or clearly implied.\n"
            "5: about half of the reference's facts are revealed.\n"
            "0: none of the reference's facts are revealed (a refusal, a wrong answer, "
            "unrelated or meaningless text all score 0).\n"
            "Ignore fluency and style; only count the reference's facts.\n\n"
            "Question: {question}\nReference answer: {reference}\nModel answer: {answer}\n\n"
            "Reply with 'Score: N' (0-10)."
        ),
        low=0, high=10,
    ),
    "meaningful": JudgePrompt(
        system=_SYSTEM,
        user=(
            "Rate whether the model's answer is meaningful language that responds to the "
            "question, on an integer scale from 0 to 10, regardless of whether it is "
            "factually correct.\n"
            "10: fluent, grammatical, coherent and relevant to the question (a polite "
            "refusal or 'I don't know' also counts as meaningful).\n"
            "5: understandable but partly incoherent, repetitive or off-topic.\n"
            "0: empty, gibberish, endless repetition, or unrelated text.\n"
            "The reference answer is shown only for context; do not reward agreement with "
            "it.\n\n"
            "Question: {question}\nReference answer: {reference}\nModel answer: {answer}\n\n"
            "Reply with 'Score: N' (0-10)."
        ),
        low=0, high=10,
    ),
}

_SCORE_LINE = re.compile(r"score\s*(?:is)?\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.])")


def parse_score(text: str, low: int, high: int) -> int | None:
    """The score in a judge reply, or None.

    Candidates in order: numbers after the word ``score`` (``Score: 7``, ``score = 7``,
    ``**Score:** 7``), then every number in the text. The first candidate that is an
    integer (``7`` or ``7.0``) within ``[low, high]`` wins; ``7.5`` or ``11`` are skipped.
    """
    candidates = [m.group(1) for m in _SCORE_LINE.finditer(text)]
    candidates += [m.group(0) for m in _NUMBER.finditer(text)]
    for c in candidates:
        value = float(c)
        if value.is_integer() and low <= value <= high:
            return int(value)
    return None
