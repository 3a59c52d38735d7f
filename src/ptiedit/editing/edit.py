"""Editing stage (Dong et al. 2023, Algorithm 1, lines 13-17): sample from z*_T with blended conditioning."""
from __future__ import annotations

from typing import Sequence

import torch

from ..diffusion.conditioning import decode_latents, encode_prompt
from ..diffusion.ddim import Schedule, sample_ddim
from ..diffusion.model import NoisePredictor
from ..inversion.invert import pipeline_fingerprint
from ..inversion.result import Inversion
from .p2p import AttentionReplace, P2PConfig, attention_control, token_alignment

DEFAULT_ETA = 0.8


def check_etas(etas: Sequence[float], allow_extrapolation: bool = False) -> None:
    for eta in etas:
        if not (eta >= 0 and (eta <= 1 or allow_extrapolation)):
            raise ValueError(f"eta must be in [0, 1] (values above 1 need allow_extrapolation), got {eta}")


def schedule_of(pipe, inversion: Inversion) -> Schedule:
    """Rebuild the DDIM schedule an inversion was made on from its timesteps and the pipeline's alphas."""
    acp = pipe.scheduler.alphas_cumprod.double().cpu()
    final = 1.0 if pipe.scheduler.config.get("set_alpha_to_one", True) else float(acp[0])
    timesteps = inversion.timesteps.long()
    return Schedule(timesteps, acp[timesteps], final)


def blend_conditioning(inversion: Inversion, target: torch.Tensor, etas: Sequence[float]) -> torch.Tensor:
    """c~_t = eta c_target + (1 - eta) c_t for every step and eta: (T, B, L, D), or (B, L, D) if c is fixed."""
    eta = torch.tensor(etas, dtype=torch.float32).view(-1, 1, 1)
    c = inversion.cond.float()
    if c.dim() == 4:  # per-step (T, 1, L, D)
        return eta * target + (1 - eta) * c
    return eta * target + (1 - eta) * c.expand(len(etas), -1, -1)


@torch.no_grad()
def edit_latents(pipe, inversion: Inversion, target_prompt: str, etas: Sequence[float], *, progress: bool = True,
                 allow_extrapolation: bool = False, p2p: P2PConfig | None = None) -> torch.Tensor:
    """Edited latents (B, C, h, w), one per eta, sampled together in one batch; p2p adds Prompt-to-Prompt."""
    check_etas(etas, allow_extrapolation)
    inversion.check_compatible(pipeline_fingerprint(pipe))
    if p2p is not None:  # the source branch (eta = 0: the inversion's own conditioning) leads the batch
        etas = [0.0, *etas]
    # 1. Conditioning per step and eta; the unconditional branch is the inversion's.
    cond = blend_conditioning(inversion, encode_prompt(pipe, target_prompt), etas)
    uncond = inversion.uncond.float()
    uncond = uncond.expand(*uncond.shape[:-3], len(etas), *uncond.shape[-2:])
    # 2. Sample from z*_T with the inversion's guidance scale and timesteps.
    z_T = inversion.z_T.float().expand(len(etas), -1, -1, -1)
    model, schedule = NoisePredictor(pipe.unet, pipe.scheduler), schedule_of(pipe, inversion)
    if p2p is None:
        return sample_ddim(model, z_T, schedule, cond, uncond, inversion.guidance, progress=progress)
    source_prompt = inversion.settings.get("prompt", "") if p2p.source_prompt is None else p2p.source_prompt
    control = AttentionReplace(p2p, *token_alignment(pipe.tokenizer, source_prompt, target_prompt), len(schedule),
                               branches=len(etas))
    with attention_control(pipe.unet, control):
        return sample_ddim(model, z_T, schedule, cond, uncond, inversion.guidance, progress=progress,
                           callback=control.step_done)[1:]


def edit(pipe, inversion: Inversion, target_prompt: str, eta: float | Sequence[float] = DEFAULT_ETA, *,
         progress: bool = True, allow_extrapolation: bool = False, p2p: P2PConfig | None = None):
    """Edit an inverted image toward target_prompt. eta=0 reproduces the reconstruction, eta=1 is plain
    target-prompt sampling from z*_T (the baselines edit with eta=1). A single eta returns one PIL image; a
    sequence returns a list. p2p: Prompt-to-Prompt attention control (editing/p2p.py)."""
    etas = [eta] if isinstance(eta, (int, float)) else list(eta)
    images = decode_latents(pipe, edit_latents(pipe, inversion, target_prompt, etas, progress=progress,
                                               allow_extrapolation=allow_extrapolation, p2p=p2p))
    return images[0] if isinstance(eta, (int, float)) else images


def reconstruct(pipe, inversion: Inversion, progress: bool = True):
    """The inversion's own reconstruction (eta = 0)."""
    return edit(pipe, inversion, "", 0.0, progress=progress)
