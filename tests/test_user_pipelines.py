"""Pipelines as users bring them (built with diffusers directly, other schedulers, changed weights, zero terminal
SNR) and the defects of issue 26, on tiny seeded random-weight models."""
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.diffusion.ddim import sample_ddim, schedule_from_timesteps
from ptiedit.editing.edit import edit_latents
from ptiedit.models.fingerprint import check_same_model, pipeline_fingerprint
from ptiedit.models.loading import EMBEDDED_MODEL, prepare_pipeline

from .conftest import build_tiny_pipeline

STEPS = 4


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def replay(pipe, inversions, target: str | None = None) -> torch.Tensor:
    """Stage 2 of the paper in one batch: eta 0 (the inversions' own c_t), or eta 1 (the target prompt)."""
    family, first = ptiedit.model_family(pipe), inversions[0]
    cond = first.cond if target is None else family.encode_prompt(target)
    cond = cond if len(inversions) == 1 else type(cond).cat([inv.cond for inv in inversions])
    z_T = torch.cat([inv.z_T for inv in inversions])
    return sample_ddim(family, z_T, schedule_from_timesteps(pipe.scheduler, first.timesteps), cond.expand(len(z_T)),
                       first.uncond.expand(len(z_T)), first.guidance, progress=False)


def raw_pipeline(prediction_type="epsilon", scheduler=None, **config):
    """A pipeline as diffusers builds it: weights with requires_grad, train-mode defaults untouched."""
    pipe = build_tiny_pipeline(prediction_type)
    if scheduler is not None or config:
        from diffusers import DDIMScheduler

        pipe.scheduler = (scheduler or DDIMScheduler).from_config(pipe.scheduler.config, **config)
    return pipe


def test_raw_diffusers_pipeline_with_pndm_inverts_as_load_pipeline_does(image, tmp_path):
    from diffusers import PNDMScheduler

    raw = raw_pipeline(scheduler=PNDMScheduler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw.save_pretrained(tmp_path, safe_serialization=True)
    loaded = ptiedit.load_pipeline(tmp_path, device="cpu")
    assert all(p.requires_grad for p in raw.unet.parameters())
    inversion = ptiedit.invert(raw, image, steps=STEPS, inner_steps=2, progress=False)
    reference = ptiedit.invert(loaded, image, steps=STEPS, inner_steps=2, progress=False)
    assert torch.equal(inversion.timesteps, reference.timesteps) and len(set(inversion.timesteps.tolist())) == STEPS
    assert torch.equal(inversion.z_T, reference.z_T) and torch.equal(inversion.cond.tokens, reference.cond.tokens)
    assert inversion.fingerprint["scheduler"] == reference.fingerprint["scheduler"]
    assert isinstance(raw.scheduler, PNDMScheduler) and raw.scheduler.num_inference_steps is None  # untouched
    assert all(p.grad is None and p.requires_grad for p in raw.unet.parameters())  # flags restored, no .grad
    assert torch.equal(replay(raw, [inversion]), inversion.reconstruction)


def test_tuning_leaves_no_grad_on_weights_that_require_it():
    from ptiedit.diffusion.ddim import make_schedule
    from ptiedit.inversion.pti import prompt_tuning_inversion

    pipe = raw_pipeline()
    family = ptiedit.model_family(pipe)
    null = family.null_conditioning()
    prompt_tuning_inversion(family, torch.randn(1, 4, 8, 8), make_schedule(pipe.scheduler, 2), prompt=null,
                            null=null, guidance=7.5, inner_steps=2, early_stop=0, progress=False)
    assert all(p.grad is None for module in family.components.values() for p in module.parameters())


ZERO_SNR = {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}


def test_zero_terminal_snr_v_prediction_is_finite_and_replays(image):
    pipe = prepare_pipeline(raw_pipeline("v_prediction", **ZERO_SNR), "cpu")
    assert float(pipe.scheduler.alphas_cumprod[-1]) == 0
    inversion = ptiedit.invert(pipe, image, steps=STEPS, inner_steps=2, progress=False)
    assert int(inversion.timesteps[0]) == 999
    assert torch.isfinite(inversion.z_T).all() and torch.isfinite(inversion.cond.tokens).all()
    assert torch.equal(replay(pipe, [inversion]), inversion.reconstruction)
    assert torch.isfinite(replay(pipe, [inversion], "a blue circle")).all()


def test_zero_terminal_snr_with_epsilon_prediction_is_refused(image):
    pipe = prepare_pipeline(raw_pipeline("epsilon", **ZERO_SNR), "cpu")
    with pytest.raises(ValueError, match="zero terminal SNR"):
        ptiedit.invert(pipe, image, steps=STEPS, progress=False)


def test_changed_weights_and_swapped_schedulers_are_seen_at_edit_time(image):
    from diffusers import DDIMScheduler

    pipe = prepare_pipeline(raw_pipeline(), "cpu")
    inversion = ptiedit.invert(pipe, image, steps=STEPS, inner_steps=1, progress=False)
    before = ptiedit.model_family(pipe)
    with torch.no_grad():  # what fuse_lora does to every weight it targets: W += B A
        for block in pipe.unet.down_blocks[0].attentions:
            weight = block.transformer_blocks[0].attn2.to_k.weight
            weight += 1e-2 * torch.randn(weight.shape[0], 2) @ torch.randn(2, weight.shape[1])
    with pytest.raises(ValueError, match="unet weights differ"):
        edit_latents(pipe, inversion, "a blue circle", [0.5], progress=False)
    check_same_model(inversion.fingerprint, pipeline_fingerprint(pipe), allow_changed_weights=True)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_end=0.02)
    family = ptiedit.model_family(pipe)
    assert family is not before and family.alphas_cumprod[-1] < before.alphas_cumprod[-1]
    with pytest.raises(ValueError, match="beta_end differs"):
        check_same_model(inversion.fingerprint, pipeline_fingerprint(pipe), allow_changed_weights=True)


