"""Training recipe of the textured world (`ptiedit toyworld train --world textured`), and its fp16 snapshots.

Stages, each resumable from OUT/checkpoints:
1. VAE (checkpoint and logs named vae3, VAE_NAME): a fresh, wider VAE with 8 latent channels (TEXTURED_VAE) on
   renders of every background kind, photos weighted up (VAE_KINDS); random 32 px crops of the 64 px renders for
   the first CROP_SHARE of the steps (4x cheaper; the VAE is fully convolutional), whole renders after; every 250
   steps its PSNR on held-out photo crops, solid-colour renders and textured scenes goes to vae3_eval_log.csv.
2. UNet + text encoder on latents of textured-world scenes (textured_unet.py).

A snapshot (`--snapshot DIR`) is the run so far in fp16, small enough to commit: the VAE, the UNet and text
encoder once they train, the training state and the logs. `--continue-from DIR` seeds a new OUT from it.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from ..outputs import atomic_path
from ..toyworld.render import render
from ..toyworld.scene import random_scene
from ..toyworld.world import photo_crops, random_world_scene
from .loops import Checkpoint, fit_autoencoder, to_tensor
from .models import RESOLUTION, build_vae, save_half
from .textured_unet import check_model_folder, export_unet_snapshot, seed_unet_from_snapshot, train_textured_unet

TEXTURED_VAE = {"widths": (48, 96, 192), "layers_per_block": 2, "latent_channels": 8}

VAE_KINDS = ("solid", "pattern", "texture", "photo", "photo")  # photos: 2 of 5 training images

CROP, CROP_SHARE = 32, 0.75

STATE_FILE = "training_state.json"

WORLD = "textured"
VAE_NAME = "vae3"  # its checkpoint and logs: the name existing runs and snapshots (and their READMEs) use


def world_images(rng: random.Random, n: int, crop: int | None = None) -> torch.Tensor:
    """n renders of textured-world scenes, or a random crop x crop window of each."""
    x = to_tensor([render(random_world_scene(rng, VAE_KINDS), RESOLUTION) for _ in range(n)])
    if crop is None:
        return x
    windows = [(rng.randrange(RESOLUTION - crop + 1), rng.randrange(RESOLUTION - crop + 1)) for _ in range(n)]
    return torch.stack([image[:, y:y + crop, x0:x0 + crop] for image, (y, x0) in zip(x, windows)])


def eval_sets(n: int = 100, seed: int = 7) -> dict[str, torch.Tensor]:
    """Fixed evaluation images: crops of held-out photos (no objects), original-world solid renders, and
    textured-world scenes whose photos are held out."""
    rng = random.Random(seed)
    return {"photo": to_tensor(photo_crops(n, seed, "eval", RESOLUTION)),
            "solid": to_tensor([render(random_scene(rng, held_out=None), RESOLUTION) for _ in range(n)]),
            "textured": to_tensor([render(random_world_scene(rng, photos="eval"), RESOLUTION) for _ in range(n)])}


@torch.no_grad()
def psnr_db(vae: AutoencoderKL, x: torch.Tensor, batch: int = 50) -> float:
    """Mean over images of the PSNR (dB, 8-bit) of the posterior-mean round trip, output rounded to 8 bits."""
    scores = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        recon = vae.decode(vae.encode(chunk).latent_dist.mean).sample
        a = torch.round((chunk + 1) * 127.5)
        b = torch.round((recon.clamp(-1, 1) + 1) * 127.5)
        mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
        scores.append(10 * torch.log10(255 ** 2 / mse))
    return float(torch.cat(scores).mean())


def train_textured_vae(out: Path, steps: int, batch: int = 16, seed: int = 10, quiet: bool = False,
               eval_images: int = 100) -> AutoencoderKL:
    """Reconstruction (L1 + MSE) with a tiny KL term on posterior samples, as shapes.train_vae."""
    vae = build_vae(**TEXTURED_VAE)
    sets = eval_sets(eval_images)

    def reconstruct(x):
        posterior = vae.encode(x).latent_dist
        return vae.decode(posterior.sample()).sample, 1e-6 * posterior.kl().mean()

    def evaluate(model):
        return {f"psnr_{name}": f"{psnr_db(model, x):.2f}" for name, x in sets.items()}

    def images(rng, n, step):
        return world_images(rng, n, CROP if step < CROP_SHARE * steps else None)

    # Checkpoints every 50 steps: a contended CPU may give this stage only a few hundred steps per session.
    return fit_autoencoder(out, VAE_NAME, vae, reconstruct, steps, batch, seed, held_out=False, quiet=quiet,
                           images=images, evaluate=evaluate, checkpoint_every=50)

SNAPSHOT_README = """# Textured-world model: training in progress

