"""Faithful edits on the embedded model, on textured-world scenes it never saw (textures and held-out photos).

The scenes are the textured bench's own (evaluation/suites.py, seed 0): its first object-colour scenes, and its
first squares among them. Thresholds sit below the measured figures (in each docstring) by a margin for rounding
across machines, not at them."""
import numpy as np
import pytest

import ptiedit
from ptiedit.evaluation.metrics import iou, psnr
from ptiedit.evaluation.suites import shapes_suite, textured_scene, textured_suite
from ptiedit.toyworld.edits import apply_edit
from ptiedit.toyworld.finder import find_objects

SIZE, SCENES = 64, 4
FIRST_SQUARES = (15, 16, 18, 19)  # indices of the first four squares among the bench's object-colour scenes


def colour_edits(pipe, indices):
    """(case, edited scene, reconstruction, edit, mask) per scene: one inversion each, eta 0 and the default."""
    cases = [textured_suite(SIZE, j + 1, edit_types=("object_color",))[j] for j in indices]
    targets = [apply_edit(*textured_scene(0, "object_color", j, SIZE)) for j in indices]
    inversions = ptiedit.invert(pipe, [c.image for c in cases], progress=False)
    images, masks = ptiedit.edit(pipe, inversions, [c.edits[0].target_prompt for c in cases],
                                 [0.0, ptiedit.DEFAULT_ETA], progress=False, return_masks=True)
    return [(case, target, shown[0], shown[1], np.asarray(mask[1]) > 127)
            for case, target, shown, mask in zip(cases, targets, images, masks)]


@pytest.fixture(scope="module")
def pipe():
    return ptiedit.load_pipeline()


@pytest.fixture(scope="module")
def first_scenes(pipe):
    assert ptiedit.DEFAULT_MODE == "faithful"
    return colour_edits(pipe, range(SCENES))


def test_colour_edit_keeps_the_reconstruction_outside_the_object(first_scenes):
    """Measured: 4 of 4 take the new colour; the unedited region keeps 26.0, 31.2, 29.6 and 37.0 dB of the
    reconstruction (the mask is drawn on the 16x16 latent, so its border pixels are resampled)."""
    kept = [psnr(edited, reconstruction, case.edits[0].edited) for case, _, reconstruction, edited, _ in first_scenes]
    recoloured = [case.edits[0].succeeded(edited) for case, _, _, edited, _ in first_scenes]
    assert min(kept) >= 24.0, kept
    assert sum(recoloured) >= SCENES - 1, recoloured


def test_the_automatic_mask_covers_the_edited_object(first_scenes):
    """Measured IoU with the ground-truth edit mask: 0.58, 0.36, 0.61, 0.52 (mean 0.52; the mask covers the
    object's core on the 16x16 latent, not its edge pixels)."""
    overlaps = [iou(mask, case.edits[0].edited) for case, _, _, _, mask in first_scenes]
    assert np.mean(overlaps) >= 0.4 and min(overlaps) >= 0.25, overlaps


@pytest.mark.xfail(reason="known gap (issue 24): faithful mode keeps 2 of these 4 squares (paper mode 4 of 4): the "
                   "mask covers the object's core only, and the recoloured core reads as a circle or heart",
                   strict=False)
def test_a_square_stays_a_square_under_a_colour_edit(pipe):
    """The finder should read each as a square of the new colour, overlapping the input's square (IoU >= 0.65).
    Measured at the default eta 0.9: circle (IoU 0.71), square (0.72), heart (0.32), square (0.69)."""
    read = []
    for case, target, _, edited, _ in colour_edits(pipe, FIRST_SQUARES):
        assert case.edits[0].kind == "object_color" and target.objects[0].shape == "square"
        found = find_objects(edited, target.objects[0].color, background=target.background)
        read.append(bool(found) and found[0][0].shape == "square"
                    and iou(found[0][2], case.edits[0].edited) >= 0.65)
    assert all(read), read


def test_the_automatic_mask_covers_a_whole_background(pipe):
    """Background-colour edits of the shapes world's first scenes (solid colours): the trajectory map alone peaks
    near the object (IoU with the ground truth 0.34, 0.05, 0.11 on these three scenes); the DiffEdit map, made at the
    reconstruction's own latent, spreads over the region: 0.93, 0.93, 0.95 with both."""
    cases = shapes_suite(SIZE, 3, edit_types=("background_color",))
    inversions = ptiedit.invert(pipe, [c.image for c in cases], progress=False)
    _, masks = ptiedit.edit(pipe, inversions, [c.edits[0].target_prompt for c in cases], ptiedit.DEFAULT_ETA,
                            progress=False, return_masks=True)
    overlaps = [iou(np.asarray(mask) > 127, case.edits[0].edited) for case, [mask] in zip(cases, masks)]
    assert min(overlaps) >= 0.6, overlaps
