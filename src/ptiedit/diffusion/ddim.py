"""Deterministic DDIM (Song et al. 2021, eq. 12 with sigma_t = 0) and its inversion, as plain functions.

Samplers take a noise predictor `model(z, t, cond) -> eps` (a model family's adapter) and a `Schedule`; they never
touch a diffusers scheduler's mutable state, so inversion and sampling are exact mirrors of each other. Latents
carry a batch axis: several images (or one image at several etas) move together.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .conditioning import Conditioning
from .progress import Progress, track


@dataclass(frozen=True)
class Schedule:
    """T DDIM timesteps (descending) with alpha-bar at each and after the last step."""

    timesteps: torch.Tensor  # (T,) long, descending, on the CPU
    alphas: torch.Tensor  # (T,) alpha-bar_t, float64
    alpha_final: float  # alpha-bar after the last step (1.0, or alpha-bar_0 as in SD's set_alpha_to_one=False)

    def __len__(self) -> int:
        return len(self.timesteps)

    def alpha_next(self, i: int) -> float:
        """alpha-bar of the timestep that sampling step i lands on."""
        return float(self.alphas[i + 1]) if i + 1 < len(self) else self.alpha_final

    def tail(self, start: int) -> "Schedule":
        """The schedule from sampling step `start` on (SDEdit starts part-way)."""
        return Schedule(self.timesteps[start:], self.alphas[start:], self.alpha_final)


def schedule_from_timesteps(scheduler, timesteps: torch.Tensor) -> Schedule:
    """A Schedule over the given timesteps with the scheduler config's alpha-bars."""
    acp = scheduler.alphas_cumprod.double().cpu()
    final = 1.0 if scheduler.config.get("set_alpha_to_one", True) else float(acp[0])
    timesteps = timesteps.long().cpu()
    return Schedule(timesteps, acp[timesteps], final)


def max_steps(scheduler) -> int:
    """The most DDIM steps the scheduler config allows (its timestep offset can push the last one off the end)."""
    n = scheduler.config.num_train_timesteps
    for steps in range(n, 0, -1):
        scheduler.set_timesteps(steps)
        if int(scheduler.timesteps.max()) < n and len(set(scheduler.timesteps.tolist())) == steps:
            return steps
    return 1


def make_schedule(scheduler, steps: int) -> Schedule:
    """Timesteps and alpha-bars of a diffusers DDIM-family scheduler config for `steps` steps."""
    limit = scheduler.config.num_train_timesteps
    if not 1 <= steps <= limit:
        raise ValueError(f"steps must be between 1 and {max_steps(scheduler)} for this model, got {steps}")
    scheduler.set_timesteps(steps)
    if int(scheduler.timesteps.max()) >= limit:
        raise ValueError(f"steps must be between 1 and {max_steps(scheduler)} for this model, got {steps}")
    return schedule_from_timesteps(scheduler, scheduler.timesteps)


def ddim_transition(z: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move z from noise level alpha_from to alpha_to along the predicted eps (DDIM eq. 12; both directions)."""
    x0 = (z - (1 - alpha_from) ** 0.5 * eps) / alpha_from ** 0.5
    return alpha_to ** 0.5 * x0 + (1 - alpha_to) ** 0.5 * eps


def cfg(eps_u: torch.Tensor, eps_c: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): eps_u + w (eps_c - eps_u)."""
    return eps_u + guidance * (eps_c - eps_u)


def guided_eps(model, z: torch.Tensor, t, cond: Conditioning, uncond: Conditioning, guidance: float,
               fused: bool = False) -> torch.Tensor:
    """CFG eps. The branches run as two calls shaped exactly like the tuning stage's, so that in half precision
    eta = 0 replays stage 1 bit for bit; fused=True runs them as one batch [uncond; cond] (P2P edits its rows)."""
    if guidance == 1.0:
        return model(z, t, cond)
    uncond = uncond.expand(len(z))
    if fused:
        eps_u, eps_c = model(torch.cat([z, z]), t, Conditioning.cat([uncond, cond])).chunk(2)
    else:
        eps_u, eps_c = model(z, t, uncond), model(z, t, cond)
    return cfg(eps_u, eps_c, guidance)


@torch.no_grad()
def ddim_invert(model, z0: torch.Tensor, schedule: Schedule, cond: Conditioning,
                progress: Progress = True) -> list[torch.Tensor]:
    """DDIM inversion (unguided): returns the trajectory [z*_0, z*_1, ..., z*_T], z*_T at timesteps[0]."""
    trajectory = [z0]
    for i in track(reversed(range(len(schedule))), len(schedule), progress, "DDIM inversion"):
        z = trajectory[-1]
        eps = model(z, schedule.timesteps[i], cond)
        trajectory.append(ddim_transition(z, eps, schedule.alpha_next(i), float(schedule.alphas[i])))
    return trajectory


@torch.no_grad()
def sample_ddim(model, z: torch.Tensor, schedule: Schedule, cond: Conditioning, uncond: Conditioning,
                guidance: float, progress: Progress = True, fused: bool = False,
                callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Deterministic DDIM sampling with classifier-free guidance; cond/uncond may be per step (T, B, ...)."""
    for i in track(range(len(schedule)), len(schedule), progress, "DDIM sampling"):
        eps = guided_eps(model, z, schedule.timesteps[i], cond.at_step(i), uncond.at_step(i), guidance, fused)
        z = ddim_transition(z, eps, float(schedule.alphas[i]), schedule.alpha_next(i))
        if callback is not None:
            callback(i, z)
    return z
