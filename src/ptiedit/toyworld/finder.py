"""Find a caption's objects by their colour: the reader for generated images whose caption leaves the background
unstated (a texture or a photo the model made up, with no spec to give the reader), and for edits of textured
scenes, where it reads a VAE-blurred photo more reliably than reader.read_scene does.

The caption names each object's colour. Candidates are the blobs of pixels nearer that palette colour than any
other, and near enough (a world object always stands out from what it covers, world.MIN_CONTRAST). For each
candidate the background under it is inpainted from the pixels around it (normalized convolution), and the blob is
read against that estimate as reader.read_scene reads one against a known background. The candidate whose coverage
best matches a shape template is the object; none of fair size means the caption's object is not there. A known
background (a ground-truth edit's) replaces the inpainted estimate, and its own pixels are no candidates.

Measured by benchmarks/reader_accuracy.py: a caption's attributes all hold on ~95% of fresh one-object texture and
photo renders, and on ~89% of their VAE round trips (given the background: ~99.7% and ~94%); with one attribute
changed, all hold on under 1%. Without the background a single attribute is less specific: a background patch of
the caption's colour makes "color" hold on ~20% of images whose object has another colour, so report agreement on
all stated attributes.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from .backgrounds import Background, backdrop
from .palette import COLORS
from .reader import (_EIGHT_CONNECTED, _PALETTE, _PALETTE_NAMES, KNOWN_BACKGROUND_THRESHOLD, MIN_BLOB_AREA,
                     CaptionSpec, _read_blob, parse_caption, to_rgb_array)
from .scene import Obj

COLOR_THRESHOLD = 60.0  # RGB distance to the named colour counted as the object's (world contrast: >= 80)
INPAINT_MARGIN = 3  # pixels around a blob treated as unknown background (blurred object edges)
INPAINT_SIGMA = 4.0  # gaussian sigma (pixels) of the normalized convolution
MAX_CANDIDATES = 4  # largest blobs of the colour that are read


def inpaint_background(pixels: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """The image with `hole` filled by normalized convolution: a gaussian-weighted mean of the known pixels."""
    known = (~hole).astype(np.float32)
    weight = ndimage.gaussian_filter(known, INPAINT_SIGMA)
    total = np.stack([ndimage.gaussian_filter(pixels[..., k] * known, INPAINT_SIGMA) for k in range(3)], axis=-1)
    filled = total / np.maximum(weight, 1e-6)[..., None]
    return np.where(hole[..., None], filled, pixels)


def find_objects(image, color: str, exclude: np.ndarray | None = None,
                 background: Background | None = None) -> list[tuple[Obj, float, np.ndarray]]:
    """Candidate objects of a palette colour: (object as read, template correlation, blob mask), best first.
    exclude: pixels already taken by another object. background: the known background (a spec), used instead of
    the inpainted estimate."""
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}")
    pixels = to_rgb_array(image)
    to_palette = np.linalg.norm(pixels[:, :, None] - _PALETTE, axis=3)
    to_color = to_palette[..., _PALETTE_NAMES.index(color)]
    near = (to_color < COLOR_THRESHOLD) & (to_palette.argmin(axis=2) == _PALETTE_NAMES.index(color))
    if exclude is not None:
        near &= ~exclude
    known = None if background is None else backdrop(background, pixels.shape[0])
    if known is not None:  # background pixels that look like the colour are no object
        near &= np.linalg.norm(pixels - known, axis=2) > KNOWN_BACKGROUND_THRESHOLD
    near[[0, -1], :] = near[:, [0, -1]] = False  # outermost ring: decoder edge artefacts, no objects
    labels, count = ndimage.label(near, structure=_EIGHT_CONNECTED)
    areas = ndimage.sum_labels(np.ones(near.shape), labels, index=np.arange(1, count + 1))
    found = []
    for i in np.argsort(-areas, kind="stable")[:MAX_CANDIDATES]:
        if areas[i] < MIN_BLOB_AREA:
            break
        blob = labels == i + 1
        if known is None:
            hole = ndimage.binary_dilation(blob, _EIGHT_CONNECTED, iterations=INPAINT_MARGIN)
            under = inpaint_background(pixels, hole)
        else:
            under = known
        distance = np.linalg.norm(pixels - under, axis=2)
        obj, score, _ = _read_blob(pixels, blob, distance, under, exclude=())
        found.append((obj, score, blob))
    return sorted(found, key=lambda f: -f[1])


def matches_objects(image, spec: CaptionSpec | str, background: Background | None = None) -> dict[str, bool]:
    """Per object attribute, whether the image shows it as the caption states (only stated attributes count;
    "all" when every one holds). Each stated object is looked for by its colour; a missing one fails them all.
    background: the known background, when there is one (find_objects)."""
    spec = parse_caption(spec) if isinstance(spec, str) else spec
    result, taken = {}, np.zeros(to_rgb_array(image).shape[:2], bool)
    for stated in spec.objects:
        found = find_objects(image, stated["color"], exclude=taken, background=background) if "color" in stated else []
        if found:
            taken |= ndimage.binary_dilation(found[0][2], _EIGHT_CONNECTED, iterations=INPAINT_MARGIN)
        for attribute, value in stated.items():
            holds = bool(found) and getattr(found[0][0], attribute) == value
            result[attribute] = result.get(attribute, True) and holds
    return result | {"all": all(result.values())}
