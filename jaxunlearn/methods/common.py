"""What the training-based methods share: reference parameters, saliency-mask gating, data
streams and the bridge to the one training driver (`train.driver.fit`, which owns the
trainable split, the step, the optimizer and the loop).

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

Loss weights. The numbers a loss is weighted by (NPO's beta, grad_diff's gamma / alpha, ...)
enter the step as fp32 scalars in `frozen["hyper"]` (`hyper(...)` builds that entry), so they
are runtime values: runs that differ only in them trace to one program and share its compile
(`train.programs.CachedProgram`). Their ranges are checked on the typed options.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.data.pipeline import paired_dataset
from jaxunlearn.methods.base import MethodResult, TrainingOptions, UnlearnData, run_method
from jaxunlearn.modeling.model import forward_logits, model_inputs
from jaxunlearn.objectives.gradient import LABEL_SCOPES
from jaxunlearn.parallel.mesh import same_rows
from jaxunlearn.train.driver import DROPOUT_KEY, LossFn, Setup, TrainConfig, fit, make_setup
from jaxunlearn.train.typed import field

__all__ = ["GradientOptions", "GradientRun", "HYPER", "LossFn", "Setup", "check_mask", "flagged",
           "forget_only", "gate", "hyper", "load_mask", "logits_of", "fit_method", "make_setup",
           "no_retain", "paired", "paired_run", "records", "run_sequential", "stream"]


@dataclasses.dataclass(frozen=True)
class GradientOptions(TrainingOptions):
    """Keys shared by the gradient methods (`ga`, `grad_diff`, `kl_min`, `ga_klr`, `npo`,
    `idk`)."""

    label_scope: str = field("answer", "which tokens are labels: answer (answer tokens; "
                             "open-unlearning) or all_tokens (every non-pad token, prompt "
                             "included; MLLMU-Bench's collators)", choices=LABEL_SCOPES)


HYPER = "hyper"  # frozen[...] entry: {name: fp32 scalar} loss weights (runtime values)


def hyper(**weights: float) -> dict[str, dict[str, np.float32]]:
    """The `frozen_extra` entry holding loss weights as fp32 scalars (`frozen[HYPER][name]`
    in the loss): runtime values of the jitted step, so one compile serves every value."""
    return {HYPER: {k: np.float32(v) for k, v in weights.items()}}


# ----------------------------------------------------------------------------- parameters

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


def check_mask_lora(opts: TrainingOptions, setup: Setup, has_mask: bool) -> None:
    """`mask_lora: merged` only means something for a mask under LoRA."""
    if opts.mask_lora == "merged" and (setup.lora_cfg is None or not has_mask):
        raise ValueError("method.options.mask_lora: merged only applies to a mask under LoRA "
                         "(train.lora: true and a mask); leave mask_lora: error")
    if opts.mask_lora == "merged" and setup.lora_cfg.dropout > 0:
        raise ValueError("method.options.mask_lora: merged gates the merged kernels, but with "
                         f"train.lora_dropout {setup.lora_cfg.dropout} the adapter is not merged "
                         "while training; set train.lora_dropout: 0 or train without LoRA")


def check_mask(mask: Mapping[str, Any] | None, setup: Setup, opts: TrainingOptions,
               what: str = "mask") -> None:
    """A mask must name changeable parameters with matching shapes; LoRA needs merged."""
    if mask is None:
        return
    if setup.lora_cfg is not None and opts.mask_lora != "merged":
        raise ValueError(f"a {what} cannot apply to LoRA adapter weights; set mask_lora: merged "
                         "(mask the merged kernels) or train without LoRA")
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

MODALITIES = ("both", "multi", "text")


def records(data: UnlearnData, which: str, opts: TrainingOptions, tcfg: TrainConfig,
            modality: str | None = None) -> list[dict]:
    """Training QA of `which` for the options' modality (and few-shot retain size)."""
    mod = modality or opts.modality
    if mod not in MODALITIES:
        raise ValueError(f"unknown modality {mod!r}; use one of {MODALITIES}")
    recs = data.records(which, None if mod == "both" else mod)
    if not recs:
        raise ValueError(f"{which} set has no {mod} training QA")
    if which == "retain" and opts.retain_size == "forget":
        n = len(data.records("forget", None if mod == "both" else mod))
        idx = np.random.default_rng(tcfg.seed + 17).permutation(len(recs))[:n]
        recs = [recs[int(i)] for i in sorted(idx)]
    return recs


def stream(data: UnlearnData, recs: list[dict], tcfg: TrainConfig, epoch: int, salt: int = 0):
    """Batches of `recs` for one epoch (reshuffled per epoch and per `salt`)."""
    return data.dataset(recs, seed=tcfg.seed + 7919 * salt + epoch, batch_size=tcfg.batch_size)


def paired(data: UnlearnData, forget: list[dict], retain: list[dict], tcfg: TrainConfig,
           epoch: int):
    """`{"forget": batch, "retain": batch}` per forget batch (random retain batches)."""
    return paired_dataset(stream(data, forget, tcfg, epoch, 0),
                          stream(data, retain, tcfg, epoch, 1), seed=tcfg.seed + epoch)


# ----------------------------------------------------------------------------- training

def flagged(batch: dict, key: str, value: float) -> dict:
    """`batch` with a per-row flag `key` (so one compiled step can serve two phases)."""
    rows = batch["input_ids"].shape[0]
    return same_rows(batch, {**batch, key: np.full((rows,), value, np.float32)})


