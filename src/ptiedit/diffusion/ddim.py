"""Deterministic DDIM (Song et al. 2021, eq. 12 with sigma_t = 0) and its inversion, as plain functions.

Samplers take a noise predictor (a model family's adapter: `model(z, t, cond) -> eps` and
`model.predict(z, t, cond) -> Prediction`) and a `Schedule`. The schedule comes from a DDIMScheduler built from
the pipeline scheduler's config, whatever that scheduler's class; the pipeline's own scheduler is never changed,
so inversion and sampling are exact mirrors of each other. Latents carry a batch axis: several images (or one
image at several etas) move together.
"""
from __future__ import annotations

import copy
import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch

from .conditioning import Conditioning
from .progress import Progress, track


@lru_cache(maxsize=8)
def _ddim_from_json(config: str):
    from diffusers import DDIMScheduler

    known = set(inspect.signature(DDIMScheduler.__init__).parameters)
    return DDIMScheduler.from_config({k: v for k, v in json.loads(config).items() if k in known})


def ddim_scheduler(scheduler):
    """A DDIMScheduler with the betas, offset, spacing and prediction type of any diffusers scheduler's config.

    PNDM, Euler, DPM-Solver and DDIM configs of one model share these keys; keys DDIM lacks are dropped (so
    diffusers logs nothing), and one DDIM's defaults fill in those a config lacks (set_alpha_to_one: True).
    Cached per config; callers must not set_timesteps on it (make_schedule works on a copy).
    """
    return _ddim_from_json(json.dumps(dict(scheduler.config), sort_keys=True, default=str))


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
    """A Schedule over the given timesteps with the alpha-bars of the scheduler config's DDIM (ddim_scheduler)."""
    ddim = ddim_scheduler(scheduler)
    acp = ddim.alphas_cumprod.double()
    final = 1.0 if ddim.config.set_alpha_to_one else float(acp[0])
    timesteps = timesteps.long().cpu()
    return Schedule(timesteps, acp[timesteps], final)


def ddim_timesteps(scheduler, steps: int) -> torch.Tensor:
    """The timesteps DDIMScheduler.set_timesteps(steps) gives for this config, without touching any scheduler."""
    ddim = copy.copy(ddim_scheduler(scheduler))  # set_timesteps assigns new attributes: the cached one stays as is
    ddim.set_timesteps(steps)
    return ddim.timesteps


def max_steps(scheduler) -> int:
    """The most DDIM steps the scheduler config allows (its timestep offset can push the last one off the end)."""
    n = scheduler.config.num_train_timesteps
    for steps in range(n, 0, -1):
        timesteps = ddim_timesteps(scheduler, steps)
        if int(timesteps.max()) < n and len(set(timesteps.tolist())) == steps:
            return steps
    return 1


def make_schedule(scheduler, steps: int) -> Schedule:
    """Timesteps and alpha-bars of DDIM on a diffusers scheduler's config (any class) for `steps` steps."""
    limit = scheduler.config.num_train_timesteps
    if not 1 <= steps <= limit or int(ddim_timesteps(scheduler, steps).max()) >= limit:
        raise ValueError(f"steps must be between 1 and {max_steps(scheduler)} for this model, got {steps}")
    schedule = schedule_from_timesteps(scheduler, ddim_timesteps(scheduler, steps))
    if float(schedule.alphas[0]) == 0 and ddim_scheduler(scheduler).config.prediction_type == "epsilon":
        raise ValueError("zero terminal SNR (alpha-bar 0 at the first step) needs a v- or x0-prediction model")
    return schedule


@dataclass(frozen=True)
class Prediction:
    """A denoiser's estimate at the noise level a of its timestep: z = sqrt(a) x0 + sqrt(1 - a) eps.

    Both terms, each computed directly from the model's output as DDIMScheduler.step does (for v-prediction
    x0 = sqrt(a) z - sqrt(1 - a) v): at zero terminal SNR (a = 0) x0 cannot be recovered from eps.
    """

    x0: torch.Tensor
    eps: torch.Tensor

    def chunk(self, n: int) -> list["Prediction"]:
        return [Prediction(x0, eps) for x0, eps in zip(self.x0.chunk(n), self.eps.chunk(n))]


