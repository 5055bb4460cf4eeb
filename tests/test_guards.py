"""Runs that never lie and never destroy (issue 19): every bad input is one `error:` line naming
the file or key with exit 2 and an untouched `output.dir`; non-finite weights, a tokenizer that
does not fit the model and a diverging learning rate stop before anything is exported; a run
killed during training or during its export resumes to the uninterrupted result; random wrong
values of every typed config key are refused naming the key.

A tiny random LLaVA (tests/hf_fixtures.py, the synthetic benchmark's tokenizer) on a 10-profile
synthetic benchmark keeps each CLI run to a few seconds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from hf_fixtures import save_tiny_family, tiny_tokenizer
from jaxunlearn.cli import main, parse_args
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

SYNTH = SynthConfig(seed=0, n_profiles=10, n_celebrities=4, image_size=32)
DATA = ["data.synthetic.n_profiles=10", "data.synthetic.n_celebrities=4",
        "data.synthetic.image_size=32", "data.batch_size=4", "data.max_length=256"]
TRAIN = ["train.batch_size=4", "train.progress=false", "train.max_steps=3", "train.lr=1e-3",
         "train.checkpoint_every=1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Base model, broken copies of it, a synthetic MLLMU-layout directory with an empty and
    an unknown-profile split, a bigger tokenizer and a finished fine-tuning run."""
    root = tmp_path_factory.mktemp("guards")
    bench = generate_benchmark(SYNTH)
    base = save_tiny_family("llava", root / "base", bench=bench)
    w = {"root": root, "base": base}

    def copy(name):
        d = root / name
        shutil.copytree(base, d)
        return d

    w["truncated"] = copy("truncated")
    st = w["truncated"] / "model.safetensors"
    st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    w["header"] = copy("header")
    st = w["header"] / "model.safetensors"
    raw = bytearray(st.read_bytes())
    raw[8:24] = b"\xff" * 16
    st.write_bytes(bytes(raw))
    w["nan"] = copy("nan")
    st = w["nan"] / "model.safetensors"
    tensors = load_file(st)
    w["nan_key"] = key = sorted(k for k in tensors if "mlp" in k)[0]
    tensors[key] = tensors[key].copy()
    tensors[key].flat[3] = np.nan
    save_file(tensors, str(st), metadata={"format": "pt"})
    w["bad_type"] = copy("bad_type")
    cfg = json.loads((w["bad_type"] / "config.json").read_text())
    cfg["model_type"] = "llavva"
    (w["bad_type"] / "config.json").write_text(json.dumps(cfg))
    w["image_id"] = copy("image_id")
    cfg = json.loads((w["image_id"] / "config.json").read_text())
    cfg["image_token_index"] = cfg["image_token_index"] + 1
    (w["image_id"] / "config.json").write_text(json.dumps(cfg))
    w["no_config"] = copy("no_config")
    (w["no_config"] / "config.json").unlink()
    big = generate_benchmark(SynthConfig(seed=1, n_profiles=60, n_celebrities=10, image_size=32))
    w["big_tok"] = root / "big_tok"
    tok = tiny_tokenizer(big, w["big_tok"], vocab_size=2048)
    assert len(tok) > 448
    # an MLLMU-layout directory whose splits.json has an empty split and an unknown profile
    data = root / "bench"
    assert main(["data", "synth", "--out", str(data), "--profiles", "10", "--celebrities", "4",
                 "--image-size", "32"]) == 0
    extra = json.loads((data / "splits.json").read_text())
    extra["empty_split"] = []
    (data / "splits.json").write_text(json.dumps(extra))
    w["bench"] = data
    bad = root / "bench_unknown"
    shutil.copytree(data, bad)
    extra["ghost_split"] = ["p9999"]
    (bad / "splits.json").write_text(json.dumps(extra))
    w["bench_unknown"] = bad
    w["list_yaml"] = root / "list.yaml"
    w["list_yaml"].write_text("- train\n- lr\n")
    # a finished fine-tuning run (the reference for the resume tests)
    w["ft"] = root / "ft"
    assert main(["finetune", f"model.checkpoint={base}", *DATA, *TRAIN,
                 f"output.dir={w['ft']}"]) == 0
    return w


