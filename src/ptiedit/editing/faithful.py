"""Faithful edits: stage 2 with an automatic edit mask and latent blending against the reconstruction.

Each inversion samples a reconstruction branch (eta = 0: its own c_t) beside its edits, in one batch. For the first
`mask_steps` of the steps (the noisiest), every edit accumulates where its guided noise prediction differs from
the reconstruction's (DiffEdit's idea, Couairon et al. 2023, with PTI's c_t in place of a source caption); the
normalised map, thresholded, is the edit mask. From then on, outside the mask each step's latent is the
reconstruction branch's (Blended Latent Diffusion, Avrahami et al. 2023; P2P's local blend), so the unedited region
keeps the reconstruction's fidelity. Optionally the edits take the reconstruction's self-attention for the first
`self_replace` of the steps (P2P's self-attention injection, editing/p2p.py), which keeps shapes and layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule, callback_latents, ddim_step, guided_prediction
from ..diffusion.progress import Progress, track


@dataclass(frozen=True)
class FaithfulConfig:
    """mask_steps: fraction of the steps (the noisiest) whose prediction differences make the mask; threshold:
    of the difference map normalised to its maximum; self_replace: fraction of the steps the edits take the
    reconstruction's self-attention. Defaults decided on the textured-world bench (README, "Faithful edits")."""

    mask_steps: float = 0.2
    threshold: float = 0.45
    self_replace: float = 0.3

    def __post_init__(self):
        for name in ("mask_steps", "threshold", "self_replace"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def edit_mask(difference: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, 1, h, w) {0, 1} mask: the difference map normalised to its maximum, thresholded."""
    peak = difference.flatten(1).amax(1).clamp_min(torch.finfo(difference.dtype).tiny).view(-1, 1, 1, 1)
    return (difference / peak > threshold).to(difference.dtype)


@torch.no_grad()
def sample_faithful(model, z: torch.Tensor, schedule: Schedule, cond: Conditioning, uncond: Conditioning,
                    guidance: float, source: torch.Tensor, config: FaithfulConfig, progress: Progress = True,
                    control=None, callback=None) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM sampling with an automatic mask and latent blending; returns (latents, masks (B, 1, h, w)).

    source[b] is the row of b's reconstruction branch (source[b] == b for a reconstruction row, whose mask is 0).
    callback(i, z): as sample_ddim's, after each step's blending.
    control: the P2P AttentionReplace that injects the reconstruction's attention (installed by the caller). The
    branches run as one batch [uncond; cond]: one UNet call per step, which is also the fastest on a CPU."""
    T = len(schedule)
    mask_until = max(1, round(config.mask_steps * T))
    difference = torch.zeros(len(z), 1, *z.shape[-2:], device=z.device)
    mask = None
    for i in track(range(T), T, progress, "DDIM sampling (faithful)"):
        prediction = guided_prediction(model, z, schedule.timesteps[i], cond.at_step(i), uncond.at_step(i),
                                       guidance, fused=True)
        z = ddim_step(prediction, schedule.level(i + 1))
        if i < mask_until:
            eps = prediction.eps
            difference += (eps - eps[source]).abs().mean(1, keepdim=True)
            if i + 1 == mask_until:
                mask = edit_mask(difference, config.threshold)
        if mask is not None:  # outside the mask, the reconstruction's latent
            z = z[source] + mask * (z - z[source])
        if control is not None:
            control.step_done(i, z)
        if callback is not None:
            z = callback_latents(callback(i, z), z)
    return z, mask
