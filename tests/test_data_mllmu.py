"""MLLMU-Bench loader: a hand-written directory in the published layout, field by field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from jaxunlearn.data.mllmu import ALL_FOLDERS, load_mllmu
from jaxunlearn.data.schema import Benchmark, Profile, QAPair, Question


def _png(colour: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return buf.getvalue()


def _tasks(pid: str) -> dict[str, str]:
    cls = {"Image_Textual_Questions": [{"Question": f"Where was this person {pid} born?",
                                        "Options": {"A": "Oslo", "B": "Rome", "C": "Lima",
                                                    "D": "Kyiv"},
                                        "Correct_Answer": "C"}],
           "Pure_Text_Questions": [{"Question": f"What does {pid} do?",
                                    "Options": {"A": "cook", "B": "pilot", "C": "poet",
                                                "D": "nurse"},
                                    "Correct_Answer": "A"}]}
    gen = {"Image_Textual_Questions": [{"Question": "What is this person's hobby?",
                                        "Ground_Truth": f"{pid} likes chess."}],
           "Pure_Text_Questions": [{"Question": f"Where does {pid} live?",
                                    "Ground_Truth": f"{pid} lives in Lima."},
                                   {"Question": f"When was {pid} born?",
                                    "Ground_Truth": "In 1970."}]}
    mask = {"Image_Textual_Questions": [{"Question": "This person lives in [Blank].",
                                         "Ground_Truth": "Lima"}],
            "Pure_Text_Questions": [{"Question": f"{pid} was born in [Blank].",
                                     "Ground_Truth": "1970"}]}
    return {"Classification_Task": json.dumps(cls), "Generation_Task": json.dumps(gen),
            "Mask_Task": json.dumps(mask)}


COLOURS = {"1": (255, 0, 0), "2": (0, 255, 0), "3": (0, 0, 255), "9": (9, 9, 9)}
EVAL_FEATURES = datasets.Features({
    "image": datasets.Image(), "ID": datasets.Value("string"),
    "Classification_Task": datasets.Value("string"), "Generation_Task": datasets.Value("string"),
    "Mask_Task": datasets.Value("string")})


def _eval_rows(ids: list[str], colour_shift: int = 0) -> dict[str, list]:
    rows: dict[str, list] = {k: [] for k in EVAL_FEATURES}
    for i in ids:
        c = tuple(min(255, v + colour_shift) for v in COLOURS[i])
        rows["image"].append({"bytes": _png(c), "path": None})
        rows["ID"].append(i)
        for k, v in _tasks(i).items():
            rows[k].append(v)
    return rows


def _write(root: Path, folder: str, rows: dict, features: datasets.Features) -> None:
    (root / folder).mkdir(parents=True)
    ds = datasets.Dataset.from_dict(rows, features=features)
    ds.to_parquet(str(root / folder / "train-00000-of-00001.parquet"))


@pytest.fixture(scope="module")
def mllmu_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mllmu")
    _write(root, "Full_Set", _eval_rows(["1", "2", "3"]), EVAL_FEATURES)
    _write(root, "Test_Set", _eval_rows(["1", "2", "3"], colour_shift=40), EVAL_FEATURES)
    _write(root, "Retain_Set", _eval_rows(["9"]), EVAL_FEATURES)
    for forget, retain, f_ids in (("forget_5", "retain_95", ["1"]),
                                  ("forget_10", "retain_90", ["1", "2"]),
                                  ("forget_15", "retain_85", ["1", "2"])):
        _write(root, forget, _eval_rows(f_ids), EVAL_FEATURES)
        _write(root, retain, _eval_rows([i for i in "123" if i not in f_ids]), EVAL_FEATURES)
    ft = {"image": [{"bytes": _png(COLOURS[i]), "path": None} for i in "123"],
          "metadata": [json.dumps([{"Question": "Who is this person?", "Answer": f"Person {i}"},
                                   {"Question": f"What is {i}'s job?", "Answer": "A poet."}])
                       for i in "123"]}
    _write(root, "ft_Data", ft, datasets.Features({"image": datasets.Image(),
                                                   "metadata": datasets.Value("string")}))
    return root


def test_load_every_field(mllmu_dir: Path) -> None:
    bench = load_mllmu(mllmu_dir)
    assert [p.id for p in bench.profiles] == ["1", "2", "3"]
    assert [p.id for p in bench.celebrities] == ["9"]
    assert bench.splits["forget_5"] == ["1"] and bench.splits["retain_95"] == ["2", "3"]
    assert bench.splits["forget_10"] == ["1", "2"] and bench.splits["retain_90"] == ["3"]
    assert bench.splits["forget_15"] == ["1", "2"] and bench.splits["retain_85"] == ["3"]
    assert bench.splits["test"] == ["1", "2", "3"] and bench.splits["celebrity"] == ["9"]
    assert bench.splits["full"] == ["1", "2", "3"]
    for p in [*bench.profiles, *bench.celebrities]:
        pid = p.id
        assert np.asarray(p.image).reshape(-1, 3)[0].tolist() == list(COLOURS[pid])
        qs = p.eval_questions
        assert [(q.kind, q.modality) for q in qs] == [
            ("classification", "multi"), ("classification", "text"), ("generation", "multi"),
            ("generation", "text"), ("generation", "text"), ("cloze", "multi"),
            ("cloze", "text")]
        assert qs[0] == Question("classification", "multi", f"Where was this person {pid} born?",
                                 "C", ["Oslo", "Rome", "Lima", "Kyiv"])
        assert qs[0].answer_text == "Lima"
        assert qs[1].options == ["cook", "pilot", "poet", "nurse"] and qs[1].answer == "A"
        assert qs[2] == Question("generation", "multi", "What is this person's hobby?",
                                 f"{pid} likes chess.")
        assert qs[3].answer == f"{pid} lives in Lima." and qs[4].answer == "In 1970."
        assert qs[5] == Question("cloze", "multi", "This person lives in [Blank].", "Lima")
        assert qs[6] == Question("cloze", "text", f"{pid} was born in [Blank].", "1970")
    for p in bench.profiles:
        assert p.train_qa == [QAPair("Who is this person?", f"Person {p.id}", "multi"),
                              QAPair(f"What is {p.id}'s job?", "A poet.", "multi")]
        assert len(p.test_questions) == 7 and p.test_questions[0].kind == "classification"
        assert len(p.test_images) == 1
        shifted = [min(255, v + 40) for v in COLOURS[p.id]]
        assert np.asarray(p.test_images[0]).reshape(-1, 3)[0].tolist() == shifted
        assert p.name == "" and p.attributes == {} and p.understanding_qa == []
    assert bench.celebrities[0].test_questions == [] and bench.celebrities[0].train_qa == []


def test_json_round_trip(mllmu_dir: Path) -> None:
    bench = load_mllmu(mllmu_dir)
    again = Benchmark.from_dict(json.loads(json.dumps(bench.to_dict())))
    assert again.splits == bench.splits
    for a, b in zip(again.by_id().values(), bench.by_id().values()):
        assert a.eval_questions == b.eval_questions and a.train_qa == b.train_qa
        assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    p = Profile("x", "X", image="some/path.png")
    assert Profile.from_dict(json.loads(json.dumps(p.to_dict()))).image == "some/path.png"


def test_missing_folder_error(mllmu_dir: Path, tmp_path: Path) -> None:
    for folder in ALL_FOLDERS:
        (tmp_path / folder).symlink_to(mllmu_dir / folder)
    (tmp_path / "forget_10").unlink()
    with pytest.raises(ValueError, match=r"forget_10 is missing") as e:
        load_mllmu(tmp_path)
    assert "\n" not in str(e.value)
    load_mllmu(tmp_path, folders=["Full_Set", "forget_5"])  # subset is fine
    with pytest.raises(ValueError, match="does not exist"):
        load_mllmu(tmp_path / "nope")


@pytest.mark.parametrize("bad,msg", [
    ({"Classification_Task": json.dumps({"Image_Textual_Questions": [
        {"Question": "q", "Options": {"A": "a", "B": "b", "C": "c", "D": "d"}}]})},
     "Correct_Answer"),
    ({"Generation_Task": "{not json"}, "malformed row 0"),
    ({"Mask_Task": json.dumps({"Pure_Text_Questions": [
        {"Question": "no blank here", "Ground_Truth": "x"}]})}, r"\[Blank\]"),
])
def test_malformed_row_error(mllmu_dir: Path, tmp_path: Path, bad: dict, msg: str) -> None:
    for folder in ALL_FOLDERS:
        if folder != "forget_5":
            (tmp_path / folder).symlink_to(mllmu_dir / folder)
    rows = _eval_rows(["1"])
    for k, v in bad.items():
        rows[k] = [v]
    _write(tmp_path, "forget_5", rows, EVAL_FEATURES)
    with pytest.raises(ValueError, match=msg) as e:
        load_mllmu(tmp_path)
    text = str(e.value)
    assert "forget_5" in text and "ID='1'" in text and "\n" not in text
