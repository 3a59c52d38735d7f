"""Attribute reader: recover a shapes-world scene from an image (this world's stand-in for CLIP).

Made to survive the blur and colour shifts of a VAE round trip or a diffusion sample:
background = nearest palette colour to the border's median; objects = the largest blobs of pixels far from the
background; colour = nearest palette colour to a blob's core; a soft coverage mask measured against the blob's own
colour gives the position (nearest grid centre to its centroid) and, by best correlation with rendered templates
of every shape at both sizes (sharp and blurred, over the range of the world's rotation and scale jitter, centred
on their centroids as the coverage is), the shape and size.

On a textured or photo background the reader is given the background (`background=`, the scene's spec): it
renders it, and everything above is measured against that image pixel by pixel instead of one colour.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from .backgrounds import PATTERNS, Background, backdrop, colors_of
from .captions import background_words
from .render import object_center, object_mask
from .scene import COLORS, MAX_ANGLE, POSITIONS, SCALE_RANGE, SHAPES, SIZES, Obj, Scene, grid_cell

SIZE = 64  # images are read at this resolution
MIN_BLOB_AREA = 20  # pixels; the smallest object (small star) covers about 60
BORDER = 4  # width in pixels of the frame whose median colour is the background
TEMPLATE_BLURS = (0.0, 0.7, 1.4, 2.1)  # gaussian sigmas (pixels) of the shape templates
TEMPLATE_ANGLES = np.linspace(-MAX_ANGLE, MAX_ANGLE, 7)  # degrees; circles and rings only at 0
TEMPLATE_SCALES = (SCALE_RANGE[0], 1.0, SCALE_RANGE[1])
JITTER_PENALTY = 0.04  # correlation a blurred template at the jitter's extremes gives up (see _templates)
KNOWN_BACKGROUND_THRESHOLD = 40.0  # RGB distance from the known background that counts as foreground
CLOSING = 2  # binary closing iterations of the foreground on textured and photo backgrounds
MIN_CONTRAST = 20.0  # below this distance between object and background colour, coverage falls back to the blob
OBJECT_ATTRIBUTES = ("shape", "color", "size", "position")
ATTRIBUTES = ("background", "count") + OBJECT_ATTRIBUTES
_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], np.float32)
_EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class SceneReading:
    """What the reader saw: background, objects in reading order, and each object's template correlation."""
    background: Background
    objects: tuple[Obj, ...]
    shape_scores: tuple[float, ...] = ()

    def to_scene(self) -> Scene:
        """As a Scene; ValueError when the reading is not a valid scene (e.g. no object, or touching objects)."""
        return Scene(self.background, self.objects)


def to_rgb_array(image: Image.Image | np.ndarray, size: int = SIZE) -> np.ndarray:
    """float32 (size, size, 3) array in 0..255. Arrays: integer dtypes in 0..255, float dtypes in [0, 1]."""
    if isinstance(image, np.ndarray):
        array = image
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an (H, W, 3) image array, got shape {array.shape}")
        if np.issubdtype(array.dtype, np.floating):
            if array.min() < -0.01 or array.max() > 1.01:
                raise ValueError("float image arrays must hold values in [0, 1]")
            array = array * 255.0
        image = Image.fromarray(np.clip(np.round(array[..., :3]), 0, 255).astype(np.uint8))
    elif not isinstance(image, Image.Image):
        raise ValueError(f"expected a PIL image or a numpy array, got {type(image).__name__}")
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.BOX if image.width > size else Image.BICUBIC)
    return np.asarray(image, np.float32)


def nearest_color(rgb: np.ndarray, exclude: tuple[str, ...] = ()) -> str:
    """Name of the palette colour nearest to an RGB triple, skipping the names in `exclude`."""
    distances = np.linalg.norm(_PALETTE - rgb, axis=1)
    for name in exclude:
        distances[_PALETTE_NAMES.index(name)] = np.inf
    return _PALETTE_NAMES[int(np.argmin(distances))]


