"""Prompt Tuning Inversion on flow-matching models (Stable Diffusion 3, FLUX.1) through the family seam, on tiny
seeded random-weight pipelines (tests/fixtures/sd3-tiny, flux-tiny: configs only; their T5 slots take the CLIP
stand-in tokenizer, models/random_weights.py, as no T5 tokenizer can be built offline)."""
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.diffusion.ddim import sample_ddim, schedule_from_timesteps
from ptiedit.inversion.result import Inversion
from ptiedit.models.family import Flux, StableDiffusion3, family_of_index
from ptiedit.models.loading import prepare_pipeline
from ptiedit.models.random_weights import random_pipeline

from .conftest import FIXTURES, build_tiny_pipeline
from .test_user_pipelines import replay

STEPS = 4
FAMILIES = {"sd3": StableDiffusion3, "flux": Flux}
# fp32, 4 steps, largest absolute difference from the pipeline's own __call__: measured SD3 3.5e-6 (guidance 7,
# latents of std 0.49), FLUX 2.7e-7 (std 0.28). ptiedit takes sigma = t / 1000 in float64 and steps through x0 and eps,
# diffusers takes its float32 sigmas and steps z + (sigma' - sigma) v.
TOLERANCE = 1e-5


def tiny_flow(name: str, dtype=torch.float32):
    return prepare_pipeline(random_pipeline(FIXTURES / f"{name}-tiny", seed=0, dtype=dtype), "cpu")


@pytest.fixture(scope="module", params=list(FAMILIES))
def flow(request, tmp_path_factory):
    """(name, pipeline) loaded through load_pipeline from a saved tiny pipeline folder."""
    folder = tmp_path_factory.mktemp(f"{request.param}-tiny")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random_pipeline(FIXTURES / f"{request.param}-tiny", seed=0).save_pretrained(folder, safe_serialization=True)
    return request.param, ptiedit.load_pipeline(folder, device="cpu")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def test_loading_picks_the_flow_family_and_its_scheduler(flow):
    name, pipe = flow
    family = ptiedit.model_family(pipe)
    assert type(family) is FAMILIES[name] and family.name == name
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert family_of_index(type(pipe).load_config(FIXTURES / f"{name}-tiny")) is FAMILIES[name]
    schedule = family.schedule(STEPS, (16, 16))
    assert schedule.flow and schedule.timesteps.is_floating_point() and schedule.level(STEPS).noise == 0


def test_unknown_transformer_layouts_are_refused():
    with pytest.raises(ValueError, match="unsupported pipeline 'OtherPipeline'"):
        family_of_index({"_class_name": "OtherPipeline", "transformer": ["diffusers", "OtherTransformer"]})


def pipeline_call(name: str, pipe, z_T: torch.Tensor, prompt: str, guidance: float) -> torch.Tensor:
    """The pipeline's own __call__ from z_T (B, C, h, w), its output latents in the same layout."""
    side = z_T.shape[-1] * pipe.vae_scale_factor
    if name == "sd3":
        return pipe(prompt, latents=z_T.clone(), num_inference_steps=STEPS, guidance_scale=guidance, height=side,
                    width=side, output_type="latent").images
    packed = pipe._pack_latents(z_T.clone(), *z_T.shape)
    out = pipe(prompt, latents=packed, num_inference_steps=STEPS, guidance_scale=Flux.distilled_guidance_default,
               height=side, width=side, output_type="latent").images
    return pipe._unpack_latents(out, side, side, pipe.vae_scale_factor)


def test_the_sampler_at_eta_one_after_flow_inversion_is_the_pipelines_own_call(flow, image):
    """The same sigmas (shift, FLUX's dynamic shift by token count), packing and guidance as diffusers."""
    name, pipe = flow
    inversion = ptiedit.invert(pipe, image, method="ddim", prompt="a red circle", steps=STEPS, progress=False)
    assert inversion.guidance == FAMILIES[name].default_guidance
    edited = replay(pipe, [inversion], "a blue circle")
    with torch.no_grad():
        reference = pipeline_call(name, pipe, inversion.z_T, "a blue circle", inversion.guidance)
    assert edited.std() > 0.1
    torch.testing.assert_close(edited, reference, rtol=0, atol=TOLERANCE)


def test_flux_makes_one_transformer_call_per_step_at_its_default_guidance(image):
    pipe = tiny_flow("flux")
    family = ptiedit.model_family(pipe)
    inversion = ptiedit.invert(pipe, image, method="ddim", steps=STEPS, progress=False)
    assert inversion.stats["unet_calls"] == STEPS
    calls = family.forward_calls
    replay(pipe, [inversion], "a blue circle")
    assert family.forward_calls - calls == STEPS


