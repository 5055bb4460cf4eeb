"""Protocols end to end on the tiny model: sustainability (K=3), relearning, reports; the
protocol registry and its typed options through the CLI."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import pytest

from jaxunlearn.eval import protocols as P
from jaxunlearn.eval import report as R
from jaxunlearn.eval.evaluate import Evaluator
from jaxunlearn.eval.records import lookup, select
from jaxunlearn.eval.tasks import EvalConfig
from jaxunlearn.methods import base
from jaxunlearn.train import TrainConfig
from jaxunlearn.train.subsets import trainable_mask
from jaxunlearn.train.typed import field

FAST = EvalConfig(batch_size=8, classification_tokens=8, generation_tokens=8, cloze_tokens=8,
                  bucket_size=128)
PNG = b"\x89PNG\r\n\x1a\n"
CALLS: list[list[str]] = []


@dataclasses.dataclass(frozen=True)
class NoiseOptions(base.MethodOptions):
    scale: float = field(0.05, "noise standard deviation")


def _test_noise(model, data, opts, tcfg):
    """Test-only 'unlearning': Gaussian noise on train.subset (cheap, no compilation)."""
    CALLS.append([p.id for p in data.forget])
    mask = trainable_mask(model.params, tcfg.subset)
    key = jax.random.key(tcfg.seed + len(CALLS))
    new = {}
    for i, (name, v) in enumerate(sorted(model.params.items())):
        if mask[name] and jnp.issubdtype(v.dtype, jnp.floating):
            v = v + opts.scale * jax.random.normal(jax.random.fold_in(key, i), v.shape, v.dtype)
        new[name] = v
    return base.MethodResult(new, {"forget_ids": CALLS[-1]})


def register_noise(monkeypatch) -> None:
    """Register `test_noise` for one test only (a registration at import time would leak into
    every test that walks the method registry in the same process)."""
    base.register("test_noise", NoiseOptions, needs_retain=True)(_test_noise)
    monkeypatch.setitem(base._METHODS, "test_noise", base._METHODS.pop("test_noise"))


@pytest.fixture(autouse=True)
def _only_test_method(monkeypatch):
    """These tests are about protocols: the cheap `test_noise` method, the real ones unloaded."""
    monkeypatch.setattr(base, "_import_all", lambda: None)
    register_noise(monkeypatch)
    CALLS.clear()


def _study(bench, tmp_path=None, **kw) -> P.Study:
    return P.Study(bench, "test_noise", out_dir=tmp_path, **kw)


def test_sequential_k3_reports_k_plus_1_rows(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    ev = Evaluator(model, tok, pipe, FAST)
    res = P.run_protocol("pulse", ev, _study(bench, tmp_path, train=TrainConfig(subset="llm")),
                         {"scenario": "sequential", "k": 3, "max_profiles": 1})
    recs = res.records
    parts = [bench.split(f"pulse_seq_{i}") for i in range(1, 6)]
    pool = [p.id for part in parts for p in part]
    assert [c for call in CALLS for c in call] == pool and len(CALLS) == 3
    steps = sorted({r["step"] for r in recs})
    assert steps == [0, 1, 2, 3]
    assert all(r["protocol"] == "sequential" for r in recs)
    for step in steps:
        for mod in ("multi", "text"):
            assert lookup(recs, step=step, set="forget", modality=mod, task="classification",
                          metric="likelihood_accuracy") is not None
        assert lookup(recs, step=step, set="generality", task="image_understanding",
                      metric="rougeL") is not None
    assert lookup(recs, step=0, set="forgotten", modality="multi", metric="nll") is None
    assert select(recs, step=3, set="forgotten", metric="nll")[0]["n"] > 0
    # noise accumulates: forget NLL grows over requests
    nll = [lookup(recs, step=s, set="forget", modality="text", metric="nll") for s in steps]
    assert nll[-1] > nll[0]
    md = (tmp_path / "report.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [int(line.split("|")[1]) for line in rows[:4]] == [0, 1, 2, 3]
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["records"]) == len(recs)
    assert report["config"]["protocol"] == "sequential"
    assert report["config"]["k"] == 3 and report["config"]["train"]["subset"] == "llm"
    png = tmp_path / "sequential_multi_likelihood_accuracy.png"
    assert png.read_bytes()[:8] == PNG
    assert res.paths["report.md"] == tmp_path / "report.md"


def test_relearning_reports_epochs_and_gain(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    pipe = dataclasses.replace(pipe, bucket_size=128)  # one training shape per modality
    ev = Evaluator(model, tok, pipe, FAST)
    forget = bench.split("forget_10")
    unlearned, report = P.unlearn(ev, "test_noise", forget, bench.split("retain_90"),
                                  options={"scale": 0.1})
    assert report["forget_ids"] == [p.id for p in forget]
    train = TrainConfig(lr=3e-3, schedule="constant", epochs=2, progress=False)
    res = P.relearning_attack(unlearned, _study(bench, tmp_path, train=train),
                              P.RelearnOptions(fraction=0.5))
    recs = res.records
    for mod in ("multi", "text"):
        for metric in ("accuracy", "likelihood_accuracy"):
            curve = [lookup(recs, step=e, set="forget", modality=mod, metric=metric)
                     for e in (0, 1, 2)]
            assert None not in curve
            name = "AG" if metric == "accuracy" else "AG_likelihood_accuracy"
            ag = lookup(recs, set="forget", modality=mod, metric=name)
            assert ag == pytest.approx(curve[2] - curve[0])
    # relearning on forget QA lowers the forget NLL again
    nll = [lookup(recs, step=e, set="forget", modality="text", metric="nll") for e in (0, 2)]
    assert nll[1] < nll[0], nll
    assert res.model.params is not unlearned.model.params
    md = (tmp_path / "report.md").read_text()
    assert "AG multi" in md and "| Epoch |" in md
    data = R.plot_relearning(recs, tmp_path / "check.png", modality="text",
                             metric="likelihood_accuracy")
    assert data["test_noise"]["x"] == [0, 1, 2]
    assert (tmp_path / "relearn_multi_accuracy.png").read_bytes()[:8] == PNG
    config = json.loads((tmp_path / "report.json").read_text())["config"]
    assert config["epochs"] == 2 and config["fraction"] == 0.5
    # the driver's metrics log: one line per step of the one two-epoch run
    steps = [json.loads(line)["step"] for line in
             (tmp_path / "relearn_metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2


def test_mllmu_and_update_target_protocols(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    ev = Evaluator(model, tok, pipe, FAST)
    recs = P.run_protocol("mllmu", ev, _study(bench, tmp_path / "mllmu"),
                          {"forget_splits": ["forget_5"], "tasks": ["classification"],
                           "max_profiles": 1}).records
    assert {r["protocol"] for r in recs} == {"mllmu/forget_5"}
    assert {r["set"] for r in recs} == {"forget", "test", "retain", "celebrity"}
    assert {r["method"] for r in recs} == {"vanilla", "test_noise"}
    md = (tmp_path / "mllmu" / "report.md").read_text()
    assert "## forget_5" in md and "| test_noise |" in md
    assert (tmp_path / "mllmu" / "tradeoff_forget_5.png").read_bytes()[:8] == PNG
    opts = P.UpdateTargetOptions(targets=("llm", "vision"), max_profiles=1)
    recs = P.update_target_sweep(ev, _study(bench, tmp_path / "ut"), opts).records
    assert {r["method"] for r in recs} == {"vanilla", "test_noise[llm]", "test_noise[vision]"}
    assert (tmp_path / "ut" / "modality_forget.png").read_bytes()[:8] == PNG


def test_smllmun_and_pulse_pretrained(tiny_vanilla, tmp_path):
    model, tok, bench, pipe = tiny_vanilla
    ev = Evaluator(model, tok, pipe, FAST)
    recs = P.smllmun_protocol(ev, _study(bench, tmp_path / "s"),
                              P.SmllmunOptions(forget_split="forget_5", max_profiles=1)).records
    tasks = {(r["task"], r["metric"]) for r in recs}
    for t in ("image_memory", "text_memory", "image_understanding"):
        assert {(t, "rougeL"), (t, "degeneration")} <= tasks
    before = lookup(recs, step=0, set="forget", task="text_memory", metric="rougeL")
    assert before > 0.5  # the vanilla model recites its training answers
    assert (tmp_path / "s" / "report.json").is_file()
    # pre-trained knowledge: selection by per-profile accuracy, then unlearn half
    known, acc = P.select_known_profiles(ev, bench.profiles[:4], threshold=0.0)
    assert len(known) == 4 and set(acc) == {p.id for p in bench.profiles[:4]}
    with pytest.raises(ValueError, match="lower protocol.options.threshold"):
        P.run_protocol("pulse/pretrained", ev, _study(bench),
                       {"threshold": 1.01, "candidates": "forget_5"})


def test_protocol_configs_name_real_options():
    """configs/{pulse,smllmun,relearn}-*.yaml load through the CLI's schema and name only
    options the registered protocols accept."""
    from pathlib import Path

    from jaxunlearn.commands import eval_config
    from jaxunlearn.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    names = {"pulse": "pulse", "smllmun": "smllmun", "relearn": "relearn"}
    paths = [p for pat in names for p in sorted(root.glob(f"{pat}-*.yaml"))]
    assert len(paths) >= 6
    for path in paths:
        cfg = load_config(path)
        P.resolve_protocol(names[path.name.split("-")[0]], cfg["protocol"]["options"])
        eval_config(cfg)


def test_registry_matches_cli_and_documents_every_option():
    from jaxunlearn.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    proto = next(a for a in sub.choices["protocol"]._actions if a.dest == "protocol")
    assert sorted(proto.choices) == sorted(P.protocol_names())
    assert P.pulse_scenarios() == ["finetuned", "pretrained", "sequential", "update_target"]
    doc = P.describe_protocols()
    for spec in P.PROTOCOLS.values():
        assert spec.summary
        for name, _, _, help_text in P.options_table(spec.options):
            assert help_text, (spec.name, name)
            assert f"| `{name}` |" in doc


@pytest.mark.parametrize("override, key", [
    ("protocol.options.kk=3", "'k'"),                 # unknown key: the closest valid name
    ("protocol.options.k=three", "protocol.options.k"),  # wrong type: names the key
    ("protocol.options.scenario=sequentail", "'sequential'"),
    ("protocol.options.tasks=[classification,clozee]", "protocol.options.tasks"),
    ("eval.tasks=[cloze]", "protocol.options.tasks"),  # read by `evaluate` only
    ("data.forget_split=forget_5", "data.forget_split"),
])
def test_bad_protocol_option_is_one_cli_error(override, key, capsys):
    from jaxunlearn.cli import main

    rc = main(["protocol", "pulse", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert key in err[0], err


def test_typed_options_validate_values():
    spec, opts = P.resolve_protocol("pulse", {"scenario": "update_target",
                                              "targets": ["llm"], "tasks": ("cloze",)})
    assert spec.name == "pulse/update_target" and opts.targets == ("llm",)
    with pytest.raises(ValueError, match="protocol.options.targets"):
        P.resolve_protocol("pulse", {"scenario": "update_target", "targets": ["lm"]})
    with pytest.raises(ValueError, match="protocol.options.fraction"):
        P.resolve_protocol("relearn", {"fraction": 0})
    with pytest.raises(ValueError, match="protocol.options.finetune.lrr"):
        P.resolve_protocol("pulse", {"scenario": "finetuned", "finetune": {"lrr": 1e-4}})
    with pytest.raises(ValueError, match="forget_<percent>"):
        P.resolve_protocol("mllmu", {"forget_splits": ["pulse_ft_forget"]})


def test_configs_readme_lists_the_protocol_options():
    """configs/README.md's "Protocol options" section is describe_protocols() (regenerate it
    from that function when an option changes)."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "configs" / "README.md").read_text()
    section = text.split("## Protocol options\n\n", 1)[1].split("\n## ", 1)[0]
    assert section.strip() == P.describe_protocols().strip()


