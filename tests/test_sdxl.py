"""Stable Diffusion XL as a model family, on a tiny seeded random-weight SDXL pipeline.

The pipeline is built from the configs in fixtures/sdxl-tiny (two text encoders of different widths, 32 + 64,
so the token concatenation is real; force_zeros_for_empty_prompt; a force_upcast VAE; several transformer layers
per block), saved with StableDiffusionXLPipeline.save_pretrained and loaded back through load_pipeline.
"""
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.editing.edit import edit_latents
from ptiedit.editing.p2p import AttentionReplace, P2PConfig
from ptiedit.models.family import StableDiffusion, StableDiffusionXL, family_of_index
from ptiedit.models.fingerprint import pipeline_fingerprint
from ptiedit.models.random_weights import random_pipeline

from .conftest import FIXTURES, build_tiny_pipeline
from .test_cli import assert_bad_inputs_fail_cleanly, assert_one_error_line, run, write_image

TINY_SDXL = FIXTURES / "sdxl-tiny"
SOURCE, TARGET = "a red circle", "a blue circle"
STEPS = 4
WIDTHS = (32, 64)  # hidden sizes of text_encoder and text_encoder_2 in the fixture
POOLED = 40  # text_encoder_2's projection_dim


def save(pipe, folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory) -> Path:
    return save(random_pipeline(TINY_SDXL, seed=0), tmp_path_factory.mktemp("sdxl-tiny"))


@pytest.fixture(scope="module")
def sdxl(sdxl_dir):
    return ptiedit.load_pipeline(sdxl_dir, device="cpu")


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return save(build_tiny_pipeline("epsilon"), tmp_path_factory.mktemp("sd-tiny"))


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def inversion(sdxl, image):
    return ptiedit.invert(sdxl, image, steps=STEPS, inner_steps=3, progress=False)


def invert(pipe, image, method, **options):
    return ptiedit.invert(pipe, image, method=method, prompt=SOURCE, steps=STEPS, progress=False, **options)


# ------------------------------------------------------------------------------------------------ the family

def test_loading_an_sdxl_folder_picks_the_sdxl_family(sdxl, sdxl_dir):
    family = ptiedit.model_family(sdxl)
    assert type(sdxl).__name__ == "StableDiffusionXLPipeline" and type(family) is StableDiffusionXL
    assert family_of_index(type(sdxl).load_config(sdxl_dir)) is StableDiffusionXL
    assert type(sdxl.scheduler).__name__ == "DDIMScheduler"  # the folder's Euler config, as DDIM
    assert pipeline_fingerprint(sdxl)["family"] == "sdxl"
    assert set(family.components) == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert family.default_size == 16  # UNet sample size x VAE factor (1024 on the real model)


def test_prompts_encode_to_both_encoders_tokens_and_the_pooled_embedding(sdxl):
    family = ptiedit.model_family(sdxl)
    cond = family.encode_prompt(SOURCE)
    assert cond.tokens.shape == (1, 77, sum(WIDTHS)) and cond.pooled.shape == (1, POOLED)
    assert cond.tokens.dtype == cond.pooled.dtype == torch.float32
    tokens, _, pooled, _ = sdxl.encode_prompt(SOURCE, do_classifier_free_guidance=False)
    assert torch.equal(cond.tokens, tokens) and torch.equal(cond.pooled, pooled)  # the pipeline's own encoding


def test_the_unconditional_branch_follows_force_zeros_for_empty_prompt(sdxl):
    family = ptiedit.model_family(sdxl)
    null = family.null_conditioning()
    assert sdxl.config.force_zeros_for_empty_prompt
    assert not null.tokens.any() and not null.pooled.any() and null.pooled.shape == (1, POOLED)
    sdxl.register_to_config(force_zeros_for_empty_prompt=False)
    try:
        empty = family.null_conditioning()
    finally:
        sdxl.register_to_config(force_zeros_for_empty_prompt=True)
    expected = family.encode_prompt("")
    assert empty.pooled.any() and torch.equal(empty.tokens, expected.tokens)
    assert torch.equal(empty.pooled, expected.pooled)


def test_time_ids_are_the_image_size_the_latent_implies(sdxl):
    family = ptiedit.model_family(sdxl)
    cond = family.encode_prompt(SOURCE).expand(2)
    added = family.unet_inputs(torch.zeros(2, 4, 8, 12), cond, torch.float32)["added_cond_kwargs"]
    # (original height, width, crop top, left, target height, width); the tiny VAE scales by 2
    assert added["time_ids"].tolist() == [[16, 24, 0, 0, 16, 24]] * 2
    assert torch.equal(added["text_embeds"], cond.pooled)


