"""Shared fixtures: tiny seeded random-weight Stable Diffusion pipelines saved in diffusers layout."""
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
TOKENIZER_SIZE = 633  # vocab.json in fixtures/tokenizer


def build_tiny_pipeline(prediction_type: str = "epsilon"):
    """UNet2DConditionModel, AutoencoderKL and CLIPTextModel with a few thousand weights each, seeded."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ptiedit.toyworld.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(FIXTURES / "tokenizer")
    assert len(tokenizer) == TOKENIZER_SIZE
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), layers_per_block=1,
                                cross_attention_dim=32, attention_head_dim=2, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), latent_channels=4,
                        layers_per_block=1, norm_num_groups=32, sample_size=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@pytest.fixture(scope="session", params=["epsilon", "v_prediction"])
def tiny_model_dir(request, tmp_path_factory) -> Path:
    """A tiny random pipeline saved to disk, so tests go through the real from_pretrained path."""
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_tiny_pipeline(request.param).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir):
    from ptiedit import load_pipeline

    return load_pipeline(tiny_model_dir)
