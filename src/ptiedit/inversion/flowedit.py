"""FlowEdit (Kulikov et al., "FlowEdit: Inversion-Free Text-Based Editing Using Pre-Trained Flow Models",
arXiv 2412.08261, Algorithm 1): an ODE from the source image straight to the edit, driven by the difference of
the target and source velocities, with no inversion.

With n_max of the T steps run, from the step at sigma = t_{n_max} on: draw fresh noise N_t, put the source latent
at the step's level, Z_src = (1 - t) X_src + t N_t, and the edit beside it, Z_tar = Z_FE + Z_src - X_src; then
Z_FE += (t_next - t) (V(Z_tar, c_tar) - V(Z_src, c_src)), each velocity with its own CFG scale, or on a
guidance-distilled model (FLUX.1-dev) its own distilled guidance input. Z_FE starts at X_src and ends at the edit. At
the same prompt and guidance the velocities agree and Z_FE stays X_src.

In ptiedit's harness `invert` only places X_src at the first step's level (Z_tar there, whatever Z_FE is) and
records the rule; editing's sampler takes Z_tar and its Euler step with the target velocity, and the rule
(flowedit_step) adds the source velocity's part after each step and moves the edit to the next step's Z_tar.
"""
from __future__ import annotations

import numbers
import time

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import guided_prediction
from ..diffusion.progress import Progress
from ..diffusion.schedule import Schedule
from .result import Inverted
from .rf_inversion import check_seed, require_flow, seeded_noise

# The paper's Stable Diffusion 3 settings: 50 steps, n_max 33, n_avg 1, CFG 3.5 on the source, 13.5 on the target.
N_MAX, N_AVG, SOURCE_GUIDANCE, TARGET_GUIDANCE = 33, 1, 3.5, 13.5
# Its FLUX.1 ones: 28 steps, n_max 24, at CFG 1 with the distilled guidance input 1.5 on the source, 5.5 on the target.
SOURCE_DISTILLED_GUIDANCE, TARGET_DISTILLED_GUIDANCE = 1.5, 5.5


def source_guidance_for(guidance: float) -> float:
    """The published source CFG scale where the model has real CFG (guidance above 1), else guidance itself."""
    return SOURCE_GUIDANCE if guidance > 1 else guidance


