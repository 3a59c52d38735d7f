"""Load a Stable-Diffusion-layout pipeline (hub id, local folder, or the embedded shapes-world model)."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import torch

EMBEDDED_MODEL = Path(__file__).parent / "embedded" / "shapes-sd"
EMBEDDED_NAME = "ptiedit/shapes-sd (embedded)"


def resolve_dtype(dtype, device: str) -> torch.dtype:
    if dtype is None:
        return torch.float32 if device == "cpu" else torch.float16
    if isinstance(dtype, str):
        table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
                 "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
        if dtype not in table:
            raise ValueError(f"unknown dtype {dtype!r}; use fp32, fp16 or bf16")
        dtype = table[dtype]
    if device == "cpu" and dtype == torch.float16:
        raise ValueError("fp16 is not supported on the CPU; use fp32 or bf16")
    return dtype


def load_pipeline(model: str | os.PathLike | None = None, device: str = "cpu", dtype=None):
    """A frozen StableDiffusionPipeline with a DDIM scheduler. model=None loads the embedded shapes-world model.

    Honours HF_HUB_OFFLINE. Raises ValueError with one readable line when the model cannot be loaded.
    """
    quiet_libraries()
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    if model is None:
        if not (EMBEDDED_MODEL / "model_index.json").exists():
            raise ValueError(f"the embedded model is missing from {EMBEDDED_MODEL}; pass --model ID_OR_DIR")
        source, name = str(EMBEDDED_MODEL), EMBEDDED_NAME
    else:
        source = name = str(Path(model).resolve()) if Path(model).exists() else str(model)
        if Path(source).exists() and not (Path(source) / "model_index.json").exists():
            raise ValueError(f"{source} is not a diffusers Stable Diffusion folder (no model_index.json)")
    torch_dtype = resolve_dtype(dtype, device)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = StableDiffusionPipeline.from_pretrained(source, torch_dtype=torch_dtype, safety_checker=None,
                                                           feature_extractor=None, requires_safety_checker=False)
    except Exception as error:  # hub/IO/config errors come in many types; the user needs one line either way
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") == "1" else ""
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot load model {name!r}{offline}: {first_line}") from None
    # DDIM needs only the schedule (betas, offset, prediction type), which every SD scheduler config carries.
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe = pipe.to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    pipe.set_progress_bar_config(disable=True)
    pipe.ptiedit_model_name = name
    return pipe


def quiet_libraries() -> None:
    """diffusers/transformers print loading bars and torchvision notices that users need not see."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (diffusers_logging, transformers_logging):
        logging.set_verbosity_error()
        logging.disable_progress_bar()


def model_fingerprint(pipe) -> dict:
    """Identity of a pipeline: its name, and a hash of its component configs and a few weights."""
    h = hashlib.sha256()
    for component in (pipe.unet, pipe.text_encoder, pipe.vae):
        config = component.config.to_dict() if hasattr(component.config, "to_dict") else dict(component.config)
        h.update(json.dumps(config, sort_keys=True, default=str).encode())
        for tensor in component.state_dict().values():  # a strided sample of every weight tensor: cheap, and
            flat = tensor.detach().reshape(-1)  # a fine-tune of any layer (e.g. a merged LoRA) changes it
            h.update(flat[:: max(1, flat.numel() // 256)].float().cpu().numpy().tobytes())
    return {"model": getattr(pipe, "ptiedit_model_name", "unknown"), "model_sha256": h.hexdigest()[:16]}
