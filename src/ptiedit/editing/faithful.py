"""Faithful edits: stage 2 with an automatic edit mask and latent blending against the reconstruction.

Each inversion samples a reconstruction branch (eta = 0: its own c_t) beside its edits, in one batch. For the first
`mask_steps` of the steps (the noisiest), every edit accumulates two maps of where its guided noise prediction
differs from the reconstruction's: along the trajectories (the edit at its own latent), which finds what an object
edit changes, and at the reconstruction's latent (DiffEdit, Couairon et al. 2023, with PTI's c_t in place of a
source caption), which spreads evenly over a region and so finds a whole background. Each map is normalised to its
maximum and thresholded; the edit mask is their union. From then on, outside the mask each step's latent is the
reconstruction branch's (Blended Latent Diffusion, Avrahami et al. 2023; P2P's local blend), so the unedited region
keeps the reconstruction's fidelity, and once decoded the edit is pasted onto the decoded reconstruction through
the mask (composite), since the VAE decoder mixes neighbouring latents across the mask's edge. Optionally the edits take the reconstruction's self-attention for the first
`self_replace` of the steps (P2P's self-attention injection, editing/p2p.py), which keeps shapes and layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Schedule, callback_latents, ddim_step, guided_prediction
from ..diffusion.progress import Progress, track


@dataclass(frozen=True)
class FaithfulConfig:
    """mask_steps: fraction of the steps (the noisiest) whose prediction differences make the mask; threshold and
    diffedit_threshold: of the trajectory map and of the DiffEdit map, each normalised to its maximum (1 leaves a
    map out); self_replace: fraction of the steps the edits take the reconstruction's self-attention;
    composite_border: latent cells the mask grows by when the decoded edit is pasted onto the decoded
    reconstruction (composite; None keeps the decoded edit as it is). Defaults decided on both worlds of the bench
    (README, "Faithful edits")."""

    mask_steps: float = 0.2
    threshold: float = 0.45
    diffedit_threshold: float = 0.35
    self_replace: float = 0.3
    composite_border: float | None = 0.75

    def __post_init__(self):
        for name in ("mask_steps", "threshold", "diffedit_threshold", "self_replace"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.composite_border is not None and not 0 <= self.composite_border <= 4:
            raise ValueError(f"composite_border must be None or in [0, 4] latent cells, got {self.composite_border}")


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
    branches run as one batch [uncond; cond]: one UNet call per step, which is also the fastest on a CPU. While the
    mask is made, the batch starts with every row's DiffEdit probe (its conditioning at its reconstruction's
    latent); the attention control edits only the batch's last rows, so the probes run uncontrolled."""
    T = len(schedule)
    mask_until = max(1, round(config.mask_steps * T))
    trajectory = torch.zeros(len(z), 1, *z.shape[-2:], device=z.device)
    diffedit = torch.zeros_like(trajectory)
    mask = None
    for i in track(range(T), T, progress, "DDIM sampling (faithful)"):
        c, u = cond.at_step(i), uncond.at_step(i)
        if i < mask_until:
            both = guided_prediction(model, torch.cat([z[source], z]), schedule.timesteps[i], Conditioning.cat([c, c]),
                                     Conditioning.cat([u, u]), guidance, fused=True)
            probe, prediction = both.chunk(2)
        else:
            prediction = guided_prediction(model, z, schedule.timesteps[i], c, u, guidance, fused=True)
        z = ddim_step(prediction, schedule.level(i + 1))
        if i < mask_until:
            eps = prediction.eps
            trajectory += (eps - eps[source]).abs().mean(1, keepdim=True)
            diffedit += (probe.eps - eps[source]).abs().mean(1, keepdim=True)
            if i + 1 == mask_until:
                mask = torch.maximum(edit_mask(trajectory, config.threshold),
                                     edit_mask(diffedit, config.diffedit_threshold))
        if mask is not None:  # outside the mask, the reconstruction's latent
            z = z[source] + mask * (z - z[source])
        if control is not None:
            control.step_done(i, z)
        if callback is not None:
            z = callback_latents(callback(i, z), z)
    return z, mask


def composite(edited: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor, border: float) -> torch.Tensor:
    """Paste-back in pixel space: images (B, 3, H, W), the decoded edit where the latent mask (B, 1, h, w),
    upsampled bilinearly and grown by `border` latent cells (a max filter), is set, the decoded reconstruction
    elsewhere, the upsampled mask's soft edge blending the two."""
    alpha = F.interpolate(mask.to(edited), size=edited.shape[-2:], mode="bilinear", align_corners=False)
    grow = round(border * edited.shape[-1] / mask.shape[-1])
    if grow > 0:
        alpha = F.max_pool2d(alpha, 2 * grow + 1, stride=1, padding=grow)
    return reconstruction + alpha * (edited - reconstruction)
