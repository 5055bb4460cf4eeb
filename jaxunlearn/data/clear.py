"""CLEAR (``therem/CLEAR``) as published: read a local copy into a :class:`Benchmark`.

The layout is the dataset's (one folder per config, parquet shards ``train-*``; facts with
citations in ``docs/sources/clear.md``), as ``huggingface-cli download
therem/CLEAR --repo-type dataset --local-dir DIR`` or ``git clone`` lays it out::

    full/  full+tofu/                    every fictitious image (+ the TOFU text QA)
    forget01/ forget05/ forget10/        image, caption, name
    retain99/ retain95/ retain90/        image, caption, name
    forgetNN+tofu/ retainNN+tofu/        image, caption, question, answer (text rows: no image)
    forgetNN_perturbed/                  + name, paraphrased_caption, perturbed_captions,
                                           perturbed_names
    retain_perturbed/                    + paraphrased_caption, perturbed_captions
                                           (name, perturbed_names when present)
    real_faces/                          image, answer (a celebrity's name), options
    real_world/                          question, answer, image, prompt, options
    data/                                the ``default`` config (= full); not needed

Every ``*.parquet`` file of a folder is read in name order. Mapping to the schema: one
:class:`Profile` per published row (CLEAR has no row ID): an image row's id is ``img-`` + a
hash of its image bytes and caption, a text (TOFU) row's ``qa-`` + a hash of question and
answer, so the same row in ``full``, ``forget10`` and ``forget10_perturbed`` is one profile
(the perturbed folder adds its columns). Image rows: ``name`` = the person, ``image``,
training QA = (a caption question, caption) as the authors train (``mm/dataset.py``:
``random.choice(IMAGE_CAPTION_QUESTIONS)``; here chosen by a hash of the row, so runs are
reproducible), eval questions = generation (caption question -> caption) and, with a known
name, (:data:`NAME_QUESTION` -> name); with exactly 3 ``perturbed_names`` also a 4-option
classification question (answer position from the row hash). Text rows: one text QA, one text
generation question. ``real_faces`` / ``real_world`` rows are the benchmark's celebrities
(split ``celebrity`` = ``real_faces``). String columns are kept in ``Profile.columns``, list
columns (``perturbed_captions``, ``perturbed_names``, ``options``) as JSON strings.

Splits: one per folder present, named as the config (``forget10``, ``retain90+tofu``,
``forget10_perturbed``, ``real_faces`` ...). ``forgetNN`` pairs with ``retain(100-NN)`` and
``forgetNN+tofu`` with ``retain(100-NN)+tofu`` (:func:`complement`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa
import pyarrow.parquet as pq

from jaxunlearn.data.schema import (
    EncodedImage, LETTERS, Benchmark, Profile, QAPair, Question, decode_image,
)

PERCENTS = ("01", "05", "10")
VISUAL = ("full", *(f"forget{p}" for p in PERCENTS), *(f"retain{100 - int(p)}" for p in PERCENTS))
TOFU = tuple(f"{c}+tofu" for c in VISUAL)
PERTURBED = (*(f"forget{p}_perturbed" for p in PERCENTS), "retain_perturbed")
REAL = ("real_faces", "real_world")
CONFIGS = (*VISUAL, *TOFU, *PERTURBED, *REAL)
MARKERS = ("full", "forget10", "retain90", "forget10_perturbed", "real_faces",
           "full+tofu", "forget01", "retain99")
# columns each config must have (dataset card `features`); others are optional
REQUIRED = {**{c: ("image", "caption", "name") for c in VISUAL},
            **{c: ("image", "caption", "question", "answer") for c in TOFU},
            **{c: ("image", "caption", "name", "paraphrased_caption", "perturbed_captions",
                   "perturbed_names") for c in PERTURBED if c != "retain_perturbed"},
            "retain_perturbed": ("image", "caption", "paraphrased_caption",
                                 "perturbed_captions"),
            "real_faces": ("image", "answer", "options"),
            "real_world": ("image", "question", "answer", "options")}
LIST_COLUMNS = ("perturbed_captions", "perturbed_names", "options")
STRING_COLUMNS = ("caption", "name", "paraphrased_caption", "question", "answer", "prompt")
# the authors' caption questions (mm/dataset.py IMAGE_CAPTION_QUESTIONS)
IMAGE_CAPTION_QUESTIONS = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)
NAME_QUESTION = "The name of the person on the image is "  # question_strategy random_faces
_SPLIT = re.compile(r"^(forget|retain)(\d\d)(\+tofu)?$")


def complement(split: str) -> str | None:
    """``forgetNN[+tofu]`` <-> ``retain(100-NN)[+tofu]``; None for other names."""
    m = _SPLIT.match(str(split))
    if not m:
        return None
    kind, pct, tofu = m.group(1), int(m.group(2)), m.group(3) or ""
    if not 0 < pct < 100:
        return None
    other = "retain" if kind == "forget" else "forget"
    return f"{other}{100 - pct:02d}{tofu}"


def is_clear(path: str | Path) -> bool:
    """Whether ``path`` looks like a CLEAR copy (one of its config folders holds parquet)."""
    root = Path(path)
    return any((root / c).is_dir() and any((root / c).glob("*.parquet")) for c in MARKERS)


def caption_question(key: str) -> str:
    """The caption question of a row, picked from the authors' list by the row's id hash."""
    return IMAGE_CAPTION_QUESTIONS[int(hashlib.sha256(key.encode()).hexdigest(), 16)
                                   % len(IMAGE_CAPTION_QUESTIONS)]


# ----------------------------------------------------------------------------- reading

class _RowError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def _rows(root: Path, config: str) -> Iterable[tuple[Path, int, dict]]:
    folder = root / config
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"CLEAR folder {folder} has no .parquet files; download the "
                                f"dataset (huggingface-cli download therem/CLEAR --repo-type "
                                f"dataset --local-dir {root})")
    for file in files:
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{file}: not a readable parquet file ({e}); re-download it") \
                from None
        missing = [c for c in REQUIRED[config] if c not in table.schema.names]
        if missing:
            raise ValueError(f"{file}: missing column {', '.join(missing)} (has "
                             f"{', '.join(table.schema.names)}); CLEAR config {config} needs "
                             f"{', '.join(REQUIRED[config])} (re-download it)")
        for i, row in enumerate(table.to_pylist()):
            yield file, i, row


def _string(row: dict, key: str, required: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        if required:
            raise _RowError(key, "is empty")
        return None
    if not isinstance(value, str):
        raise _RowError(key, f"is not a string (got {type(value).__name__})")
    if required and not value:
        raise _RowError(key, "is empty")
    return value


def _strings(row: dict, key: str) -> list[str] | None:
    value = row.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _RowError(key, "is not a list of strings")
    return list(value)


def _image_bytes(cell: Any) -> bytes | None:
    if cell is None:
        return None
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"])
        if cell.get("path"):
            p = Path(cell["path"])
            if not p.is_file():
                raise _RowError("image", f"has no bytes and its path {cell['path']!r} does not "
                                         "exist")
            return p.read_bytes()
        return None
    raise _RowError("image", f"is not an image struct {{bytes, path}} (got "
                             f"{type(cell).__name__})")


def _decode(raw: bytes) -> EncodedImage:
    try:
        return decode_image(raw)
    except ValueError as e:
        raise _RowError("image", str(e)) from None


def _hash(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


class _Reader:
    def __init__(self) -> None:
        self.profiles: dict[str, Profile] = {}
        self.celebrities: dict[str, Profile] = {}
        self.images: dict[str, EncodedImage] = {}

    def image(self, raw: bytes) -> EncodedImage:
        key = _hash(raw)
        if key not in self.images:
            self.images[key] = _decode(raw)
        return self.images[key]

    def row(self, config: str, row: dict) -> str:
        """The profile id of one row (created or completed)."""
        raw = _image_bytes(row.get("image"))
        cols = {k: v for k in STRING_COLUMNS if (v := _string(row, k)) is not None}
        lists = {k: v for k in LIST_COLUMNS if (v := _strings(row, k)) is not None}
        if config in REAL:
            return self._real(config, raw, cols, lists)
        if raw is None and config not in TOFU:
            raise _RowError("image", "is empty (only +tofu configs have text rows)")
        if raw is None:  # a TOFU text row
            q, a = _string(row, "question", True), _string(row, "answer", True)
            pid = "qa-" + _hash(q, a)
            if pid not in self.profiles:
                self.profiles[pid] = Profile(
                    id=pid, name="", train_qa=[QAPair(q, a, "text")],
                    eval_questions=[Question("generation", "text", q, a)],
                    columns={"question": q, "answer": a})
            return pid
        caption = _string(row, "caption", True)
        pid = "img-" + _hash(raw, caption)
        p = self.profiles.get(pid)
        if p is None:
            image = self.image(raw)
            cq = caption_question(pid)
            p = self.profiles[pid] = Profile(
                id=pid, name="", image=image, train_qa=[QAPair(cq, caption, "multi")],
                eval_questions=[Question("generation", "multi", cq, caption)],
                columns={"caption": caption, "caption_question": cq})
        name = cols.get("name")
        if name:
            if p.name and p.name != name:
                raise _RowError("name", f"is {name!r} but the same image and caption is "
                                        f"{p.name!r} in another folder")
            if not p.name:
                p.name = name
                p.eval_questions.append(Question("generation", "multi", NAME_QUESTION, name))
        for k, v in cols.items():
            if k not in ("question", "answer"):
                p.columns.setdefault(k, v)
        for k, v in lists.items():
            p.columns.setdefault(k, json.dumps(v, ensure_ascii=False))
        wrong = lists.get("perturbed_names")
        if p.name and wrong is not None and len(wrong) == len(LETTERS) - 1 and \
                not any(q.kind == "classification" for q in p.eval_questions):
            p.eval_questions.append(_choice(pid, NAME_QUESTION.strip(), p.name, wrong))
        return pid

    def _real(self, config: str, raw: bytes | None, cols: dict, lists: dict) -> str:
        if raw is None:
            raise _RowError("image", "is empty")
        answer = cols.get("answer")
        if not answer:
            raise _RowError("answer", "is empty")
        question = NAME_QUESTION if config == "real_faces" else cols.get("question")
        if not question:
            raise _RowError("question", "is empty")
        pid = f"{config}-" + _hash(raw, question, answer)
        if pid not in self.celebrities:
            qs = [Question("generation", "multi", question, answer)]
            wrong = lists["options"]
            if len(wrong) == len(LETTERS) - 1:
                qs.append(_choice(pid, question.strip(), answer, wrong))
            self.celebrities[pid] = Profile(
                id=pid, name=answer if config == "real_faces" else "", image=self.image(raw),
                eval_questions=qs,
                columns={**cols, "question": question,
                         "options": json.dumps(wrong, ensure_ascii=False)})
        return pid


def _choice(key: str, question: str, answer: str, wrong: list[str]) -> Question:
    pos = int(_hash(key, "choice"), 16) % len(LETTERS)
    options = list(wrong)
    options.insert(pos, answer)
    return Question("classification", "multi", question, LETTERS[pos], options)


def load_clear(path: str | Path, configs: Iterable[str] = ()) -> Benchmark:
    """Load a CLEAR directory in the published layout (module docstring).

    Every known config folder present is read; ``configs`` lists those that must exist.
    Raises ``FileNotFoundError`` for a missing directory or folder and ``ValueError`` naming
    file, row and field for a missing column, a malformed row or an image that does not
    decode.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"CLEAR directory {root} does not exist; download it with "
                                f"`huggingface-cli download therem/CLEAR --repo-type dataset "
                                f"--local-dir {root}`")
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise ValueError(f"unknown CLEAR config(s) {unknown}; known: {list(CONFIGS)}")
    present = [c for c in CONFIGS if (root / c).is_dir() or c in configs]
    if not present:
        raise FileNotFoundError(f"{root} holds no CLEAR config folder ({', '.join(MARKERS)}, "
                                f"...); download the dataset into it")
    reader = _Reader()
    splits: dict[str, list[str]] = {}
    for config in present:
        ids = []
        for file, i, row in _rows(root, config):
            try:
                ids.append(reader.row(config, row))
            except _RowError as e:
                raise ValueError(f"{file}: row {i}, field {e.field}: {e.problem}; fix or drop "
                                 f"that row (or re-download the file)") from None
        splits[config] = ids
    for forget in [c for c in present if c.startswith("forget") and _SPLIT.match(c)]:
        retain = complement(forget)
        both = set(splits[forget]) & set(splits.get(retain, ()))
        if both:
            raise ValueError(f"{root / forget} and {root / retain} share {len(both)} row(s) "
                             f"(same image and caption); they must be disjoint (re-download)")
    if "real_faces" in splits:
        splits["celebrity"] = list(splits["real_faces"])
    return Benchmark(list(reader.profiles.values()), list(reader.celebrities.values()), splits)


__all__ = ["CONFIGS", "IMAGE_CAPTION_QUESTIONS", "NAME_QUESTION", "caption_question",
           "complement", "is_clear", "load_clear"]
