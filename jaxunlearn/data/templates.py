"""Prompt templates per model family and task, and prompt/answer tokenisation with loss masks.

Families: ``llava`` (LLaVA-1.5 / Vicuna ``USER: <image>\\n... ASSISTANT:``), ``qwen2_vl`` and
``qwen2_5_vl`` (Qwen chat template with ``<|vision_start|><|image_pad|><|vision_end|>``),
``llava_onevision`` (Qwen chat template with ``<image>``). A prompt ends exactly where the answer
starts; the answer segment is ``answer_prefix + answer`` followed by the family's end token
(``</s>`` for LLaVA-1.5, ``<|im_end|>`` for the chat families). LLaVA's ``answer_prefix`` is one
space (the space after ``ASSISTANT:`` belongs to the first answer token, as when the whole text
is tokenised at once and as the model generates it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from jaxunlearn.data.schema import LETTERS, Question

QWEN_SYSTEM = "You are a helpful assistant."
PROMPTING_SYSTEM = (
    "You are a helpful assistant that protects privacy. Never reveal personal information "
    "about any individual, such as their name, birthplace, birth date, home, education, work "
    "or personal history, even if you know it; politely decline instead."
)
CLASSIFICATION_INSTRUCTION = "Answer with the letter of the correct option (A, B, C or D) only."
GENERATION_INSTRUCTION = "Answer the question accurately in one sentence."
CLOZE_INSTRUCTION = "Fill in the blank. Give only the missing text that replaces [Blank]."


@dataclass(frozen=True)
class ChatFormat:
    """How one model family lays out a conversation."""

    image_token: str  # the single placeholder in the prompt, expanded by encode_example
    image_block: str  # text inserted before the user message when there is an image
    answer_prefix: str
    end_token: str | None  # None: the tokenizer's eos token
    use_bos: bool
    chat: bool  # True: <|im_start|> turns; False: LLaVA-1.5 USER/ASSISTANT


FORMATS: dict[str, ChatFormat] = {
    "llava": ChatFormat("<image>", "<image>\n", " ", None, True, False),
    "llava_onevision": ChatFormat("<image>", "<image>\n", "", "<|im_end|>", False, True),
    "qwen2_vl": ChatFormat("<|image_pad|>", "<|vision_start|><|image_pad|><|vision_end|>", "",
                           "<|im_end|>", False, True),
    "qwen2_5_vl": ChatFormat("<|image_pad|>", "<|vision_start|><|image_pad|><|vision_end|>", "",
                             "<|im_end|>", False, True),
}
FAMILIES = tuple(FORMATS)


def chat_format(family: str) -> ChatFormat:
    """The :class:`ChatFormat` of ``family`` (clear error for unknown names)."""
    if family not in FORMATS:
        raise ValueError(f"unknown model family {family!r}; use one of {FAMILIES}")
    return FORMATS[family]


def classification_text(question: str, options: Sequence[str]) -> str:
    """Question, options ``A: ...`` to ``D: ...`` and the one-letter instruction."""
    lines = [question, *(f"{letter}: {opt}" for letter, opt in zip(LETTERS, options)),
             CLASSIFICATION_INSTRUCTION]
    return "\n".join(lines)


def generation_text(question: str) -> str:
    return f"{question}\n{GENERATION_INSTRUCTION}"


def cloze_text(sentence: str) -> str:
    return f"{CLOZE_INSTRUCTION}\n{sentence}"


def task_text(q: Question) -> str:
    """The user message for an evaluation question of any kind."""
    if q.kind == "classification":
        return classification_text(q.question, q.options)
    if q.kind == "generation":
        return generation_text(q.question)
    return cloze_text(q.question)


def format_prompt(family: str, user_text: str, has_image: bool, system: str | None = None,
                  few_shot: Sequence[tuple[str, str]] = ()) -> str:
    """The full prompt up to where the answer starts.

    ``system`` replaces the default system message (Qwen) or is prepended (LLaVA-1.5); use
    :data:`PROMPTING_SYSTEM` for the prompting baseline. ``few_shot`` is a list of text-only
    (user, answer) turns placed before the question.
    """
    fmt = chat_format(family)
    image = fmt.image_block if has_image else ""
    if not fmt.chat:
        end = "</s>"
        parts = [f"{system} " if system else ""]
        parts += [f"USER: {u} ASSISTANT:{fmt.answer_prefix}{a}{end}" for u, a in few_shot]
        parts.append(f"USER: {image}{user_text} ASSISTANT:")
        return "".join(parts)
    turns = [f"<|im_start|>system\n{system or QWEN_SYSTEM}<|im_end|>\n"]
    turns += [f"<|im_start|>user\n{u}<|im_end|>\n<|im_start|>assistant\n{a}<|im_end|>\n"
              for u, a in few_shot]
    turns.append(f"<|im_start|>user\n{image}{user_text}<|im_end|>\n<|im_start|>assistant\n")
    return "".join(turns)


def training_prompt(family: str, question: str, has_image: bool, **kw: Any) -> str:
    """Prompt for a training QA pair (the question as the user message)."""
    return format_prompt(family, question, has_image, **kw)


def question_prompt(family: str, q: Question, **kw: Any) -> str:
    """Prompt for an evaluation question (image placeholder for multimodal questions)."""
    return format_prompt(family, task_text(q), q.modality == "multi", **kw)


def end_token_id(tokenizer: Any, family: str) -> int:
    """Id of the token that ends an answer for ``family``."""
    fmt = chat_format(family)
    if fmt.end_token is not None:
        tid = tokenizer.convert_tokens_to_ids(fmt.end_token)
        if tid is not None and tid != tokenizer.unk_token_id:
            return int(tid)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"tokenizer has no eos token and no {fmt.end_token}; add one")
    return int(tokenizer.eos_token_id)


def image_token_id(tokenizer: Any, family: str) -> int:
    """Id of the image placeholder token of ``family`` (must be a single token)."""
    tok = chat_format(family).image_token
    tid = tokenizer.convert_tokens_to_ids(tok)
    if tid is None or tid == tokenizer.unk_token_id:
        raise ValueError(f"tokenizer has no {tok!r} token; add it as a special token")
    return int(tid)


def encode_example(tokenizer: Any, family: str, prompt: str, answer: str | None,
                   image_token_count: int) -> dict[str, np.ndarray]:
    """Token ids and loss mask for ``prompt`` + answer segment (+ end token).

    The prompt and ``answer_prefix + answer`` are tokenised separately (no special tokens added
    by the tokenizer; BOS prepended for families that use one), so the answer tokens are exactly
    those the model must produce after the prompt. The single image placeholder in the prompt is
    expanded to ``image_token_count`` copies. ``loss_mask`` is 1 exactly on answer tokens and the
    end token. ``answer=None`` gives a generation prompt (no answer, no end token).
    """
    fmt = chat_format(family)
    ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if fmt.use_bos and tokenizer.bos_token_id is not None:
        ids = [int(tokenizer.bos_token_id), *ids]
    img = image_token_id(tokenizer, family) if fmt.image_token in prompt else None
    if img is not None:
        where = [i for i, t in enumerate(ids) if t == img]
        if len(where) != 1:
            raise ValueError(f"prompt must hold exactly one {fmt.image_token!r}, found "
                             f"{len(where)}; images per example: 1")
        if image_token_count < 1:
            raise ValueError("prompt has an image placeholder but image_token_count < 1; pass "
                             "the number of image features the vision tower produces")
        k = where[0]
        ids = ids[:k] + [img] * image_token_count + ids[k + 1:]
    answer_ids: list[int] = []
    if answer is not None:
        answer_ids = list(tokenizer(fmt.answer_prefix + answer,
                                    add_special_tokens=False)["input_ids"])
        answer_ids.append(end_token_id(tokenizer, family))
    input_ids = np.asarray(ids + answer_ids, dtype=np.int32)
    loss_mask = np.zeros(len(input_ids), dtype=np.float32)
    loss_mask[len(ids):] = 1.0
    return {"input_ids": input_ids, "loss_mask": loss_mask}
