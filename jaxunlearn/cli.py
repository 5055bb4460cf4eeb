"""`jaxunlearn <command>`: one entry point for data, training, unlearning, evaluation,
protocols, pruning masks, conversion, reports and benchmarks.

Commands that run an experiment take `--config FILE` plus dotted overrides
(`train.lr=1e-5 method.options.beta=0.4`); unknown keys are rejected with the closest valid
name. Errors print one line (`error: ...`) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


# ----------------------------------------------------------------------------- handlers

def cmd_demo(a) -> int:
    from jaxunlearn.demo.run import demo_setting, run_demo
    from jaxunlearn.parallel import distributed

    if distributed.process_count() > 1:
        raise ValueError("demo runs in one process; run it without a multi-process launcher")
    setting = demo_setting(a.config, a.overrides, quick=a.quick)
    run_demo(a.out, quick=a.quick, fresh=a.fresh, setting=setting)
    return 0


def cmd_data(a) -> int:
    from jaxunlearn.data.cli_data import show_main, synth_main

    if a.data_cmd == "synth":
        from jaxunlearn.parallel import distributed

        for flag, value, least in (("--profiles", a.profiles, 1), ("--celebrities", a.celebrities, 0),
                                   ("--image-size", a.image_size, 8)):
            if value < least:
                raise ValueError(f"data synth {flag} {value}: must be at least {least}")
        if distributed.is_primary():  # several processes: process 0 writes, the others wait
            synth_main(a.out, seed=a.seed, n_profiles=a.profiles, n_celebrities=a.celebrities,
                       image_size=a.image_size, overwrite=a.overwrite)
        distributed.barrier("data synth")
    else:
        show_main(a.dir)
    return 0


def _cfg(a):
    from jaxunlearn.config import load_config

    cfg = load_config(a.config, a.overrides)
    if getattr(a, "overwrite", False):
        cfg["output"]["overwrite"] = True
    if not isinstance(cfg["output"]["overwrite"], bool):
        raise ValueError(f"output.overwrite: expected a bool (true / false), got "
                         f"{cfg['output']['overwrite']!r}")
    return cfg


def cmd_finetune(a) -> int:
    from jaxunlearn.commands import finetune_command

    finetune_command(_cfg(a))
    return 0


def cmd_unlearn(a) -> int:
    from jaxunlearn.commands import unlearn_command

    cfg = _cfg(a)
    if a.method:
        cfg["method"]["name"] = a.method
    unlearn_command(cfg, model_dir=a.model)
    return 0


def cmd_evaluate(a) -> int:
    from jaxunlearn.commands import evaluate_command

    evaluate_command(_cfg(a), model_dir=a.model, name=a.name)
    return 0


def cmd_protocol(a) -> int:
    from jaxunlearn.commands import protocol_command

    protocol_command(a.protocol, _cfg(a), model_dir=a.model)
    return 0


def cmd_prune(a) -> int:
    from jaxunlearn.methods.prune_io import apply_masks_to_checkpoint
    from jaxunlearn.parallel import distributed

    if distributed.is_primary():  # several processes: process 0 writes, the others wait
        out = apply_masks_to_checkpoint(a.masks, a.model, a.out, overwrite=a.overwrite)
        print(f"wrote pruned checkpoint to {out}")
    distributed.barrier("prune apply")
    return 0


def cmd_convert(a) -> int:
    from jaxunlearn.commands import convert_command

    convert_command(a.direction, a.src, a.out, base=a.base, overwrite=a.overwrite)
    return 0


def _sweep_grid(overrides: list[str]) -> tuple[dict, list[str]]:
    """({grid key: [values]}, the other overrides): an override whose value is a YAML list
    and whose key is `train.KEY`, `method.options.KEY` or a bare name is a grid axis."""
    from jaxunlearn.config import parse_override

    grid, rest = {}, []
    for text in overrides:
        keys, value = parse_override(text)
        key = ".".join(keys)
        axis = len(keys) == 1 or keys[0] == "train" or keys[:2] == ["method", "options"]
        if isinstance(value, list) and axis:
            grid[key] = value
        elif len(keys) == 1:
            raise ValueError(f"sweep: {text!r} is neither a grid axis (KEY=[v1,v2,...]) nor a "
                             "dotted override (section.key=value)")
        else:
            rest.append(text)
    return grid, rest


def cmd_sweep(a) -> int:
    from jaxunlearn.commands import sweep_command
    from jaxunlearn.config import load_config

    grid, rest = _sweep_grid(a.overrides or [])
    cfg = load_config(a.config, rest)
    if a.overwrite:
        cfg["output"]["overwrite"] = True
    cfg["method"]["name"] = a.method
    guards = tuple(g for g in a.guards.split(",") if g)
    sweep_command(cfg, grid, {"metric": a.metric, "keep": a.keep, "guards": guards})
    return 0


def cmd_report(a) -> int:
    from jaxunlearn.eval.report import merge_reports

    sweeps = [d for d in a.runs if (Path(d) / "sweep.json").is_file()]
    if sweeps:
        from jaxunlearn.eval.sweep import overlay_frontiers

        if len(sweeps) != len(a.runs):
            other = sorted(set(a.runs) - set(sweeps))
            raise ValueError(f"report: {other[0]} holds no sweep.json; pass only sweep "
                             "directories (frontier overlay) or only run directories")
        if not a.out:
            raise ValueError("report of sweeps: pass --out DIR for the frontier overlay")
        print(overlay_frontiers(sweeps, a.out)["markdown"])
        print(f"frontiers of {len(sweeps)} sweeps written to {a.out}")
        return 0
    if a.out:
        raise ValueError("report --out is for sweep directories (frontier overlay)")
    for d in a.runs:
        if not (Path(d) / "report.json").is_file():
            raise FileNotFoundError(f"{d}/report.json not found; pass run directories")
    print(merge_reports(a.runs))
    return 0


def cmd_bench(a) -> int:
    import os

    if a.plan and "jax" not in sys.modules:  # fake CPU devices for fsdp meshes (CPU only)
        os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    from jaxunlearn.bench.suite import run_bench

    run_bench(plan=a.plan, mesh=a.mesh, only=a.only, batch=a.batch, seq=a.seq)
    return 0


# ----------------------------------------------------------------------------- parser

_OVERWRITE = "replace an existing non-empty output directory (whole, once the new one is complete)"


def _experiment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="experiment YAML (keys: docs/configuration.md)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE + "; = output.overwrite=true")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-5")


def _train_epilog() -> str:
    import dataclasses

    from jaxunlearn.train.driver import TrainConfig

    keys = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
    return f"train: keys (train.KEY=VALUE; docs/configuration.md): {keys}"


def _methods_epilog() -> str:
    import dataclasses

    from jaxunlearn.methods.base import available, get_method

    lines = ["methods and their method.options keys (docs/methods.md, docs/configuration.md):"]
    for name in available():
        spec = get_method(name)
        keys = ", ".join(f.name for f in dataclasses.fields(spec.options)) or "(none)"
        lines.append(f"  {name}{'' if spec.trains else ' (does not train)'}: {keys}")
    return "\n".join(lines)


def _eval_epilog() -> str:
    import dataclasses

    from jaxunlearn.config import EVAL_EXTRA
    from jaxunlearn.eval.tasks import EvalConfig

    keys = ", ".join([*EVAL_EXTRA, *(f.name for f in dataclasses.fields(EvalConfig))])
    return f"eval: keys (eval.KEY=VALUE; docs/configuration.md): {keys}"


def _protocols_epilog() -> str:
    import dataclasses

    from jaxunlearn.eval.protocols import PROTOCOLS

    lines = ["protocols and their protocol.options keys (docs/configuration.md):"]
    for name, spec in PROTOCOLS.items():
        keys = ", ".join(f.name for f in dataclasses.fields(spec.options)) or "(none)"
        shown = f"pulse (scenario: {name.split('/', 1)[1]})" if name.startswith("pulse/") else name
        lines.append(f"  {shown}: {keys}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="jaxunlearn", description=__doc__.split("\n\n")[0])
    ap.add_argument("--debug", action="store_true",
                    help="show the traceback of user errors too (any position)")
    ap.add_argument("--distributed-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                    help="multi-process runs (JAX_COORDINATOR_ADDRESS / SLURM / TPU pod): "
                    "seconds to wait for every process to join, and for a silent peer before "
                    "stopping (any position; default %(default)g)")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="offline end-to-end demo on a tiny LLaVA")
    p.add_argument("--out", default="runs/demo", help="output directory (resumable)")
    p.add_argument("--quick", action="store_true",
                   help="short version: fewer people, epochs and questions (the quick: section)")
    p.add_argument("--fresh", action="store_true", help="ignore finished stages and redo all")
    p.add_argument("--config", help="demo YAML (default: the embedded configs/demo.yaml)")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. vanilla_epochs=10 "
                   "run=[ga,npo] methods.ga.lr=1e-3")
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("data", help="synthetic benchmark and dataset statistics")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    q = dsub.add_parser("synth", help="write the synthetic benchmark (MLLMU-Bench layout)")
    q.add_argument("--out", required=True, help="output directory (written whole, then renamed)")
    q.add_argument("--seed", type=int, default=0, help="seed of names, faces and questions")
    q.add_argument("--profiles", type=int, default=100, help="fictitious people (>= 1)")
    q.add_argument("--celebrities", type=int, default=30, help="celebrity profiles (>= 0)")
    q.add_argument("--image-size", type=int, default=64, help="face image side in pixels (>= 8)")
    q.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    q = dsub.add_parser("show", help="print a benchmark directory's statistics")
    q.add_argument("dir")
    p.set_defaults(fn=cmd_data)

    p = sub.add_parser("finetune", help="vanilla fine-tuning on a benchmark's training QA",
                       epilog=_train_epilog())
    _experiment_args(p)
    p.set_defaults(fn=cmd_finetune)

    p = sub.add_parser("unlearn", help="run one unlearning method",
                       epilog=_train_epilog() + "\n" + _methods_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", help="method name (overrides method.name)")
    p.add_argument("--model", help="HF model directory (overrides model.checkpoint)")
    _experiment_args(p)
    p.set_defaults(fn=cmd_unlearn)

    p = sub.add_parser("evaluate", help="evaluate a model on forget / test / retain / celebrity",
                       epilog=_eval_epilog())
    p.add_argument("--model", help="HF model directory (overrides model.checkpoint)")
    p.add_argument("--name", default="model", help="row name in the report")
    _experiment_args(p)
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("protocol", help="evaluation protocols",
                       epilog=_eval_epilog() + "\n" + _protocols_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    from jaxunlearn.eval.protocols import protocol_names

    p.add_argument("protocol", choices=protocol_names())
    p.add_argument("--model", help="HF model directory (overrides model.checkpoint)")
    _experiment_args(p)
    p.set_defaults(fn=cmd_protocol)

    p = sub.add_parser("prune", help="neuron masks")
    psub = p.add_subparsers(dest="prune_cmd", required=True)
    q = psub.add_parser("apply", help="apply saved masks to a fresh HF checkpoint")
    q.add_argument("--masks", required=True, help="the output directory of `unlearn` with a "
                   "pruning method (manu, selective_pruning) or its neuron_masks.npz")
    q.add_argument("--model", required=True, help="HF model directory")
    q.add_argument("--out", required=True, help="output HF directory")
    q.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    p.set_defaults(fn=cmd_prune)

    p = sub.add_parser("convert", help="convert between HF, Flax (orbax) and PEFT")
    p.add_argument("direction", choices=["hf-to-flax", "flax-to-hf", "peft"])
    p.add_argument("src", help="source directory (peft: a finetune / unlearn output "
                   "directory of a LoRA run, or its lora/ folder)")
    p.add_argument("out", help="output directory")
    p.add_argument("--base", help="base HF model (peft: the model the adapter belongs to)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE)
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("sweep", help="run a method over a grid of settings; frontier and "
                       "selected point", epilog=_train_epilog() + "\n" + _methods_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, help="method name")
    p.add_argument("--metric", default="classification/accuracy",
                   help="task/metric of the frontier and the rule (default "
                   "classification/accuracy)")
    p.add_argument("--keep", type=float, default=0.9, help="rule: guard sets keep at least "
                   "this share of the starting model's score (default 0.9)")
    p.add_argument("--guards", default="retain,celebrity",
                   help="rule: comma list of guard sets (default retain,celebrity)")
    p.add_argument("--config", help="experiment YAML (keys: docs/configuration.md)")
    p.add_argument("--overwrite", action="store_true", help=_OVERWRITE + "; = output.overwrite=true")
    p.add_argument("overrides", nargs="*", help="grid axes KEY=[v1,v2,...] (train.KEY, "
                   "method.options.KEY or a bare name) and dotted overrides")
    p.set_defaults(fn=cmd_sweep)

    p = sub.add_parser("report", help="merge run reports into one comparison table, or "
                       "overlay sweeps' frontiers (--out)")
    p.add_argument("runs", nargs="+", help="run directories with report.json, or sweep "
                   "directories with sweep.json")
    p.add_argument("--out", help="sweeps: directory for frontiers.png / .json / .md")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("bench", help="speed vs HF PyTorch, or memory plans (--plan)")
    p.add_argument("--plan", help="model preset: print compiled per-device train memory")
    p.add_argument("--mesh", default="data=1,fsdp=1,tensor=1;data=1,fsdp=8,tensor=1",
                   help="';'-separated meshes for --plan, e.g. 'data=1,fsdp=8,tensor=1'")
    p.add_argument("--only", default="", help="comma list: generate,train,stats,eval")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=1024)
    p.set_defaults(fn=cmd_bench)
    return ap


DEFAULT_TIMEOUT = 300.0


def _pop_timeout(argv: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], float]:
    """Remove `--distributed-timeout S` (or `=S`) from any position; its value (> 0)."""
    out, value, i = [], None, 0
    while i < len(argv):
        x = argv[i]
        if x == "--distributed-timeout":
            if i + 1 >= len(argv):
                parser.error("--distributed-timeout needs a number of seconds")
            value, i = argv[i + 1], i + 2
            continue
        if x.startswith("--distributed-timeout="):
            value = x.split("=", 1)[1]
        else:
            out.append(x)
        i += 1
    if value is None:
        return out, DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        parser.error(f"--distributed-timeout {value!r}: expected a number of seconds > 0")
    return out, seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; `key=value` overrides may come before or after options
    (argparse alone stops collecting positionals at the first option after them)."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [x for x in argv if x != "--debug"]
    argv, timeout = _pop_timeout(argv, parser)
    args, extra = parser.parse_known_args(argv)
    args.debug = debug
    args.distributed_timeout = timeout
    if extra:
        stray = [x for x in extra if x.startswith("-") or "=" not in x]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.overrides = list(args.overrides or []) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from jaxunlearn.host_memory import reuse_freed_host_memory
    from jaxunlearn.parallel.distributed import DistributedError, initialize, mark_finished

    try:
        reuse_freed_host_memory()  # CPU runs reuse freed host memory (see host_memory.py)
        from jaxunlearn.compile_cache import configure

        configure()  # persistent XLA cache: JAXUNLEARN_COMPILE_CACHE (see compile_cache.py)
        try:  # several processes (launcher environment): join them before any computation
            initialize(args.distributed_timeout)
        except DistributedError as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return 3
        from jaxunlearn.checkpoint.atomic import fault_point

        fault_point("joined")  # tests: a process lost right after joining the others
        rc = int(args.fn(args) or 0)
        mark_finished(rc)
        return rc
    except (ValueError, FileNotFoundError, KeyError, json.JSONDecodeError) as e:
        if args.debug:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        line = " ".join(str(msg).split())  # one line, whatever the message holds
        print(f"error: {line}", file=sys.stderr)
        mark_finished(2)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