def test_evaluate_and_protocol_commands_build_one_evaluator(tiny_vanilla, tmp_path, capsys):
    """`evaluate` and `protocol` through the CLI: the evaluator from the config (model,
    tokenizer, pipeline, eval: settings), the protocol from the registry."""
    from jaxunlearn.cli import main

    model, *_ = tiny_vanilla
    common = [f"model.checkpoint={model.source_dir}", "data.synthetic.n_profiles=20",
              "data.synthetic.n_celebrities=6", "eval.batch_size=8",
              "eval.classification_tokens=8", "eval.bucket_size=128", "eval.progress=false",
              "eval.max_questions=2"]
    assert main(["evaluate", *common, "eval.sets=[forget]", "eval.tasks=[classification]",
                 "eval.modalities=[text]", f"output.dir={tmp_path / 'ev'}"]) == 0
    recs = json.loads((tmp_path / "ev" / "report.json").read_text())["records"]
    assert {(r["set"], r["modality"], r["method"]) for r in recs} == {("forget", "text", "model")}
    assert main(["protocol", "pulse", *common, "method.name=test_noise", "train.subset=llm",
                 "protocol.options.scenario=sequential", "protocol.options.k=2",
                 "protocol.options.max_profiles=1", "protocol.options.generality=false",
                 f"output.dir={tmp_path / 'pr'}"]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "pr" / "report.json").read_text())
    assert report["config"]["protocol"] == "sequential" and len(CALLS) == 2
    assert {r["step"] for r in report["records"]} == {0, 1, 2}
    assert report["config"]["train"]["subset"] == "llm"


def test_bad_eval_setting_is_one_cli_error_before_loading(capsys):
    from jaxunlearn.cli import main

    rc = main(["protocol", "mllmu", "method.name=test_noise", "eval.batch_size=four",
               "model.checkpoint=/nonexistent"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: eval.batch_size: expected an int, got 'four'"], err
    rc = main(["protocol", "relearn", "method.options.scale=0.1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "method.options" in err[0], err
