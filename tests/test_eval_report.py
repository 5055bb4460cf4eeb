"""Tests for jaxunlearn.eval.report / plots / records."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jaxunlearn.eval import report as R
from jaxunlearn.eval.records import make_record, validate_record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _main_records():
    recs = []
    values = {"vanilla": (0.9, 0.6), "ga": (0.3, 0.5), "manu": (0.2, 0.55)}
    for method, (forget, retain) in values.items():
        for mod, shift in (("multi", 0.0), ("text", -0.1)):
            for s, v in (("forget", forget), ("test", forget - 0.05), ("retain", retain),
                         ("celebrity", retain + 0.1)):
                recs.append(make_record(method, s, "classification", mod, "accuracy",
                                        v + shift, 40))
                recs.append(make_record(method, s, "generation", mod, "rougeL", v / 2, 40))
    recs.append(make_record("ga", "forget", "cloze", "multi", "accuracy", 0.125, 40))
    return recs


def _curve_records():
    recs = [make_record("manu", s, "classification", "multi", "accuracy", v, 10,
                        protocol="sequential", step=k)
            for k in (2, 0, 1) for s, v in (("forget", 0.5 - 0.1 * k), ("retain", 0.6))]
    recs += [make_record(m, "forget", "classification", "multi", "accuracy", a + 0.1 * e, 10,
                         protocol="relearn", step=e)
             for m, a in (("ga", 0.2), ("manu", 0.1)) for e in range(3)]
    return recs


def test_records_are_validated():
    with pytest.raises(ValueError, match="missing"):
        validate_record({"method": "ga"})
    with pytest.raises(ValueError, match="unknown"):
        validate_record({**_main_records()[0], "sett": "x"})
    with pytest.raises(ValueError, match="finite"):
        make_record("ga", "forget", "cloze", "multi", "accuracy", float("nan"), 3)
    rec = make_record("ga", "forget", "cloze", "multi", "accuracy", 1, 3, step=2)
    assert rec["value"] == 1.0 and isinstance(rec["value"], float) and rec["step"] == 2


def test_write_run_report(tmp_path):
    recs = _main_records() + _curve_records()
    path = R.write_run_report(tmp_path / "run", {"method": "ga", "out": tmp_path,
                                                 "lrs": (1e-5,)},
                              "sha256:abc", recs, created="2025-01-01T00:00:00+00:00")
    assert path == tmp_path / "run" / "report.json"
    rep = json.loads(path.read_text())
    assert set(rep) == {"format", "created", "jaxunlearn_version", "git_commit",
                        "model_hash", "config", "records"}
    assert rep["created"] == "2025-01-01T00:00:00+00:00" and rep["model_hash"] == "sha256:abc"
    assert rep["config"] == {"method": "ga", "out": str(tmp_path), "lrs": [1e-5]}
    assert rep["git_commit"] is None or len(rep["git_commit"]) == 40
    assert rep["records"] == recs
    # deterministic apart from `created`; no temp files left behind
    again = R.write_run_report(tmp_path / "run", {"method": "ga", "out": tmp_path,
                                                  "lrs": (1e-5,)},
                               "sha256:abc", recs, created="2025-01-01T00:00:00+00:00")
    assert again.read_text() == path.read_text()
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["report.json"]
    with pytest.raises(ValueError):
        R.write_run_report(tmp_path / "bad", {}, "h", [{"method": "x"}])
    assert not (tmp_path / "bad" / "report.json").exists()


def test_markdown_table_layout():
    md = R.markdown_table(_main_records() + _curve_records())
    multi, text = md.split("### Text-only")
    assert multi.startswith("### Multimodal")
    header = multi.splitlines()[2]
    assert header.startswith("| Method | Forget Class. acc ↓ | Forget Gen. ROUGE-L ↓ | "
                             "Forget Cloze acc ↓ | Test Class. acc ↓")
    assert "Retain Class. acc ↑" in header and header.endswith("Celebrity Cloze acc ↑ |")
    rows = [line for line in multi.splitlines() if line.startswith("| ") and
            not line.startswith("| Method")]
    assert [r.split(" | ")[0] for r in rows] == ["| vanilla", "| ga", "| manu"]
    assert rows[1].split(" | ")[1:4] == ["30.0", "0.150", "12.5"]
    assert rows[0].split(" | ")[3] == "–"
    assert "| vanilla | 80.0 | 0.450 | – |" in text


def test_markdown_table_rejects_conflicts_and_empty():
    recs = _main_records()
    with pytest.raises(ValueError, match="conflicting"):
        R.markdown_table(recs + [{**recs[0], "value": 0.0}])
    with pytest.raises(ValueError):
        R.markdown_table(_curve_records())


def test_merge_reports(tmp_path):
    recs = _main_records()
    R.write_run_report(tmp_path / "a", {}, "h1", recs)
    changed = [{**r, "value": r["value"] / 2} if r["method"] == "ga" else r for r in recs]
    R.write_run_report(tmp_path / "b", {}, "h2", changed)
    md = R.merge_reports([tmp_path / "a", tmp_path / "b"])
    assert "`a`: model `h1`" in md and "`b`: model `h2`" in md
    rows = [line.split(" | ")[0][2:] for line in md.split("### Text-only")[0].splitlines()
            if line.startswith("| ") and not line.startswith("| Method")]
    assert rows == ["vanilla", "ga (a)", "ga (b)", "manu"]
    with pytest.raises(FileNotFoundError):
        R.merge_reports([tmp_path / "missing"])


def _assert_png(path: Path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as im:
        im.verify()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_plots_write_pngs_and_return_their_data(tmp_path):
    recs = _main_records() + _curve_records()
    trade = R.plot_tradeoff(recs, tmp_path / "tradeoff.png")
    assert trade == {"vanilla": {"x": [0.6], "y": [0.9]}, "ga": {"x": [0.5], "y": [0.3]},
                     "manu": {"x": [0.55], "y": [0.2]}}
    bars = R.plot_modality_bars(recs, tmp_path / "bars.png", set_name="forget")
    assert bars["multi"] == {"x": ["vanilla", "ga", "manu"], "y": [0.9, 0.3, 0.2]}
    assert bars["text"]["y"] == pytest.approx([0.8, 0.2, 0.1])
    seq = R.plot_sequential(recs, tmp_path / "seq.png")
    assert seq["forget"]["x"] == [0, 1, 2]
    assert seq["forget"]["y"] == pytest.approx([0.5, 0.4, 0.3])
    assert seq["retain"] == {"x": [0, 1, 2], "y": [0.6, 0.6, 0.6]}
    rel = R.plot_relearning(recs, tmp_path / "relearn.png")
    assert set(rel) == {"ga", "manu"} and rel["manu"]["x"] == [0, 1, 2]
    assert rel["ga"]["y"] == pytest.approx([0.2, 0.3, 0.4])
    for name in ("tradeoff", "bars", "seq", "relearn"):
        _assert_png(tmp_path / f"{name}.png")


def test_plot_with_no_data_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        R.plot_relearning(_main_records(), tmp_path / "r.png")
    with pytest.raises(ValueError, match="pass method="):
        R.plot_sequential(_main_records(), tmp_path / "s.png")
    assert list(tmp_path.iterdir()) == []


def test_step_table_and_protocol_report(tmp_path):
    recs = _curve_records() + [make_record("manu", "forget", "qa", "multi", "nll", 1.25, 10,
                                           protocol="sequential", step=0)]
    table = R.step_table(recs, "sequential", step_label="Request")
    lines = table.splitlines()
    assert lines[0] == ("| Request | manu forget multi accuracy | manu retain multi accuracy |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["0", "1", "2"]
    assert lines[3].split("|")[2].strip() == "40.0"  # shares in %
    assert R.step_table(recs, "sequential", task="qa", metrics=("nll",)).splitlines()[2] \
        == "| 0 | 1.250 |"  # NLL as it is
    assert R.step_table(recs, "smllmun") == ""

    class FakeModel:
        params = {"w": np.arange(6.0).reshape(2, 3)}

    def plot(records, path, **kw):
        return R.plot_sequential(records, path, **kw)

    def empty(records, path, **kw):
        raise ValueError("nothing to plot")

    paths = R.write_protocol_report(tmp_path, "sequential", {"k": 3}, FakeModel(), recs,
                                    table, [("seq.png", plot, {"method": "manu"}),
                                            ("none.png", empty, {})])
    assert set(paths) == {"seq.png", "report.md", "report.json"}
    assert (tmp_path / "seq.png").read_bytes()[:8] == PNG_SIGNATURE
    assert (tmp_path / "report.md").read_text().startswith("# sequential\n\n| Request |")
    report = R.read_run_report(tmp_path)
    assert report["config"] == {"protocol": "sequential", "k": 3}
    assert report["model_hash"] == R.model_fingerprint(FakeModel())
    assert len(report["model_hash"]) == 16
    assert R.write_protocol_report(None, "sequential", {}, FakeModel(), recs, table) == {}
