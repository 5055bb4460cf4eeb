"""Loaders for general-utility benchmarks from their published local files.

Layouts (as the benchmarks publish them; facts with citations in docs/sources/utility-benchmarks.md):

- MMBench: one VLMEvalKit TSV (e.g. ``MMBench_DEV_EN.tsv``) with columns ``index``,
  ``question``, ``hint``, ``A``..``D`` (missing options empty), ``answer``, ``category`` and
  ``image`` (base64, or the ``index`` of another row holding it). Rows with ``index`` >= 1e6
  are circular copies of question ``index % 1e6`` (VLMEvalKit ``mcq_circular_eval``).
- MMMU: the per-subject parquet files of ``MMMU/MMMU`` (``<Subject>/<split>-*.parquet``) with
  ``id``, ``question``, ``options`` (a Python list as a string), ``answer``,
  ``question_type`` and ``image_1``..``image_7`` ({bytes, path} structs).
- MM-Vet: ``mm-vet.json`` (id -> {imagename, capability, question, answer}) and ``images/``.
- LLaVA-Bench (In-the-Wild): ``questions.jsonl``, ``context.jsonl``, ``answers_gpt4.jsonl``
  and ``images/``.

The model port takes one image per prompt. MMMU questions with several images are given
their first image, as the authors' LLaVA script does (``process_single_sample``: ``image_1``,
or no image when the options hold more than one image); both cases are counted
(:class:`Loaded`), never silent.
"""

from __future__ import annotations

import ast
import base64
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from jaxunlearn.data.schema import decode_image

CIRCULAR_OFFSET = 1_000_000
LETTERS = "ABCDEFGHI"


@dataclasses.dataclass(frozen=True)
class McqItem:
    """One multiple-choice row as asked (MMBench): options by letter, the correct letter."""

    index: int
    group: int                      # the original question (index % 1e6)
    question: str
    hint: str | None
    options: dict[str, str]
    answer: str
    category: str
    image: Any                      # PIL image


@dataclasses.dataclass(frozen=True)
class MmmuItem:
    """One MMMU question with a single image."""

    id: str
    subject: str
    question: str
    options: list[str]
    answer: Any                     # letter (multiple-choice) or str / list of str (open)
    question_type: str
    image: Any                      # image_1, or None (several images in the options)
    n_images: int = 1               # images of the question (image_1..image_7)


@dataclasses.dataclass(frozen=True)
class OpenItem:
    """An open question graded by a judge (MM-Vet, LLaVA-Bench)."""

    id: str
    question: str
    answer: str                     # reference answer
    image: Any
    category: str | tuple[str, ...]
    context: str | None = None      # LLaVA-Bench: the image caption given to the judge


@dataclasses.dataclass(frozen=True)
class Loaded:
    """Items of a benchmark; MMMU: questions with several images (asked with the first one)
    and questions asked without an image (several images in the options)."""

    items: list
    first_image_only: int = 0
    without_image: int = 0


def _open_image(data: bytes, where: str):
    try:
        img = decode_image(data)
    except ValueError as e:
        raise ValueError(f"{where}: the image {e}; check the file") from None
    return dataclasses.replace(img, rgb=True)