def test_fp16_keeps_the_force_upcast_vae_in_fp32(sdxl_dir, image):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fp16 on the CPU is slow
        pipe = ptiedit.load_pipeline(sdxl_dir, device="cpu", dtype="fp16")
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float32
    inversion = ptiedit.invert(pipe, image, steps=2, inner_steps=1, progress=False)
    edited = np.asarray(ptiedit.edit(pipe, inversion, TARGET, 1.0, progress=False))
    assert edited.shape == (16, 16, 3)  # decode_latents refuses non-finite results


# ------------------------------------------------------------------------------------------------------- PTI

def test_eta_zero_replays_the_tuned_reconstruction_bit_for_bit(sdxl, image):
    inversion = ptiedit.invert(sdxl, image, steps=STEPS, inner_steps=3, progress=False)
    assert torch.equal(edit_latents(sdxl, inversion, TARGET, [0.0], progress=False), inversion.reconstruction)


def test_pti_tunes_tokens_and_pooled_and_the_loss_falls(inversion):
    assert inversion.cond.per_step and inversion.cond.pooled.shape == (STEPS, 1, POOLED)
    for tensor in (inversion.cond.tokens, inversion.cond.pooled):
        assert not torch.equal(tensor[0], tensor[-1])  # warm-started and tuned step to step
    initial, final = np.array(inversion.stats["initial_loss"]), np.array(inversion.stats["loss"])
    assert np.all(final <= initial * (1 + 1e-6)), (initial, final)
    assert final.sum() < 0.99 * initial.sum(), (initial, final)


def test_batched_etas_equal_one_by_one(sdxl, inversion):
    etas = [0.0, 0.5, 1.0]
    batched = edit_latents(sdxl, inversion, TARGET, etas, progress=False)
    single = torch.cat([edit_latents(sdxl, inversion, TARGET, [e], progress=False) for e in etas])
    torch.testing.assert_close(batched, single, atol=2e-4, rtol=1e-4)  # batched kernels round differently
    assert not torch.allclose(batched[0], batched[2])


def test_save_load_round_trip_is_bit_exact(sdxl, inversion, tmp_path):
    inversion.save(tmp_path / "inv.safetensors")
    loaded = ptiedit.Inversion.load(tmp_path / "inv.safetensors")
    saved = inversion.tensors()
    assert {"cond.pooled", "uncond.pooled"} <= saved.keys() and loaded.tensors().keys() == saved.keys()
    for name, tensor in loaded.tensors().items():
        assert torch.equal(tensor, saved[name]), name
    assert loaded.fingerprint == inversion.fingerprint and loaded.fingerprint["family"] == "sdxl"
    assert torch.equal(edit_latents(sdxl, inversion, TARGET, [0.7], progress=False),
                       edit_latents(sdxl, loaded, TARGET, [0.7], progress=False))


def test_an_inversion_from_the_other_family_is_refused(sdxl, sd_dir, inversion, image):
    sd = ptiedit.load_pipeline(sd_dir, device="cpu")
    assert type(ptiedit.model_family(sd)) is StableDiffusion
    both = r"Stable Diffusion XL \(sdxl\).*Stable Diffusion 1\.x/2\.x \(sd\)"
    with pytest.raises(ValueError, match=both):
        ptiedit.edit(sd, inversion, TARGET, 0.5, progress=False)
    sd_inversion = ptiedit.invert(sd, image, steps=2, inner_steps=1, progress=False)
    with pytest.raises(ValueError, match=r"Stable Diffusion 1\.x/2\.x \(sd\).*Stable Diffusion XL \(sdxl\)"):
        ptiedit.edit(sdxl, sd_inversion, TARGET, 0.5, progress=False)


# ------------------------------------------------------------------------------------------------- baselines

@pytest.mark.parametrize("method", ["ddim", "null_text", "negative_prompt", "sdedit"])
def test_baseline_runs_end_to_end(sdxl, image, method, tmp_path):
    inversion = invert(sdxl, image, method, **({"inner_steps": 2} if method == "null_text" else {}))
    edited = ptiedit.edit(sdxl, inversion, TARGET, 1.0, progress=False)
    assert edited.size == (16, 16)
    inversion.save(tmp_path / "inv.safetensors")
    loaded = ptiedit.Inversion.load(tmp_path / "inv.safetensors")
    assert loaded.method == method and torch.equal(loaded.uncond.pooled, inversion.uncond.pooled)


def test_null_text_tunes_the_unconditional_pair_from_zeros(sdxl, image):
    inversion = invert(sdxl, image, "null_text", inner_steps=2, early_stop=0.0)
    uncond = inversion.uncond
    assert uncond.per_step and uncond.tokens.shape[0] == uncond.pooled.shape[0] == STEPS
    assert uncond.tokens.any() and uncond.pooled.any()  # moved away from the zero null branch
    assert torch.equal(inversion.cond.pooled, ptiedit.model_family(sdxl).encode_prompt(SOURCE).pooled)


