"""`jaxunlearn demo --quick` end to end: the vanilla model knows its people, every method
moves the forget set, and nothing is NaN."""

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
        acc = _value(records, "vanilla", "forget", "classification", modality, "accuracy")
        assert acc >= 0.75, (modality, acc)  # chance is 0.25
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
