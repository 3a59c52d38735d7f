"""Captions of shapes-world scenes in several phrasings."""
from __future__ import annotations

import random

from .scene import COLORS, POSITIONS, SHAPES, SIZES, Obj, Scene

_POSITION_PHRASE = {p: (f"in the {p} corner" if " " in p else ("in the center" if p == "center" else f"at the {p}"))
                    for p in POSITIONS}
_PREFIXES = ("", "a photo of ", "an image of ", "a picture of ")
_BG = ("on {a} {bg} background", "on {bg}", "with {a} {bg} background")


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def describe(obj: Obj, with_size: bool, with_position: bool) -> str:
    words = ([obj.size] if with_size else []) + [obj.color, obj.shape]
    words.insert(0, article(words[0]))
    if with_position:
        words.append(_POSITION_PHRASE[obj.position])
    return " ".join(words)


def caption(scene: Scene, rng: random.Random | None = None) -> str:
    """A random phrasing of a scene; rng=None gives the canonical, fully specified caption."""
    if rng is None:
        parts = [describe(o, True, True) for o in scene.objects]
        return " and ".join(parts) + f" on {article(scene.background)} {scene.background} background"
    with_size, with_position = rng.random() < 0.6, rng.random() < 0.6
    parts = [describe(o, with_size, with_position) for o in scene.objects]
    body = " and ".join(parts)
    return rng.choice(_PREFIXES) + body + " " + rng.choice(_BG).format(a=article(scene.background), bg=scene.background)


def stated_attributes(text: str) -> set[str]:
    """Attribute words a caption states (for checking generated images against their captions)."""
    words = set(text.replace(",", " ").split())
    return words & (set(SHAPES) | set(COLORS) | set(SIZES))


def vocabulary() -> list[str]:
    """Every word the caption generator can emit, plus words a user is likely to type in an edit prompt."""
    words = set()
    for text in list(_PREFIXES) + list(_BG) + list(_POSITION_PHRASE.values()):
        words.update(text.replace("{bg}", "").replace("{a}", "").split())
    words.update(SHAPES, COLORS, SIZES, ("a", "and", "an", "the", "of", "photo", "image", "picture", "background"))
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)