@pytest.fixture(scope="module")
def inversions(flow, image):
    """PTI and the untuned flow inversion of the same image with the same steps and guidance. Measured squared
    errors of their reconstructions from z0: SD3 0.0077 against 0.033 (4.3x), FLUX 0.019 against 0.078 (4.1x);
    10 inner steps give 3.8x and 2.3x."""
    name, pipe = flow
    options = dict(prompt="a red circle", steps=STEPS, progress=False)
    return (ptiedit.invert(pipe, image, inner_steps=20, early_stop=0.0, **options),
            ptiedit.invert(pipe, image, method="ddim", **options))


def test_pti_loss_falls_and_eta_zero_replays_bit_for_bit(flow, inversions):
    _, pipe = flow
    tuned, _ = inversions
    assert all(after < before for after, before in zip(tuned.stats["loss"], tuned.stats["initial_loss"]))
    assert torch.equal(replay(pipe, [tuned]), tuned.reconstruction)


def test_tuning_reconstructs_at_least_twice_as_close_to_z0_as_plain_flow_inversion(flow, inversions, image):
    _, pipe = flow
    family = ptiedit.model_family(pipe)
    tuned, plain = inversions
    z0 = family.encode_images([family.fit(image)])
    error = lambda z: float((z - z0).square().mean())  # noqa: E731
    untuned = replay(pipe, [plain])  # the source prompt, the same steps and guidance
    assert error(tuned.reconstruction) * 2 < error(untuned), (error(tuned.reconstruction), error(untuned))


def test_inversion_file_round_trip_replays(flow, inversions, tmp_path):
    _, pipe = flow
    tuned, _ = inversions
    tuned.save(tmp_path / "inv.safetensors")
    loaded = Inversion.load(tmp_path / "inv.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(tuned.tensors().values(), loaded.tensors().values()))
    assert loaded.timesteps.dtype == torch.float32 and loaded.fingerprint == tuned.fingerprint
    assert torch.equal(replay(pipe, [loaded]), tuned.reconstruction)


def test_an_inversion_from_another_family_is_refused_in_one_line(flow, inversions):
    name, pipe = flow
    tuned, _ = inversions
    others = [prepare_pipeline(build_tiny_pipeline(), "cpu"), tiny_flow("flux" if name == "sd3" else "sd3")]
    for other in others:
        with pytest.raises(ValueError, match=f"made with a .* \\({name}\\) model, but the loaded pipeline") as error:
            ptiedit.edit(other, tuned, "a blue circle", progress=False)
        assert "\n" not in str(error.value)


def test_a_changed_distilled_guidance_is_refused(image):
    pipe = tiny_flow("flux")
    inversion = ptiedit.invert(pipe, image, method="ddim", steps=2, progress=False)
    pipe.ptiedit_distilled_guidance = 5.0
    with pytest.raises(ValueError, match="distilled_guidance differs"):
        ptiedit.edit(pipe, inversion, "a blue circle", progress=False)


def test_flux_schnell_has_no_guidance_input(image):
    from diffusers import FluxTransformer2DModel

    pipe = tiny_flow("flux")
    torch.manual_seed(0)
    pipe.transformer = FluxTransformer2DModel.from_config({**pipe.transformer.config, "guidance_embeds": False})
    family = ptiedit.model_family(pipe)
    assert family.distilled_guidance is None
    inversion = ptiedit.invert(pipe, image, steps=2, inner_steps=2, progress=False)
    assert torch.equal(replay(pipe, [inversion]), inversion.reconstruction)


def test_fp16_on_the_cpu_runs_and_replays(image):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = tiny_flow("sd3", torch.float16)
    inversion = ptiedit.invert(pipe, image, steps=2, inner_steps=2, progress=False)
    assert inversion.fingerprint["dtype"] == "fp16" and torch.isfinite(inversion.z_T).all()
    assert torch.equal(replay(pipe, [inversion]), inversion.reconstruction)


def test_default_faithful_edit_on_sd3_replays_at_eta_zero_and_p2p_is_refused(image):
    from ptiedit.editing.edit import sample_edits
    from ptiedit.editing.p2p import P2PConfig

    pipe = tiny_flow("sd3")
    inversion = ptiedit.invert(pipe, image, steps=STEPS, inner_steps=2, progress=False)
    # the default FaithfulConfig (self-attention injection on): mask and blending only on a transformer
    kept, edited = sample_edits(pipe, [(inversion, "a blue circle", 0.0), (inversion, "a blue circle", 1.0)],
                                progress=False)
    assert torch.equal(kept.latent, inversion.reconstruction) and not kept.mask.any()
    assert edited.mask is not None and torch.isfinite(edited.latent).all()
    edited_image = ptiedit.edit(pipe, inversion, "a blue circle", 1.0, progress=False)
    assert edited_image.size == image.size
    with pytest.raises(ValueError, match="needs a UNet"):
        sample_edits(pipe, [(inversion, "a blue circle", 1.0)], p2p=P2PConfig(), progress=False)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_pti_pipeline_from_a_raw_flow_pipeline_inverts_and_replays(name, image):
    raw = random_pipeline(FIXTURES / f"{name}-tiny", seed=0)
    scheduler = raw.scheduler
    pipe = ptiedit.PTIPipeline.from_pipe(raw)
    assert raw.scheduler is scheduler and pipe.transformer is raw.transformer
    inversion = pipe.invert(image=image, num_inference_steps=STEPS, inner_steps=2).inversion
    assert inversion.fingerprint["family"] == name
    replayed = pipe(prompt="a blue circle", inversion=inversion, eta=0.0, output_type="latent").images
    assert torch.equal(replayed, inversion.reconstruction)


def test_sdedit_noises_to_the_flow_level(image):
    pipe = tiny_flow("sd3")
    family = ptiedit.model_family(pipe)
    half = ptiedit.invert(pipe, image, method="sdedit", steps=STEPS, strength=0.5, seed=3, progress=False)
    level = schedule_from_timesteps(pipe.scheduler, half.timesteps).level(0)
    z0 = family.encode_images([image])
    noise = (half.z_T - level.signal * z0) / level.noise
    torch.testing.assert_close(noise, torch.randn(noise.shape, generator=torch.Generator().manual_seed(3)),
                               atol=1e-4, rtol=1e-4)
    assert torch.isfinite(sample_ddim(family, half.z_T, schedule_from_timesteps(pipe.scheduler, half.timesteps),
                                      half.cond, half.uncond, half.guidance, progress=False)).all()


def test_gpu_check_quick_rows_run_on_the_tiny_flow_folders(tmp_path):
    import json
    import shutil

    from .test_gpu_check import gpu_check

    for name in FAMILIES:
        shutil.copytree(FIXTURES / f"{name}-tiny", tmp_path / name)
        (tmp_path / name / "architecture.json").write_text(json.dumps({"name": name, "size": 16, "quick_size": 16}))
    out = tmp_path / "table.md"
    assert gpu_check().main(["--device", "cpu", "--quick", "--architectures", str(tmp_path), "--out", str(out)]) == 0
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines()
            if line.startswith(("| sd3", "| flux"))]
    assert len(rows) == 2 and all(row[-1] == "ok" and row[-3] == "0.0e+00" for row in rows)


