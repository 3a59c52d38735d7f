"""Train the embedded shapes-world Stable Diffusion: VAE first, then UNet + text encoder with caption dropout.

Resumable: every stage checkpoints to OUT/checkpoints and skips what is finished.
Run: ptiedit toyworld train --out DIR [--vae-steps N] [--unet-steps N] (or python -m ptiedit.toyworld.train).
--world textured trains on the textured world instead (train_textured.py); --snapshot DEST exports its run in
progress in fp16, and --continue-from DEST continues from such a snapshot.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel

from ..outputs import atomic_path
from .captions import caption, vocabulary
from .render import render
from .scene import random_scene
from .tokenizer import load_tokenizer, write_tokenizer

RESOLUTION = 64
TEXT_DIM = 128
WIDE_VAE = (32, 64, 128)  # block widths of the shipped VAE, distilled from the (16, 32, 64) one the UNet learnt on


def build_vae(widths: tuple[int, ...] = (16, 32, 64), layers_per_block: int = 1,
              latent_channels: int = 4) -> AutoencoderKL:
    """64x64x3 <-> 16x16xC (two downsamplings), no attention: shapes need no global context."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=widths,
                         layers_per_block=layers_per_block, latent_channels=latent_channels, norm_num_groups=16,
                         sample_size=RESOLUTION, mid_block_add_attention=False)


def build_unet(latent_channels: int = 4) -> UNet2DConditionModel:
    """Cross-attention only at 8x8 and 4x4: at 16x16 it costs 3x the time for little gain on this world."""
    return UNet2DConditionModel(
        sample_size=RESOLUTION // 4, in_channels=latent_channels, out_channels=latent_channels,
        block_out_channels=(32, 64, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=2, cross_attention_dim=TEXT_DIM, attention_head_dim=4, norm_num_groups=32)


def build_text_encoder(tokenizer) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=2 * TEXT_DIM,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    return CLIPTextModel(config)


def build_scheduler() -> DDIMScheduler:
    """Stable Diffusion's schedule (scaled-linear betas 0.00085..0.012, 1000 steps)."""
    return DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")


def render_batch(rng: random.Random, n: int, held_out: bool | None = False):
    scenes = [random_scene(rng, held_out=held_out) for _ in range(n)]
    pixels = np.stack([np.asarray(render(s, RESOLUTION)) for s in scenes])
    return scenes, torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1


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


def train_vae(out: Path, steps: int, batch: int = 32, seed: int = 0, quiet: bool = False) -> AutoencoderKL:
    """Reconstruction with a tiny KL term, as SD's VAE minus the perceptual/adversarial losses."""
    vae = build_vae()

    def reconstruct(x):
        posterior = vae.encode(x).latent_dist
        return vae.decode(posterior.sample()).sample, 1e-6 * posterior.kl().mean()

    return fit_autoencoder(out, "vae", vae, reconstruct, steps, batch, seed, held_out=False, quiet=quiet)


def widen_vae(out: Path, vae: AutoencoderKL, steps: int, batch: int = 16, seed: int = 3,
              quiet: bool = False) -> AutoencoderKL:
    """Distil the VAE into a wider one that keeps its latent space: the new encoder regresses onto the old
    posterior moments (so the UNet trained on old latents still fits) and the new decoder learns to reconstruct
    from the old posterior means (as SD's ft-MSE decoder), with the capacity the small one lacked for 32 dB."""
    wide = build_vae(WIDE_VAE)

    def reconstruct(x):
        with torch.no_grad():
            moments = vae.quant_conv(vae.encoder(x))
        recon = wide.decode(moments[:, :vae.config.latent_channels]).sample
        return recon, F.mse_loss(wide.quant_conv(wide.encoder(x)), moments)

    # All scenes, held-out ones too: held-out combinations test the text model, not the pixel model.
    return fit_autoencoder(out, "wide_vae", wide, reconstruct, steps, batch, seed, held_out=None, quiet=quiet)


@torch.no_grad()
def encode_dataset(vae: AutoencoderKL, out: Path, n: int, seed: int = 1):
    """Latent means of n training-split scenes (the same scenes again from the seed), and SD's scaling factor."""
    path = out / "checkpoints" / f"latents_{n}.pt"
    if path.exists():
        return torch.load(path)
    rng, latents = random.Random(seed), []
    for start in range(0, n, 500):
        _, x = render_batch(rng, min(500, n - start))
        latents.append(vae.encode(x).latent_dist.mean)
    latents = torch.cat(latents)
    data = {"latents": latents, "scaling_factor": float(1 / latents.std())}
    torch.save(data, path)
    return data


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


def continue_from_model(out: Path, folder: Path, step: int, tokenizer) -> AutoencoderKL:
    """Seed the UNet checkpoint from an exported model (its EMA weights become both the weights and their
    average; AdamW starts afresh) and return its VAE, which then defines the latent space."""
    missing = [part for part in ("unet", "text_encoder", "vae") if not (folder / part).is_dir()]
    if missing:
        raise ValueError(f"--continue-from {folder}: not an exported model folder (no {', '.join(missing)})")
    ckpt = Checkpoint(out / "checkpoints" / "unet.pt")
    if not ckpt.path.exists():  # a rerun resumes from its own checkpoint instead
        unet = UNet2DConditionModel.from_pretrained(folder / "unet")
        text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder")
        if text_encoder.config.vocab_size != len(tokenizer):
            raise ValueError(f"{folder}: its text encoder has {text_encoder.config.vocab_size} tokens, "
                             f"the shapes-world tokenizer {len(tokenizer)}")
        ckpt.save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": None,
                   "ema_unet": unet.state_dict(), "ema_text_encoder": text_encoder.state_dict(), "step": step})
    return AutoencoderKL.from_pretrained(folder / "vae").eval()