def _snapshot(path: Path):
    """Absent, or {relative path: sha256} of every file (byte-identical check)."""
    if not path.exists():
        return None
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _one_error(capsys, argv, *needles) -> str:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, (argv, rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert str(n) in err, (n, err)
    assert "Traceback" not in err
    return err


# (name, argv builder (world, out) -> argv, strings the error names)
M = ["model.checkpoint={base}"]
CASES = [
    ("nonexistent model dir", lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['root']}/nope",
                                            f"output.dir={o}"], ["nope"]),
    ("dir without config.json", lambda w, o: ["finetune", *DATA,
                                              f"model.checkpoint={w['no_config']}",
                                              f"output.dir={o}"], ["config.json"]),
    ("unknown model_type", lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['bad_type']}",
                                         f"output.dir={o}"], ["llavva"]),
    ("truncated safetensors", lambda w, o: ["finetune", *DATA,
                                            f"model.checkpoint={w['truncated']}",
                                            f"output.dir={o}"], ["model.safetensors", "truncated"]),
    ("corrupted header", lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['header']}",
                                       f"output.dir={o}"], ["model.safetensors", "header"]),
    ("non-finite weight", lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['nan']}",
                                        f"output.dir={o}"], ["model.safetensors", "non-finite"]),
    ("non-finite weight, evaluate", lambda w, o: ["evaluate", "--model", str(w["nan"]), *DATA,
                                                  f"output.dir={o}"], ["non-finite"]),
    ("vocabulary mismatch", lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['base']}",
                                          f"data.tokenizer={w['big_tok']}", f"output.dir={o}"],
     ["big_tok", "vocabulary"]),
    ("image token id mismatch", lambda w, o: ["finetune", *DATA,
                                              f"model.checkpoint={w['image_id']}",
                                              f"output.dir={o}"], ["image token", "<image>"]),
    ("typo train key", lambda w, o: ["finetune", *DATA, "train.lrr=1e-3", f"output.dir={o}"],
     ["train.lrr", "train.lr"]),
    ("typo section key", lambda w, o: ["finetune", *DATA, "dat.batch_size=4", f"output.dir={o}"],
     ["dat"]),
    ("train.lr=abc", lambda w, o: ["finetune", *DATA, "train.lr=abc", f"output.dir={o}"],
     ["train.lr", "float"]),
    ("negative epochs", lambda w, o: ["finetune", *DATA, "train.epochs=-1", f"output.dir={o}"],
     ["train.epochs"]),
    ("method option abc", lambda w, o: ["unlearn", "--method", "npo", "--model", str(w["base"]),
                                        *DATA, "method.options.beta=abc", f"output.dir={o}"],
     ["method.options.beta"]),
    ("unknown method", lambda w, o: ["unlearn", "--method", "gaa", "--model", str(w["base"]),
                                     *DATA, f"output.dir={o}"], ["gaa"]),
    ("unknown split", lambda w, o: ["unlearn", "--method", "ga", "--model", str(w["base"]),
                                    f"data.dir={w['bench']}", "data.forget_split=forget_7",
                                    "data.retain_split=retain_90", "data.force_split_pair=true",
                                    f"output.dir={o}"], ["forget_7"]),
    ("empty forget split", lambda w, o: ["unlearn", "--method", "ga", "--model", str(w["base"]),
                                         f"data.dir={w['bench']}", "data.forget_split=empty_split",
                                         "data.retain_split=retain_90", f"output.dir={o}"],
     ["data.forget_split", "empty_split"]),
    ("split of unknown profiles", lambda w, o: ["unlearn", "--method", "ga", "--model",
                                                str(w["base"]), f"data.dir={w['bench_unknown']}",
                                                "data.forget_split=ghost_split",
                                                "data.retain_split=retain_90", f"output.dir={o}"],
     ["p9999"]),
    ("bad data.dir", lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['base']}",
                                   f"data.dir={w['root']}/nodata", f"output.dir={o}"],
     ["nodata"]),
    ("bad config file", lambda w, o: ["finetune", "--config", f"{w['root']}/none.yaml",
                                      f"output.dir={o}"], ["none.yaml"]),
    ("data key type", lambda w, o: ["finetune", *DATA, "data.batch_size=abc", f"output.dir={o}"],
     ["data.batch_size"]),
    ("override not YAML", lambda w, o: ["finetune", *DATA, "train.lr=[1,", f"output.dir={o}"],
     ["train.lr"]),
    ("config file not a mapping", lambda w, o: ["finetune", "--config", str(w["list_yaml"]),
                                                f"output.dir={o}"], ["list.yaml"]),
    ("synth --profiles 0", lambda w, o: ["data", "synth", "--out", str(o), "--profiles", "0"],
     ["--profiles"]),
    ("protocol option type", lambda w, o: ["protocol", "pulse", "--model", str(w["base"]),
                                           "protocol.options.scenario=pretrained",
                                           "protocol.options.threshold=abc", f"output.dir={o}"],
     ["protocol.options.threshold"]),
]


