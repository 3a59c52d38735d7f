"""Rectified-flow families: Stable Diffusion 3 / 3.5 and FLUX.1, transformers that predict a velocity.

The adapter turns the velocity v = eps - x0 of z = (1 - sigma) x0 + sigma eps into Prediction(x0, eps) =
(z - sigma v, z + (1 - sigma) v), so DDIM's step at flow levels is the flow ODE's Euler step and every sampler and
method runs unchanged. Schedules are the scheduler's own (shift, FLUX's resolution-dependent shift). FLUX's 2x2
latent packing stays inside the adapter: samplers see (B, C, h, w).
"""
from __future__ import annotations

import numpy as np
import torch

from ...diffusion.conditioning import Conditioning
from ...diffusion.ddim import Prediction, Schedule, make_schedule
from ...diffusion.flow import dynamic_shift, flow_scheduler, sigma_of
from .base import Family


class FlowFamily(Family):
    """What SD3 and FLUX share: the transformer, the flow scheduler, velocity -> (x0, eps)."""

    scheduler_class = "FlowMatchEulerDiscreteScheduler"
    max_shift_default = 1.15  # the pipeline's max_shift where the scheduler config has none
    attention_editing = False  # joint text-image attention: P2P's processors do not apply

    def __init__(self, pipe):
        super().__init__(pipe)
        self.num_train_timesteps = flow_scheduler(pipe.scheduler).config.num_train_timesteps

    @property
    def denoiser(self) -> torch.nn.Module:
        return self.pipe.transformer

    @property
    def size_multiple(self) -> int:
        """The VAE's downsampling times the transformer's 2x2 patches."""
        return self.pipe.vae_scale_factor * 2

    def latent_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the latent of an image of `size` (width, height) pixels."""
        return size[1] // self.pipe.vae_scale_factor, size[0] // self.pipe.vae_scale_factor

    def timestep_options(self, steps: int, size: tuple[int, int]) -> dict:
        """set_timesteps' arguments besides `steps`, as the pipeline passes them (SD3: mu under dynamic shifting)."""
        if not self.pipe.scheduler.config.get("use_dynamic_shifting", False):
            return {}
        h, w = self.latent_size(size)
        return {"mu": dynamic_shift(self.pipe.scheduler, (h // 2) * (w // 2), self.max_shift_default)}

    def schedule(self, steps: int, size: tuple[int, int]) -> Schedule:
        return make_schedule(self.pipe.scheduler, steps, **self.timestep_options(steps, size))

    def velocity(self, z: torch.Tensor, t: torch.Tensor, cond: Conditioning, dtype: torch.dtype) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, z: torch.Tensor, t, cond: Conditioning) -> Prediction:
        """x0 = z - sigma v and eps = z + (1 - sigma) v in fp32 from the transformer's velocity (run in its dtype;
        gradients with respect to an fp32 conditioning flow through the casts)."""
        self.forward_calls += 1
        dtype = self.denoiser.dtype
        t = torch.as_tensor(t)  # the caller's CPU timestep: reading sigma costs no GPU sync
        v = self.velocity(z.to(dtype), t.to(z.device), cond.expand(len(z)), dtype).float()
        sigma, z = sigma_of(t, self.num_train_timesteps), z.float()
        return Prediction(z - sigma * v, z + (1 - sigma) * v)


class StableDiffusion3(FlowFamily):
    """Stable Diffusion 3 / 3.5 (Esser et al. 2024): two CLIP encoders and T5, real classifier-free guidance.

    Tokens are both CLIP encoders' penultimate hidden states, concatenated and zero-padded to T5's width, followed
    by T5's tokens (77 + 256 by default); pooled is the two CLIP pooled outputs, concatenated. The unconditional
    branch is the empty prompt through all three encoders, as the pipeline's negative prompt.
    """

    name = "sd3"
    label = "Stable Diffusion 3"
    pipeline_class = "StableDiffusion3Pipeline"
    default_guidance = 7.0  # StableDiffusion3Pipeline's guidance_scale
    max_shift_default = 1.16

    @staticmethod
    def matches(components: dict[str, str]) -> bool:
        return components.get("transformer") == "SD3Transformer2DModel"

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        names = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
        return {name: getattr(self.pipe, name) for name in names if getattr(self.pipe, name, None) is not None}

    @property
    def tokenizers(self) -> list:
        return [self.pipe.tokenizer, self.pipe.tokenizer_2]

    @property
    def default_size(self) -> int:
        return self.pipe.transformer.config.sample_size * self.pipe.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * self.pipe.transformer.config.patch_size

    def pipeline_encoding(self, prompt: str) -> Conditioning:
        tokens, _, pooled, _ = self.pipe.encode_prompt(prompt, None, None, device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
        return Conditioning(tokens, pooled)

    def velocity(self, z, t, cond, dtype):
        return self.pipe.transformer(hidden_states=z, timestep=t.expand(len(z)),
                                     encoder_hidden_states=cond.tokens.to(dtype),
                                     pooled_projections=cond.pooled.to(dtype), return_dict=False)[0]


class Flux(FlowFamily):
    """FLUX.1 (Black Forest Labs 2024): CLIP's pooled output and T5's tokens (512), latents packed in 2x2 patches.

    FLUX.1-dev is guidance-distilled: the guidance value is an input of the transformer (distilled_guidance,
    FluxPipeline's guidance_scale 3.5 unless the pipeline sets `ptiedit_distilled_guidance`) and there is no
    unconditional branch. In ptiedit's terms it runs at guidance 1 (the default here): one transformer call per
    step, which PTI's stage 1 and sampling share, so PTI tunes the conditional itself (T5 tokens and pooled) so
    that the unguided step lands on the inverted trajectory, and editing's eta blends c_target and c_t as on SD.
    Guidance above 1 is FluxPipeline's true_cfg_scale with the empty prompt as the negative (two calls per step).
    FLUX.1-schnell has no guidance input at all (distilled_guidance None). The schedule is FluxPipeline's:
    sigmas linspace(1, 1/T, T), shifted by mu from the image's token count.
    """

    name = "flux"
    label = "FLUX.1"
    pipeline_class = "FluxPipeline"
    default_guidance = 1.0
    distilled_guidance_default = 3.5  # FluxPipeline's guidance_scale
    max_sequence_length = 512  # FluxPipeline's

    @staticmethod
    def matches(components: dict[str, str]) -> bool:
        return components.get("transformer") == "FluxTransformer2DModel"

    def __init__(self, pipe):
        super().__init__(pipe)
        embeds = pipe.transformer.config.guidance_embeds
        self.distilled_guidance = (float(getattr(pipe, "ptiedit_distilled_guidance", self.distilled_guidance_default))
                                   if embeds else None)

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        return {name: getattr(self.pipe, name) for name in ("transformer", "vae", "text_encoder", "text_encoder_2")}

    @property
    def settings(self) -> dict:
        return {"distilled_guidance": self.distilled_guidance}

    @property
    def default_size(self) -> int:
        return self.pipe.vae.config.sample_size  # 1024 for FLUX.1's VAE (FluxPipeline's default_sample_size 128 x 8)

    def timestep_options(self, steps: int, size: tuple[int, int]) -> dict:
        """FluxPipeline's: sigmas linspace(1, 1/T, T), and mu always (used when the scheduler shifts dynamically)."""
        h, w = self.latent_size(size)
        return {"sigmas": np.linspace(1.0, 1 / steps, steps),
                "mu": dynamic_shift(self.pipe.scheduler, (h // 2) * (w // 2), self.max_shift_default)}

    def pipeline_encoding(self, prompt: str) -> Conditioning:
        tokens, pooled, _ = self.pipe.encode_prompt(prompt, device=self.device, num_images_per_prompt=1,
                                                    max_sequence_length=self.max_sequence_length)
        return Conditioning(tokens, pooled)

    def velocity(self, z, t, cond, dtype):
        pipe, (batch, channels, h, w) = self.pipe, z.shape
        packed = pipe._pack_latents(z, batch, channels, h, w)
        guidance = None if self.distilled_guidance is None else torch.full(
            [batch], self.distilled_guidance, device=z.device, dtype=torch.float32)
        v = pipe.transformer(hidden_states=packed, timestep=t.expand(batch).to(dtype) / 1000, guidance=guidance,
                             pooled_projections=cond.pooled.to(dtype), encoder_hidden_states=cond.tokens.to(dtype),
                             txt_ids=torch.zeros(cond.tokens.shape[1], 3, device=z.device, dtype=dtype),
                             img_ids=pipe._prepare_latent_image_ids(batch, h // 2, w // 2, z.device, dtype),
                             return_dict=False)[0]
        scale = pipe.vae_scale_factor
        return pipe._unpack_latents(v, h * scale, w * scale, scale)