def export_pipeline(folder: Path, vae, unet, text_encoder, tokenizer, scaling_factor: float, half: bool = False):
    """Save a genuine diffusers Stable Diffusion folder (safetensors only) that from_pretrained can load; half:
    store fp16 copies of the weights, which every from_pretrained upcasts to fp32 unless given a dtype."""
    vae.register_to_config(scaling_factor=scaling_factor)
    if half:
        vae, unet, text_encoder = (copy.deepcopy(m).half() for m in (vae, unet, text_encoder))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(tmp, safe_serialization=True)
    if half:  # transformers loads the dtype a config names; fp32, as diffusers loads its own components by default
        config = json.loads((tmp / "text_encoder" / "config.json").read_text())
        (tmp / "text_encoder" / "config.json").write_text(json.dumps({**config, "dtype": "float32"}, indent=2) + "\n")
    # A fresh tokenizer.json: the training one carries the padding/truncation state of its last call.
    tokenizer.backend_tokenizer.no_padding(), tokenizer.backend_tokenizer.no_truncation()
    tokenizer.save_pretrained(tmp / "tokenizer")
    write_tokenizer(tmp / "tokenizer", vocabulary())  # also the plain vocab.json/merges.txt files
    if folder.exists():
        import shutil
        shutil.rmtree(folder)
    os.replace(tmp, folder)


# Per-world defaults of the step counts (the textured world's VAE is trained afresh, its UNet is not widened).
DEFAULTS = {"shapes": {"vae_steps": 3000, "unet_steps": 32000, "dataset": 40000},
            "textured": {"vae_steps": 8000, "unet_steps": 40000, "dataset": 40000}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="working folder (checkpoints, logs, model/)")
    parser.add_argument("--world", choices=tuple(DEFAULTS), default="shapes",
                        help="shapes: solid backgrounds (the shipped model); textured: patterns, textures, photos")
    parser.add_argument("--snapshot", type=Path, default=None, metavar="DEST",
                        help="textured world: export OUT's run in progress in fp16 to DEST and exit")
    parser.add_argument("--init-from", type=Path, default=None, metavar="MODEL",
                        help="textured world: start the UNet and text encoder from an exported model's weights "
                             "(layers whose shapes differ start fresh; token embeddings are matched by token)")
    parser.add_argument("--eval-images", type=int, default=100,
                        help="textured world: images per VAE evaluation set (held-out photo crops, solid, textured)")
    parser.add_argument("--vae-steps", type=int, default=None)
    parser.add_argument("--wide-vae-steps", type=int, default=4500, help="distillation into the wider shipped VAE")
    parser.add_argument("--unet-steps", type=int, default=None)
    parser.add_argument("--epsilon-steps", type=int, default=7000,
                        help="first UNet steps with epsilon prediction, as the shipped model was trained (0: none)")
    parser.add_argument("--dataset", type=int, default=None, help="number of pre-encoded training scenes")
    parser.add_argument("--continue-from", type=Path, default=None, metavar="MODEL",
                        help="continue an exported model's UNet and text encoder (with its VAE and latent scale; "
                             "no VAE stages; AdamW starts afresh); textured world: a --snapshot folder")
    parser.add_argument("--start-step", type=int, default=0,
                        help="with --continue-from: the step the model was exported at (data order, LR schedule)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.start_step and not args.continue_from:
        raise ValueError("--start-step needs --continue-from (a plain rerun resumes from OUT/checkpoints)")
    if args.world == "shapes" and (args.snapshot or args.init_from):
        raise ValueError("--snapshot and --init-from belong to --world textured")
    for name, value in DEFAULTS[args.world].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.snapshot:
        from .train_textured import write_snapshot
        state = write_snapshot(args.out, args.snapshot)
        print(f"snapshot of {args.out} at VAE step {state['vae_step']}, UNet step {state['unet_step']} "
              f"written to {args.snapshot}")
        return 0
    torch.manual_seed(0)
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_tokenizer(args.out / "tokenizer", vocabulary())
    tokenizer = load_tokenizer(args.out / "tokenizer")
    if args.world == "textured":
        from .train_textured import run as run_textured
        return run_textured(args, tokenizer)
    if args.continue_from:
        vae = continue_from_model(args.out, args.continue_from, args.start_step, tokenizer)
    else:
        vae = train_vae(args.out, args.vae_steps, quiet=args.quiet)
    data = encode_dataset(vae, args.out, args.dataset)
    # A continued model keeps the latent scale its UNet learnt on.
    scale = vae.config.scaling_factor if args.continue_from else data["scaling_factor"]
    latents = data["latents"] * scale

    def export(unet, text_encoder, vae=vae):
        export_pipeline(args.out / "model", vae, unet, text_encoder, tokenizer, scale)

    unet, text_encoder = train_unet(args.out, tokenizer, latents, args.unet_steps, args.epsilon_steps,
                                    quiet=args.quiet, export=export)
    if not args.continue_from:
        vae = widen_vae(args.out, vae, args.wide_vae_steps, quiet=args.quiet)
    export(unet, text_encoder, vae)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
