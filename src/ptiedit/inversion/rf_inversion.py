"""RF-Inversion (Rout et al., "Semantic Image Inversion and Editing using Rectified Stochastic Differential
Equations", ICLR 2025, arXiv 2410.10792): the controlled forward and reverse ODEs of a rectified flow.

In ptiedit's terms a flow latent is z = (1 - sigma) x0 + sigma eps and the velocity v = eps - x0 moves it toward
the noise (dz/dsigma = v, flow.py). Each controller pulls along the straight line to a fixed end point:
- forward (Algorithm 1, eq. 8), toward a noise sample y1: v_hat = v + gamma (u(z | y1) - v), u(z | y1) =
  (y1 - z) / (1 - sigma), the line reaching y1 at sigma = 1;
- reverse (Algorithm 2), toward the image's latent y0: v_hat = v + eta_t (u(z | y0) - v), u(z | y0) =
  (z - y0) / sigma, the line reaching y0 at sigma = 0, with eta_t = eta on the sampling steps from eta_start to
  eta_stop (fractions of the steps) and 0 elsewhere.
"""
from __future__ import annotations

import math
import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.flow import flow_transition
from ..diffusion.progress import Progress, track
from ..diffusion.schedule import Schedule
from .result import Inverted

# The paper's FLUX.1 settings: gamma 0.5; eta 0.9 on the first quarter of the steps (7 of 28).
GAMMA, ETA, ETA_START, ETA_STOP = 0.5, 0.9, 0.0, 0.25


def require_flow(model, schedule: Schedule, method: str) -> None:
    """Refuse a model that is not a rectified flow, in one line."""
    if not schedule.flow:
        raise ValueError(f"{method} needs a flow-matching model; {model.label} is a DDPM-trained one "
                         "(use Stable Diffusion 3 or FLUX.1)")


def check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")


def check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")


def seeded_noise(z0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One standard normal draw of one image's latent shape (1, C, h, w), on z0's device: every image of a batch
    gets the same, as it would inverted alone."""
    return torch.randn((1, *z0.shape[1:]), generator=generator).to(z0.device, z0.dtype)


@torch.no_grad()
def rf_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
                 guidance: float, gamma: float = GAMMA, eta_rf: float = ETA, eta_start: float = ETA_START,
                 eta_stop: float = ETA_STOP, seed: int = 0, progress: Progress = True) -> Inverted:
    """The controlled forward ODE (Algorithm 1) from z0 toward y1 ~ N(0, I) drawn from torch seed `seed`.

    Each step is flow inversion's (ddim.ddim_invert: from level i + 1 to level i with the velocity at timesteps[i],
    unguided, on the source prompt) with v replaced by v_hat = v + gamma ((y1 - z) / (1 - sigma) - v) at the
    step's start: gamma 0 is plain flow inversion, gamma 1 lands on y1. eta_rf, eta_start, eta_stop: the reverse
    controller that editing applies (reverse_controller); eta_rf 0 turns it off.
    """
    require_flow(model, schedule, "RF-Inversion")
    for name, value in (("gamma", gamma), ("eta_rf", eta_rf), ("eta_start", eta_start), ("eta_stop", eta_stop)):
        check_fraction(name, value)
    if eta_start > eta_stop:
        raise ValueError(f"eta_start ({eta_start}) must not exceed eta_stop ({eta_stop})")
    check_seed(seed)
    begin = time.perf_counter()
    y1 = seeded_noise(z0, torch.Generator().manual_seed(seed))
    z = z0
    for i in track(reversed(range(len(schedule))), len(schedule), progress, "RF-Inversion"):
        prediction = model.predict(z, schedule.timesteps[i], prompt)
        level_from, level_to = schedule.level(i + 1), schedule.level(i)
        v = prediction.eps - prediction.x0
        v_hat = v + gamma * ((y1 - z) / (1 - level_from.noise) - v)
        z = flow_transition(z, v_hat, level_from, level_to)
    sampling = {"eta_rf": eta_rf, "eta_start": eta_start, "eta_stop": eta_stop}
    return Inverted(z, prompt, null, {"seconds": time.perf_counter() - begin}, z0=z0, sampling=sampling)


def controller_etas(sampling: dict, steps: int) -> list[float]:
    """eta_t of each sampling step: eta_rf on steps floor(eta_start T) up to (not including) floor(eta_stop T)."""
    start, stop = (math.floor(sampling[key] * steps) for key in ("eta_start", "eta_stop"))
    return [sampling["eta_rf"] if start <= i < stop else 0.0 for i in range(steps)]


def reverse_controller(model, inversion, schedule: Schedule, rows: list[int], target):
    """Algorithm 2's controller as a correction of the sampler's plain Euler step z -> z_next (levels i, i + 1):
    z + dsigma v_hat = z_next + eta_t (line - z_next), line = y0 + (sigma' / sigma) (z - y0), the step along
    u(z | y0). Returns rule(i, z, z_next) for the inversion's rows of a batch (steps.step_rules)."""
    y0, etas = inversion.z0, controller_etas(inversion.sampling, len(schedule))

    def rule(i: int, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        if etas[i] == 0:
            return z_next
        target = y0.to(z.device, z.dtype)
        line = target + (schedule.level(i + 1).noise / schedule.level(i).noise) * (z - target)
        return z_next + etas[i] * (line - z_next)
    return rule