@lru_cache(maxsize=None)
def _grid_centers(size: int) -> np.ndarray:
    return np.array([object_center(Obj("circle", "red", "big", p), size) for p in POSITIONS])


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two masks over the whole image."""
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / max(np.sqrt((a * a).sum() * (b * b).sum()), 1e-12))


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(x, y) of a soft mask, in the continuous frame where pixel i spans [i, i + 1] (as object_center)."""
    ys, xs = np.indices(mask.shape)
    total = max(mask.sum(), 1e-6)
    return np.array([((xs + 0.5) * mask).sum() / total, ((ys + 0.5) * mask).sum() / total])


def _centred(mask: np.ndarray) -> np.ndarray:
    """The mask moved (bilinear) so that its centroid is the image centre."""
    centre = mask.shape[0] / 2
    dx, dy = centre - _centroid(mask)
    return ndimage.shift(mask, (dy, dx), order=1, mode="constant", cval=0.0)


@lru_cache(maxsize=None)
def _templates(size: int) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray]:
    """(shape, size name) per template, the templates as zero-mean unit-norm rows, and each one's jitter penalty:
    every shape at both sizes, at the jitter's extreme and middle scales and at rotations across its range, sharp
    and blurred (blurred copies match blurry images, whose thin parts a sharp template would miss), each centred
    on its centroid. Blurred templates pay a penalty growing with their rotation and scale change (JITTER_PENALTY
    at the extremes), so on blurry images a jittered template wins only when it fits clearly better: otherwise the
    extra templates trade an unjittered object's shape for a look-alike (measured on round trips of the shipped
    VAE: 90% shape accuracy without the penalty, 97.5% with it, as many as with unjittered templates alone)."""
    labels, rows, penalties = [], [], []
    for shape, size_name in itertools.product(SHAPES, SIZES):
        angles = (0.0,) if shape in ("circle", "ring") else TEMPLATE_ANGLES
        for scale, angle in itertools.product(TEMPLATE_SCALES, angles):
            sharp = object_mask(Obj(shape, "red", size_name, "center", scale=scale, angle=float(angle)), size)
            for sigma in TEMPLATE_BLURS:
                mask = _centred(ndimage.gaussian_filter(sharp, sigma) if sigma else sharp).ravel()
                mask = mask - mask.mean()
                labels.append((shape, size_name))
                rows.append(mask / max(np.linalg.norm(mask), 1e-12))
                jitter = abs(angle) / MAX_ANGLE + abs(scale - 1) / (SCALE_RANGE[1] - 1)
                penalties.append(JITTER_PENALTY * jitter if sigma else 0.0)
    return labels, np.stack(rows).astype(np.float32), np.array(penalties, np.float32)


def classify_shape(coverage: np.ndarray) -> tuple[str, str, float]:
    """Best (shape, size, score) for a soft coverage mask: the template that correlates best (Pearson, -1..1)
    with the mask once both are centred on their centroids. Correlation of soft masks beat IoU of thresholded
    masks on the blobby, low-contrast small objects a VAE round trip makes.
    """
    labels, templates, penalties = _templates(coverage.shape[0])
    moved = _centred(coverage).ravel()
    moved = moved - moved.mean()
    scores = templates @ (moved / max(np.linalg.norm(moved), 1e-12))
    best = int(np.argmax(scores - penalties))
    return (*labels[best], float(scores[best]))


