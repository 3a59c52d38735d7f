"""Stable Diffusion 1.x/2.x and XL: DDPM-trained UNets sampled with DDIM."""
from __future__ import annotations

import torch

from ...diffusion.conditioning import Conditioning
from ...diffusion.ddim import Prediction, ddim_scheduler
from .base import Family


class StableDiffusion(Family):
    """Stable Diffusion 1.x/2.x: one CLIP text encoder, token embeddings only, empty-prompt negative."""

    name = "sd"
    label = "Stable Diffusion 1.x/2.x"
    pipeline_class = "StableDiffusionPipeline"
    load_options = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    @staticmethod
    def matches(components: dict[str, str]) -> bool:
        """Whether a model_index.json listing these components (name: class) is of this family."""
        return {"unet", "vae", "text_encoder", "tokenizer"} <= set(components) and "text_encoder_2" not in components

    def __init__(self, pipe):
        super().__init__(pipe)
        ddim = ddim_scheduler(pipe.scheduler)  # the DDIM of the pipeline's scheduler config, whatever its class
        self.prediction_type = ddim.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.alphas_cumprod = ddim.alphas_cumprod.double()

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.pipe.unet, "vae": self.pipe.vae, "text_encoder": self.pipe.text_encoder}

    @property
    def default_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's downsampling times the UNet's."""
        return self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    def pipeline_encoding(self, prompt: str) -> Conditioning:
        """The pipeline's own encode_prompt, without classifier-free guidance (no negative branch)."""
        tokens, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
        return Conditioning(tokens)

    def unet_inputs(self, z: torch.Tensor, cond: Conditioning, dtype: torch.dtype) -> dict:
        """Keyword arguments of the UNet call besides the latent and timestep, in the UNet's dtype."""
        return {"encoder_hidden_states": cond.tokens.to(dtype)}

    def predict(self, z: torch.Tensor, t, cond: Conditioning) -> Prediction:
        """x0 and eps in fp32 from the UNet's output (epsilon, v as in SD 2.x, or x0), each computed directly as
        DDIMScheduler.step does.

        The UNet may run in fp16/bf16: inputs are cast to its dtype and the output back to fp32, so gradients
        with respect to an fp32 conditioning flow through the casts.
        """
        self.forward_calls += 1
        unet = self.pipe.unet
        dtype = unet.dtype  # looked up once: diffusers walks every module for it (~1 ms on the embedded UNet)
        t = torch.as_tensor(t)  # the caller's timestep, on the CPU from make_schedule: reading it costs no GPU sync
        out = unet(z.to(dtype), t.to(z.device), **self.unet_inputs(z, cond.expand(len(z)), dtype)).sample.float()
        a = float(self.alphas_cumprod[int(t.reshape(-1)[0])])
        z = z.float()
        if self.prediction_type == "epsilon":
            return Prediction((z - (1 - a) ** 0.5 * out) / a ** 0.5, out)
        if self.prediction_type == "v_prediction":  # v = sqrt(a) eps - sqrt(1-a) x0
            return Prediction(a ** 0.5 * z - (1 - a) ** 0.5 * out, a ** 0.5 * out + (1 - a) ** 0.5 * z)
        return Prediction(out, (z - a ** 0.5 * out) / (1 - a) ** 0.5)


class StableDiffusionXL(StableDiffusion):
    """Stable Diffusion XL (Podell et al. 2023): two CLIP text encoders and added conditions.

    Tokens are both encoders' penultimate hidden states, concatenated (77 x 2048 on the base model); pooled is
    the second encoder's projected output. The UNet also takes the size and crop conditioning (add_time_ids).
    The unconditional branch is zeros (tokens and pooled) when the pipeline sets force_zeros_for_empty_prompt.
    """

    name = "sdxl"
    label = "Stable Diffusion XL"
    pipeline_class = "StableDiffusionXLPipeline"
    load_options = {"add_watermarker": False}  # ptiedit decodes itself; the pipeline's watermarker never runs

    @staticmethod
    def matches(components: dict[str, str]) -> bool:
        # Both encoders: the refiner (text_encoder_2 only) conditions on an aesthetic score instead of the size.
        return {"unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"} <= set(components)

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        return {**super().components, "text_encoder_2": self.pipe.text_encoder_2}

    @property
    def tokenizers(self) -> list:
        return [self.pipe.tokenizer, self.pipe.tokenizer_2]

    def pipeline_encoding(self, prompt: str) -> Conditioning:
        tokens, _, pooled, _ = self.pipe.encode_prompt(prompt, device=self.device, num_images_per_prompt=1,
                                                       do_classifier_free_guidance=False)
        return Conditioning(tokens, pooled)

    def null_conditioning(self) -> Conditioning:
        """Zeros for tokens and pooled under force_zeros_for_empty_prompt (the base model), else the empty prompt."""
        empty = self.encode_prompt("")
        return empty.map(torch.zeros_like) if self.pipe.config.force_zeros_for_empty_prompt else empty

    def time_ids(self, z: torch.Tensor, pooled: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """add_time_ids (B, 6) for the image the latent decodes to: original size = target size, crop (0, 0),
        as the pipeline sets them when it generates at that size."""
        size = (z.shape[-2] * self.pipe.vae_scale_factor, z.shape[-1] * self.pipe.vae_scale_factor)
        # the pipeline checks the UNet's added-embedding width against time ids + pooled width
        ids = self.pipe._get_add_time_ids(size, (0, 0), size, dtype=dtype,
                                          text_encoder_projection_dim=pooled.shape[-1])
        return ids.to(z.device).expand(len(z), -1)

    def unet_inputs(self, z: torch.Tensor, cond: Conditioning, dtype: torch.dtype) -> dict:
        added = {"text_embeds": cond.pooled.to(dtype), "time_ids": self.time_ids(z, cond.pooled, dtype)}
        return {**super().unet_inputs(z, cond, dtype), "added_cond_kwargs": added}
