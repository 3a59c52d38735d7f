"""Captions of shapes-world scenes in several phrasings.

A caption states every object's shape and colour (size and position in some phrasings) and the background when
a caption can name it: a solid colour ("on a red background") or a named pattern ("on a red and white striped
background"). Textures and photos go unstated, as do objects' jitter and a pattern's period or angle.
"""
from __future__ import annotations

import random

from .backgrounds import PATTERNS, Background, Pattern
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


def background_words(background: Background) -> str | None:
    """How captions name a background ("red", "red and white striped"), or None when they cannot."""
    if isinstance(background, str):
        return background
    if isinstance(background, Pattern):
        return f"{background.color} and {background.color2} {background.kind}"
    return None


def caption(scene: Scene, rng: random.Random | None = None, drop_background: float = 0.0) -> str:
    """A random phrasing of a scene; rng=None gives the canonical, fully specified caption.

    drop_background: probability that a random phrasing leaves out a nameable background, so that prompts naming
    only the objects ("a green circle") are captions the model has seen. At 0 no random number is drawn for it,
    so the phrasings of a given rng stay those of the original world.
    """
    bg = background_words(scene.background)
    if rng is None:
        body = " and ".join(describe(o, True, True) for o in scene.objects)
        return body if bg is None else body + f" on {article(bg)} {bg} background"
    with_size, with_position = rng.random() < 0.6, rng.random() < 0.6
    body = " and ".join(describe(o, with_size, with_position) for o in scene.objects)
    phrasing = rng.choice(_PREFIXES) + body
    if bg is None or (drop_background and rng.random() < drop_background):
        return phrasing
    return phrasing + " " + rng.choice(_BG).format(a=article(bg), bg=bg)


def stated_attributes(text: str) -> set[str]:
    """Attribute words a caption states (for checking generated images against their captions)."""
    words = set(text.replace(",", " ").split())
    return words & (set(SHAPES) | set(COLORS) | set(SIZES))


def vocabulary() -> list[str]:
    """Every word the caption generator can emit, plus words a user is likely to type in an edit prompt."""
    words = set()
    for text in list(_PREFIXES) + list(_BG) + list(_POSITION_PHRASE.values()):
        words.update(text.replace("{bg}", "").replace("{a}", "").split())
    words.update(SHAPES, COLORS, SIZES, PATTERNS,
                 ("a", "and", "an", "the", "of", "photo", "image", "picture", "background"))
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)
