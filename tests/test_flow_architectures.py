"""The flow architecture folders (benchmarks/architectures/sd35-medium, flux1-dev): configs only, built on the meta
device, at the published checkpoints' sizes, and picked up as their families."""
import json
from pathlib import Path

import pytest

from ptiedit.models.family import Flux, StableDiffusion3, family_of_index

ARCHITECTURES = Path(__file__).parent.parent / "benchmarks" / "architectures"
# Parameter counts: FLUX.1-dev's transformer (black-forest-labs/FLUX.1-dev), SD 3.5 Medium's MMDiT-X
# (stabilityai/stable-diffusion-3.5-medium, "2.5B" on its model card with the embedders), T5 v1.1 XXL's encoder,
# CLIP ViT-L/14 and OpenCLIP ViT-bigG/14 text towers (with their projections where the pipeline uses them), and the
# 16-channel VAE both share.
PUBLISHED = {"sd35-medium": {"transformer": 2_243_171_520, "vae": 83_819_683, "text_encoder": 123_650_304,
                             "text_encoder_2": 694_659_840, "text_encoder_3": 4_762_310_656},
             "flux1-dev": {"transformer": 11_901_408_320, "vae": 83_819_683, "text_encoder": 123_060_480,
                           "text_encoder_2": 4_762_310_656}}
FAMILY = {"sd35-medium": StableDiffusion3, "flux1-dev": Flux}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_flow_architecture_folder_builds_the_published_model_sizes(name):
    import diffusers
    import torch
    import transformers

    folder = ARCHITECTURES / name
    assert not [p for p in folder.rglob("*") if p.suffix in (".safetensors", ".bin", ".ckpt")]  # no weights
    index = json.loads((folder / "model_index.json").read_text())
    assert family_of_index(index) is FAMILY[name]
    counts = {}
    with torch.device("meta"):  # not accelerate's init_empty_weights, under which T5 keeps two embedding tables
        for component in PUBLISHED[name]:
            library, class_name = index[component]
            cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
            model = (cls.from_config(cls.load_config(folder / component)) if library == "diffusers"
                     else cls(cls.config_class.from_json_file(folder / component / "config.json")))
            counts[component] = model.num_parameters()
    assert counts == PUBLISHED[name]
