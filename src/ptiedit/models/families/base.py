"""What every family's adapter shares: identity, geometry, prompt checks, the VAE and the call counter.

An adapter owns what differs between families: prompt encoding (through the pipeline's own `encode_prompt`),
the unconditional branch, the denoiser call with any added conditions, the VAE, the schedule, the default
resolution and the components that make up the model's identity. Everything else (the samplers, PTI, the
baselines, P2P, save/load, the bench) sees only `family.predict(z, t, cond) -> Prediction`, `Conditioning` and
`family.schedule(steps, size) -> Schedule`.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image

from ...diffusion.conditioning import Conditioning
from ...diffusion.ddim import Prediction, Schedule, make_schedule
from ...images import fit_to_model


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the tokenizer's limit; the message names the dropped words."""


class NonFiniteError(ValueError):
    """A latent or image held NaN or inf (typically fp16 overflow)."""


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{what} holds NaN or inf values (half-precision overflow?); try --dtype bf16 or fp32")
    return x


class Family:
    """The base adapter; subclasses set name, label, pipeline_class, scheduler_class and the denoiser."""

    name = label = pipeline_class = ""
    scheduler_class = "DDIMScheduler"  # what models.loading.prepare_pipeline gives the pipeline
    load_options: dict = {}
    default_guidance = 7.5  # invert()'s guidance when none is given
    attention_editing = True  # editing/p2p.py's processors fit the denoiser's attention layers (UNets)
    distilled_guidance: float | None = None  # a guidance-distilled denoiser's guidance input (FLUX.1-dev); else None

    def __init__(self, pipe):
        self.pipe = pipe
        self.forward_calls = 0  # counted for the speed benchmark and the early-stopping tests

    # Identity and geometry -------------------------------------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        """The network stage 1 differentiates through (the UNet or the transformer)."""
        return self.pipe.unet

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The modules whose weights define the model (fingerprinted)."""
        raise NotImplementedError

    @property
    def settings(self) -> dict:
        """Family settings that change the denoiser's function besides its weights (fingerprinted)."""
        return {}

    @property
    def tokenizers(self) -> list:
        return [self.pipe.tokenizer]

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device  # the compute device, also under model CPU offload

    @property
    def default_size(self) -> int:
        """Side in pixels of the square the model was trained at."""
        raise NotImplementedError

    @property
    def size_multiple(self) -> int:
        raise NotImplementedError

    def fit(self, image: Image.Image) -> Image.Image:
        """The image at about the model's pixel count, aspect ratio kept (images.fit_to_model)."""
        return fit_to_model(image, self.default_size ** 2, self.size_multiple)

    def schedule(self, steps: int, size: tuple[int, int]) -> Schedule:
        """The sampling schedule for images of `size` (width, height) pixels, as the family's pipeline sets it."""
        return make_schedule(self.pipe.scheduler, steps)

    # Text ------------------------------------------------------------------------------------------------------
    def warn_if_truncated(self, prompt: str) -> None:
        for tokenizer in self.tokenizers:
            limit, ids = tokenizer.model_max_length, tokenizer(prompt).input_ids
            if len(ids) > limit:
                dropped = tokenizer.decode(ids[limit - 1:-1]).strip()
                warnings.warn(f"prompt is longer than {limit} tokens; dropped: {dropped!r}", PromptTruncatedWarning)
                return

    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Conditioning:
        """The conditioning (batch 1, fp32) the pipeline itself would use for `prompt`."""
        self.warn_if_truncated(prompt)
        return self.pipeline_encoding(prompt).to(dtype=torch.float32)

    def pipeline_encoding(self, prompt: str) -> Conditioning:
        raise NotImplementedError

    def null_conditioning(self) -> Conditioning:
        """The unconditional branch, by the pipeline's convention (default: the empty prompt)."""
        return self.encode_prompt("")

    # Denoiser --------------------------------------------------------------------------------------------------
    def __call__(self, z: torch.Tensor, t, cond: Conditioning) -> torch.Tensor:
        """eps(z, t, c) in fp32."""
        return self.predict(z, t, cond).eps

    def predict(self, z: torch.Tensor, t, cond: Conditioning) -> Prediction:
        raise NotImplementedError

    @contextmanager
    def distilled_guidance_at(self, value: float | None):
        """Inside, the denoiser runs at distilled guidance input `value` (None: at the model's own); a model
        without that input (SD, SDXL, SD3, FLUX.1-schnell) refuses a value in one line."""
        if value is None:
            yield
            return
        if self.distilled_guidance is None:
            raise ValueError(f"this {self.label} model has no distilled guidance input (FLUX.1-dev has one)")
        kept, self.distilled_guidance = self.distilled_guidance, float(value)
        try:
            yield
        finally:
            self.distilled_guidance = kept

    # Images ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Latents z_0 (B, C, h, w) in fp32: posterior means, minus the VAE's shift_factor (SD3, FLUX), times its
        scaling_factor (deterministic)."""
        vae = self.pipe.vae
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1)
                         for im in images]).permute(0, 3, 1, 2)
        latent = vae.encode(x.to(self.device, vae.dtype)).latent_dist.mean.float()
        latent = (latent - (vae.config.get("shift_factor") or 0.0)) * vae.config.scaling_factor
        # contiguous: a channels-last latent would round differently from its saved copy and break bit-exact replay
        return check_finite(latent, "the encoded latent").contiguous()

    @torch.no_grad()
    def decode_pixels(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (B, C, h, w) to float images (B, 3, H, W) in [0, 1]; refuses non-finite results rather
        than writing black PNGs."""
        vae = self.pipe.vae
        check_finite(z, "the sampled latent")
        latent = z / vae.config.scaling_factor + (vae.config.get("shift_factor") or 0.0)
        x = check_finite(vae.decode(latent.to(self.device, vae.dtype)).sample.float(), "the decoded image")
        return (x.clamp(-1, 1) + 1) / 2

    def decode_latents(self, z: torch.Tensor) -> list[Image.Image]:
        """Decode latents (B, C, h, w) to RGB images (decode_pixels, rounded to 8 bits)."""
        return pil_images(self.decode_pixels(z))


def pil_images(pixels: torch.Tensor) -> list[Image.Image]:
    """Float images (B, 3, H, W) in [0, 1] as 8-bit RGB images."""
    return [Image.fromarray(p) for p in (pixels * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()]
