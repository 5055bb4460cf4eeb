"""What every unlearning method shares: the data it reads, its typed options, its typed
result, and the registry.

A method is a function `(model, data, options, train) -> MethodResult` registered with
`register(name, Options, needs_retain=..., trains=..., families=...)`. `Options` is a frozen
dataclass of the method's own keys (`method.options` in configs) whose fields document
themselves (`train.typed.field`); the training hyperparameters (lr, epochs, subset, LoRA ...)
are the shared `TrainConfig` (the `train:` section), read only by methods that train.
`run_method` validates both (unknown key -> the closest valid name; wrong type -> one error
naming the key) and returns a `MethodResult`.

On disk (`MethodResult.save(dir)` / `MethodResult.load(dir)`), no pickles:
- `result.json`: `{"format": "jaxunlearn-method-result/1", "method", "report", "files"}`;
  `files` lists which of the files below exist.
- `neuron_masks.npz` (+ `neuron_masks.json` metadata): `mask/<group>` bool [layers, neurons]
  or `mask/<group>.<linear>` bool [layers, output channels] (True = pruned) and `score/<key>`
  float64 (`prune_io.save_masks`'s format, what
  `jaxunlearn prune apply --masks` reads).
- `param_masks.npz`: `<mask name>/<parameter path>` bool arrays (e.g. a saliency mask).
- `lora/lora.npz` + `lora/lora_config.json`: the adapter's `*.lora_a` / `*.lora_b` arrays and
  its `LoraConfig` (what `jaxunlearn convert peft` reads).
The edited parameters themselves are not part of `save` (the `unlearn` command exports them
as a Hugging Face checkpoint in `model/`); `load` returns `params=None`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxunlearn.data.pipeline import (
    PipelineConfig,
    make_dataset,
    make_mixed_dataset,
    qa_records,
    trained_question_records,
)
from jaxunlearn.data.schema import Profile
from jaxunlearn.train import typed
from jaxunlearn.train.driver import TrainConfig
from jaxunlearn.train.lora import LoraConfig
from jaxunlearn.train.typed import field

RESULT_FORMAT = "jaxunlearn-method-result/1"


@dataclasses.dataclass
class UnlearnData:
    """The forget / retain people and how to turn their QA into batches."""

    tokenizer: Any
    pipeline: PipelineConfig
    forget: Sequence[Profile]
    retain: Sequence[Profile]
    # other profiles whose text-only QA a method may use (MMUnlearner's language mask)
    others: Sequence[Profile] = ()
    # evaluation-question kinds (classification, cloze, generation) the model was also
    # trained on, e.g. the demo's: a method then sees them beside the training QA, so that
    # its forget set is everything the model learnt about the forget people
    # (`trained_question_records`: each classification question once, its options in a
    # fixed random order drawn from `question_seed`, answered as the model was trained:
    # `classification_answer` "letter" or "letter_option")
    question_kinds: Sequence[str] = ()
    question_seed: int = 0
    classification_answer: str = "letter"

    def records(self, which: str, modality: str | None = None) -> list[dict]:
        """Training records of `forget`, `retain` or `others` (training QA, plus the
        `question_kinds` questions), optionally one modality."""
        profiles = {"forget": self.forget, "retain": self.retain, "others": self.others}
        if which not in profiles:
            raise ValueError(f"unknown data part {which!r}; use forget, retain or others")
        if not profiles[which]:
            raise ValueError(f"this method needs {which} data but the {which} set is empty")
        recs = qa_records(profiles[which], self.pipeline.family, "train", modality)
        if self.question_kinds:
            recs += trained_question_records(profiles[which], self.pipeline.family,
                                             self.question_kinds, modality,
                                             seed=self.question_seed,
                                             classification_answer=self.classification_answer)
        return recs

    def dataset(self, records: list[dict], *, seed: int = 0, batch_size: int | None = None,
                shuffle: bool = True):
        """A grain dataset of batches (one modality per batch) for `records`. With several
        processes on the command's mesh, each process reads and preprocesses only its rows
        of every global batch (`parallel.mesh.dataset_rows`: `ProcessRows` batches, which
        `driver.fit` and the statistics assemble into global arrays)."""
        from jaxunlearn.parallel.mesh import dataset_rows

        size = batch_size or self.pipeline.batch_size
        cfg = dataclasses.replace(self.pipeline, seed=seed, shuffle=shuffle, num_epochs=1,
                                  batch_size=size, rows=dataset_rows(size))
        modalities = {r["image"] is not None for r in records}
        if len(modalities) == 1:
            return make_dataset(records, self.tokenizer, cfg)
        return make_mixed_dataset(records, self.tokenizer, cfg)


# ----------------------------------------------------------------------------- options

@dataclasses.dataclass(frozen=True)
class MethodOptions:
    """Base of every method's options (no keys of its own)."""