def _read_blob(pixels: np.ndarray, blob: np.ndarray, distance: np.ndarray, background_rgb: np.ndarray,
               exclude: tuple[str, ...]) -> tuple[Obj, float, np.ndarray]:
    """One object from its blob: colour from the blob's core, then coverage, position, shape and size.
    background_rgb is one colour or a per-pixel image; exclude: colours the object cannot have."""
    core = blob & (distance >= 0.75 * np.percentile(distance[blob], 90))  # skip blurred edge pixels
    object_rgb = np.median(pixels[core], axis=0)
    color = nearest_color(object_rgb, exclude=exclude)
    # Coverage = how far each pixel sits from the background towards the object's own measured colour; where
    # the background pixel is itself close to that colour the ratio is noise, and the blob itself stands in.
    background_rgb = np.broadcast_to(background_rgb, pixels.shape)
    direction = object_rgb - background_rgb
    norm2 = (direction * direction).sum(axis=2)
    alpha = ((pixels - background_rgb) * direction).sum(axis=2) / np.maximum(norm2, 1e-6)
    alpha = np.where(norm2 >= MIN_CONTRAST ** 2, alpha, blob)
    near_blob = ndimage.binary_dilation(blob, _EIGHT_CONNECTED, iterations=2)
    coverage = np.where(near_blob, np.clip(alpha, 0.0, 1.0), 0.0).astype(np.float32)
    centroid = _centroid(coverage)
    position = POSITIONS[int(np.argmin(np.linalg.norm(_grid_centers(pixels.shape[0]) - centroid, axis=1)))]
    shape, size_name, score = classify_shape(coverage)
    return Obj(shape, color, size_name, position), score, centroid


def read_scene(image: Image.Image | np.ndarray, n_objects: int | None = None,
               background: Background | None = None) -> SceneReading:
    """Read the background and up to `n_objects` (1 or 2; None: up to 2) objects, the largest blobs first.

    background: the known background (a scene's background spec). Objects are then whatever differs from its
    render by more than KNOWN_BACKGROUND_THRESHOLD, and the reading's background is that spec. Without it the
    background is read as the palette colour of the image's border.
    """
    if n_objects not in (None, 1, 2):
        raise ValueError("n_objects must be 1, 2 or None")
    pixels = to_rgb_array(image)
    if background is None:
        frame = np.ones(pixels.shape[:2], bool)
        frame[BORDER:-BORDER, BORDER:-BORDER] = False
        background_rgb = np.median(pixels[frame], axis=0)  # the median ignores objects reaching into the frame
        background = nearest_color(background_rgb)
        # Foreground threshold: well under half the gap to the palette colour closest to this background.
        others = np.delete(_PALETTE, _PALETTE_NAMES.index(background), axis=0)
        threshold = 0.4 * float(np.linalg.norm(others - _PALETTE[_PALETTE_NAMES.index(background)], axis=1).min())
    else:
        background_rgb, threshold = backdrop(background, pixels.shape[0]), KNOWN_BACKGROUND_THRESHOLD
    distance = np.linalg.norm(pixels - background_rgb, axis=2)
    foreground = distance > threshold
    if not isinstance(background, str):
        # Where a photo or texture happens to match the object's colour the object has gaps: close them, so that
        # one object stays one blob.
        foreground = ndimage.binary_closing(foreground, _EIGHT_CONNECTED, iterations=CLOSING, border_value=0)
    foreground[[0, -1], :] = foreground[:, [0, -1]] = False  # outermost ring: decoder edge artefacts, no objects
    labels, count = ndimage.label(foreground, structure=_EIGHT_CONNECTED)
    areas = ndimage.sum_labels(np.ones_like(distance), labels, index=np.arange(1, count + 1))
    order = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= MIN_BLOB_AREA]
    found = [_read_blob(pixels, labels == label, distance, background_rgb, colors_of(background))
             for label in order[: n_objects or 2]]
    found.sort(key=lambda f: (POSITIONS.index(f[0].position), f[2][0]))  # reading order
    return SceneReading(background, tuple(f[0] for f in found), tuple(f[1] for f in found))


def _cell_distance(a: str, b: str) -> int:
    (ra, ca), (rb, cb) = grid_cell(a), grid_cell(b)
    return abs(ra - rb) + abs(ca - cb)


def _object_agreement(read: Obj, expected: Obj) -> dict[str, bool]:
    return {a: getattr(read, a) == getattr(expected, a) for a in OBJECT_ATTRIBUTES}


