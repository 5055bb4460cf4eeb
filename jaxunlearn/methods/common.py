"""What the training-based methods share: config keys, the trainable split (subset / LoRA),
reference parameters, saliency-mask gating, data streams and the phased training loop.

Reference models. A method that needs `ref` (KL, NPO, VKD's teacher) gets it as part of the
jitted step's `frozen` argument and evaluates it inside the step under `stop_gradient`: no
per-batch precomputation and no second full copy. With LoRA the reference is the frozen base
itself; with a trainable subset it is the frozen rest plus the *starting* values of the
trainable leaves (the arrays of `model.params`, which the train state copies before donating);
`npo`'s `reference: oracle` passes a separate full parameter dict.

Mask gating. `gate(params, mask)` returns parameters whose *value* is unchanged but whose
gradient is multiplied by the boolean mask (`where(mask, p, stop_gradient(p))`), so a term
computed from gated parameters contributes gradient only at masked-in entries. Under LoRA
the gate acts on the merged kernels and the masked gradient flows back into A and B
(`mask_lora: merged`); any other mask + LoRA combination is an error.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.data.pipeline import paired_dataset
from jaxunlearn.methods.base import MethodResult, UnlearnData, run_method
from jaxunlearn.modeling.model import forward_logits
from jaxunlearn.train import lora as lora_lib
from jaxunlearn.train import subsets
from jaxunlearn.train.finetune import count_params, full_params, model_inputs

COMMON_DEFAULTS: dict[str, Any] = {
    "subset": "llm",            # all | llm | projector | projector+llm | vision | vision_mlp ...
    "deeper_half": False,       # vision_mlp: only the upper half of the vision layers
    "lora": False,              # train a LoRA adapter instead of the subset
    "lora_rank": 16,
    "lora_alpha": 32.0,
    "lora_targets": lora_lib.DEFAULT_TARGETS,
    "lr": 1e-5,
    "lr_schedule": "constant",  # constant | linear | cosine
    "warmup_steps": 0,
    "weight_decay": 0.0,
    "epochs": 1,
    "batch_size": 4,
    "grad_accum": 1,
    "clip_norm": 1.0,
    "seed": 0,
    "remat": False,
    "max_steps": 0,             # 0: no limit (tests and smoke runs cap the step count)
    "modality": "both",         # both | multi | text: which training QA to use
    "retain_size": "all",       # all | forget (few-shot D_r^few: as many records as D_f)
    "mask": None,               # optional parameter mask: {path: bool array} or an .npz path
    "mask_lora": "error",       # error | merged: how a mask combines with LoRA
    "progress": True,
}
MODALITIES = ("both", "multi", "text")


def with_common(**specific: Any) -> dict[str, Any]:
    """Method defaults = the common keys overridden / extended by `specific`."""
    return {**COMMON_DEFAULTS, **specific}


# ----------------------------------------------------------------------------- parameters

@dataclasses.dataclass
class Setup:
    """The trainable / frozen split of a model for one run."""

    model: Any
    trainable: dict
    base: dict               # frozen parameters (the whole model under LoRA)
    lora_cfg: lora_lib.LoraConfig | None

    def policy(self, params: dict, base: dict) -> dict:
        return full_params(params, base, self.lora_cfg)

    def reference_part(self) -> dict:
        """What `reference()` needs besides `base`: the starting trainable leaves."""
        return {} if self.lora_cfg is not None else dict(self.trainable)

    def reference(self, base: dict, ref_part: dict) -> dict:
        return dict(base) if self.lora_cfg is not None else {**base, **ref_part}

    def merged_keys(self) -> list[str]:
        """Model parameters that training can change (LoRA: the target kernels)."""
        if self.lora_cfg is not None:
            return lora_lib.target_paths(self.base, self.lora_cfg)
        return sorted(self.trainable)


def make_setup(model, cfg: Mapping[str, Any]) -> Setup:
    """Split `model.params` by the config's subset or LoRA (clear errors for bad names)."""
    params = model.params
    if cfg["lora"]:
        lcfg = lora_lib.LoraConfig(int(cfg["lora_rank"]), float(cfg["lora_alpha"]), 0.0,
                                   cfg["lora_targets"])
        return Setup(model, lora_lib.init_lora(params, lcfg, int(cfg["seed"])), dict(params),
                     lcfg)
    mask = subsets.trainable_mask(params, cfg["subset"], bool(cfg["deeper_half"]))
    trainable, frozen = subsets.split_params(params, mask)
    return Setup(model, trainable, frozen, None)


