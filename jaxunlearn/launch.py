"""Multi-host launch plans: the command and environment each host runs.

A launcher starts one process per host with the right variables; the commands do not
call `jax.distributed.initialize()` yet (multi-process runs are a separate issue).
`python -m jaxunlearn.launch KIND --hosts N -- ARGS...` prints the plan (a dry run); the
scripts in `launch/` run it for real.

Kinds: `local` (one process, this machine), `slurm` (one task per node via `srun`; JAX reads
the SLURM variables), `tpu` (every worker of a TPU VM pod via `gcloud ... --worker=all`; JAX
reads the TPU metadata), `k8s` (an indexed Job: pod i gets JAX_PROCESS_ID=i and the address
of pod 0 as coordinator).
"""

from __future__ import annotations

import argparse
import shlex
import sys

KINDS = ("local", "slurm", "tpu", "k8s")


def launch_plan(kind: str, hosts: int, args: list[str], *, coordinator: str = "",
                port: int = 1234, job: str = "jaxunlearn", tpu_name: str = "my-tpu",
                zone: str = "us-central2-b") -> list[dict]:
    """One entry per host: {'host': i, 'env': {...}, 'command': str}."""
    if kind not in KINDS:
        raise ValueError(f"unknown launcher {kind!r}; use one of {', '.join(KINDS)}")
    if hosts < 1:
        raise ValueError("--hosts must be >= 1")
    cli = "jaxunlearn " + " ".join(shlex.quote(a) for a in args)
    plan = []
    for i in range(hosts):
        env: dict[str, str] = {"JAXUNLEARN_MULTIHOST": "1" if hosts > 1 else "0"}
        if kind == "local":
            if hosts != 1:
                raise ValueError("the local launcher runs one process; use slurm, tpu or k8s")
            cmd = cli
        elif kind == "slurm":
            env.update({"SLURM_NTASKS": str(hosts), "SLURM_PROCID": str(i)})
            cmd = f"srun --nodes={hosts} --ntasks-per-node=1 {cli}"
        elif kind == "tpu":
            cmd = (f"gcloud compute tpus tpu-vm ssh {tpu_name} --zone={zone} --worker=all "
                   f"--command={shlex.quote('JAXUNLEARN_MULTIHOST=1 ' + cli)}")
            env["TPU_WORKER_ID"] = str(i)
        else:  # k8s indexed Job
            addr = coordinator or f"{job}-0.{job}:{port}"
            env.update({"JAX_COORDINATOR_ADDRESS": addr, "JAX_NUM_PROCESSES": str(hosts),
                        "JAX_PROCESS_ID": str(i)})
            cmd = cli
        plan.append({"host": i, "env": env, "command": cmd})
    return plan


def format_plan(plan: list[dict]) -> str:
    lines = []
    for entry in plan:
        env = " ".join(f"{k}={v}" for k, v in sorted(entry["env"].items()))
        lines.append(f"host {entry['host']}: {env} {entry['command']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m jaxunlearn.launch",
                                 description="Print the per-host launch plan (dry run).")
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--hosts", type=int, default=1)
    ap.add_argument("--coordinator", default="", help="host:port of process 0 (k8s)")
    ap.add_argument("--job", default="jaxunlearn", help="k8s Job / headless Service name")
    ap.add_argument("--tpu-name", default="my-tpu")
    ap.add_argument("--zone", default="us-central2-b")
    a = ap.parse_args(argv)
    try:
        plan = launch_plan(a.kind, a.hosts, rest, coordinator=a.coordinator, job=a.job,
                           tpu_name=a.tpu_name, zone=a.zone)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
