"""The inner loop PTI and null-text inversion share: tune one embedding so a guided DDIM step hits its target."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..diffusion.ddim import ddim_transition


@dataclass
class TunedStep:
    embedding: torch.Tensor  # the tuned embedding, detached (a copy: Adam updates in place)
    z_next: torch.Tensor  # the latent this embedding's guided step produces
    first_loss: float  # loss before tuning
    loss: float  # loss of the kept (embedding, z_next) pair
    iterations: int  # Adam updates made


def tune_guided_step(model, z, t, alpha: float, alpha_next: float, target: torch.Tensor, embedding: torch.Tensor,
                     fixed_eps: torch.Tensor, tuned_branch: str, guidance: float, inner_steps: int, lr: float,
                     threshold: float) -> TunedStep:
    """Adam on ||DDIM(z, eps_u + w (eps_c - eps_u)) - target||^2 over the embedding of one CFG branch.

    tuned_branch "cond" (PTI: c_t) or "uncond" (null-text inversion); the other branch's eps is fixed_eps,
    computed once per timestep by the caller. Each iteration first evaluates the current embedding and stops
    when the loss is below threshold or the budget is spent, so the kept pair replays exactly when editing and
    the last evaluation needs no backward pass.
    """
    embedding = embedding.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([embedding], lr=lr)
    for k in range(inner_steps + 1):
        last = k == inner_steps
        with torch.set_grad_enabled(not last):
            eps = model(z, t, embedding)
            eps_u, eps_c = (fixed_eps, eps) if tuned_branch == "cond" else (eps, fixed_eps)
            z_next = ddim_transition(z, eps_u + guidance * (eps_c - eps_u), alpha, alpha_next)
            loss = F.mse_loss(z_next, target)
        first_loss = loss.item() if k == 0 else first_loss
        if last or loss.item() < threshold:
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return TunedStep(embedding.detach().clone(), z_next.detach(), first_loss, loss.item(), k)