An fp16 snapshot of `ptiedit toyworld train --world textured` (issue 11), to continue in a later session.
Not a finished model: `training_state.json` says how far each stage got, `logs/` holds the loss and evaluation
logs (vae3_eval_log.csv: VAE PSNR in dB on held-out photo crops, solid-colour renders and textured scenes).

Continue (a fresh working folder; weights are upcast to fp32, optimizers restart):

    nice -n 19 ptiedit toyworld train --world textured --out /work/train-v3 --continue-from training-in-progress \\
        {flags}

Export a fresher snapshot of a running or stopped run:

    ptiedit toyworld train --world textured --out /work/train-v3 --snapshot training-in-progress
"""


def _flags(settings: dict) -> str:
    flags = [f"--vae-steps {settings['vae_steps']}", f"--unet-steps {settings['unet_steps']}",
             f"--dataset {settings['dataset']}"]
    if settings.get("init_from"):
        flags.append(f"--init-from {settings['init_from']}")
    return " ".join(flags)


def write_snapshot(out: Path, dest: Path) -> dict:
    """Export OUT's latest checkpoints in fp16 to dest (replacing an earlier snapshot there; other files in it are
    kept, and a folder that is no snapshot is refused):
    vae/ (diffusers AutoencoderKL), unet/ + text_encoder/ + tokenizer/ once the UNet stage has checkpoints,
    the logs, a README, and training_state.json (the run's settings and the step of every stage)."""
    if dest.exists() and not (dest / STATE_FILE).is_file():
        raise ValueError(f"{dest} exists and is not a training snapshot; refusing to overwrite it")
    vae_state = Checkpoint(out / "checkpoints" / f"{VAE_NAME}.pt").load()
    if vae_state is None or not (out / "run.json").is_file():
        raise ValueError(f"{out} is no textured-world run with checkpoints (run.json, checkpoints/vae3.pt)")
    settings = json.loads((out / "run.json").read_text())
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest, folder=True) as tmp:
        tmp = Path(tmp)
        vae = build_vae(**TEXTURED_VAE)
        vae.load_state_dict(vae_state["model"])
        save_half(vae, tmp / "vae")
        state = {"world": WORLD, "settings": settings, "vae_step": vae_state["step"], "unet_step": 0}
        state["unet_step"] = export_unet_snapshot(out, tmp, save_half)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n")
        (tmp / "README.md").write_text(SNAPSHOT_README.format(flags=_flags(settings)))
        (tmp / "logs").mkdir()
        for log in sorted(out.glob("*_log.csv")):
            shutil.copy(log, tmp / "logs" / log.name)
        for extra in dest.glob("*") if dest.exists() else ():  # files the snapshot does not write are kept
            if not (tmp / extra.name).exists():
                extra.rename(tmp / extra.name)
    return state


def read_snapshot(folder: Path) -> dict | None:
    """The training state of a snapshot folder, or None when the folder is not one."""
    path = folder / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    if state.get("world") != WORLD:
        raise ValueError(f"{folder}: a snapshot of world {state.get('world')!r}, not {WORLD!r}")
    return state


def seed_from_snapshot(out: Path, folder: Path, state: dict) -> None:
    """Start OUT's checkpoints from a snapshot (fp16 weights upcast to fp32; optimizers start afresh). A rerun
    whose OUT already has checkpoints resumes from them instead."""
    ckpt = Checkpoint(out / "checkpoints" / f"{VAE_NAME}.pt")
    if not ckpt.path.exists():
        vae = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=torch.float32)
        ckpt.save({"model": vae.state_dict(), "opt": None, "step": state["vae_step"]})
    if state["unet_step"]:
        seed_unet_from_snapshot(out, folder, state["unet_step"])


def run(args, tokenizer) -> int:
    """The textured recipe: settings go to OUT/run.json (snapshots carry them), then each stage in turn."""
    state = None
    if args.continue_from:
        state = read_snapshot(args.continue_from)
        if state is None:
            raise ValueError(f"--continue-from {args.continue_from}: with --world {WORLD} it takes a training "
                             f"snapshot folder (one with {STATE_FILE})")
    if args.eval_images < 1:
        raise ValueError("--eval-images must be at least 1")
    if args.init_from:
        check_model_folder(args.init_from)  # now, not hours later when the UNet stage starts
    settings = {"vae_steps": args.vae_steps, "unet_steps": args.unet_steps, "dataset": args.dataset,
                "init_from": str(args.init_from) if args.init_from else None}
    (args.out / "run.json").write_text(json.dumps(settings, indent=1) + "\n")
    if state is not None:
        seed_from_snapshot(args.out, args.continue_from, state)
    vae = train_textured_vae(args.out, args.vae_steps, quiet=args.quiet, eval_images=args.eval_images)
    return train_textured_unet(args, vae, tokenizer)
