"""Several cooperating processes on this machine (gloo collectives over loopback), started
by `python -m jaxunlearn.launch local --processes 2 --devices 2`, against the same commands
run in this one process: losses, exported parameters, pruning masks and evaluation reports
are equal; parameters are placed by the logical-axis rules on a mesh spanning both
processes; a process that cannot reach its peer, or loses it mid-run, stops non-zero within
`--distributed-timeout`, and the interrupted run resumes (in one process) from the last
complete checkpoint written by the two.

One tiny LLaVA (tests/hf_fixtures.py) and one synthetic benchmark serve the whole module; a
tiny Qwen2.5-VL checks the family whose batches hold the patches of the whole batch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from hf_fixtures import save_tiny_family
from jaxunlearn.cli import main
from jaxunlearn.data.synthetic import SynthConfig, generate_benchmark

ROOT = Path(__file__).resolve().parents[1]
DATA = ["data.synthetic.n_profiles=10", "data.synthetic.n_celebrities=4",
        "data.synthetic.image_size=32", "data.batch_size=4", "data.max_length=256",
        "data.blank_images=true"]
TRAIN = ["train.batch_size=4", "train.progress=false", "train.max_steps=3", "train.lr=1e-3"]
EVAL = ["eval.sets=[forget]", "eval.max_questions=2", "eval.batch_size=4",
        "eval.classification_tokens=2", "eval.generation_tokens=4", "eval.cloze_tokens=4",
        "eval.bucket_size=256", "eval.progress=false",
        "eval.tasks=[classification,generation,cloze]"]


FLAGS = "--xla_backend_optimization_level=0"  # as tests/conftest.py: faster compiles
CACHE: dict[str, str] = {}  # the module's compilation cache (the killed run reuses ft2's)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"),
                                                          os.environ.get("PYTHONPATH", "")]),
            "XLA_FLAGS": FLAGS, **CACHE}


def launch(args: list[str], processes: int = 2, devices: int = 2, timeout: float = 240,
           env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m jaxunlearn.launch local --processes N --devices K -- ARGS`."""
    cmd = [sys.executable, "-m", "jaxunlearn.launch", "local", "--processes", str(processes),
           "--devices", str(devices), "--", *args, "--distributed-timeout", "30"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env={**_env(), **(env or {})}, cwd=ROOT)


def _tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path / "model.safetensors"))


