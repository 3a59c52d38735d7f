"""The inner loop PTI and null-text inversion share: tune one conditioning so a guided DDIM step hits its target.

Vectorized over images: each image keeps its own conditioning, loss and early stopping.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..diffusion.conditioning import Conditioning
from ..diffusion.ddim import Prediction, ddim_step, guide
from ..diffusion.schedule import Level


@dataclass
class TunedStep:
    conditioning: Conditioning  # the tuned conditioning per image, detached
    z_next: torch.Tensor  # (B, C, h, w) the latent each image's kept conditioning produces
    first_loss: torch.Tensor  # (B,) loss before tuning
    loss: torch.Tensor  # (B,) loss of the kept (conditioning, z_next) pair
    iterations: torch.Tensor  # (B,) Adam updates made


def tune_guided_step(model, z: torch.Tensor, t, level_next: Level, target: torch.Tensor, conditioning: Conditioning,
                     fixed: Prediction | None, tuned_branch: str, guidance: float, inner_steps: int, lr: float,
                     threshold: float) -> TunedStep:
    """Adam on ||DDIM(z, u + w (c - u)) - target||^2 over the conditioning of one CFG branch (u, c: predictions).

    tuned_branch "cond" (PTI: c_t) or "uncond" (null-text inversion); the other branch's prediction is `fixed`,
    computed once per timestep by the caller; at guidance 1 the step is c's alone, as sampling's
    guided_prediction computes it (so eta = 0 replays bit for bit), and fixed is unused (may be None). Each iteration first evaluates the
    images still tuning; an image whose mean squared error is below threshold, or whose budget is spent, keeps that
    (conditioning, z_next) pair, so that sampling at the batch it was evaluated in replays it exactly, and its last
    evaluation needs no backward pass. The others take one Adam step: Adam is elementwise, so one optimizer over
    the batch equals one per image. Gradients go to the conditioning alone (torch.autograd.grad): the UNet's
    weights get no .grad, whatever their requires_grad.
    """
    if guidance == 1.0 and tuned_branch == "uncond":
        raise ValueError("at guidance 1 the unconditional branch has no effect: there is nothing to tune")
    batch = len(z)
    params = conditioning.expand(batch).detach().map(lambda x: x.float().requires_grad_(True))
    leaves = [p for p in params.tensors() if p is not None]
    optimizer = torch.optim.Adam(leaves, lr=lr)
    kept, z_kept = [None] * batch, torch.empty_like(target)
    first_loss, loss_kept = torch.zeros(batch), torch.zeros(batch)
    iterations = torch.zeros(batch, dtype=torch.long)
    active = torch.arange(batch)  # images still tuning
    for k in range(inner_steps + 1):
        with torch.set_grad_enabled(k < inner_steps):
            tuned = model.predict(z[active], t, params.items(active.to(params.tokens.device)))
            if guidance == 1.0:
                prediction = tuned
            else:
                other = Prediction(fixed.x0[active], fixed.eps[active])
                prediction = guide(other, tuned, guidance) if tuned_branch == "cond" else guide(tuned, other, guidance)
            z_next = ddim_step(prediction, level_next)
            error = (z_next - target[active]).square().flatten(1)
        mse = error.detach().mean(1).cpu()  # per image: early stopping compares it across resolutions
        if k == 0:
            first_loss[:] = mse
        done = (mse < threshold) | (k == inner_steps)
        for j in done.nonzero().flatten().tolist():
            b = int(active[j])
            kept[b] = params.items(slice(b, b + 1)).detach()
            z_kept[b], loss_kept[b], iterations[b] = z_next[j].detach(), mse[j], k
        active = active[~done]
        if len(active) == 0:
            break
        # Summed, not averaged, over latent elements (and images, which keeps their gradients independent):
        # d loss / d z_next is then 2 (z_next - z*) per element, about 1e-2 at the early-stop loss whatever the
        # resolution. A mean over SD's 16,384 latent elements would bring it to ~1e-6, subnormal in fp16, and
        # smaller still inside an fp16/bf16 UNet's backward pass. Adam is invariant to the loss scale.
        for leaf, grad in zip(leaves, torch.autograd.grad(error[~done].sum(), leaves)):
            leaf.grad = grad
        optimizer.step()
    return TunedStep(Conditioning.cat(kept), z_kept, first_loss, loss_kept, iterations)
