"""SDEdit (Meng et al., ICLR 2022): noise the image part-way, then denoise with the target prompt."""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule
from ..diffusion.progress import Progress
from .result import Inverted


def sdedit(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
           guidance: float, strength: float = 0.5, seed: int = 0,
           generator: torch.Generator | list[torch.Generator] | None = None, progress: Progress = True) -> Inverted:
    """Diffuse z0 to the timestep at fraction `strength` of the schedule: z = signal z0 + noise_level noise
    (sqrt(a), sqrt(1 - a) for DDPM models, 1 - sigma, sigma for flows).

    Sampling starts at step T - round(strength T) and runs the rest of the schedule; strength 0 keeps z0 itself
    (no steps: editing decodes it back), strength 1 starts from almost pure noise. The noise is drawn as
    diffusers draws latents: from `generator`, one for the batch (each image its own draw) or a list of one per
    image; without one, from torch.Generator().manual_seed(seed). Editing replaces the conditioning with the
    target prompt (eta = 1); cond here is the source prompt.
    """
    if not 0 <= strength <= 1:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if isinstance(generator, list) and len(generator) != len(z0):
        raise ValueError(f"got {len(generator)} generators for {len(z0)} images")
    begin = time.perf_counter()
    start = len(schedule) - round(strength * len(schedule))
    tail = schedule.tail(start)
    z = z0
    if len(tail):
        noise = draw_noise(z0.shape, torch.Generator().manual_seed(seed) if generator is None else generator)
        level = tail.level(0)
        z = level.signal * z0 + level.noise * noise.to(z0.device, z0.dtype)
    stats = {"start_step": start, "seconds": time.perf_counter() - begin}
    return Inverted(z, prompt, null, stats, timesteps=tail.timesteps)


def draw_noise(shape: torch.Size, generator: torch.Generator | list[torch.Generator]) -> torch.Tensor:
    """Standard normal noise on the generator's device, as diffusers.utils.torch_utils.randn_tensor draws it."""
    if isinstance(generator, list):
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device) for g in generator])
    return torch.randn(shape, generator=generator, device=generator.device)