def check_guidance(name: str, value: float) -> float:
    """value as a float within invert()'s guidance range [0, 50], else a one-line ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 50:
        raise ValueError(f"{name} must be between 0 and 50, got {value!r}")
    return float(value)


def distilled_guidances(model, source: float | None, target: float | None) -> dict:
    """The branches' distilled guidance inputs for the inversion's `sampling`: by default the paper's FLUX.1 1.5 and
    5.5 where the model takes one (FLUX.1-dev), none where it takes none (SD3, FLUX.1-schnell: a value refused)."""
    if model.distilled_guidance is None:
        if source is not None or target is not None:
            raise ValueError("source_distilled_guidance and target_distilled_guidance need a guidance-distilled model "
                             f"(FLUX.1-dev); this {model.label} model has no guidance input")
        return {}
    return {"source_distilled_guidance": check_guidance(
                "source_distilled_guidance", SOURCE_DISTILLED_GUIDANCE if source is None else source),
            "target_distilled_guidance": check_guidance(
                "target_distilled_guidance", TARGET_DISTILLED_GUIDANCE if target is None else target)}


@torch.no_grad()
def flowedit(model, z0: torch.Tensor, schedule: Schedule, *, prompt: Conditioning, null: Conditioning,
             guidance: float, source_guidance: float | None = None, source_distilled_guidance: float | None = None,
             target_distilled_guidance: float | None = None, n_max: int = N_MAX, n_avg: int = N_AVG, seed: int = 0,
             progress: Progress = True) -> Inverted:
    """FlowEdit's start: X_src at the level of step T - n_max (all T steps when n_max exceeds them; n_max 0 keeps
    X_src as it is), Z_tar = (1 - t) X_src + t N with N the first draw of torch seed `seed`.

    guidance: the target branch's CFG scale (invert's default here is TARGET_GUIDANCE where the model has real
    CFG); source_guidance: the source branch's (default source_guidance_for(guidance));
    source/target_distilled_guidance: the branches' distilled guidance inputs on a guidance-distilled model (default
    the paper's FLUX.1 1.5 and 5.5; distilled_guidances); prompt: the source caption (may be empty); n_avg: noises
    averaged per step (each adds a source and a target velocity). The noise of the later steps continues the same
    seed (flowedit_step)."""
    require_flow(model, schedule, "FlowEdit")
    if isinstance(n_max, bool) or not isinstance(n_max, int) or n_max < 0:
        raise ValueError(f"n_max must be a whole number of steps, at least 0, got {n_max!r}")
    if isinstance(n_avg, bool) or not isinstance(n_avg, int) or n_avg < 1:
        raise ValueError(f"n_avg must be a whole number, at least 1, got {n_avg!r}")
    source_guidance = check_guidance("source_guidance",
                                     source_guidance_for(guidance) if source_guidance is None else source_guidance)
    distilled = distilled_guidances(model, source_distilled_guidance, target_distilled_guidance)
    check_seed(seed)
    begin = time.perf_counter()
    start = len(schedule) - min(n_max, len(schedule))
    tail = schedule.tail(start)
    z = z0
    if len(tail):
        level = tail.level(0)
        z = level.signal * z0 + level.noise * seeded_noise(z0, torch.Generator().manual_seed(seed))
    stats = {"start_step": start, "seconds": time.perf_counter() - begin}
    sampling = {"source_guidance": source_guidance, "n_avg": n_avg, "seed": seed, **distilled}
    return Inverted(z, prompt, null, stats, timesteps=tail.timesteps, z0=z0, sampling=sampling)


def flowedit_step(model, inversion, schedule: Schedule, rows: list[int], target):
    """Algorithm 1's update after the sampler's Euler step z -> z_next = Z_tar + (t' - t) V(Z_tar, c_tar) at the
    levels of steps i and i + 1, Z_tar = Z_FE + t (N - X_src):

    Z_FE' = Z_FE + (t' - t) mean_k (V(Z_tar^k, c_tar) - V(Z_src^k, c_src)) over n_avg noises N^k, the first the
    sampler's N (its velocity is (z_next - z) / (t' - t)), the others drawn now; returned as the next step's
    Z_tar = Z_FE' + t' (N' - X_src) (Z_FE' itself after the last step). The source velocity is the inversion's
    prompt under source_guidance (and source_distilled_guidance), the target one the rows' `target` (steps.Target;
    at the inversion's distilled_guidance, as the sampler's own step); every row of the inversion shares the noises,
    which continue the seed the inversion drew its first from. Returns rule(i, z, z_next)."""
    generator = torch.Generator().manual_seed(inversion.sampling["seed"])
    n_avg, source_guidance = inversion.sampling["n_avg"], inversion.sampling["source_guidance"]
    source_distilled = inversion.sampling.get("source_distilled_guidance")
    x_src, cond_src, uncond_src = inversion.z0, inversion.cond, inversion.uncond
    state = {"noise": seeded_noise(x_src, generator)}

    def rule(i: int, z: torch.Tensor, z_next: torch.Tensor) -> torch.Tensor:
        x, t = x_src.to(z.device, z.dtype), schedule.timesteps[i]
        level, level_next = schedule.level(i), schedule.level(i + 1)
        noises = [state["noise"].to(x)] + [seeded_noise(x, generator) for _ in range(n_avg - 1)]
        z_fe = z - level.noise * (noises[0] - x)
        z_src = torch.cat([level.signal * x + level.noise * noise for noise in noises])
        with model.distilled_guidance_at(source_distilled):
            v_src = velocity(model, z_src, t, cond_src.to(z.device), uncond_src.to(z.device), source_guidance).sum(0)
        v_tar = torch.zeros_like(z)
        if n_avg > 1:
            cond, uncond = target.rows(i, rows)
            z_tar = torch.cat([z_fe + level.noise * (noise - x) for noise in noises[1:]])
            repeat = n_avg - 1
            with model.distilled_guidance_at(inversion.distilled_guidance):
                v_tar = velocity(model, z_tar, t, Conditioning.cat([cond] * repeat),
                                 Conditioning.cat([uncond] * repeat), target.guidance).view(repeat, *z.shape).sum(0)
        d_sigma = level_next.noise - level.noise
        z_fe = z_fe + ((z_next - z) + d_sigma * (v_tar - v_src)) / n_avg
        state["noise"] = seeded_noise(x, generator)
        return z_fe + level_next.noise * (state["noise"] - x)
    return rule


def velocity(model, z: torch.Tensor, t, cond: Conditioning, uncond: Conditioning, guidance: float) -> torch.Tensor:
    """The guided velocity v = eps - x0 at z."""
    prediction = guided_prediction(model, z, t, cond, uncond, guidance)
    return prediction.eps - prediction.x0
