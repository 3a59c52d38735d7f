"""ptiedit's DDIM against diffusers itself (StableDiffusion(XL)Pipeline.__call__, DDIMInverseScheduler), and PTI
against a denoiser whose eps is exact, on tiny seeded random-weight models."""
import numpy as np
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.diffusion.conditioning import Conditioning
from ptiedit.diffusion.ddim import ddim_invert, make_schedule, sample_ddim
from ptiedit.inversion.pti import prompt_tuning_inversion
from ptiedit.models.family import StableDiffusion
from ptiedit.models.loading import prepare_pipeline
from ptiedit.models.random_weights import random_pipeline

from .conftest import FIXTURES, build_tiny_pipeline
from .test_user_pipelines import replay

STEPS = 5
# fp32, largest absolute differences measured over 5 steps at guidance 7.5 (latents of std 0.3-2.4): SD 8.8e-5
# (epsilon) and 3.3e-5 (v), SDXL 4.8e-5 and 7.5e-5. ptiedit takes sqrt(alpha-bar) in float64, diffusers in
# float32, and the eps form's 1 / sqrt(alpha-bar) (15x at t = 981) and the guidance amplify that rounding.
TOLERANCE = 3e-4
INVERSION_TOLERANCE = 1e-5  # measured 1.2e-7 (epsilon) and 4.8e-7 (v, fed ptiedit's eps); the v gap itself: 1.4


def tiny(family: str, prediction_type: str):
    from diffusers import DDIMScheduler

    pipe = build_tiny_pipeline() if family == "sd" else random_pipeline(FIXTURES / "sdxl-tiny", seed=0)
    # clip_sample off: ptiedit never clips x0 (SD's own configs set it off; DDIMScheduler's default is on)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type,
                                               clip_sample=False)
    return prepare_pipeline(pipe, "cpu")


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_an_edit_at_eta_one_is_the_pipelines_own_call_from_z_T(family, prediction_type, image):
    pipe = tiny(family, prediction_type)
    inversion = ptiedit.invert(pipe, image, method="ddim", prompt="a red circle", steps=STEPS, progress=False)
    edited = replay(pipe, [inversion], "a blue circle")  # eta 1: the target prompt, the null branch, z*_T
    side = inversion.z_T.shape[-1] * pipe.vae_scale_factor
    reference = pipe("a blue circle", latents=inversion.z_T.clone(), num_inference_steps=STEPS, guidance_scale=7.5,
                     height=side, width=side, output_type="latent").images
    assert edited.std() > 0.1
    torch.testing.assert_close(edited, reference, rtol=0, atol=TOLERANCE)


def inverse_scheduler_run(pipe, z0, cond, prediction_type=None):
    """DDIM inversion with diffusers' DDIMInverseScheduler, as its pipelines run it."""
    from diffusers import DDIMInverseScheduler

    config = dict(pipe.scheduler.config)
    if prediction_type is not None:
        config["prediction_type"] = prediction_type
    inverse = DDIMInverseScheduler.from_config(config)
    inverse.set_timesteps(STEPS)
    acp, z = pipe.scheduler.alphas_cumprod, z0
    for t in inverse.timesteps:
        v = pipe.unet(z, t, encoder_hidden_states=cond.tokens).sample
        out = v if prediction_type is None else acp[t] ** 0.5 * v + (1 - acp[t]) ** 0.5 * z
        z = inverse.step(out, t, z).prev_sample
    return z


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_against_diffusers_ddim_inverse_scheduler(prediction_type):
    """Epsilon: the same steps. v-prediction differs on purpose: DDIMInverseScheduler turns v into eps with the
    alpha-bar of the latent's own (lower) noise level, ptiedit with that of the timestep the UNet was given, so
    that inversion uses the very eps function eps(z, t) that sampling at t uses and the two mirror each other.
    Fed that eps, DDIMInverseScheduler gives ptiedit's result."""
    pipe = tiny("sd", prediction_type)
    family = ptiedit.model_family(pipe)
    z0, cond = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), family.encode_prompt("a cat")
    ours = ddim_invert(family, z0, make_schedule(pipe.scheduler, STEPS), cond, progress=False)[-1]
    with torch.no_grad():
        theirs = inverse_scheduler_run(pipe, z0, cond)
        if prediction_type == "v_prediction":
            assert (ours - theirs).abs().max() > 0.1  # the documented difference is real
            theirs = inverse_scheduler_run(pipe, z0, cond, prediction_type="epsilon")
    torch.testing.assert_close(ours, theirs, rtol=0, atol=INVERSION_TOLERANCE)


