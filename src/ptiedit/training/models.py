"""The tiny Stable Diffusion's components (VAE, UNet, text encoder, scheduler), and its export as a diffusers folder."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from ..outputs import atomic_path
from ..toyworld.captions import vocabulary
from ..toyworld.tokenizer import write_tokenizer

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


def export_pipeline(folder: Path, vae, unet, text_encoder, tokenizer, scaling_factor: float, half: bool = False):
    """Save a genuine diffusers Stable Diffusion folder (safetensors only) that from_pretrained can load; half:
    store fp16 copies of the weights, which every from_pretrained upcasts to fp32 unless given a dtype."""
    vae.register_to_config(scaling_factor=scaling_factor)
    if half:
        vae, unet, text_encoder = (copy.deepcopy(m).half() for m in (vae, unet, text_encoder))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    with atomic_path(folder, folder=True) as tmp:
        tmp = Path(tmp)
        pipe.save_pretrained(tmp, safe_serialization=True)
        if half:  # transformers loads the dtype a config names; fp32, as diffusers loads its own components
            config = json.loads((tmp / "text_encoder" / "config.json").read_text())
            (tmp / "text_encoder" / "config.json").write_text(json.dumps({**config, "dtype": "float32"}, indent=2)
                                                              + "\n")
        # A fresh tokenizer.json: the training one carries the padding/truncation state of its last call.
        tokenizer.backend_tokenizer.no_padding(), tokenizer.backend_tokenizer.no_truncation()
        tokenizer.save_pretrained(tmp / "tokenizer")
        write_tokenizer(tmp / "tokenizer", vocabulary())  # also the plain vocab.json/merges.txt files


def save_half(model, folder: Path) -> None:
    """save_pretrained of an fp16 copy (safetensors); from_pretrained(..., torch_dtype=torch.float32) upcasts."""
    copy.deepcopy(model).half().save_pretrained(folder, safe_serialization=True)
