"""Ground-truth edits of shapes-world scenes: what changes, which pixels change, and the prompt that says so.

Object edits apply to every background (the edited scene keeps the same background pixels, textures and photo
crops included); background colour edits only to solid backgrounds.

Prompt policy: an edit's prompts are the canonical captions (`captions.caption(scene)` with rng=None) of the
scene before and after the edit. They are fully specified, a phrasing seen in training, and differ only in the
edited words (plus an article when the word after it changes), which is what word-swap editing expects.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from .captions import article, caption, describe
from .backgrounds import Photo, Texture, backdrop, colors_of
from .render import object_mask
from .scene import COLORS, SHAPES, SIZES, Scene

OBJECT_KINDS = ("object_color", "object_shape", "object_size")
KINDS = OBJECT_KINDS + ("background_color",)
_ALLOWED = {"object_color": COLORS, "object_shape": SHAPES, "object_size": SIZES, "background_color": COLORS}
_FIELD = {"object_color": "color", "object_shape": "shape", "object_size": "size"}


@dataclass(frozen=True)
class Edit:
    """One attribute change: `kind`, the `value` it takes, and for object edits the `index` of the object."""
    kind: str
    value: str
    index: int = 0  # ignored by background edits

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown edit kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.value not in _ALLOWED[self.kind]:
            raise ValueError(f"{self.value!r} is not a valid value for {self.kind}")
        if self.index < 0:
            raise ValueError("object index must be >= 0")


def _check_applies(scene: Scene, edit: Edit) -> None:
    if edit.kind == "background_color":
        if not isinstance(scene.background, str):
            raise ValueError("background colour edits need a solid background")
        if edit.value == scene.background:
            raise ValueError(f"the background is already {edit.value}")
        return
    if edit.index >= len(scene.objects):
        raise ValueError(f"object index {edit.index} out of range for a scene of {len(scene.objects)} object(s)")
    if getattr(scene.objects[edit.index], _FIELD[edit.kind]) == edit.value:
        raise ValueError(f"object {edit.index} already has {_FIELD[edit.kind]} {edit.value}")


def apply_edit(scene: Scene, edit: Edit) -> Scene:
    """The scene after the edit. ValueError if the edit changes nothing or makes an invalid scene."""
    _check_applies(scene, edit)
    if edit.kind == "background_color":
        return Scene(edit.value, scene.objects)  # Scene rejects a background equal to an object's colour
    return scene.replace_object(edit.index, **{_FIELD[edit.kind]: edit.value})


def edit_mask(scene: Scene, edit: Edit, size: int = 64) -> np.ndarray:
    """Soft mask in [0, 1], shape (size, size): the fraction of each pixel the edit may change.

    Object edits: union of the object's old and new coverage (for shape and size edits, pixels covered by both
    keep their colour). Background edits: the uncovered fraction of each pixel. Where the mask is 0 the renders
    before and after the edit are identical.
    """
    edited = apply_edit(scene, edit)
    if edit.kind == "background_color":
        covered = np.max([object_mask(o, size) for o in scene.objects], axis=0)
        return 1.0 - covered
    return np.maximum(object_mask(scene.objects[edit.index], size), object_mask(edited.objects[edit.index], size))


def source_prompt(scene: Scene) -> str:
    """The prompt describing the unedited scene (its canonical caption)."""
    return caption(scene)


def target_prompt(scene: Scene, edit: Edit) -> str:
    """The prompt describing the edited scene (its canonical caption)."""
    return caption(apply_edit(scene, edit))


def valid_values(scene: Scene, kind: str, index: int = 0) -> list[str]:
    """Every value `kind` can take on this scene that makes a real change and a valid scene (on textures and
    photos, object colours that stand out from the background)."""
    if kind == "background_color":
        if not isinstance(scene.background, str):
            return []
        used = {o.color for o in scene.objects} | {scene.background}
        return [c for c in COLORS if c not in used]
    if kind not in OBJECT_KINDS:
        raise ValueError(f"unknown edit kind {kind!r}")
    obj = scene.objects[index]
    current = getattr(obj, _FIELD[kind])
    if kind != "object_color":
        return [v for v in _ALLOWED[kind] if v != current]
    if isinstance(scene.background, (Texture, Photo)):  # only colours that stand out, as the world draws them
        from .world import contrasting_colors
        return [c for c in contrasting_colors(obj, backdrop(scene.background)) if c != current]
    return [v for v in COLORS if v not in {current, *colors_of(scene.background)}]


def random_edit(scene: Scene, rng: random.Random, kinds: tuple[str, ...] | list[str] | None = None) -> Edit:
    """A uniformly drawn valid edit: kind among `kinds` (default all; background edits only on solid
    backgrounds), then object, then value."""
    kinds = tuple(KINDS if kinds is None else kinds)
    if not kinds:
        raise ValueError("kinds must not be empty")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown edit kind {kind!r}")
    if not isinstance(scene.background, str):
        kinds = tuple(k for k in kinds if k != "background_color")
        if not kinds:
            raise ValueError("background colour edits need a solid background")
    kind = rng.choice(kinds)
    index = 0 if kind == "background_color" else rng.randrange(len(scene.objects))
    values = valid_values(scene, kind, index)
    if not values:  # only on a texture or photo where no other colour stands out
        raise ValueError(f"no {kind} edit of object {index} keeps it visible on this background")
    return Edit(kind, rng.choice(values), index)


def _the(obj_phrase: str) -> str:
    return "the " + obj_phrase.split(" ", 1)[1]  # swap the leading article for "the"


def describe_edit(edit: Edit, scene: Scene) -> str:
    """One line for humans, e.g. "the red circle becomes green"; two-object scenes also name the position."""
    _check_applies(scene, edit)
    if edit.kind == "background_color":
        return f"the {scene.background} background becomes {edit.value}"
    obj = scene.objects[edit.index]
    subject = _the(describe(obj, with_size=edit.kind == "object_size", with_position=len(scene.objects) > 1))
    new = f"{article(edit.value)} {edit.value}" if edit.kind == "object_shape" else edit.value
    return f"{subject} becomes {new}"
