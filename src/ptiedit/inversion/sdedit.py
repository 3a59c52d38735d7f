"""SDEdit (Meng et al., ICLR 2022): noise the image part-way, then denoise with the target prompt."""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule
from ..diffusion.progress import Progress
from .result import Inverted


def sdedit(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
           guidance: float, strength: float = 0.5, seed: int = 0, progress: Progress = True) -> Inverted:
    """Diffuse z0 to the timestep at fraction `strength` of the schedule: z = sqrt(a) z0 + sqrt(1 - a) noise.

    Sampling starts at step T - round(strength T) and runs the rest of the schedule; strength 0 keeps z0 itself
    (no steps: editing decodes it back), strength 1 starts from almost pure noise. The noise comes from `seed`, drawn per image (a batch equals its images one by one).
    Editing replaces the conditioning with the target prompt (eta = 1); cond here is the source prompt.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    begin = time.perf_counter()
    start = len(schedule) - round(strength * len(schedule))
    tail = schedule.tail(start)
    z = z0
    if len(tail):
        noise = torch.stack([torch.randn(z0.shape[1:], generator=torch.Generator().manual_seed(seed)) for _ in z0])
        noise = noise.to(z0.device, z0.dtype)
        alpha = float(tail.alphas[0])
        z = alpha ** 0.5 * z0 + (1 - alpha) ** 0.5 * noise
    stats = {"start_step": start, "seconds": time.perf_counter() - begin}
    return Inverted(z, prompt, null, stats, timesteps=tail.timesteps)
