"""Null-text inversion (Mokady et al., CVPR 2023): tune the unconditional embedding per step, source prompt fixed."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..diffusion.ddim import Schedule, ddim_invert, ddim_transition
from .result import Inverted


def null_text_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt_embedding: torch.Tensor,
                        null_embedding: torch.Tensor, guidance: float, inner_steps: int = 10, lr: float = 1e-2,
                        early_stop: float = 1e-5, progress: bool = True) -> Inverted:
    """Tune one null embedding per timestep so the CFG step with the source prompt lands on z*_{t-1}.

    z*_0..z*_T is the unguided (w = 1) DDIM inversion with the source prompt. Walking back from z*_T, the null
    embedding starts from the previous step's (warm start, initially the empty prompt's) and takes up to
    `inner_steps` Adam steps on ||z_{t-1}(null_t) - z*_{t-1}||^2 with learning rate lr (1 - i/100) (the paper's
    decay, written for its 50 steps as lr (1 - 0.5 i/T) so it stays positive for any T and matches PTI's), stopping
    once the loss is below early_stop + 2e-5 i. Structured like PTI's stage 1 (inversion/pti.py) so the two
    compare fairly: the latent the tuned step produced becomes the next z_t.
    """
    start = time.perf_counter()
    trajectory = ddim_invert(model, z0, schedule, prompt_embedding, progress=progress)
    T = len(schedule)
    z, null = trajectory[-1], null_embedding.detach().float().clone()
    tuned, initial_losses, losses, iterations = [], [], [], []
    for i in tqdm(range(T), desc="null-text tuning", disable=not progress):
        t, alpha, alpha_next, target = schedule.timesteps[i], float(schedule.alphas[i]), schedule.alpha_next(i), trajectory[T - 1 - i]
        with torch.no_grad():
            eps_c = model(z, t, prompt_embedding)  # does not depend on the null embedding: once per timestep
        null = null.detach().requires_grad_(True)
        optimizer = torch.optim.Adam([null], lr=lr * (1 - 0.5 * i / T))
        for k in range(inner_steps + 1):
            last = k == inner_steps
            with torch.set_grad_enabled(not last):
                eps_u = model(z, t, null)
                z_next = ddim_transition(z, eps_u + guidance * (eps_c - eps_u), alpha, alpha_next)
                loss = F.mse_loss(z_next, target)
            if k == 0:
                initial_losses.append(loss.item())
            if last or loss.item() < early_stop + 2e-5 * i:
                break  # keep this embedding with the latent it produced: the pair replays exactly when editing
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        z = z_next.detach()
        tuned.append(null.detach().clone())  # Adam updates the embedding in place at the next step
        losses.append(loss.item())
        iterations.append(k)
    stats = {"loss": losses, "initial_loss": initial_losses, "iterations": iterations,
             "seconds": time.perf_counter() - start}
    return Inverted(trajectory[-1], prompt_embedding, torch.stack(tuned), stats, reconstruction=z)