def gate(params: Mapping[str, jax.Array], mask: Mapping[str, jax.Array] | None) -> dict:
    """Same values; gradient only where `mask` is true (entries of paths not in `mask` pass)."""
    if not mask:
        return dict(params)
    return {k: jnp.where(jnp.asarray(mask[k], bool), v, jax.lax.stop_gradient(v))
            if k in mask else v for k, v in params.items()}


def load_mask(spec: Any) -> dict[str, np.ndarray] | None:
    """A parameter mask from a dict or an .npz file (None stays None)."""
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return {k: np.asarray(v, bool) for k, v in spec.items()}
    with np.load(spec) as z:
        return {k: np.asarray(z[k], bool) for k in z.files}


def check_mask(mask: Mapping[str, Any] | None, setup: Setup, cfg: Mapping[str, Any],
               what: str = "mask") -> None:
    """A mask must name changeable parameters with matching shapes; LoRA needs merged."""
    if mask is None:
        return
    if setup.lora_cfg is not None and cfg["mask_lora"] != "merged":
        raise ValueError(f"a {what} cannot apply to LoRA adapter weights; set mask_lora: merged "
                         "(mask the merged kernels) or train without LoRA")
    if cfg["mask_lora"] not in ("error", "merged"):
        raise ValueError(f"unknown mask_lora {cfg['mask_lora']!r}; use error or merged")
    allowed = set(setup.merged_keys())
    bad = sorted(set(mask) - allowed)
    if bad:
        raise ValueError(f"{what} names parameters that this run cannot change: {bad[:3]}")
    params = setup.model.params
    for k, m in mask.items():
        if tuple(np.shape(m)) not in ((), tuple(params[k].shape)):
            raise ValueError(f"{what} for {k} has shape {np.shape(m)}, parameter has "
                             f"{params[k].shape}")


def logits_of(graphdef: Any, params: Mapping[str, jax.Array], batch: dict, *, dtype=None,
              remat: bool = False) -> jax.Array:
    """fp32 logits of `params` on a data-pipeline batch."""
    return forward_logits(graphdef, dict(params), model_inputs(batch), dtype=dtype, remat=remat)


# ----------------------------------------------------------------------------- data

def records(data: UnlearnData, which: str, cfg: Mapping[str, Any],
            modality: str | None = None) -> list[dict]:
    """Training QA of `which` for the config's modality (and few-shot retain size)."""
    mod = modality or cfg["modality"]
    if mod not in MODALITIES:
        raise ValueError(f"unknown modality {mod!r}; use one of {MODALITIES}")
    recs = data.records(which, None if mod == "both" else mod)
    if not recs:
        raise ValueError(f"{which} set has no {mod} training QA")
    if which == "retain" and cfg.get("retain_size", "all") == "forget":
        n = len(data.records("forget", None if mod == "both" else mod))
        idx = np.random.default_rng(int(cfg["seed"]) + 17).permutation(len(recs))[:n]
        recs = [recs[int(i)] for i in sorted(idx)]
    elif which == "retain" and cfg.get("retain_size", "all") != "all":
        raise ValueError(f"unknown retain_size {cfg['retain_size']!r}; use all or forget")
    return recs


def stream(data: UnlearnData, recs: list[dict], cfg: Mapping[str, Any], epoch: int,
           salt: int = 0):
    """Batches of `recs` for one epoch (reshuffled per epoch and per `salt`)."""
    seed = int(cfg["seed"]) + 7919 * salt + epoch
    return data.dataset(recs, seed=seed, batch_size=int(cfg["batch_size"]))


def paired(data: UnlearnData, forget: list[dict], retain: list[dict], cfg: Mapping[str, Any],
           epoch: int):
    """`{"forget": batch, "retain": batch}` per forget batch (random retain batches)."""
    return paired_dataset(stream(data, forget, cfg, epoch, 0), stream(data, retain, cfg, epoch, 1),
                          seed=int(cfg["seed"]) + epoch)