def attribute_agreement(read: SceneReading | Scene, expected: Scene | SceneReading) -> dict[str, bool]:
    """Per attribute (ATTRIBUTES), whether the reading agrees with the expected scene.

    Objects are paired by position (then by agreement); an object attribute holds only when it holds for every
    expected object, so a missing object makes all of them False. "count" compares the numbers of objects.
    """
    result = {"background": read.background == expected.background,
              "count": len(read.objects) == len(expected.objects)}
    pairings = list(itertools.permutations(range(len(read.objects)), len(expected.objects)))
    if not pairings:
        return result | {a: False for a in OBJECT_ATTRIBUTES}

    def cost(pairing):
        pairs = [(read.objects[i], e) for i, e in zip(pairing, expected.objects)]
        agree = sum(sum(_object_agreement(r, e).values()) for r, e in pairs)
        return sum(_cell_distance(r.position, e.position) for r, e in pairs), -agree

    best = min(pairings, key=cost)
    per_object = [_object_agreement(read.objects[i], e) for i, e in zip(best, expected.objects)]
    return result | {a: all(p[a] for p in per_object) for a in OBJECT_ATTRIBUTES}


@dataclass(frozen=True)
class CaptionSpec:
    """Attributes a caption states: background (None if unstated; a colour, or for a pattern its words as
    captions.background_words gives them, e.g. "red and white striped") and, per object, attribute -> value."""
    background: str | None
    objects: tuple[dict[str, str], ...]


_POSITION_WORDS = {"top", "bottom", "left", "right", "center"}


def parse_caption(text: str) -> CaptionSpec:
    """Stated attributes of a caption in the phrasings of captions.caption; ValueError if no object is found."""
    words = text.lower().replace(",", " ").split()
    split = max((i for i, w in enumerate(words) if w in ("on", "with")), default=len(words))
    background = next((w for w in words[split:] if w in COLORS), None)
    pattern = next((w for w in words[split:] if w in PATTERNS), None)
    if pattern is not None:
        colors = [w for w in words[split:] if w in COLORS]
        if len(colors) != 2:
            raise ValueError(f"a {pattern} background needs two colours in {text!r}")
        background = f"{colors[0]} and {colors[1]} {pattern}"
    objects, part = [], []
    for word in words[:split] + ["and"]:
        if word != "and":
            part.append(word)
            continue
        stated = {}
        for attribute, allowed in (("shape", SHAPES), ("color", COLORS), ("size", SIZES)):
            hits = [w for w in part if w in allowed]
            if len(hits) > 1:
                raise ValueError(f"several {attribute} words in {' '.join(part)!r}")
            if hits:
                stated[attribute] = hits[0]
        position = " ".join(w for w in part if w in _POSITION_WORDS)
        if position:
            if position not in POSITIONS:
                raise ValueError(f"unknown position {position!r} in {text!r}")
            stated["position"] = position
        if "shape" not in stated:
            raise ValueError(f"no shape named in {' '.join(part)!r} of caption {text!r}")
        objects.append(stated)
        part = []
    if not 1 <= len(objects) <= 2:
        raise ValueError(f"a caption names one or two objects, {text!r} names {len(objects)}")
    return CaptionSpec(background, tuple(objects))


def matches_caption(image: Image.Image | np.ndarray, caption_text: str, background: Background | None = None) -> bool:
    """Whether the image shows what the caption states (only the attributes it states are checked).
    background: the known background, as read_scene takes it (needed on patterns, textures and photos)."""
    spec = parse_caption(caption_text)
    reading = read_scene(image, n_objects=len(spec.objects), background=background)
    if spec.background is not None and background_words(reading.background) != spec.background:
        return False
    if len(reading.objects) != len(spec.objects):
        return False
    return any(all(getattr(reading.objects[i], a) == v for i, stated in zip(pairing, spec.objects)
                   for a, v in stated.items())
               for pairing in itertools.permutations(range(len(reading.objects))))
