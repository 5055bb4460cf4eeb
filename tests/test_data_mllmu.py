"""MLLMU-Bench loader on a directory written the way the published dataset is laid out.

The fixture follows the benchmark's own code and dataset card, column by column:

- folder and shard names: ``eval.py main()`` (``forget_{r}`` / ``retain_{100-r}`` with
  ``train-00000-of-00001.parquet``), README eval / finetune commands (``Full_Set``,
  ``Retain_Set``, ``ft_Data``, ``Test_Set`` as a folder), card tree (``Test_Set/
  train-0000{0,1}-of-00002.parquet``), ``eval.py load_and_combine_parquet_files`` (every shard);
- ``image`` struct ``{bytes, path}``: card (``dtype: image``), ``eval.py evaluate_classification``
  (``row["image"]["bytes"]``);
- ``ID``, ``Directory``, ``biography``, ``question``, ``answer``: card ``dataset_info`` of
  ``Full_Set`` / ``Retain_Set`` (``forget_5`` without ``Directory``, card commit ``21a368e``);
- ``Classification_Task`` struct of ``Image_Textual_Questions`` / ``Pure_Text_Questions`` lists of
  ``{Correct_Answer, Options{A,B,C,D}, Question}``: card; ``eval.py evaluate_classification``;
- ``Generation_Task`` / ``Mask_Task`` flat lists of ``{Ground_Truth, Question, Type}``: card;
  ``eval.py evaluate_generation`` / ``evaluate_fill_in_the_blank`` (``Type`` ``Image_Textual`` /
  ``Pure_Text``, blank ``__`` replaced by ``[Blank]``);
- ``Test_Set`` ``images`` list of image structs: ``eval.py`` ``random.choice(row["images"])``;
- ``ft_Data`` ``image``, ``ID``, ``metadata`` JSON list of ``{Question, Answer}``: card commit
  ``6681284``; ``data_process/data_preprocess.py Vanilla_LLaVA_Dataset.flatten_dataset``
  (pairs with an empty question or answer dropped).
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jaxunlearn.data.mllmu import ALL_FOLDERS, load_mllmu, write_mllmu
from jaxunlearn.data.schema import (
    Benchmark, EncodedImage, Profile, QAPair, Question, load_image,
)

# ----------------------------------------------------------------------------- the fixture

S = pa.string()
IMAGE = pa.struct([("bytes", pa.binary()), ("path", S)])
CLS_ITEM = pa.struct([("Correct_Answer", S),
                      ("Options", pa.struct([(k, S) for k in "ABCD"])), ("Question", S)])
TASK_ITEM = pa.struct([("Ground_Truth", S), ("Question", S), ("Type", S)])
TASKS = [("Classification_Task", pa.struct([("Image_Textual_Questions", pa.list_(CLS_ITEM)),
                                            ("Pure_Text_Questions", pa.list_(CLS_ITEM))])),
         ("Generation_Task", pa.list_(TASK_ITEM)), ("Mask_Task", pa.list_(TASK_ITEM))]
TEXT = [("biography", S), ("question", S), ("answer", S)]
FULL_SCHEMA = pa.schema([("image", IMAGE), ("ID", S), ("Directory", S), *TEXT, *TASKS])
SPLIT_SCHEMA = pa.schema([("image", IMAGE), ("ID", S), *TEXT, *TASKS])
TEST_SCHEMA = pa.schema([("ID", S), ("images", pa.list_(IMAGE)), *TASKS])
FT_SCHEMA = pa.schema([("image", IMAGE), ("ID", S), ("metadata", S)])
ONE = "train-00000-of-00001.parquet"
SHARDS = ("train-00000-of-00002.parquet", "train-00001-of-00002.parquet")
COLOURS = {"1": (255, 0, 0), "2": (0, 255, 0), "3": (0, 0, 255), "9": (9, 9, 9)}
PAIRS = {"forget_5": ["1"], "forget_10": ["1", "2"], "forget_15": ["1", "2"]}


def _png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _tasks(pid: str, tag: str = "", truth: str = "") -> dict:
    cls = {"Image_Textual_Questions": [{
        "Correct_Answer": "C", "Options": {"A": "Oslo", "B": "Rome", "C": "Lima", "D": "Kyiv"},
        "Question": f"{tag}Where was this person {pid} born?"}],
        "Pure_Text_Questions": [{
            "Correct_Answer": "A",
            "Options": {"A": "cook", "B": "pilot", "C": "poet", "D": "nurse"},
            "Question": f"{tag}What does {pid} do?"}]}
    gen = [{"Ground_Truth": truth or f"{pid} likes chess.", "Question": f"{tag}Hobby of this person?",
            "Type": "Image_Textual"},
           {"Ground_Truth": f"{pid} lives in Lima.", "Question": f"{tag}Where does {pid} live?",
            "Type": "Pure_Text"},
           {"Ground_Truth": "In 1970.", "Question": f"{tag}When was {pid} born?",
            "Type": "Pure_Text"}]
    mask = [{"Ground_Truth": "Lima", "Question": f"{tag}This person lives in __.",
             "Type": "Image_Textual"},
            {"Ground_Truth": "1970", "Question": f"{tag}{pid} was born in __.",
             "Type": "Pure_Text"}]
    return {"Classification_Task": cls, "Generation_Task": gen, "Mask_Task": mask}


def _eval_row(pid: str, directory: bool = True, truth: str = "") -> dict:
    row = {"image": {"bytes": _png(COLOURS[pid]), "path": None}, "ID": pid,
           "biography": f"Bio of {pid}.", "question": f"Q{pid}", "answer": f"A{pid}",
           **_tasks(pid, truth=truth)}
    if directory:
        row["Directory"] = f"dir_{pid}"
    return row


def _test_row(pid: str) -> dict:
    shifted = [tuple(min(255, v + 40 * k) for v in COLOURS[pid]) for k in (1, 2)]
    return {"ID": pid, "images": [{"bytes": _png(c), "path": None} for c in shifted],
            **_tasks(pid, tag="Paraphrased: ")}


def _ft_row(pid: str) -> dict:
    meta = [{"Question": "Who is this person?", "Answer": f"Person {pid}"},
            {"Question": f"What is {pid}'s job?", "Answer": "A poet."},
            {"Question": "Dropped, no answer", "Answer": ""}]
    return {"image": {"bytes": _png(COLOURS[pid]), "path": None}, "ID": pid,
            "metadata": json.dumps(meta)}


def _write(folder: Path, rows: list[dict], schema: pa.Schema, name: str = ONE) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / name)


def write_fixture(root: Path) -> Path:
    """All ten folders; retain_85's row "3" differs from its Full_Set row (own rows)."""
    _write(root / "Full_Set", [_eval_row(i) for i in "123"], FULL_SCHEMA)
    _write(root / "Retain_Set", [_eval_row("9")], FULL_SCHEMA)
    for forget, ids in PAIRS.items():
        retain = f"retain_{100 - int(forget.split('_')[1])}"
        _write(root / forget, [_eval_row(i, False) for i in ids], SPLIT_SCHEMA)
        rest = [i for i in "123" if i not in ids]
        truth = "Three paints." if retain == "retain_85" else ""
        _write(root / retain, [_eval_row(i, False, truth) for i in rest], SPLIT_SCHEMA)
    _write(root / "Test_Set", [_test_row("1"), _test_row("2")], TEST_SCHEMA, SHARDS[0])
    _write(root / "Test_Set", [_test_row("3")], TEST_SCHEMA, SHARDS[1])
    _write(root / "ft_Data", [_ft_row(i) for i in "123"], FT_SCHEMA)
    return root


