"""Random scenes of the textured world: any background kind, and objects with continuous jitter.

`random_scene` (scene.py) keeps drawing the original world (solid backgrounds, no jitter) from the same random
stream as before; this module draws the new one. On textures and photos an object's colour is drawn only among
palette colours that stand out from the background under it (MIN_CONTRAST), so every object stays visible.
"""
from __future__ import annotations

import random

import numpy as np

from .backgrounds import PATTERNS, TEXTURES, Background, Pattern, Photo, Texture, backdrop, colors_of
from .palette import COLORS
from .photos import EVAL_PHOTOS, TEST_PHOTOS, training_photos
from .render import object_mask
from .scene import (MAX_ANGLE, MAX_OFFSET, POSITIONS, SCALE_RANGE, SHAPES, SIZES, Obj, Scene, is_held_out,
                    positions_apart)

BACKGROUND_KINDS = ("solid", "pattern", "texture", "photo")
PHOTO_SPLITS = ("train", "eval", "test")
MIN_CONTRAST = 80.0  # median RGB distance (0..255 units) between an object's colour and the background it covers
_SEED_RANGE = 2 ** 31


def background_kind(scene: Scene) -> str:
    """Which of BACKGROUND_KINDS the scene's background is."""
    return {str: "solid", Pattern: "pattern", Texture: "texture", Photo: "photo"}[type(scene.background)]


def photo_names(split: str) -> tuple[str, ...]:
    """train: photos available here minus the held-out ones; eval: every held-out photo (pip and wallpapers);
    test: the held-out pip-package photos only (what CI has)."""
    if split not in PHOTO_SPLITS:
        raise ValueError(f"unknown photo split {split!r}; expected one of {', '.join(PHOTO_SPLITS)}")
    if split == "train":
        return training_photos()
    from .photos import available
    return tuple(n for n in (EVAL_PHOTOS if split == "eval" else TEST_PHOTOS) if available(n))


def random_background(rng: random.Random, kind: str, photos: tuple[str, ...] = ()) -> Background:
    if kind == "solid":
        return rng.choice(list(COLORS))
    if kind == "pattern":
        first, second = rng.sample(list(COLORS), 2)
        return Pattern(rng.choice(PATTERNS), first, second, rng.randrange(_SEED_RANGE))
    if kind == "texture":
        return Texture(rng.choice(TEXTURES), rng.randrange(_SEED_RANGE))
    if kind == "photo":
        if not photos:
            raise ValueError("photo backgrounds need at least one photo")
        return Photo(rng.choice(photos), rng.randrange(_SEED_RANGE))
    raise ValueError(f"unknown background kind {kind!r}; expected one of {', '.join(BACKGROUND_KINDS)}")


def random_jitter(rng: random.Random, shape: str) -> dict[str, float]:
    """Uniform offset, scale and rotation within the bounds Obj accepts (circles and rings are not rotated)."""
    return {"dx": rng.uniform(-MAX_OFFSET, MAX_OFFSET), "dy": rng.uniform(-MAX_OFFSET, MAX_OFFSET),
            "scale": rng.uniform(*SCALE_RANGE),
            "angle": 0.0 if shape in ("circle", "ring") else rng.uniform(-MAX_ANGLE, MAX_ANGLE)}


def contrasting_colors(obj: Obj, pixels: np.ndarray) -> list[str]:
    """Palette colours whose median distance to the background pixels (backdrop array) the object would cover is
    at least MIN_CONTRAST."""
    under = pixels[object_mask(obj, pixels.shape[0]) > 0.5]
    return [c for c in COLORS
            if np.median(np.linalg.norm(under - np.asarray(COLORS[c], np.float32), axis=1)) >= MIN_CONTRAST]


def random_world_scene(rng: random.Random, kinds: tuple[str, ...] = BACKGROUND_KINDS, n_objects: int | None = None,
                       held_out: bool | None = False, photos: str = "train", size: int = 64) -> Scene:
    """A random scene: background kind uniform among `kinds`, one object (2/3) or two, each with jitter.

    held_out as random_scene (held-out shape/colour pairs and the purple background); photos names the photo
    split (photo_names). size is the resolution at which contrast is checked (the training resolution).
    """
    if not kinds or any(k not in BACKGROUND_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {', '.join(BACKGROUND_KINDS)}")
    names = photo_names(photos) if "photo" in kinds else ()
    while True:
        background = random_background(rng, rng.choice(kinds), names)
        pixels = None if isinstance(background, (str, Pattern)) else backdrop(background, size)
        n = n_objects or rng.choice((1, 1, 2))
        objs: list[Obj] = []
        for _ in range(n):
            position = "center" if n == 1 and rng.random() < 0.3 else rng.choice(POSITIONS)
            shape = rng.choice(SHAPES)
            draft = Obj(shape, "red", rng.choice(SIZES), position, **random_jitter(rng, shape))
            allowed = ([c for c in COLORS if c not in colors_of(background)] if pixels is None
                       else contrasting_colors(draft, pixels))
            if not allowed:
                break
            objs.append(Obj(shape, rng.choice(allowed), draft.size, position, draft.dx, draft.dy, draft.scale,
                            draft.angle))
        if len(objs) < n or (n == 2 and not positions_apart(*objs)):
            continue
        scene = Scene(background, tuple(objs))
        if held_out is None or is_held_out(scene) == held_out:
            return scene


def photo_crops(n: int, seed: int, split: str = "eval", size: int = 64) -> list[np.ndarray]:
    """n crops (uint8 arrays) of the split's photos at random scales, no objects: the VAE's photo benchmark."""
    rng, names = random.Random(seed), photo_names(split)
    return [np.round(backdrop(Photo(rng.choice(names), rng.randrange(_SEED_RANGE)), size)).astype(np.uint8)
            for _ in range(n)]
