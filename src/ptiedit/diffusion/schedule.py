"""Noise levels and sampling schedules shared by DDPM-trained models (DDIM) and rectified-flow models.

A latent at a noise level is z = signal x0 + noise eps: (sqrt(alpha-bar), sqrt(1 - alpha-bar)) for DDPM models,
(1 - sigma, sigma) for rectified flows. Written this way, the deterministic DDIM step to the next level
(signal' x0 + noise' eps) is also the Euler step of the flow ODE, so one sampler serves both.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Level:
    """A noise level: z = signal x0 + noise eps."""

    signal: float
    noise: float

    @classmethod
    def of_alpha(cls, alpha: float) -> "Level":
        """DDPM's level at alpha-bar: (sqrt(alpha-bar), sqrt(1 - alpha-bar))."""
        return cls(alpha ** 0.5, (1 - alpha) ** 0.5)

    @classmethod
    def of_sigma(cls, sigma: float) -> "Level":
        """A rectified flow's level at sigma: z = (1 - sigma) x0 + sigma eps."""
        return cls(1 - sigma, sigma)


@dataclass(frozen=True)
class Schedule:
    """T timesteps (descending) with the noise level at each and after the last step.

    flow: the levels are a rectified flow's; inversion then holds the velocity fixed along a step (flow.py's
    flow_transition, Euler on the flow ODE) where DDIM holds eps (ddim_transition)."""

    timesteps: torch.Tensor  # (T,) on the CPU: long for DDPM models, float32 sigma * num_train_timesteps for flows
    levels: tuple[Level, ...]  # T + 1: levels[i] at timesteps[i], levels[T] after the last step
    flow: bool = False

    def __post_init__(self):
        if len(self.levels) != len(self.timesteps) + 1:
            raise ValueError(f"a schedule of {len(self.timesteps)} steps needs {len(self.timesteps) + 1} levels")

    def __len__(self) -> int:
        return len(self.timesteps)

    def level(self, i: int) -> Level:
        """The level of timesteps[i] (i = len: after the last step)."""
        return self.levels[i]

    def tail(self, start: int) -> "Schedule":
        """The schedule from sampling step `start` on (SDEdit starts part-way)."""
        return Schedule(self.timesteps[start:], self.levels[start:], self.flow)
