"""Null-text inversion (Mokady et al., CVPR 2023): tune the unconditional embedding per step, source prompt fixed."""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule, ddim_invert
from ..diffusion.progress import Progress, track
from .result import Inverted
from .tuning import tune_guided_step


def null_text_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
                        guidance: float, inner_steps: int = 10, lr: float = 1e-2, early_stop: float = 1e-5,
                        progress: Progress = True) -> Inverted:
    """Tune one null embedding per timestep so the CFG step with the source prompt lands on z*_{t-1}.

    z*_0..z*_T is the unguided (w = 1) DDIM inversion with the source prompt. Walking back from z*_T, the null
    embedding starts from the previous step's (warm start, initially the unconditional one) and takes up to
    `inner_steps` Adam steps on ||z_{t-1}(null_t) - z*_{t-1}||^2 with learning rate lr (1 - i/100) (the paper's
    decay, written for its 50 steps as lr (1 - 0.5 i/T) so it stays positive for any T and matches PTI's), stopping
    once the loss is below early_stop + 2e-5 i. Structured like PTI's stage 1 (inversion/pti.py) so the two
    compare fairly: the latent the tuned step produced becomes the next z_t.
    """
    if inner_steps < 0 or lr <= 0 or early_stop < 0:
        raise ValueError(f"need inner_steps >= 0, lr > 0, early_stop >= 0; got {inner_steps}, {lr}, {early_stop}")
    start = time.perf_counter()
    trajectory = ddim_invert(model, z0, schedule, prompt, progress=progress)  # [z*_0, ..., z*_T]
    T = len(schedule)
    z, u = trajectory[-1], null
    steps = []
    for i in track(range(T), T, progress, "null-text tuning"):
        t, level_next = schedule.timesteps[i], schedule.level(i + 1)
        with torch.no_grad():
            c = model.predict(z, t, prompt)  # does not depend on the null embedding: once per timestep
        step = tune_guided_step(model, z, t, level_next, trajectory[T - 1 - i], u, c, "uncond", guidance,
                                inner_steps, lr * (1 - 0.5 * i / T), early_stop + 2e-5 * i)
        z, u = step.z_next, step.conditioning
        steps.append(step)
    return Inverted.from_steps(trajectory[-1], prompt, Conditioning.stack_steps([s.conditioning for s in steps]),
                               steps, time.perf_counter() - start, reconstruction=z)
