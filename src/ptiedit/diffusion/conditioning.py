"""Prompt embeddings and latents: the text encoder and the VAE of a pipeline."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from PIL import Image


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the tokenizer's limit; the message names the dropped words."""


@torch.no_grad()
def encode_prompt(pipe, prompt: str) -> torch.Tensor:
    """Text-encoder hidden states (1, L, D) in fp32, as Stable Diffusion conditions on them."""
    tokenizer = pipe.tokenizer
    limit = tokenizer.model_max_length
    ids = tokenizer(prompt).input_ids
    if len(ids) > limit:
        dropped = tokenizer.decode(ids[limit - 1:-1]).strip()
        warnings.warn(f"prompt is longer than {limit} tokens; dropped: {dropped!r}", PromptTruncatedWarning)
    ids = tokenizer(prompt, padding="max_length", max_length=limit, truncation=True, return_tensors="pt").input_ids
    return pipe.text_encoder(ids.to(pipe.text_encoder.device))[0].float()


def resolution(pipe) -> int:
    return pipe.unet.config.sample_size * pipe.vae_scale_factor


@torch.no_grad()
def encode_image(pipe, image: Image.Image) -> torch.Tensor:
    """Latent z_0 (1, C, h, w) in fp32: the posterior mean times vae.config.scaling_factor (deterministic)."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    vae = pipe.vae
    latent = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean
    return latent.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(pipe, z: torch.Tensor) -> list[Image.Image]:
    """Decode latents (B, C, h, w) to RGB images."""
    vae = pipe.vae
    x = vae.decode((z / vae.config.scaling_factor).to(vae.device, vae.dtype)).sample.float()
    pixels = ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(p) for p in pixels]