@pytest.mark.parametrize("name,argv,needles", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("existing", [False, True], ids=["absent", "existing"])
def test_bad_input_one_line_out_untouched(world, capsys, tmp_path, name, argv, needles,
                                          existing):
    out = tmp_path / "out"
    argv = argv(world, out)
    if existing:  # a finished run there; --overwrite: a failing run must still leave it
        shutil.copytree(world["ft"], out)
        if argv[0] in ("finetune", "unlearn", "evaluate", "protocol"):
            argv.append("--overwrite")
    before = _snapshot(out)
    _one_error(capsys, argv, *needles)
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name != "out"]


@pytest.mark.parametrize("argv", [
    lambda w, o: ["convert", "hf-to-flax", str(w["base"]), str(o)],
    lambda w, o: ["convert", "flax-to-hf", str(w["base"]), str(o)],
    lambda w, o: ["prune", "apply", "--masks", str(w["ft"]), "--model", str(w["base"]),
                  "--out", str(o)],
    lambda w, o: ["finetune", *DATA, f"model.checkpoint={w['base']}", f"output.dir={o}"],
    lambda w, o: ["unlearn", "--method", "ga", "--model", str(w["base"]), *DATA,
                  "train.max_steps=1", f"output.dir={o}"],
], ids=["hf-to-flax", "flax-to-hf", "prune-apply", "finetune", "unlearn"])
def test_existing_run_never_destroyed(world, capsys, tmp_path, argv):
    out = tmp_path / "run"
    shutil.copytree(world["ft"], out)
    before = _snapshot(out)
    err = _one_error(capsys, argv(world, out), str(out))
    assert "--overwrite" in err
    assert _snapshot(out) == before


