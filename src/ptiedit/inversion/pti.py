"""Prompt Tuning Inversion, reconstruction stage (Dong et al. 2023, Algorithm 1, lines 1-12)."""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule, ddim_invert
from ..diffusion.progress import Progress, track
from .result import Inverted
from .tuning import tune_guided_step


def prompt_tuning_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning,
                            null: Conditioning, guidance: float, inner_steps: int = 10, lr: float = 1e-2,
                            early_stop: float = 1e-4, progress: Progress = True) -> Inverted:
    """Tune one conditional embedding c_t per timestep so the guided DDIM step from z_t lands on z*_{t-1}.

    z*_0..z*_T is the unguided DDIM inversion conditioned on `prompt`, which also initializes c_T. Walking back
    from z_T = z*_T, c_t starts from c_{t+1} (warm start) and takes up to `inner_steps` Adam steps (lr decaying
    linearly to lr/2) on ||z_{t-1}(c_t) - z*_{t-1}||^2, each image stopping early once its mean squared error is
    below `early_stop`. The latent the tuned step produced becomes the next z_t (as in null-text inversion), so
    errors do not accumulate and the sampler replays the reconstruction exactly. z0 may hold several images.

    Defaults (inner_steps 10, early_stop 1e-4, c_T from the empty prompt, editing eta 0.9) were decided on the
    textured-world bench (README, "PTI's defaults").
    """
    if inner_steps < 0 or lr <= 0 or early_stop < 0:
        raise ValueError(f"need inner_steps >= 0, lr > 0, early_stop >= 0; got {inner_steps}, {lr}, {early_stop}")
    start = time.perf_counter()
    trajectory = ddim_invert(model, z0, schedule, prompt, progress=progress)  # [z*_0, ..., z*_T]
    T = len(schedule)
    z, c = trajectory[-1], prompt
    steps = []
    for i in track(range(T), T, progress, "prompt tuning"):
        t, level_next = schedule.timesteps[i], schedule.level(i + 1)
        with torch.no_grad():  # does not depend on c_t: once per timestep; unused at guidance 1
            u = None if guidance == 1.0 else model.predict(z, t, null)
        step = tune_guided_step(model, z, t, level_next, trajectory[T - 1 - i], c, u, "cond", guidance,
                                inner_steps, lr * (1 - 0.5 * i / T), early_stop)
        z, c = step.z_next, step.conditioning
        steps.append(step)
    return Inverted.from_steps(trajectory[-1], Conditioning.stack_steps([s.conditioning for s in steps]), null,
                               steps, time.perf_counter() - start, reconstruction=z)
