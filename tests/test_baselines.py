"""Baseline inversions (null-text, negative-prompt, SDEdit) and Prompt-to-Prompt on tiny random pipelines."""
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.editing import edit as edit_module
from ptiedit.editing.edit import edit_latents
from ptiedit.editing.p2p import AttentionReplace, P2PAttnProcessor, P2PConfig, token_alignment
from ptiedit.inversion.result import Inversion
from ptiedit.models.loading import EMBEDDED_MODEL

SOURCE = "a red circle"
STEPS = 4


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def invert(pipe, image, method, **options):
    return ptiedit.invert(pipe, image, method=method, prompt=SOURCE, steps=STEPS, progress=False, **options)


def encode(pipe, image) -> torch.Tensor:
    return ptiedit.model_family(pipe).encode_images([image])


def reconstruction(pipe, inversion) -> torch.Tensor:
    return edit_latents(pipe, inversion, "", [0.0], progress=False)


@pytest.mark.parametrize("method", ["null_text", "negative_prompt", "sdedit"])
def test_baseline_runs_end_to_end_and_round_trips(tiny_pipe, image, method, tmp_path):
    inversion = invert(tiny_pipe, image, method)
    assert inversion.method == method
    edited = ptiedit.edit(tiny_pipe, inversion, "a blue circle", 1.0, progress=False)
    assert edited.size == (16, 16)
    inversion.save(tmp_path / "inv.safetensors")
    loaded = Inversion.load(tmp_path / "inv.safetensors")
    for name, tensor in inversion.tensors().items():
        assert torch.equal(loaded.tensors()[name], tensor), name
    assert (loaded.method, loaded.settings, loaded.stats) == (method, inversion.settings, inversion.stats)


def test_null_text_conditions_on_the_source_and_tunes_one_null_per_step(tiny_pipe, image):
    inversion = invert(tiny_pipe, image, "null_text", inner_steps=3)
    assert torch.equal(inversion.cond.tokens, ptiedit.model_family(tiny_pipe).encode_prompt(SOURCE).tokens)
    assert inversion.uncond.per_step and inversion.uncond.tokens.shape[0] == STEPS
    assert not torch.equal(inversion.uncond.tokens[0], inversion.uncond.tokens[-1])  # tuned, warm-started step to step


def test_null_text_loss_decreases_within_each_step(tiny_pipe, image):
    stats = invert(tiny_pipe, image, "null_text").stats
    initial, final = np.array(stats["initial_loss"]), np.array(stats["loss"])
    assert np.all(final <= initial * (1 + 1e-6)), (initial, final)
    assert final.sum() < 0.99 * initial.sum(), (initial, final)


def test_null_text_stops_early_without_an_extra_forward(tiny_pipe, image):
    """Inversion (T) + conditional branch (T) + one evaluation per step (T): the kept evaluation is the last."""
    stopped = invert(tiny_pipe, image, "null_text", early_stop=1e3)
    assert stopped.stats["iterations"] == [0] * STEPS
    assert stopped.stats["unet_calls"] == 3 * STEPS
    full = invert(tiny_pipe, image, "null_text", inner_steps=2, early_stop=0.0)
    assert full.stats["iterations"] == [2] * STEPS
    assert full.stats["unet_calls"] == 2 * STEPS + 3 * STEPS


def test_null_text_reconstructs_better_than_ddim_with_cfg(tiny_pipe, image):
    z0 = encode(tiny_pipe, image)
    errors = {method: float(((reconstruction(tiny_pipe, invert(tiny_pipe, image, method)) - z0) ** 2).mean())
              for method in ("null_text", "ddim")}
    assert errors["null_text"] < 0.9 * errors["ddim"], errors


@pytest.mark.skipif(not (EMBEDDED_MODEL / "model_index.json").exists(),
                    reason=f"the embedded shapes-world model is not in {EMBEDDED_MODEL} yet")
def test_null_text_loss_decreases_on_the_embedded_model():
    from ptiedit.toyworld.captions import caption
    from ptiedit.toyworld.render import render
    from ptiedit.toyworld.scene import random_scene

    pipe = ptiedit.load_pipeline()
    scene = random_scene(random.Random(1))
    stats = ptiedit.invert(pipe, render(scene), method="null_text", prompt=caption(scene), steps=5,
                           inner_steps=5, progress=False).stats
    initial, final = np.array(stats["initial_loss"]), np.array(stats["loss"])
    assert np.all(final <= initial * (1 + 1e-6)), (initial, final)
    assert final.sum() < initial.sum() or not any(stats["iterations"]), (initial, final)  # all stopped at once


