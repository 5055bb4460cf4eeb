"""Model presets (YAML in `models/`): architecture, checkpoint path, dtypes, remat (the
default of `train.remat`, and read by `bench --plan`), mesh (the default of `mesh:`).
Loading the model a preset names is `checkpoint.hf.model_from_preset`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml

PRESET_DIR = Path(__file__).resolve().parents[2] / "models"
PRESET_KEYS = {"family", "checkpoint", "random_init", "param_dtype", "compute_dtype", "remat",
               "hf_config", "mesh"}


def preset_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = PRESET_DIR / f"{name_or_path}.yaml"
    if candidate.is_file():
        return candidate
    names = sorted(f.stem for f in PRESET_DIR.glob("*.yaml"))
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; available: {', '.join(names)}"
    raise FileNotFoundError(f"model preset {name_or_path!r} not found{hint}")


def load_preset(name_or_path: str) -> dict[str, Any]:
    """Read and validate a preset; unknown keys are an error naming the closest valid one."""
    path = preset_path(name_or_path)
    data = yaml.safe_load(path.read_text()) or {}
    for key in data:
        if key not in PRESET_KEYS:
            close = difflib.get_close_matches(key, sorted(PRESET_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{path}: unknown preset key {key!r}{hint}")
    mesh = data.get("mesh", {})
    if not isinstance(mesh, dict) or set(mesh) - {"data", "fsdp", "tensor"} \
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in mesh.values()):
        raise ValueError(f"{path}: mesh must map data / fsdp / tensor to ints, got {mesh!r}")
    if "hf_config" not in data and not data.get("checkpoint"):
        raise ValueError(f"{path}: a preset needs hf_config or checkpoint")
    data.setdefault("param_dtype", "float32")
    data.setdefault("compute_dtype", data["param_dtype"])
    data.setdefault("remat", False)
    data["name"] = path.stem
    return data
