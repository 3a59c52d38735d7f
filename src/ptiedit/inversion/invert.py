"""One entry point for every inversion method: fit, encode, invert in batches, fingerprint."""
from __future__ import annotations

import inspect
from contextlib import contextmanager
from typing import Sequence

import torch
from PIL import Image

from .. import __version__
from ..diffusion.conditioning import Conditioning
from ..diffusion.progress import Progress
from ..images import pixels_sha256
from ..models.family import model_family
from ..models.fingerprint import pipeline_fingerprint
from .ddim import ddim_inversion
from .flowedit import TARGET_GUIDANCE, flowedit
from .negative_prompt import negative_prompt_inversion
from .null_text import null_text_inversion
from .pti import prompt_tuning_inversion
from .result import Inversion
from .rf_inversion import rf_inversion
from .sdedit import sdedit

METHODS = {"pti": prompt_tuning_inversion, "ddim": ddim_inversion, "null_text": null_text_inversion,
           "negative_prompt": negative_prompt_inversion, "sdedit": sdedit, "rf_inversion": rf_inversion,
           "flowedit": flowedit}
FLOW_ONLY = ("rf_inversion", "flowedit")  # defined on the rectified-flow ODE: they refuse other models
# Guidance scales a method publishes, used instead of the family's where the family has real CFG (above 1).
PUBLISHED_GUIDANCE = {"flowedit": TARGET_GUIDANCE}


def default_guidance(method: str, family_guidance: float) -> float:
    """The guidance scale invert() uses when none is given: the family's, or the method's published one where
    the family's is real CFG (FLUX.1's distilled 1 stays 1)."""
    return PUBLISHED_GUIDANCE.get(method, family_guidance) if family_guidance > 1 else family_guidance


def check_options(method: str, guidance: float, options: dict) -> None:
    """Refuse an unknown method, a guidance out of range or an option the method does not take."""
    if method not in METHODS:
        raise ValueError(f"unknown inversion method {method!r}; choose from {', '.join(METHODS)}")
    if not 0 <= guidance <= 50:
        raise ValueError(f"guidance must be between 0 and 50, got {guidance}")
    known = [name for name, p in inspect.signature(METHODS[method]).parameters.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known) - {"prompt", "null", "guidance", "progress"})
    if unknown:
        raise ValueError(f"method {method!r} has no option {', '.join(unknown)}")


def unet_calls_alone(batch_calls: int, per_image: list[dict] | None) -> list[int] | None:
    """UNet calls each image of a batch would have made inverted alone; None if they all made the batch's calls.

    A tuned step (tuning.py) evaluates the images still tuning, iterations + 1 times for each image, so the batch
    makes max(iterations) + 1 of those calls per step and every image takes part in all the other calls.
    """
    if not per_image or "iterations" not in per_image[0]:
        return None
    tuning = [[n + 1 for n in image["iterations"]] for image in per_image]
    shared = batch_calls - sum(max(step) for step in zip(*tuning))
    return [shared + sum(image) for image in tuning]


