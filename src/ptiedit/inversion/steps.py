"""Per-step latent rules that some methods add to editing's sampler, carried by their Inversion (its `sampling`
settings and z0): RF-Inversion's reverse controller toward the source latent and FlowEdit's source branch.

Every sampler (plain, Prompt-to-Prompt, faithful) takes a step callback; step_rules wraps the caller's so that
after each step the rows of such inversions are corrected, then the caller's callback runs. An inversion without
`sampling` leaves its rows untouched, and a batch without any gets the caller's callback itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import callback_latents
from ..diffusion.schedule import Schedule
from .flowedit import flowedit_step
from .rf_inversion import reverse_controller

RULES = {"rf_inversion": reverse_controller, "flowedit": flowedit_step}


@dataclass(frozen=True)
class Target:
    """What the sampler steps a batch's rows with: cond and uncond (per step or not) and the guidance scale."""

    cond: Conditioning
    uncond: Conditioning
    guidance: float

    def rows(self, i: int, members: list[int]) -> tuple[Conditioning, Conditioning]:
        """cond and uncond of sampling step i for the given rows."""
        index = torch.tensor(members)
        return self.cond.at_step(i).items(index), self.uncond.at_step(i).items(index)


def step_rules(model, inversions: list, schedule: Schedule, z_T: torch.Tensor, target: Target,
               callback: Callable[[int, torch.Tensor], dict | None] | None = None):
    """A sampler callback(i, z) for a batch whose row b samples inversions[b] from z_T[b] with `target`: each
    rule gets (i, its rows before the step, after it) and returns the corrected rows; `callback` then sees every
    row."""
    rows: dict[int, list[int]] = {}
    for b, inversion in enumerate(inversions):
        if inversion.sampling and inversion.method in RULES:
            rows.setdefault(id(inversion), []).append(b)
    if not rows:
        return callback
    by_id = {id(inversion): inversion for inversion in inversions}
    rules = [(members, RULES[by_id[key].method](model, by_id[key], schedule, members, target))
             for key, members in rows.items()]
    state = {"z": z_T}

    def step(i: int, z_next: torch.Tensor):
        corrected = z_next.clone()
        for members, rule in rules:
            corrected[members] = rule(i, state["z"][members], z_next[members])
        state["z"] = callback_latents(callback(i, corrected) if callback is not None else None, corrected)
        return {"latents": state["z"]}
    return step
