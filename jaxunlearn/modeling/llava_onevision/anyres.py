"""LLaVA-OneVision AnyRes on the host (numpy): crop counts, the per-token gather plan and
`host_prepare`, which packs crops into fixed slots (see the package docstring)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from jaxunlearn.modeling.llava_onevision.config import OneVisionConfig


def select_best_resolution(original_size: Sequence[int],
                           possible_resolutions: Sequence[Sequence[int]]) -> tuple[int, int]:
    """transformers' rule: the (height, width) pinpoint keeping the most of the image's
    resolution, ties broken by the least wasted area."""
    oh, ow = int(original_size[0]), int(original_size[1])
    best, max_eff, min_waste = None, 0, float("inf")
    for h, w in possible_resolutions:
        scale = min(w / ow, h / oh)
        dw, dh = int(ow * scale), int(oh * scale)
        eff = min(dw * dh, ow * oh)
        waste = w * h - eff
        if eff > max_eff or (eff == max_eff and waste < min_waste):
            max_eff, min_waste, best = eff, waste, (h, w)
    return best


def num_crops(config: OneVisionConfig, image_size: Sequence[int], multi_image: bool = False) -> int:
    """Crops the processor makes for an image of (height, width): base + grid (1 if multi-image)."""
    if multi_image:
        return 1
    s = config.vision.image_size
    h, w = select_best_resolution(image_size, config.image_grid_pinpoints)
    return -(-h // s) * -(-w // s) + 1


def unpadded_box(image_size: Sequence[int], height: int, width: int) -> tuple[int, int, int, int]:
    """(row0, row1, col0, col1) kept by `unpad_image` on a [height, width] feature map."""
    oh, ow = int(image_size[0]), int(image_size[1])
    if ow / oh > width / height:
        new_h = int(round(oh * (width / ow), 7))
        pad = (height - new_h) // 2
        return pad, height - pad, 0, width
    new_w = int(round(ow * (height / oh), 7))
    pad = (width - new_w) // 2
    return 0, height, pad, width - pad


def _bilinear_taps(n_in: int, n_out: int) -> list[tuple[int, int, float, float]]:
    """torch `interpolate(mode="bilinear", align_corners=False)` along one axis:
    per output index (i0, i1, w0, w1)."""
    if n_out <= 0:
        return []
    scale = n_in / n_out
    taps = []
    for d in range(n_out):
        src = max(scale * (d + 0.5) - 0.5, 0.0)
        i0 = int(src)
        i1 = i0 + (1 if i0 < n_in - 1 else 0)
        l1 = src - i0
        taps.append((i0, i1, 1.0 - l1, l1))
    return taps


NEWLINE = -1  # sentinel source index: the image_newline row


def image_token_plan(config: OneVisionConfig, image_size: Sequence[int],
                     multi_image: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Where each of an image's tokens comes from, as (src [K, 4], weight [K, 4]).

    `src` indexes the image's own crop features flattened as crop * tokens_per_crop + token
    (crop 0 = base), or is NEWLINE; a token is sum_j weight[:, j] * row(src[:, j]).
    """
    tpc = config.tokens_per_crop
    rows: list[tuple[tuple[int, ...], tuple[float, ...]]] = []
    one = lambda i: ((i, 0, 0, 0), (1.0, 0.0, 0.0, 0.0))  # noqa: E731
    base = [one(t) for t in range(tpc)]
    if multi_image:
        rows = base + [one(NEWLINE)]
    else:
        side = config.vision.grid
        if side * side != tpc:
            raise ValueError("The number of patches is not consistent with the image size: "
                             "vision_feature_select_strategy 'default' drops a patch, so AnyRes "
                             "grids need 'full' (as in transformers)")
        s = config.vision.image_size
        bh, bw = select_best_resolution(image_size, config.image_grid_pinpoints)
        nph, npw = bh // s, bw // s
        height, width = nph * side, npw * side
        r0, r1, c0, c1 = unpadded_box(image_size, height, width)
        h, w = r1 - r0, c1 - c0  # an extreme aspect ratio can leave 0 rows or columns (as HF)

        def src(y: int, x: int) -> int:  # position in the unpadded map -> feature row
            y, x = y + r0, x + c0
            crop = 1 + (y // side) * npw + x // side
            return crop * tpc + (y % side) * side + x % side

        ratio = math.sqrt(h * w / (config.max_num_patches * side ** 2))
        grid_rows = []
        if ratio > 1.1:
            ty = _bilinear_taps(h, int(h // ratio))
            tx = _bilinear_taps(w, int(w // ratio))
            for y0, y1, wy0, wy1 in ty:
                for x0, x1, wx0, wx1 in tx:
                    grid_rows.append(((src(y0, x0), src(y0, x1), src(y1, x0), src(y1, x1)),
                                      (wy0 * wx0, wy0 * wx1, wy1 * wx0, wy1 * wx1)))
                grid_rows.append(one(NEWLINE))
        else:
            for y in range(h):
                grid_rows.extend(one(src(y, x)) for x in range(w))
                grid_rows.append(one(NEWLINE))
        rows = base + grid_rows
    idx = np.asarray([r[0] for r in rows], np.int64)
    weight = np.asarray([r[1] for r in rows], np.float64)
    return idx, weight


def num_image_tokens(config: OneVisionConfig, image_size: Sequence[int],
                     multi_image: bool = False) -> int:
    """Image tokens that stand for one image of (height, width) in input_ids."""
    return len(image_token_plan(config, image_size, multi_image)[0])


def host_prepare(config: OneVisionConfig, raw: dict) -> dict:
    """Host-side (numpy) preparation: pack crops into fixed slots and build the gather plan.

    Reads `pixel_values` ([n_images, crops, 3, S, S] as the HF processor pads them, or the
    crops of all images concatenated [n, 3, S, S]), `image_sizes` [n_images, 2] (height, width),
    optional `batch_num_images` and `crop_slots`. Writes `pixel_values` [slots, 3, S, S],
    `image_index` [B, T, 4] int32 and `image_weight` [B, T, 4] float32.
    """
    raw = dict(raw)
    pix = raw.pop("pixel_values", None)
    sizes = raw.pop("image_sizes", None)
    per_sample = raw.pop("batch_num_images", None)
    slots = raw.pop("crop_slots", None)
    ids = np.asarray(raw["input_ids"])
    is_img = ids == config.image_token_id
    if pix is None:
        if is_img.any():
            raise ValueError(f"input_ids hold {int(is_img.sum())} image tokens but no "
                             "pixel_values were given")
        return raw
    if sizes is None:
        raise ValueError("llava_onevision needs image_sizes [n_images, 2] (height, width) with "
                         "pixel_values, as the OneVision processor returns them")
    pix = np.asarray(pix, np.float32)
    sizes = np.asarray(sizes).reshape(-1, 2).astype(np.int64)
    n_img = len(sizes)
    if per_sample is None:
        multi = [False] * n_img
    else:
        per_sample = [int(n) for n in np.asarray(per_sample).reshape(-1)]
        if sum(per_sample) != n_img:
            raise ValueError(f"batch_num_images {per_sample} sums to {sum(per_sample)} but "
                             f"image_sizes has {n_img} images")
        multi = [n != 1 for n in per_sample for _ in range(n)]
    counts = [num_crops(config, sizes[i], multi[i]) for i in range(n_img)]
    s, ch = config.vision.image_size, config.vision.num_channels
    if pix.ndim == 5:
        if pix.shape[0] != n_img:
            raise ValueError(f"pixel_values holds {pix.shape[0]} images but image_sizes {n_img}")
        for i, c in enumerate(counts):
            if pix.shape[1] < c:
                raise ValueError(f"image {i} of size {tuple(sizes[i])} needs {c} crops but "
                                 f"pixel_values has {pix.shape[1]}; preprocess with the same "
                                 "image_grid_pinpoints as the model config")
        crops = [pix[i, :c] for i, c in enumerate(counts)]
    elif pix.ndim == 4:
        if pix.shape[0] != sum(counts):
            raise ValueError(f"pixel_values holds {pix.shape[0]} crops but image_sizes need "
                             f"{sum(counts)}")
        starts = np.cumsum([0] + counts)
        crops = [pix[starts[i]:starts[i + 1]] for i in range(n_img)]
    else:
        raise ValueError(f"pixel_values of shape {pix.shape}: expected [n_images, crops, C, H, W]")
    if pix.shape[-3:] != (ch, s, s):
        raise ValueError(f"pixel_values crops of shape {pix.shape[-3:]} but the vision tower takes "
                         f"{(ch, s, s)}")
    n_slots = int(slots) if slots is not None else n_img * config.max_crops
    if sum(counts) > n_slots:
        raise ValueError(f"the images need {sum(counts)} crops but crop_slots is {n_slots}")
    packed = np.zeros((n_slots, ch, s, s), np.float32)
    tpc = config.tokens_per_crop
    newline_row = n_slots * tpc
    src_all, w_all, offset = [], [], 0
    for i in range(n_img):
        packed[offset:offset + counts[i]] = crops[i]
        src, w = image_token_plan(config, sizes[i], multi[i])
        src_all.append(np.where(src == NEWLINE, newline_row, src + offset * tpc))
        w_all.append(w)
        offset += counts[i]
    src = np.concatenate(src_all) if src_all else np.zeros((0, 4), np.int64)
    w = np.concatenate(w_all) if w_all else np.zeros((0, 4))
    if int(is_img.sum()) != len(src):
        raise ValueError(f"Image features and image tokens do not match: input_ids hold "
                         f"{int(is_img.sum())} image tokens but the images (sizes "
                         f"{sizes.tolist()}) need {len(src)}; expand each <image> with "
                         "llava_onevision.num_image_tokens")
    index = np.zeros(ids.shape + (4,), np.int32)
    weight = np.zeros(ids.shape + (4,), np.float32)
    index[is_img] = src
    weight[is_img] = w
    raw.update(pixel_values=packed, image_index=index, image_weight=weight)
    return raw
