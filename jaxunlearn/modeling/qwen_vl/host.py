"""Qwen-VL host-side (numpy) input preparation: M-RoPE position ids, the patch sequence padded
to a bucket and the vision index arrays (see the package docstring)."""

from __future__ import annotations

import numpy as np

from jaxunlearn.modeling.qwen_vl.config import QwenVisionConfig, QwenVLConfig

MIN_PATCH_BUCKET = 64


def patch_bucket(n: int, unit: int) -> int:
    """Padded patch count: the next power of two >= max(n, MIN_PATCH_BUCKET), rounded up to a
    multiple of `unit` (merge_size**2). Powers of two keep the number of compiled shapes
    logarithmic in the largest image."""
    b = MIN_PATCH_BUCKET
    while b < n:
        b *= 2
    return -(-b // unit) * unit


def _rotary_ids(t: int, h: int, w: int, m: int) -> np.ndarray:
    """(row, col) ids of one image's patches in the processor's merge-block order, [t*h*w, 2]."""
    hh, ww = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    shape = (h // m, m, w // m, m)
    hh = hh.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    ww = ww.reshape(shape).transpose(0, 2, 1, 3).reshape(-1)
    return np.tile(np.stack([hh, ww], axis=-1), (t, 1))


def _window_order(t: int, lh: int, lw: int, ws: int) -> tuple[np.ndarray, np.ndarray]:
    """HF `get_vision_window_index` for one image: (merge-unit order, window id per unit)."""
    index = np.arange(t * lh * lw).reshape(t, lh, lw)
    pad_h, pad_w = ws - lh % ws, ws - lw % ws
    nh, nw = (lh + pad_h) // ws, (lw + pad_w) // ws
    padded = np.full((t, lh + pad_h, lw + pad_w), -1, np.int64)
    padded[:, :lh, :lw] = index
    padded = padded.reshape(t, nh, ws, nw, ws).transpose(0, 1, 3, 2, 4)
    padded = padded.reshape(t * nh * nw, ws * ws)
    wid = np.broadcast_to(np.arange(t * nh * nw)[:, None], padded.shape)
    keep = padded.reshape(-1) >= 0
    return padded.reshape(-1)[keep], wid.reshape(-1)[keep]


def vision_host_arrays(c: QwenVisionConfig, grid_thw: np.ndarray,
                       n_pad: int) -> dict[str, np.ndarray]:
    """Rotary ids, segment / window ids and window permutations for a padded patch sequence
    holding the images of `grid_thw` [n_images, 3] (see the module docstring)."""
    m, unit = c.spatial_merge_size, c.merge_unit
    pos, segs, wins, perm_units = [], [], [], []
    seg_base = win_base = unit_base = 0
    for t, h, w in (tuple(int(v) for v in g) for g in grid_thw):
        ids = _rotary_ids(t, h, w, m)
        segs.append(np.repeat(np.arange(t) + seg_base, h * w))
        seg_base += t
        if c.windowed:
            ws = c.window_size // m // c.patch_size
            if ws < 1:
                raise ValueError(f"window_size {c.window_size} is smaller than one merged patch "
                                 f"({m * c.patch_size} px); fix vision_config.window_size")
            order, wid = _window_order(t, h // m, w // m, ws)
            # HF drops empty windows (unique_consecutive): renumber densely
            _, wid = np.unique(wid, return_inverse=True)
            perm_units.append(order + unit_base)
            wins.append(np.repeat(wid + win_base, unit))
            win_base += int(wid.max()) + 1
            ids = ids.reshape(-1, unit, 2)[order].reshape(-1, 2)
        unit_base += t * h * w // unit
        pos.append(ids)
    n = unit_base * unit
    pad = n_pad - n
    out = {
        "vision_pos": np.concatenate(pos + [np.zeros((pad, 2), np.int64)]).astype(np.int32),
        "vision_segments": np.concatenate(segs + [np.full(pad, -1)]).astype(np.int32),
    }
    if c.windowed:
        units = np.concatenate(perm_units + [np.arange(unit_base, n_pad // unit)])
        out["vision_windows"] = np.concatenate(wins + [np.full(pad, -1)]).astype(np.int32)
        out["vision_perm"] = (units[:, None] * unit + np.arange(unit)).reshape(-1).astype(np.int32)
        out["vision_unperm"] = np.argsort(units).astype(np.int32)
    return out


def rope_index(input_ids: np.ndarray, attention_mask: np.ndarray, grid_thw: np.ndarray | None,
               image_token_id: int, merge: int) -> np.ndarray:
    """HF `get_rope_index` for images: M-RoPE position ids [3, B, T] (int32).

    Real tokens (mask 1) are numbered left to right; text advances all three axes by one per
    token; an image of grid (t, h, w) spans t*h*w/merge**2 tokens with (t, row, col) offsets
    from the running position, after which the position advances by max(h, w) / merge.
    Padding gets 0. Images are taken from `grid_thw` in batch order."""
    b, t = input_ids.shape
    grids = [] if grid_thw is None else [tuple(int(v) for v in g) for g in grid_thw]
    pos = np.zeros((3, b, t), np.int64)
    gi = 0
    for row in range(b):
        valid = np.nonzero(attention_mask[row])[0]
        toks = input_ids[row, valid]
        out = np.zeros((3, len(valid)), np.int64)
        i = cur = 0
        while i < len(toks):
            if toks[i] == image_token_id:
                if gi >= len(grids):
                    n_tok = int((input_ids[attention_mask.astype(bool)] == image_token_id).sum())
                    raise ValueError(f"input_ids hold more image tokens ({n_tok}) than the "
                                     f"{len(grids)} image(s) in image_grid_thw provide")
                gt, gh, gw = grids[gi]
                lh, lw = gh // merge, gw // merge
                n = gt * lh * lw
                run = toks[i:i + n]
                if len(run) < n or not np.all(run == image_token_id):
                    got = int(np.argmin(np.append(run == image_token_id, False)))
                    raise ValueError(f"image {gi} has grid {list(grids[gi])} = {n} tokens but row "
                                     f"{row} holds {got} consecutive image tokens there; "
                                     "image_grid_thw does not match input_ids")
                tt, hh, ww = np.meshgrid(np.arange(gt), np.arange(lh), np.arange(lw),
                                         indexing="ij")
                out[:, i:i + n] = np.stack([tt.ravel(), hh.ravel(), ww.ravel()]) + cur
                cur += max(gh, gw) // merge
                i += n
                gi += 1
            else:
                j = i
                while j < len(toks) and toks[j] != image_token_id:
                    j += 1
                out[:, i:j] = np.arange(j - i) + cur
                cur += j - i
                i = j
        pos[:, row, valid] = out
    if gi != len(grids):
        raise ValueError(f"image_grid_thw lists {len(grids)} image(s) but input_ids hold image "
                         f"tokens for {gi}; image_grid_thw does not match input_ids")
    return pos.astype(np.int32)


def _check_grid(c: QwenVisionConfig, grid: np.ndarray, n_rows: int) -> None:
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"image_grid_thw must be [n_images, 3], got shape {grid.shape}")
    m = c.spatial_merge_size
    for k, (t, h, w) in enumerate(grid.tolist()):
        if min(t, h, w) < 1 or h < m or w < m:
            raise ValueError(f"image {k} grid {[t, h, w]} is too small: the vision tower needs at "
                             f"least {m}x{m} patches of {c.patch_size} px per image")
        if h % m or w % m:
            raise ValueError(f"image {k} grid {[t, h, w]}: height and width in patches must be "
                             f"multiples of spatial_merge_size {m}")
    expected = int(np.prod(grid, axis=1).sum())
    if expected != n_rows:
        raise ValueError(f"pixel_values has {n_rows} patches but image_grid_thw {grid.tolist()} "
                         f"describes {expected}; image_grid_thw does not match pixel_values")


def host_prepare(config: QwenVLConfig, raw: dict) -> dict:
    """Host-side preparation (numpy) of HF-processor inputs; see the module docstring.

    Consumes `image_grid_thw` (and ignores `mm_token_type_ids`); returns input_ids,
    attention_mask, padded pixel_values, position_ids [3, B, T] and the vision index arrays.
    An optional `patch_slots` (int) pads the patches to at least that many (then to the
    bucket), so batches with fewer images keep the shape of full ones."""
    raw = dict(raw)
    if raw.get("pixel_values_videos") is not None or raw.get("video_grid_thw") is not None:
        raise ValueError("Qwen-VL video inputs are not supported by jaxunlearn; pass images")
    raw.pop("mm_token_type_ids", None)
    slots = int(raw.pop("patch_slots", None) or 0)
    grid = raw.pop("image_grid_thw", None)
    ids = np.asarray(raw["input_ids"])
    mask = np.asarray(raw["attention_mask"])
    pix = raw.get("pixel_values")
    c = config.vision
    n_img_tok = int((ids[mask.astype(bool)] == config.image_token_id).sum())
    if pix is None:
        if grid is not None and len(np.asarray(grid)):
            raise ValueError("image_grid_thw given without pixel_values")
        if n_img_tok:
            raise ValueError(f"input_ids hold {n_img_tok} image tokens but no pixel_values "
                             "were given")
        raw["position_ids"] = rope_index(ids, mask, None, config.image_token_id,
                                         c.spatial_merge_size)
        return raw
    if grid is None:
        raise ValueError("Qwen-VL pixel_values need image_grid_thw (the processor returns both)")
    pix = np.asarray(pix)
    grid = np.asarray(grid).astype(np.int64).reshape(-1, 3) if np.size(grid) else \
        np.zeros((0, 3), np.int64)
    if pix.ndim != 2 or pix.shape[1] != c.patch_dim:
        raise ValueError(f"pixel_values must be [patches, {c.patch_dim}] (channels x "
                         f"temporal_patch_size x patch_size^2), got {pix.shape}; use the Qwen2-VL "
                         "image processor")
    _check_grid(c, grid, pix.shape[0])
    n_features = int((np.prod(grid, axis=1) // c.merge_unit).sum())
    if n_features != n_img_tok:
        raise ValueError(f"input_ids hold {n_img_tok} image tokens but image_grid_thw gives "
                         f"{n_features} image features; image_grid_thw does not match input_ids")
    raw["position_ids"] = rope_index(ids, mask, grid, config.image_token_id, c.spatial_merge_size)
    n_pad = patch_bucket(max(pix.shape[0], slots), c.merge_unit)
    padded = np.zeros((n_pad, pix.shape[1]), pix.dtype if pix.dtype.kind == "f" else np.float32)
    padded[: pix.shape[0]] = pix
    raw["pixel_values"] = padded
    raw.update(vision_host_arrays(c, grid, n_pad))
    return raw