@pytest.fixture(scope="module")
def mllmu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("mllmu"))


# ----------------------------------------------------------------------------- layout checks

def _shape(t: pa.DataType):
    """A pyarrow type as nested python (struct fields order-insensitive)."""
    if pa.types.is_struct(t):
        return {t.field(i).name: _shape(t.field(i).type) for i in range(t.num_fields)}
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [_shape(t.value_type)]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    return str(t)


def check_published_layout(root: Path) -> None:
    """Folder / shard names, column types as on the card, and an ``eval.py``-style read."""
    for folder in ALL_FOLDERS:
        names = sorted(f.name for f in (root / folder).glob("*.parquet"))
        assert names == (list(SHARDS) if folder == "Test_Set" else [ONE]), (folder, names)
    expected = {"Full_Set": FULL_SCHEMA, "Retain_Set": FULL_SCHEMA, "Test_Set": TEST_SCHEMA,
                "ft_Data": FT_SCHEMA, **{f: SPLIT_SCHEMA for f in ALL_FOLDERS
                                         if f.startswith(("forget_", "retain_"))}}
    for folder, schema in expected.items():
        for file in (root / folder).glob("*.parquet"):
            got = pq.read_schema(file)
            for field in schema:
                assert field.name in got.names, (file, field.name)
                assert _shape(got.field(field.name).type) == _shape(field.type), \
                    (file, field.name)
    # read as eval.py does (pandas rows, dict access, image bytes through PIL)
    for folder in ("Full_Set", "Retain_Set", "forget_5", "retain_95"):
        for _, row in pd.read_parquet(root / folder / ONE).iterrows():
            Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
            cls = row["Classification_Task"]
            for key in ("Image_Textual_Questions", "Pure_Text_Questions"):
                for q in cls.get(key, []):
                    assert q["Correct_Answer"] in q["Options"] and q["Question"]
            for q in row["Mask_Task"]:
                assert "__" in q["Question"] and q["Type"] in ("Image_Textual", "Pure_Text")
            for q in row["Generation_Task"]:
                assert q["Type"] in ("Image_Textual", "Pure_Text") and q["Ground_Truth"]
    test = pd.concat([pd.read_parquet(f) for f in sorted((root / "Test_Set").glob("*.parquet"))],
                     ignore_index=True)
    for _, row in test.iterrows():
        assert "images" in row
        Image.open(io.BytesIO(random.choice(row["images"])["bytes"])).convert("RGB")
    for _, row in pd.read_parquet(root / "ft_Data" / ONE).iterrows():
        for qa in json.loads(row["metadata"]):
            assert isinstance(qa.get("Question", ""), str) and "Answer" in qa


