"""Model families: the one seam between diffusers pipelines and ptiedit's samplers and methods.

The adapters live in models/families (base.py says what an adapter owns); this module picks one for a pipeline
from its model_index.json layout and keeps it on the pipeline.
"""
from __future__ import annotations

import json

from .families.base import Family, NonFiniteError, PromptTruncatedWarning, check_finite
from .families.flow import Flux, StableDiffusion3
from .families.sd import StableDiffusion, StableDiffusionXL

__all__ = ["FAMILIES", "Family", "Flux", "NonFiniteError", "PromptTruncatedWarning", "StableDiffusion",
           "StableDiffusion3", "StableDiffusionXL", "adapter_key", "check_finite", "family_label", "family_of_index",
           "model_family"]

FAMILIES = (StableDiffusion, StableDiffusionXL, StableDiffusion3, Flux)


def family_of_index(index: dict):
    """The family whose components a model_index.json lists."""
    components = {name: value[1] for name, value in index.items()
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
    """What an adapter is built from: the pipeline's component objects, its scheduler's config and FLUX's
    distilled guidance setting."""
    modules = tuple((name, id(module)) for name, module in pipe.components.items() if module is not None)
    return (modules, json.dumps(dict(pipe.scheduler.config), sort_keys=True, default=str),
            getattr(pipe, "ptiedit_distilled_guidance", None))


def model_family(pipe) -> Family:
    """The pipeline's adapter, kept on the pipeline and made again when a component or the scheduler changes."""
    key = adapter_key(pipe)
    if getattr(pipe, "ptiedit_family", None) is None or pipe.ptiedit_family_key != key:
        pipe.ptiedit_family, pipe.ptiedit_family_key = family_of_index(dict(pipe.config))(pipe), key
    return pipe.ptiedit_family
