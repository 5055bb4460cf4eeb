"""`jaxunlearn demo --quick` end to end: the vanilla model knows its people, every method
moves the forget set, nothing is NaN, and the controls of the demo world hold on the quick
demo's vanilla model (one demo run per module)."""

import json
import math

import pytest

from jaxunlearn.cli import main
from jaxunlearn.demo.run import METHODS


def _value(records, method, set_name, task, modality, metric):
    hits = [r["value"] for r in records if r["method"] == method and r["set"] == set_name
            and r["task"] == task and r["modality"] == modality and r["metric"] == metric
            and r.get("protocol") is None]
    assert len(hits) == 1, (method, set_name, task, modality, metric, hits)
    return hits[0]


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    return out, json.loads((out / "report" / "report.json").read_text())


def test_demo_report_and_outputs(demo_report):
    out, report = demo_report
    records = report["records"]
    assert all(math.isfinite(r["value"]) for r in records)
    for modality in ("multi", "text"):
        rouge = _value(records, "vanilla", "retain", "generation", modality, "rougeL")
        assert rouge >= 0.6, (modality, rouge)  # the vanilla model knows its people
    for name in METHODS:
        moved = False
        for modality in ("multi", "text"):
            nll0 = _value(records, "vanilla", "forget", "qa", modality, "nll")
            acc0 = _value(records, "vanilla", "forget", "classification", modality, "accuracy")
            nll = _value(records, name, "forget", "qa", modality, "nll")
            acc = _value(records, name, "forget", "classification", modality, "accuracy")
            moved |= nll > nll0 or acc < acc0
        assert moved, name
        assert (out / "models" / name / "hf" / "config.json").is_file()
    assert (out / "report" / "report.md").is_file()
    assert list((out / "report").glob("*.png"))


def test_demo_resume_skips_finished_stages(demo_report, capsys):
    out, _ = demo_report
    capsys.readouterr()
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vanilla: done earlier" in text and "unlearn ga: done earlier" in text


def _pooled(records, method, sets, modalities, metric):
    """n-weighted mean of a classification metric over `sets` x `modalities`."""
    hits = [(r["value"], r["n"]) for r in records if r["method"] == method
            and r["set"] in sets and r["task"] == "classification"
            and r["modality"] in modalities and r["metric"] == metric]
    assert len(hits) == len(sets) * len(modalities), (sets, modalities, metric)
    return sum(v * n for v, n in hits) / sum(n for _, n in hits)


def test_control_rotation_keeps_accuracy(demo_report):
    """The vanilla model's classification does not hang on the letters: accuracy with the
    options rotated (mean over the 4 cyclic rotations) is within 10 points of the benchmark's
    single-order accuracy, over every classification question of forget, retain and
    celebrity in both modalities (36 questions in the quick demo)."""
    _, report = demo_report
    sets, modalities = ("forget", "retain", "celebrity"), ("multi", "text")
    plain = _pooled(report["records"], "vanilla", sets, modalities, "accuracy")
    rotated = _pooled(report["records"], "vanilla", sets, modalities, "rotated_accuracy")
    assert abs(rotated - plain) <= 0.10, (plain, rotated)


def test_control_black_image_is_near_chance(demo_report):
    """Multimodal forget classification needs the image: with a black image instead of the
    person's, the vanilla model is at most chance (25%) + 15 points, over all rotations."""
    _, report = demo_report
    recs = report["records"]
    black = _value(recs, "vanilla", "forget_black_image", "classification", "multi",
                   "rotated_accuracy")
    assert black <= 0.40, black


def test_full_demo_path_sweeps_and_keeps_the_selected_point(demo_report, tmp_path):
    """The full demo's path on the quick demo's vanilla model: `manu` swept over two alphas
    (no training: cheap) through `eval.sweep.run_sweep`, the point the rule selects kept as
    the method's model (its cloze records equal the sweep's records of that point), the
    setting and how it was chosen in the report, one frontier figure per modality."""
    import shutil

    src, _ = demo_report
    out = tmp_path / "demo"
    for part in ("data", "tokenizer", "models/base", "models/vanilla"):
        shutil.copytree(src / part, out / part)
    assert main(["demo", "--quick", "--out", str(out), "sweep=true", "run=[manu]",
                 "grids.manu.alpha=[0.05,0.5]"]) == 0
    sweep = json.loads((out / "models" / "manu" / "sweep" / "sweep.json").read_text())
    assert [p["settings"]["method.options.alpha"] for p in sweep["points"]] == [0.05, 0.5]
    report = json.loads((out / "models" / "manu" / "unlearn_report.json").read_text())
    used = report["sweep"]["used"]
    assert report["options"]["alpha"] == sweep["points"][used]["settings"][
        "method.options.alpha"]
    if sweep["selected"] is not None:
        assert used == sweep["selected"]
    points = [json.loads(line) for line in
              (out / "models" / "manu" / "sweep" / "points.jsonl").read_text().splitlines()]
    swept = {(r["set"], r["modality"], r["metric"]): r["value"]
             for r in next(p for p in points if p["index"] == used)["records"]
             if r["task"] == "cloze"}
    final = {(r["set"], r["modality"], r["metric"]): r["value"]
             for r in json.loads((out / "eval" / "manu.json").read_text())
             if r["task"] == "cloze" and r["set"] in ("forget", "retain", "celebrity")}
    assert swept and final == swept
    md = (out / "report" / "report.md").read_text()
    assert "sweep over alpha [0.05, 0.5] (2 points; rule: largest drop of forget cloze" in md
    for mod in ("multi", "text"):
        assert (out / "report" / f"frontier_{mod}.png").stat().st_size > 1000


def test_classification_practice_settings_reach_the_training_records(tmp_path, monkeypatch,
                                                                     capsys):
    """`classification_repeats` and `classification_answer` are read by the pre-training and
    fine-tuning stages (each classification question R times per epoch, answered
    `B: <option>`) and by the methods' forget / retain sets; bad values are one error."""
    import re

    import jaxunlearn.demo.vanilla as vanilla_mod
    from jaxunlearn.demo.run import demo_setting, run_demo

    seen = []

    class Stop(Exception):
        pass

    def capture(model, records, *a, **kw):
        seen.append(records(0))
        raise Stop

    monkeypatch.setattr(vanilla_mod, "train_on_qa", capture)
    setting = demo_setting(None, ["classification_repeats=3",
                                  "classification_answer=letter_option"], quick=True)
    with pytest.raises(Stop):
        run_demo(tmp_path / "d", quick=True, setting=setting)
    base = demo_setting(quick=True)
    with pytest.raises(Stop):
        run_demo(tmp_path / "e", quick=True, setting=base)
    practised, plain = ([r for r in recs if r["kind"] == "classification"] for recs in seen)
    assert len(practised) == 3 * len(plain) > 0
    for r in practised:  # "B: <the option labelled B in this prompt>"
        letter, option = r["answer"].split(": ", 1)
        assert re.search(rf"\n{letter}: {re.escape(option)}\n", r["prompt"])
    assert all(len(r["answer"]) == 1 for r in plain)

    for bad, message in (("classification_repeats=0", "classification_repeats must be"),
                         ("classification_answer=option", "classification_answer must be")):
        assert main(["demo", "--quick", "--out", str(tmp_path / "x"), bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
