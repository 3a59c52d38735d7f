"""Scene specifications of the shapes world: a solid background and one or two objects."""
from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

SHAPES = ("circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 80, 220),
    "yellow": (240, 215, 40),
    "orange": (245, 135, 25),
    "purple": (140, 60, 190),
    "pink": (250, 150, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "gray": (128, 128, 128),
}
SIZES = ("small", "big")
# 3x3 grid, row-major; the phrase is what captions say.
POSITIONS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

# Combinations never shown in training, to measure compositional generalization apart from memorization.
HELD_OUT_PAIRS = frozenset({("star", "blue"), ("heart", "yellow"), ("diamond", "green")})
HELD_OUT_BACKGROUND = "purple"


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str = "big"
    position: str = "center"

    def __post_init__(self):
        for value, allowed, what in ((self.shape, SHAPES, "shape"), (self.color, COLORS, "colour"),
                                     (self.size, SIZES, "size"), (self.position, POSITIONS, "position")):
            if value not in allowed:
                raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(allowed)}")


@dataclass(frozen=True)
class Scene:
    background: str
    objects: tuple[Obj, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.background not in COLORS:
            raise ValueError(f"unknown background colour {self.background!r}")
        if not 1 <= len(self.objects) <= 2:
            raise ValueError("a scene holds one or two objects")
        if any(o.color == self.background for o in self.objects):
            raise ValueError("an object cannot have the background's colour")
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
    return scene.background == HELD_OUT_BACKGROUND or any((o.shape, o.color) in HELD_OUT_PAIRS for o in scene.objects)


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
