"""Backgrounds of the shapes world beyond solid colours: named two-colour patterns, procedural textures and crops
of natural photographs. Each is a small frozen spec whose `seed` fixes the details captions do not state (a
pattern's period, angle and phase; a texture's colours; a photo crop's scale, place and flip), so a scene renders
the same pixels every time.

`backdrop(spec, size)` renders any background, a palette colour name included, as a float32 (size, size, 3) array
in 0..255. Patterns are drawn at 4x supersampling and box-filtered, as objects are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .palette import COLORS

SUPERSAMPLE = 4
PATTERNS = ("striped", "checkered", "dotted", "wavy")  # the adjective captions use
TEXTURES = ("noise", "blobs", "gradient", "lighting")


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"a background seed is a non-negative integer, got {seed!r}")


@dataclass(frozen=True)
class Pattern:
    """A named two-colour pattern, e.g. red and white stripes; captions name kind and both colours."""
    kind: str
    color: str
    color2: str
    seed: int = 0

    def __post_init__(self):
        if self.kind not in PATTERNS:
            raise ValueError(f"unknown pattern {self.kind!r}; expected one of {', '.join(PATTERNS)}")
        for c in (self.color, self.color2):
            if c not in COLORS:
                raise ValueError(f"unknown pattern colour {c!r}")
        if self.color == self.color2:
            raise ValueError("a pattern needs two different colours")
        _check_seed(self.seed)

    @property
    def colors(self) -> tuple[str, str]:
        return self.color, self.color2


@dataclass(frozen=True)
class Texture:
    """A procedural texture with free (unnamed) colours; captions do not state it."""
    kind: str
    seed: int = 0

    def __post_init__(self):
        if self.kind not in TEXTURES:
            raise ValueError(f"unknown texture {self.kind!r}; expected one of {', '.join(TEXTURES)}")
        _check_seed(self.seed)


@dataclass(frozen=True)
class Photo:
    """A crop of a natural photograph (a name of `photos.PHOTOS`) at a random scale; captions do not state it."""
    name: str
    seed: int = 0

    def __post_init__(self):
        from .photos import PHOTOS
        if self.name not in PHOTOS:
            raise ValueError(f"unknown photo {self.name!r}")
        _check_seed(self.seed)


Background = str | Pattern | Texture | Photo


def colors_of(background: Background) -> tuple[str, ...]:
    """Palette colours a caption names for this background (an object may not take them)."""
    if isinstance(background, str):
        return (background,)
    if isinstance(background, Pattern):
        return background.colors
    return ()


def _grid(size: int, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) in pixels of the size x size image."""
    n = size * supersample
    c = (np.arange(n) + 0.5) / supersample
    return np.meshgrid(c, c)


