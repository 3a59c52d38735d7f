"""Scene specifications of the shapes world: a background and one or two objects.

A background is a palette colour name (the original world) or a Pattern, Texture or Photo (backgrounds.py).
An object may carry continuous jitter (offset, scale, rotation) that captions do not state; without it, it sits
exactly on its grid cell at its nominal size, as in the original world.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

from .backgrounds import Background, Pattern, Photo, Texture, colors_of
from .palette import COLORS

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond")
SIZES = ("small", "big")
# 3x3 grid, row-major; the phrase is what captions say.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

# Combinations never shown in training, to measure compositional generalization apart from memorization.
HELD_OUT_PAIRS = frozenset({("star", "blue"), ("heart", "yellow"), ("diamond", "green")})
HELD_OUT_BACKGROUND = "purple"
MAX_OFFSET = 0.05  # jitter bounds (offset: fraction of the image side; rotation: degrees), narrow enough that
# two objects two cells apart never touch and sizes stay apart (small * 1.15 < big * 0.85)
SCALE_RANGE = (0.85, 1.15)
MAX_ANGLE = 30.0


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str = "big"
    position: str = "center"
    dx: float = 0.0  # offset from the grid cell's centre, fraction of the image side
    dy: float = 0.0
    scale: float = 1.0  # times the nominal radius of `size`
    angle: float = 0.0  # rotation in degrees, counter-clockwise

    def __post_init__(self):
        for value, allowed, what in ((self.shape, SHAPES, "shape"), (self.color, COLORS, "colour"),
                                     (self.size, SIZES, "size"), (self.position, POSITIONS, "position")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")
        if max(abs(self.dx), abs(self.dy)) > MAX_OFFSET:
            raise ValueError(f"object offset must be within +-{MAX_OFFSET} of the image side")
        if not SCALE_RANGE[0] <= self.scale <= SCALE_RANGE[1]:
            raise ValueError(f"object scale must be in {SCALE_RANGE}")
        if abs(self.angle) > MAX_ANGLE:
            raise ValueError(f"object rotation must be within +-{MAX_ANGLE} degrees")


@dataclass(frozen=True)
class Scene:
    background: Background
    objects: tuple[Obj, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if isinstance(self.background, str):
            if self.background not in COLORS:
                raise ValueError(f"unknown background colour {self.background!r}")
        elif not isinstance(self.background, (Pattern, Texture, Photo)):
            raise ValueError(f"a background is a colour name, Pattern, Texture or Photo, not {self.background!r}")
        if not 1 <= len(self.objects) <= 2:
            raise ValueError("a scene holds one or two objects")
        if any(o.color in colors_of(self.background) for o in self.objects):
            raise ValueError("an object cannot have a colour of the background")
        if len(self.objects) == 2 and not positions_apart(*self.objects):
            raise ValueError("two objects must not overlap")

    def replace_object(self, index: int, **changes) -> "Scene":
        objs = list(self.objects)
        objs[index] = replace(objs[index], **changes)
        return Scene(self.background, tuple(objs))


def grid_cell(position: str) -> tuple[int, int]:
    """(row, col) of a position phrase in the 3x3 grid."""
    return divmod(POSITIONS.index(position), 3)


def positions_apart(a: Obj, b: Obj) -> bool:
    """Two objects are apart when their grid cells are not neighbours (so big shapes never touch)."""
    (ra, ca), (rb, cb) = grid_cell(a.position), grid_cell(b.position)
    return max(abs(ra - rb), abs(ca - cb)) >= 2


def is_held_out(scene: Scene) -> bool:
    return (HELD_OUT_BACKGROUND in colors_of(scene.background)
            or any((o.shape, o.color) in HELD_OUT_PAIRS for o in scene.objects))


def random_scene(rng: random.Random, n_objects: int | None = None, held_out: bool | None = False) -> Scene:
    """A uniformly random valid scene. held_out: False = training split only, True = held-out only, None = any."""
    while True:
        n = n_objects or rng.choice((1, 1, 2))
        background = rng.choice(list(COLORS))
        objs: list[Obj] = []
        for _ in range(n):
            position = "center" if n == 1 and rng.random() < 0.3 else rng.choice(POSITIONS)
            objs.append(Obj(rng.choice(SHAPES), rng.choice([c for c in COLORS if c != background]),
                            rng.choice(SIZES), position))
        if n == 2 and not positions_apart(*objs):
            continue
        scene = Scene(background, tuple(objs))
        if held_out is None or is_held_out(scene) == held_out:
            return scene