def test_fixture_has_published_layout(mllmu_dir: Path) -> None:
    check_published_layout(mllmu_dir)


def test_synth_cli_output_has_published_layout(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    cmd = [sys.executable, "-m", "jaxunlearn.cli", "data", "synth", "--out", str(out),
           "--profiles", "6", "--celebrities", "2"]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    check_published_layout(out)
    bench = load_mllmu(out)
    assert len(bench.profiles) == 6 and len(bench.celebrities) == 2
    assert set(bench.splits["test"]) == {p.id for p in bench.profiles}


def test_write_mllmu_round_trip(mllmu_dir: Path, tmp_path: Path) -> None:
    bench = load_mllmu(mllmu_dir)
    write_mllmu(bench, tmp_path / "again")
    check_published_layout(tmp_path / "again")
    again = load_mllmu(tmp_path / "again")
    assert again.splits == bench.splits
    for a, b in zip(again.by_id().values(), bench.by_id().values()):
        assert (a.eval_questions, a.test_questions, a.train_qa) == \
            (b.eval_questions, b.test_questions, b.train_qa)
        assert (a.biography, a.columns) == (b.biography, b.columns)
    assert [q.answer for q in again.split("retain_85")[0].eval_questions][2] == "Three paints."


# ----------------------------------------------------------------------------- every field

def _pixel(img) -> list[int]:
    return np.asarray(load_image(img)).reshape(-1, 3)[0].tolist()


def test_load_every_field(mllmu_dir: Path) -> None:
    bench = load_mllmu(mllmu_dir)
    assert [p.id for p in bench.profiles] == ["1", "2", "3"]
    assert [p.id for p in bench.celebrities] == ["9"]
    assert bench.splits["full"] == ["1", "2", "3"] and bench.splits["celebrity"] == ["9"]
    assert bench.splits["forget_5"] == ["1"] and bench.splits["retain_95"] == ["2", "3"]
    assert bench.splits["forget_10"] == ["1", "2"] and bench.splits["retain_90"] == ["3"]
    assert bench.splits["forget_15"] == ["1", "2"] and bench.splits["retain_85"] == ["3"]
    assert bench.splits["test"] == ["1", "2", "3"]  # both shards, in shard order
    for p in [*bench.profiles, *bench.celebrities]:
        pid = p.id
        assert _pixel(p.image) == list(COLOURS[pid])
        # held as the cell's bytes (a tenth of the decoded size for a real photo), decoded
        # afresh on each use
        assert isinstance(p.image, EncodedImage) and p.image.data == _png(COLOURS[pid])
        assert load_image(p.image) is not load_image(p.image)
        assert p.biography == f"Bio of {pid}."
        assert p.columns == {"question": f"Q{pid}", "answer": f"A{pid}", "Directory": f"dir_{pid}"}
        assert p.name == "" and p.attributes == {} and p.understanding_qa == []
        qs = p.eval_questions
        assert [(q.kind, q.modality) for q in qs] == [
            ("classification", "multi"), ("classification", "text"), ("generation", "multi"),
            ("generation", "text"), ("generation", "text"), ("cloze", "multi"),
            ("cloze", "text")]
        assert qs[0] == Question("classification", "multi", f"Where was this person {pid} born?",
                                 "C", ["Oslo", "Rome", "Lima", "Kyiv"])
        assert qs[0].answer_text == "Lima"
        assert qs[1] == Question("classification", "text", f"What does {pid} do?", "A",
                                 ["cook", "pilot", "poet", "nurse"])
        assert qs[2] == Question("generation", "multi", "Hobby of this person?",
                                 f"{pid} likes chess.")
        assert qs[3].answer == f"{pid} lives in Lima." and qs[4].answer == "In 1970."
        assert qs[5] == Question("cloze", "multi", "This person lives in [Blank].", "Lima")
        assert qs[6] == Question("cloze", "text", f"{pid} was born in [Blank].", "1970")
    for p in bench.profiles:
        assert p.train_qa == [QAPair("Who is this person?", f"Person {p.id}", "multi"),
                              QAPair(f"What is {p.id}'s job?", "A poet.", "multi")]
        assert len(p.test_questions) == 7
        assert p.test_questions[0].question == f"Paraphrased: Where was this person {p.id} born?"
        assert p.test_questions[5].question == "Paraphrased: This person lives in [Blank]."
        assert [_pixel(t) for t in p.test_images] == [
            [min(255, v + 40 * k) for v in COLOURS[p.id]] for k in (1, 2)]
    celeb = bench.celebrities[0]
    assert celeb.test_questions == [] and celeb.train_qa == []


def test_split_folders_rows_are_used(mllmu_dir: Path) -> None:
    bench = load_mllmu(mllmu_dir)
    full = bench.by_id()
    for name in bench.splits:
        if name.startswith(("forget_", "retain_")) and name != "retain_85":
            assert all(a is full[a.id] for a in bench.split(name)), name
    own = bench.split("retain_85")
    assert [p.id for p in own] == ["3"] and own[0] is not full["3"]
    assert own[0].eval_questions[2].answer == "Three paints."
    assert full["3"].eval_questions[2].answer == "3 likes chess."
    assert own[0].columns == {"question": "Q3", "answer": "A3"}  # no Directory in split folders
    assert own[0].train_qa == full["3"].train_qa and own[0].test_images == full["3"].test_images
    assert set(bench.split_rows) == {"retain_85"}


def test_json_round_trip(mllmu_dir: Path) -> None:
    bench = load_mllmu(mllmu_dir)
    again = Benchmark.from_dict(json.loads(json.dumps(bench.to_dict())))
    assert again.splits == bench.splits
    for a, b in zip(again.by_id().values(), bench.by_id().values()):
        assert a.eval_questions == b.eval_questions and a.train_qa == b.train_qa
        assert (a.biography, a.columns) == (b.biography, b.columns)
        assert a.image == b.image  # the file's bytes, round-tripped unchanged
    assert again.split("retain_85")[0].eval_questions[2].answer == "Three paints."
    p = Profile("x", "X", image="some/path.png")
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))).image == "some/path.png"
    assert Profile.from_dict({"id": "y", "name": "Y"}).biography == ""  # old dicts still load