@contextmanager
def frozen(modules):
    """Weights with requires_grad False inside (the UNet's backward then computes only the conditioning's
    gradient and keeps no activations for weight gradients); each parameter's own flag is restored after."""
    params = [p for module in modules for p in module.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def recorded(options: dict, index: int) -> dict:
    """Image `index`'s options as its inversion file's JSON keeps them: a generator as the seed it started from."""
    if "generator" not in options:
        return options
    generator = options["generator"]
    generator = generator[index] if isinstance(generator, list) else generator
    return {**{k: v for k, v in options.items() if k != "generator"}, "generator_seed": generator.initial_seed()}


def noise_options(method: str, options: dict, count: int) -> dict:
    """SDEdit's options with one generator for the whole call (seeded with `seed` unless one is given)."""
    generator = options.get("generator")
    if isinstance(generator, list) and len(generator) != count:
        raise ValueError(f"got {len(generator)} generators for {count} images")
    seed = options.get("seed", 0)
    if method != "sdedit" or generator is not None or not isinstance(seed, int):  # sdedit refuses a bad seed
        return options
    return {**options, "generator": torch.Generator().manual_seed(seed)}


def batch_options(options: dict, batch: list[int]) -> dict:
    """A batch's options: a list of generators (one per image) gives each image of the batch its own."""
    generator = options.get("generator")
    return {**options, "generator": [generator[i] for i in batch]} if isinstance(generator, list) else options


def invert(pipe, image: Image.Image | Sequence[Image.Image], *, method: str = "pti",
           prompt: str | Sequence[str] = "", steps: int = 50, guidance: float | None = None, progress: Progress = True,
           max_batch: int | None = None, **options) -> Inversion | list[Inversion]:
    """Invert a real image, or a list of them, with one of METHODS.

    prompt: what the inversion is conditioned on (one, or one per image): for PTI the prompt that initializes
    c_T (default empty, which makes one inversion reusable for any target; pass the target prompt to start from
    it); for the baselines the source caption. guidance: the CFG scale, by default the family's (7.5 on SD/SDXL,
    7.0 on SD3, 1 on FLUX.1, whose distilled guidance is a family setting: models/families/flow.py). options go to
    the method (PTI, null_text: inner_steps, lr, early_stop; sdedit: strength, seed; on flow models only,
    rf_inversion: gamma, eta_rf, eta_start, eta_stop, seed and flowedit: source_guidance, n_max, n_avg, seed,
    whose guidance defaults to FlowEdit's published 13.5 on SD3, and on FLUX.1-dev source_distilled_guidance and
    target_distilled_guidance, the paper's 1.5 and 5.5 by default). A list is inverted in
    denoiser batches of up to max_batch images of one size, each size with its own schedule (FLUX shifts by
    resolution); every image keeps its own conditioning and early stopping, so the results equal one-by-one runs
    up to the denoiser's rounding at another batch size. SDEdit's noise comes from
    one generator (`generator`, or one seeded with `seed`) drawn batch after batch, each image its own draw.
    Weights are frozen while it runs (their requires_grad is restored after), so stage 1 leaves no .grad.
    """
    images = [image] if isinstance(image, Image.Image) else list(image)
    prompts = [prompt] * len(images) if isinstance(prompt, str) else list(prompt)
    if len(prompts) != len(images):
        raise ValueError(f"got {len(images)} images but {len(prompts)} prompts")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    family = model_family(pipe)
    guidance = default_guidance(method, family.default_guidance) if guidance is None else guidance
    check_options(method, guidance, options)
    # 1. Fit the images to the model, keeping their aspect ratio; group them by size for batching, each size with
    # its schedule (FLUX shifts its sigmas by the image's token count).
    fitted = [family.fit(im) for im in images]
    groups: dict[tuple[int, int], list[int]] = {}
    for index, im in enumerate(fitted):
        groups.setdefault(im.size, []).append(index)
    schedules = {size: family.schedule(steps, size) for size in groups}
    batches = [members[i:i + (max_batch or len(members))] for members in groups.values()
               for i in range(0, len(members), max_batch or len(members))]
    run_options = noise_options(method, options, len(images))
    null = family.null_conditioning()
    encoded = {p: family.encode_prompt(p) for p in dict.fromkeys(prompts)}  # each distinct prompt once
    fingerprint = pipeline_fingerprint(pipe)
    results: list[Inversion | None] = [None] * len(images)
    for batch in batches:
        # 2. Encode the images and their prompts.
        z0 = family.encode_images([fitted[i] for i in batch])
        schedule = schedules[fitted[batch[0]].size]
        prompt = Conditioning.cat([encoded[prompts[i]] for i in batch])
        # 3. Run the method on the whole batch.
        calls = family.forward_calls
        with frozen(family.components.values()):
            result = METHODS[method](family, z0, schedule, prompt=prompt, null=null, guidance=guidance,
                                     progress=progress, **batch_options(run_options, batch))
        # 4. One Inversion per image, with what is needed to refuse a mismatched edit later.
        per_image_calls = unet_calls_alone(family.forward_calls - calls, result.stats.get("per_image"))
        for b, index in enumerate(batch):
            z_T, cond, uncond, stats, reconstruction = result.item(b)
            stats["unet_calls"] = per_image_calls[b] if per_image_calls else family.forward_calls - calls
            stats["seconds"] = result.stats["seconds"] / len(batch)
            settings = {"steps": steps, "guidance": guidance, "prompt": prompts[index], **recorded(options, index)}
            image_fingerprint = {**fingerprint, "image_sha256": pixels_sha256(fitted[index]), "version": __version__}
            timesteps = schedule.timesteps if result.timesteps is None else result.timesteps
            results[index] = Inversion(method, z_T, timesteps, cond, uncond, settings, image_fingerprint, stats,
                                       reconstruction, result.source(b), dict(result.sampling))
    return results[0] if isinstance(image, Image.Image) else results