def test_a_loaded_lora_changes_the_fingerprint():
    """load_lora_weights adds tensors (peft's lora_A/lora_B) beside the base weights: the sample sees new names."""
    pipe = prepare_pipeline(raw_pipeline(), "cpu")
    made = pipeline_fingerprint(pipe)
    attn = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2
    attn.to_k.register_parameter("lora_B", torch.nn.Parameter(torch.zeros(attn.to_k.out_features, 2)))
    with pytest.raises(ValueError, match="unet weights differ"):
        check_same_model(made, pipeline_fingerprint(pipe))


def test_guidance_one_makes_one_unet_call_per_step_and_replays_bit_for_bit(image):
    pipe = prepare_pipeline(raw_pipeline("v_prediction"), "cpu")
    family = ptiedit.model_family(pipe)
    inversion = ptiedit.invert(pipe, image, steps=STEPS, guidance=1.0, inner_steps=2, progress=False)
    tuning_calls = sum(n + 1 for n in inversion.stats["iterations"])
    assert inversion.stats["unet_calls"] == STEPS + tuning_calls  # DDIM inversion, then the tuned steps alone
    calls = family.forward_calls
    replayed = replay(pipe, [inversion])
    assert family.forward_calls - calls == STEPS and torch.equal(replayed, inversion.reconstruction)


def saved_bytes(pipe, checkpointing: bool) -> int:
    """Bytes the autograd graph of one tuning forward keeps for the backward pass (saved-tensor hooks)."""
    pipe.unet.enable_gradient_checkpointing() if checkpointing else pipe.unet.disable_gradient_checkpointing()
    family = ptiedit.model_family(pipe)
    cond = family.null_conditioning().map(lambda t: t.clone().requires_grad_(True))
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        family.predict(torch.randn(4, 4, 8, 8), 500, cond).eps.sum().backward()
    return total[0]


