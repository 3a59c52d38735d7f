"""`ptiedit toyworld train`: train the embedded tiny Stable Diffusion, on the shapes world or the textured world.

Resumable: every stage checkpoints to OUT/checkpoints and skips what is finished. --world textured trains on the
textured world (textured.py); --snapshot DEST exports its run in progress in fp16, and --continue-from DEST
continues from such a snapshot.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..toyworld.captions import vocabulary
from ..toyworld.tokenizer import load_tokenizer, write_tokenizer
from . import shapes, textured

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
        state = textured.write_snapshot(args.out, args.snapshot)
        print(f"snapshot of {args.out} at VAE step {state['vae_step']}, UNet step {state['unet_step']} "
              f"written to {args.snapshot}")
        return 0
    torch.manual_seed(0)
    (args.out / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_tokenizer(args.out / "tokenizer", vocabulary())
    tokenizer = load_tokenizer(args.out / "tokenizer")
    if args.world == "textured":
        return textured.run(args, tokenizer)
    return shapes.run(args, tokenizer)
