"""No silent options: every option of every registered method changes the run's result
(parameters, masks or report numbers) or is refused with an error; an all-False `mask`
leaves the masked tensors bit-identical in every method that takes `mask`; a trainable
subset of vision layers the model never reads is an error naming the layer.

Runs are tiny (one forget profile, two retain profiles, one epoch of a few steps) on the
session's fine-tuned tiny LLaVA; each option is changed alone against its method's baseline.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from jaxunlearn.methods.base import MethodResult, UnlearnData, available, get_method, run_method
from jaxunlearn.train import TrainConfig, make_setup

# options that cannot change a result by design: display, and the batch size of activation
# statistics (sums over examples; speed and memory only)
EXEMPT = {"progress"}
EXEMPT_BY_METHOD = {("manu", "batch_size"), ("selective_pruning", "batch_size")}

ALL_FALSE = "<all-False mask over every trainable tensor>"

# the changed value of each option (per method where the shared value does not fit)
ALT: dict[str, Any] = {
    "retain_size": "forget", "modality": "text", "mask": ALL_FALSE, "mask_lora": "merged",
    "gamma": 3.0, "alpha": 3.0, "order": "alternate", "kl_reduction": "sequence_sum",
    "kl_weight": 3.0, "beta": 0.5, "reference": "oracle", "oracle": "unused",
    "retain_weight": 3.0, "refusal_seed": 1, "system_prompt": "Say nothing.",
    "k": 0.0, "criteria": "none", "sculpt_eps": 1e3, "anchor_epochs": 3,
    "prune_threshold": 1.0, "prune_fraction": 0.2, "fisher_threshold": 3.0,
    "saliency": "ones", "eps": 1.0, "ascent_every": 1, "forget_weight": 3.0,
    "formulation": "official", "weights": {"abs": 1.0}, "tau": 0.5, "groups": ["language"],
    "activation_site": "pre", "token_scope": "answer",
    "batch_size": 1, "seed": 1, "frac": 0.3, "stat": "rms",
    "label_scope": "all_tokens", "form": "batch_mean", "distill": "squared_norm",
}
ALT_BY_METHOD: dict[tuple[str, str], Any] = {
    ("idk", "retain_size"): "all", ("smfa", "retain_size"): "all",
    ("manu", "alpha"): 0.2, ("manu", "groups"): ["vision"],
    ("selective_pruning", "modality"): "text",
    ("selective_pruning", "groups"): ["language", "vision"],
    ("vkd", "eps"): 10.0,
}

TRAIN = TrainConfig(lr=1e-2, batch_size=8, epochs=1, schedule="constant", subset="llm",
                    progress=False)
TRAIN_BY_METHOD = {
    "vkd": dataclasses.replace(TRAIN, subset="projector+vision_mlp", deeper_half=True),
    "mmunlearner": dataclasses.replace(TRAIN, subset="all"),
}
BASE_OPTIONS = {"manu": {"progress": False}, "selective_pruning": {"progress": False},
                "vkd": {"prune_fraction": 0.05}}


def _cases() -> list[tuple[str, str]]:
    out = []
    for name in available():
        for f in dataclasses.fields(get_method(name).options):
            if f.name not in EXEMPT and (name, f.name) not in EXEMPT_BY_METHOD:
                out.append((name, f.name))
    return out


@pytest.fixture(scope="module")
def world(tiny_vanilla):
    model, tok, bench, pipe = tiny_vanilla
    retain = bench.split("retain_90")
    data = UnlearnData(tok, pipe, bench.split("forget_10")[:1], retain[:2], others=retain[2:3])
    return model, data


_RUNS: dict[tuple, Any] = {}


def _train(name: str) -> TrainConfig | None:
    return TRAIN_BY_METHOD.get(name, TRAIN) if get_method(name).trains else None


def _value(model, name: str, option: str):
    value = ALT_BY_METHOD.get((name, option), ALT.get(option, KeyError))
    if value is KeyError:
        pytest.fail(f"no changed value for {name}.{option}: add one to ALT in this test")
    if value == ALL_FALSE:
        keys = make_setup(model, _train(name)).merged_keys()
        value = {k: np.zeros(model.params[k].shape, bool) for k in keys}
    return value


def run(world, name: str, option: str | None = None):
    """(result or the refusal's ValueError) of `name` with one option changed."""
    key = (name, option)
    if key not in _RUNS:
        model, data = world
        options = dict(BASE_OPTIONS.get(name, {}))
        if option is not None:
            options[option] = _value(model, name, option)
        try:
            _RUNS[key] = run_method(name, model, data, options, train=_train(name))
        except ValueError as e:
            _RUNS[key] = e
    return _RUNS[key]


_SKIP_REPORT = {"options", "train", "seconds", "history", "tokens_per_s"}


def _leaves(x, prefix=""):
    if isinstance(x, dict):
        for k, v in x.items():
            if k not in _SKIP_REPORT:
                yield from _leaves(v, f"{prefix}{k}/")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _leaves(v, f"{prefix}{i}/")
    else:
        yield prefix, x


def fingerprint(res: MethodResult) -> dict[str, Any]:
    """Everything a run produced: parameters, masks, scores, adapter and report values."""
    out: dict[str, Any] = {f"params/{k}": np.asarray(v) for k, v in res.params.items()}
    for g, m in (res.neuron_masks or {}).items():
        out[f"neuron_masks/{g}"] = np.asarray(m)
    for name, masks in res.param_masks.items():
        for k, m in masks.items():
            out[f"param_masks/{name}/{k}"] = np.asarray(m)
    for k, v in (res.lora or {}).items():
        out[f"lora/{k}"] = np.asarray(v)
    for path, v in _leaves(res.report, "report/"):
        out[path] = v
    return out


def differs(a: MethodResult, b: MethodResult) -> list[str]:
    fa, fb = fingerprint(a), fingerprint(b)
    keys = sorted(set(fa) | set(fb))
    bad = []
    for k in keys:
        if k not in fa or k not in fb:
            bad.append(k)
        elif isinstance(fa[k], np.ndarray) or isinstance(fb[k], np.ndarray):
            x, y = np.asarray(fa[k]), np.asarray(fb[k])
            if x.shape != y.shape or not np.array_equal(x, y):
                bad.append(k)
        elif fa[k] != fb[k]:
            bad.append(k)
    return bad


@pytest.mark.parametrize("name,option", _cases(), ids=lambda x: str(x))
def test_every_option_changes_the_result_or_is_refused(world, name, option):
    base = run(world, name)
    assert isinstance(base, MethodResult), f"{name} baseline failed: {base}"
    changed = run(world, name, option)
    if isinstance(changed, ValueError):
        msg = str(changed)
        assert "\n" not in msg and len(msg) > 20, msg  # one clear line
        return
    diff = differs(base, changed)
    assert diff, f"{name}: changing {option} had no effect on params, masks or report"


MASK_METHODS = [n for n in available()
                if "mask" in {f.name for f in dataclasses.fields(get_method(n).options)}]


@pytest.mark.parametrize("name", MASK_METHODS)
def test_all_false_mask_keeps_masked_tensors(world, name):
    model, _ = world
    res = run(world, name, "mask")
    assert isinstance(res, MethodResult), res
    mask = res.param_masks["mask"]
    assert mask and not any(np.any(m) for m in mask.values())
    for k in mask:
        np.testing.assert_array_equal(np.asarray(res.params[k]), np.asarray(model.params[k]),
                                      err_msg=f"{name}: {k} moved under an all-False mask")
    base = run(world, name)
    assert any(not np.array_equal(np.asarray(base.params[k]), np.asarray(model.params[k]))
               for k in mask), f"{name}: the unmasked baseline changes none of these tensors"


def test_all_false_mask_under_lora_merged(world):
    model, data = world
    train = dataclasses.replace(TRAIN, lora=True, lora_rank=2)
    keys = make_setup(model, train).merged_keys()
    mask = {k: np.zeros(model.params[k].shape, bool) for k in keys}
    res = run_method("ga", model, data, {"mask": mask, "mask_lora": "merged"}, train=train)
    for k in keys:
        np.testing.assert_array_equal(np.asarray(res.params[k]), np.asarray(model.params[k]))
    with pytest.raises(ValueError, match="mask_lora: merged"):
        run_method("ga", model, data, {"mask": mask}, train=train)


def test_dead_vision_layers_are_an_error(tmp_path):
    import jaxunlearn as ju
    from hf_fixtures import save_hf_llava, tiny_llava_config

    save_hf_llava(tiny_llava_config(text_layers=1, vision_layers=2, feature_layer=-2),
                  tmp_path / "hf")
    model = ju.load_pretrained(tmp_path / "hf")
    for subset in ("vision_mlp", "projector+vision_mlp"):
        with pytest.raises(ValueError, match=r"vision layer\(s\) \[1\].*deeper_half: false"):
            make_setup(model, TrainConfig(subset=subset, deeper_half=True))
    make_setup(model, TrainConfig(subset="projector+vision_mlp"))  # layer 0 is read: fine


def test_configs_readme_lists_the_typed_keys():
    from pathlib import Path

    from jaxunlearn.config import reference_markdown

    text = (Path(__file__).resolve().parents[1] / "configs" / "README.md").read_text()
    begin = "<!-- BEGIN GENERATED by jaxunlearn.config.reference_markdown() -->\n"
    block = text.split(begin, 1)[1].split("<!-- END GENERATED -->", 1)[0]
    assert block == reference_markdown(), "regenerate with jaxunlearn.config.reference_markdown()"


def test_cli_help_lists_the_typed_keys(capsys):
    from jaxunlearn.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["unlearn", "--help"])
    text = capsys.readouterr().out
    for f in dataclasses.fields(TrainConfig):
        assert f.name in text
    for name in available():
        line = next(x for x in text.splitlines()
                    if x.strip().startswith((f"{name}:", f"{name} (")))
        for f in dataclasses.fields(get_method(name).options):
            assert f.name in line, (name, f.name)
