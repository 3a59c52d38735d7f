"""Behaviour of the two PTI stages and the DDIM core they stand on."""
import pytest
import torch
from PIL import Image

import ptiedit
from ptiedit.diffusion.conditioning import Conditioning
from ptiedit.diffusion.ddim import ddim_invert, make_schedule, sample_ddim
from ptiedit.models.family import StableDiffusion
from ptiedit.editing.edit import edit_latents
from ptiedit.models.fingerprint import pipeline_fingerprint


class GaussianDataUNet(torch.nn.Module):
    """Exact denoiser for data ~ N(mu, s^2 I), in the scheduler's prediction type (a closed-form stand-in)."""

    def __init__(self, alphas_cumprod, prediction_type, mu, s=0.5):
        super().__init__()
        self.acp, self.prediction_type, self.mu, self.s = alphas_cumprod.double(), prediction_type, mu, s
        self.dtype = torch.float32

    def forward(self, z, t, encoder_hidden_states):
        a = float(self.acp[int(t)])
        eps = (1 - a) ** 0.5 * (z - a ** 0.5 * self.mu) / (a * self.s ** 2 + 1 - a)
        x0 = (z - (1 - a) ** 0.5 * eps) / a ** 0.5
        out = eps if self.prediction_type == "epsilon" else a ** 0.5 * eps - (1 - a) ** 0.5 * x0
        return type("Output", (), {"sample": out.float()})


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_ddim_inversion_then_sampling_reconstructs_with_exact_model(prediction_type):
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(1, 4, 8, 8, generator=gen)
    z0 = mu + 0.5 * torch.randn(1, 4, 8, 8, generator=gen)
    pipe = type("Pipe", (), {"unet": GaussianDataUNet(scheduler.alphas_cumprod, prediction_type, mu),
                             "scheduler": scheduler})()
    model = StableDiffusion(pipe)
    c = Conditioning(torch.zeros(1, 1, 1))
    errors = {}
    for steps in (50, 200):
        schedule = make_schedule(scheduler, steps)
        z_T = ddim_invert(model, z0, schedule, c, progress=False)[-1]
        assert z_T.std() > 0.8  # really noise, not the image
        z0_back = sample_ddim(model, z_T, schedule, c, c, guidance=1.0, progress=False)
        errors[steps] = (torch.nn.functional.mse_loss(z0_back, z0) / z0.var()).item()
    # Only the ODE's discretization error remains, and it shrinks quickly with the step count.
    assert errors[200] < 2e-4 and errors[200] < errors[50] / 8