@dataclasses.dataclass(frozen=True)
class DataOptions(MethodOptions):
    """Keys of methods that read the retain set."""

    retain_size: str = field("all", "retain records: all, or forget = as many as the forget "
                             "set has (few-shot D_r^few)", choices=("all", "forget"))


@dataclasses.dataclass(frozen=True)
class TrainingOptions(DataOptions):
    """Keys shared by the methods that train (through `train.driver.fit`)."""

    modality: str = field("both", "which training QA: both, multi (image + question) or text",
                          choices=("both", "multi", "text"))
    mask: Any = field(None, "parameter mask {path: bool array} or an .npz path: only masked-in "
                      "entries move")
    mask_lora: str = field("error", "a mask under LoRA: error, or merged (mask the merged "
                           "kernels)", choices=("error", "merged"))


# ----------------------------------------------------------------------------- result

@dataclasses.dataclass
class MethodResult:
    """What a method returns: the edited parameters and everything needed to reproduce or
    export them (see the module docstring for the on-disk layout)."""

    params: dict | None
    report: dict
    neuron_masks: dict[str, np.ndarray] | None = None   # {group or group.linear: bool}
    neuron_scores: dict[str, np.ndarray] | None = None  # {key: float scores}
    neuron_meta: dict = dataclasses.field(default_factory=dict)  # model_type, ...
    param_masks: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)
    lora: dict[str, np.ndarray] | None = None
    lora_config: LoraConfig | None = None

    def model(self, model):
        """`model` with this result's parameters."""
        return model.replace(params=self.params)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write the result's files into `out_dir` (created); returns it."""
        from jaxunlearn.methods.prune_io import save_masks

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = []
        if self.neuron_masks is not None:
            save_masks(out / "neuron_masks.npz", self.neuron_masks, self.neuron_scores,
                       self.neuron_meta)
            files += ["neuron_masks.npz", "neuron_masks.json"]
        if self.param_masks:
            arrays = {f"{name}/{path}": np.asarray(m, bool)
                      for name, masks in self.param_masks.items() for path, m in masks.items()}
            _savez(out / "param_masks.npz", arrays)
            files.append("param_masks.npz")
        if self.lora is not None:
            if self.lora_config is None:
                raise ValueError("a MethodResult with LoRA weights needs its lora_config")
            save_lora(self.lora, self.lora_config, out / "lora")
            files += ["lora/lora.npz", "lora/lora_config.json"]
        doc = {"format": RESULT_FORMAT, "method": self.report.get("method"),
               "report": self.report, "files": files}
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(doc, indent=2, default=_json_default))
        os.replace(tmp, out / "result.json")
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike) -> "MethodResult":
        """Read a directory written by `save` (params are not stored: `params=None`)."""
        from jaxunlearn.methods.prune_io import load_masks

        d = Path(out_dir)
        path = d / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass a directory written by `unlearn` "
                                    "(MethodResult.save)")
        doc = json.loads(path.read_text())
        if doc.get("format") != RESULT_FORMAT:
            raise ValueError(f"{path} has format {doc.get('format')!r}, expected {RESULT_FORMAT}")
        res = cls(None, doc["report"])
        if (d / "neuron_masks.npz").is_file():
            res.neuron_masks, res.neuron_meta = load_masks(d / "neuron_masks.npz")
            with np.load(d / "neuron_masks.npz") as z:
                scores = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith("score/")}
            res.neuron_scores = scores or None
        if (d / "param_masks.npz").is_file():
            with np.load(d / "param_masks.npz") as z:
                for key in z.files:
                    name, p = key.split("/", 1)
                    res.param_masks.setdefault(name, {})[p] = z[key]
        if (d / "lora" / "lora.npz").is_file():
            res.lora, res.lora_config = load_lora(d / "lora")
        return res