def _need(path: Path, what: str, fix: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found; {fix}")
    return path


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or value == ""


# ------------------------------------------------------------------------ MMBench

def load_mmbench(tsv: str | Path, *, limit: int | None = None) -> Loaded:
    """MMBench rows from a VLMEvalKit TSV (all rows, circular copies included), at most
    ``limit`` original questions (with their copies)."""
    import pandas as pd

    tsv = _need(Path(tsv), "MMBench TSV", "put MMBench_DEV_EN.tsv (VLMEvalKit) there")
    df = pd.read_csv(tsv, sep="\t", dtype={"image": str}, keep_default_na=True)
    required = ["index", "question", "A", "B", "answer", "image"]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(f"{tsv}: missing MMBench column(s) {missing}; expected the VLMEvalKit "
                         f"TSV layout (index, question, hint, A-D, answer, category, image)")
    rows = df.to_dict("records")
    images = {str(int(r["index"])): ("" if _blank(r["image"]) else str(r["image"])) for r in rows}
    items = []
    groups: list[int] = []
    for r in rows:
        index = int(r["index"])
        group = index % CIRCULAR_OFFSET
        if group not in groups:
            if limit is not None and len(groups) >= limit:
                continue
            groups.append(group)
        raw = images[str(index)]
        if 0 < len(raw) <= 64:  # a reference to another row's image (VLMEvalKit image_base)
            if raw not in images or len(images[raw]) <= 64:
                raise ValueError(f"{tsv}: row {index} refers to image of row {raw}, which has "
                                 "no base64 image")
            raw = images[raw]
        if raw.startswith("["):
            raise ValueError(f"{tsv}: row {index} has several images; MMBench rows have one")
        if not raw:
            raise ValueError(f"{tsv}: row {index} has no image")
        options = {c: str(r[c]) for c in LETTERS if c in r and not _blank(r[c])}
        answer = str(r["answer"]).strip()
        if answer not in options:
            raise ValueError(f"{tsv}: row {index} answer {answer!r} is not one of its options "
                             f"{sorted(options)}")
        hint = r.get("hint")
        items.append(McqItem(index, group, str(r["question"]),
                             None if _blank(hint) else str(hint), options, answer,
                             str(r.get("category", "")),
                             _open_image(base64.b64decode(raw), f"{tsv} row {index}")))
    return Loaded(items)


def rotations(item: McqItem) -> list[McqItem]:
    """The circular copies of an original MMBench question: the option texts shifted by
    1..n-1 positions, the answer letter following its text (n = number of options)."""
    letters = list(item.options)
    texts = [item.options[c] for c in letters]
    out = [item]
    for k in range(1, len(letters)):
        shifted = texts[k:] + texts[:k]
        answer = letters[shifted.index(item.options[item.answer])]
        out.append(dataclasses.replace(item, index=k * CIRCULAR_OFFSET + item.group,
                                       options=dict(zip(letters, shifted)), answer=answer))
    return out


def circular_groups(items: list[McqItem]) -> dict[int, list[McqItem]]:
    """Rows grouped by original question; a question without copies in the TSV gets its
    rotations generated (:func:`rotations`)."""
    groups: dict[int, list[McqItem]] = {}
    for it in items:
        groups.setdefault(it.group, []).append(it)
    return {g: (rows if len(rows) > 1 else rotations(rows[0])) for g, rows in groups.items()}


# ------------------------------------------------------------------------ MMMU

def _image_bytes(cell: Any) -> bytes | None:
    if cell is None:
        return None
    if isinstance(cell, dict):
        return cell.get("bytes")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    return None


def load_mmmu(root: str | Path, *, split: str = "validation", subjects: tuple[str, ...] = (),
              limit: int | None = None) -> Loaded:
    """MMMU questions of ``split`` from ``root/<Subject>/<split>-*.parquet`` (``subjects``:
    only these; empty = all), each with ``image_1`` (module docstring for the exceptions)."""
    import pyarrow.parquet as pq

    root = _need(Path(root), "MMMU directory", "put the MMMU/MMMU parquet folders there")
    files = sorted(root.glob(f"*/{split}-*.parquet"))
    if subjects:
        files = [f for f in files if f.parent.name in subjects]
    if not files:
        raise FileNotFoundError(f"no MMMU parquet file {root}/<Subject>/{split}-*.parquet"
                                f"{' for ' + ', '.join(subjects) if subjects else ''}; use the "
                                "MMMU/MMMU layout (one folder per subject)")
    items, several, none = [], 0, 0
    for f in files:
        for r in pq.read_table(f).to_pylist():
            for key in ("id", "question", "options", "answer", "question_type", "image_1"):
                if key not in r:
                    raise ValueError(f"{f}: missing MMMU column {key!r}")
            imgs = [b for b in (_image_bytes(r.get(f"image_{k}")) for k in range(1, 8)) if b]
            options = list(ast.literal_eval(r["options"])) if r["options"] else []
            in_options = sum(len(OPTION_IMAGE.findall(str(o))) for o in options)
            image = None
            if in_options > 1:
                none += 1
            elif imgs:
                image = _open_image(imgs[0], f"{f} {r['id']}")
                several += len(imgs) > 1
            else:
                raise ValueError(f"{f}: question {r['id']} has no image_1")
            answer = r["answer"]
            if isinstance(answer, str) and answer.startswith("[") and answer.endswith("]"):
                answer = ast.literal_eval(answer)  # a few open answers list alternatives
            items.append(MmmuItem(r["id"], f.parent.name, r["question"], options, answer,
                                  r["question_type"], image, len(imgs)))
            if limit is not None and len(items) >= limit:
                return Loaded(items, several, none)
    return Loaded(items, several, none)


OPTION_IMAGE = re.compile(r"<img='(.*?)'>")  # data_utils.parse_img_path


# ------------------------------------------------------------------------ MM-Vet

def _read_image(path: Path):
    return _open_image(_need(path, "image", "check the benchmark folder").read_bytes(), str(path))


def load_mmvet(root: str | Path, *, limit: int | None = None) -> Loaded:
    """MM-Vet questions from ``root/mm-vet.json`` and ``root/images/``."""
    root = Path(root)
    meta = _need(root / "mm-vet.json", "MM-Vet metadata", "unzip mm-vet.zip there")
    data = json.loads(meta.read_text(encoding="utf-8"))
    items = []
    for qid, v in data.items():
        items.append(OpenItem(qid, v["question"], v["answer"],
                              _read_image(root / "images" / v["imagename"]),
                              tuple(v["capability"])))
        if limit is not None and len(items) >= limit:
            break
    return Loaded(items)


# ------------------------------------------------------------------------ LLaVA-Bench

def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def load_llava_bench(root: str | Path, *, limit: int | None = None) -> Loaded:
    """LLaVA-Bench (In-the-Wild) from ``questions.jsonl``, ``context.jsonl``,
    ``answers_gpt4.jsonl`` (the reference answers) and ``images/``."""
    root = Path(root)
    fix = "download liuhaotian/llava-bench-in-the-wild there"
    questions = _jsonl(_need(root / "questions.jsonl", "LLaVA-Bench questions", fix))
    context = {c["image"]: c for c in _jsonl(_need(root / "context.jsonl", "LLaVA-Bench context",
                                                   fix))}
    refs = {a["question_id"]: a for a in _jsonl(_need(root / "answers_gpt4.jsonl",
                                                      "LLaVA-Bench reference answers", fix))}
    items = []
    for q in questions:
        if q["question_id"] not in refs:
            raise ValueError(f"{root}/answers_gpt4.jsonl has no answer for question_id "
                             f"{q['question_id']}")
        cap = context[q["image"]]["caption"]
        cap = "\n".join(cap) if isinstance(cap, list) else cap
        items.append(OpenItem(str(q["question_id"]), q["text"], refs[q["question_id"]]["text"],
                              _read_image(root / "images" / q["image"]), q["category"], cap))
        if limit is not None and len(items) >= limit:
            break
    return Loaded(items)
