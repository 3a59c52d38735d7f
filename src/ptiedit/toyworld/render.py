"""Deterministic anti-aliased renderer of shapes-world scenes (4x supersampling, box filter).

Objects are alpha-composited over the background (backgrounds.backdrop) with their soft coverage masks:
pixel = background * (1 - m) + colour * m, so where no object covers a pixel it keeps the background exactly.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from .backgrounds import backdrop
from .scene import COLORS, Obj, Scene, grid_cell

SUPERSAMPLE = 4
RADIUS = {"small": 0.11, "big": 0.18}  # fraction of the image side


def object_center(obj: Obj, size: int) -> tuple[float, float]:
    row, col = grid_cell(obj.position)
    step = size * 0.3
    return size / 2 + (col - 1 + obj.dx / 0.3) * step, size / 2 + (row - 1 + obj.dy / 0.3) * step


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * 0.1 + r * math.sin(a))
                for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    if shape == "star":
        return [(cx + (r if k % 2 == 0 else r * 0.42) * math.cos(-math.pi / 2 + k * math.pi / 5),
                 cy + (r if k % 2 == 0 else r * 0.42) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    if shape == "cross":
        a, b = r * 0.33, r
        pts = [(-a, -b), (a, -b), (a, -a), (b, -a), (b, a), (a, a), (a, b), (-a, b), (-a, a), (-b, a), (-b, -a), (-a, -a)]
        return [(cx + x, cy + y) for x, y in pts]
    if shape == "heart":
        pts = []
        for k in range(64):
            t = 2 * math.pi * k / 64
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((cx + x * r / 16.5, cy - y * r / 16.5 - r * 0.1))
        return pts
    raise ValueError(shape)


def _rotate(points: list[tuple[float, float]], cx: float, cy: float, degrees: float) -> list[tuple[float, float]]:
    """Counter-clockwise on screen (y points down) about (cx, cy)."""
    if not degrees:
        return points
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [(cx + (x - cx) * c + (y - cy) * s, cy - (x - cx) * s + (y - cy) * c) for x, y in points]


def object_mask(obj: Obj, size: int = 64) -> np.ndarray:
    """Soft coverage mask in [0, 1] of one object (with its jitter), shape (size, size)."""
    big = size * SUPERSAMPLE
    cx, cy = object_center(obj, size)
    cx, cy, r = cx * SUPERSAMPLE, cy * SUPERSAMPLE, RADIUS[obj.size] * obj.scale * big
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    if obj.shape in ("circle", "ring"):  # rotation leaves them unchanged
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        if obj.shape == "ring":
            ri = r * 0.55
            draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0)
    else:
        draw.polygon(_rotate(_polygon(obj.shape, cx, cy, r), cx, cy, obj.angle), fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), dtype=np.float32) / 255.0


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Render a scene to an RGB image of size x size pixels."""
    image = backdrop(scene.background, size)
    for obj in scene.objects:
        m = object_mask(obj, size)[..., None]
        image = image * (1 - m) + np.asarray(COLORS[obj.color], np.float32) * m
    return Image.fromarray(np.round(image).clip(0, 255).astype(np.uint8))


def render_with_masks(scene: Scene, size: int = 64) -> tuple[Image.Image, list[np.ndarray]]:
    return render(scene, size), [object_mask(o, size) for o in scene.objects]
