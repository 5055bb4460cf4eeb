"""Multi-host launch plans: the command and environment each host runs, and the local
launcher of several cooperating processes.

A launcher starts one process per host with the right variables; every command joins the
others first (`jaxunlearn.parallel.distributed.initialize`, reading exactly these variables).
`python -m jaxunlearn.launch KIND --hosts N -- ARGS...` prints the plan (a dry run); the
scripts in `launch/` run it for real.

Kinds: `local` (this machine; `--processes N` starts N cooperating processes with a free
loopback port, each output line prefixed `[i]`, and stops them all when one fails),
`slurm` (one task per node via `srun`; JAX reads the SLURM variables), `tpu` (every worker of
a TPU VM pod via `gcloud ... --worker=all`; JAX reads the TPU metadata), `k8s` (an indexed
Job: pod i gets JAX_PROCESS_ID=i and the address of pod 0 as coordinator).
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

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
            if hosts > 1:
                env.pop("JAXUNLEARN_MULTIHOST")
                env.update({"JAX_COORDINATOR_ADDRESS": coordinator or f"127.0.0.1:{port}",
                            "JAX_NUM_PROCESSES": str(hosts), "JAX_PROCESS_ID": str(i)})
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


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _with_devices(flags: str, devices: int) -> str:
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join([*kept, f"--xla_force_host_platform_device_count={devices}"])


def _pump(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()
    stream.close()


def run_local(processes: int, args: list[str], *, devices: int | None = None,
              grace: float = 5.0) -> int:
    """Run `jaxunlearn ARGS` as `processes` cooperating processes on this machine (loopback
    coordinator on a free port; `devices` fake CPU devices each when given). Output lines are
    prefixed `[i] `. Returns 0 when all succeed; as soon as one fails, the others are stopped
    (SIGTERM, then SIGKILL after `grace` s) and its exit status is returned."""
    if processes < 1:
        raise ValueError("--processes must be >= 1")
    if devices is not None and devices < 1:
        raise ValueError("--devices must be >= 1")
    plan = launch_plan("local", processes, args, port=free_port())
    procs, pumps = [], []
    for entry in plan:
        env = {**os.environ, **entry["env"]}
        if devices is not None:
            env["XLA_FLAGS"] = _with_devices(env.get("XLA_FLAGS", ""), devices)
        p = subprocess.Popen([sys.executable, "-m", "jaxunlearn.cli", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1, start_new_session=True)
        t = threading.Thread(target=_pump, args=(p.stdout, f"[{entry['host']}] ", sys.stdout),
                             daemon=True)
        t.start()
        procs.append(p)
        pumps.append(t)

    def stop_all() -> None:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    status = 0
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, status = failed[0]
                print(f"launch: process {i} exited with status {status}; stopping the others",
                      file=sys.stderr, flush=True)
                stop_all()
                break
            if all(c == 0 for c in codes):
                break
            time.sleep(0.1)
    except KeyboardInterrupt:
        stop_all()
        status = 130
    for t in pumps:
        t.join(timeout=5)
    return status if status >= 0 else 128 - status


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(prog="python -m jaxunlearn.launch",
                                 description="Print the per-host launch plan (dry run).")
    ap.add_argument("kind", choices=KINDS)
    ap.add_argument("--hosts", type=int, default=1, help="hosts of the plan (dry run)")
    ap.add_argument("--processes", type=int, default=0,
                    help="local: start N cooperating processes on this machine and wait")
    ap.add_argument("--devices", type=int, default=None,
                    help="local --processes: fake CPU devices per process (XLA_FLAGS)")
    ap.add_argument("--coordinator", default="", help="host:port of process 0 (k8s)")
    ap.add_argument("--job", default="jaxunlearn", help="k8s Job / headless Service name")
    ap.add_argument("--tpu-name", default="my-tpu")
    ap.add_argument("--zone", default="us-central2-b")
    a = ap.parse_args(argv)
    if a.processes:
        if a.kind != "local":
            print("error: --processes starts local processes; use it with `local`",
                  file=sys.stderr)
            return 2
        try:
            return run_local(a.processes, rest, devices=a.devices)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
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
