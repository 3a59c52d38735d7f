"""Editing stage (Dong et al. 2023, Algorithm 1, lines 13-17): sample from z*_T with blended conditioning."""
from __future__ import annotations

from typing import Sequence

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import sample_ddim, schedule_from_timesteps
from ..diffusion.progress import Progress
from ..inversion.result import Inversion
from ..models.family import model_family
from ..models.fingerprint import pipeline_fingerprint
from .p2p import AttentionReplace, P2PConfig, attention_control, token_alignment

DEFAULT_ETA = 0.9  # decided on the textured-world bench (README, "PTI's defaults")
Job = tuple[Inversion, str, float]  # (inversion, target prompt, eta)


def check_etas(etas: Sequence[float], allow_extrapolation: bool = False) -> None:
    for eta in etas:
        if not (eta >= 0 and (eta <= 1 or allow_extrapolation)):
            raise ValueError(f"eta must be in [0, 1] (values above 1 need allow_extrapolation), got {eta}")


def chunks(items: list, size: int | None) -> list[list]:
    size = size or len(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def batch_key(inversion: Inversion) -> tuple:
    """Jobs sample together when they share latent shape, timesteps, guidance and conditioning layout."""
    return (tuple(inversion.z_T.shape), tuple(inversion.timesteps.tolist()), inversion.guidance,
            inversion.cond.per_step, inversion.uncond.per_step)


@torch.no_grad()
def sample_edits(pipe, jobs: list[Job], *, progress: Progress = True,
                 p2p: P2PConfig | Sequence[P2PConfig] | None = None, max_batch: int | None = None) -> list[torch.Tensor]:
    """Edited latents (1, C, h, w), one per job: every (inversion, target, eta) sampled in batches of up to
    max_batch; jobs of different sizes or schedules go in different batches.

    p2p: Prompt-to-Prompt settings, one for all jobs or one per job. Each inversion in a batch then adds its
    source branch (eta = 0), whose attention all its targets take, each for its own fraction of the steps."""
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    configs = [p2p] * len(jobs) if p2p is None or isinstance(p2p, P2PConfig) else list(p2p)
    if len(configs) != len(jobs) or (p2p is not None and None in configs):
        raise ValueError(f"got {len(jobs)} jobs but {len(configs)} Prompt-to-Prompt settings")
    family, fingerprint = model_family(pipe), pipeline_fingerprint(pipe)
    for inversion in {id(job[0]): job[0] for job in jobs}.values():
        inversion.check_compatible(fingerprint)
    device = family.device
    targets = {prompt: family.encode_prompt(prompt) for _, prompt, _ in jobs}
    groups: dict[tuple, list[int]] = {}
    for index, (inversion, _, _) in enumerate(jobs):
        groups.setdefault(batch_key(inversion), []).append(index)
    out: list[torch.Tensor | None] = [None] * len(jobs)
    for members in groups.values():
        for chunk in chunks(members, max_batch):
            rows, picked = chunk, [jobs[j] for j in chunk]
            if p2p is not None:  # each inversion's source branch (row None) leads its targets
                by_inversion: dict[int, list[int]] = {}
                for j in chunk:
                    by_inversion.setdefault(id(jobs[j][0]), []).append(j)
                rows, picked = [], []
                for members_of_one in by_inversion.values():
                    inversion, target, _ = jobs[members_of_one[0]]
                    rows += [None, *members_of_one]
                    picked += [(inversion, target, 0.0), *(jobs[j] for j in members_of_one)]  # eta 0: its own c_t
            latents = sample_chunk(pipe, picked, targets, device, None if p2p is None else
                                   [configs[j] if j is not None else None for j in rows], progress)
            for j, z in zip(rows, latents):
                if j is not None:
                    out[j] = z[None]
    return out


def sample_chunk(pipe, jobs: list[Job], targets: dict[str, Conditioning], device,
                 p2p: list[P2PConfig | None] | None, progress: Progress = True) -> torch.Tensor:
    """One UNet batch of jobs that share a batch_key. With p2p (one entry per job), a None entry marks a source
    branch, and the jobs after it up to the next None are its targets."""
    family, first = model_family(pipe), jobs[0][0]
    # 1. Conditioning per step and job: c~_t = eta c_target + (1 - eta) c_t; the unconditional branch is the inversion's.
    eta = torch.tensor([e for _, _, e in jobs], dtype=torch.float32, device=device)
    cond = Conditioning.cat([inv.cond.to(device, torch.float32).blend(targets[prompt], eta[k:k + 1])
                             for k, (inv, prompt, _) in enumerate(jobs)])
    uncond = Conditioning.cat([inv.uncond.to(device, torch.float32) for inv, _, _ in jobs])
    # 2. Sample from z*_T with the inversion's guidance scale and timesteps.
    z_T = torch.cat([inv.z_T.to(device, torch.float32) for inv, _, _ in jobs])
    schedule = schedule_from_timesteps(pipe.scheduler, first.timesteps)
    if p2p is None:
        return sample_ddim(family, z_T, schedule, cond, uncond, first.guidance, progress=progress)
    groups = []
    for (inversion, prompt, _), config in zip(jobs, p2p):
        if config is None:
            source = inversion.settings.get("prompt", "")
            groups.append([])
        else:
            aligned = token_alignment(family.tokenizers[0],
                                      source if config.source_prompt is None else config.source_prompt, prompt)
            groups[-1].append((*aligned, config))
    control = AttentionReplace(groups, len(schedule), latent_tokens=z_T.shape[-2] * z_T.shape[-1])
    with attention_control(pipe.unet, control):
        return sample_ddim(family, z_T, schedule, cond, uncond, first.guidance, progress=progress, fused=True,
                           callback=control.step_done)


def edit_latents(pipe, inversion: Inversion, target_prompt: str, etas: Sequence[float], *, progress: Progress = True,
                 allow_extrapolation: bool = False, p2p: P2PConfig | None = None,
                 max_batch: int | None = None) -> torch.Tensor:
    """Edited latents (len(etas), C, h, w) of one inversion; p2p adds Prompt-to-Prompt."""
    check_etas(etas, allow_extrapolation)
    return torch.cat(sample_edits(pipe, [(inversion, target_prompt, eta) for eta in etas], progress=progress,
                                  p2p=p2p, max_batch=max_batch))


def edit(pipe, inversion: Inversion | Sequence[Inversion], target_prompt: str | Sequence[str],
         eta: float | Sequence[float] = DEFAULT_ETA, *, progress: Progress = True, allow_extrapolation: bool = False,
         p2p: P2PConfig | None = None, max_batch: int | None = None):
    """Edit inverted images toward their target prompts. eta=0 reproduces the reconstruction, eta=1 is plain
    target-prompt sampling from z*_T (the baselines edit with eta=1).

    One inversion and a single eta return one PIL image, a sequence of etas a list. A list of inversions (with
    one target each) returns one list of images per inversion, every (image, eta) sampled in shared UNet batches
    of up to max_batch. p2p: Prompt-to-Prompt attention control (editing/p2p.py); each inversion in a batch
    brings its own source branch.
    """
    etas = [eta] if isinstance(eta, (int, float)) else list(eta)
    check_etas(etas, allow_extrapolation)
    many = not isinstance(inversion, Inversion)
    inversions = list(inversion) if many else [inversion]
    targets = [target_prompt] * len(inversions) if isinstance(target_prompt, str) else list(target_prompt)
    if len(targets) != len(inversions):
        raise ValueError(f"got {len(inversions)} inversions but {len(targets)} target prompts")
    jobs = [(inv, target, e) for inv, target in zip(inversions, targets) for e in etas]
    latents = sample_edits(pipe, jobs, progress=progress, p2p=p2p, max_batch=max_batch)
    family = model_family(pipe)
    images = [family.decode_latents(z)[0] for z in latents]  # one at a time: items may differ in size
    per_item = chunks(images, len(etas))
    if many:
        return per_item
    return per_item[0][0] if isinstance(eta, (int, float)) else per_item[0]


def reconstruct(pipe, inversion: Inversion, progress: Progress = True):
    """The inversion's own reconstruction (eta = 0)."""
    return edit(pipe, inversion, "", 0.0, progress=progress)
