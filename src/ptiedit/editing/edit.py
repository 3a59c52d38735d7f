"""Editing stage (Dong et al. 2023, Algorithm 1, lines 13-17): sample from z*_T with blended conditioning.

Two modes: "paper", the plain stage 2; "faithful" (the default), the same sampler beside the reconstruction branch,
with an automatic edit mask and latent blending outside it (faithful.py).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import sample_ddim, schedule_from_timesteps
from ..diffusion.progress import Progress
from ..inversion.result import Inversion
from ..inversion.steps import Target, step_rules
from ..models.families.base import pil_images
from ..models.family import model_family
from ..models.fingerprint import pipeline_fingerprint
from .faithful import FaithfulConfig, composite, sample_faithful
from .p2p import AttentionReplace, P2PConfig, attention_control, token_alignment

DEFAULT_ETA = 0.9  # decided on the textured-world bench (README, "PTI's defaults")
MODES = ("faithful", "paper")  # faithful: mask + blending (editing/faithful.py); paper: plain stage 2
DEFAULT_MODE = "faithful"
Job = tuple[Inversion, str, float]  # (inversion, target prompt, eta)


def check_etas(etas: Sequence[float], allow_extrapolation: bool = False) -> None:
    for eta in etas:
        if not (eta >= 0 and (eta <= 1 or allow_extrapolation)):
            raise ValueError(f"eta must be in [0, 1] (values above 1 need allow_extrapolation), got {eta}")


def chunks(items: list, size: int | None) -> list[list]:
    size = size or len(items)
    return [items[i:i + size] for i in range(0, len(items), size)]


def batch_key(inversion: Inversion) -> tuple:
    """Jobs sample together when they share latent shape, timesteps, guidance (CFG and distilled) and conditioning
    layout."""
    return (tuple(inversion.z_T.shape), tuple(inversion.timesteps.tolist()), inversion.guidance,
            inversion.distilled_guidance, inversion.cond.per_step, inversion.uncond.per_step)


@dataclass
class EditSample:
    """One sampled edit: its latent (1, C, h, w) and, in faithful mode, its edit mask (1, 1, h, w) in {0, 1}, and
    the latent of its reconstruction branch where the decoded edit is pasted onto it through the mask grown by
    `border` latent cells (faithful.composite; decode_samples)."""
    latent: torch.Tensor
    mask: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    border: float = 0.0


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown editing mode {mode!r}; choose from {', '.join(MODES)}")


@torch.no_grad()
def sample_edits(pipe, jobs: list[Job], *, progress: Progress = True, mode: str = DEFAULT_MODE,
                 p2p: P2PConfig | Sequence[P2PConfig] | None = None, faithful: FaithfulConfig | None = None,
                 max_batch: int | None = None, allow_changed_weights: bool = False,
                 callback: Callable[[int, torch.Tensor, torch.Tensor], dict | None] | None = None) -> list[EditSample]:
    """Edited latents, one per job: every (inversion, target, eta) sampled in batches of up to max_batch; jobs of
    different sizes or schedules go in different batches.

    mode "faithful" (editing/faithful.py, settings `faithful`) keeps the picture outside an automatic edit mask;
    "paper" is the paper's plain stage 2. eta = 0 replays the reconstruction exactly in both modes.
    p2p: Prompt-to-Prompt settings, one for all jobs or one per job. With either, each inversion in a batch adds its
    reconstruction branch (eta = 0), whose attention (and, faithful, whose latents outside the mask) its edits take.
    allow_changed_weights: edit with weights other than the inversion's (e.g. a LoRA applied since); eta = 0 then
    no longer replays the reconstruction.
    callback(step, timestep, latents): after each step of each UNet batch, with the batch's edit latents (not its
    reconstruction branches); a dict it returns with "latents" replaces them (diffusers' callback_on_step_end)."""
    check_mode(mode)
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be at least 1, got {max_batch}")
    configs = [p2p] * len(jobs) if p2p is None or isinstance(p2p, P2PConfig) else list(p2p)
    if len(configs) != len(jobs) or (p2p is not None and None in configs):
        raise ValueError(f"got {len(jobs)} jobs but {len(configs)} Prompt-to-Prompt settings")
    faithful = (faithful or FaithfulConfig()) if mode == "faithful" else None
    family, fingerprint = model_family(pipe), pipeline_fingerprint(pipe)
    for inversion in {id(job[0]): job[0] for job in jobs}.values():
        inversion.check_compatible(fingerprint, allow_changed_weights)
    device = family.device
    targets = {prompt: family.encode_prompt(prompt) for _, prompt, _ in jobs}
    groups: dict[tuple, list[int]] = {}
    for index, (inversion, _, eta) in enumerate(jobs):
        replay = faithful is not None and p2p is None and eta == 0  # c~_t = c_t: no mask, the exact replay
        groups.setdefault((*batch_key(inversion), replay), []).append(index)
    out: list[EditSample | None] = [None] * len(jobs)
    for key, members in groups.items():
        replay = key[-1]
        for chunk in chunks(members, max_batch):
            rows, picked = chunk, [jobs[j] for j in chunk]
            branched = not replay and (p2p is not None or faithful is not None)
            if branched:  # each inversion's reconstruction branch (row None) leads its edits
                by_inversion: dict[int, list[int]] = {}
                for j in chunk:
                    by_inversion.setdefault(id(jobs[j][0]), []).append(j)
                rows, picked = [], []
                for members_of_one in by_inversion.values():
                    inversion, target, _ = jobs[members_of_one[0]]
                    rows += [None, *members_of_one]
                    picked += [(inversion, target, 0.0), *(jobs[j] for j in members_of_one)]  # eta 0: its own c_t
            with family.distilled_guidance_at(picked[0][0].distilled_guidance):  # FlowEdit's target on FLUX.1-dev
                latents, masks = sample_chunk(pipe, picked, targets, device,
                                              [j is None for j in rows] if branched else None,
                                              [None if j is None else configs[j] for j in rows],
                                              None if replay else faithful, progress,
                                              None if callback is None else step_callback(
                                                  callback, picked[0][0].timesteps,
                                                  [b for b, j in enumerate(rows) if j is not None]))
            paste = masks is not None and faithful.composite_border is not None
            for b, j in enumerate(rows):
                if j is None:
                    reconstruction = latents[b:b + 1] if paste else None  # shared by its edits: decoded once
                    continue
                mask = masks[b:b + 1] if masks is not None else (
                    torch.zeros_like(latents[b:b + 1, :1]) if faithful is not None else None)
                out[j] = EditSample(latents[b:b + 1], mask, reconstruction if paste else None,
                                    faithful.composite_border if paste else 0.0)
    return out


def decode_samples(family, samples: list[EditSample], max_batch: int | None = None) -> list[torch.Tensor]:
    """Each sample's image (1, 3, H, W) in [0, 1]: the latents of one shape decoded in batches of up to max_batch,
    each reconstruction once; a sample with a reconstruction is pasted onto it (faithful.composite)."""
    latents: dict[int, torch.Tensor] = {}
    for s in samples:
        for z in (s.latent, s.reconstruction):
            if z is not None:
                latents.setdefault(id(z), z)
    by_shape: dict[tuple, list[int]] = {}
    for key, z in latents.items():
        by_shape.setdefault(tuple(z.shape), []).append(key)
    pixels = {}
    for keys in by_shape.values():
        for part in chunks(keys, max_batch):
            pixels.update(zip(part, family.decode_pixels(torch.cat([latents[k] for k in part])).split(1)))
    return [pixels[id(s.latent)] if s.reconstruction is None else
            composite(pixels[id(s.latent)], pixels[id(s.reconstruction)], s.mask, s.border) for s in samples]


def step_callback(callback, timesteps: torch.Tensor, rows: list[int]):
    """A sampler's callback(i, z) that shows `callback` the given rows of z, and takes back latents it returns."""
    def step(i: int, z: torch.Tensor):
        whole = len(rows) == len(z)
        output = callback(i, timesteps[i], z if whole else z[rows])
        if not (isinstance(output, dict) and "latents" in output) or whole:
            return output
        z = z.clone()
        z[rows] = output["latents"].to(z)
        return {"latents": z}
    return step


def sample_chunk(pipe, jobs: list[Job], targets: dict[str, Conditioning], device, is_source: list[bool] | None,
                 configs: list[P2PConfig | None], faithful: FaithfulConfig | None,
                 progress: Progress = True, callback=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UNet batch of jobs that share a batch_key: (latents, masks or None). With is_source (one flag per job),
    a flagged job is a reconstruction branch and the jobs after it, up to the next flagged one, are its edits, each
    with its Prompt-to-Prompt settings (None: none). callback(i, z): the samplers' step callback."""
    family, first = model_family(pipe), jobs[0][0]
    # 1. Conditioning per step and job: c~_t = eta c_target + (1 - eta) c_t; the unconditional branch is the inversion's.
    eta = torch.tensor([e for _, _, e in jobs], dtype=torch.float32, device=device)
    cond = Conditioning.cat([inv.cond.to(device, torch.float32).blend(targets[prompt], eta[k:k + 1])
                             for k, (inv, prompt, _) in enumerate(jobs)])
    uncond = Conditioning.cat([inv.uncond.to(device, torch.float32) for inv, _, _ in jobs])
    # 2. Sample from z*_T with the inversion's guidance scale and timesteps.
    z_T = torch.cat([inv.z_T.to(device, torch.float32) for inv, _, _ in jobs])
    schedule = schedule_from_timesteps(pipe.scheduler, first.timesteps)
    callback = step_rules(family, [inv for inv, _, _ in jobs], schedule, z_T, Target(cond, uncond, first.guidance),
                          callback)  # RF-Inversion's and FlowEdit's per-step rules, in every mode
    if is_source is None:
        return sample_ddim(family, z_T, schedule, cond, uncond, first.guidance, progress=progress,
                           callback=callback), None
    # 3. Edits beside their reconstruction branch: attention control, and in faithful mode the mask and blending.
    source, groups, source_prompt, last = [], [], "", 0
    for b, ((inversion, prompt, _), config) in enumerate(zip(jobs, configs)):
        if is_source[b]:
            source_prompt, last = inversion.settings.get("prompt", ""), b
            source.append(b)
            groups.append([])
            continue
        source.append(last)
        if config is not None and not family.attention_editing:
            raise ValueError(f"Prompt-to-Prompt needs a UNet model; {family.label} has none")
        setting = config or P2PConfig(cross_replace=0.0)
        if faithful is not None and family.attention_editing:  # else: the mask and blending alone
            setting = replace(setting, self_replace=max(setting.self_replace, faithful.self_replace))
        aligned = token_alignment(family.tokenizers[0], source_prompt if setting.source_prompt is None
                                  else setting.source_prompt, prompt)
        groups[-1].append((*aligned, setting))
    active = any(s.cross_replace > 0 or s.self_replace > 0 for group in groups for *_, s in group)
    control = AttentionReplace(groups, len(schedule), latent_tokens=z_T.shape[-2] * z_T.shape[-1]) if active else None
    with attention_control(family.denoiser, control) if control is not None else nullcontext():
        if faithful is None:
            def step(i, z):
                if control is not None:
                    control.step_done(i, z)
                return callback(i, z) if callback is not None else None
            return sample_ddim(family, z_T, schedule, cond, uncond, first.guidance, progress=progress, fused=True,
                               callback=step), None
        return sample_faithful(family, z_T, schedule, cond, uncond, first.guidance,
                               torch.tensor(source, device=device), faithful, progress, control, callback)


def edit_latents(pipe, inversion: Inversion, target_prompt: str, etas: Sequence[float], *, progress: Progress = True,
                 allow_extrapolation: bool = False, mode: str = DEFAULT_MODE, p2p: P2PConfig | None = None,
                 faithful: FaithfulConfig | None = None, max_batch: int | None = None) -> torch.Tensor:
    """Edited latents (len(etas), C, h, w) of one inversion; p2p adds Prompt-to-Prompt."""
    check_etas(etas, allow_extrapolation)
    samples = sample_edits(pipe, [(inversion, target_prompt, eta) for eta in etas], progress=progress, mode=mode,
                           p2p=p2p, faithful=faithful, max_batch=max_batch)
    return torch.cat([s.latent for s in samples])


def mask_image(mask: torch.Tensor, size: tuple[int, int]) -> Image.Image:
    """An edit mask (1, 1, h, w) as a black-and-white image of the edited image's size (white: edited)."""
    pixels = (mask[0, 0].cpu().numpy() * 255).astype(np.uint8)
    return Image.fromarray(pixels, "L").resize(size, Image.NEAREST)


def edit(pipe, inversion: Inversion | Sequence[Inversion], target_prompt: str | Sequence[str],
         eta: float | Sequence[float] = DEFAULT_ETA, *, progress: Progress = True, allow_extrapolation: bool = False,
         mode: str = DEFAULT_MODE, p2p: P2PConfig | None = None, faithful: FaithfulConfig | None = None,
         max_batch: int | None = None, return_masks: bool = False, allow_changed_weights: bool = False):
    """Edit inverted images toward their target prompts. eta=0 reproduces the reconstruction, eta=1 conditions on
    the target prompt alone (the baselines edit with eta=1).

    mode "faithful" (the default) changes only what an automatic mask finds the target prompt changes and keeps
    the reconstruction elsewhere (editing/faithful.py, settings `faithful`); "paper" is the paper's plain stage 2.
    One inversion and a single eta return one PIL image, a sequence of etas a list. A list of inversions (with
    one target each) returns one list of images per inversion, every (image, eta) sampled in shared UNet batches
    of up to max_batch. p2p: Prompt-to-Prompt attention control (editing/p2p.py); each inversion in a batch
    brings its own reconstruction branch. return_masks: return (images, masks), the masks as black-and-white
    images in the same layout (all black in paper mode). allow_changed_weights: as sample_edits.
    """
    etas = [eta] if isinstance(eta, (int, float)) else list(eta)
    check_etas(etas, allow_extrapolation)
    many = not isinstance(inversion, Inversion)
    inversions = list(inversion) if many else [inversion]
    targets = [target_prompt] * len(inversions) if isinstance(target_prompt, str) else list(target_prompt)
    if len(targets) != len(inversions):
        raise ValueError(f"got {len(inversions)} inversions but {len(targets)} target prompts")
    jobs = [(inv, target, e) for inv, target in zip(inversions, targets) for e in etas]
    samples = sample_edits(pipe, jobs, progress=progress, mode=mode, p2p=p2p, faithful=faithful, max_batch=max_batch,
                           allow_changed_weights=allow_changed_weights)
    images = [pil_images(pixels)[0] for pixels in decode_samples(model_family(pipe), samples, max_batch)]

    def shaped(items: list):
        per_item = chunks(items, len(etas))
        if many:
            return per_item
        return per_item[0][0] if isinstance(eta, (int, float)) else per_item[0]
    if not return_masks:
        return shaped(images)
    masks = [mask_image(torch.zeros_like(s.latent[:, :1]) if s.mask is None else s.mask, im.size)
             for s, im in zip(samples, images)]
    return shaped(images), shaped(masks)


def reconstruct(pipe, inversion: Inversion, progress: Progress = True):
    """The inversion's own reconstruction (eta = 0)."""
    return edit(pipe, inversion, "", 0.0, progress=progress)
