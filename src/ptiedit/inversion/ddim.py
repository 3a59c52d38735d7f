"""Plain DDIM inversion: the baseline every tuning method starts from."""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule, ddim_invert
from ..diffusion.progress import Progress
from .result import Inverted


def ddim_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
                   guidance: float, progress: Progress = True) -> Inverted:
    """Unguided DDIM inversion with the source prompt; editing then samples with CFG from z*_T (drifts for w > 1)."""
    start = time.perf_counter()
    z_T = ddim_invert(model, z0, schedule, prompt, progress=progress)[-1]
    return Inverted(z_T, prompt, null, {"seconds": time.perf_counter() - start})
