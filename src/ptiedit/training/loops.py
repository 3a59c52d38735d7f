"""What every training stage shares: batches of renders, the LR schedule, atomic checkpoints, CSV logs, and the
VAE and UNet training loops."""
from __future__ import annotations

import copy
import csv
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ..outputs import atomic_path
from ..toyworld.captions import caption
from ..toyworld.render import render
from ..toyworld.scene import random_scene
from .models import RESOLUTION, build_scheduler, build_text_encoder, build_unet

def render_batch(rng: random.Random, n: int, held_out: bool | None = False):
    scenes = [random_scene(rng, held_out=held_out) for _ in range(n)]
    pixels = np.stack([np.asarray(render(s, RESOLUTION)) for s in scenes])
    return scenes, torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_tensor(images: list) -> torch.Tensor:
    """PIL images or uint8 arrays (H, W, 3) -> (N, 3, H, W) in [-1, 1]."""
    pixels = np.stack([np.asarray(im, np.uint8) for im in images])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


def lr_at(step: int, total: int, peak: float, warmup: int = 200) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.05 * peak + 0.95 * peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class Checkpoint:
    """Atomic torch checkpoint of our own training state (never loaded from user input)."""

    def __init__(self, path: Path):
        self.path = path

    def load(self):
        return torch.load(self.path, weights_only=False) if self.path.exists() else None

    def save(self, state):
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)


def log_row(path: Path, row: dict):
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def fit_autoencoder(out: Path, name: str, model: AutoencoderKL, reconstruct, steps: int, batch: int, seed: int,
                    held_out: bool | None, quiet: bool, images=None, evaluate=None,
                    checkpoint_every: int = 250) -> AutoencoderKL:
    """The loop every VAE stage shares: L1 + MSE on fresh renders plus the stage's own term (reconstruct(x)
    returns the reconstruction and that term), Adam 1e-3 with cosine decay, resumable, logged as {name}_log.csv.

    images(rng, n, step) draws a training batch in [-1, 1] (default: renders of the original world);
    evaluate(model), if given, runs every 250 steps and at the end and returns a row for {name}_eval_log.csv.
    A checkpoint whose "opt" is None (seeded from an exported snapshot) restarts Adam at its step."""
    images = images or (lambda rng, n, step: render_batch(rng, n, held_out=held_out)[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ckpt, start = Checkpoint(out / "checkpoints" / f"{name}.pt"), 0
    if (state := ckpt.load()) is not None:
        model.load_state_dict(state["model"])
        if state["opt"] is not None:
            opt.load_state_dict(state["opt"])
        start = state["step"]
    for step in tqdm(range(start, steps), initial=start, total=steps, desc=name, disable=quiet):
        x = images(random.Random(seed * 1_000_003 + step), batch, step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, 1e-3)
        recon, extra = reconstruct(x)
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + extra
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0:
            psnr = 10 * math.log10(4 / F.mse_loss(recon.clamp(-1, 1), x).item())
            log_row(out / f"{name}_log.csv", {"step": step, "loss": f"{loss.item():.5f}", "psnr": f"{psnr:.2f}"})
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            ckpt.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step + 1})
        if evaluate is not None and ((step + 1) % 250 == 0 or step + 1 == steps):
            log_row(out / f"{name}_eval_log.csv", {"step": step + 1, **evaluate(model.eval())})
            model.train()
    return model.eval()


def train_unet(out: Path, tokenizer, latents: torch.Tensor, steps: int, epsilon_steps: int = 0, batch: int = 32,
               seed: int = 2, quiet: bool = False, export=None, export_every: int = 2000, name: str = "unet",
               models=None, scenes=None, captioner=caption):
    """Denoising loss on scaled latents; 10% empty captions teach the unconditional branch for CFG.

    v-prediction (Salimans & Ho 2022, as SD 2.x): on 16x16 latents the noise barely hides an image's layout even at
    t = T, and an epsilon-predicting UNet learns to copy the background from the noise instead of the caption
    (its x0 at high noise is epsilon's small residual, amplified 1 / sqrt(alpha_bar) times). The first
    `epsilon_steps` steps predict epsilon: the shipped model was started that way and switched.

    Defaults train the original world from scratch; models (unet, text_encoder) to start from when there is no
    checkpoint, the dataset's scenes, captioner(scene, rng) and the checkpoint/log name serve other recipes."""
    unet, text_encoder = models or (build_unet(), build_text_encoder(tokenizer))
    scheduler = build_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=1e-4)
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)]
    ckpt, start = Checkpoint(out / "checkpoints" / f"{name}.pt"), 0
    if (state := ckpt.load()) is not None:
        unet.load_state_dict(state["unet"]), text_encoder.load_state_dict(state["text_encoder"])
        ema[0].load_state_dict(state["ema_unet"]), ema[1].load_state_dict(state["ema_text_encoder"])
        if state["opt"] is not None:  # None: seeded from an exported model (continue_from_model)
            opt.load_state_dict(state["opt"])
        start = state["step"]
    if scenes is None:
        scenes_rng = random.Random(1)  # the scenes encode_dataset rendered, to caption them afresh each step
        scenes = [random_scene(scenes_rng) for _ in range(len(latents))]
    for step in tqdm(range(start, steps), initial=start, total=steps, desc=name, disable=quiet):
        rng = random.Random(seed * 1_000_003 + step)
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(len(latents), (batch,), generator=g)
        z0 = latents[idx]
        texts = ["" if rng.random() < 0.1 else captioner(scenes[i], rng) for i in idx.tolist()]
        ids = tokenizer(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        t = torch.randint(0, 1000, (batch,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        zt = scheduler.add_noise(z0, eps, t)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 5e-4, warmup=500)
        target = scheduler.get_velocity(z0, eps, t) if step >= epsilon_steps else eps
        loss = F.mse_loss(unet(zt, t, text_encoder(ids).last_hidden_state).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for model, avg in ((unet, ema[0]), (text_encoder, ema[1])):
                for p, q in zip(model.parameters(), avg.parameters()):
                    q.lerp_(p, 1 - decay)
        if step % 50 == 0:
            log_row(out / f"{name}_log.csv", {"step": step, "loss": f"{loss.item():.5f}", "time": f"{time.time():.0f}"})
        if (step + 1) % 250 == 0 or step + 1 == steps:
            ckpt.save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                       "ema_unet": ema[0].state_dict(), "ema_text_encoder": ema[1].state_dict(), "step": step + 1})
        if export and (step + 1) % export_every == 0:
            export(ema[0], ema[1])
    return ema[0].eval(), ema[1].eval()
