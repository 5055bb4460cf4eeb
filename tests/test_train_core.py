"""Train core: sharded steps equal single-device steps, accumulation, subsets, LoRA, resume,
and a tiny overfit run."""

import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import jaxunlearn as ju
from hf_fixtures import tiny_llava_config
from jaxunlearn.parallel import mesh as mesh_lib
from jaxunlearn.data.answers import answer_index
from jaxunlearn.modeling.model import model_inputs
from jaxunlearn.train import finetune, subsets
from jaxunlearn.train.state import init_state, make_optimizer
from jaxunlearn.train.step import make_train_step, shardings_of


def tiny_model(seed=0):
    cfg = tiny_llava_config(image_size=16, patch=8, vocab=64, image_token=63)
    return ju.model_from_config(cfg.to_dict(), seed=seed)


def qa_batch(model, batch=8, length=16, seed=0, with_image=True):
    rng = np.random.default_rng(seed)
    n_img = model.config.image_seq_length
    ids = rng.integers(3, 60, size=(batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    loss_mask = np.zeros((batch, length), np.float32)
    loss_mask[:, length - 5:] = 1.0
    out = {"input_ids": ids, "attention_mask": mask, "loss_mask": loss_mask}
    if with_image:
        ids[:, 1:1 + n_img] = 63
        out["pixel_values"] = rng.normal(size=(batch, 3, 16, 16)).astype(np.float32)
    return out


def assert_params_close(params, ref, rtol=1e-5):
    """Every tensor equal to rtol in norm (||a-b|| <= rtol*||b||) and elementwise within
    1e-5: reduction order differs between meshes and Adam's normalisation can turn a 1e-9
    gradient difference into a ~1e-6 step on an entry whose gradient is near zero."""
    for k in ref:
        a, b = np.asarray(params[k]), np.asarray(ref[k])
        # 1e-8 per entry absorbs tensors that are pure float noise (k_proj bias: zero grad)
        assert np.linalg.norm(a - b) <= rtol * np.linalg.norm(b) + 1e-8 * np.sqrt(a.size), k
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5, err_msg=k)


def run_steps(model, batch, n_steps, mesh=None, subset="all", grad_accum=1):
    mask = subsets.trainable_mask(model.params, subset)
    params = model.params
    if mesh is not None:
        params = mesh_lib.place_params(params, model.logical_axes, mesh)
    trainable, frozen = subsets.split_params(params, mask)
    # AdamW normalises each update by sqrt(v): for an entry whose gradient is ~1e-8 the
    # update is sign-like, so reduction-order noise (different on each mesh) would flip it.
    # eps=1e-6 keeps such entries linear; everything else is the production optimizer.
    opt = make_optimizer(1e-3, schedule="constant", eps=1e-6, weight_decay=0.01)
    state = init_state(trainable, opt, mesh=mesh)
    loss = finetune.make_nll_loss(model.graphdef)
    kwargs = {}
    if mesh is not None:
        batch = mesh_lib.place_batch(batch, mesh)
        frozen = jax.tree.map(lambda x: x, frozen)
        kwargs = dict(state_shardings=shardings_of(state), frozen_shardings=shardings_of(frozen),
                      batch_shardings=shardings_of(batch))
    step = make_train_step(loss, opt, grad_accum=grad_accum, **kwargs)
    losses = []
    for _ in range(n_steps):
        state, m = step(state, frozen, batch)
        losses.append(float(m["loss"]))
    return {**frozen, **state.params}, losses, state


@pytest.fixture(scope="module")
def single_run():
    model = tiny_model()
    batch = qa_batch(model)
    params, losses, _ = run_steps(model, batch, 3)
    return model, batch, params, losses


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_equals_single_device(single_run, shape):
    assert len(jax.devices()) == 8
    model, batch, ref_params, ref_losses = single_run
    mesh = mesh_lib.make_mesh(dict(zip(mesh_lib.MESH_AXES, shape)))
    params, losses, state = run_steps(model, batch, 3, mesh=mesh)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert_params_close(params, ref_params)
    # placements follow the rules table
    spec = state.params["language_model.layers.0.mlp.up_proj.kernel"].sharding.spec
    fsdp, tensor = mesh.shape["fsdp"], mesh.shape["tensor"]
    assert tuple(spec) == ("fsdp" if fsdp > 1 else None, "tensor" if tensor > 1 else None)
    spec = state.params["language_model.embed_tokens.weight"].sharding.spec
    assert tuple(spec) == ("tensor" if tensor > 1 else None, "fsdp" if fsdp > 1 else None)
    assert tuple(state.params["language_model.norm.weight"].sharding.spec) in ((), (None,))


def test_grad_accumulation_equals_big_batch(single_run):
    model, batch, _, _ = single_run
    batch = dict(batch)
    lm = batch["loss_mask"].copy()
    lm[::2, -5:-3] = 0.0  # unequal answer-token counts per micro-batch
    batch["loss_mask"] = lm
    big, big_losses, _ = run_steps(model, batch, 2)
    acc, acc_losses, _ = run_steps(model, batch, 2, grad_accum=4)
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-5)
    assert_params_close(acc, big)


@pytest.mark.parametrize("subset", ["llm", "projector+llm", "vision_mlp"])
def test_subset_leaves_others_bit_identical(single_run, subset):
    model, batch, _, _ = single_run
    params, _, _ = run_steps(model, batch, 2, subset=subset)
    mask = subsets.trainable_mask(model.params, subset)
    moved = 0
    for k, v in model.params.items():
        same = np.array_equal(np.asarray(params[k]), np.asarray(v))
        if not mask[k]:
            assert same, k
        moved += not same
    assert moved > 0