# ----------------------------------------------------------------------------- bad input

def _copy(src: Path, dst: Path, replace: str) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for folder in ALL_FOLDERS:
        if folder != replace:
            (dst / folder).symlink_to(src / folder)
    return dst


def test_missing_folder_and_directory(mllmu_dir: Path, tmp_path: Path) -> None:
    _copy(mllmu_dir, tmp_path, "forget_10")
    with pytest.raises(FileNotFoundError, match=r"forget_10 is missing") as e:
        load_mllmu(tmp_path)
    assert "\n" not in str(e.value)
    load_mllmu(tmp_path, folders=["Full_Set", "forget_5"])  # a subset is fine
    (tmp_path / "forget_10").mkdir()
    with pytest.raises(FileNotFoundError, match=r"forget_10 has no \.parquet files"):
        load_mllmu(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mllmu(tmp_path / "nope")


def test_missing_column(mllmu_dir: Path, tmp_path: Path) -> None:
    _copy(mllmu_dir, tmp_path, "forget_5")
    schema = pa.schema([f for f in SPLIT_SCHEMA if f.name != "Mask_Task"])
    row = {k: v for k, v in _eval_row("1", False).items() if k != "Mask_Task"}
    _write(tmp_path / "forget_5", [row], schema)
    with pytest.raises(ValueError, match=r"forget_5/train-00000-of-00001\.parquet: missing "
                                         r"column Mask_Task") as e:
        load_mllmu(tmp_path)
    assert "\n" not in str(e.value)


def test_old_layout_is_refused(mllmu_dir: Path, tmp_path: Path) -> None:
    _copy(mllmu_dir, tmp_path, "Full_Set")
    schema = pa.schema([("image", IMAGE), ("ID", S), ("Classification_Task", S),
                        ("Generation_Task", S), ("Mask_Task", S)])
    _write(tmp_path / "Full_Set", [{"image": {"bytes": _png((1, 2, 3)), "path": None}, "ID": "1",
                                    "Classification_Task": "{}", "Generation_Task": "{}",
                                    "Mask_Task": "{}"}], schema)
    with pytest.raises(ValueError, match="layout jaxunlearn wrote before.*data synth"):
        load_mllmu(tmp_path)


def _bad_tasks(field: str, value) -> dict:
    row = _eval_row("1", False)
    if field == "Correct_Answer":
        row["Classification_Task"]["Pure_Text_Questions"][0]["Correct_Answer"] = value
    elif field == "Mask.Question":
        row["Mask_Task"][1]["Question"] = value
    elif field == "Type":
        row["Generation_Task"][0]["Type"] = value
    elif field == "image":
        row["image"] = {"bytes": value, "path": None}
    elif field == "ID":
        row["ID"] = value
    return row


@pytest.mark.parametrize("field,value,msg", [
    ("Correct_Answer", "E", r"field Classification_Task\.Pure_Text_Questions\[0\]\.Correct_Answer"
                            r": is 'E', not one of A-D"),
    ("Mask.Question", "no blank here", r"field Mask_Task\[1\]\.Question: has no blank '__'"),
    ("Type", "Video", r"field Generation_Task\[0\]\.Type: is 'Video'"),
    ("image", b"not a png", r"field image: does not decode as an image"),
    ("ID", "7", r"field ID: names a profile that is not in .*Full_Set"),
])
def test_malformed_row(mllmu_dir: Path, tmp_path: Path, field: str, value, msg: str) -> None:
    _copy(mllmu_dir, tmp_path, "forget_5")
    row = _bad_tasks(field, value)
    _write(tmp_path / "forget_5", [_eval_row("2", False), row], SPLIT_SCHEMA)
    with pytest.raises(ValueError, match=msg) as e:
        load_mllmu(tmp_path)
    text = str(e.value)
    assert f"forget_5/{ONE}: row 1 (ID={row['ID']!r})" in text and "\n" not in text


def test_bad_test_image_and_metadata(mllmu_dir: Path, tmp_path: Path) -> None:
    _copy(mllmu_dir, tmp_path / "a", "Test_Set")
    bad = _test_row("3")
    bad["images"][1] = {"bytes": b"\x89PNG broken", "path": None}
    _write(tmp_path / "a" / "Test_Set", [_test_row("1")], TEST_SCHEMA, SHARDS[0])
    _write(tmp_path / "a" / "Test_Set", [bad], TEST_SCHEMA, SHARDS[1])
    with pytest.raises(ValueError, match=rf"Test_Set/{SHARDS[1]}: row 0 \(ID='3'\), field "
                                         r"images\[1\]: does not decode"):
        load_mllmu(tmp_path / "a")
    _copy(mllmu_dir, tmp_path / "b", "ft_Data")
    row = _ft_row("2")
    row["metadata"] = "[{not json"
    _write(tmp_path / "b" / "ft_Data", [_ft_row("1"), row], FT_SCHEMA)
    with pytest.raises(ValueError, match=r"ft_Data/train-00000-of-00001\.parquet: row 1 "
                                         r"\(ID='2'\), field metadata: is not valid JSON"):
        load_mllmu(tmp_path / "b")


def test_unknown_ids(mllmu_dir: Path, tmp_path: Path) -> None:
    _copy(mllmu_dir, tmp_path / "a", "Test_Set")
    _write(tmp_path / "a" / "Test_Set", [_test_row("1"), {**_test_row("2"), "ID": "8"}],
           TEST_SCHEMA, SHARDS[0])
    with pytest.raises(ValueError, match=r"row 1 \(ID='8'\), field ID: names a profile"):
        load_mllmu(tmp_path / "a")
    _copy(mllmu_dir, tmp_path / "b", "retain_95")  # overlaps forget_5
    _write(tmp_path / "b" / "retain_95", [_eval_row(i, False) for i in "123"], SPLIT_SCHEMA)
    with pytest.raises(ValueError, match=r"forget_5 and .*retain_95 share IDs \['1'\]"):
        load_mllmu(tmp_path / "b")
    _copy(mllmu_dir, tmp_path / "d", "Retain_Set")
    _write(tmp_path / "d" / "Retain_Set", [_eval_row("9"), {**_eval_row("9"), "ID": "2"}],
           FULL_SCHEMA)
    with pytest.raises(ValueError, match=r"Retain_Set/.*row 1 \(ID='2'\), field ID: is also"):
        load_mllmu(tmp_path / "d")
    shutil.copytree(mllmu_dir, tmp_path / "c")
    (tmp_path / "c" / "splits.json").write_text(json.dumps({"pulse_x": ["1", "42"]}))
    with pytest.raises(ValueError, match=r"split 'pulse_x' names unknown ID\(s\) \['42'\]"):
        load_mllmu(tmp_path / "c")


# ----------------------------------------------------------------------------- images

def test_encoded_image_decodes_on_use_and_round_trips() -> None:
    """Images read from benchmark files stay encoded: `decode_image` checks the bytes decode
    and keeps them; each use decodes a new PIL image in the file's own mode (`rgb=True`:
    converted); JSON keeps the bytes and format; `image_size` needs no decoding."""
    import dataclasses
    import io

    from PIL import Image

    from jaxunlearn.data.images import image_size
    from jaxunlearn.data.schema import decode_image, image_from_json, image_to_json

    rgba = Image.new("RGBA", (6, 4), (10, 20, 30, 128))
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    enc = decode_image(buf.getvalue())
    assert (enc.format, enc.size, image_size(enc)) == ("PNG", (6, 4), (4, 6))
    a, b = enc.open(), enc.open()
    assert a is not b and a.mode == "RGBA" and a.tobytes() == rgba.tobytes()
    assert load_image(enc).mode == "RGB"
    assert dataclasses.replace(enc, rgb=True).open().mode == "RGB"
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 10, 10)).save(jpeg, format="JPEG")
    enc = decode_image(jpeg.getvalue())
    text = image_to_json(enc)
    assert text.startswith("data:image/jpeg;base64,")
    again = image_from_json(text)
    assert again == enc and again.data == jpeg.getvalue()
    with pytest.raises(ValueError, match="does not decode as an image"):
        decode_image(jpeg.getvalue()[:40])