@pytest.mark.parametrize("method", ["negative_prompt", "pti"])
def test_p2p_with_identical_prompts_reproduces_the_source(sdxl, image, method, monkeypatch):
    """Full cross- and self-attention injection between identical branches changes nothing, and does reach
    every attention layer of SDXL's multi-layer transformer blocks."""
    inversion = invert(sdxl, image, method, **({"inner_steps": 2} if method == "pti" else {}))
    eta = 0.0 if method == "pti" else 1.0  # PTI's source conditioning is c_t itself
    controlled = []
    replace = AttentionReplace.__call__

    def recording(self, probs, heads, is_cross):
        controlled.append((self.step, is_cross))
        return replace(self, probs, heads, is_cross)

    monkeypatch.setattr(AttentionReplace, "__call__", recording)
    edited = edit_latents(sdxl, inversion, SOURCE, [eta], progress=False,
                          p2p=P2PConfig(cross_replace=1.0, self_replace=1.0))
    reconstruction = edit_latents(sdxl, inversion, "", [0.0], progress=False)
    torch.testing.assert_close(edited, reconstruction, atol=1e-4, rtol=1e-4)
    layers = len(sdxl.unet.attn_processors)
    assert layers == 16  # 2 transformer layers per block in the mid and first up blocks: 8 x (self, cross)
    assert len(controlled) == STEPS * layers and sum(cross for _, cross in controlled) == STEPS * layers // 2


def test_p2p_injects_self_attention_at_the_same_relative_coarseness_on_sdxl_latents():
    """P2P's 16x16 layers of SD's 64x64 latent; SDXL at 1024 px (128x128 latents) has no layer below 32x32."""
    def control(latent_side):
        target = (torch.arange(77), torch.ones(77, dtype=torch.bool), P2PConfig(self_replace=1.0))
        return AttentionReplace([[target]], steps=10, latent_tokens=latent_side ** 2)

    sd, sdxl = control(64), control(128)
    assert [sd.active(False, side ** 2) for side in (8, 16, 32, 64)] == [True, True, False, False]
    assert [sdxl.active(False, side ** 2) for side in (32, 64)] == [True, False]


# ------------------------------------------------------------------------------------------------------- CLI

def test_cli_bad_inputs_with_an_sdxl_folder(capsys, tmp_path, sdxl_dir):
    assert_bad_inputs_fail_cleanly(capsys, tmp_path, write_image(tmp_path / "input.png"), str(sdxl_dir))


def test_cli_runs_and_refuses_cross_family_inversions(capsys, tmp_path, sdxl_dir, sd_dir):
    image = write_image(tmp_path / "input.png")
    inv = tmp_path / "inv.safetensors"
    assert run(capsys, "invert", image, "-o", inv, "--model", sdxl_dir, "--steps", "2", "--inner-steps", "1",
               "--quiet")[0] == 0
    code, _, err = run(capsys, "edit", image, "--target", TARGET, "-o", tmp_path / "e.png", "--model", sdxl_dir,
                       "--inversion", inv, "--quiet")
    assert code == 0, err
    code, _, err = run(capsys, "reconstruct", inv, "-o", tmp_path / "r.png", "--model", sd_dir)
    assert_one_error_line(code, err, "Stable Diffusion XL (sdxl)", "Stable Diffusion 1.x/2.x (sd)")
    assert not (tmp_path / "r.png").exists()


def test_cli_refuses_an_sdxl_refiner_layout_in_one_line(capsys, tmp_path, sdxl_dir):
    """The refiner has only the second text encoder (and aesthetic-score conditioning): not supported."""
    import json
    import shutil

    refiner = tmp_path / "refiner"
    shutil.copytree(sdxl_dir, refiner)
    index = json.loads((refiner / "model_index.json").read_text())
    index.update(_class_name="StableDiffusionXLImg2ImgPipeline", text_encoder=[None, None], tokenizer=[None, None])
    (refiner / "model_index.json").write_text(json.dumps(index))
    code, _, err = run(capsys, "invert", write_image(tmp_path / "input.png"), "-o", tmp_path / "inv.safetensors",
                       "--model", refiner)
    assert_one_error_line(code, err, "unsupported pipeline 'StableDiffusionXLImg2ImgPipeline'")


def test_batch_edits_with_an_sdxl_folder(capsys, tmp_path, sdxl_dir):
    for i in range(2):
        write_image(tmp_path / f"img{i}.png", size=(24, 20 + 4 * i), seed=i)
    manifest = tmp_path / "edits.csv"
    manifest.write_text("image,target,eta,steps,inner_steps\nimg0.png,a blue circle,0.6,2,1\n"
                        "img1.png,a red square,0.8,2,1\n")
    code, _, err = run(capsys, "batch", manifest, "--out", tmp_path / "out", "--model", sdxl_dir,
                       "--save-inversions", "--quiet")
    assert code == 0, err
    for row in ("row00000", "row00001"):
        assert (tmp_path / "out" / f"{row}.png").exists()
        assert ptiedit.Inversion.load(tmp_path / "out" / f"{row}.safetensors").fingerprint["family"] == "sdxl"