# ----------------------------------------------------------------------------- training

def flagged(batch: dict, key: str, value: float) -> dict:
    """`batch` with a per-row flag `key` (so one compiled step can serve two phases)."""
    rows = batch["input_ids"].shape[0]
    return {**batch, key: np.full((rows,), value, np.float32)}


LossFn = Callable[[dict, dict, dict], tuple[jax.Array, dict]]


def train(setup: Setup, cfg: Mapping[str, Any], losses: Mapping[str, LossFn],
          schedule: Callable[[int], Iterable[tuple[str, dict]]], steps_per_epoch: int, *,
          frozen_extra: Mapping[str, Any] | None = None, update_mask: dict | None = None,
          desc: str = "unlearn") -> MethodResult:
    """Run `schedule(epoch)` -> (phase, batch) items through one optimizer.

    Each phase runs the jitted step built from `losses[phase]` (phases that map to the same
    function share one compiled step, e.g. with a per-row phase flag in the batch); all phases
    share the train state. `frozen` holds `base` (frozen params) plus `frozen_extra`
    (reference parts, masks).
    Returns the full parameter dict (LoRA merged) and a report with per-step losses."""
    from tqdm.auto import tqdm

    from jaxunlearn.train.state import init_state, make_optimizer
    from jaxunlearn.train.step import make_train_step

    max_steps = int(cfg.get("max_steps") or 0)
    total = max(int(cfg["epochs"]) * steps_per_epoch, 1)
    if max_steps:
        total = min(total, max_steps)
    opt = make_optimizer(float(cfg["lr"]), schedule=cfg["lr_schedule"],
                         warmup_steps=int(cfg["warmup_steps"]), total_steps=total,
                         weight_decay=float(cfg["weight_decay"]))
    state = init_state(setup.trainable, opt, int(cfg["seed"]))
    compiled: dict[int, Callable] = {}  # phases sharing one loss share one jitted step
    for fn in losses.values():
        if id(fn) not in compiled:
            compiled[id(fn)] = make_train_step(fn, opt, grad_accum=int(cfg["grad_accum"]),
                                               clip_norm=cfg["clip_norm"],
                                               update_mask=update_mask)
    steps = {name: compiled[id(fn)] for name, fn in losses.items()}
    frozen = {"base": setup.base, **(frozen_extra or {})}
    history: list[dict] = []
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc=desc, disable=not cfg.get("progress", True), unit="step")
    for epoch in range(int(cfg["epochs"])):
        for phase, batch in schedule(epoch):
            if len(history) >= total:
                break
            state, metrics = steps[phase](state, frozen, batch)
            rec = {"step": len(history) + 1, "epoch": epoch, "phase": phase,
                   **{k: float(v) for k, v in jax.device_get(metrics).items()}}
            history.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4f}", phase=phase)
            bar.update(1)
        if len(history) >= total:
            break
    bar.close()
    seconds = time.perf_counter() - t0
    params = setup.policy(state.params, setup.base)
    report = {"steps": len(history), "losses": [h["loss"] for h in history],
              "phases": [h["phase"] for h in history], "history": history,
              "seconds": seconds, "trainable_params": count_params(state.params)}
    artifacts = {"lora": jax.device_get(state.params)} if setup.lora_cfg is not None else {}
    return MethodResult(params, report, artifacts)


# ----------------------------------------------------------------------------- sequences

def run_sequential(name: str, model, data: UnlearnData, forget_sets: Sequence[Sequence[Any]],
                   overrides: dict | None = None,
                   after_each: Callable[[int, Any, dict], None] | None = None):
    """Unlearn `forget_sets` one after another (PULSE sustainability) with one model value.

    The retain set stays `data.retain`. `after_each(i, model, report)` runs after every part
    (e.g. an evaluation). Returns (final model, list of reports)."""
    reports = []
    for i, part in enumerate(forget_sets):
        step_data = dataclasses.replace(data, forget=list(part))
        model, report, _ = run_method(name, model, step_data, overrides)
        report = {**report, "part": i}
        reports.append(report)
        if after_each is not None:
            after_each(i, model, report)
    return model, reports