def assert_same_params(got: Path, want: Path) -> None:
    """Per-tensor ||a - b|| <= 1e-5 * max(||b||, 1): relative, with an absolute floor for
    tensors near zero whose exact gradient is zero (the vision k_proj biases: softmax is
    invariant to them), which Adam moves by normalised rounding noise only (~1e-7)."""
    a, b = _tensors(got), _tensors(want)
    assert sorted(a) == sorted(b)
    worst = max((np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1.0), k) for k in b)
    assert worst[0] <= 1e-5, worst


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    CACHE.update(JAX_COMPILATION_CACHE_DIR=str(root / "jax-cache"),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    bench = generate_benchmark(SynthConfig(seed=0, n_profiles=10, n_celebrities=4,
                                           image_size=32))
    base = save_tiny_family("llava", root / "base", bench=bench)
    return {"root": root, "base": base, "bench": bench}


@pytest.fixture(scope="module")
def finetuned(world):
    """`finetune` for 3 steps: 2 processes x 2 devices, 1 process x 4 devices (the default
    mesh data=4 divides the batch of 4: rows really split over the 4 devices) and this
    process (one device: a data=8 mesh does not divide the batch, `driver.fit` computes on
    one device)."""
    root, base = world["root"], world["base"]
    t0 = time.perf_counter()
    two = launch(["finetune", f"model.checkpoint={base}", *DATA, *TRAIN,
                  f"output.dir={root / 'ft2'}"])
    world["seconds_ft2"] = time.perf_counter() - t0
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    four = launch(["finetune", f"model.checkpoint={base}", *DATA, *TRAIN,
                   f"output.dir={root / 'ft4'}"], processes=1, devices=4)
    assert four.returncode == 0, four.stdout[-3000:] + four.stderr[-3000:]
    assert main(["finetune", f"model.checkpoint={base}", *DATA, *TRAIN,
                 f"output.dir={root / 'ft1'}"]) == 0
    return root / "ft2", root / "ft1"


def test_finetune_two_processes_and_four_devices_equal_one(finetuned):
    two, one = finetuned
    four = one.parent / "ft4"
    l2 = json.loads((two / "finetune_report.json").read_text())["losses"]
    l1 = json.loads((one / "finetune_report.json").read_text())["losses"]
    l4 = json.loads((four / "finetune_report.json").read_text())["losses"]
    assert len(l2) == 3
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    np.testing.assert_allclose(l4, l1, rtol=1e-5)
    assert_same_params(two / "model", one / "model")
    assert_same_params(four / "model", one / "model")
    assert_same_params(four / "model", two / "model")
    # process 0 alone wrote the run: one log, no temporary or second output left behind
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 3
    assert not list(two.parent.glob(".ft2*"))


def test_finetune_qwen_two_processes_equal_four_devices(world):
    """Qwen2.5-VL batches hold the patches of the whole batch (and M-RoPE positions, window
    permutations): each of 2 processes decodes the images of its rows only, the patches are
    joined across processes when placed; 3 steps (2 of them multimodal) equal 1 process x 4
    devices. Then `unlearn --method manu` on the result: statistics across the 2 processes,
    each reading half of every batch, give the masks of one process; and `evaluate` (each
    process decoding its rows' images) writes the report of one process."""
    from jaxunlearn import session
    from jaxunlearn.config import load_config
    from jaxunlearn.data.pipeline import make_mixed_dataset, qa_records

    root = world["root"]
    base = save_tiny_family("qwen2_5_vl", root / "qwen", bench=world["bench"])
    args = ["finetune", f"model.checkpoint={base}", *DATA[:-1], *TRAIN]  # no blank_images
    two = launch([*args, f"output.dir={root / 'q2'}"])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    four = launch([*args, f"output.dir={root / 'q4'}"], processes=1, devices=4)
    assert four.returncode == 0, four.stdout[-3000:] + four.stderr[-3000:]
    l2, l4 = (json.loads((root / d / "finetune_report.json").read_text())["losses"]
              for d in ("q2", "q4"))
    assert len(l2) == 3
    np.testing.assert_allclose(l2, l4, rtol=1e-5)
    assert_same_params(root / "q2" / "model", root / "q4" / "model")
    # the steps taken: the first 3 batches of the run's data, images in 2 of them
    cfg = load_config(None, args[1:])
    model = session.load_model(cfg)
    pipe = session.with_batch(session.pipeline_for(model, cfg), 4)
    ds = make_mixed_dataset(qa_records(session.load_benchmark(cfg).profiles, model.family),
                            session.load_tokenizer(cfg, model), pipe)
    assert ["pixel_values" in ds[i] for i in range(3)] == [False, True, True]
    # unlearn on Qwen2.5-VL: MANU's statistics across the 2 processes, rows split, patches
    # joined; the same masks as one process
    un = ["unlearn", "--method", "manu", "--model", str(root / "q4" / "model"), *DATA[:-1]]
    two = launch([*un, f"output.dir={root / 'qm2'}"])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert main([*un, f"output.dir={root / 'qm1'}"]) == 0
    m2, m1 = (np.load(root / d / "neuron_masks.npz") for d in ("qm2", "qm1"))
    assert sorted(m2.files) == sorted(m1.files) and m1.files
    for k in (k for k in m1.files if k.startswith("mask/")):
        np.testing.assert_array_equal(m2[k], m1[k])
    assert_read_share(two.stdout, passes=4)
    # evaluate on Qwen2.5-VL: each process decodes the images of its rows, the patches are
    # joined when placed; the report of one process, every number
    ev = ["evaluate", "--model", str(root / "q4" / "model"), *DATA[:-1], *EVAL[:-1],
          "eval.tasks=[classification,cloze]", "eval.judge_metrics=[]"]
    two = launch([*ev, f"output.dir={root / 'qe2'}"])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert main([*ev, f"output.dir={root / 'qe1'}"]) == 0
    rec2, rec1 = (json.loads((root / d / "report.json").read_text())["records"]
                  for d in ("qe2", "qe1"))
    assert rec1 and rec2 == rec1
    logged = [x for x in two.stdout.splitlines() if "per batch in this process" in x]
    assert logged and all(": rows 2 of 4 per batch" in x for x in logged), logged


def test_unlearn_npo_and_manu_two_processes_equal_one(world, finetuned):
    model = finetuned[1] / "model"
    root = world["root"]
    for method, extra in (("npo", TRAIN), ("manu", [])):
        two = launch(["unlearn", "--method", method, "--model", str(model), *DATA, *extra,
                      f"output.dir={root / (method + '2')}"])
        assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
        assert main(["unlearn", "--method", method, "--model", str(model), *DATA, *extra,
                     f"output.dir={root / (method + '1')}"]) == 0
        assert_same_params(root / (method + "2") / "model", root / (method + "1") / "model")
    r2 = json.loads((root / "npo2" / "unlearn_report.json").read_text())["losses"]
    r1 = json.loads((root / "npo1" / "unlearn_report.json").read_text())["losses"]
    np.testing.assert_allclose(r2, r1, rtol=1e-5)
    m2, m1 = (np.load(root / f"manu{i}" / "neuron_masks.npz") for i in (2, 1))
    assert sorted(m2.files) == sorted(m1.files) and m1.files
    for k in m1.files:  # masks identical; scores (ratios of sums combined across devices)
        if k.startswith("mask/"):  # equal up to the order of floating-point sums
            np.testing.assert_array_equal(m2[k], m1[k])
        else:
            np.testing.assert_allclose(m2[k], m1[k], rtol=1e-4, atol=1e-5 * np.abs(m1[k]).max())
    # each statistics pass (forget / retain x multi / text) read half of every batch in each
    # process: the statistics were computed once, across the processes
    assert_read_share(two.stdout, passes=4)


def assert_read_share(log: str, passes: int, processes: int = 2) -> None:
    """Every process logged `passes` statistics passes, each reading 1/processes of the
    rows of the global batches (`parallel.mesh.RowCount`)."""
    for i in range(processes):
        got = re.findall(rf"^\[{i}\] stats .*: read (\d+) of (\d+) rows .* in process {i} of "
                         rf"{processes}$", log, flags=re.M)
        assert len(got) == passes, log[-3000:]
        assert all(int(r) * processes == int(g) > 0 for r, g in got), got


def statistics(base: str, overrides: list[str]) -> dict[str, np.ndarray]:
    """On the command's mesh: neuron statistics (language and vision), MANU official's
    vision tower statistics, and the empirical Fisher (forget, retain) of the MLP and
    projector weights with its saliency mask, of 2 forget and 2 retain batches of multimodal QA read by
    `UnlearnData.dataset`."""
    from jaxunlearn import config, session
    from jaxunlearn.stats import activations as A
    from jaxunlearn.stats import fisher as F
    from jaxunlearn.stats import linear_outputs as LO

    cfg = config.load_config(None, [f"model.checkpoint={base}", *DATA, *overrides])
    with session.command_mesh(cfg):
        model = session.load_model(cfg)
        data = session.unlearn_data(session.load_benchmark(cfg),
                                    session.load_tokenizer(cfg, model),
                                    session.pipeline_for(model, cfg), cfg)
        forget = data.dataset(data.records("forget", "multi"), shuffle=False)
        retain = data.dataset(data.records("retain", "multi")[:8], shuffle=False)
        assert len(forget) == len(retain) == 2
        out = {f"neurons/{g}/{k}": v for g, s in A.neuron_stats(
            model, forget, progress=False, desc="neurons").items() for k, v in s.items()}
        out.update({f"tower/{n}/{k}": v for n, s in LO.tower_stats(
            model, forget, "vision", progress=False, desc="tower").items()
            for k, v in s.items()})
        # MLP and projector weights (the attention k_proj biases have an exactly-zero
        # gradient: their Fisher is rounding noise, see assert_same_params)
        keys = [k for k in model.params if "mlp" in k or "projector" in k]
        fisher = [F.empirical_fisher(model.graphdef, model.params, ds, keys,
                                     dtype=model.compute_dtype,
                                     logical_axes=model.logical_axes, desc=f"fisher {name}")
                  for name, ds in (("forget", forget), ("retain", retain))]
        out.update({f"fisher/{k}": np.asarray(v) for k, v in fisher[0].mean().items()})
        out.update({f"fisher_r/{k}": np.asarray(v) for k, v in fisher[1].mean().items()})
        out.update({f"mask/{k}": v for k, v in F.saliency_mask(
            fisher[0].mean(), fisher[1].mean()).items()})
    return out


STATS = r"""
import sys
import numpy as np
from jaxunlearn.parallel import distributed
distributed.initialize(30)
import jax
from test_multiprocess import statistics
out = statistics(sys.argv[1], ["mesh.data=2", "mesh.fsdp=2"])
if jax.process_index() == 0:
    np.savez(sys.argv[2], **out)
"""


def test_statistics_across_two_processes_equal_one(world, tmp_path):
    """Neuron statistics, MANU official tower statistics and the Fisher saliency mask on a
    (data=2, fsdp=2) mesh over 2 processes x 2 devices, each process reading half of every
    batch: equal to this process's single-device results (rtol 1e-5, atol 1e-5 x the array's
    largest entry; counts identical; the elementwise Fisher mask identical except where the
    ratio F_f / F_r lies within 1e-4 of the threshold, where rounding decides)."""
    from jaxunlearn.launch import free_port

    port, path = free_port(), tmp_path / "two.npz"
    procs = [subprocess.Popen([sys.executable, "-c", STATS, str(world["base"]), str(path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              cwd=ROOT,
                              env={**_env(), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                   "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
                                   "XLA_FLAGS": f"{FLAGS} --xla_force_host_platform_device_count=2"})
             for i in range(2)]
    want = statistics(str(world["base"]), [])  # meanwhile, in this process (one device)
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-2000:] for o in outs]
    assert_read_share("\n".join(f"[{i}] {line}" for i, o in enumerate(outs)
                                 for line in o.splitlines()), passes=4)
    with np.load(path) as z:
        got = {k: z[k] for k in z.files}
    assert sorted(got) == sorted(want)
    assert any(k.startswith("neurons/vision") for k in want) and any(
        k.startswith("tower/") for k in want)
    for k, v in want.items():
        if k.startswith("mask/"):  # F_f / F_r >= 1: a ratio within rounding of 1 may flip
            name = k.split("/", 1)[1]
            ratio = want[f"fisher/{name}"] / (want[f"fisher_r/{name}"] + 1e-12)
            flipped = got[k] != v
            assert np.all(np.abs(ratio[flipped] - 1.0) <= 1e-4), (k, ratio[flipped])
            assert flipped.sum() <= max(v.size // 1000, 1), k
        elif v.dtype == bool or v.dtype.kind == "i":
            np.testing.assert_array_equal(got[k], v, err_msg=k)
        else:
            # sums of signed terms: tolerance relative to the array's largest entry
            np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-5 * np.abs(v).max(),
                                       err_msg=k)


class _Judge(BaseHTTPRequestHandler):
    """A fake OpenAI-compatible judge on loopback: records every request's item and scores
    it by its length (so that different answers get different scores)."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        item = body["messages"][-1]["content"]
        with self.server.lock:
            self.server.asked.append(item)
        payload = json.dumps({"choices": [{"message": {
            "role": "assistant", "content": f"Score: {1 + len(item) % 10}"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    srv.daemon_threads, srv.lock, srv.asked = True, threading.Lock(), []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def test_evaluate_two_processes_same_report(world, finetuned, judge_server, monkeypatch):
    """`evaluate` (classification by letter and by likelihood, generation + judge, cloze, NLL)
    with 2 processes x 2 devices writes the report of 1 process, every number equal. The work
    is split, not repeated: for every task each process logs that its devices computed 2 of
    the 4 rows of every global batch, and the judge (process 0 alone) is asked once per
    answer, about the same answers as in 1 process."""
    pytest.importorskip("openai")  # the judge client
    model, root = finetuned[1] / "model", world["root"]
    judge = {"JAXUNLEARN_JUDGE_URL": f"http://127.0.0.1:{judge_server.server_address[1]}/v1",
             "JAXUNLEARN_JUDGE_MODEL": "judge-m", "NO_PROXY": "127.0.0.1",
             "no_proxy": "127.0.0.1"}
    t0 = time.perf_counter()
    two = launch(["evaluate", "--model", str(model), *DATA, *EVAL,
                  f"output.dir={root / 'ev2'}"], env=judge)
    world["seconds_ev2"] = time.perf_counter() - t0
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    asked2 = list(judge_server.asked)
    judge_server.asked.clear()
    for k, v in judge.items():
        monkeypatch.setenv(k, v)
    assert main(["evaluate", "--model", str(model), *DATA, *EVAL,
                 f"output.dir={root / 'ev1'}"]) == 0
    rec2 = json.loads((root / "ev2" / "report.json").read_text())["records"]
    rec1 = json.loads((root / "ev1" / "report.json").read_text())["records"]
    assert rec1 and rec2 == rec1
    metrics = {(r["task"], r["metric"]) for r in rec1}
    assert {("classification", "likelihood_accuracy"), ("generation", "rougeL"),
            ("generation", "factuality"), ("cloze", "accuracy"), ("qa", "nll")} <= metrics
    # 2 generation questions x 2 modalities, judged once each, the same answers as 1 process
    assert len(asked2) == 4 and asked2 == judge_server.asked
    logged = [line for line in two.stdout.splitlines() if "per batch in this process" in line]
    for proc in (0, 1):
        for task in ("classification", "likelihood", "generation", "cloze", "nll"):
            mine = [x for x in logged if x.startswith(f"[{proc}] eval {task}: ")]
            assert mine and all(": rows 2 of 4 per batch" in x for x in mine), (proc, task, mine)


def test_protocol_two_processes_same_report(world, finetuned):
    """`protocol smllmun` (the prompting baseline: the model before and after, generation on
    training and understanding QA) with 2 processes x 2 devices writes the report of 1
    process, with every generation split between the processes."""
    model, root = finetuned[1] / "model", world["root"]
    args = ["protocol", "smllmun", "--model", str(model), *DATA, "eval.batch_size=4",
            "eval.bucket_size=256", "eval.progress=false", "eval.generation_tokens=2",
            "method.name=prompting", "protocol.options.max_profiles=1"]
    two = launch([*args, f"output.dir={root / 'pr2'}"])
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    assert main([*args, f"output.dir={root / 'pr1'}"]) == 0
    rec2 = json.loads((root / "pr2" / "report.json").read_text())["records"]
    rec1 = json.loads((root / "pr1" / "report.json").read_text())["records"]
    assert {r["step"] for r in rec1} == {0, 1} and rec2 == rec1
    logged = [x for x in two.stdout.splitlines() if "per batch in this process" in x]
    assert {x[:3] for x in logged} == {"[0]", "[1]"}
    assert all(": rows 2 of 4 per batch" in x for x in logged)
    assert sorted(p.name for p in (root / "pr2").iterdir()) == sorted(
        p.name for p in (root / "pr1").iterdir())


SPECS = r"""
import json, sys
from jaxunlearn.parallel import distributed, mesh as M
distributed.initialize(30)
import jax
from jaxunlearn.checkpoint.hf import load_pretrained
model = load_pretrained(sys.argv[1])
mesh = M.mesh_from_config({"data": 2, "fsdp": 2})
placed = M.place_params(model.params, model.logical_axes, mesh)
if jax.process_index() == 0:
    print(json.dumps({k: [a if a is None or isinstance(a, str) else list(a) for a in v.sharding.spec]
                      for k, v in placed.items()}))
"""


def test_mesh_over_two_processes_follows_the_rules(world):
    """data=2 x fsdp=2 over 2 processes x 2 devices: every parameter's spec is the rules'."""
    from jaxunlearn.checkpoint.hf import load_pretrained
    from jaxunlearn.parallel.mesh import logical_to_spec, make_mesh

    from jaxunlearn.launch import free_port

    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", SPECS, str(world["base"])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**_env(), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                   "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i),
                                   "XLA_FLAGS": f"{FLAGS} --xla_force_host_platform_device_count=2"})
             for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    got = json.loads(outs[0][0].strip().splitlines()[-1])
    model = load_pretrained(world["base"])
    import jax

    mesh = make_mesh({"data": 2, "fsdp": 2}, jax.devices()[:4])
    want = {k: [a for a in logical_to_spec(model.logical_axes[k], v.shape, mesh)]
            for k, v in model.params.items()}
    assert got == want
    assert any("fsdp" in v for v in got.values())


def test_mismatched_mesh_is_one_error(capsys, world, tmp_path):
    assert main(["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
                 "mesh.data=3", "mesh.fsdp=5", "mesh.tensor=7",
                 f"output.dir={tmp_path / 'x'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data=3, fsdp=5, tensor=7" in err[0] and "8 device" in err[0]
    assert not (tmp_path / "x").exists()


def _cli(args: list[str], pid: int, port: int, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "jaxunlearn.cli", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**_env(), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
             "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(pid),
             "XLA_FLAGS": f"{FLAGS} --xla_force_host_platform_device_count=2", **(env or {})})


def test_missing_peer_is_a_clear_error_within_the_timeout(world, tmp_path):
    from jaxunlearn.launch import free_port

    out = tmp_path / "alone"
    t0 = time.perf_counter()
    p = _cli(["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
              f"output.dir={out}", "--distributed-timeout", "4"], 0, free_port())
    _, err = p.communicate(timeout=120)
    assert p.returncode == 3, err[-2000:]
    assert time.perf_counter() - t0 < 60
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "process 0 of 2" in lines[0] and "within 4 s" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".alone*"))


def test_peer_that_fails_stops_the_other_at_once(world, tmp_path):
    """A host without the data (process 1: `data.dir` missing) stops with its own one-line
    error; process 0, already computing, stops right after it with one line naming process 1
    (`distributed.mark_finished` -> `watch_peers`), not after the timeout."""
    from jaxunlearn.launch import free_port

    port, out = free_port(), tmp_path / "run"
    args = ["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
            f"output.dir={out}", "--distributed-timeout", "60"]
    t0 = time.perf_counter()
    procs = [_cli(args, 0, port), _cli([*args, f"data.dir={tmp_path / 'absent'}"], 1, port)]
    errs = [p.communicate(timeout=240)[1] for p in procs]
    assert procs[1].returncode == 2 and "absent" in errs[1]
    assert procs[0].returncode == 3, errs[0][-2000:]
    assert time.perf_counter() - t0 < 50  # well before the 60 s timeout
    lines = [x for x in errs[0].splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "process 1 of 2 ended with an error (exit status 2)" in lines[0]
    assert not out.exists()


def test_killed_peer_stops_the_other_and_the_run_resumes(world, finetuned):
    """Process 1 is killed after step 2; process 0 stops within the timeout with one error
    line naming it (`distributed.watch_peers`, exit status 3); the
    same command in one process resumes from the last complete checkpoint of the two and
    ends with the parameters of the uninterrupted run."""
    from jaxunlearn.launch import free_port

    root, port = world["root"], free_port()
    out = root / "killed"
    args = ["finetune", f"model.checkpoint={world['base']}", *DATA, *TRAIN,
            "train.checkpoint_every=1", f"output.dir={out}", "--distributed-timeout", "8"]
    procs = [_cli(args, i, port, {"JAXUNLEARN_TEST_KILL": "step:2@1"}) for i in range(2)]
    t_dead, errs = None, []
    for p in procs[::-1]:
        errs.append(p.communicate(timeout=240)[1])
        t_dead = t_dead or time.perf_counter()
    assert procs[1].returncode == -9
    assert procs[0].returncode == 3, errs[1][-2000:]
    assert time.perf_counter() - t_dead < 60
    lines = [x for x in errs[1].splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "process 1 of 2 stopped responding" in lines[0], errs[1][-2000:]
    assert not out.exists()
    partial = root / ".killed.partial"
    assert (partial / "checkpoints").is_dir()
    assert main(args[:-2]) == 0
    report = json.loads((out / "finetune_report.json").read_text())
    assert report["resumed_at"] >= 1 and report["steps"] == 3
    assert_same_params(out / "model", finetuned[1] / "model")



def test_optimizer_state_and_reference_follow_the_parameters(world):
    """On a (data=2, fsdp=2, tensor=2) mesh of this process's 8 devices, the driver's
    placement puts AdamW's moments and the reference parameters on the parameters' specs."""
    import jax

    from jaxunlearn.checkpoint.hf import load_pretrained
    from jaxunlearn.parallel.mesh import logical_to_spec, make_mesh, place_params
    from jaxunlearn.train.state import init_state, make_optimizer

    model = load_pretrained(world["base"])
    mesh = make_mesh({"data": 2, "fsdp": 2, "tensor": 2}, jax.devices()[:8])
    params = place_params(model.params, model.logical_axes, mesh)
    frozen = place_params({"base": model.params, "ref": dict(model.params)},
                          model.logical_axes, mesh)
    state = init_state(params, make_optimizer(1e-3), mesh=mesh)
    mu = state.opt_state[0].mu
    sharded = 0
    for k, v in model.params.items():
        want = logical_to_spec(model.logical_axes[k], v.shape, mesh)
        assert params[k].sharding.spec == want == frozen["ref"][k].sharding.spec
        assert mu[k].sharding.spec == want, k
        sharded += any(a is not None for a in want)
    assert sharded > 0
