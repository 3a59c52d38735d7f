"""PTIPipeline: ptiedit as one diffusers-style object, with diffusers' argument names and output conventions.

    pipe = PTIPipeline.from_pretrained(model, device="cuda", dtype=torch.float16)   # or .from_pipe(sd_or_sdxl)
    inversion = pipe.invert(image=image, num_inference_steps=50, guidance_scale=7.5).inversion
    edited = pipe(prompt="a cat wearing sunglasses", inversion=inversion, eta=0.9).images[0]

It wraps a StableDiffusionPipeline or StableDiffusionXLPipeline and calls the functional API (ptiedit.invert,
sample_edits) on it; the functional API keeps its own names (steps, guidance).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from diffusers.utils import BaseOutput
from PIL import Image

from .editing.edit import (DEFAULT_ETA, DEFAULT_MODE, EditSample, check_etas, decode_samples, mask_image,
                           sample_edits)
from .images import load_image, to_rgb
from .inversion.invert import invert as invert_images
from .inversion.result import Inversion
from .models.families.base import pil_images
from .models.family import family_of_index, model_family

OUTPUT_TYPES = ("pil", "np", "pt", "latent")
CALLBACK_TENSOR_INPUTS = ("latents",)



@dataclass
class PTIInversionOutput(BaseOutput):
    """inversion: an Inversion, or a list of them for a list of images."""

    inversion: Inversion | list[Inversion]


@dataclass
class PTIPipelineOutput(BaseOutput):
    """images: PIL images, an (B, H, W, 3) float32 array in [0, 1] ("np"), a (B, 3, H, W) float tensor in [0, 1]
    ("pt"), or the latents (B, C, h, w) ("latent"). masks: the faithful mode's edit masks (white/1: edited) in the
    same type (latent resolution for "latent"); None in paper mode."""

    images: Any
    masks: Any = None


def one_image(image) -> Image.Image:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[-1] in (3, 4):
        pixels = image if image.dtype == np.uint8 else (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
        return to_rgb(Image.fromarray(pixels))
    raise ValueError(f"image must be a PIL image, a path or an (H, W, 3) array, got {type(image).__name__}")


class PTIPipeline:
    """Prompt Tuning Inversion editing around a diffusers Stable Diffusion (1.x/2.x), SDXL, SD3 or FLUX pipeline.

    PTIPipeline(pipeline) wraps the pipeline as it is; from_pipe(pipeline) builds a new one that shares its
    components and leaves the given pipeline (its scheduler included) untouched; from_pretrained loads one.
    Attributes it does not define (unet, vae, scheduler, to, enable_vae_slicing, save_pretrained, ...) are the
    wrapped pipeline's.
    """

    def __init__(self, pipeline):
        if isinstance(pipeline, PTIPipeline):
            pipeline = pipeline.pipeline
        if not (hasattr(pipeline, "components") and hasattr(pipeline, "config")):
            raise ValueError(f"PTIPipeline needs a diffusers Stable Diffusion, SDXL, SD3 or FLUX pipeline, "
                             f"got {type(pipeline).__name__}")
        model_family(pipeline)  # refuses unsupported layouts in one line
        unet, vae = getattr(pipeline, "unet", None), pipeline.vae  # flow models have a transformer instead
        if unet is not None and unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(f"the UNet takes {unet.config.in_channels} input channels, not the VAE's "
                             f"{vae.config.latent_channels} (an inpainting model?); ptiedit needs a text-to-image UNet")
        self.pipeline = pipeline
        self.progress = True
        self._num_timesteps = 0

    # Construction ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, model: str | os.PathLike | None = None, device: str = "auto", dtype=None, *,
                        torch_dtype=None, gradient_checkpointing: bool = False, vae_slicing: bool = False,
                        vae_tiling: bool = False, cpu_offload: bool = False) -> "PTIPipeline":
        """Load a model as ptiedit.load_pipeline does (model=None: the embedded shapes-world model). dtype: a
        torch dtype or "fp32"/"fp16"/"bf16" (None: fp32 on the CPU, fp16 elsewhere); torch_dtype is an alias."""
        from .models.loading import load_pipeline

        if torch_dtype is not None:
            if dtype is not None and dtype != torch_dtype:
                raise ValueError("pass dtype or torch_dtype (an alias), not both")
            dtype = torch_dtype
        return cls(load_pipeline(model, device, dtype, gradient_checkpointing=gradient_checkpointing,
                                 vae_slicing=vae_slicing, vae_tiling=vae_tiling, cpu_offload=cpu_offload))

    @classmethod
    def from_pipe(cls, pipeline) -> "PTIPipeline":
        """A PTIPipeline on any supported pipeline's components, as they are (same objects, device and dtype). It
        gets its own scheduler of its family's class (DDIM, or flow matching's Euler) on the pipeline scheduler's
        config; the given pipeline and its scheduler are not changed."""
        import diffusers

        if isinstance(pipeline, PTIPipeline):
            pipeline = pipeline.pipeline
        if not (hasattr(pipeline, "components") and hasattr(pipeline, "config")):
            raise ValueError(f"from_pipe needs a diffusers Stable Diffusion, SDXL, SD3 or FLUX pipeline, "
                             f"got {type(pipeline).__name__}")
        family = family_of_index(dict(pipeline.config))
        pipeline_class = getattr(diffusers, family.pipeline_class)
        expected, optional = pipeline_class._get_signature_keys(pipeline_class)
        modules = {name: module for name, module in pipeline.components.items() if name in expected}
        modules.update(family.load_options)  # no safety checker or watermarker: ptiedit decodes itself
        # the family's scheduler (DDIM, or flow matching's Euler) on the config, as load_pipeline gives it
        modules["scheduler"] = getattr(diffusers, family.scheduler_class).from_config(pipeline.scheduler.config)
        settings = {key: pipeline.config[key] for key in optional if key in pipeline.config and key not in modules}
        new = pipeline_class(**modules, **settings)
        new.ptiedit_model_name = getattr(pipeline, "ptiedit_model_name", None) or pipeline.config.get(
            "_name_or_path") or "unknown"
        return cls(new)

    def __getattr__(self, name: str):
        if name == "pipeline":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __repr__(self) -> str:
        return f"PTIPipeline({type(self.pipeline).__name__}, {getattr(self.pipeline, 'ptiedit_model_name', 'unknown')})"

    def to(self, *args, **kwargs) -> "PTIPipeline":
        """As diffusers' DiffusionPipeline.to (device and/or dtype), returning this PTIPipeline."""
        self.pipeline.to(*args, **kwargs)
        return self

    def set_progress_bar_config(self, **kwargs) -> None:
        """As diffusers: disable=True silences the progress bars."""
        self.progress = not kwargs.get("disable", False)

    @property
    def num_timesteps(self) -> int:
        """Steps of the latest call's sampling (diffusers' property)."""
        return self._num_timesteps

    @contextmanager
    def running(self):
        """What ptiedit's loader sets up, for the length of one call, restored after: modules in eval mode, and a
        force_upcast VAE in fp32 when it is in fp16 (as diffusers' SDXL pipeline upcasts it to decode)."""
        modules = [m for m in self.pipeline.components.values() if isinstance(m, torch.nn.Module)]
        training = [(sub, sub.training) for module in modules for sub in module.modules()]
        vae = self.pipeline.vae
        upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
        for module in modules:
            module.eval()
        if upcast:
            vae.to(torch.float32)
        try:
            yield
        finally:
            if upcast:
                vae.to(torch.float16)
            for sub, flag in training:
                sub.training = flag

    # Stage 1 ---------------------------------------------------------------------------------------------------
    def invert(self, image=None, num_inference_steps: int = 50, guidance_scale: float = 7.5,
               prompt: str | Sequence[str] = "", method: str = "pti", generator=None, *,
               max_batch: int | None = None, return_dict: bool = True, **options):
        """Invert an image (PIL, path or (H, W, 3) array) or a list of them; returns an output with .inversion
        (an Inversion, or a list). method: one of ptiedit.METHODS; options go to it (PTI: inner_steps, lr,
        early_stop; sdedit: strength). generator: SDEdit's noise; the other methods draw none and ignore it."""
        if image is None:
            raise ValueError("pass image=: a PIL image, a path, an (H, W, 3) array, or a list of them")
        for old, new in (("steps", "num_inference_steps"), ("guidance", "guidance_scale")):
            if old in options:
                raise ValueError(f"PTIPipeline.invert takes {new}, not {old}")
        many = isinstance(image, (list, tuple))
        images = [one_image(im) for im in image] if many else one_image(image)
        if many and not images:
            raise ValueError("image is an empty list")
        if generator is not None and method == "sdedit":
            options["generator"] = generator
        with self.running():
            inversion = invert_images(self.pipeline, images, method=method, prompt=prompt, steps=num_inference_steps,
                                      guidance=guidance_scale, progress=self.progress, max_batch=max_batch, **options)
        return PTIInversionOutput(inversion=inversion) if return_dict else (inversion,)

    # Stage 2 ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str] | None = None, inversion: Inversion | Sequence[Inversion] = None,
                 eta: float | Sequence[float] = DEFAULT_ETA, mode: str = DEFAULT_MODE, generator=None,
                 output_type: str = "pil", callback_on_step_end: Callable | None = None,
                 callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",), return_dict: bool = True, *,
                 num_inference_steps: int | None = None, guidance_scale: float | None = None, p2p=None, faithful=None,
                 max_batch: int | None = None, allow_extrapolation: bool = False,
                 allow_changed_weights: bool = False):
        """Edit inversions toward prompt: one image per (inversion, prompt) pair (one prompt for all inversions,
        or one inversion for all prompts, broadcasts) and eta, in that order. Returns an output with .images and
        .masks (faithful mode), or the tuple (images, masks) with return_dict=False.

        eta: 0 replays the reconstruction, 1 conditions on the prompt alone. mode: "faithful" (edit mask and
        blending) or "paper". The sampler is deterministic DDIM over the inversion's own steps and guidance:
        generator is accepted and unused, and num_inference_steps/guidance_scale, if given, must match the
        inversion's. callback_on_step_end(pipe, step, timestep, callback_kwargs) runs after each step of each
        UNet batch with callback_kwargs["latents"] (that batch's edits); a dict it returns with "latents"
        replaces them. p2p, faithful, max_batch, allow_extrapolation, allow_changed_weights: as ptiedit.edit.
        output_type "latent" gives the sampled latents: faithful mode's paste onto the decoded reconstruction
        (FaithfulConfig.composite_border) happens on pixels, so pipe.decode of them is the edit without it.
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"unknown output_type {output_type!r}; choose from {', '.join(OUTPUT_TYPES)}")
        if isinstance(inversion, PTIInversionOutput):
            inversion = inversion.inversion
        if inversion is None:
            raise ValueError("pass inversion=: the .inversion of pipe.invert(image=...)")
        if prompt is None:
            raise ValueError("pass prompt=: the target prompt (a string or a list of them)")
        inversions = [inversion] if isinstance(inversion, Inversion) else list(inversion)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not inversions or not prompts or not all(isinstance(inv, Inversion) for inv in inversions):
            raise ValueError("inversion must be an Inversion or a non-empty list of them (from pipe.invert)")
        if len(inversions) != len(prompts) and 1 not in (len(inversions), len(prompts)):
            raise ValueError(f"got {len(inversions)} inversions but {len(prompts)} prompts")
        pairs = list(zip(inversions * len(prompts) if len(inversions) == 1 else inversions,
                         prompts * len(inversions) if len(prompts) == 1 else prompts))
        etas = [eta] if isinstance(eta, (int, float)) else list(eta)
        check_etas(etas, allow_extrapolation)
        for inv in inversions:
            for given, kept, name in ((num_inference_steps, len(inv.timesteps), "num_inference_steps"),
                                      (guidance_scale, inv.guidance, "guidance_scale")):
                if given is not None and given != kept:
                    raise ValueError(f"{name}={given} differs from the inversion's {kept}; invert with {name}={given}")
        if output_type != "pil" and len({tuple(inv.z_T.shape) for inv in inversions}) > 1:
            raise ValueError(f"the edits differ in size and cannot be stacked as output_type={output_type!r}; "
                             f"use output_type='pil'")
        step = self.step_callback(callback_on_step_end, callback_on_step_end_tensor_inputs)
        self._num_timesteps = len(inversions[0].timesteps)
        jobs = [(inv, target, e) for inv, target in pairs for e in etas]
        with self.running():
            samples = sample_edits(self.pipeline, jobs, progress=self.progress, mode=mode, p2p=p2p, faithful=faithful,
                                   max_batch=max_batch, allow_changed_weights=allow_changed_weights, callback=step)
            images, masks = self.postprocess(samples, output_type, max_batch)
        return PTIPipelineOutput(images=images, masks=masks) if return_dict else (images, masks)

    def step_callback(self, callback, tensor_inputs: Sequence[str]):
        """sample_edits' callback(step, timestep, latents) calling diffusers' callback_on_step_end."""
        if callback is None:
            return None
        from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

        if isinstance(callback, (PipelineCallback, MultiPipelineCallbacks)):
            tensor_inputs = callback.tensor_inputs
        unknown = sorted(set(tensor_inputs) - set(CALLBACK_TENSOR_INPUTS))
        if unknown:
            raise ValueError(f"callback_on_step_end_tensor_inputs may only name {', '.join(CALLBACK_TENSOR_INPUTS)}; "
                             f"got {', '.join(unknown)}")
        if not callable(callback):
            raise ValueError(f"callback_on_step_end must be callable, got {type(callback).__name__}")

        def step(i: int, timestep: torch.Tensor, latents: torch.Tensor):
            return callback(self, i, timestep, {name: latents for name in tensor_inputs})
        return step

    def postprocess(self, samples: list[EditSample], output_type: str, max_batch: int | None = None):
        """Images and masks of the samples in output_type (edit.decode_samples, in VAE batches of up to max_batch)."""
        family = model_family(self.pipeline)
        faithful = samples[0].mask is not None
        if output_type == "latent":
            return torch.cat([s.latent for s in samples]), torch.cat([s.mask for s in samples]) if faithful else None
        decoded = decode_samples(family, samples, max_batch)  # (1, 3, H, W) each, in [0, 1]
        if output_type == "pil":
            images = [pil_images(pixels)[0] for pixels in decoded]
            return images, [mask_image(s.mask, im.size) for s, im in zip(samples, images)] if faithful else None
        pixels = torch.cat(decoded)
        masks = None
        if faithful:
            factor = pixels.shape[-1] // samples[0].latent.shape[-1]
            masks = torch.cat([s.mask for s in samples]).repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        if output_type == "pt":
            return pixels, masks
        return (pixels.permute(0, 2, 3, 1).cpu().numpy(),
                masks.permute(0, 2, 3, 1).cpu().numpy().astype(np.float32) if faithful else None)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (output_type="latent") to float images (B, 3, H, W) in [0, 1], as output_type="pt" gives them in
        paper mode or faithful mode without the paste (FaithfulConfig(composite_border=None))."""
        return model_family(self.pipeline).decode_pixels(z)
