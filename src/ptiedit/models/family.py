"""Model families: the one seam between diffusers pipelines and ptiedit's samplers and methods.

An adapter owns what differs between families: prompt encoding (through the pipeline's own `encode_prompt`),
the unconditional branch, the UNet call with any added conditions, the VAE, the default resolution and the
components that make up the model's identity. Everything else (DDIM, PTI, the baselines, P2P, save/load, the
bench) sees only `family(z, t, cond) -> eps` and `Conditioning`.
"""
from __future__ import annotations

import json
import warnings

import numpy as np
import torch
from PIL import Image

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Prediction, ddim_scheduler
from ..images import fit_to_model


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the tokenizer's limit; the message names the dropped words."""


class NonFiniteError(ValueError):
    """A latent or image held NaN or inf (typically fp16 overflow)."""


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(x).all():
        raise NonFiniteError(f"{what} holds NaN or inf values (half-precision overflow?); try --dtype bf16 or fp32")
    return x


class StableDiffusion:
    """Stable Diffusion 1.x/2.x: one CLIP text encoder, token embeddings only, empty-prompt negative."""

    name = "sd"
    label = "Stable Diffusion 1.x/2.x"
    pipeline_class = "StableDiffusionPipeline"
    load_options = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}

    @staticmethod
    def matches(components: set[str]) -> bool:
        """Whether a model_index.json listing these components is of this family."""
        return {"unet", "vae", "text_encoder", "tokenizer"} <= components and "text_encoder_2" not in components

    def __init__(self, pipe):
        self.pipe = pipe
        ddim = ddim_scheduler(pipe.scheduler)  # the DDIM of the pipeline's scheduler config, whatever its class
        self.prediction_type = ddim.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"unsupported prediction type {self.prediction_type!r}")
        self.alphas_cumprod = ddim.alphas_cumprod.double()
        self.forward_calls = 0  # counted for the speed benchmark and the early-stopping tests

    # Identity and geometry -------------------------------------------------------------------------------------
    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The modules whose weights define the model (fingerprinted)."""
        return {"unet": self.pipe.unet, "vae": self.pipe.vae, "text_encoder": self.pipe.text_encoder}

    @property
    def tokenizers(self) -> list:
        return [self.pipe.tokenizer]

    @property
    def device(self) -> torch.device:
        return self.pipe._execution_device  # the compute device, also under model CPU offload

    @property
    def default_size(self) -> int:
        """Side in pixels of the square the model was trained at."""
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's downsampling times the UNet's."""
        return self.pipe.vae_scale_factor * 2 ** (len(self.pipe.unet.config.block_out_channels) - 1)

    def fit(self, image: Image.Image) -> Image.Image:
        """The image at about the model's pixel count, aspect ratio kept (images.fit_to_model)."""
        return fit_to_model(image, self.default_size ** 2, self.size_multiple)

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
        """The pipeline's own encode_prompt, without classifier-free guidance (no negative branch)."""
        tokens, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
        return Conditioning(tokens)

    def null_conditioning(self) -> Conditioning:
        """The unconditional branch, by the pipeline's convention (SD: the empty prompt)."""
        return self.encode_prompt("")

    # Denoiser --------------------------------------------------------------------------------------------------
    def unet_inputs(self, z: torch.Tensor, cond: Conditioning, dtype: torch.dtype) -> dict:
        """Keyword arguments of the UNet call besides the latent and timestep, in the UNet's dtype."""
        return {"encoder_hidden_states": cond.tokens.to(dtype)}

    def __call__(self, z: torch.Tensor, t, cond: Conditioning) -> torch.Tensor:
        """eps(z, t, c) in fp32, whatever the UNet predicts (epsilon, v as in SD 2.x, or x0)."""
        return self.predict(z, t, cond).eps

    def predict(self, z: torch.Tensor, t, cond: Conditioning) -> Prediction:
        """x0 and eps in fp32 from the UNet's output, each computed directly as DDIMScheduler.step does.

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

    # Images ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """Latents z_0 (B, C, h, w) in fp32: posterior means times vae.config.scaling_factor (deterministic)."""
        vae = self.pipe.vae
        x = torch.stack([torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 127.5 - 1)
                         for im in images]).permute(0, 3, 1, 2)
        latent = vae.encode(x.to(self.device, vae.dtype)).latent_dist.mean.float()
        # contiguous: a channels-last latent would round differently from its saved copy and break bit-exact replay
        return check_finite(latent * vae.config.scaling_factor, "the encoded latent").contiguous()

    @torch.no_grad()
    @torch.no_grad()
    def decode_pixels(self, z: torch.Tensor) -> torch.Tensor:
        """Decode latents (B, C, h, w) to float images (B, 3, H, W) in [0, 1]; refuses non-finite results rather
        than writing black PNGs."""
        vae = self.pipe.vae
        check_finite(z, "the sampled latent")
        x = check_finite(vae.decode((z / vae.config.scaling_factor).to(self.device, vae.dtype)).sample.float(),
                         "the decoded image")
        return (x.clamp(-1, 1) + 1) / 2

    def decode_latents(self, z: torch.Tensor) -> list[Image.Image]:
        """Decode latents (B, C, h, w) to RGB images (decode_pixels, rounded to 8 bits)."""
        pixels = (self.decode_pixels(z) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray(p) for p in pixels]


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
    def matches(components: set[str]) -> bool:
        # Both encoders: the refiner (text_encoder_2 only) conditions on an aesthetic score instead of the size.
        return {"unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"} <= components

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


FAMILIES = (StableDiffusion, StableDiffusionXL)


def family_of_index(index: dict):
    """The family whose components a model_index.json lists."""
    components = {name for name, value in index.items()
                  if not name.startswith("_") and isinstance(value, (list, tuple)) and value[0] is not None}
    for family in FAMILIES:
        if family.matches(components):
            return family
    raise ValueError(f"unsupported pipeline {index.get('_class_name')!r}; ptiedit supports "
                     f"{', '.join(f.pipeline_class for f in FAMILIES)} layouts")


def family_label(name: str) -> str:
    """A family's name as users know it ("sdxl" -> "Stable Diffusion XL (sdxl)"), for error messages."""
    labels = {family.name: family.label for family in FAMILIES}
    return f"{labels[name]} ({name})" if name in labels else repr(name)


def adapter_key(pipe) -> tuple:
    """What an adapter is built from: the pipeline's component objects and its scheduler's config."""
    modules = tuple((name, id(module)) for name, module in pipe.components.items() if module is not None)
    return modules, json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)


def model_family(pipe) -> StableDiffusion:
    """The pipeline's adapter, kept on the pipeline and made again when a component or the scheduler changes."""
    key = adapter_key(pipe)
    if getattr(pipe, "ptiedit_family", None) is None or pipe.ptiedit_family_key != key:
        pipe.ptiedit_family, pipe.ptiedit_family_key = family_of_index(dict(pipe.config))(pipe), key
    return pipe.ptiedit_family
