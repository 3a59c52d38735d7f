"""UNet + text encoder stage of the textured-world recipe (textured.py).

Data: latents of textured-world scenes (UNET_KINDS: solid backgrounds two times in five, so captions of the
original world stay well covered), captioned afresh each step with the background left out 30% of the time
where it can be named, so prompts that name only the objects are seen in training.
Start: a checkpoint in OUT; else a snapshot's weights (seed_unet_from_snapshot); else --init-from MODEL: every
weight whose shape fits (not conv_in/conv_out, which see 8 latent channels instead of 4), token embeddings matched
by token string; else fresh.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from ..toyworld.captions import caption
from ..toyworld.render import render
from ..toyworld.tokenizer import load_tokenizer
from ..toyworld.world import random_world_scene
from .loops import Checkpoint, to_tensor, train_unet
from .models import RESOLUTION, build_text_encoder, build_unet, export_pipeline

UNET_KINDS = ("solid", "solid", "pattern", "texture", "photo")

DROP_BACKGROUND = 0.3
UNET_NAME = "unet3"  # its checkpoint and log: the name existing runs and snapshots use


def textured_caption(scene, rng: random.Random) -> str:
    return caption(scene, rng, drop_background=DROP_BACKGROUND)


@torch.no_grad()
def encode_world(vae: AutoencoderKL, out: Path, n: int, seed: int = 1) -> dict:
    """Posterior means of n training scenes with the scenes themselves (which photos exist depends on the
    machine, so the scenes are stored rather than redrawn), and SD's scaling factor 1 / std."""
    path = out / "checkpoints" / f"latents3_{n}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    rng = random.Random(seed)
    scenes, latents = [], []
    for start in range(0, n, 250):
        chunk = [random_world_scene(rng, UNET_KINDS) for _ in range(min(250, n - start))]
        scenes += chunk
        latents.append(vae.encode(to_tensor([render(s, RESOLUTION) for s in chunk])).latent_dist.mean)
    latents = torch.cat(latents)
    data = {"latents": latents, "scenes": scenes, "scaling_factor": float(1 / latents.std())}
    torch.save(data, path)
    return data


def transfer(target: torch.nn.Module, source: torch.nn.Module) -> list[str]:
    """Copy every parameter and buffer of source whose name and shape target shares; the names not copied."""
    own, skipped = target.state_dict(), []
    for key, value in source.state_dict().items():
        if key in own and own[key].shape == value.shape:
            own[key] = value
        else:
            skipped.append(key)
    target.load_state_dict(own)
    return skipped


def check_model_folder(folder: Path) -> None:
    missing = [part for part in ("unet", "text_encoder", "tokenizer") if not (folder / part).is_dir()]
    if missing:
        raise ValueError(f"--init-from {folder}: not an exported model folder (no {', '.join(missing)})")


def init_from_model(folder: Path, tokenizer, latent_channels: int) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """A UNet and text encoder of this recipe's shapes, started from an exported model's weights where they fit.
    Token embeddings are copied token by token (the textured world's vocabulary renumbers the old words)."""
    check_model_folder(folder)
    unet, text_encoder = build_unet(latent_channels), build_text_encoder(tokenizer)
    transfer(unet, UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32))
    old_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
    transfer(text_encoder, old_encoder)
    old_vocab = load_tokenizer(folder / "tokenizer").get_vocab()
    old_rows = old_encoder.get_input_embeddings().weight.data
    rows = text_encoder.get_input_embeddings().weight.data
    for token, index in tokenizer.get_vocab().items():
        if token in old_vocab:
            rows[index] = old_rows[old_vocab[token]]
    return unet, text_encoder


def _snapshot_state(folder: Path) -> dict:
    return json.loads((folder / "unet_state.json").read_text())


def export_unet_snapshot(out: Path, dest: Path, save) -> int:
    """Save the UNet stage's EMA weights with save(model, folder), the tokenizer and the latent scale into dest;
    the stage's step (0: not started)."""
    state = Checkpoint(out / "checkpoints" / f"{UNET_NAME}.pt").load()
    if state is None:
        return 0
    tokenizer = load_tokenizer(out / "tokenizer")
    data = json.loads((out / "unet_state.json").read_text())
    unet, text_encoder = build_unet(data["latent_channels"]), build_text_encoder(tokenizer)
    unet.load_state_dict(state["ema_unet"]), text_encoder.load_state_dict(state["ema_text_encoder"])
    save(unet, dest / "unet")
    save(text_encoder, dest / "text_encoder")
    tokenizer.save_pretrained(dest / "tokenizer")
    (dest / "unet_state.json").write_text(json.dumps(data, indent=1) + "\n")
    return state["step"]


def seed_unet_from_snapshot(out: Path, folder: Path, step: int) -> None:
    """Seed OUT's UNet checkpoint from a snapshot (its EMA weights become weights and average; AdamW restarts),
    and keep the latent scale the UNet learnt on."""
    ckpt = Checkpoint(out / "checkpoints" / f"{UNET_NAME}.pt")
    if ckpt.path.exists():
        return
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=torch.float32)
    ckpt.save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": None,
               "ema_unet": unet.state_dict(), "ema_text_encoder": text_encoder.state_dict(), "step": step})
    (out / "unet_state.json").write_text(json.dumps(_snapshot_state(folder), indent=1) + "\n")


def train_textured_unet(args, vae: AutoencoderKL, tokenizer) -> int:
    """Encode the dataset, train (v-prediction throughout), export OUT/model in fp16."""
    data = encode_world(vae, args.out, args.dataset)
    state_path = args.out / "unet_state.json"
    if not state_path.exists():  # the first UNet run fixes the latent scale for good
        state_path.write_text(json.dumps({"scaling_factor": data["scaling_factor"],
                                          "latent_channels": vae.config.latent_channels}, indent=1) + "\n")
    scale = json.loads(state_path.read_text())["scaling_factor"]
    if args.init_from and not (args.out / "checkpoints" / f"{UNET_NAME}.pt").exists():
        models = init_from_model(args.init_from, tokenizer, vae.config.latent_channels)
    else:  # fresh, or resuming from the checkpoint
        models = build_unet(vae.config.latent_channels), build_text_encoder(tokenizer)

    def export(unet, text_encoder):
        export_pipeline(args.out / "model", vae, unet, text_encoder, tokenizer, scale, half=True)
    unet, text_encoder = train_unet(args.out, tokenizer, data["latents"] * scale, args.unet_steps, quiet=args.quiet,
                                    export=export, name=UNET_NAME, models=models, scenes=data["scenes"],
                                    captioner=textured_caption)
    export(unet, text_encoder)
    return 0
