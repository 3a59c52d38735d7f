"""Prompt Tuning Inversion, reconstruction stage (Dong et al. 2023, Algorithm 1, lines 1-12)."""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..diffusion.ddim import Schedule, ddim_invert, ddim_transition
from .result import Inverted


def prompt_tuning_inversion(model, z0: torch.Tensor, schedule: Schedule, *, prompt_embedding: torch.Tensor,
                            null_embedding: torch.Tensor, guidance: float, inner_steps: int = 10, lr: float = 1e-2,
                            early_stop: float = 1e-5, progress: bool = True) -> Inverted:
    """Tune one conditional embedding c_t per timestep so the guided DDIM step from z_t lands on z*_{t-1}.

    z*_0..z*_T is the unguided DDIM inversion conditioned on `prompt_embedding`, which also initializes c_T.
    Walking back from z_T = z*_T, c_t starts from c_{t+1} (warm start) and takes up to `inner_steps` Adam steps
    on ||z_{t-1}(c_t) - z*_{t-1}||^2, stopping early below `early_stop`. The latent the tuned step produced
    becomes the next z_t (as in null-text inversion), so the sampler replays the reconstruction exactly.
    """
    if inner_steps < 0 or lr <= 0 or early_stop < 0:
        raise ValueError(f"need inner_steps >= 0, lr > 0, early_stop >= 0; got {inner_steps}, {lr}, {early_stop}")
    start = time.perf_counter()
    trajectory = ddim_invert(model, z0, schedule, prompt_embedding, progress=progress)
    T = len(schedule)
    z, c = trajectory[-1], prompt_embedding.detach().float().clone()
    tuned, losses, iterations = [], [], []
    for i in tqdm(range(T), desc="prompt tuning", disable=not progress):
        t, alpha, alpha_next, target = schedule.timesteps[i], float(schedule.alphas[i]), schedule.alpha_next(i), trajectory[T - 1 - i]
        with torch.no_grad():
            eps_u = model(z, t, null_embedding)  # does not depend on c_t: once per timestep
        c = c.detach().requires_grad_(True)
        optimizer = torch.optim.Adam([c], lr=lr * (1 - 0.5 * i / T))
        for k in range(inner_steps + 1):
            last = k == inner_steps
            with torch.set_grad_enabled(not last):
                eps_c = model(z, t, c)
                z_next = ddim_transition(z, eps_u + guidance * (eps_c - eps_u), alpha, alpha_next)
                loss = F.mse_loss(z_next, target)
            if last or loss.item() < early_stop:
                break  # keep this c with the latent it produced: the pair replays exactly when editing
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        z = z_next.detach()
        tuned.append(c.detach().clone())  # Adam updates c in place at the next step
        losses.append(loss.item())
        iterations.append(k)
    stats = {"loss": losses, "iterations": iterations, "seconds": time.perf_counter() - start}
    return Inverted(trajectory[-1], torch.stack(tuned), null_embedding, stats, reconstruction=z)