def _json_default(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    if dataclasses.is_dataclass(x):
        return dataclasses.asdict(x)
    return str(x)


def _savez(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def save_lora(lora: Mapping[str, Any], lora_cfg: LoraConfig, out_dir: str | os.PathLike) -> Path:
    """jaxunlearn's LoRA format: `lora.npz` (adapter arrays) + `lora_config.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _savez(out / "lora.npz", {k: np.asarray(v) for k, v in lora.items()})
    (out / "lora_config.json").write_text(json.dumps(dataclasses.asdict(lora_cfg)))
    return out


def load_lora(src: str | os.PathLike) -> tuple[dict[str, np.ndarray], LoraConfig]:
    """(adapter arrays, LoraConfig) from a `lora/` directory, or from an `unlearn` / `finetune`
    output directory that holds one."""
    d = Path(src)
    if not (d / "lora.npz").is_file() and (d / "lora" / "lora.npz").is_file():
        d = d / "lora"
    if not (d / "lora.npz").is_file():
        raise FileNotFoundError(f"{src}: no lora.npz (nor lora/lora.npz); pass the output "
                                "directory of a LoRA run (train.lora: true) or its lora/ folder")
    with np.load(d / "lora.npz") as z:
        lora = {k: z[k] for k in z.files}
    return lora, LoraConfig(**json.loads((d / "lora_config.json").read_text()))


# ----------------------------------------------------------------------------- registry

MethodFn = Callable[[Any, UnlearnData, Any, TrainConfig], MethodResult]


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: MethodFn
    options: type
    needs_retain: bool
    trains: bool
    families: tuple[str, ...] | None
    description: str


_METHODS: dict[str, MethodSpec] = {}


def _summary(doc: str | None) -> str:
    """The first paragraph of a docstring on one line (the method's description)."""
    return " ".join((doc or "").strip().split("\n\n", 1)[0].split())


def register(name: str, options: type = MethodOptions, *, needs_retain: bool = True,
             trains: bool = True, families: Sequence[str] | None = None,
             description: str = ""):
    """Decorator registering `fn(model, data, options, train)` under `name`.

    `options`: the method's frozen options dataclass; `trains`: whether it reads the
    `train:` section; `families`: model families it supports (None: all)."""
    if not (dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen):
        raise TypeError(f"method {name!r}: options must be a frozen dataclass")

    def wrap(fn: MethodFn) -> MethodFn:
        _METHODS[name] = MethodSpec(name, fn, options, needs_retain, trains,
                                    tuple(families) if families else None,
                                    description or _summary(fn.__doc__))
        return fn
    return wrap


def available() -> list[str]:
    _import_all()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    _import_all()
    if name not in _METHODS:
        close = difflib.get_close_matches(name, sorted(_METHODS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown method {name!r}{hint} (available: {', '.join(sorted(_METHODS))})")
    return _METHODS[name]


_TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainConfig)}


def resolve_options(spec: MethodSpec, options: Mapping[str, Any] | Any | None):
    """The method's typed options from a mapping of overrides (validated) or an instance."""
    if isinstance(options, Mapping):
        stray = sorted(set(options) & _TRAIN_KEYS - {f.name for f in
                                                     dataclasses.fields(spec.options)})
        if stray:
            raise ValueError(f"method.options.{stray[0]} is a training hyperparameter, not an "
                             f"option of {spec.name}; set train.{stray[0]} instead")
    return typed.build(spec.options, options, "method.options")


def split_settings(name: str, flat: Mapping[str, Any] | None) -> tuple[dict, dict]:
    """(options, train) from one flat mapping of a method's options and training keys (for
    programmatic callers such as the demo; a key that is both is read as an option)."""
    spec = get_method(name)
    own = {f.name for f in dataclasses.fields(spec.options)}
    flat = dict(flat or {})
    options = {k: v for k, v in flat.items() if k in own or k not in _TRAIN_KEYS}
    train = {k: v for k, v in flat.items() if k not in options}
    return options, train


def run_method(name: str, model, data: UnlearnData, options: Mapping | Any | None = None, *,
               train: TrainConfig | Mapping | None = None) -> MethodResult:
    """Run a registered method; returns its `MethodResult` (report with method, options,
    training config and seconds)."""
    spec = get_method(name)
    opts = resolve_options(spec, options)
    tcfg = typed.build(TrainConfig, train, "train")
    if not spec.trains and tcfg != TrainConfig():
        changed = sorted(k for k, v in dataclasses.asdict(tcfg).items()
                         if v != getattr(TrainConfig(), k))
        raise ValueError(f"method {name!r} does not train, so train.{changed[0]} has no effect; "
                         "remove it (or leave the train: section at its defaults)")
    family = getattr(model, "family", None)
    if spec.families is not None and family is not None and family not in spec.families:
        raise ValueError(f"method {name!r} supports the model families "
                         f"{', '.join(spec.families)}, not {family!r}")
    if spec.needs_retain and not data.retain:
        raise ValueError(f"method {name!r} needs retain data, but the retain set is empty")
    t0 = time.perf_counter()
    result = spec.fn(model, data, opts, tcfg)
    result.report = {"method": name, "options": _plain({f.name: getattr(opts, f.name)
                                                        for f in dataclasses.fields(opts)}),
                     **({"train": dataclasses.asdict(tcfg)} if spec.trains else {}),
                     **result.report, "seconds": time.perf_counter() - t0}
    return result


def _plain(d: dict) -> dict:
    """Options for a JSON report (arrays / masks / models named by their type, not dumped)."""
    def plain(v):
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        if isinstance(v, (list, tuple)) and all(isinstance(x, (str, int, float)) for x in v):
            return list(v)
        if isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
            return dict(v)
        return f"<{type(v).__name__}>"
    return {k: plain(v) for k, v in d.items()}


def _import_all() -> None:
    """Import the method modules so their `register` calls run."""
    import importlib
    import pkgutil

    import jaxunlearn.methods as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name not in ("base",):
            importlib.import_module(f"jaxunlearn.methods.{info.name}")