def _pattern(spec: Pattern, size: int) -> np.ndarray:
    """Indicator (0 = first colour, 1 = second) at 4x supersampling, box-filtered to size x size coverage."""
    rng = np.random.default_rng(spec.seed)
    period = size * rng.uniform(0.12, 0.22)
    angle = rng.choice([0.0, 0.5 * math.pi, 0.25 * math.pi, -0.25 * math.pi]) + rng.uniform(-0.15, 0.15)
    phase = rng.uniform(0, 1, 2) * period
    x, y = _grid(size, SUPERSAMPLE)
    u = x * math.cos(angle) + y * math.sin(angle) + phase[0]
    v = -x * math.sin(angle) + y * math.cos(angle) + phase[1]
    if spec.kind == "striped":
        on = (u / period) % 1 < 0.5
    elif spec.kind == "checkered":
        on = ((np.floor(u / period) + np.floor(v / period)) % 2) == 1
    elif spec.kind == "dotted":
        du, dv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        on = du * du + dv * dv < rng.uniform(0.25, 0.35) ** 2
    else:  # wavy: stripes whose centre line follows a sine
        on = ((u + 0.25 * period * np.sin(2 * math.pi * v / (2 * period))) / period) % 1 < 0.5
    return on.astype(np.float32).reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise: a cells x cells grid of uniform values, bicubically upsampled to size x size."""
    grid = Image.fromarray(rng.uniform(0, 1, (cells + 1, cells + 1)).astype(np.float32), mode="F")
    return np.asarray(grid.resize((size, size), Image.BICUBIC), np.float32)


def _random_colors(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0, 255, (n, 3)).astype(np.float32)


def _texture(spec: Texture, size: int) -> np.ndarray:
    """Noise: fractal value noise (4 octaves) between two random colours; blobs: soft random ellipses of random
    colours over a random base; gradient: a linear three-stop gradient at a random angle; lighting: a random
    colour under a spotlight falloff and vignette. All get fine grain noise, so no texture is flat."""
    rng = np.random.default_rng(spec.seed)
    x, y = _grid(size)
    x, y = x / size, y / size
    if spec.kind == "noise":
        octaves = [_smooth_noise(rng, size, 2 ** (k + 1)) * 0.5 ** k for k in range(4)]
        t = sum(octaves) / sum(0.5 ** k for k in range(4))
        t = np.clip((t - t.min()) / max(np.ptp(t), 1e-6), 0, 1)[..., None]
        a, b = _random_colors(rng, 2)
        image = a * (1 - t) + b * t
    elif spec.kind == "blobs":
        image = np.broadcast_to(_random_colors(rng, 1)[0], (size, size, 3)).copy()
        for _ in range(rng.integers(3, 9)):
            cx, cy, sx, sy = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.35)
            w = np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))[..., None]
            image = image * (1 - w) + _random_colors(rng, 1)[0] * w
    elif spec.kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        t = (x - 0.5) * math.cos(angle) + (y - 0.5) * math.sin(angle)
        t = ((t - t.min()) / max(np.ptp(t), 1e-6))[..., None]
        a, b, c = _random_colors(rng, 3)
        mid = rng.uniform(0.3, 0.7)
        image = np.where(t < mid, a + (b - a) * t / mid, b + (c - b) * (t - mid) / (1 - mid))
    else:  # lighting
        cx, cy = rng.uniform(-0.2, 1.2, 2)
        falloff = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * rng.uniform(0.15, 0.6) ** 2))
        vignette = 1 - rng.uniform(0.0, 0.5) * ((x - 0.5) ** 2 + (y - 0.5) ** 2) * 2
        light = (rng.uniform(0.15, 0.5) + rng.uniform(0.5, 1.0) * falloff) * vignette
        image = _random_colors(rng, 1)[0] * np.clip(light, 0, 1.6)[..., None]
    image = image + rng.normal(0, rng.uniform(1, 8), (size, size, 1 if rng.random() < 0.5 else 3))
    return np.clip(image, 0, 255).astype(np.float32)


def _photo(spec: Photo, size: int) -> np.ndarray:
    """A square crop whose side is log-uniform between size and the photo's short side (so the crop is between
    1x and many times downscaled), at a uniform place, flipped half the time, resized with Pillow's antialiased
    bicubic filter."""
    from .photos import load_photo
    photo = load_photo(spec.name)
    rng = np.random.default_rng(spec.seed)
    short = min(photo.size)
    side = math.exp(rng.uniform(math.log(min(size, short)), math.log(short)))
    x0, y0 = rng.uniform(0, photo.width - side), rng.uniform(0, photo.height - side)
    crop = photo.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + side, y0 + side))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return np.asarray(crop, np.float32)


def backdrop(background: Background, size: int = 64) -> np.ndarray:
    """The background alone as float32 (size, size, 3) in 0..255."""
    if isinstance(background, str):
        image = np.empty((size, size, 3), np.float32)
        image[:] = COLORS[background]
        return image
    if isinstance(background, Pattern):
        t = _pattern(background, size)[..., None]
        return (np.asarray(COLORS[background.color], np.float32) * (1 - t)
                + np.asarray(COLORS[background.color2], np.float32) * t)
    if isinstance(background, Texture):
        return _texture(background, size)
    if isinstance(background, Photo):
        return _photo(background, size)
    raise ValueError(f"not a background: {background!r}")
