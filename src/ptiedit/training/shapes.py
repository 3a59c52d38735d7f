"""The shapes world's recipe (the original world: solid backgrounds): VAE, UNet + text encoder with caption
dropout, then the VAE distilled into a wider one that keeps its latent space."""
from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from .loops import Checkpoint, fit_autoencoder, render_batch, train_unet
from .models import WIDE_VAE, build_vae, export_pipeline

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


def run(args, tokenizer) -> int:
    """The shapes recipe, each stage resumed from OUT/checkpoints."""
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