def fit_method(setup: Setup, tcfg: TrainConfig, losses: Mapping[str, LossFn],
          schedule: Callable[[int], Iterable[tuple[str, dict]]], steps_per_epoch: int, *,
          frozen_extra: Mapping[str, Any] | None = None, update_mask: dict | None = None,
          desc: str = "unlearn", grad_mask: Callable | None = None) -> MethodResult:
    """`driver.fit` over `schedule(epoch)` -> (phase, batch), as a `MethodResult` (merged
    params, the LoRA adapter when LoRA was used, per-step losses and phases)."""
    res = fit(setup, tcfg, losses, schedule, steps_per_epoch=steps_per_epoch,
              frozen_extra=frozen_extra, update_mask=update_mask, desc=desc,
              grad_mask=grad_mask)
    report = {**res.report, "history": res.history}
    return MethodResult(res.params, report, lora=res.lora,
                        lora_config=setup.lora_cfg if res.lora is not None else None)


# ----------------------------------------------------------------------------- gradient runs

class GradientRun:
    """One gradient method's run: the trainable split, the optional `mask`, and the forward
    passes of the policy and the reference inside the jitted step (`ga`, `grad_diff`,
    `kl_min`, `ga_klr`, `npo`, `idk`)."""

    def __init__(self, model, opts: TrainingOptions, tcfg: TrainConfig):
        self.setup = make_setup(model, tcfg)
        self.opts, self.tcfg = opts, tcfg
        self.mask = load_mask(opts.mask)
        check_mask_lora(opts, self.setup, self.mask is not None)
        check_mask(self.mask, self.setup, opts)
        self.gate_all = self.mask is not None and self.setup.lora_cfg is not None

    def policy_logits(self, params: dict, frozen: dict, batch: dict) -> jax.Array:
        """Logits of the parameters being trained (gated by the mask under LoRA)."""
        full = self.setup.policy(params, frozen["base"], frozen.get(DROPOUT_KEY))
        if self.gate_all:
            full = gate(full, frozen["mask"])
        return self._logits(full, batch)

    def ref_logits(self, frozen: dict, batch: dict) -> jax.Array:
        """Logits of the reference (the starting model, or `frozen["ref_full"]`), no gradient."""
        if "ref_full" in frozen:
            full = frozen["ref_full"]
        else:
            full = self.setup.reference(frozen["base"], frozen["ref"])
        return jax.lax.stop_gradient(self._logits(full, batch))

    def _logits(self, full: dict, batch: dict) -> jax.Array:
        m = self.setup.model
        return logits_of(m.graphdef, full, batch, dtype=m.compute_dtype, remat=self.tcfg.remat)

    def records(self, data: UnlearnData, which: str) -> list[dict]:
        return records(data, which, self.opts, self.tcfg)

    def frozen_extra(self, with_ref: bool = False) -> dict:
        extra: dict[str, Any] = {}
        if with_ref:
            extra["ref"] = self.setup.reference_part()
        if self.gate_all:
            extra["mask"] = self.mask
        return extra

    def update_mask(self) -> dict | None:
        return None if self.gate_all else self.mask

    def run(self, losses: Mapping[str, LossFn],
            schedule: Callable[[int], Iterable[tuple[str, dict]]], steps_per_epoch: int, *,
            with_ref: bool = False, frozen_extra: dict | None = None,
            desc: str = "unlearn") -> MethodResult:
        """`fit_method` with the reference / mask inputs; the mask joins the result."""
        extra = {**self.frozen_extra(with_ref), **(frozen_extra or {})}
        result = fit_method(self.setup, self.tcfg, losses, schedule, steps_per_epoch,
                            frozen_extra=extra, update_mask=self.update_mask(), desc=desc)
        if self.mask is not None:
            result.param_masks["mask"] = self.mask
        return result


def no_retain(opts: TrainingOptions, name: str) -> None:
    """A method that reads no retain data refuses `retain_size`."""
    if opts.retain_size != "all":
        raise ValueError(f"{name} reads no retain data, so method.options.retain_size has no "
                         "effect; leave it at all")


def forget_only(run: GradientRun, data: UnlearnData, loss: LossFn, desc: str,
                **run_kw) -> MethodResult:
    """Train `loss` on forget batches (phase `forget`)."""
    forget = run.records(data, "forget")
    n = len(stream(data, forget, run.tcfg, 0))
    schedule = lambda e: (("forget", b) for b in stream(data, forget, run.tcfg, e))
    return run.run({"forget": loss}, schedule, n, desc=desc, **run_kw)


def paired_run(run: GradientRun, data: UnlearnData, loss: LossFn, desc: str, *,
               forget: list[dict] | None = None, **run_kw) -> MethodResult:
    """Train `loss` on `{"forget", "retain"}` batch pairs (phase `pair`); `forget` replaces
    the forget records (IDK's refusals)."""
    forget = run.records(data, "forget") if forget is None else forget
    retain = run.records(data, "retain")
    n = len(paired(data, forget, retain, run.tcfg, 0))
    schedule = lambda e: (("pair", b) for b in paired(data, forget, retain, run.tcfg, e))
    return run.run({"pair": loss}, schedule, n, desc=desc, **run_kw)


# ----------------------------------------------------------------------------- sequences

def run_sequential(name: str, model, data: UnlearnData, forget_sets: Sequence[Sequence[Any]],
                   overrides: dict | None = None, *, train: TrainConfig | Mapping | None = None,
                   after_each: Callable[[int, Any, dict], None] | None = None):
    """Unlearn `forget_sets` one after another (PULSE sustainability) with one model value.

    The retain set stays `data.retain`. `after_each(i, model, report)` runs after every part
    (e.g. an evaluation). Returns (final model, list of reports)."""
    reports = []
    for i, part in enumerate(forget_sets):
        step_data = dataclasses.replace(data, forget=list(part))
        result = run_method(name, model, step_data, overrides, train=train)
        model = result.model(model)
        report = {**result.report, "part": i}
        reports.append(report)
        if after_each is not None:
            after_each(i, model, report)
    return model, reports
