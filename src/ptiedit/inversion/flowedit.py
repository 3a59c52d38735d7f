"""FlowEdit (Kulikov et al., "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models",
arXiv 2412.08261, Algorithm 1): an ODE from the source image straight to the edit, driven by the difference of
the target and source velocities, with no inversion.

With n_max of the T steps run, from the step at sigma = t_{n_max} on: draw fresh noise N_t, put the source latent
at the step's level, Z_src = (1 - t) X_src + t N_t, and the edit beside it, Z_tar = Z_FE + Z_src - X_src; then
Z_FE += (t_next - t) (V(Z_tar, c_tar) - V(Z_src, c_src)), each velocity with its own CFG scale. Z_FE starts at X_src
and ends at the edit. At the same prompt and guidance the velocities agree and Z_FE stays X_src.

In ptiedit's harness `invert` only places X_src at the first step's level (Z_tar there, whatever Z_FE is) and
records the rule; editing's sampler takes Z_tar and its Euler step with the target velocity, and the rule
(flowedit_step) adds the source velocity's part after each step and moves the edit to the next step's Z_tar.
"""
from __future__ import annotations

import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import guided_prediction
from ..diffusion.progress import Progress
from ..diffusion.schedule import Schedule
from .result import Inverted
from .rf_inversion import check_seed, require_flow, seeded_noise

# The paper's Stable Diffusion 3 settings: 50 steps, n_max 33, CFG 3.5 on the source and 13.5 on the target.
# (Its FLUX.1 ones, 28 steps, n_max 24, 1.5 and 5.5, are distilled guidance inputs; ptiedit's FLUX.1 runs at
# CFG 1 with one distilled guidance for the model: models/families/flow.py.)
N_MAX, SOURCE_GUIDANCE, TARGET_GUIDANCE = 33, 3.5, 13.5


def source_guidance_for(guidance: float) -> float:
    """The published source CFG scale where the model has real CFG (guidance above 1), else guidance itself."""
    return SOURCE_GUIDANCE if guidance > 1 else guidance


@torch.no_grad()
def flowedit(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
             guidance: float, source_guidance: float | None = None, n_max: int = N_MAX, seed: int = 0,
             progress: Progress = True) -> Inverted:
    """FlowEdit's start: X_src at the level of step T - n_max (all T steps when n_max exceeds them; n_max 0 keeps
    X_src as it is), Z_tar = (1 - t) X_src + t N with N the first draw of torch seed `seed`.

    guidance: the target branch's CFG scale (invert's default here is TARGET_GUIDANCE where the model has real
    CFG); source_guidance: the source branch's (default source_guidance_for(guidance)); prompt: the source
    caption (may be empty). The noise of the later steps continues the same seed (flowedit_step)."""
    require_flow(model, schedule, "FlowEdit")
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 0:
        raise ValueError(f"n_max must be a whole number of steps, at least 0, got {n_max!r}")
    source_guidance = source_guidance_for(guidance) if source_guidance is None else float(source_guidance)
    if not 0 <= source_guidance <= 50:
        raise ValueError(f"source_guidance must be between 0 and 50, got {source_guidance}")
    check_seed(seed)
    begin = time.perf_counter()
    start = len(schedule) - min(n_max, len(schedule))
    tail = schedule.tail(start)
    z = z0
    if len(tail):
        level = tail.level(0)
        z = level.signal * z0 + level.noise * seeded_noise(z0, torch.Generator().manual_seed(seed))
    stats = {"start_step": start, "seconds": time.perf_counter() - begin}
    sampling = {"source_guidance": source_guidance, "seed": seed}
    return Inverted(z, prompt, null, stats, timesteps=tail.timesteps, z0=z0, sampling=sampling)


def flowedit_step(model, inversion, schedule: Schedule, rows: int):
    """Algorithm 1's update after the sampler's Euler step z -> z_next = Z_tar + (t' - t) V(Z_tar, c_tar) at the
    levels of steps i and i + 1: Z_FE' = z_next - t (N - X_src) - (t' - t) V(Z_src, c_src), returned as the next
    step's Z_tar = Z_FE' + t' (N' - X_src) (Z_FE' itself after the last step). The source velocity is the
    inversion's prompt under source_guidance, on the same noise N for all `rows` rows of the inversion."""
    generator = torch.Generator().manual_seed(inversion.sampling["seed"])
    x_src = inversion.z0
    state = {"noise": seeded_noise(x_src, generator)}
    cond, uncond = inversion.cond, inversion.uncond

    def rule(i: int, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        x, noise = x_src.to(z.device, z.dtype), state["noise"].to(z.device, z.dtype)
        level, level_next = schedule.level(i), schedule.level(i + 1)
        z_src = (level.signal * x + level.noise * noise).expand(rows, *x.shape[1:])
        prediction = guided_prediction(model, z_src, schedule.timesteps[i], cond.to(z.device, z.dtype),
                                       uncond.to(z.device, z.dtype), inversion.sampling["source_guidance"])
        v_src = prediction.eps - prediction.x0
        z_fe = z_next - level.noise * (noise - x) - (level_next.noise - level.noise) * v_src
        state["noise"] = seeded_noise(x_src, generator)
        return z_fe + level_next.noise * (state["noise"].to(z.device, z.dtype) - x)
    return rule