def test_negative_prompt_reconstruction_ignores_guidance(tiny_pipe, image):
    """cond = uncond = source, so CFG at w = 7.5 replays the unguided (w = 1) DDIM sampler."""
    npi = invert(tiny_pipe, image, "negative_prompt")
    assert torch.equal(npi.cond.tokens, npi.uncond.tokens)
    unguided = ptiedit.invert(tiny_pipe, image, method="ddim", prompt=SOURCE, steps=STEPS, guidance=1.0,
                              progress=False)
    torch.testing.assert_close(reconstruction(tiny_pipe, npi), reconstruction(tiny_pipe, unguided),
                               atol=1e-4, rtol=1e-4)


def test_sdedit_at_strength_zero_is_the_vae_round_trip(tiny_pipe, image):
    inversion = invert(tiny_pipe, image, "sdedit", strength=0.0)
    assert len(inversion.timesteps) == 0 and inversion.stats["unet_calls"] == 0
    edited = ptiedit.edit(tiny_pipe, inversion, "a blue circle", 1.0, progress=False)
    expected = ptiedit.model_family(tiny_pipe).decode_latents(encode(tiny_pipe, image))[0]
    assert np.array_equal(np.asarray(edited), np.asarray(expected))


def test_sdedit_starts_part_way_with_seeded_noise(tiny_pipe, image):
    half = invert(tiny_pipe, image, "sdedit", strength=0.5, seed=3)
    full_schedule = invert(tiny_pipe, image, "ddim").timesteps
    assert torch.equal(half.timesteps, full_schedule[STEPS // 2:])
    # z_T is z0 diffused to the first remaining timestep: sqrt(a) z0 + sqrt(1 - a) noise
    a = float(tiny_pipe.scheduler.alphas_cumprod[half.timesteps[0]])
    noise = (half.z_T - a ** 0.5 * encode(tiny_pipe, image)) / (1 - a) ** 0.5
    torch.testing.assert_close(noise, torch.randn(noise.shape, generator=torch.Generator().manual_seed(3)),
                               atol=1e-4, rtol=1e-4)
    assert torch.equal(half.z_T, invert(tiny_pipe, image, "sdedit", strength=0.5, seed=3).z_T)
    assert not torch.equal(half.z_T, invert(tiny_pipe, image, "sdedit", strength=0.5, seed=4).z_T)
    assert torch.equal(invert(tiny_pipe, image, "sdedit", strength=1.0).timesteps, full_schedule)


@pytest.mark.parametrize("options", [{"strength": 1.5}, {"strength": -0.1}, {"seed": "x"}])
def test_sdedit_rejects_bad_options(tiny_pipe, image, options):
    with pytest.raises(ValueError, match="strength|seed"):
        invert(tiny_pipe, image, "sdedit", **options)


@pytest.mark.parametrize("method", ["ddim", "null_text", "negative_prompt", "pti"])
def test_p2p_with_identical_prompts_reproduces_the_source_trajectory(tiny_pipe, image, method):
    """Full cross- and self-attention injection between identical branches must change nothing."""
    inversion = invert(tiny_pipe, image, method, **({"inner_steps": 2} if method in ("pti", "null_text") else {}))
    eta = 0.0 if method == "pti" else 1.0  # PTI's source conditioning is c_t itself
    edited = edit_latents(tiny_pipe, inversion, SOURCE, [eta], progress=False,
                          p2p=P2PConfig(cross_replace=1.0, self_replace=1.0))
    torch.testing.assert_close(edited, reconstruction(tiny_pipe, inversion), atol=1e-4, rtol=1e-4)


def test_p2p_controls_the_target_only_for_the_requested_steps(tiny_pipe, image):
    inversion = invert(tiny_pipe, image, "negative_prompt")
    plain = edit_latents(tiny_pipe, inversion, "a blue circle", [1.0], progress=False)
    uncontrolled = edit_latents(tiny_pipe, inversion, "a blue circle", [1.0], progress=False,
                                p2p=P2PConfig(cross_replace=0.0))
    torch.testing.assert_close(uncontrolled, plain, atol=1e-4, rtol=1e-4)
    controlled = edit_latents(tiny_pipe, inversion, "a blue circle", [1.0], progress=False,
                              p2p=P2PConfig(cross_replace=1.0))
    assert (controlled - plain).abs().max() > 1e-2


def test_p2p_replaces_attention_during_the_first_fraction_of_steps(tiny_pipe, image, monkeypatch):
    """With 4 steps, cross 0.5 and self 0.25: every cross-attention layer at steps 0 and 1, self at step 0."""
    inversion = invert(tiny_pipe, image, "negative_prompt")
    controlled = {True: [], False: []}
    replace = AttentionReplace.__call__

    def recording(self, probs, heads, is_cross):
        controlled[is_cross].append(self.step)
        return replace(self, probs, heads, is_cross)

    monkeypatch.setattr(AttentionReplace, "__call__", recording)
    edit_latents(tiny_pipe, inversion, "a blue circle", [1.0], progress=False,
                 p2p=P2PConfig(cross_replace=0.5, self_replace=0.25))
    layers = len(tiny_pipe.unet.attn_processors) // 2  # one self- and one cross-attention per transformer block
    assert controlled == {True: [0] * layers + [1] * layers, False: [0] * layers}


def test_p2p_on_several_images_in_one_batch_equals_one_by_one(tiny_pipe, image):
    """Each image's targets take their own source's attention, aligned to their own prompt."""
    from ptiedit.editing.edit import sample_edits

    other = Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    first = invert(tiny_pipe, image, "negative_prompt")
    second = ptiedit.invert(tiny_pipe, other, method="negative_prompt", prompt="a big blue square", steps=STEPS,
                            progress=False)
    jobs = [(first, "a blue circle", 1.0), (second, "a big green square", 1.0), (first, "a big blue circle", 1.0)]
    config = P2PConfig(cross_replace=0.5, self_replace=0.25)
    batched = [s.latent for s in sample_edits(tiny_pipe, jobs, progress=False, mode="paper", p2p=config)]
    for job, z in zip(jobs, batched):
        alone = edit_latents(tiny_pipe, job[0], job[1], [job[2]], progress=False, mode="paper", p2p=config)
        torch.testing.assert_close(z, alone, atol=1e-4, rtol=1e-4)
    assert (batched[0] - batched[2]).abs().max() > 1e-3  # the targets differ: each row really is its own job
    # A sweep of settings over one source branch equals each setting alone.
    sweep = [P2PConfig(cross_replace=0.25), P2PConfig(cross_replace=1.0, self_replace=0.5)]
    swept = [s.latent for s in sample_edits(tiny_pipe, [jobs[0], jobs[0]], progress=False, mode="paper", p2p=sweep)]
    for config, z in zip(sweep, swept):
        alone = edit_latents(tiny_pipe, first, jobs[0][1], [1.0], progress=False, mode="paper", p2p=config)
        torch.testing.assert_close(z, alone, atol=1e-4, rtol=1e-4)
    assert (swept[0] - swept[1]).abs().max() > 1e-3


def test_p2p_restores_the_attention_processors(tiny_pipe, image, monkeypatch):
    unet = tiny_pipe.unet
    before = unet.attn_processors
    inversion = invert(tiny_pipe, image, "negative_prompt")
    edit_latents(tiny_pipe, inversion, "a blue circle", [1.0], progress=False, p2p=P2PConfig())
    assert all(unet.attn_processors[name] is p for name, p in before.items())

    def failing_sampler(*args, **kwargs):
        assert all(isinstance(p, P2PAttnProcessor) for p in unet.attn_processors.values())
        raise RuntimeError("sampler failed")

    monkeypatch.setattr(edit_module, "sample_ddim", failing_sampler)
    with pytest.raises(RuntimeError, match="sampler failed"):
        edit_latents(tiny_pipe, inversion, "a blue circle", [1.0], progress=False, mode="paper", p2p=P2PConfig())
    assert all(unet.attn_processors[name] is p for name, p in before.items())


def test_token_alignment():
    from ptiedit.toyworld.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(Path(__file__).parent / "fixtures" / "tokenizer")
    mapper, replaced = token_alignment(tokenizer, "a red circle", "a blue circle")  # word swap: position by position
    assert torch.equal(mapper, torch.arange(77)) and bool(replaced.all())
    mapper, replaced = token_alignment(tokenizer, "a red circle", "a big red circle")
    # <bos> a [big] red circle <eos>: shared words keep their source position, the new word its own attention
    assert mapper[:6].tolist() == [0, 1, 2, 2, 3, 4] and replaced[:6].tolist() == [True, True, False, True, True, True]


def test_p2p_config_rejects_fractions_outside_the_unit_interval():
    with pytest.raises(ValueError, match="cross_replace"):
        P2PConfig(cross_replace=1.5)
    with pytest.raises(ValueError, match="self_replace"):
        P2PConfig(self_replace=-0.2)
