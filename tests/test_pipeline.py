"""PTIPipeline (ptiedit/pipeline.py), the diffusers-style object, end to end on tiny seeded SD and SDXL models."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit import PTIPipeline
from ptiedit.models.random_weights import random_pipeline

from .conftest import FIXTURES, build_tiny_pipeline

STEPS, TARGET = 3, "a blue square"


def image(seed: int = 0, size=(16, 16)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def raw_sd():
    """A pipeline as diffusers builds it, with a PNDM scheduler (ptiedit samples DDIM from its config)."""
    from diffusers import PNDMScheduler

    pipe = build_tiny_pipeline("epsilon")
    pipe.scheduler = PNDMScheduler.from_config(pipe.scheduler.config)
    return pipe


@pytest.fixture(scope="module")
def sd():
    raw = raw_sd()
    config = json.dumps(dict(raw.scheduler.config), sort_keys=True, default=str)
    pipe = PTIPipeline.from_pipe(raw)
    pipe.set_progress_bar_config(disable=True)
    return raw, config, pipe


@pytest.fixture(scope="module")
def sd_inversion(sd):
    return sd[2].invert(image=image(0), num_inference_steps=STEPS, inner_steps=2).inversion


@pytest.fixture(scope="module")
def sdxl():
    pipe = PTIPipeline.from_pipe(random_pipeline(FIXTURES / "sdxl-tiny", seed=0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_output_types(pipe, inversion):
    """Each output_type holds the same edits: pil = round(np * 255), pt = np in CHW, latent decodes to them."""
    out = pipe(prompt=TARGET, inversion=inversion, eta=[0.5, 1.0])
    assert len(out.images) == len(out.masks) == 2 and all(im.size == (16, 16) for im in out.images)
    assert [m.mode for m in out.masks] == ["L", "L"] and np.asarray(out.masks[1]).max() == 255
    as_np = pipe(prompt=TARGET, inversion=inversion, eta=[0.5, 1.0], output_type="np")
    assert as_np.images.shape == (2, 16, 16, 3) and as_np.images.dtype == np.float32
    assert 0 <= as_np.images.min() and as_np.images.max() <= 1
    assert np.abs((as_np.images * 255).round() - np.stack([np.asarray(im) for im in out.images])).max() <= 1
    assert as_np.masks.shape == (2, 16, 16, 1) and np.array_equal(as_np.masks[..., 0] * 255,
                                                                   np.stack([np.asarray(m) for m in out.masks]))
    as_pt = pipe(prompt=TARGET, inversion=inversion, eta=[0.5, 1.0], output_type="pt")
    assert as_pt.images.shape == (2, 3, 16, 16) and as_pt.images.dtype == torch.float32
    assert np.array_equal(as_pt.images.permute(0, 2, 3, 1).numpy(), as_np.images)
    assert as_pt.masks.shape == (2, 1, 16, 16)
    latent = pipe(prompt=TARGET, inversion=inversion, eta=[0.5, 1.0], output_type="latent")
    assert latent.images.shape == (2, *inversion.z_T.shape[1:]) and latent.masks.shape == (2, 1, 8, 8)
    unpasted = pipe(prompt=TARGET, inversion=inversion, eta=[0.5, 1.0], output_type="pt",
                    faithful=ptiedit.FaithfulConfig(composite_border=None))
    torch.testing.assert_close(pipe.decode(latent.images), unpasted.images)
    images, masks = pipe(prompt=TARGET, inversion=inversion, eta=1.0, output_type="np", return_dict=False)
    np.testing.assert_allclose(images, as_np.images[1:], atol=1e-4)  # batched kernels round differently
    assert np.array_equal(masks, as_np.masks[1:])


def check_callbacks(pipe, inversion):
    seen = []

    def count(p, step, timestep, kwargs):
        assert p is pipe and set(kwargs) == {"latents"}
        seen.append((step, int(timestep), tuple(kwargs["latents"].shape)))
        return kwargs

    plain = pipe(prompt=TARGET, inversion=inversion, eta=1.0, output_type="latent").images
    counted = pipe(prompt=TARGET, inversion=inversion, eta=1.0, output_type="latent", callback_on_step_end=count)
    # the edit alone (its reconstruction branch is not shown), at each of the inversion's timesteps
    assert seen == [(i, int(t), (1, *inversion.z_T.shape[1:])) for i, t in enumerate(inversion.timesteps)]
    assert pipe.num_timesteps == STEPS and torch.equal(counted.images, plain)

    def zero_last(p, step, timestep, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == STEPS - 1 else {}

    zeroed = pipe(prompt=TARGET, inversion=inversion, eta=1.0, output_type="latent", callback_on_step_end=zero_last)
    assert not zeroed.images.any()

    def halve_first(p, step, timestep, kwargs):
        return {"latents": kwargs["latents"] * 0.5} if step == 0 else None

    for mode in ("faithful", "paper"):
        halved = pipe(prompt=TARGET, inversion=inversion, eta=1.0, mode=mode, output_type="latent",
                      callback_on_step_end=halve_first).images
        reference = pipe(prompt=TARGET, inversion=inversion, eta=1.0, mode=mode, output_type="latent").images
        assert (halved - reference).abs().max() > 1e-3, mode


# ------------------------------------------------------------------------------------------------ SD 1.x/2.x

def test_from_pipe_leaves_the_users_pipeline_and_scheduler_untouched(sd, sd_inversion):
    from diffusers import PNDMScheduler

    raw, config, pipe = sd
    assert pipe.pipeline is not raw and pipe.unet is raw.unet and pipe.vae is raw.vae  # the same components
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler is not raw.scheduler
    assert isinstance(raw.scheduler, PNDMScheduler) and raw.scheduler.num_inference_steps is None
    assert json.dumps(dict(raw.scheduler.config), sort_keys=True, default=str) == config
    assert all(p.requires_grad and p.grad is None for p in raw.unet.parameters())  # flags restored, no .grad
    assert raw.unet.training  # eval only while it ran
    reference = ptiedit.invert(raw, image(0), steps=STEPS, inner_steps=2, progress=False)  # the functional API
    assert torch.equal(sd_inversion.z_T, reference.z_T) and torch.equal(sd_inversion.cond.tokens,
                                                                        reference.cond.tokens)
    assert sd_inversion.settings["steps"] == STEPS and sd_inversion.guidance == 7.5


def test_sd_output_types_and_return_dict(sd, sd_inversion):
    check_output_types(sd[2], sd_inversion)


def test_sd_callbacks_count_steps_and_replace_latents(sd, sd_inversion):
    check_callbacks(sd[2], sd_inversion)


def test_pipeline_call_equals_ptiedit_edit(sd, sd_inversion):
    raw, _, pipe = sd
    for mode in ("faithful", "paper"):
        images, masks = ptiedit.edit(raw, sd_inversion, TARGET, [0.0, 0.8], progress=False, mode=mode,
                                     return_masks=True)
        out = PTIPipeline(raw)(prompt=TARGET, inversion=sd_inversion, eta=[0.0, 0.8], mode=mode)
        assert [np.asarray(im).tolist() for im in out.images] == [np.asarray(im).tolist() for im in images]
        assert (out.masks is None) == (mode == "paper")
        if out.masks is not None:
            assert [np.asarray(m).tolist() for m in out.masks] == [np.asarray(m).tolist() for m in masks]
    replay = pipe(prompt=TARGET, inversion=sd_inversion, eta=0.0, output_type="latent").images
    assert torch.equal(replay, sd_inversion.reconstruction)


def test_lists_of_images_and_prompts(sd):
    pipe = sd[2]
    inversions = pipe.invert(image=[image(1), image(2)], num_inference_steps=STEPS, inner_steps=1).inversion
    assert len(inversions) == 2 and all(isinstance(inv, ptiedit.Inversion) for inv in inversions)
    both = pipe(prompt=[TARGET, "a red circle"], inversion=inversions, eta=1.0, output_type="latent").images
    one = pipe(prompt="a red circle", inversion=inversions[1], eta=1.0, output_type="latent").images
    torch.testing.assert_close(both[1:], one, atol=1e-4, rtol=1e-4)
    broadcast = pipe(prompt=[TARGET, "a red circle"], inversion=inversions[1], eta=1.0, output_type="latent")
    torch.testing.assert_close(broadcast.images[1:], one, atol=1e-4, rtol=1e-4)


def test_from_pretrained_on_a_saved_folder(sd, sd_inversion, tmp_path):
    raw = sd[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.save_pretrained(tmp_path, safe_serialization=True)
    pipe = PTIPipeline.from_pretrained(tmp_path, device="cpu", torch_dtype=torch.float32)
    assert pipe.unet.dtype == torch.float32 and not pipe.unet.training
    assert PTIPipeline.from_pretrained(tmp_path, device="cpu", dtype="fp32").unet.dtype == torch.float32
    assert pipe.to("cpu") is pipe and isinstance(pipe.to(torch.float32), PTIPipeline)
    pipe.set_progress_bar_config(disable=True)
    ours = pipe(prompt=TARGET, inversion=sd_inversion, eta=0.8, output_type="np").images  # same weights: accepted
    theirs = sd[2](prompt=TARGET, inversion=sd_inversion, eta=0.8, output_type="np").images
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    with pytest.raises(ValueError, match="not both"):
        PTIPipeline.from_pretrained(tmp_path, device="cpu", dtype=torch.float16, torch_dtype=torch.float32)


def test_bad_arguments_fail_in_one_line(sd, sd_inversion):
    pipe = sd[2]
    cases = [
        (dict(prompt=TARGET, inversion=sd_inversion, output_type="jpeg"), "unknown output_type 'jpeg'"),
        (dict(prompt=TARGET), "pass inversion="),
        (dict(inversion=sd_inversion), "pass prompt="),
        (dict(prompt=TARGET, inversion="inv.safetensors"), "inversion must be an Inversion"),
        (dict(prompt=[TARGET] * 3, inversion=[sd_inversion] * 2), "got 2 inversions but 3 prompts"),
        (dict(prompt=TARGET, inversion=sd_inversion, eta=1.5), "eta must be in"),
        (dict(prompt=TARGET, inversion=sd_inversion, mode="fast"), "unknown editing mode"),
        (dict(prompt=TARGET, inversion=sd_inversion, num_inference_steps=50), "num_inference_steps=50 differs"),
        (dict(prompt=TARGET, inversion=sd_inversion, callback_on_step_end=lambda *a: None,
              callback_on_step_end_tensor_inputs=["prompt_embeds"]), "may only name latents"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            pipe(**kwargs)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="pass image="):
        pipe.invert()
    with pytest.raises(ValueError, match="takes num_inference_steps, not steps"):
        pipe.invert(image=image(0), steps=2)
    with pytest.raises(ValueError, match="needs a diffusers Stable Diffusion, SDXL, SD3 or FLUX pipeline"):
        PTIPipeline.from_pipe(object())
    bigger = pipe.invert(image=image(3, size=(24, 16)), num_inference_steps=STEPS, inner_steps=1).inversion
    with pytest.raises(ValueError, match="differ in size"):
        pipe(prompt=TARGET, inversion=[sd_inversion, bigger], output_type="np")
    sizes = [im.size for im in pipe(prompt=TARGET, inversion=[sd_inversion, bigger]).images]
    assert sizes == [(16, 16), (bigger.z_T.shape[-1] * 2, bigger.z_T.shape[-2] * 2)] and sizes[1] != (16, 16)


# ------------------------------------------------------------------------------------------------------ SDXL

def test_sdxl_end_to_end(sdxl):
    assert type(sdxl.pipeline).__name__ == "StableDiffusionXLPipeline" and sdxl.config.force_zeros_for_empty_prompt
    output = sdxl.invert(image=image(0), num_inference_steps=STEPS, inner_steps=2)
    inversion = output.inversion
    assert inversion.fingerprint["family"] == "sdxl" and inversion.cond.pooled is not None
    check_output_types(sdxl, inversion)
    check_callbacks(sdxl, inversion)
    (again,) = sdxl.invert(image=image(0), num_inference_steps=STEPS, inner_steps=2, return_dict=False)
    assert torch.equal(again.z_T, inversion.z_T)
    sdedit = sdxl.invert(image=image(0), num_inference_steps=STEPS, method="sdedit", strength=0.5,
                         generator=torch.Generator().manual_seed(1)).inversion
    assert sdxl(prompt=TARGET, inversion=sdedit, eta=1.0, output_type="np").images.shape == (1, 16, 16, 3)


def test_fp16_force_upcast_vae_runs_in_fp32_and_is_given_back_in_fp16():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = random_pipeline(FIXTURES / "sdxl-tiny", seed=0, dtype=torch.float16)
    pipe = PTIPipeline.from_pipe(raw)
    pipe.set_progress_bar_config(disable=True)
    dtypes = []
    inversion = pipe.invert(image=image(0), num_inference_steps=2, inner_steps=1).inversion
    out = pipe(prompt=TARGET, inversion=inversion, eta=1.0, output_type="np",
               callback_on_step_end=lambda p, i, t, kw: dtypes.append(p.vae.dtype))
    assert dtypes == [torch.float32] * 2 and raw.vae.dtype == torch.float16 and raw.unet.dtype == torch.float16
    assert np.isfinite(out.images).all() and out.images.shape == (1, 16, 16, 3)
