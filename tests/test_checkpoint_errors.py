"""Bad checkpoints give one clear error naming the file / key and what was expected."""

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import jaxunlearn as ju
from hf_fixtures import save_hf_llava, tiny_llava_config


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava")
    save_hf_llava(tiny_llava_config(text_layers=1, vision_layers=2), path)
    return path


def _copy(src, dst, edit_tensors=None, edit_config=None):
    dst.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    tensors = load_file(str(src / "model.safetensors"))
    if edit_tensors:
        edit_tensors(tensors)
    save_file(tensors, str(dst / "model.safetensors"))
    return dst


def test_missing_config(tmp_path):
    with pytest.raises(ju.CheckpointError, match=r"config.json not found.*Hugging Face model"):
        ju.load_pretrained(tmp_path)


def test_not_a_directory(tmp_path):
    with pytest.raises(ju.CheckpointError, match="not a directory"):
        ju.load_pretrained(tmp_path / "nope")


def test_unsupported_model_type(llava_dir, tmp_path):
    bad = _copy(llava_dir, tmp_path / "bad", edit_config=lambda c: c.update(model_type="blip"))
    with pytest.raises(ValueError, match=r"unsupported model_type 'blip' in .*config.json; "
                                         r"supported: .*llava"):
        ju.load_pretrained(bad)


def test_missing_tensor(llava_dir, tmp_path):
    key = "language_model.model.layers.0.mlp.up_proj.weight"
    bad = _copy(llava_dir, tmp_path / "bad", edit_tensors=lambda t: t.pop(key))
    with pytest.raises(ju.CheckpointError, match=rf"missing tensor '{key}'.*expected shape "
                                                 r"\(96, 64\)"):
        ju.load_pretrained(bad)


def test_wrong_shape(llava_dir, tmp_path):
    key = "multi_modal_projector.linear_1.weight"
    bad = _copy(llava_dir, tmp_path / "bad",
                edit_tensors=lambda t: t.update({key: np.zeros((64, 7), np.float32)}))
    with pytest.raises(ju.CheckpointError, match=rf"model.safetensors: tensor '{key}' has shape "
                                                 r"\(64, 7\) but the config expects \(64, 32\)"):
        ju.load_pretrained(bad)


def test_unexpected_tensor(llava_dir, tmp_path):
    bad = _copy(llava_dir, tmp_path / "bad",
                edit_tensors=lambda t: t.update({"language_model.model.extra.weight":
                                                 np.zeros(3, np.float32)}))
    with pytest.raises(ju.CheckpointError, match="unexpected tensor"):
        ju.load_pretrained(bad)


def test_unknown_vision_tower(llava_dir, tmp_path):
    def edit(c):
        c["vision_config"]["model_type"] = "siglip_vision_model"
    bad = _copy(llava_dir, tmp_path / "bad", edit_config=edit)
    with pytest.raises(ValueError, match="vision_config.model_type 'siglip_vision_model'"):
        ju.load_pretrained(bad)


def test_bf16_checkpoint_loads(llava_dir, tmp_path):
    """bfloat16 safetensors (numpy has no bf16) load and cast to the requested dtype."""
    import torch
    from safetensors.torch import load_file as tload
    from safetensors.torch import save_file as tsave

    dst = tmp_path / "bf16"
    dst.mkdir()
    (dst / "config.json").write_text((llava_dir / "config.json").read_text())
    src = tload(str(llava_dir / "model.safetensors"))
    tensors = {k: v.to(torch.bfloat16) for k, v in src.items()}
    tsave(tensors, str(dst / "model.safetensors"))
    model = ju.load_pretrained(dst, dtype="float32")
    ref = ju.load_pretrained(llava_dir)
    key = "language_model.layers.0.mlp.up_proj.kernel"
    assert model.params[key].dtype == np.float32
    np.testing.assert_allclose(np.asarray(model.params[key]), np.asarray(ref.params[key]),
                               rtol=1e-2, atol=1e-3)
    assert ju.load_pretrained(dst, dtype="bfloat16").params[key].dtype.name == "bfloat16"


def test_failed_export_leaves_nothing_behind(llava_dir, tmp_path, monkeypatch):
    import jaxunlearn.checkpoint.hf as hf

    model = ju.load_pretrained(llava_dir)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(hf, "_write_shards", boom)
    with pytest.raises(OSError, match="disk full"):
        ju.save_pretrained(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary directory left either