class GaussianDenoiser(torch.nn.Module):
    """The exact denoiser for data z0 ~ N(mu + c, s^2 I), c the conditioning's tokens in the latent's shape.

    With z = sqrt(a) z0 + sqrt(1 - a) n: E[z0 | z] = mu_c + sqrt(a) s^2 (z - sqrt(a) mu_c) / (a s^2 + 1 - a), and
    E[eps | z] = sqrt(1 - a) (z - sqrt(a) mu_c) / (a s^2 + 1 - a), finite also at a = 0.
    """

    def __init__(self, alphas_cumprod, prediction_type, mu, s=0.5):
        super().__init__()
        self.acp, self.prediction_type, self.mu, self.s = alphas_cumprod.double(), prediction_type, mu, s
        self.dtype = torch.float32

    def forward(self, z, t, encoder_hidden_states):
        a, s2 = float(self.acp[int(t)]), self.s ** 2
        mu = self.mu + encoder_hidden_states.reshape(z.shape)
        x0 = mu + a ** 0.5 * s2 * (z - a ** 0.5 * mu) / (a * s2 + 1 - a)
        eps = (1 - a) ** 0.5 * (z - a ** 0.5 * mu) / (a * s2 + 1 - a)
        out = {"epsilon": eps, "sample": x0, "v_prediction": a ** 0.5 * eps - (1 - a) ** 0.5 * x0}[self.prediction_type]
        return type("Output", (), {"sample": out.float()})


@pytest.mark.parametrize("config", [{"prediction_type": "epsilon"}, {"prediction_type": "v_prediction"},
                                    {"prediction_type": "v_prediction", "rescale_betas_zero_snr": True,
                                     "timestep_spacing": "trailing"}], ids=["epsilon", "v", "v-zero-snr"])
def test_pti_reconstructs_gaussian_data_with_an_exact_denoiser(config):
    """With 10 steps the DDIM round trip misses z0 by its discretization error; PTI's tuned steps each land on
    z*_{t-1} within early_stop, so an off-by-one in the target index or the alpha pairing fails here. Measured
    errors relative to z0's variance: DDIM 2.2e-2 (3.5e-2 at zero SNR), PTI 7.5e-8 (6.4e-7); asserted: 1e-5."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              set_alpha_to_one=False, steps_offset=1, clip_sample=False, **config)
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 4, 8, 8, generator=gen)
    z0 = mu + 0.5 * torch.randn(1, 4, 8, 8, generator=gen)
    pipe = type("Pipe", (), {"unet": GaussianDenoiser(scheduler.alphas_cumprod, config["prediction_type"], mu),
                             "scheduler": scheduler})()
    model, null = StableDiffusion(pipe), Conditioning(torch.zeros(1, 64, 4))
    schedule = make_schedule(scheduler, 10)
    result = prompt_tuning_inversion(model, z0, schedule, prompt=null, null=null, guidance=3.0, inner_steps=50,
                                     lr=5e-2, early_stop=1e-7, progress=False)
    plain = sample_ddim(model, result.z_T, schedule, null, null, 3.0, progress=False)
    error = lambda z: float((z - z0).square().mean() / z0.var())  # noqa: E731
    tuned = sample_ddim(model, result.z_T, schedule, result.cond, null, 3.0, progress=False)
    assert torch.equal(tuned, result.reconstruction)
    assert error(tuned) < 1e-5 and error(plain) > 1e-2, (error(tuned), error(plain))
