"""MLLMU-Bench on-disk layout: read a local copy into a :class:`Benchmark`, and write one.

Layout (one folder per published config, each holding ``*.parquet`` files)::

    Full_Set/  Test_Set/  Retain_Set/            evaluation rows
    forget_5/ forget_10/ forget_15/              evaluation rows of the forget profiles
    retain_95/ retain_90/ retain_85/             evaluation rows of the matching retain profiles
    ft_Data/                                     fine-tuning rows

Evaluation rows: ``ID``, ``image`` and the JSON columns ``Classification_Task``,
``Generation_Task``, ``Mask_Task``, each ``{"Image_Textual_Questions": [...],
"Pure_Text_Questions": [...]}``. Classification items: ``Question``, ``Options`` {A,B,C,D},
``Correct_Answer``; generation: ``Question``, ``Ground_Truth``; mask (cloze): ``Question`` with
``[Blank]``, ``Ground_Truth``. ``Test_Set`` is the paraphrased questions on transformed images of
the fictitious profiles; ``Retain_Set`` the celebrity profiles. ``ft_Data`` rows: ``image`` and a
JSON ``metadata`` list of ``{"Question", "Answer"}``.

Optional columns and files written by jaxunlearn and read when present (absent in the published
data): ``Name``, ``Attributes`` (JSON), ``Understanding_Task`` (JSON list of {Question, Answer}) on
evaluation rows; ``images`` (all transformed images) on ``Test_Set``; ``ID`` and a ``Modality``
key per item ('multi' when absent) in ``ft_Data``; ``pretrain_Data/`` (celebrity training QA, same
format as ``ft_Data``) and ``splits.json`` (extra splits such as PULSE's).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterable

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jaxunlearn.data.schema import LETTERS, Benchmark, Profile, QAPair, Question

FORGET_SPLITS = ("forget_5", "forget_10", "forget_15")
RETAIN_SPLITS = ("retain_95", "retain_90", "retain_85")
EVAL_FOLDERS = ("Full_Set", "Test_Set", "Retain_Set", *FORGET_SPLITS, *RETAIN_SPLITS)
ALL_FOLDERS = (*EVAL_FOLDERS, "ft_Data")
TASK_COLUMNS = {"classification": "Classification_Task", "generation": "Generation_Task",
                "cloze": "Mask_Task"}
SUBLISTS = {"multi": "Image_Textual_Questions", "text": "Pure_Text_Questions"}
PARQUET_NAME = "train-00000-of-00001.parquet"


# ----------------------------------------------------------------------------- reading

def _read_folder(root: Path, folder: str) -> datasets.Dataset:
    """All parquet files of one folder as a ``datasets.Dataset`` (images decode to PIL)."""
    path = root / folder
    files = sorted(path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        raise ValueError(f"MLLMU-Bench folder {path} is missing or has no .parquet files; "
                         f"download the full benchmark there or regenerate it "
                         f"(jaxunlearn data synth --out {root})")
    tables = [pq.read_table(f) for f in files]
    table = pa.concat_tables(tables, promote_options="default") if len(tables) > 1 else tables[0]
    return datasets.Dataset(table)


def _to_image(value: Any) -> Image.Image | str | None:
    """A decoded image cell (PIL, {'bytes','path'} struct, raw bytes or a path)."""
    if value is None or isinstance(value, (Image.Image, str)):
        return value
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = value["bytes"]
        else:
            return value.get("path")
    if isinstance(value, (bytes, bytearray)):
        img = Image.open(io.BytesIO(value))
        img.load()
        return img
    raise TypeError(f"cannot read an image from a {type(value).__name__}")


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


class _RowError(ValueError):
    pass


def _parse_task(kind: str, cell: Any) -> list[Question]:
    """Questions of one task column (both modality sub-lists)."""
    data = _json(cell)
    if data is None:
        return []
    if not isinstance(data, dict):
        raise _RowError(f"{TASK_COLUMNS[kind]} is not a JSON object")
    out: list[Question] = []
    for modality, key in SUBLISTS.items():
        for j, item in enumerate(data.get(key) or []):
            where = f"{TASK_COLUMNS[kind]}.{key}[{j}]"
            try:
                if kind == "classification":
                    opts = item["Options"]
                    options = [str(opts[letter]) for letter in LETTERS]
                    out.append(Question(kind, modality, item["Question"],
                                        str(item["Correct_Answer"]).strip(), options))
                else:
                    out.append(Question(kind, modality, item["Question"],
                                        str(item["Ground_Truth"])))
            except (KeyError, TypeError) as e:
                raise _RowError(f"{where} lacks field {e}") from None
            except ValueError as e:
                raise _RowError(f"{where}: {e}") from None
    return out


def _parse_qa_list(cell: Any, what: str) -> list[QAPair]:
    items = _json(cell) or []
    if not isinstance(items, list):
        raise _RowError(f"{what} is not a JSON list")
    out = []
    for j, item in enumerate(items):
        try:
            out.append(QAPair(str(item["Question"]), str(item["Answer"]),
                              item.get("Modality", "multi")))
        except (KeyError, TypeError) as e:
            raise _RowError(f"{what}[{j}] lacks field {e}") from None
        except ValueError as e:
            raise _RowError(f"{what}[{j}]: {e}") from None
    return out


def _row_error(root: Path, folder: str, i: int, row: dict, err: Exception) -> ValueError:
    return ValueError(f"malformed row {i} (ID={row.get('ID')!r}) in {root / folder}: {err}; "
                      f"fix or drop that row, or regenerate the folder")


def _eval_profile(row: dict) -> Profile:
    """A profile from one evaluation row."""
    if row.get("ID") is None:
        raise _RowError("missing 'ID'")
    questions: list[Question] = []
    for kind, column in TASK_COLUMNS.items():
        if column not in row:
            raise _RowError(f"missing column '{column}'")
        questions += _parse_task(kind, row[column])
    attributes = _json(row.get("Attributes")) or {}
    images = [_to_image(x) for x in (row.get("images") or [])]
    return Profile(id=str(row["ID"]), name=str(row.get("Name") or ""),
                   attributes={str(k): str(v) for k, v in attributes.items()},
                   image=_to_image(row.get("image")), test_images=images,
                   eval_questions=questions,
                   understanding_qa=_parse_qa_list(row.get("Understanding_Task"),
                                                   "Understanding_Task"))


def _read_eval(root: Path, folder: str) -> list[Profile]:
    out = []
    for i, row in enumerate(_read_folder(root, folder)):
        try:
            out.append(_eval_profile(row))
        except (_RowError, TypeError, json.JSONDecodeError) as e:
            raise _row_error(root, folder, i, row, e) from None
    return out


def _read_train(root: Path, folder: str, fallback_ids: list[str]) -> dict[str, tuple]:
    """id -> (image, train QA); rows without ``ID`` map to ``fallback_ids`` by position."""
    out: dict[str, tuple] = {}
    for i, row in enumerate(_read_folder(root, folder)):
        try:
            if "metadata" not in row:
                raise _RowError("missing column 'metadata'")
            qa = _parse_qa_list(row["metadata"], "metadata")
        except (_RowError, json.JSONDecodeError) as e:
            raise _row_error(root, folder, i, row, e) from None
        pid = row.get("ID")
        if pid is None:
            if i >= len(fallback_ids):
                raise _row_error(root, folder, i, row, _RowError("no 'ID' and no profile left"))
            pid = fallback_ids[i]
        image, old = out.get(str(pid), (None, []))
        out[str(pid)] = (image or _to_image(row.get("image")), old + qa)
    return out


def load_mllmu(path: str | Path, folders: Iterable[str] = ALL_FOLDERS) -> Benchmark:
    """Load an MLLMU-Bench directory (see module docstring) into a :class:`Benchmark`.

    ``folders`` lists the folders that must exist (default: all); absent optional ones are
    skipped. Raises ``ValueError`` naming the path for a missing folder or a malformed row.
    """
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"MLLMU-Bench directory {root} does not exist; pass the folder that "
                         f"holds Full_Set/, forget_5/, ... (or generate one with data synth)")
    required = set(folders)
    present = {f for f in ALL_FOLDERS if (root / f).is_dir()} | required
    splits: dict[str, list[str]] = {}
    profiles: dict[str, Profile] = {}
    for folder in [f for f in EVAL_FOLDERS if f in present and f not in ("Test_Set", "Retain_Set")]:
        rows = _read_eval(root, folder)
        splits[folder if folder != "Full_Set" else "full"] = [p.id for p in rows]
        for p in rows:
            profiles.setdefault(p.id, p)
    if "Test_Set" in present:
        test_rows = _read_eval(root, "Test_Set")
        splits["test"] = [p.id for p in test_rows]
        for t in test_rows:
            p = profiles.setdefault(t.id, Profile(id=t.id, name=t.name, attributes=t.attributes))
            p.test_questions = t.eval_questions
            p.test_images = t.test_images or ([t.image] if t.image is not None else [])
    celebrities = _read_eval(root, "Retain_Set") if "Retain_Set" in present else []
    splits["celebrity"] = [p.id for p in celebrities]
    if "ft_Data" in present:
        _attach_train(profiles, _read_train(root, "ft_Data", list(profiles)))
    if (root / "pretrain_Data").is_dir():
        celeb_table = {p.id: p for p in celebrities}
        _attach_train(celeb_table, _read_train(root, "pretrain_Data", list(celeb_table)))
    if (root / "splits.json").is_file():
        try:
            extra = json.loads((root / "splits.json").read_text())
            splits.update({k: [str(i) for i in v] for k, v in extra.items()})
        except (json.JSONDecodeError, AttributeError, TypeError) as e:
            raise ValueError(f"malformed {root / 'splits.json'}: {e}; it must map split "
                             f"names to lists of profile ids") from None
    return Benchmark(list(profiles.values()), celebrities, splits)


def _attach_train(table: dict[str, Profile], train: dict[str, tuple]) -> None:
    for pid, (image, qa) in train.items():
        p = table.setdefault(pid, Profile(id=pid, name=""))
        p.train_qa = qa
        if p.image is None:
            p.image = image


# ----------------------------------------------------------------------------- writing

def png_bytes(image: Image.Image | str) -> bytes:
    """Deterministic PNG encoding (fixed compression level, no metadata)."""
    if isinstance(image, str):
        return Path(image).read_bytes()
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _image_cell(image: Any) -> dict | None:
    return None if image is None else {"bytes": png_bytes(image), "path": None}


def questions_to_tasks(questions: list[Question]) -> dict[str, str]:
    """Task column name -> JSON string, in the MLLMU-Bench item format."""
    out = {}
    for kind, column in TASK_COLUMNS.items():
        data: dict[str, list] = {}
        for modality, key in SUBLISTS.items():
            items = []
            for q in questions:
                if q.kind != kind or q.modality != modality:
                    continue
                if kind == "classification":
                    items.append({"Question": q.question,
                                  "Options": dict(zip(LETTERS, q.options)),
                                  "Correct_Answer": q.answer})
                else:
                    items.append({"Question": q.question, "Ground_Truth": q.answer})
            data[key] = items
        out[column] = json.dumps(data, ensure_ascii=False)
    return out


def _qa_json(qa: list[QAPair], with_modality: bool = True) -> str:
    items = [{"Question": q.question, "Answer": q.answer,
              **({"Modality": q.modality} if with_modality else {})} for q in qa]
    return json.dumps(items, ensure_ascii=False)


_EVAL_FEATURES = {
    "ID": datasets.Value("string"), "image": datasets.Image(), "Name": datasets.Value("string"),
    "Attributes": datasets.Value("string"), "Classification_Task": datasets.Value("string"),
    "Generation_Task": datasets.Value("string"), "Mask_Task": datasets.Value("string"),
    "Understanding_Task": datasets.Value("string"),
}


def _write(folder: Path, rows: list[dict], features: datasets.Features) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    encoded = [features.encode_example(r) for r in rows]
    table = pa.Table.from_pylist(encoded, schema=features.arrow_schema)
    pq.write_table(table, folder / PARQUET_NAME, compression="snappy")


def _eval_row(p: Profile, test: bool = False) -> dict:
    row = {"ID": p.id, "Name": p.name, "Attributes": json.dumps(p.attributes, ensure_ascii=False),
           "Understanding_Task": _qa_json(p.understanding_qa, with_modality=False)}
    if test:
        row["image"] = _image_cell(p.test_images[0] if p.test_images else p.image)
        row["images"] = [_image_cell(i) for i in p.test_images]
        row.update(questions_to_tasks(p.test_questions))
    else:
        row["image"] = _image_cell(p.image)
        row.update(questions_to_tasks(p.eval_questions))
    return row


def write_mllmu(bench: Benchmark, out_dir: str | Path) -> Path:
    """Write ``bench`` in the MLLMU-Bench layout (byte-identical for identical input)."""
    root = Path(out_dir)
    table = bench.by_id()
    eval_f = datasets.Features(_EVAL_FEATURES)
    test_f = datasets.Features({**_EVAL_FEATURES, "images": datasets.List(datasets.Image())})
    train_f = datasets.Features({"ID": datasets.Value("string"), "image": datasets.Image(),
                                 "metadata": datasets.Value("string")})
    _write(root / "Full_Set", [_eval_row(p) for p in bench.profiles], eval_f)
    test_ids = bench.splits.get("test", [p.id for p in bench.profiles])
    _write(root / "Test_Set", [_eval_row(table[i], test=True) for i in test_ids], test_f)
    _write(root / "Retain_Set", [_eval_row(p) for p in bench.celebrities], eval_f)
    for name in (*FORGET_SPLITS, *RETAIN_SPLITS):
        if name in bench.splits:
            _write(root / name, [_eval_row(table[i]) for i in bench.splits[name]], eval_f)
    _write(root / "ft_Data", [{"ID": p.id, "image": _image_cell(p.image),
                               "metadata": _qa_json(p.train_qa)} for p in bench.profiles], train_f)
    if any(p.train_qa for p in bench.celebrities):
        _write(root / "pretrain_Data", [{"ID": p.id, "image": _image_cell(p.image),
                                         "metadata": _qa_json(p.train_qa)}
                                        for p in bench.celebrities], train_f)
    std = {"full", "test", "celebrity", *FORGET_SPLITS, *RETAIN_SPLITS}
    extra = {k: v for k, v in bench.splits.items() if k not in std}
    if extra:
        (root / "splits.json").write_text(json.dumps(extra, indent=1, sort_keys=True) + "\n")
    return root
