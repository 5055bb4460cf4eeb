"""The one training driver: `TrainConfig` (the `train:` config section), the trainable split
(`Setup`: a named subset or a LoRA adapter) and `fit`, which every trainer uses (vanilla
fine-tuning, the gradient / distillation unlearning methods, SMFA's fine-tunes, the
relearning attack and the PULSE fine-tunes).

`fit` builds one jitted step per distinct loss (`train.step.make_train_step`: gradient
accumulation, clipping, the update mask; compiled once per process for every run that traces to
the same program, `train.programs.CachedProgram`: the learning rate, schedule lengths and weight
decay are runtime values of the optimizer state), one optimizer and train state shared by all phases,
and runs `batches(epoch)` for `cfg.epochs` epochs (capped at `cfg.max_steps`), with a progress
bar, JSONL metrics, orbax checkpoints and resume.

Loss contract: `loss(trainable, frozen, batch) -> (scalar, aux)` where `frozen` is
`{"base": setup.base, **frozen_extra}` (`setup.policy(trainable, frozen["base"])` is the
full parameter dict).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.checkpoint.atomic import fault_point
from jaxunlearn.train import lora as lora_lib
from jaxunlearn.train import subsets
from jaxunlearn.train.typed import field

SCHEDULES = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Keys of the `train:` config section: the hyperparameters of every command that trains
    (finetune, unlearn with a training method, the relearning attack and PULSE fine-tunes)."""

    lr: float = field(1e-4, "peak learning rate (AdamW; at most 1: larger ones only destroy "
                                     "the model)", above=0, high=1.0)
    schedule: str = field("cosine", "learning-rate decay after warmup", choices=SCHEDULES)
    warmup_steps: int = field(0, "linear warmup steps", low=0)
    weight_decay: float = field(0.0, "AdamW weight decay", low=0)
    adam_eps: float = field(1e-8, "AdamW epsilon (transformers' AdamW: 1e-6)", above=0)
    epochs: int = field(1, "passes over the training data", low=1)
    max_steps: int = field(0, "cap on optimizer steps (0: no cap)", low=0)
    batch_size: int = field(8, "examples per optimizer step", low=1)
    grad_accum: int = field(1, "micro-batches per step (batch_size must be divisible by it)",
                            low=1)
    clip_norm: float | None = field(1.0, "global gradient-norm clip (null: no clipping)",
                                     above=0)
    subset: str = field("all", "trainable parameter subset (LoRA: leave all)",
                        choices=subsets.SUBSETS)
    deeper_half: bool = field(False, "vision_mlp subsets: only the upper half of the layers")
    lora: bool = field(False, "train a LoRA adapter instead of the subset")
    lora_rank: int = field(16, "LoRA rank", low=1)
    lora_alpha: float = field(32.0, "LoRA alpha (scale = alpha / rank)", above=0)
    lora_dropout: float = field(0.0, "LoRA dropout on the adapter's input path while "
                                "training (peft's lora_dropout; never at evaluation)", low=0,
                                high=0.99)
    lora_init: str = field("fan_in", "LoRA A init: fan_in (N(0, 1/d_in)) or gaussian (peft's "
                           "N(0, 1/r^2))", choices=lora_lib.INITS)
    lora_targets: str = field(lora_lib.DEFAULT_TARGETS, "regex over the kernels LoRA adapts")
    seed: int = field(0, "seed of data order, LoRA init and retain subsampling")
    remat: bool | None = field(None, "rematerialise activations (less memory, more compute); "
                               "null: the model preset's `remat`")
    checkpoint_every: int = field(0, "save an orbax checkpoint every N steps (0: at the end); "
                                 "finetune only (other commands refuse it)", low=0)
    keep_checkpoints: int = field(3, "checkpoints kept; finetune only", low=1)
    progress: bool = field(True, "show a progress bar")

    def lora_config(self) -> lora_lib.LoraConfig | None:
        if not self.lora:
            return None
        return lora_lib.LoraConfig(self.lora_rank, self.lora_alpha, self.lora_dropout,
                                   self.lora_targets, self.lora_init)


DROPOUT_KEY = "dropout_key"  # frozen[...] entry: the step's PRNG key (LoRA dropout)