def test_resume_only_with_equal_config(world, capsys):
    ft = world["ft"]
    before = _snapshot(ft)
    err = _one_error(capsys, ["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
                              "train.lr=2e-3", f"output.dir={ft}"], "train.lr")
    assert "0.001" in err and "0.002" in err
    _one_error(capsys, ["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
                        f"output.dir={ft}"], "already holds this finished run")
    assert _snapshot(ft) == before
    # the finished run tells the truth: 3 steps logged once, umask modes
    steps = [json.loads(x)["step"] for x in (ft / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((ft / "finetune_report.json").read_text())["steps"] == 3
    mask = os.umask(0)
    os.umask(mask)
    assert (ft / "model").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (ft / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask


def test_overwrite_replaces_whole(world, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(world["ft"], out)
    (out / "artifacts.npz").write_bytes(b"from another method")
    assert main(["convert", "hf-to-flax", str(world["base"]), str(out), "--overwrite"]) == 0
    assert not (out / "artifacts.npz").exists() and (out / "params").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]


def test_huge_lr_refused_nothing_written(world, tmp_path, capsys):
    out = tmp_path / "lr"
    _one_error(capsys, ["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
                        "train.lr=1e6", f"output.dir={out}"], "train.lr", "<= 1")
    assert not list(tmp_path.iterdir())


def test_non_finite_loss_stops_training(tmp_path):
    """`fit` stops at the first non-finite loss / gradient norm (the scalars it already pulls
    to the host), naming step and batch; the last good checkpoint stays, nothing later."""
    import jax.numpy as jnp

    from jaxunlearn.train.driver import Setup, TrainConfig, fit

    setup = Setup(model=None, trainable={"w": jnp.ones((4,))}, base={}, lora_cfg=None)

    def loss(params, frozen, batch):
        return jnp.sum((params["w"] * batch["x"]) ** 2), {}

    xs = [np.full((4,), v, np.float32) for v in (1.0, 2.0, np.nan, 1.0)]
    cfg = TrainConfig(lr=1e-2, progress=False, checkpoint_every=1, max_steps=4)
    with pytest.raises(ValueError, match=r"step 3 \(epoch 0, batch 2.*step 2\)"):
        fit(setup, cfg, loss, lambda epoch: [{"x": x} for x in xs], steps_per_epoch=4,
            log_path=tmp_path / "metrics.jsonl", checkpoint_dir=tmp_path / "ckpt")
    assert sorted(int(p.name) for p in (tmp_path / "ckpt").iterdir() if p.name.isdigit()) \
        == [1, 2]


def _cli(argv, env=None):
    env = {**os.environ, **(env or {})}
    code = "import sys; from jaxunlearn.cli import main; raise SystemExit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, timeout=600)


def test_sigkill_training_and_export_resume(world, tmp_path):
    """Killed at step 2 (checkpoint at 1 and 2), then killed between the export's weights and
    its config.json, then rerun: equal to the uninterrupted run, metrics without duplicates."""
    out = tmp_path / "ft"
    argv = ["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN, f"output.dir={out}"]
    r = _cli(argv, {"JAXUNLEARN_TEST_KILL": "step:2"})
    assert r.returncode == -9, r.stderr[-2000:]
    assert not out.exists()
    r = _cli(argv, {"JAXUNLEARN_TEST_KILL": "export"})
    assert r.returncode == -9, r.stderr[-2000:]
    assert not out.exists()
    complete = [p.parent for p in tmp_path.rglob("config.json")
                if (p.parent / "model.safetensors").exists()]
    assert not complete, complete
    r = _cli(argv)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stderr
    want = load_file(world["ft"] / "model" / "model.safetensors")
    got = load_file(out / "model" / "model.safetensors")
    assert set(want) == set(got)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    report = json.loads((out / "finetune_report.json").read_text())
    assert report["steps"] == 3 and report["total_steps"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name != "ft"]


# ----------------------------------------------------------------------------- fuzzing

def _sections():
    """(where, dataclass, validate(mapping)) of every typed config section."""
    from jaxunlearn.commands import eval_config
    from jaxunlearn.eval.protocols import PROTOCOLS, resolve_protocol
    from jaxunlearn.eval.tasks import EvalConfig
    from jaxunlearn.methods.base import available, get_method, resolve_options
    from jaxunlearn.train.driver import TrainConfig
    from jaxunlearn.train.typed import build

    out = [("train", TrainConfig, lambda v: build(TrainConfig, v, "train"), ["finetune"]),
           ("eval", EvalConfig, lambda v: eval_config({"eval": v}), ["evaluate"])]
    for name in available():
        spec = get_method(name)
        out.append(("method.options", spec.options,
                    lambda v, spec=spec: resolve_options(spec, v),
                    ["unlearn", "--method", name]))
    for name, spec in PROTOCOLS.items():
        out.append(("protocol.options", spec.options,
                    lambda v, name=name: resolve_protocol(name, v), None))
    return out


def _bad_values(tp, meta, rng) -> list:
    """Wrong-type (and, where a bound is declared, out-of-range) values for a field type."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        tp, origin = args[0], typing.get_origin(args[0])
    if tp is bool:
        vals = ["maybe", 3, [True]]
    elif tp is int:
        vals = ["abc", 1.5, [1], {"a": 1}]
    elif tp is float:
        vals = ["abc", [0.1], {"a": 1}, True, float("nan")]
    elif tp is str:
        vals = [123, [1, 2], {"a": 1}] + (["no-such-choice"] if "choices" in meta else [])
    elif origin in (list, tuple):
        vals = [123, "x" if typing.get_args(tp)[0] is not str else 5]
    elif origin is dict or tp is dict:
        vals = [123, [1]]
    else:
        return []
    if "low" in meta:
        vals.append(meta["low"] - 1)
    if "above" in meta:
        vals.append(meta["above"] - 1)
    if "high" in meta:
        vals.append(meta["high"] * 10 + 1)
    return vals


def _fuzz_cases(n: int, seed: int = 0):
    rng = random.Random(seed)
    hints = {}
    pool = []
    for where, cls, validate, cmd in _sections():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            for v in _bad_values(hints[f.name], f.metadata, rng):
                pool.append((where, f.name, v, validate, cmd))
    rng.shuffle(pool)
    return (pool * (n // len(pool) + 1))[:n]


def test_fuzz_typed_configs_in_process():
    cases = _fuzz_cases(200)
    failures = []
    for where, key, value, validate, _ in cases:
        try:
            validate({key: value})
        except ValueError as e:
            msg = str(e)
            if f"{where}.{key}" not in msg and not (where == "eval" and f"eval.{key}" in msg):
                failures.append((where, key, value, msg))
            elif "\n" in msg:
                failures.append((where, key, value, "multi-line: " + msg))
        else:
            failures.append((where, key, value, "accepted"))
    assert not failures, failures[:10]


def test_fuzz_through_cli(world, capsys, tmp_path):
    picked = [c for c in _fuzz_cases(200, seed=1) if c[4] is not None][:10]
    for i, (where, key, value, _, cmd) in enumerate(picked):
        out = tmp_path / f"o{i}"
        text = json.dumps(value) if not isinstance(value, str) else value
        argv = [*cmd, f"model.checkpoint={world['base']}", *DATA, f"{where}.{key}={text}",
                f"output.dir={out}"]
        _one_error(capsys, argv, f"{where}.{key}")
        assert not out.exists()
    assert not list(tmp_path.iterdir())


def test_cli_conventions():
    a = parse_args(["protocol", "pulse", "--config", "configs/pulse-finetuned.yaml",
                    "model.checkpoint=PATH"])
    assert a.overrides == ["model.checkpoint=PATH"] and a.protocol == "pulse"
    a = parse_args(["protocol", "pulse", "protocol.options.candidates=pulse_ft_retain",
                    "--model", "M", "--debug"])
    assert a.overrides == ["protocol.options.candidates=pulse_ft_retain"] and a.debug
    from jaxunlearn.eval.protocols import PROTOCOLS

    assert PROTOCOLS["pulse/sequential"].options().k is None  # one request per split


def test_debug_shows_traceback(world, capsys):
    with pytest.raises(ValueError, match="train.lr"):
        main(["--debug", "finetune", "train.lr=abc"])


def test_overwrite_never_deletes_an_input(world, capsys, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(world["ft"], out)
    before = _snapshot(out)
    _one_error(capsys, ["unlearn", "--method", "ga", "--model", str(out / "model"), *DATA,
                        "train.max_steps=1", "--overwrite", f"output.dir={out}"],
               "model.checkpoint", str(out))
    assert _snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name != "run"]


def test_data_synth_never_mixes_or_destroys(tmp_path, capsys):
    """`data synth` writes through a temporary directory, refuses a non-empty --out and
    replaces it whole with --overwrite."""
    out = tmp_path / "bench"
    small = ["--profiles", "2", "--celebrities", "1", "--image-size", "8"]
    assert main(["data", "synth", "--out", str(out), *small]) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    capsys.readouterr()
    assert main(["data", "synth", "--out", str(out), *small, "--seed", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--overwrite" in err[0]
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    (out / "stray.txt").write_text("x")
    assert main(["data", "synth", "--out", str(out), *small, "--overwrite"]) == 0
    assert not (out / "stray.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("argv, key", [
    (lambda w, o: ["unlearn", "--method", "ga", "--model", str(w["base"]), *DATA,
                   "train.checkpoint_every=2", f"output.dir={o}"], "train.checkpoint_every"),
    (lambda w, o: ["sweep", "--method", "ga", f"model.checkpoint={w['base']}", *DATA,
                   "train.lr=[1e-3,1e-2]", "train.keep_checkpoints=1", f"output.dir={o}"],
     "train.keep_checkpoints"),
    (lambda w, o: ["protocol", "relearn", f"model.checkpoint={w['base']}", *DATA,
                   "train.checkpoint_every=1", f"output.dir={o}"], "train.checkpoint_every"),
    (lambda w, o: ["demo", "--quick", "--out", str(o), "methods.ga.checkpoint_every=1"],
     "methods.ga.checkpoint_every"),
], ids=["unlearn", "sweep", "protocol", "demo"])
def test_checkpoint_keys_refused_where_nothing_is_checkpointed(world, capsys, tmp_path, argv,
                                                               key):
    """Only `finetune` writes checkpoints (and resumes): elsewhere train.checkpoint_every and
    train.keep_checkpoints are one error naming the key, before anything runs."""
    out = tmp_path / "run"
    _one_error(capsys, argv(world, out), key, "jaxunlearn finetune")
    assert not out.exists()


def test_fit_without_a_checkpoint_directory_refuses_the_checkpoint_keys():
    import jax.numpy as jnp

    from jaxunlearn.train.driver import Setup, TrainConfig, fit

    setup = Setup(model=None, trainable={"w": jnp.ones((2,))}, base={}, lora_cfg=None)
    with pytest.raises(ValueError, match="train.checkpoint_every is read only by runs that"):
        fit(setup, TrainConfig(checkpoint_every=5, progress=False),
            lambda p, f, b: (jnp.sum(p["w"]), {}), lambda e: [], steps_per_epoch=1)