@pytest.fixture(scope="module")
def flow_dir(flow, tmp_path_factory):
    """The saved tiny folder of `flow` (the CLI loads it by path)."""
    name, pipe = flow
    folder = tmp_path_factory.mktemp(f"{name}-cli")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        random_pipeline(FIXTURES / f"{name}-tiny", seed=0).save_pretrained(folder, safe_serialization=True)
    return folder


def test_cli_inverts_edits_and_reconstructs_with_a_flow_folder(capsys, tmp_path, flow, flow_dir):
    from .test_cli import run, write_image

    name, _ = flow
    image, inv = write_image(tmp_path / "input.png"), tmp_path / "inv.safetensors"
    code, _, err = run(capsys, "invert", image, "-o", inv, "--model", flow_dir, "--steps", "2", "--inner-steps", "1",
                       "--quiet")
    assert code == 0, err
    inversion = ptiedit.Inversion.load(inv)
    assert inversion.fingerprint["family"] == name
    assert inversion.guidance == FAMILIES[name].default_guidance  # no --guidance: the family's (FLUX.1: 1)
    code, _, err = run(capsys, "edit", image, "--target", "a blue circle", "-o", tmp_path / "e.png", "--model",
                       flow_dir, "--inversion", inv, "--quiet")  # the default faithful mode
    assert code == 0, err
    assert run(capsys, "reconstruct", inv, "-o", tmp_path / "r.png", "--model", flow_dir)[0] == 0
    assert (tmp_path / "e.png").exists() and (tmp_path / "r.png").exists()


def test_batch_edits_with_a_flow_folder(capsys, tmp_path, flow, flow_dir):
    from .test_cli import run, write_image

    name, _ = flow
    for i in range(2):
        write_image(tmp_path / f"img{i}.png", size=(16, 16 + 4 * i), seed=i)
    manifest = tmp_path / "edits.csv"
    manifest.write_text("image,target,eta,steps,inner_steps\nimg0.png,a blue circle,0.6,2,1\n"
                        "img1.png,a red square,0.8,2,1\n")
    code, _, err = run(capsys, "batch", manifest, "--out", tmp_path / "out", "--model", flow_dir, "--mode", "paper",
                       "--save-inversions", "--quiet")
    assert code == 0, err
    for row in ("row00000", "row00001"):
        assert ptiedit.Inversion.load(tmp_path / "out" / f"{row}.safetensors").fingerprint["family"] == name
