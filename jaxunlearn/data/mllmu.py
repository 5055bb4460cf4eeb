"""MLLMU-Bench exactly as published: read a local copy into a :class:`Benchmark`, and write one.

The layout is the one of the dataset ``MLLMMU/MLLMU-Bench`` and its code
(``franciscoliu/MLLMU-Bench``: ``eval.py``, ``finetune.py``, ``data_process/data_preprocess.py``;
the facts with citations are in ``docs/sources/mllmu-bench.md``)::

    Full_Set/   train-00000-of-00001.parquet     the 500 fictitious profiles (few-shot source)
    Retain_Set/ train-00000-of-00001.parquet     the real celebrities
    Test_Set/   train-0000{0,1}-of-00002.parquet paraphrased questions, transformed images
    forget_5/ forget_10/ forget_15/              full rows of the forget profiles
    retain_95/ retain_90/ retain_85/             full rows of the matching retain profiles
    ft_Data/    train-00000-of-00001.parquet     fine-tuning rows

Every ``*.parquet`` file of a folder is read, in name order, and the rows concatenated (``eval.py``
``load_and_combine_parquet_files`` does this for ``Test_Set``). ``forget_N`` pairs with
``retain_(100-N)``. A split is evaluated from its own folder's rows: when a row of a split folder
differs from the ``Full_Set`` row of the same ID, :meth:`Benchmark.split` returns the folder's row.

Evaluation rows: ``image`` (struct ``{bytes, path}``), ``ID``, ``biography``, ``question``,
``answer`` (``Directory`` in ``Full_Set``/``Retain_Set``), ``Classification_Task`` = struct
``{Image_Textual_Questions, Pure_Text_Questions}`` of lists of ``{Question, Options{A,B,C,D},
Correct_Answer}``, ``Generation_Task`` and ``Mask_Task`` = flat lists of ``{Question,
Ground_Truth, Type}`` with ``Type`` ``Image_Textual`` or ``Pure_Text``; the cloze blank is ``__``
in the data and ``[Blank]`` in a loaded :class:`Question` (``eval.py`` replaces it the same way).
``Test_Set`` rows carry ``images`` (a list of image structs; ``image`` is used when absent).
``ft_Data`` rows: ``image``, ``ID``, ``metadata`` = JSON list of ``{Question, Answer}`` (pairs
with an empty question or answer are dropped, as ``data_preprocess.py`` does).

Extras written by jaxunlearn's synthetic benchmark and read only when present (the published
data has none): eval-row columns ``Name``, ``Attributes`` (JSON object) and ``Understanding_Task``
(JSON list of ``{Question, Answer}``); a ``Modality`` key (``multi``/``text``) per ``ft_Data``
item; ``pretrain_Data/`` (celebrity training QA, ``ft_Data`` format); ``splits.json`` (extra
splits such as PULSE's, name -> list of IDs).

The layout jaxunlearn wrote before (task columns as JSON strings) is not read any more: it is
detected and reported with the command that regenerates it.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Iterable

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jaxunlearn.data.schema import (
    BLANK, LETTERS, Benchmark, EncodedImage, Profile, QAPair, Question, decode_image,
)

FORGET_SPLITS = ("forget_5", "forget_10", "forget_15")
RETAIN_SPLITS = ("retain_95", "retain_90", "retain_85")
SPLIT_FOLDERS = (*FORGET_SPLITS, *RETAIN_SPLITS)
EVAL_FOLDERS = ("Full_Set", "Test_Set", "Retain_Set", *SPLIT_FOLDERS)
ALL_FOLDERS = (*EVAL_FOLDERS, "ft_Data")
TASK_COLUMNS = {"classification": "Classification_Task", "generation": "Generation_Task",
                "cloze": "Mask_Task"}
SUBLISTS = {"multi": "Image_Textual_Questions", "text": "Pure_Text_Questions"}
TYPES = {"Image_Textual": "multi", "Pure_Text": "text"}
TYPE_OF = {v: k for k, v in TYPES.items()}
DATA_BLANK = "__"
TEXT_COLUMNS = ("question", "answer", "Directory")
PARQUET_NAME = "train-00000-of-00001.parquet"
TEST_SHARDS = ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet")


def complement(split: str) -> str:
    """``forget_N`` -> ``retain_(100-N)`` and back (the benchmark's pairing)."""
    kind, _, pct = split.partition("_")
    if kind not in ("forget", "retain") or not pct.isdigit():
        raise ValueError(f"split {split!r} is not forget_N or retain_N; pass forget_5/10/15 or "
                         f"retain_95/90/85")
    return f"{'retain' if kind == 'forget' else 'forget'}_{100 - int(pct)}"


# ----------------------------------------------------------------------------- reading

class _RowError(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


def _files(root: Path, folder: str) -> list[Path]:
    path = root / folder
    files = sorted(path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        what = "is missing" if not path.is_dir() else "has no .parquet files"
        raise FileNotFoundError(
            f"MLLMU-Bench folder {path} {what}; download the whole dataset "
            f"(git clone https://huggingface.co/datasets/MLLMMU/MLLMU-Bench) into {root} or "
            f"generate one with `jaxunlearn data synth --out {root}`")
    return files


def _check_columns(file: Path, schema: pa.Schema, required: Iterable[str],
                   one_of: tuple[str, ...] = ()) -> None:
    names = set(schema.names)
    for column in TASK_COLUMNS.values():
        if column in names and pa.types.is_string(schema.field(column).type):
            raise ValueError(
                f"{file}: column {column} holds JSON strings, the layout jaxunlearn wrote before "
                f"issue 16, not the published MLLMU-Bench one; regenerate it with `jaxunlearn "
                f"data synth --out {file.parent.parent}` or download the published copy")
    missing = [c for c in required if c not in names]
    if one_of and not names & set(one_of):
        missing.append(" or ".join(one_of))
    if missing:
        raise ValueError(f"{file}: missing column {', '.join(missing)} (has "
                         f"{', '.join(schema.names)}); this is not an MLLMU-Bench folder in the "
                         f"published layout")


def _rows(root: Path, folder: str, required: Iterable[str],
          one_of: tuple[str, ...] = ()) -> Iterable[tuple[Path, int, dict]]:
    """(file, row index in file, row) over all parquet files of ``folder``, in name order."""
    for file in _files(root, folder):
        try:
            table = pq.read_table(file)
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{file}: not a readable parquet file ({e}); re-download it") from None
        _check_columns(file, table.schema, required, one_of)
        for i, row in enumerate(table.to_pylist()):
            yield file, i, row


def _row_error(file: Path, i: int, row: dict, err: _RowError) -> ValueError:
    return ValueError(f"{file}: row {i} (ID={row.get('ID')!r}), field {err.field}: "
                      f"{err.problem}; fix or drop that row")


def _image_bytes(cell: Any, field: str) -> bytes | str:
    """The raw bytes (or an existing path) of an image struct cell."""
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"])
        if cell.get("path"):
            if not Path(cell["path"]).is_file():
                raise _RowError(field, f"has no bytes and its path {cell['path']!r} does not exist")
            return str(cell["path"])
    raise _RowError(field, f"is not an image struct {{bytes, path}} (got {type(cell).__name__})")


def _decode(raw: bytes | str, field: str) -> EncodedImage | str:
    if isinstance(raw, str):
        return raw
    try:
        return decode_image(raw)
    except ValueError as e:
        raise _RowError(field, str(e)) from None


def _text(item: Any, key: str, field: str) -> str:
    if not isinstance(item, dict) or key not in item:
        raise _RowError(f"{field}.{key}", "is missing")
    value = item[key]
    if not isinstance(value, str):
        raise _RowError(f"{field}.{key}", f"is not a string (got {type(value).__name__})")
    return value


def _classification(cell: Any) -> list[Question]:
    column = TASK_COLUMNS["classification"]
    if cell is None:
        return []
    if not isinstance(cell, dict):
        raise _RowError(column, "is not a struct {Image_Textual_Questions, Pure_Text_Questions}")
    out = []
    for modality, key in SUBLISTS.items():
        for j, item in enumerate(cell.get(key) or []):
            where = f"{column}.{key}[{j}]"
            question = _text(item, "Question", where)
            opts = item.get("Options")
            if not isinstance(opts, dict):
                raise _RowError(f"{where}.Options", "is missing or not a struct {A, B, C, D}")
            options = [_text(opts, letter, f"{where}.Options") for letter in LETTERS]
            answer = _text(item, "Correct_Answer", where).strip()
            if answer not in LETTERS:
                raise _RowError(f"{where}.Correct_Answer", f"is {answer!r}, not one of A-D")
            out.append(Question("classification", modality, question, answer, options))
    return out


def _typed(kind: str, cell: Any) -> list[Question]:
    column = TASK_COLUMNS[kind]
    if cell is None:
        return []
    if not isinstance(cell, list):
        raise _RowError(column, "is not a list of {Question, Ground_Truth, Type}")
    out = []
    for j, item in enumerate(cell):
        where = f"{column}[{j}]"
        question = _text(item, "Question", where)
        truth = _text(item, "Ground_Truth", where)
        kind_of = _text(item, "Type", where)
        if kind_of not in TYPES:
            raise _RowError(f"{where}.Type", f"is {kind_of!r}, not one of {sorted(TYPES)}")
        if kind == "cloze":
            if DATA_BLANK not in question:
                raise _RowError(f"{where}.Question", f"has no blank {DATA_BLANK!r}")
            question = question.replace(DATA_BLANK, BLANK)
        out.append(Question(kind, TYPES[kind_of], question, truth))
    return out


def _questions(row: dict) -> list[Question]:
    return [*_classification(row.get("Classification_Task")),
            *_typed("generation", row.get("Generation_Task")),
            *_typed("cloze", row.get("Mask_Task"))]


def _qa_list(cell: Any, field: str, drop_empty: bool = False) -> list[QAPair]:
    if cell is None:
        return []
    try:
        items = json.loads(cell) if isinstance(cell, (str, bytes)) else cell
    except json.JSONDecodeError as e:
        raise _RowError(field, f"is not valid JSON ({e})") from None
    if not isinstance(items, list):
        raise _RowError(field, "is not a JSON list of {Question, Answer}")
    out = []
    for j, item in enumerate(items):
        q, a = _text(item, "Question", f"{field}[{j}]"), _text(item, "Answer", f"{field}[{j}]")
        if drop_empty and not (q and a):
            continue
        modality = item.get("Modality", "multi")
        if modality not in ("multi", "text"):
            raise _RowError(f"{field}[{j}].Modality", f"is {modality!r}, not multi or text")
        out.append(QAPair(q, a, modality))
    return out


def _string(row: dict, key: str) -> str:
    value = row.get(key)
    if value is not None and not isinstance(value, str):
        raise _RowError(key, f"is not a string (got {type(value).__name__})")
    return value or ""


def _pid(row: dict) -> str:
    pid = row.get("ID")
    if pid is None or (isinstance(pid, str) and not pid):
        raise _RowError("ID", "is empty")
    return str(pid)


class _Images:
    """Decoded images by content hash, so identical bytes decode once across folders."""

    def __init__(self) -> None:
        self.cache: dict[str, EncodedImage | str] = {}

    def get(self, cell: Any, field: str) -> tuple[EncodedImage | str, str]:
        raw = _image_bytes(cell, field)
        key = hashlib.sha256(raw.encode() if isinstance(raw, str) else raw).hexdigest()
        if key not in self.cache:
            self.cache[key] = _decode(raw, field)
        return self.cache[key], key


def _eval_profile(row: dict, images: _Images) -> tuple[Profile, str]:
    """A profile from one evaluation row, and its image hash."""
    pid = _pid(row)
    image, key = images.get(row.get("image"), "image")
    try:
        attributes = json.loads(row["Attributes"]) if row.get("Attributes") else {}
    except json.JSONDecodeError as e:
        raise _RowError("Attributes", f"is not valid JSON ({e})") from None
    if not isinstance(attributes, dict):
        raise _RowError("Attributes", "is not a JSON object")
    profile = Profile(
        id=pid, name=_string(row, "Name"),
        attributes={str(k): str(v) for k, v in attributes.items()}, image=image,
        eval_questions=_questions(row),
        understanding_qa=_qa_list(row.get("Understanding_Task"), "Understanding_Task"),
        biography=_string(row, "biography"),
        columns={k: _string(row, k) for k in TEXT_COLUMNS if row.get(k) is not None})
    return profile, key


_EVAL_REQUIRED = ("image", "ID", *TASK_COLUMNS.values())


def _read_eval(root: Path, folder: str, images: _Images) -> list[tuple[Path, int, dict, Profile,
                                                                      str]]:
    out, seen = [], {}
    for file, i, row in _rows(root, folder, _EVAL_REQUIRED):
        try:
            profile, key = _eval_profile(row, images)
            if profile.id in seen:
                raise _RowError("ID", f"repeats row {seen[profile.id]} of the same folder")
        except _RowError as e:
            raise _row_error(file, i, row, e) from None
        seen[profile.id] = i
        out.append((file, i, row, profile, key))
    return out


def _unknown(file: Path, i: int, row: dict, where: str) -> ValueError:
    return _row_error(file, i, row, _RowError("ID", f"names a profile that is not in {where}"))


def load_mllmu(path: str | Path, folders: Iterable[str] = ALL_FOLDERS) -> Benchmark:
    """Load an MLLMU-Bench directory in the published layout (module docstring).

    ``folders`` lists the folders that must exist (default: all ten); other known folders are
    read when present. Raises ``FileNotFoundError`` for a missing directory or folder and
    ``ValueError`` naming file, row, ID and field for a missing column, a malformed row, an image
    that does not decode or a row whose ID is unknown.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"MLLMU-Bench directory {root} does not exist; pass the folder "
                                f"that holds Full_Set/, forget_5/, ... (or generate one with "
                                f"`jaxunlearn data synth --out {root}`)")
    unknown = sorted(set(folders) - set(ALL_FOLDERS))
    if unknown:
        raise ValueError(f"unknown MLLMU-Bench folder(s) {unknown}; known: {list(ALL_FOLDERS)}")
    present = {f for f in ALL_FOLDERS if (root / f).is_dir()} | set(folders)
    images = _Images()
    profiles: dict[str, Profile] = {}
    hashes: dict[str, str] = {}
    splits: dict[str, list[str]] = {}
    split_rows: dict[str, list[Profile]] = {}
    if "Full_Set" in present:
        for _, _, _, p, key in _read_eval(root, "Full_Set", images):
            profiles[p.id], hashes[p.id] = p, key
        splits["full"] = list(profiles)
    full_loaded = "Full_Set" in present
    own: dict[str, list[Profile]] = {}
    for folder in [f for f in SPLIT_FOLDERS if f in present]:
        rows, differs = [], False
        for file, i, row, p, key in _read_eval(root, folder, images):
            base = profiles.get(p.id)
            if base is None:
                if full_loaded:
                    raise _unknown(file, i, row, f"{root / 'Full_Set'}")
                profiles[p.id], hashes[p.id], base = p, key, p
            if base is not p and (hashes[p.id] != key or base.eval_questions != p.eval_questions
                                  or base.biography != p.biography):
                differs = True
                rows.append(p)
            else:
                rows.append(base)
        splits[folder] = [p.id for p in rows]
        own[folder] = rows
        if differs:
            split_rows[folder] = rows
    for forget in FORGET_SPLITS:
        retain = complement(forget)
        both = set(splits.get(forget, ())) & set(splits.get(retain, ()))
        if both:
            raise ValueError(f"{root / forget} and {root / retain} share IDs {sorted(both)[:5]}; "
                             f"forget_N and retain_(100-N) must be disjoint (re-download them)")
    if "Test_Set" in present:
        splits["test"] = []
        for file, i, row in _rows(root, "Test_Set", ("ID", *TASK_COLUMNS.values()),
                                  one_of=("images", "image")):
            try:
                pid = _pid(row)
                if pid not in profiles:
                    raise _unknown(file, i, row, "Full_Set or the split folders")
                cells = row.get("images")
                if cells is None:
                    cells = [row.get("image")] if row.get("image") is not None else []
                if not cells:
                    raise _RowError("images", "is empty (no transformed image)")
                test_images = [images.get(c, f"images[{j}]")[0] for j, c in enumerate(cells)]
                questions = _questions(row)
            except _RowError as e:
                raise _row_error(file, i, row, e) from None
            profiles[pid].test_images, profiles[pid].test_questions = test_images, questions
            splits["test"].append(pid)
    celebrities: list[Profile] = []
    if "Retain_Set" in present:
        for file, i, row, p, _ in _read_eval(root, "Retain_Set", images):
            if p.id in profiles:
                raise _row_error(file, i, row, _RowError(
                    "ID", "is also a fictitious profile's ID (Full_Set or a split folder)"))
            celebrities.append(p)
        splits["celebrity"] = [p.id for p in celebrities]
    if "ft_Data" in present:
        _read_train(root, "ft_Data", profiles, images, "Full_Set")
    if (root / "pretrain_Data").is_dir():
        _read_train(root, "pretrain_Data", {p.id: p for p in celebrities}, images, "Retain_Set")
    for rows in split_rows.values():  # a split's own rows share the profile's other data
        for p in rows:
            base = profiles[p.id]
            if p is not base:
                p.train_qa, p.test_questions = base.train_qa, base.test_questions
                p.test_images, p.name, p.attributes = base.test_images, base.name, base.attributes
    known = {*profiles, *(p.id for p in celebrities)}
    if (root / "splits.json").is_file():
        splits.update(_extra_splits(root / "splits.json", known))
    return Benchmark(list(profiles.values()), celebrities, splits, split_rows)


def _read_train(root: Path, folder: str, table: dict[str, Profile], images: _Images,
                where: str) -> None:
    """Attach ``ft_Data``-format rows (training QA) to the profiles of ``table`` by ID."""
    for file, i, row in _rows(root, folder, ("image", "ID", "metadata")):
        try:
            pid = _pid(row)
            if pid not in table:
                raise _unknown(file, i, row, where)
            image, _ = images.get(row.get("image"), "image")
            qa = _qa_list(row.get("metadata"), "metadata", drop_empty=True)
        except _RowError as e:
            raise _row_error(file, i, row, e) from None
        p = table[pid]
        p.train_qa = p.train_qa + qa
        if p.image is None:
            p.image = image


def _extra_splits(file: Path, known: set[str]) -> dict[str, list[str]]:
    try:
        extra = json.loads(file.read_text())
        if not isinstance(extra, dict):
            raise TypeError("not a JSON object")
        out = {str(k): [str(i) for i in v] for k, v in extra.items()}
    except (json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"malformed {file}: {e}; it must map split names to lists of "
                         f"profile IDs") from None
    for name, ids in out.items():
        bad = [i for i in ids if i not in known]
        if bad:
            raise ValueError(f"{file}: split {name!r} names unknown ID(s) {bad[:5]}; every ID "
                             f"must be a Full_Set or Retain_Set profile")
    return out


# ----------------------------------------------------------------------------- writing

_V = datasets.Value("string")
_CLS_ITEM = {"Correct_Answer": _V, "Options": {k: _V for k in LETTERS}, "Question": _V}
_TASK_ITEM = {"Ground_Truth": _V, "Question": _V, "Type": _V}
_TASK_FEATURES = {
    "Classification_Task": {"Image_Textual_Questions": [_CLS_ITEM],
                            "Pure_Text_Questions": [_CLS_ITEM]},
    "Generation_Task": [_TASK_ITEM], "Mask_Task": [_TASK_ITEM]}
# jaxunlearn extras (read only when present)
_EXTRA_FEATURES = {"Name": _V, "Attributes": _V, "Understanding_Task": _V}


def eval_features(directory: bool = True, extras: bool = True) -> datasets.Features:
    """Columns of an evaluation folder as on the dataset card (``Directory`` only in
    ``Full_Set``/``Retain_Set``), optionally with the jaxunlearn extras."""
    cols: dict[str, Any] = {"image": datasets.Image(), "ID": _V}
    if directory:
        cols["Directory"] = _V
    cols.update({"biography": _V, "question": _V, "answer": _V, **_TASK_FEATURES})
    return datasets.Features({**cols, **(_EXTRA_FEATURES if extras else {})})


TEST_FEATURES = datasets.Features({"ID": _V, "images": datasets.List(datasets.Image()),
                                   **_TASK_FEATURES})
TRAIN_FEATURES = datasets.Features({"image": datasets.Image(), "ID": _V, "metadata": _V})


def png_bytes(image: Image.Image | EncodedImage | str) -> bytes:
    """Deterministic PNG encoding (fixed compression level, no metadata) of a PIL image; a
    file's or an :class:`EncodedImage` 's bytes as they are."""
    if isinstance(image, str):
        return Path(image).read_bytes()
    if isinstance(image, EncodedImage):
        return image.data
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _image_cell(image: Any) -> dict:
    if image is None:
        raise ValueError("a profile without an image cannot be written in the MLLMU-Bench layout")
    return {"bytes": png_bytes(image), "path": None}


def questions_to_tasks(questions: list[Question]) -> dict[str, Any]:
    """Task columns in the published structure (cloze ``[Blank]`` written as ``__``)."""
    cls: dict[str, list] = {key: [] for key in SUBLISTS.values()}
    gen, mask = [], []
    for q in questions:
        if q.kind == "classification":
            cls[SUBLISTS[q.modality]].append({"Correct_Answer": q.answer,
                                              "Options": dict(zip(LETTERS, q.options)),
                                              "Question": q.question})
        elif q.kind == "generation":
            gen.append({"Ground_Truth": q.answer, "Question": q.question,
                        "Type": TYPE_OF[q.modality]})
        else:
            mask.append({"Ground_Truth": q.answer, "Question": q.question.replace(BLANK, DATA_BLANK),
                         "Type": TYPE_OF[q.modality]})
    return {"Classification_Task": cls, "Generation_Task": gen, "Mask_Task": mask}


def _qa_json(qa: list[QAPair], with_modality: bool = True) -> str:
    items = [{"Question": q.question, "Answer": q.answer,
              **({"Modality": q.modality} if with_modality else {})} for q in qa]
    return json.dumps(items, ensure_ascii=False)


def _eval_row(p: Profile, directory: bool) -> dict:
    row = {"image": _image_cell(p.image), "ID": p.id, "biography": p.biography,
           "question": p.columns.get("question"), "answer": p.columns.get("answer"),
           **questions_to_tasks(p.eval_questions), "Name": p.name,
           "Attributes": json.dumps(p.attributes, ensure_ascii=False),
           "Understanding_Task": _qa_json(p.understanding_qa, with_modality=False)}
    if directory:
        row["Directory"] = p.columns.get("Directory")
    return row


def _test_row(p: Profile) -> dict:
    shots = p.test_images or [p.image]
    return {"ID": p.id, "images": [_image_cell(i) for i in shots],
            **questions_to_tasks(p.test_questions)}


def _write(folder: Path, rows: list[dict], features: datasets.Features,
           names: tuple[str, ...] = (PARQUET_NAME,)) -> None:
    """``rows`` split evenly over the shard files ``names`` (one file by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.parquet"):
        stale.unlink()
    encoded = [features.encode_example(r) for r in rows]
    per = -(-len(encoded) // len(names)) if encoded else 0
    for k, name in enumerate(names):
        part = encoded[k * per:(k + 1) * per]
        table = pa.Table.from_pylist(part, schema=features.arrow_schema)
        pq.write_table(table, folder / name, compression="snappy")


def write_mllmu(bench: Benchmark, out_dir: str | Path) -> Path:
    """Write ``bench`` in the published MLLMU-Bench layout (byte-identical for identical input).

    ``Test_Set`` is written in two shards, as published. The splits ``forget_N``/``retain_N``
    present in ``bench.splits`` get their folders; other splits go to ``splits.json``.
    """
    root = Path(out_dir)
    table = bench.by_id()
    _write(root / "Full_Set", [_eval_row(p, True) for p in bench.profiles], eval_features())
    _write(root / "Retain_Set", [_eval_row(p, True) for p in bench.celebrities], eval_features())
    for name in SPLIT_FOLDERS:
        if name in bench.splits:
            _write(root / name, [_eval_row(p, False) for p in bench.split(name)],
                   eval_features(directory=False))
    test_ids = bench.splits.get("test", [p.id for p in bench.profiles])
    _write(root / "Test_Set", [_test_row(table[i]) for i in test_ids], TEST_FEATURES, TEST_SHARDS)
    _write(root / "ft_Data", [{"image": _image_cell(p.image), "ID": p.id,
                               "metadata": _qa_json(p.train_qa)} for p in bench.profiles],
           TRAIN_FEATURES)
    if any(p.train_qa for p in bench.celebrities):
        _write(root / "pretrain_Data", [{"image": _image_cell(p.image), "ID": p.id,
                                         "metadata": _qa_json(p.train_qa)}
                                        for p in bench.celebrities], TRAIN_FEATURES)
    std = {"full", "test", "celebrity", *SPLIT_FOLDERS}
    extra = {k: v for k, v in bench.splits.items() if k not in std}
    if extra:
        (root / "splits.json").write_text(json.dumps(extra, indent=1, sort_keys=True) + "\n")
    return root
