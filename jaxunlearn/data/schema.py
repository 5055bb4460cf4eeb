"""Record schema for unlearning benchmarks (MLLMU-Bench compatible).

A :class:`Benchmark` holds fictitious :class:`Profile` s (the fine-tuned knowledge), celebrity
profiles (pre-trained knowledge) and named splits of profile ids. Everything round-trips through
plain JSON via ``to_dict`` / ``from_dict``; in-memory images are stored as base64 data URLs
(PIL images as PNG, :class:`EncodedImage` s as their own bytes), image paths as strings.

Images read from a benchmark's files are :class:`EncodedImage` s: the file's bytes, checked to
decode when loaded and decoded again on each use, so a loaded benchmark holds its images at
their compressed size (a decoded 1024x1024 RGB image is 3 MiB; its JPEG a tenth of that).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from PIL import Image

KINDS = ("classification", "generation", "cloze")
MODALITIES = ("multi", "text")
LETTERS = ("A", "B", "C", "D")
BLANK = "[Blank]"
_DATA_URL_PREFIX = "data:image/"
_BASE64 = ";base64,"


@dataclass(frozen=True)
class EncodedImage:
    """An image held as its encoded file bytes (PNG, JPEG, ...), decoded afresh by
    :meth:`open` on each use: a new PIL image per call, so reader threads share nothing
    mutable. Build it with :func:`decode_image`, which checks that the bytes decode.
    ``rgb``: :meth:`open` converts to RGB (a benchmark whose reader does, e.g. VLMEvalKit's
    TSV images); otherwise the image keeps its own mode."""

    data: bytes
    format: str
    width: int
    height: int
    rgb: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL's ``Image.size``."""
        return self.width, self.height

    def open(self) -> Image.Image:
        """The decoded image (a new PIL image, fully loaded)."""
        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img.convert("RGB") if self.rgb and img.mode != "RGB" else img


ImageLike = Union[Image.Image, EncodedImage, str, None]


def image_to_json(image: ImageLike) -> str | None:
    """An in-memory image as a base64 data URL (a PIL image as PNG, an
    :class:`EncodedImage` as its own bytes); paths and ``None`` pass through."""
    if image is None or isinstance(image, str):
        return image
    if isinstance(image, Path):
        return str(image)
    if isinstance(image, EncodedImage):
        fmt, raw = image.format.lower(), image.data
    else:
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=6)
        fmt, raw = "png", buf.getvalue()
    return f"{_DATA_URL_PREFIX}{fmt}{_BASE64}" + base64.b64encode(raw).decode("ascii")


def image_from_json(value: str | None) -> ImageLike:
    """Inverse of :func:`image_to_json` (data URLs become :class:`EncodedImage` s, paths
    stay strings)."""
    if isinstance(value, str) and value.startswith(_DATA_URL_PREFIX) and _BASE64 in value:
        return decode_image(base64.b64decode(value.split(_BASE64, 1)[1]))
    return value


def open_image(image: ImageLike) -> Image.Image:
    """The PIL image behind a PIL image, :class:`EncodedImage` or path, in its own mode."""
    if image is None:
        raise ValueError("profile has no image; multimodal records need one (check the data dir)")
    if isinstance(image, EncodedImage):
        return image.open()
    return image if isinstance(image, Image.Image) else Image.open(image)


def load_image(image: ImageLike) -> Image.Image:
    """Open an image given as PIL image, :class:`EncodedImage` or path, converted to RGB."""
    image = open_image(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(raw: bytes) -> EncodedImage:
    """Check that image bytes decode (fully, once) and keep them encoded; an undecodable
    image is a ValueError saying why (callers add file, row and field)."""
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            fmt, (width, height) = img.format or "png", img.size
    except Exception as e:  # PIL raises several unrelated types
        raise ValueError(f"does not decode as an image ({type(e).__name__}: {e})") from None
    return EncodedImage(bytes(raw), fmt, width, height)


@dataclass
class Question:
    """One evaluation question.

    ``classification``: 4 ``options``, ``answer`` is the letter. ``generation``: ``answer`` is the
    reference text. ``cloze``: ``question`` is a sentence containing ``[Blank]``, ``answer`` the
    missing text.
    """

    kind: str
    modality: str
    question: str
    answer: str
    options: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"question kind {self.kind!r} is not one of {KINDS}")
        if self.modality not in MODALITIES:
            raise ValueError(f"question modality {self.modality!r} is not one of {MODALITIES}")
        if self.kind == "classification":
            if len(self.options) != 4 or self.answer not in LETTERS:
                raise ValueError(
                    f"classification question {self.question!r} needs 4 options and a letter "
                    f"answer A-D, got {len(self.options)} options and answer {self.answer!r}"
                )
        elif self.kind == "cloze" and BLANK not in self.question:
            raise ValueError(f"cloze question {self.question!r} has no {BLANK} marker")

    @property
    def answer_text(self) -> str:
        """The answer as text (the chosen option's text for classification)."""
        if self.kind == "classification":
            return self.options[LETTERS.index(self.answer)]
        return self.answer

    def rotated(self, shift: int) -> "Question":
        """A classification question with its options shifted cyclically by ``shift`` (option
        i moves to position i - shift) and the answer letter following its option: the
        rotations of MMBench's circular evaluation."""
        if self.kind != "classification":
            raise ValueError(f"only classification questions have options to rotate, not "
                             f"{self.kind!r}")
        s = shift % len(self.options)
        options = list(self.options[s:]) + list(self.options[:s])
        return Question(self.kind, self.modality, self.question,
                        LETTERS[(LETTERS.index(self.answer) - s) % len(options)], options)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "modality": self.modality, "question": self.question,
                "answer": self.answer, "options": list(self.options)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Question":
        return cls(d["kind"], d["modality"], d["question"], d["answer"], list(d.get("options", [])))