def full_params(trainable: dict, frozen: dict, lora_cfg: lora_lib.LoraConfig | None,
                key: jax.Array | None = None) -> dict:
    """Rebuild the model's parameter dict from the trainable and frozen parts; with a
    training step's `key` and LoRA dropout, the adapters stay unmerged (`lora.train_params`)."""
    if lora_cfg is not None:
        return lora_lib.train_params(frozen, trainable, lora_cfg, key)
    return {**frozen, **trainable}


def count_params(tree: dict) -> int:
    return int(sum(jnp.size(v) for v in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- the split

@dataclasses.dataclass
class Setup:
    """The trainable / frozen split of a model for one run."""

    model: Any
    trainable: dict
    base: dict               # frozen parameters (the whole model under LoRA)
    lora_cfg: lora_lib.LoraConfig | None

    def policy(self, params: dict, base: dict, key: jax.Array | None = None) -> dict:
        """Full parameters; pass the step's `frozen.get(DROPOUT_KEY)` as `key` in a loss."""
        return full_params(params, base, self.lora_cfg, key)

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


def make_setup(model, cfg: TrainConfig) -> Setup:
    """Split `model.params` by the config's subset or LoRA (clear errors for bad names).

    A vision layer that the model never reads (after `vision_feature_layer`) cannot be
    trained: training it is an error naming the layer."""
    params = model.params
    lcfg = cfg.lora_config()
    if lcfg is not None:
        if cfg.subset not in ("all", "llm"):
            raise ValueError("train.lora: LoRA targets are chosen by train.lora_targets; leave "
                             f"train.subset at all (got {cfg.subset!r})")
        trainable = lora_lib.init_lora(params, lcfg, cfg.seed)
        if not trainable:
            raise ValueError(f"train.lora_targets {cfg.lora_targets!r} matches no kernel of "
                             "this model")
        return Setup(model, trainable, dict(params), lcfg)
    mask = subsets.trainable_mask(params, cfg.subset, cfg.deeper_half)
    _check_live(model, [k for k, v in mask.items() if v], cfg)
    trainable, frozen = subsets.split_params(params, mask)
    return Setup(model, trainable, frozen, None)


def _check_live(model, trainable: list[str], cfg: TrainConfig) -> None:
    """Refuse a trainable subset whose parameters provably receive no gradient."""
    dead = subsets.dead_vision_layers(model)
    if not dead:
        return
    layers = {_vision_layer(k) for k in trainable} - {None}
    hit = sorted(layers & set(dead))
    if hit and not layers - set(dead):
        raise ValueError(
            f"train.subset {cfg.subset!r} (deeper_half={cfg.deeper_half}) trains vision "
            f"layer(s) {hit} only, which the model never reads (vision_feature_layer="
            f"{_feature_layer(model)} skips them), so they receive no gradient; train earlier "
            "layers too (train.deeper_half: false) or another subset")


def _feature_layer(model):
    return (getattr(model, "hf_config", None) or {}).get("vision_feature_layer")


def _vision_layer(path: str) -> int | None:
    import re

    m = re.match(r"^(?:vision_tower\.(?:vision_model\.)?encoder\.layers|visual\.blocks)\.(\d+)\.",
                 path)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------- fitting

LossFn = Callable[[dict, dict, dict], tuple[jax.Array, dict]]


@dataclasses.dataclass
class FitResult:
    params: dict            # full model params (LoRA merged when LoRA was used)
    lora: dict | None       # the adapter alone (host arrays), or None
    history: list[dict]     # one record per step
    report: dict            # steps, losses, phases, seconds, final loss, trainable count


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    total = max(cfg.epochs * steps_per_epoch, 1)
    return min(total, cfg.max_steps) if cfg.max_steps else total


def _resume_log(log_path: str | Path | None, start: int, write: bool = True) -> list[dict]:
    """Records of steps 1..`start` kept in `log_path` (later ones, logged after the last
    checkpoint of an interrupted run, are dropped so a resume never duplicates a step)."""
    if not log_path or not Path(log_path).is_file():
        return []
    kept = []
    for line in Path(log_path).read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= start:
            kept.append(rec)
    kept = list({r["step"]: r for r in kept}.values())
    if not write:
        return kept
    tmp = Path(str(log_path) + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    tmp.replace(log_path)
    return kept


def _global_tokens(batch: Any, placed: Any) -> int:
    """Real tokens of the global batch (this process may hold only its rows of it)."""
    if not isinstance(batch, Mapping) or "attention_mask" not in batch:
        return 0
    from jaxunlearn.parallel.mesh import batch_rows

    local, rows = batch_rows(batch)
    if local == rows:
        return int(np.sum(batch["attention_mask"]))
    return int(jax.device_get(jnp.sum(placed["attention_mask"])))


def _check_finite_metrics(metrics: dict, step: int, epoch: int, index: int, phase: str,
                          cfg: TrainConfig, ckpt) -> None:
    """Stop on a non-finite loss or gradient norm (the scalars already on the host)."""
    bad = {k: metrics[k] for k in ("loss", "grad_norm") if k in metrics
           and not np.isfinite(metrics[k])}
    if not bad:
        return
    kept = ckpt.latest_step() if ckpt is not None else None
    where = (f"the last good checkpoint (step {kept}) is kept in {ckpt.directory}"
             if kept is not None else "no checkpoint was written")
    shown = ", ".join(f"{k} = {v}" for k, v in bad.items())
    raise ValueError(f"training diverged at step {step} (epoch {epoch}, batch {index}, phase "
                     f"{phase}): {shown}; stopped, {where}, nothing exported; lower train.lr "
                     f"(now {cfg.lr:g}) or check the tokenizer and data")


CHECKPOINT_KEYS = ("checkpoint_every", "keep_checkpoints")


def check_checkpointing(cfg: TrainConfig, *, checkpointed: bool, where: str = "train") -> None:
    """A run without checkpoints refuses the checkpoint keys (`jaxunlearn finetune` is the
    command that checkpoints and resumes; unlearning methods, the protocols' fine-tunes and
    the demo do not), so a set key is never silently ignored."""
    if checkpointed:
        return
    default = TrainConfig()
    for key in CHECKPOINT_KEYS:
        if getattr(cfg, key) != getattr(default, key):
            raise ValueError(f"{where}.{key} is read only by runs that write checkpoints "
                             "(jaxunlearn finetune); this run writes none, so remove "
                             f"{where}.{key}")


def fit(setup: Setup, cfg: TrainConfig, losses: LossFn | Mapping[str, LossFn],
        batches: Callable[[int], Iterable], *, steps_per_epoch: int,
        frozen_extra: Mapping[str, Any] | None = None, update_mask: dict | None = None,
        log_path: str | Path | None = None, checkpoint_dir: str | Path | None = None,
        desc: str = "train", on_epoch: Callable[[int, dict], None] | None = None,
        grad_mask: Callable[[Any, dict], dict] | None = None) -> FitResult:
    """Train `setup.trainable` for `cfg.epochs` epochs of `batches(epoch)`.

    `losses`: one loss (then `batches` yields batches) or `{phase: loss}` (then it yields
    `(phase, batch)`; phases mapping to the same function share one compiled step).
    `update_mask` ({trainable path: bool array}) keeps masked-out entries bit-identical.
    `grad_mask(frozen, batch)` masks the gradient after clipping (`step.make_train_step`).
    With `checkpoint_dir` the run saves orbax checkpoints (every `cfg.checkpoint_every` steps
    and at the end) and resumes from the latest one, skipping the steps already taken.
    `on_epoch(epoch, full_params)` runs after every epoch (e.g. an evaluation)."""
    from tqdm.auto import tqdm

    from jaxunlearn.checkpoint.state import Checkpointer
    from jaxunlearn.parallel import distributed
    from jaxunlearn.parallel import mesh as mesh_lib
    from jaxunlearn.train.state import init_state, make_optimizer
    from jaxunlearn.train.programs import CachedProgram
    from jaxunlearn.train.step import make_train_step

    check_checkpointing(cfg, checkpointed=checkpoint_dir is not None)
    phased = isinstance(losses, Mapping)
    loss_map = dict(losses) if phased else {"train": losses}
    if update_mask is not None:
        missing = sorted(set(update_mask) - set(setup.trainable))
        if missing:
            raise ValueError(f"update mask names parameters that are not trainable here: "
                             f"{missing[:3]}; a mask under LoRA needs mask_lora: merged")
    total = total_steps(cfg, steps_per_epoch)
    dropout = setup.lora_cfg is not None and setup.lora_cfg.dropout > 0
    opt = make_optimizer(cfg.lr, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps,
                         total_steps=total, weight_decay=cfg.weight_decay, eps=cfg.adam_eps)
    mesh = mesh_lib.current()  # the command's mesh: parameters by the logical-axis rules
    if (mesh is not None and jax.process_count() == 1 and mesh.shape["fsdp"] == 1
            and mesh.shape["tensor"] == 1 and cfg.batch_size % mesh.shape["data"]):
        mesh = None  # a batch replicated on a data-only mesh: one device computes the same
    trainable = setup.trainable
    frozen = {"base": setup.base, **(frozen_extra or {})}
    if mesh is not None:
        trainable = mesh_lib.place_params(trainable, setup.model.logical_axes, mesh)
        frozen = mesh_lib.place_params(frozen, setup.model.logical_axes, mesh)
    state = init_state(trainable, opt, cfg.seed, mesh=mesh)
    compiled: dict[int, Callable] = {}
    for fn in loss_map.values():
        if id(fn) not in compiled:
            compiled[id(fn)] = CachedProgram(  # shared by runs that trace to one program
                make_train_step(fn, opt, grad_accum=cfg.grad_accum, clip_norm=cfg.clip_norm,
                                update_mask=update_mask,
                                rng_key=DROPOUT_KEY if dropout else None,
                                grad_mask=grad_mask), "train_step")
    steps = {name: compiled[id(fn)] for name, fn in loss_map.items()}
    ckpt = (Checkpointer(checkpoint_dir, keep=cfg.keep_checkpoints, every=cfg.checkpoint_every)
            if checkpoint_dir else None)
    start = 0
    if ckpt is not None and ckpt.latest_step() is not None:
        state, _ = ckpt.restore(state)
        start = int(jax.device_get(state.step))
    primary = distributed.is_primary()  # process 0 alone writes the log
    history = _resume_log(log_path, start, write=primary)  # steps before `start`
    log = open(log_path, "a") if log_path and primary else None
    bar = tqdm(total=total, desc=f"{desc} ({total} steps)", disable=not cfg.progress,
               unit="step", initial=start, mininterval=0.1 if sys.stderr.isatty() else 5.0)
    t_start = time.perf_counter()
    step = 0
    try:
        for epoch in range(cfg.epochs):
            for index, item in enumerate(batches(epoch)):
                if step >= total:
                    break
                phase, batch = item if phased else ("train", item)
                if step < start:  # taken before the interruption
                    step += 1
                    continue
                t0 = time.perf_counter()
                placed = batch if mesh is None else mesh_lib.place_batch(batch, mesh)
                state, metrics = steps[phase](state, frozen, placed)
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                dt = time.perf_counter() - t0
                step += 1
                _check_finite_metrics(metrics, step, epoch, index, phase, cfg, ckpt)
                tokens = _global_tokens(batch, placed)
                rec = {"step": step, "epoch": epoch, "phase": phase, **metrics, "seconds": dt,
                       "tokens_per_s": tokens / dt if dt > 0 else 0.0}
                history.append(rec)
                if log:
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                bar.set_postfix(loss=f"{metrics.get('loss', float('nan')):.4f}", phase=phase)
                bar.update(1)
                if ckpt is not None and ckpt.should_save(step):
                    ckpt.save(step, state)
                fault_point(f"step:{step}")  # tests: a kill in the middle of training
            if on_epoch is not None and step > start:
                on_epoch(epoch, distributed.local_arrays(
                    setup.policy(dict(state.params), frozen["base"])))
            if step >= total:
                break
        bar.close()
        if ckpt is not None and step > start and ckpt.latest_step() != step:
            ckpt.save(step, state)
    finally:
        if log:
            log.close()
        if ckpt is not None:
            ckpt.close()
    seconds = time.perf_counter() - t_start
    # several processes: whole host copies, for single-process code (export, evaluation)
    params = distributed.local_arrays(setup.policy(dict(state.params), frozen["base"]))
    losses_ = [h.get("loss") for h in history]
    report = {"steps": step, "total_steps": total, "resumed_at": start,
              "losses": losses_, "phases": [h["phase"] for h in history],
              "seconds": seconds, "first_loss": losses_[0] if losses_ else None,
              "final_loss": losses_[-1] if losses_ else None,
              "trainable_params": count_params(state.params)}
    lora = distributed.to_host(dict(state.params)) if setup.lora_cfg is not None else None
    return FitResult(params, lora, history, report)
