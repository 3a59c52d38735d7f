"""One entry point for every inversion method: encode, invert, fingerprint."""
from __future__ import annotations

import hashlib
import inspect
import json

from PIL import Image

from .. import __version__
from ..diffusion.conditioning import encode_image, encode_prompt, resolution
from ..diffusion.ddim import make_schedule
from ..diffusion.model import NoisePredictor
from ..images import fit_to_model, pixels_sha256
from ..models.loading import model_fingerprint
from .ddim import ddim_inversion
from .negative_prompt import negative_prompt_inversion
from .null_text import null_text_inversion
from .pti import prompt_tuning_inversion
from .result import Inversion
from .sdedit import sdedit

METHODS = {"pti": prompt_tuning_inversion, "ddim": ddim_inversion, "null_text": null_text_inversion,
           "negative_prompt": negative_prompt_inversion, "sdedit": sdedit}


def pipeline_fingerprint(pipe) -> dict:
    """Model identity and scheduler config, cached on the pipeline."""
    if getattr(pipe, "ptiedit_fingerprint", None) is None:
        scheduler = json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str)
        pipe.ptiedit_fingerprint = {**model_fingerprint(pipe),
                                    "scheduler": hashlib.sha256(scheduler.encode()).hexdigest()[:16]}
    return pipe.ptiedit_fingerprint


def check_settings(steps: int, guidance: float) -> None:
    if not 1 <= steps <= 1000:
        raise ValueError(f"steps must be between 1 and 1000, got {steps}")
    if not 0 <= guidance <= 50:
        raise ValueError(f"guidance must be between 0 and 50, got {guidance}")


def invert(pipe, image: Image.Image, *, method: str = "pti", prompt: str = "", steps: int = 50,
           guidance: float = 7.5, progress: bool = True, **options) -> Inversion:
    """Invert a real image with one of METHODS.

    prompt: what the inversion is conditioned on: for PTI the prompt that initializes c_T (default empty, which
    makes one inversion reusable for any target; pass the target prompt to start from it); for the baselines
    the source caption. options go to the method (PTI, null_text: inner_steps, lr, early_stop; sdedit: strength,
    seed).
    """
    if method not in METHODS:
        raise ValueError(f"unknown inversion method {method!r}; choose from {', '.join(METHODS)}")
    check_settings(steps, guidance)
    known = [name for name, p in inspect.signature(METHODS[method]).parameters.items() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known) - {"prompt_embedding", "null_embedding", "guidance", "progress"})
    if unknown:
        raise ValueError(f"method {method!r} has no option {', '.join(unknown)}")
    # 1. Fit the image to the model and encode it.
    image = fit_to_model(image, resolution(pipe))
    z0 = encode_image(pipe, image)
    # 2. Embed the prompts and build the DDIM schedule.
    prompt_embedding, null_embedding = encode_prompt(pipe, prompt), encode_prompt(pipe, "")
    schedule = make_schedule(pipe.scheduler, steps)
    # 3. Run the method.
    model = NoisePredictor(pipe.unet, pipe.scheduler)
    result = METHODS[method](model, z0, schedule, prompt_embedding=prompt_embedding, null_embedding=null_embedding,
                             guidance=guidance, progress=progress, **options)
    result.stats["unet_calls"] = model.forward_calls
    # 4. Record what is needed to refuse a mismatched edit later.
    fingerprint = {**pipeline_fingerprint(pipe), "image_sha256": pixels_sha256(image), "version": __version__}
    settings = {"steps": steps, "guidance": guidance, "prompt": prompt, **options}
    timesteps = schedule.timesteps if result.timesteps is None else result.timesteps
    return Inversion(method, result.z_T, timesteps, result.cond, result.uncond, settings, fingerprint, result.stats)
