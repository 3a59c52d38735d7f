"""Negative-prompt inversion (Miyake et al. 2023): null-text inversion's optimum approximated by the source prompt."""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule, ddim_invert
from ..diffusion.progress import Progress
from .result import Inverted


def negative_prompt_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning,
                              null: Conditioning, guidance: float, progress: Progress = True) -> Inverted:
    """DDIM inversion with the source prompt, then cond = uncond = source prompt: no optimization.

    With both CFG branches on the source prompt the guided eps equals the unguided one for any w, so sampling
    retraces the inversion; editing conditions on the target and keeps the source as the negative prompt.
    """
    start = time.perf_counter()
    z_T = ddim_invert(model, z0, schedule, prompt, progress=progress)[-1]
    # a copy: safetensors refuses to save two tensors that share memory
    return Inverted(z_T, prompt, prompt.detach(), {"seconds": time.perf_counter() - start})
