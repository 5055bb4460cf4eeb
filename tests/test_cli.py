"""CLI: help everywhere, one-line errors with non-zero exit, conversions."""

import subprocess
import sys

import numpy as np
import pytest

import jaxunlearn as ju
from hf_fixtures import llava_batch, save_hf_llava, tiny_llava_config
from jaxunlearn.cli import build_parser, main

SUBCOMMANDS = [[], ["demo"], ["data"], ["data", "synth"], ["data", "show"], ["finetune"],
               ["unlearn"], ["evaluate"], ["protocol"], ["prune"], ["prune", "apply"],
               ["convert"], ["sweep"], ["report"], ["bench"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "top")
def test_help_exits_zero(words, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(words + ["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "jaxunlearn.cli", "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "unlearn" in out.stdout


def _one_error_line(capsys, argv, pattern):
    capsys.readouterr()  # drop earlier output
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert pattern in err[0], err[0]


def test_bad_config_key(capsys):
    _one_error_line(capsys, ["unlearn", "train.lrr=1e-5"], "did you mean 'train.lr'")


def test_missing_file(capsys, tmp_path):
    _one_error_line(capsys, ["unlearn", "--config", str(tmp_path / "nope.yaml")], "not found")


def test_unknown_method(capsys):
    _one_error_line(capsys, ["unlearn", "--method", "gradient_ascent"], "unknown method")


def test_convert_round_trip(tmp_path, capsys):
    cfg = tiny_llava_config(text_layers=1, vision_layers=2)
    save_hf_llava(cfg, tmp_path / "hf")
    assert main(["convert", "hf-to-flax", str(tmp_path / "hf"), str(tmp_path / "flax")]) == 0
    assert main(["convert", "flax-to-hf", str(tmp_path / "flax"), str(tmp_path / "back")]) == 0
    ids, mask, pix = llava_batch(cfg)
    a = np.asarray(ju.load_pretrained(tmp_path / "hf").logits(ids, mask, pix))
    b = np.asarray(ju.load_pretrained(tmp_path / "back").logits(ids, mask, pix))
    np.testing.assert_array_equal(a, b)
    _one_error_line(capsys, ["convert", "flax-to-hf", str(tmp_path / "hf"), str(tmp_path / "x")],
                    "not a jaxunlearn Flax directory")


def test_demo_yaml_states_the_embedded_default():
    from pathlib import Path

    from jaxunlearn.demo.run import demo_setting

    path = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    for quick in (False, True):
        assert demo_setting(path, quick=quick) == demo_setting(quick=quick)
    full, quick = demo_setting(), demo_setting(quick=True)
    assert full["world"]["n_profiles"] == 20 and quick["world"]["n_profiles"] == 10
    tuned = demo_setting(path, ["methods.ga.lr=0.1", "run=[ga]"])
    assert tuned["methods"]["ga"] == {**full["methods"]["ga"], "lr": 0.1}
    assert tuned["run"] == ["ga"]
    assert demo_setting(None, ["vanilla_epochs=7"], quick=True)["vanilla_epochs"] == 7
    assert demo_setting(None, ["quick.vanilla_epochs=7"], quick=True)["vanilla_epochs"] == 7
    assert demo_setting(None, ["quick.vanilla_epochs=7"])["vanilla_epochs"] == 60


def test_demo_bad_inputs_one_line(capsys, tmp_path):
    _one_error_line(capsys, ["demo", "--out", str(tmp_path), "vanila_epochs=3"],
                    "did you mean 'vanilla_epochs'")
    _one_error_line(capsys, ["demo", "--out", str(tmp_path), "run=[ga,gaa]"],
                    "unknown method 'gaa'")
    _one_error_line(capsys, ["demo", "--config", str(tmp_path / "nope.yaml")], "not found")


def test_demo_refuses_to_resume_another_setting(tmp_path):
    from jaxunlearn.demo.run import _check_same_setting

    _check_same_setting(tmp_path / "demo_setting.json", {"a": 1})
    _check_same_setting(tmp_path / "demo_setting.json", {"a": 1})
    with pytest.raises(ValueError, match="another setting; rerun with --fresh"):
        _check_same_setting(tmp_path / "demo_setting.json", {"a": 2})


def test_host_memory_setting(monkeypatch, capsys, tmp_path):
    import jax

    from jaxunlearn import host_memory

    # the suite's conftest applied it (no accelerator plugin here): CPU runs reuse memory
    assert host_memory.reuse_freed_host_memory() is True
    assert jax.config.read("jax_cpu_enable_async_dispatch") is False
    with pytest.raises(ValueError, match="JAXUNLEARN_HOST_MALLOC='often'"):
        host_memory.reuse_freed_host_memory("often")
    monkeypatch.setenv("JAXUNLEARN_HOST_MALLOC", "often")
    _one_error_line(capsys, ["data", "synth", "--out", str(tmp_path / "d")],
                    "JAXUNLEARN_HOST_MALLOC='often' is not one of reuse, default, auto")
    assert not (tmp_path / "d").exists()


def test_overrides_in_any_order_after_the_subcommand():
    """`key=value` overrides may follow options (argparse alone would refuse them)."""
    from jaxunlearn.cli import parse_args

    a = parse_args(["protocol", "mllmu", "--model", "M", "a.b=1", "--config", "c.yaml", "c.d=2"])
    assert (a.protocol, a.model, a.config, a.overrides) == ("mllmu", "M", "c.yaml",
                                                            ["a.b=1", "c.d=2"])
    a = parse_args(["unlearn", "x.y=3", "--method", "ga", "z=1"])
    assert (a.method, a.overrides) == ("ga", ["x.y=3", "z=1"])
    with pytest.raises(SystemExit) as e:
        parse_args(["unlearn", "--bogus"])
    assert e.value.code == 2
