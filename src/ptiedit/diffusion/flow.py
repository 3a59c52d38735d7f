"""Rectified-flow schedules (Stable Diffusion 3, FLUX.1) from a FlowMatchEulerDiscreteScheduler's config.

A flow model predicts the velocity v = eps - x0 of z = (1 - sigma) x0 + sigma eps. The sampler is DDIM's step with
flow levels (ddim.ddim_step), which equals FlowMatchEulerDiscreteScheduler.step, z + (sigma' - sigma) v; the
inversion is the same Euler step run backwards (flow_transition). Timesteps and sigmas are the scheduler's own,
shift and FLUX's resolution-dependent dynamic shift included; its scheduler is never changed.
"""
from __future__ import annotations

import copy
import inspect
import json
from functools import lru_cache

import torch

from .schedule import Level, Schedule


def is_flow_scheduler(scheduler) -> bool:
    """Whether a diffusers scheduler is a flow-matching one (FlowMatchEulerDiscreteScheduler, FlowMatchHeun...)."""
    return type(scheduler).__name__.startswith("FlowMatch")


@lru_cache(maxsize=8)
def _flow_from_json(config: str):
    from diffusers import FlowMatchEulerDiscreteScheduler

    known = set(inspect.signature(FlowMatchEulerDiscreteScheduler.__init__).parameters)
    return FlowMatchEulerDiscreteScheduler.from_config({k: v for k, v in json.loads(config).items() if k in known})


def flow_scheduler(scheduler):
    """A FlowMatchEulerDiscreteScheduler with the config of any flow-matching scheduler (cached per config;
    callers must not set_timesteps on it)."""
    flow = _flow_from_json(json.dumps(dict(scheduler.config), sort_keys=True, default=str))
    if flow.config.invert_sigmas or flow.config.stochastic_sampling:
        raise ValueError("flow schedulers with invert_sigmas or stochastic_sampling are not supported")
    return flow


def dynamic_shift(scheduler, image_seq_len: int, max_shift_default: float) -> float:
    """mu of the resolution-dependent shift: linear in the image's token count, from base_shift at
    base_image_seq_len to max_shift at max_image_seq_len (as FluxPipeline and StableDiffusion3Pipeline set it)."""
    config = scheduler.config
    base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    base, top = config.get("base_shift", 0.5), config.get("max_shift", max_shift_default)
    return base + (top - base) * (image_seq_len - base_len) / (max_len - base_len)


def flow_timesteps(scheduler, steps: int, sigmas=None, mu: float | None = None) -> torch.Tensor:
    """The timesteps set_timesteps(steps, sigmas=..., mu=...) gives for this config, without touching any scheduler."""
    flow = copy.copy(flow_scheduler(scheduler))  # set_timesteps assigns new attributes: the cached one stays as is
    if flow.config.use_dynamic_shifting and mu is None:
        raise ValueError("this flow scheduler shifts by resolution: build the schedule with model_family(pipe)"
                         ".schedule(steps, size)")
    flow.set_timesteps(steps, sigmas=sigmas, mu=mu)
    return flow.timesteps.float().cpu()


def flow_schedule_from_timesteps(scheduler, timesteps: torch.Tensor) -> Schedule:
    """A Schedule over flow timesteps: sigma = t / num_train_timesteps, then the terminal sigma 0."""
    n = flow_scheduler(scheduler).config.num_train_timesteps
    timesteps = timesteps.float().cpu()
    return Schedule(timesteps, tuple(Level.of_sigma(sigma_of(t, n)) for t in timesteps) + (Level.of_sigma(0.0),),
                    flow=True)


def sigma_of(t, num_train_timesteps: int) -> float:
    """sigma of a flow timestep t = sigma * num_train_timesteps, in float64 (the schedule and the adapters agree)."""
    return float(torch.as_tensor(t).reshape(-1)[0]) / num_train_timesteps


def flow_transition(z: torch.Tensor, v: torch.Tensor, level_from: Level, level_to: Level) -> torch.Tensor:
    """Euler step of the flow ODE dz/dsigma = v from level_from to level_to: z + (sigma_to - sigma_from) v.

    Inversion runs it towards the noise with the velocity the sampling step at level_to uses, so that sampling
    retraces inversion up to v's change along the step (as ddim_transition does for eps)."""
    return z + (level_to.noise - level_from.noise) * v
