"""Launchers: dry runs print the command and environment each host gets."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxunlearn.launch import format_plan, launch_plan

ROOT = Path(__file__).resolve().parents[1]


def test_k8s_plan_gives_each_pod_its_id_and_the_coordinator():
    plan = launch_plan("k8s", 3, ["unlearn", "--method", "ga"])
    assert [p["env"]["JAX_PROCESS_ID"] for p in plan] == ["0", "1", "2"]
    assert {p["env"]["JAX_COORDINATOR_ADDRESS"] for p in plan} == {"jaxunlearn-0.jaxunlearn:1234"}
    assert all(p["env"]["JAX_NUM_PROCESSES"] == "3" for p in plan)
    assert plan[0]["command"] == "jaxunlearn unlearn --method ga"


def test_slurm_and_tpu_plans():
    slurm = launch_plan("slurm", 2, ["finetune"])
    assert slurm[1]["command"].startswith("srun --nodes=2 --ntasks-per-node=1 jaxunlearn finetune")
    tpu = launch_plan("tpu", 4, ["demo"], tpu_name="pod", zone="z")
    assert len(tpu) == 4 and "--worker=all" in tpu[0]["command"]
    assert "JAXUNLEARN_MULTIHOST=1 jaxunlearn demo" in tpu[0]["command"]
    assert "host 3:" in format_plan(tpu)


def test_bad_launch_requests():
    with pytest.raises(ValueError, match="unknown launcher 'mpi'"):
        launch_plan("mpi", 2, [])
    with pytest.raises(ValueError, match="--hosts must be >= 1"):
        launch_plan("local", 0, [])


@pytest.mark.parametrize("kind", ["local", "k8s", "slurm", "tpu"])
def test_plans_match_what_the_commands_read(kind):
    """Each host's environment is what `parallel.distributed.cluster_env` turns into its
    process id and count (explicit), or JAX's own cluster detection (SLURM, TPU)."""
    from jaxunlearn.parallel.distributed import cluster_env

    plan = launch_plan(kind, 3, ["finetune"], port=4321)
    seen = [cluster_env(entry["env"]) for entry in plan]
    if kind in ("local", "k8s"):
        assert [s["process_id"] for s in seen] == [0, 1, 2]
        assert {s["num_processes"] for s in seen} == {3}
        assert len({s["coordinator"] for s in seen}) == 1
    else:
        assert all(s == {"auto": True} for s in seen)
    assert cluster_env({}) is None
    assert launch_plan(kind, 1, ["finetune"])[0]["env"].get("JAX_NUM_PROCESSES") in (None, "1")


def test_k8s_job_index_stands_in_for_the_process_id():
    from jaxunlearn.parallel.distributed import DistributedError, cluster_env

    env = {"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_NUM_PROCESSES": "2", "JOB_COMPLETION_INDEX": "1"}
    assert cluster_env(env)["process_id"] == 1
    with pytest.raises(DistributedError, match="outside 0..1"):
        cluster_env({**env, "JAX_PROCESS_ID": "2"})
    with pytest.raises(DistributedError, match="JAX_NUM_PROCESSES"):
        cluster_env({"JAX_COORDINATOR_ADDRESS": "a:1", "JAX_PROCESS_ID": "0"})


@pytest.mark.parametrize("script,env,expect", [
    ("launch/local.sh", {}, "host 0: JAXUNLEARN_MULTIHOST=0 jaxunlearn demo --quick"),
    ("launch/slurm.sbatch", {"NODES": "2"}, "host 1: JAXUNLEARN_MULTIHOST=1 SLURM_NTASKS=2"),
    ("launch/tpu_pod.sh", {"WORKERS": "2"}, "--worker=all"),
])
def test_scripts_dry_run(script, env, expect):
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    out = subprocess.run(["bash", str(ROOT / script), "demo", "--quick"], capture_output=True,
                         text=True, env={**os.environ, "DRY_RUN": "1", **env, "PATH": path},
                         timeout=60, check=True)
    assert expect in out.stdout


def test_local_launcher_stops_all_when_one_fails(tmp_path):
    """`local --processes 2`: process 1 dies right after joining; the launcher stops process
    0 (which would wait for its peer) and exits non-zero, output lines prefixed `[i]`."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "jaxunlearn.launch", "local", "--processes", "2", "--devices", "1",
         "--", "finetune", f"output.dir={tmp_path / 'run'}", "--distributed-timeout", "60"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "JAXUNLEARN_TEST_KILL": "joined@1",
             "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])})
    assert out.returncode != 0
    assert "process 1 exited with status -9; stopping the others" in out.stderr
    assert time.perf_counter() - t0 < 60  # not the 60 s heartbeat: the launcher stopped it
    assert not (tmp_path / "run").exists()
