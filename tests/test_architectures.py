"""The architecture folders gpu_check runs (benchmarks/architectures): configs only, and the real models' sizes.

Built on the meta device (no memory, no weights), so a wrong config value shows up as a wrong parameter count.
"""
import json
from pathlib import Path

import pytest

# UNet models here; the flow models' folders (a transformer) are checked in tests/test_flow_architectures.py
ARCHITECTURES = [card for card in sorted((Path(__file__).parent.parent / "benchmarks" / "architectures")
                                         .glob("*/architecture.json"))
                 if "unet" in json.loads((card.parent / "model_index.json").read_text())]
# Parameter counts of the published checkpoints (UNet, VAE, text encoder): SD 1.5 (runwayml/stable-diffusion-v1-5),
# SD 2.1 (stabilityai/stable-diffusion-2-1, OpenCLIP ViT-H text encoder cut to its 23 used layers).
PUBLISHED = {"sd15": (859_520_964, 83_653_863, 123_060_480), "sd21": (865_910_724, 83_653_863, 340_387_840)}


@pytest.mark.parametrize("card", ARCHITECTURES, ids=lambda p: p.parent.name)
def test_architecture_folder_builds_the_published_model_sizes(card):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder, info = card.parent, json.loads(card.read_text())
    assert {"name", "size", "quick_size"} <= set(info) and info["quick_size"] <= info["size"]
    assert not [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt")]  # no weights
    index = json.loads((folder / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_json_file(folder / "text_encoder" / "config.json"))
    assert unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1) == info["size"]
    if folder.name in PUBLISHED:
        counts = (unet.num_parameters(), vae.num_parameters(), text_encoder.num_parameters())
        assert counts == PUBLISHED[folder.name]
