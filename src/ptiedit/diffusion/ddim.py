"""Deterministic DDIM (Song et al. 2021, eq. 12 with sigma_t = 0) and its inversion, as plain functions.

Samplers take a noise predictor `model(z, t, embedding) -> eps` and a `Schedule`; they never touch a
diffusers scheduler's mutable state, so inversion and sampling are exact mirrors of each other.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Schedule:
    """T DDIM timesteps (descending) with alpha-bar at each and after the last step."""

    timesteps: torch.Tensor  # (T,) long, descending
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


def make_schedule(scheduler, steps: int) -> Schedule:
    """Timesteps and alpha-bars of a diffusers DDIM-family scheduler config for `steps` steps."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.long().cpu()
    acp = scheduler.alphas_cumprod.double().cpu()
    final = 1.0 if scheduler.config.get("set_alpha_to_one", True) else float(acp[0])
    return Schedule(timesteps, acp[timesteps], final)


def ddim_transition(z: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move z from noise level alpha_from to alpha_to along the predicted eps (DDIM eq. 12; both directions)."""
    x0 = (z - (1 - alpha_from) ** 0.5 * eps) / alpha_from ** 0.5
    return alpha_to ** 0.5 * x0 + (1 - alpha_to) ** 0.5 * eps


def guided_eps(model, z: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance eps_u + w (eps_c - eps_u), both branches in one batched call."""
    if guidance == 1.0:
        return model(z, t, cond)
    eps_u, eps_c = model(torch.cat([z, z]), t, torch.cat([uncond.expand_as(cond), cond])).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def at_step(embedding: torch.Tensor, i: int) -> torch.Tensor:
    """Per-step embeddings have a leading step axis (T, B, L, D); a plain (B, L, D) one serves every step."""
    return embedding[i] if embedding.dim() == 4 else embedding


@torch.no_grad()
def ddim_invert(model, z0: torch.Tensor, schedule: Schedule, cond: torch.Tensor, progress: bool = True) -> list[torch.Tensor]:
    """DDIM inversion (unguided): returns the trajectory [z*_0, z*_1, ..., z*_T], z*_T at timesteps[0]."""
    trajectory = [z0]
    for i in tqdm(reversed(range(len(schedule))), total=len(schedule), desc="DDIM inversion", disable=not progress):
        z = trajectory[-1]
        eps = model(z, schedule.timesteps[i], cond)
        trajectory.append(ddim_transition(z, eps, schedule.alpha_next(i), float(schedule.alphas[i])))
    return trajectory


@torch.no_grad()
def sample_ddim(model, z: torch.Tensor, schedule: Schedule, cond: torch.Tensor, uncond: torch.Tensor,
                guidance: float, progress: bool = True, callback: Callable[[int, torch.Tensor], None] | None = None):
    """Deterministic DDIM sampling with classifier-free guidance; cond/uncond may be per step (T, B, L, D)."""
    for i in tqdm(range(len(schedule)), desc="DDIM sampling", disable=not progress):
        eps = guided_eps(model, z, schedule.timesteps[i], at_step(cond, i), at_step(uncond, i), guidance)
        z = ddim_transition(z, eps, float(schedule.alphas[i]), schedule.alpha_next(i))
        if callback is not None:
            callback(i, z)
    return z
