"""Deterministic DDIM (Song et al. 2021, eq. 12 with sigma_t = 0) and its inversion, as plain functions.

Samplers take a noise predictor (a model family's adapter: `model(z, t, cond) -> eps` and
`model.predict(z, t, cond) -> Prediction`) and a `Schedule` of noise levels (schedule.py). For DDPM-trained
models the schedule comes from a DDIMScheduler built from the pipeline scheduler's config, whatever that
scheduler's class; for rectified flows (SD3, FLUX) from its FlowMatchEulerDiscreteScheduler (flow.py), where the
same step is the flow ODE's Euler step. The pipeline's own scheduler is never changed, so inversion and sampling
are exact mirrors of each other. Latents carry a batch axis: several images (or one image at several etas) move
together.
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
from .flow import flow_schedule_from_timesteps, flow_scheduler, flow_timesteps, flow_transition, is_flow_scheduler
from .progress import Progress, track
from .schedule import Level, Schedule


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


def schedule_config(scheduler) -> dict:
    """The config of the scheduler ptiedit samples with: the flow scheduler's or the DDIM one's (ddim_scheduler)."""
    return dict((flow_scheduler(scheduler) if is_flow_scheduler(scheduler) else ddim_scheduler(scheduler)).config)


def schedule_from_timesteps(scheduler, timesteps: torch.Tensor) -> Schedule:
    """A Schedule over the given timesteps: the alpha-bars of the scheduler config's DDIM (ddim_scheduler), or a
    flow scheduler's sigmas (flow.py)."""
    if is_flow_scheduler(scheduler):
        return flow_schedule_from_timesteps(scheduler, timesteps)
    ddim = ddim_scheduler(scheduler)
    acp = ddim.alphas_cumprod.double()
    final = 1.0 if ddim.config.set_alpha_to_one else float(acp[0])
    timesteps = timesteps.long().cpu()
    return Schedule(timesteps, tuple(Level.of_alpha(float(a)) for a in acp[timesteps]) + (Level.of_alpha(final),))


def ddim_timesteps(scheduler, steps: int) -> torch.Tensor:
    """The timesteps DDIMScheduler.set_timesteps(steps) gives for this config, without touching any scheduler."""
    ddim = copy.copy(ddim_scheduler(scheduler))  # set_timesteps assigns new attributes: the cached one stays as is
    ddim.set_timesteps(steps)
    return ddim.timesteps


def max_steps(scheduler) -> int:
    """The most DDIM steps the scheduler config allows (its timestep offset can push the last one off the end);
    a flow scheduler allows one per training timestep."""
    n = scheduler.config.num_train_timesteps
    if is_flow_scheduler(scheduler):
        return n
    for steps in range(n, 0, -1):
        timesteps = ddim_timesteps(scheduler, steps)
        if int(timesteps.max()) < n and len(set(timesteps.tolist())) == steps:
            return steps
    return 1


def make_schedule(scheduler, steps: int, **flow_options) -> Schedule:
    """Timesteps and levels of DDIM on a diffusers scheduler's config (any class) for `steps` steps; on a flow
    scheduler its own timesteps, flow_options (sigmas, mu) passed to its set_timesteps as the family's pipeline
    passes them (models/families: adapter.schedule)."""
    limit = scheduler.config.num_train_timesteps
    if is_flow_scheduler(scheduler):
        if not 1 <= steps <= limit:
            raise ValueError(f"steps must be between 1 and {limit} for this model, got {steps}")
        return flow_schedule_from_timesteps(scheduler, flow_timesteps(scheduler, steps, **flow_options))
    if flow_options:
        raise ValueError(f"{', '.join(flow_options)}: options of flow schedulers only")
    if not 1 <= steps <= limit or int(ddim_timesteps(scheduler, steps).max()) >= limit:
        raise ValueError(f"steps must be between 1 and {max_steps(scheduler)} for this model, got {steps}")
    schedule = schedule_from_timesteps(scheduler, ddim_timesteps(scheduler, steps))
    if schedule.level(0).signal == 0 and ddim_scheduler(scheduler).config.prediction_type == "epsilon":
        raise ValueError("zero terminal SNR (alpha-bar 0 at the first step) needs a v- or x0-prediction model")
    return schedule


@dataclass(frozen=True)
class Prediction:
    """A denoiser's estimate at the noise level of its timestep: z = signal x0 + noise eps.

    Both terms, each computed directly from the model's output as DDIMScheduler.step does (for v-prediction
    x0 = sqrt(a) z - sqrt(1 - a) v; for a flow's velocity x0 = z - sigma v, eps = z + (1 - sigma) v): at zero
    terminal SNR (a = 0) x0 cannot be recovered from eps.
    """

    x0: torch.Tensor
    eps: torch.Tensor

    def chunk(self, n: int) -> list["Prediction"]:
        return [Prediction(x0, eps) for x0, eps in zip(self.x0.chunk(n), self.eps.chunk(n))]


def ddim_transition(z: torch.Tensor, eps: torch.Tensor, level_from: Level, level_to: Level) -> torch.Tensor:
    """Move z from one noise level to another along the predicted eps, x0 taken from z at the first (DDIM eq. 12;
    both directions).

    Needs a signal at level_from; inversion uses it (it moves away from the data, level_from is the lower noise
    level), sampling uses ddim_step."""
    x0 = (z - level_from.noise * eps) / level_from.signal
    return level_to.signal * x0 + level_to.noise * eps


def ddim_step(prediction: Prediction, level: Level) -> torch.Tensor:
    """One deterministic sampling step to a noise level: signal x0 + noise eps there (DDIM eq. 12 with sigma_t = 0,
    DDIMScheduler.step at eta = 0; at flow levels the Euler step z + (sigma' - sigma) v)."""
    return level.signal * prediction.x0 + level.noise * prediction.eps


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

    Step i goes from z at level i + 1 to level i with the prediction at (z, timesteps[i]): the same function the
    sampling step at timesteps[i] uses, so that sampling retraces inversion up to its change along the step. DDIM
    holds eps along the step; a flow schedule holds the velocity v = eps - x0 (flow_transition: Euler on the flow
    ODE, the mirror of the sampler's Euler step)."""
    trajectory = [z0]
    for i in track(reversed(range(len(schedule))), len(schedule), progress, "DDIM inversion"):
        z = trajectory[-1]
        prediction = model.predict(z, schedule.timesteps[i], cond)
        if schedule.flow:
            z = flow_transition(z, prediction.eps - prediction.x0, schedule.level(i + 1), schedule.level(i))
        else:
            z = ddim_transition(z, prediction.eps, schedule.level(i + 1), schedule.level(i))
        trajectory.append(z)
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
        z = ddim_step(prediction, schedule.level(i + 1))
        if callback is not None:
            z = callback_latents(callback(i, z), z)
    return z


def callback_latents(output, z: torch.Tensor) -> torch.Tensor:
    """The latents a step callback returned under "latents" (diffusers' callback_on_step_end), else z."""
    return output["latents"].to(z) if isinstance(output, dict) and "latents" in output else z