def _image(size):
    pixels = torch.zeros(size, size, 3, dtype=torch.uint8)
    pixels[:] = torch.tensor([240, 240, 240], dtype=torch.uint8)
    pixels[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = torch.tensor([220, 40, 40], dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


@pytest.fixture(scope="module")
def tiny_inversion(tiny_pipe):
    return ptiedit.invert(tiny_pipe, _image(16), steps=5, inner_steps=3, progress=False)


def test_eta_zero_replays_the_tuned_reconstruction(tiny_pipe):
    """Stage 2 at eta=0 lands on exactly the latent stage 1 produced: same c_t, same steps, same calls."""
    inversion = ptiedit.invert(tiny_pipe, _image(16), steps=5, inner_steps=3, progress=False)
    replay = edit_latents(tiny_pipe, inversion, "a green circle", [0.0], progress=False)
    assert inversion.reconstruction is not None and torch.equal(replay, inversion.reconstruction)


def test_eta_one_is_plain_target_sampling_from_z_T(tiny_pipe, tiny_inversion):
    edited = edit_latents(tiny_pipe, tiny_inversion, "a green circle", [1.0], progress=False, mode="paper")
    family = ptiedit.model_family(tiny_pipe)
    plain = sample_ddim(family, tiny_inversion.z_T, make_schedule(tiny_pipe.scheduler, 5),
                        family.encode_prompt("a green circle"), family.null_conditioning(), 7.5, progress=False)
    torch.testing.assert_close(edited, plain, atol=1e-5, rtol=1e-5)


def test_batched_etas_equal_one_by_one(tiny_pipe, tiny_inversion):
    etas = [0.0, 0.5, 1.0]
    batched = edit_latents(tiny_pipe, tiny_inversion, "a green circle", etas, progress=False)
    single = torch.cat([edit_latents(tiny_pipe, tiny_inversion, "a green circle", [e], progress=False) for e in etas])
    torch.testing.assert_close(batched, single, atol=2e-4, rtol=1e-4)  # batched kernels round differently
    assert not torch.allclose(batched[0], batched[2])  # eta really changes the result


def test_save_load_round_trip_is_bit_exact(tiny_pipe, tiny_inversion, tmp_path):
    path = tmp_path / "inv.safetensors"
    tiny_inversion.save(path)
    loaded = ptiedit.Inversion.load(path)
    saved = tiny_inversion.tensors()
    assert loaded.tensors().keys() == saved.keys()
    for name, tensor in loaded.tensors().items():
        assert torch.equal(tensor, saved[name])
    assert loaded.settings == tiny_inversion.settings and loaded.fingerprint == tiny_inversion.fingerprint
    a = edit_latents(tiny_pipe, tiny_inversion, "a blue square", [0.7], progress=False)
    b = edit_latents(tiny_pipe, loaded, "a blue square", [0.7], progress=False)
    assert torch.equal(a, b)


def test_corrupt_inversion_file_is_refused(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="bad.safetensors"):
        ptiedit.Inversion.load(path)


def test_edit_with_another_model_is_refused(tiny_inversion, tiny_pipe):
    from tests.conftest import build_tiny_pipeline

    other = build_tiny_pipeline("epsilon")
    torch.manual_seed(1)
    for p in other.unet.parameters():
        p.data.add_(torch.randn_like(p) * 0.01)  # same architecture, different weights
    other.ptiedit_model_name = tiny_pipe.ptiedit_model_name
    with pytest.raises(ValueError, match="invert the image again"):
        ptiedit.edit(other, tiny_inversion, "a green circle", 0.5, progress=False)


def test_eta_out_of_range_is_refused(tiny_pipe, tiny_inversion):
    with pytest.raises(ValueError, match="eta"):
        ptiedit.edit(tiny_pipe, tiny_inversion, "a green circle", 1.5, progress=False)
    ptiedit.edit(tiny_pipe, tiny_inversion, "a green circle", 1.5, progress=False, allow_extrapolation=True)


def test_pti_early_stopping_saves_unet_calls(tiny_pipe):
    image = _image(16)
    full = ptiedit.invert(tiny_pipe, image, steps=5, inner_steps=5, early_stop=0.0, progress=False)
    early = ptiedit.invert(tiny_pipe, image, steps=5, inner_steps=5, early_stop=1e9, progress=False)
    assert early.stats["unet_calls"] < full.stats["unet_calls"]
    assert early.stats["iterations"] == [0] * 5 and full.stats["iterations"] == [5] * 5


def test_same_weights_from_another_folder_are_accepted(tiny_model_dir, tiny_inversion, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    other = ptiedit.load_pipeline(copy, device="cpu")
    assert other.ptiedit_model_name != pipeline_fingerprint(ptiedit.load_pipeline(tiny_model_dir))["model"]
    ptiedit.edit(other, tiny_inversion, "a green circle", 0.5, progress=False)  # no ValueError


def test_batched_pti_equals_one_by_one_with_per_image_early_stopping(tiny_pipe):
    images = [_image(16), Image.fromarray((torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(2)) * 255)
                                          .byte().numpy())]
    # thresholds between the two images' losses on each tiny model, so they stop at different steps
    early_stop = 0.5 if tiny_pipe.scheduler.config.prediction_type == "epsilon" else 1.6e-2
    options = dict(steps=4, inner_steps=4, early_stop=early_stop, progress=False)
    batched = ptiedit.invert(tiny_pipe, images, **options)
    single = [ptiedit.invert(tiny_pipe, image, **options) for image in images]
    assert [b.stats["iterations"] for b in batched] == [s.stats["iterations"] for s in single]
    # each image reports the UNet calls it would have made alone, not a share of the batch's
    assert [b.stats["unet_calls"] for b in batched] == [s.stats["unet_calls"] for s in single]
    assert batched[0].stats["iterations"] != batched[1].stats["iterations"]  # they stop at different steps
    for b, s in zip(batched, single):
        # batch-1 and batch-2 matmuls round differently (and differently per thread count), over 4 DDIM steps
        torch.testing.assert_close(b.z_T, s.z_T, atol=1e-4, rtol=1e-4)
        # Adam normalizes each element's gradient, so where a gradient is ~0 batched rounding can move that
        # element of c_t by about lr; what the tuning is for, the reconstruction, agrees within 1e-3.
        torch.testing.assert_close(b.cond.tokens, s.cond.tokens, atol=5e-2, rtol=0)
        torch.testing.assert_close(edit_latents(tiny_pipe, b, "", [0.0], progress=False),
                                   edit_latents(tiny_pipe, s, "", [0.0], progress=False), atol=1e-3, rtol=0)
