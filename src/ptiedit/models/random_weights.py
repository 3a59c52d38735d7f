"""Random-weight pipelines built from architecture folders: configs only, no weights.

A folder holds a diffusers `model_index.json` and each component's config (`unet/config.json`, ...), as
`save_pretrained` writes them minus the weight files. This lets the tests and `benchmarks/gpu_check.py` run
full-size Stable Diffusion architectures with no download. Tokenizer folders may be left out: the embedded
model's small CLIP tokenizer stands in (its ids fit any CLIP vocabulary; the test architectures take 1000 ids,
so any stand-in fits).
"""
from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import torch

from ..toyworld.tokenizer import load_tokenizer

STAND_IN_TOKENIZER = Path(__file__).parent / "embedded" / "toyworld-textured" / "tokenizer"


def build_component(library: str, class_name: str, folder: Path):
    """One component with freshly initialised weights (diffusers models, transformers models, schedulers)."""
    cls = getattr(importlib.import_module(library), class_name)
    if class_name.endswith("Tokenizer") or class_name.endswith("TokenizerFast"):
        return load_tokenizer(folder if (folder / "vocab.json").exists() else STAND_IN_TOKENIZER)
    if library == "transformers":
        return cls(cls.config_class.from_json_file(folder / "config.json"))
    return cls.from_config(cls.load_config(folder))


def random_pipeline(folder: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32):
    """The pipeline `model_index.json` names, with seeded random weights, in `dtype`, on the CPU."""
    import diffusers

    from .loading import quiet_libraries

    quiet_libraries()  # diffusers notes on every cast that no module asks to stay in fp32
    folder = Path(folder)
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ValueError(f"{folder} is no architecture folder: model_index.json is missing")
    index = json.loads(index_file.read_text())
    torch.manual_seed(seed)
    components = {}
    for name, spec in index.items():
        if name.startswith("_"):
            continue
        if not isinstance(spec, list):  # a pipeline option such as requires_safety_checker
            components[name] = spec
            continue
        library, class_name = spec
        components[name] = None if class_name is None else build_component(library, class_name, folder / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "you have disabled the safety checker"
        pipe = getattr(diffusers, index["_class_name"])(**components)
        return pipe.to(dtype=dtype)  # ptiedit.models.loading.prepare_pipeline then sets the device and options