def test_answer_index_host_layout():
    lm = np.zeros((3, 8), np.float32)
    lm[0, 5:] = 1
    lm[1, [2, 6]] = 1
    idx = answer_index(lm, buckets=(2, 4, 8))
    assert idx.shape == (3, 4) and idx.dtype == np.int32
    np.testing.assert_array_equal(idx, [[4, 5, 6, -1], [1, 5, -1, -1], [-1, -1, -1, -1]])
    assert answer_index(lm).shape == (3, 7)  # default: power of two >= 8, capped at T - 1


def test_answer_positions_loss_equals_full_logits(single_run):
    """Running the head on answer positions only gives the same losses and parameters, on
    one device and on a (2, 2, 2) mesh, with unequal answer counts and left padding."""
    model, batch, _, _ = single_run
    batch = dict(batch)
    lm, mask = batch["loss_mask"].copy(), batch["attention_mask"].copy()
    lm[::2, -5:-3] = 0.0
    mask[1::2, :2] = 0
    batch["loss_mask"], batch["attention_mask"] = lm, mask
    full, full_losses, _ = run_steps(model, batch, 2)
    gathered = {**batch, "answer_index": answer_index(lm, buckets=(8, 16))}
    assert gathered["answer_index"].shape == (8, 8)
    part, part_losses, _ = run_steps(model, gathered, 2)
    np.testing.assert_allclose(part_losses, full_losses, rtol=1e-6)
    assert_params_close(part, full)
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    sharded, sharded_losses, _ = run_steps(model, gathered, 2, mesh=mesh, grad_accum=2)
    np.testing.assert_allclose(sharded_losses, full_losses, rtol=1e-5)
    assert_params_close(sharded, full)


def test_blank_images_train_like_text_only_batches(single_run):
    """A text-only batch with blank images (PipelineConfig.blank_images) trains exactly like
    the same batch without images: same losses, same parameters, vision side untouched."""
    model = single_run[0]
    text = qa_batch(model, seed=3, with_image=False)
    blank = {**text, "pixel_values": np.zeros((8, 3, 16, 16), np.float32)}
    ref, ref_losses, _ = run_steps(model, text, 2)
    got, got_losses, _ = run_steps(model, blank, 2)
    np.testing.assert_allclose(got_losses, ref_losses, rtol=1e-6)
    assert_params_close(got, ref, rtol=1e-6)
    for k in model.params:
        if k.startswith(("vision_tower", "multi_modal_projector")):
            np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(ref[k]), err_msg=k)


def test_bad_subset_errors(single_run):
    model = single_run[0]
    with pytest.raises(ValueError, match="unknown trainable subset 'vision_mlps'"):
        subsets.trainable_mask(model.params, "vision_mlps")
    text_only = {k: v for k, v in model.params.items() if k.startswith("language_model")}
    with pytest.raises(ValueError, match="selects no parameter"):
        subsets.trainable_mask(text_only, "vision")


RESUME_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_train_core import resume_run
    params = resume_run({ckpt!r}, total_steps={total})
    np.savez({out!r}, **{{k.replace('.', '/'): np.asarray(v) for k, v in params.items()}})
""")


def resume_run(ckpt_dir, total_steps, stop_after=None):
    """Train through `finetune` (the driver) with checkpoints every 3 steps; `stop_after`
    simulates an interruption. Returns the final params."""
    model = tiny_model()
    batches = [qa_batch(model, seed=s) for s in range(total_steps)]
    ckpt = {"checkpoint_every": 3, "keep_checkpoints": 2} if ckpt_dir else {}  # (refused
    # without a checkpoint directory; they do not change the training itself)
    cfg = finetune.TrainConfig(lr=1e-3, schedule="cosine", warmup_steps=2, epochs=1,
                               progress=False, **ckpt)
    res = finetune.finetune(model, lambda e: iter(batches[:stop_after or total_steps]), cfg,
                            steps_per_epoch=total_steps, checkpoint_dir=ckpt_dir)
    return res.params


def test_resume_in_new_process_is_identical(tmp_path):
    straight = resume_run(None, total_steps=6)
    ckpt = tmp_path / "ckpt"
    resume_run(str(ckpt), total_steps=6, stop_after=3)
    out = tmp_path / "resumed.npz"
    script = RESUME_SCRIPT.format(tests=str(__import__("pathlib").Path(__file__).parent),
                                  ckpt=str(ckpt), total=6, out=str(out))
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    resumed = np.load(out)
    for k, v in straight.items():
        np.testing.assert_array_equal(resumed[k.replace(".", "/")], np.asarray(v), err_msg=k)


def test_tiny_overfit_reaches_95_percent():
    """8 image+text QA pairs (random token answers tied to the image) are memorised."""
    from jaxunlearn.modeling.model import forward_logits
    from jaxunlearn.objectives.nll import token_accuracy

    model = tiny_model(seed=1)
    batch = qa_batch(model, batch=8, length=20, seed=7)
    cfg = finetune.TrainConfig(lr=3e-3, epochs=150, warmup_steps=10, clip_norm=1.0)
    res = finetune.finetune(model, lambda e: [batch], cfg, steps_per_epoch=1, progress=False)
    logits = forward_logits(model.graphdef, res.params, model_inputs(batch))
    acc = float(token_accuracy(logits, batch))
    assert acc > 0.95, acc
