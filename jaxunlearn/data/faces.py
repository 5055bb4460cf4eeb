"""Procedural face-like identity images for the synthetic benchmark.

A :class:`FaceSpec` holds the identity-bearing features of one person (head shape, skin, hair,
eyes, proportions, accessories, background); :func:`draw_face` renders it, optionally under a
pose (rotation), scale or brightness change, which is how test images are made. Drawing is done
at 4x resolution and reduced with a box filter, so output is smooth and fully deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

BACKGROUNDS = {
    "red": (196, 64, 58), "orange": (226, 140, 48), "yellow": (232, 210, 80),
    "green": (78, 160, 84), "teal": (48, 150, 150), "blue": (62, 104, 200),
    "purple": (128, 78, 170), "pink": (226, 132, 170), "grey": (140, 140, 140),
    "white": (236, 236, 230), "brown": (128, 90, 60), "navy": (36, 48, 104),
}
HAIR = {
    "black": (28, 24, 22), "brown": (104, 64, 36), "blond": (222, 188, 110),
    "red": (168, 66, 36), "grey": (170, 170, 172), "white": (240, 240, 236),
    "blue": (60, 90, 200),
}
SHIRTS = {
    "red": (180, 40, 40), "green": (40, 130, 60), "blue": (40, 70, 170),
    "yellow": (220, 190, 40), "black": (30, 30, 30), "white": (235, 235, 235),
}
SKIN = ((255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 96), (160, 104, 72),
        (118, 76, 52))
EYES = ((60, 40, 26), (44, 90, 160), (60, 130, 80), (110, 110, 120), (20, 20, 20))
HAIR_STYLES = ("short", "long", "bald", "bun", "spiky")
GLASSES = ("none", "round", "square")
HATS = ("none", "cap", "beanie")


@dataclass(frozen=True)
class FaceSpec:
    """Identity-bearing features of one face (indices into the palettes above)."""

    background: str
    hair_colour: str
    shirt: str
    skin: int
    eyes: int
    hair_style: int
    glasses: int
    hat: int
    earrings: bool
    head_w: float
    head_h: float
    eye_gap: float
    eye_size: float
    nose_len: float
    mouth_w: float

    def key(self) -> tuple:
        """The discrete features that must differ between two people."""
        return (self.background, self.hair_colour, self.skin, self.hair_style, self.glasses,
                self.hat)


def random_spec(rng: np.random.Generator) -> FaceSpec:
    """Draw one face specification."""
    def pick(seq):  # noqa: ANN001, ANN202 - tiny local helper
        return seq[int(rng.integers(len(seq)))]

    return FaceSpec(
        background=pick(list(BACKGROUNDS)), hair_colour=pick(list(HAIR)), shirt=pick(list(SHIRTS)),
        skin=int(rng.integers(len(SKIN))), eyes=int(rng.integers(len(EYES))),
        hair_style=int(rng.integers(len(HAIR_STYLES))), glasses=int(rng.integers(len(GLASSES))),
        hat=int(rng.integers(len(HATS))), earrings=bool(rng.integers(2)),
        head_w=round(float(rng.uniform(0.40, 0.54)), 3),
        head_h=round(float(rng.uniform(0.52, 0.64)), 3),
        eye_gap=round(float(rng.uniform(0.26, 0.40)), 3),
        eye_size=round(float(rng.uniform(0.05, 0.09)), 3),
        nose_len=round(float(rng.uniform(0.08, 0.18)), 3),
        mouth_w=round(float(rng.uniform(0.18, 0.36)), 3),
    )


def _box(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [cx - rx, cy - ry, cx + rx, cy + ry]


def _draw(spec: FaceSpec, n: int) -> Image.Image:
    """Render the face on an n x n canvas (no transform)."""
    bg = BACKGROUNDS[spec.background]
    hair = HAIR[spec.hair_colour]
    skin = SKIN[spec.skin]
    img = Image.new("RGB", (n, n), bg)
    d = ImageDraw.Draw(img)
    cx, cy = n * 0.5, n * 0.47
    hw, hh = spec.head_w * n / 2, spec.head_h * n / 2
    d.ellipse(_box(cx, n * 1.02, n * 0.42, n * 0.22), fill=SHIRTS[spec.shirt])  # shoulders
    d.rectangle([cx - hw * 0.35, cy + hh * 0.7, cx + hw * 0.35, n * 0.86], fill=skin)  # neck
    style = HAIR_STYLES[spec.hair_style]
    if style == "long":
        d.rectangle([cx - hw * 1.12, cy - hh * 0.4, cx + hw * 1.12, cy + hh * 1.05], fill=hair)
    d.ellipse(_box(cx, cy, hw, hh), fill=skin)
    for s in (-1, 1):  # ears (+ earrings)
        d.ellipse(_box(cx + s * hw, cy, hw * 0.14, hh * 0.16), fill=skin)
        if spec.earrings:
            d.ellipse(_box(cx + s * hw, cy + hh * 0.2, n * 0.018, n * 0.018), fill=(250, 210, 40))
    if style in ("short", "long", "bun"):
        d.chord(_box(cx, cy - hh * 0.12, hw * 1.04, hh * 0.95), 180, 360, fill=hair)
    elif style == "spiky":
        for k in range(7):
            x = cx - hw + (k + 0.5) * 2 * hw / 7
            d.polygon([(x - hw * 0.16, cy - hh * 0.55), (x + hw * 0.16, cy - hh * 0.55),
                       (x, cy - hh * 1.25)], fill=hair)
    if style == "bun":
        d.ellipse(_box(cx, cy - hh * 1.05, hw * 0.35, hh * 0.25), fill=hair)
    ey = cy - hh * 0.12
    ex = spec.eye_gap * n / 2
    er = spec.eye_size * n / 2
    for s in (-1, 1):
        d.ellipse(_box(cx + s * ex, ey, er * 1.5, er), fill=(250, 250, 250))
        d.ellipse(_box(cx + s * ex, ey, er * 0.75, er * 0.75), fill=EYES[spec.eyes])
    if GLASSES[spec.glasses] != "none":
        w = max(1, n // 48)
        shape = d.ellipse if GLASSES[spec.glasses] == "round" else d.rectangle
        for s in (-1, 1):
            shape(_box(cx + s * ex, ey, er * 2.2, er * 1.8), outline=(20, 20, 20), width=w)
        d.line([cx - ex + er * 2.2, ey, cx + ex - er * 2.2, ey], fill=(20, 20, 20), width=w)
    nl = spec.nose_len * n
    d.polygon([(cx, ey + er), (cx - n * 0.03, ey + er + nl), (cx + n * 0.03, ey + er + nl)],
              fill=tuple(max(0, c - 40) for c in skin))
    my = ey + er + nl + hh * 0.16
    mw = spec.mouth_w * n / 2
    d.chord(_box(cx, my, mw, hh * 0.1), 0, 180, fill=(170, 50, 60))
    hat = HATS[spec.hat]
    if hat == "cap":
        d.chord(_box(cx, cy - hh * 0.6, hw * 1.02, hh * 0.55), 180, 360, fill=(60, 60, 60))
        d.rectangle([cx, cy - hh * 0.66, cx + hw * 1.5, cy - hh * 0.58], fill=(60, 60, 60))
    elif hat == "beanie":
        d.chord(_box(cx, cy - hh * 0.5, hw * 1.06, hh * 0.75), 180, 360, fill=(200, 60, 150))
        d.ellipse(_box(cx, cy - hh * 1.27, hw * 0.16, hw * 0.16), fill=(240, 240, 240))
    return img


def draw_face(spec: FaceSpec, size: int = 64, angle: float = 0.0, scale: float = 1.0,
              brightness: float = 1.0, supersample: int = 4) -> Image.Image:
    """Render ``spec`` as a ``size`` x ``size`` RGB image under an optional transform.

    ``angle`` rotates (degrees, counter-clockwise) about the centre, ``scale`` zooms about the
    centre (>1 enlarges), ``brightness`` multiplies intensities (PIL ``ImageEnhance``).
    """
    n = size * supersample
    img = _draw(spec, n)
    bg = BACKGROUNDS[spec.background]
    if scale != 1.0:
        m = max(1, int(round(n * scale)))
        scaled = img.resize((m, m), Image.Resampling.BICUBIC)
        canvas = Image.new("RGB", (n, n), bg)
        off = (n - m) // 2
        canvas.paste(scaled, (off, off))
        img = canvas
    if angle != 0.0:
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=bg)
    img = img.resize((size, size), Image.Resampling.BOX)
    if brightness != 1.0:
        img = ImageEnhance.Brightness(img).enhance(brightness)
    return img