@dataclass
class QAPair:
    """A training (or image-understanding) question-answer pair."""

    question: str
    answer: str
    modality: str = "multi"

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"QA modality {self.modality!r} is not one of {MODALITIES}")

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "modality": self.modality}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QAPair":
        return cls(d["question"], d["answer"], d.get("modality", "multi"))


@dataclass
class Profile:
    """One person: identity image, facts, training QA and evaluation questions."""

    id: str
    name: str
    attributes: dict[str, str] = field(default_factory=dict)
    image: ImageLike = None
    test_images: list[ImageLike] = field(default_factory=list)
    train_qa: list[QAPair] = field(default_factory=list)
    eval_questions: list[Question] = field(default_factory=list)
    test_questions: list[Question] = field(default_factory=list)
    understanding_qa: list[QAPair] = field(default_factory=list)
    biography: str = ""
    columns: dict[str, str] = field(default_factory=dict)
    """Other published string columns kept verbatim by name (``question``, ``answer``,
    ``Directory`` in MLLMU-Bench)."""

    def questions(self, which: str = "eval", kind: str | None = None,
                  modality: str | None = None) -> list[Question]:
        """Eval (``which='eval'``) or test questions filtered by kind and modality."""
        qs = self.eval_questions if which == "eval" else self.test_questions
        return [q for q in qs if (kind is None or q.kind == kind)
                and (modality is None or q.modality == modality)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "attributes": dict(self.attributes),
            "image": image_to_json(self.image),
            "test_images": [image_to_json(i) for i in self.test_images],
            "train_qa": [q.to_dict() for q in self.train_qa],
            "eval_questions": [q.to_dict() for q in self.eval_questions],
            "test_questions": [q.to_dict() for q in self.test_questions],
            "understanding_qa": [q.to_dict() for q in self.understanding_qa],
            "biography": self.biography, "columns": dict(self.columns),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Profile":
        return cls(
            id=str(d["id"]), name=d.get("name", ""), attributes=dict(d.get("attributes", {})),
            image=image_from_json(d.get("image")),
            test_images=[image_from_json(i) for i in d.get("test_images", [])],
            train_qa=[QAPair.from_dict(q) for q in d.get("train_qa", [])],
            eval_questions=[Question.from_dict(q) for q in d.get("eval_questions", [])],
            test_questions=[Question.from_dict(q) for q in d.get("test_questions", [])],
            understanding_qa=[QAPair.from_dict(q) for q in d.get("understanding_qa", [])],
            biography=d.get("biography", ""), columns=dict(d.get("columns", {})),
        )


@dataclass
class Benchmark:
    """Fictitious profiles, celebrity profiles and named splits (name -> profile ids).

    Usual split names: ``forget_5/10/15``, ``retain_95/90/85``, ``test`` (profiles with
    transformed-image / paraphrased test questions), ``celebrity``, ``full`` and the PULSE splits
    ``pulse_ft_forget`` / ``pulse_ft_retain`` / ``pulse_seq_1`` .. ``pulse_seq_K``.

    ``split_rows`` holds, for a split whose own folder rows differ from the ``Full_Set`` row of
    the same ID (MLLMU-Bench evaluates a split from its own folder), those rows; ``split``
    returns them.
    """

    profiles: list[Profile] = field(default_factory=list)
    celebrities: list[Profile] = field(default_factory=list)
    splits: dict[str, list[str]] = field(default_factory=dict)
    split_rows: dict[str, list[Profile]] = field(default_factory=dict)

    def by_id(self) -> dict[str, Profile]:
        """All profiles (fictitious and celebrity) by id."""
        return {p.id: p for p in [*self.profiles, *self.celebrities]}

    def split(self, name: str) -> list[Profile]:
        """The profiles of one split, in split order."""
        if name not in self.splits:
            raise ValueError(f"unknown split {name!r}; available: {sorted(self.splits)}")
        if name in self.split_rows:
            return list(self.split_rows[name])
        table = self.by_id()
        unknown = [i for i in self.splits[name] if i not in table]
        if unknown:
            raise ValueError(f"split {name!r} names unknown profile(s) {unknown[:5]}; fix the "
                             "split or the benchmark's profiles")
        return [table[i] for i in self.splits[name]]

    def to_dict(self) -> dict[str, Any]:
        return {"profiles": [p.to_dict() for p in self.profiles],
                "celebrities": [p.to_dict() for p in self.celebrities],
                "splits": {k: list(v) for k, v in self.splits.items()},
                "split_rows": {k: [p.to_dict() for p in v] for k, v in self.split_rows.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Benchmark":
        return cls([Profile.from_dict(p) for p in d.get("profiles", [])],
                   [Profile.from_dict(p) for p in d.get("celebrities", [])],
                   {k: [str(i) for i in v] for k, v in d.get("splits", {}).items()},
                   {k: [Profile.from_dict(p) for p in v]
                    for k, v in d.get("split_rows", {}).items()})