def test_gradient_checkpointing_lowers_stage_one_memory():
    """diffusers >= 0.33 checkpoints whenever grad mode is on (0.42.1: `torch.is_grad_enabled() and
    self.gradient_checkpointing`), also in eval mode, where ptiedit runs; older versions checked self.training."""
    pipe = prepare_pipeline(raw_pipeline(), "cpu")
    plain, checkpointed = saved_bytes(pipe, False), saved_bytes(pipe, True)
    assert not pipe.unet.training and checkpointed < 0.5 * plain, (plain, checkpointed)


def test_batched_inversion_matches_one_by_one_within_rounding():
    """Batch members stop tuning at different iterations, so an image's last evaluation runs in a batch of the
    images still tuning, and the UNet rounds differently at each batch size: replay is bit-exact one by one
    (B = 1 in both stages) and otherwise equal up to fp32 rounding. Measured on the tiny epsilon model (latents of
    std ~1.1): z_T up to 6.2e-6 apart, stage-1 reconstructions batched against one by one up to 8e-5, replays at
    another batch size than the tuning's up to 5e-5; the tolerances below are 3x and 6x those."""
    pipe = prepare_pipeline(raw_pipeline(), "cpu")
    images = [Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8))
              for seed in (1, 2, 3)]
    options = dict(steps=STEPS, inner_steps=3, early_stop=0.2, progress=False)  # stops some images early
    batched = ptiedit.invert(pipe, images, **options)
    assert len({tuple(inv.stats["iterations"]) for inv in batched}) > 1  # they stop at different iterations
    alone = [ptiedit.invert(pipe, im, **options) for im in images]
    together = replay(pipe, batched)
    for b, (inv, single) in enumerate(zip(batched, alone)):
        assert torch.equal(replay(pipe, [single]), single.reconstruction)
        torch.testing.assert_close(inv.z_T, single.z_T, rtol=0, atol=2e-5)
        for latent in (single.reconstruction, replay(pipe, [inv]), together[b:b + 1]):
            torch.testing.assert_close(latent, inv.reconstruction, rtol=0, atol=5e-4)


def test_sdedit_gives_each_image_its_own_noise_and_takes_a_generator(tiny_pipe, image):
    twice = ptiedit.invert(tiny_pipe, [image, image], method="sdedit", strength=1.0, seed=3)
    assert not torch.equal(twice[0].z_T, twice[1].z_T)
    one_by_one = [ptiedit.invert(tiny_pipe, [image, image], method="sdedit", strength=1.0, seed=3, max_batch=1)]
    assert not torch.equal(one_by_one[0][0].z_T, one_by_one[0][1].z_T)  # one stream across batches
    seeded = ptiedit.invert(tiny_pipe, image, method="sdedit", strength=1.0, seed=3)
    generated = ptiedit.invert(tiny_pipe, image, method="sdedit", strength=1.0,
                               generator=torch.Generator().manual_seed(3))
    assert torch.equal(seeded.z_T, generated.z_T) and torch.equal(seeded.z_T, twice[0].z_T)
    listed = ptiedit.invert(tiny_pipe, [image, image], method="sdedit", strength=1.0,
                            generator=[torch.Generator().manual_seed(s) for s in (3, 3)])
    assert torch.equal(listed[0].z_T, seeded.z_T) and torch.equal(listed[1].z_T, seeded.z_T)
    assert listed[1].settings["generator_seed"] == 3 and json.dumps(listed[1].settings)
    with pytest.raises(ValueError, match="generators"):
        ptiedit.invert(tiny_pipe, [image, image], method="sdedit", generator=[torch.Generator()])


def test_plain_diffusers_generates_from_the_embedded_folder():
    from diffusers import StableDiffusionPipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = StableDiffusionPipeline.from_pretrained(EMBEDDED_MODEL)
    pipe.set_progress_bar_config(disable=True)
    images = pipe("a red circle on a white background", num_inference_steps=2, output_type="np").images
    assert images.shape == (1, 64, 64, 3) and np.isfinite(images).all()
