"""Faithful edits (editing/faithful.py) on the tiny random-weight models: replay, blending, batching."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.editing.edit import edit_latents, sample_edits
from ptiedit.editing.faithful import FaithfulConfig, edit_mask

STEPS, TARGET = 5, "a green circle"


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def inversions(tiny_pipe):
    return ptiedit.invert(tiny_pipe, [_image(0), _image(1)], steps=STEPS, inner_steps=3, progress=False)


def test_eta_zero_in_faithful_mode_is_the_exact_reconstruction(tiny_pipe):
    inversion = ptiedit.invert(tiny_pipe, _image(2), steps=STEPS, inner_steps=3, progress=False)
    [sample] = sample_edits(tiny_pipe, [(inversion, TARGET, 0.0)], progress=False, mode="faithful")
    assert torch.equal(sample.latent, inversion.reconstruction)
    assert sample.mask is not None and sample.mask.sum() == 0


def test_outside_the_mask_the_edit_is_the_reconstruction(tiny_pipe, inversions):
    inversion = inversions[0]
    [sample] = sample_edits(tiny_pipe, [(inversion, TARGET, 1.0)], progress=False, mode="faithful")
    mask = sample.mask
    assert mask.shape == (1, 1, *inversion.z_T.shape[-2:]) and 0 < mask.sum() < mask.numel()
    gap = (sample.latent - inversion.reconstruction).abs()
    assert gap[(mask == 0).expand_as(gap)].max() < 1e-4  # the reconstruction branch, in a batch of 2
    assert gap[(mask == 1).expand_as(gap)].max() > 1e-2  # inside, the edit
    paper = edit_latents(tiny_pipe, inversion, TARGET, [1.0], progress=False, mode="paper")
    assert (paper - inversion.reconstruction).abs().amax(1)[mask[:, 0] == 0].max() > 1e-2  # paper mode repaints


def test_faithful_edits_in_one_batch_equal_one_by_one(tiny_pipe, inversions):
    jobs = [(inversions[0], TARGET, 0.7), (inversions[1], "a big blue square", 1.0), (inversions[0], TARGET, 1.0),
            (inversions[1], "a big blue square", 0.0)]
    batched = sample_edits(tiny_pipe, jobs, progress=False, mode="faithful")
    for job, sample in zip(jobs, batched):
        [alone] = sample_edits(tiny_pipe, [job], progress=False, mode="faithful")
        torch.testing.assert_close(sample.latent, alone.latent, atol=1e-4, rtol=1e-4)
        assert torch.equal(sample.mask, alone.mask)
    assert not torch.equal(batched[0].mask, batched[2].mask) or (batched[0].latent - batched[2].latent).abs().max() > 1e-3


def test_edit_returns_masks_as_images_in_the_images_layout(tiny_pipe, inversions):
    images, masks = ptiedit.edit(tiny_pipe, inversions[0], TARGET, [0.0, 1.0], progress=False, return_masks=True)
    assert [m.mode for m in masks] == ["L", "L"] and [m.size for m in masks] == [im.size for im in images]
    assert np.asarray(masks[0]).max() == 0 and np.asarray(masks[1]).max() == 255
    _, paper_mask = ptiedit.edit(tiny_pipe, inversions[0], TARGET, 1.0, progress=False, mode="paper", return_masks=True)
    assert np.asarray(paper_mask).max() == 0


def test_faithful_mode_with_prompt_to_prompt_keeps_its_attention_processors(tiny_pipe, inversions):
    before = dict(tiny_pipe.unet.attn_processors)
    with_p2p = edit_latents(tiny_pipe, inversions[0], TARGET, [1.0], progress=False, p2p=ptiedit.P2PConfig())
    alone = edit_latents(tiny_pipe, inversions[0], TARGET, [1.0], progress=False)
    assert (with_p2p - alone).abs().max() > 1e-4  # the cross-attention replacement acts on top of the blending
    assert all(tiny_pipe.unet.attn_processors[name] is p for name, p in before.items())


def test_the_mask_joins_the_trajectory_map_and_the_diffedit_map(tiny_pipe, inversions):
    job = [(inversions[1], "a big blue square", 1.0)]
    masks = {name: sample_edits(tiny_pipe, job, progress=False, faithful=config)[0].mask
             for name, config in {"both": FaithfulConfig(),
                                  "trajectory": FaithfulConfig(diffedit_threshold=1.0),
                                  "diffedit": FaithfulConfig(threshold=1.0)}.items()}
    assert masks["trajectory"].sum() > 0 and masks["diffedit"].sum() > 0
    assert torch.equal(masks["both"], torch.maximum(masks["trajectory"], masks["diffedit"]))
    assert not torch.equal(masks["trajectory"], masks["diffedit"])


def test_edit_mask_thresholds_the_normalised_difference():
    difference = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    assert edit_mask(difference, 0.45).tolist() == [[[[0.0, 0.0], [1.0, 1.0]]], [[[0.0, 0.0], [0.0, 0.0]]]]


def test_bad_settings_are_refused(tiny_pipe, inversions):
    with pytest.raises(ValueError, match="unknown editing mode"):
        ptiedit.edit(tiny_pipe, inversions[0], TARGET, 1.0, progress=False, mode="fast")
    with pytest.raises(ValueError, match="threshold"):
        FaithfulConfig(threshold=1.5)
    with pytest.raises(ValueError, match="diffedit_threshold"):
        FaithfulConfig(diffedit_threshold=-0.1)


def test_decoded_edits_are_the_decoded_reconstruction_outside_the_grown_mask(tiny_pipe, inversions):
    family = ptiedit.model_family(tiny_pipe)
    inversion = inversions[0]
    # a small mask on the tiny model; half a cell (1 px) of growth and the bilinear edge reach one cell beyond it
    config = FaithfulConfig(threshold=0.7, diffedit_threshold=1.0, composite_border=0.5)
    pasted = ptiedit.edit(tiny_pipe, inversion, TARGET, 1.0, progress=False, faithful=config)
    bare = ptiedit.edit(tiny_pipe, inversion, TARGET, 1.0, progress=False,
                        faithful=replace(config, composite_border=None))
    [sample] = sample_edits(tiny_pipe, [(inversion, TARGET, 1.0)], progress=False, faithful=config)
    reconstruction = np.asarray(family.decode_latents(inversion.reconstruction)[0], dtype=np.int16)
    pasted, bare = np.asarray(pasted, dtype=np.int16), np.asarray(bare, dtype=np.int16)
    scale = pasted.shape[0] // sample.mask.shape[-1]
    grown = torch.nn.functional.max_pool2d(sample.mask, 3, 1, 1)  # one latent cell beyond the border
    outside = grown[0, 0].repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy() == 0
    inside = sample.mask[0, 0].repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy() == 1
    assert outside.any() and inside.any()
    assert np.abs(pasted - reconstruction).max(-1)[outside].max() <= 1  # 8-bit rounding of the blend
    assert np.abs(bare - reconstruction).max(-1)[outside].max() > 1  # the VAE mixes the edit across the border
    assert np.abs(pasted - reconstruction).max(-1)[inside].max() > 1  # the edit is kept inside