def ddim_transition(z: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """Move z from noise level alpha_from to alpha_to along the predicted eps (DDIM eq. 12; both directions).

    Needs alpha_from > 0; inversion uses it (it moves away from the data, alpha_from is the lower noise level),
    sampling uses ddim_step."""
    x0 = (z - (1 - alpha_from) ** 0.5 * eps) / alpha_from ** 0.5
    return alpha_to ** 0.5 * x0 + (1 - alpha_to) ** 0.5 * eps


def ddim_step(prediction: Prediction, alpha_to: float) -> torch.Tensor:
    """One deterministic sampling step to noise level alpha_to: sqrt(alpha_to) x0 + sqrt(1 - alpha_to) eps
    (DDIM eq. 12 with sigma_t = 0; DDIMScheduler.step at eta = 0)."""
    return alpha_to ** 0.5 * prediction.x0 + (1 - alpha_to) ** 0.5 * prediction.eps


def cfg(eps_u: torch.Tensor, eps_c: torch.Tensor, guidance: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): eps_u + w (eps_c - eps_u)."""
    return eps_u + guidance * (eps_c - eps_u)


def guide(u: Prediction, c: Prediction, guidance: float) -> Prediction:
    """CFG on both terms. x0 and eps are affine in the model output with the same z term, so this equals
    guiding the raw output (eps, v or x0) as diffusers' pipelines do; w = 1 returns c itself (no arithmetic)."""
    if guidance == 1.0:
        return c
    return Prediction(cfg(u.x0, c.x0, guidance), cfg(u.eps, c.eps, guidance))


def guided_eps(model, z: torch.Tensor, t, cond: Conditioning, uncond: Conditioning, guidance: float,
               fused: bool = False) -> torch.Tensor:
    """The eps of guided_prediction (for callers that need eps alone, e.g. to compare predictions)."""
    return guided_prediction(model, z, t, cond, uncond, guidance, fused).eps


def guided_prediction(model, z: torch.Tensor, t, cond: Conditioning, uncond: Conditioning, guidance: float,
                      fused: bool = False) -> Prediction:
    """CFG prediction. The branches run as two calls shaped exactly like the tuning stage's, so that in half
    precision eta = 0 replays stage 1 bit for bit; fused=True runs them as one batch [uncond; cond] (P2P edits
    its rows). Guidance 1 makes one call, on cond alone, as stage 1 does."""
    if guidance == 1.0:
        return model.predict(z, t, cond)
    uncond = uncond.expand(len(z))
    if fused:
        u, c = model.predict(torch.cat([z, z]), t, Conditioning.cat([uncond, cond])).chunk(2)
    else:
        u, c = model.predict(z, t, uncond), model.predict(z, t, cond)
    return guide(u, c, guidance)


@torch.no_grad()
def ddim_invert(model, z0: torch.Tensor, schedule: Schedule, cond: Conditioning,
                progress: Progress = True) -> list[torch.Tensor]:
    """DDIM inversion (unguided): returns the trajectory [z*_0, z*_1, ..., z*_T], z*_T at timesteps[0].

    Step i goes from z at alpha_next(i) to alphas[i] with eps(z, timesteps[i]): the same eps function the
    sampling step at timesteps[i] uses, so that sampling retraces inversion up to eps's change along the step."""
    trajectory = [z0]
    for i in track(reversed(range(len(schedule))), len(schedule), progress, "DDIM inversion"):
        z = trajectory[-1]
        eps = model(z, schedule.timesteps[i], cond)
        trajectory.append(ddim_transition(z, eps, schedule.alpha_next(i), float(schedule.alphas[i])))
    return trajectory


@torch.no_grad()
def sample_ddim(model, z: torch.Tensor, schedule: Schedule, cond: Conditioning, uncond: Conditioning,
                guidance: float, progress: Progress = True, fused: bool = False,
                callback: Callable[[int, torch.Tensor], dict | None] | None = None) -> torch.Tensor:
    """Deterministic DDIM sampling with classifier-free guidance; cond/uncond may be per step (T, B, ...).
    callback(i, z) runs after each step; a dict it returns with "latents" replaces z (diffusers' semantics)."""
    for i in track(range(len(schedule)), len(schedule), progress, "DDIM sampling"):
        prediction = guided_prediction(model, z, schedule.timesteps[i], cond.at_step(i), uncond.at_step(i),
                                       guidance, fused)
        z = ddim_step(prediction, schedule.alpha_next(i))
        if callback is not None:
            z = callback_latents(callback(i, z), z)
    return z


def callback_latents(output, z: torch.Tensor) -> torch.Tensor:
    """The latents a step callback returned under "latents" (diffusers' callback_on_step_end), else z."""
    return output["latents"].to(z) if isinstance(output, dict) and "latents" in output else z
